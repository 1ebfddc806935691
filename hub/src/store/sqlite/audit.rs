//! The audit trail in SQLite: appending, verifying, exporting. The chain
//! itself (what is hashed, how records link) is defined in the domain crate
//! (`raccordo_domain::audit`).

use super::super::audit_record::StoredAudit;
use super::super::{AuditBreak, AuditRecord, StoreError};
use super::rows::ms;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;

use raccordo_domain::audit::record_hash;
pub use raccordo_domain::audit::{EventAudit, GENESIS, NO_TENANT};

/// The next link of `tenant_id`'s chain: (its seq, the previous hash).
fn next_link(conn: &Connection, tenant_id: &str) -> Result<(i64, String), StoreError> {
    // Within one writer transaction the head is known after the first
    // record: no query per record, and one head update per chain at commit.
    let head = match super::pending::audit_head(tenant_id) {
        Some(head) => Some(head),
        None => conn
            .prepare_cached("SELECT seq, hash FROM audit_heads WHERE tenant_id = ?1")?
            .query_row([tenant_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?,
    };
    Ok(raccordo_domain::audit::next_link(head))
}

/// Appends one record to `tenant_id`'s chain in `audit_log`, inside the
/// caller's transaction: refused calls, purges, anything but an event.
pub fn append(
    conn: &Connection,
    tenant_id: &str,
    actor: &str,
    action: &str,
    practice_id: Option<&str>,
    detail: &impl serde::Serialize,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (seq, prev) = next_link(conn, tenant_id)?;
    let detail = serde_json::to_string(detail)
        .map_err(|e| StoreError::Internal(format!("audit detail: {e}")))?;
    let mut record = StoredAudit {
        tenant_id: tenant_id.to_string(),
        seq,
        recorded_at: ms(now),
        actor: actor.to_string(),
        action: action.to_string(),
        practice_id: practice_id.map(str::to_string),
        detail,
        prev_hash: prev,
        hash: String::new(),
    };
    record.hash = record.computed_hash();
    insert_record(conn, &record)?;
    super::pending::set_audit_head(conn, tenant_id, seq, &record.hash)?;
    Ok(())
}

fn insert_record(conn: &Connection, r: &StoredAudit) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_log (tenant_id, seq, recorded_at, actor, action, practice_id, detail, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        r.tenant_id,
        r.seq,
        r.recorded_at,
        r.actor,
        r.action,
        r.practice_id,
        r.detail,
        r.prev_hash,
        r.hash
    ])?;
    Ok(())
}

/// An event's place in its tenant's chain, stored on the event row.
pub struct EventLink {
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
}

/// Links a new event into `tenant_id`'s chain. The event row, written by
/// the caller in the same transaction, is the record: nothing is copied
/// into `audit_log`.
pub fn link_event(
    conn: &Connection,
    tenant_id: &str,
    actor: &str,
    kind: &str,
    practice_id: &str,
    detail: &EventAudit<'_>,
    recorded_at: i64,
) -> Result<EventLink, StoreError> {
    let (seq, prev_hash) = next_link(conn, tenant_id)?;
    let hash = record_hash(
        &prev_hash,
        tenant_id,
        seq,
        recorded_at,
        actor,
        kind,
        Some(practice_id),
        &detail.to_json(),
    );
    super::pending::set_audit_head(conn, tenant_id, seq, &hash)?;
    Ok(EventLink {
        seq,
        prev_hash,
        hash,
    })
}

const LOG_COLUMNS: &str =
    "tenant_id, seq, recorded_at, actor, action, practice_id, detail, prev_hash, hash";

fn read_log_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAudit> {
    record_from(r, r.get(6)?, 7)
}

/// A record from the six columns both tables' queries start with, its
/// `detail`, and its two hashes at `hashes` and the column after.
fn record_from(
    r: &rusqlite::Row<'_>,
    detail: String,
    hashes: usize,
) -> rusqlite::Result<StoredAudit> {
    Ok(StoredAudit {
        tenant_id: r.get(0)?,
        seq: r.get(1)?,
        recorded_at: r.get(2)?,
        actor: r.get(3)?,
        action: r.get(4)?,
        practice_id: r.get(5)?,
        detail,
        prev_hash: r.get(hashes)?,
        hash: r.get(hashes + 1)?,
    })
}

/// The event columns a record is rebuilt from, for [`read_event_record`].
const EVENT_COLUMNS: &str = "tenant_id, audit_seq, recorded_at, actor, kind, practice_id, sequence,
    source, from_status, to_status, from_delivery, to_delivery, reason, vendor_code,
    audit_prev_hash, audit_hash";

fn read_event_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAudit> {
    let text = |i: usize| r.get::<_, Option<String>>(i);
    let (from_status, to_status, from_delivery, to_delivery, reason, vendor_code) = (
        text(8)?,
        text(9)?,
        text(10)?,
        text(11)?,
        text(12)?,
        text(13)?,
    );
    let source: String = r.get(7)?;
    let detail = EventAudit {
        sequence: r.get(6)?,
        source: &source,
        from_status: from_status.as_deref(),
        to_status: to_status.as_deref(),
        from_delivery: from_delivery.as_deref(),
        to_delivery: to_delivery.as_deref(),
        reason: reason.as_deref(),
        vendor_code: vendor_code.as_deref(),
    }
    .to_json();
    record_from(r, detail, 14)
}

