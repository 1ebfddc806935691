//! What the writer's open transaction settles only when it commits: the
//! events to publish, and the newest record of each audit chain it touched.
//!
//! Kept in a thread-local of the writer thread (every write runs there), so
//! the deep helpers that append events and audit records need no extra
//! parameter. On any other thread (the `purge` command, tests opening
//! their own connection) nothing is pending and callers write through.

use crate::domain::practice::Event;
use rusqlite::{Connection, params};
use std::cell::RefCell;
use std::collections::HashMap;

#[derive(Default, Clone)]
struct Pending {
    /// Events appended so far, published after the commit.
    events: Vec<Event>,
    /// tenant → (seq, hash) of the newest audit record of its chain,
    /// written to `audit_heads` once, just before the commit.
    audit_heads: HashMap<String, (i64, String)>,
}

thread_local! {
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Makes the current thread the writer: from now on its transactions
/// collect pending work.
pub fn start_writer() {
    PENDING.set(Some(Pending::default()));
}

/// A point to roll back to, taken before each command of a shared transaction.
pub struct Mark {
    events: usize,
    audit_heads: HashMap<String, (i64, String)>,
}

/// Where the open transaction stands now.
pub fn mark() -> Option<Mark> {
    PENDING.with_borrow(|p| {
        p.as_ref().map(|p| Mark {
            events: p.events.len(),
            audit_heads: p.audit_heads.clone(),
        })
    })
}

/// Forgets what a rolled-back command added.
pub fn roll_back_to(mark: Mark) {
    PENDING.with_borrow_mut(|p| {
        if let Some(p) = p {
            p.events.truncate(mark.events);
            p.audit_heads = mark.audit_heads;
        }
    });
}

/// Writes the audit heads of the open transaction (call just before COMMIT).
pub fn write_audit_heads(conn: &Connection) -> rusqlite::Result<()> {
    let heads = PENDING.with_borrow(|p| p.as_ref().map(|p| p.audit_heads.clone()));
    for (tenant, (seq, hash)) in heads.unwrap_or_default() {
        upsert_audit_head(conn, &tenant, seq, &hash)?;
    }
    Ok(())
}

/// Ends the transaction: returns its events (to publish if it committed)
/// and clears everything pending.
pub fn finish() -> Vec<Event> {
    PENDING.with_borrow_mut(|p| match p {
        Some(p) => {
            p.audit_heads.clear();
            std::mem::take(&mut p.events)
        }
        None => Vec::new(),
    })
}

/// Queues `events` for publication when the transaction commits.
pub fn add_events(events: &[Event]) {
    PENDING.with_borrow_mut(|p| {
        if let Some(p) = p {
            p.events.extend_from_slice(events);
        }
    });
}

/// The head of `tenant`'s audit chain as this transaction left it, if it
/// appended to that chain already.
pub fn audit_head(tenant: &str) -> Option<(i64, String)> {
    PENDING.with_borrow(|p| p.as_ref()?.audit_heads.get(tenant).cloned())
}

/// Records a new head for `tenant`'s chain: kept for the commit on the
/// writer, written at once anywhere else.
pub fn set_audit_head(
    conn: &Connection,
    tenant: &str,
    seq: i64,
    hash: &str,
) -> rusqlite::Result<()> {
    let kept = PENDING.with_borrow_mut(|p| match p {
        Some(p) => {
            p.audit_heads
                .insert(tenant.to_string(), (seq, hash.to_string()));
            true
        }
        None => false,
    });
    if kept {
        Ok(())
    } else {
        upsert_audit_head(conn, tenant, seq, hash)
    }
}

fn upsert_audit_head(
    conn: &Connection,
    tenant: &str,
    seq: i64,
    hash: &str,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )?
    .execute(params![tenant, seq, hash])?;
    Ok(())
}