/// Merges two record streams, each ordered by (tenant, seq), into one.
fn merge_chains(
    log: impl Iterator<Item = rusqlite::Result<StoredAudit>>,
    events: impl Iterator<Item = rusqlite::Result<StoredAudit>>,
) -> impl Iterator<Item = rusqlite::Result<StoredAudit>> {
    let (mut log, mut events) = (log.peekable(), events.peekable());
    std::iter::from_fn(move || {
        let take_log = match (log.peek(), events.peek()) {
            (None, None) => return None,
            (Some(_), None) | (Some(Err(_)), _) => true,
            (None, Some(_)) | (_, Some(Err(_))) => false,
            (Some(Ok(a)), Some(Ok(b))) => (&a.tenant_id, a.seq) <= (&b.tenant_id, b.seq),
        };
        if take_log { log.next() } else { events.next() }
    })
}

/// Walks every chain (or `tenant`'s) and returns the first broken link of
/// each broken chain, and how many records were checked.
pub fn verify(
    conn: &Connection,
    tenant: Option<&str>,
) -> Result<(u64, Vec<AuditBreak>), StoreError> {
    // One parameter either way: the tenant, or NULL for every chain.
    let only = if tenant.is_some() {
        "WHERE tenant_id = ?1"
    } else {
        "WHERE ?1 IS NULL"
    };
    let mut log = conn.prepare(&format!(
        "SELECT {LOG_COLUMNS} FROM audit_log {only} ORDER BY tenant_id, seq"
    ))?;
    // (tenant_id, cursor) is the events' index, and within a tenant the
    // chain was extended in cursor order; a record out of that order is a
    // break like any other.
    let mut events = conn.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM events {only} AND audit_seq IS NOT NULL
         ORDER BY tenant_id, cursor"
    ))?;
    let records = merge_chains(
        log.query_map([tenant], read_log_record)?,
        events.query_map([tenant], read_event_record)?,
    );
    let mut checked = 0;
    let mut breaks: Vec<AuditBreak> = Vec::new();
    // tenant → (last seq, last hash) of each chain walked so far.
    let mut ends: HashMap<String, (i64, String)> = HashMap::new();
    for record in records {
        let record = record?;
        checked += 1;
        if breaks
            .last()
            .is_some_and(|b| b.tenant_id == record.tenant_id)
        {
            continue; // the first break of a chain is the one that matters
        }
        let (expected_seq, expected_prev) = match ends.get(&record.tenant_id) {
            Some((last_seq, last_hash)) => (last_seq + 1, last_hash.as_str()),
            None => (1, GENESIS),
        };
        let reason = if record.seq != expected_seq {
            Some(format!(
                "record {expected_seq} is missing (found {} next)",
                record.seq
            ))
        } else if record.prev_hash != expected_prev {
            Some("its prev_hash does not match the previous record's hash".to_string())
        } else if record.computed_hash() != record.hash {
            Some("its content does not match its hash (edited)".to_string())
        } else {
            None
        };
        if let Some(reason) = reason {
            breaks.push(AuditBreak {
                tenant_id: record.tenant_id.clone(),
                seq: record.seq,
                reason,
            });
        }
        ends.insert(record.tenant_id, (record.seq, record.hash));
    }
    // Each chain must end where its head says: records removed from the
    // end leave no gap, only a head that points past them.
    let heads: Vec<(String, i64, String)> = conn
        .prepare("SELECT tenant_id, seq, hash FROM audit_heads ORDER BY tenant_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (tenant_id, head_seq, head_hash) in heads {
        if tenant.is_some_and(|t| t != tenant_id) || breaks.iter().any(|b| b.tenant_id == tenant_id)
        {
            continue;
        }
        let last = ends.get(&tenant_id);
        let ends_at = last.map_or(0, |(s, _)| *s);
        if last.map(|(s, h)| (*s, h.as_str())) != Some((head_seq, head_hash.as_str())) {
            breaks.push(AuditBreak {
                tenant_id,
                seq: ends_at + 1,
                reason: format!(
                    "the chain ends at record {ends_at} but its head is record {head_seq}: records were removed"
                ),
            });
        }
    }
    Ok((checked, breaks))
}

/// A tenant's records recorded in `[from, to)`, oldest first.
pub fn export(
    conn: &Connection,
    tenant: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let range = "tenant_id = ?1 AND recorded_at >= ?2 AND recorded_at < ?3";
    let mut log = conn.prepare(&format!(
        "SELECT {LOG_COLUMNS} FROM audit_log WHERE {range} ORDER BY seq"
    ))?;
    let mut events = conn.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE {range} AND audit_seq IS NOT NULL ORDER BY cursor"
    ))?;
    let bounds = params![tenant, ms(from), ms(to)];
    merge_chains(
        log.query_map(bounds, read_log_record)?,
        events.query_map(bounds, read_event_record)?,
    )
    .map(|r| Ok(r?.into_export()))
    .collect()
}

/// Moves the audit records of `practice_id`'s events into `audit_log`,
/// unchanged, before a purge removes the events: the trail outlives them.
pub fn keep_event_records(conn: &Connection, practice_id: &str) -> Result<(), StoreError> {
    let records: Vec<StoredAudit> = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE practice_id = ?1 AND audit_seq IS NOT NULL"
        ))?
        .query_map([practice_id], read_event_record)?
        .collect::<rusqlite::Result<_>>()?;
    for record in &records {
        insert_record(conn, record)?;
    }
    Ok(())
}
