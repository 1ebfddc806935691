//! The audit trail in SQLite: appending, verifying, exporting. The chain
//! itself (what is hashed, how records link) is defined in the domain crate
//! (`raccordo_domain::audit`).

use super::super::audit_record::{ChainWalk, StoredAudit};
use super::super::{AuditRecord, AuditReport, StoreError};
use super::rows::ms;
use chrono::{DateTime, Utc};
use raccordo_domain::audit::ReferenceRecord;
use raccordo_domain::audit::state::PracticeRow;
use rusqlite::{Connection, OptionalExtension, params};

use raccordo_domain::audit::outcome_data_digest;
use raccordo_domain::audit::record_hash;
pub use raccordo_domain::audit::{EventAudit, NO_TENANT};

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
    let detail = serde_json::to_string(detail)
        .map_err(|e| StoreError::Internal(format!("audit detail: {e}")))?;
    append_raw(conn, tenant_id, actor, action, practice_id, detail, now)
}

/// [`append`] with `detail` already as it is to be hashed.
pub fn append_raw(
    conn: &Connection,
    tenant_id: &str,
    actor: &str,
    action: &str,
    practice_id: Option<&str>,
    detail: String,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (seq, prev) = next_link(conn, tenant_id)?;
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
        event_row: false,
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
    record_from(r, r.get(6)?, 7, false)
}

/// A record from the six columns both tables' queries start with, its
/// `detail`, and its two hashes at `hashes` and the column after.
fn record_from(
    r: &rusqlite::Row<'_>,
    detail: String,
    hashes: usize,
    event_row: bool,
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
        event_row,
    })
}

/// The event columns a record is rebuilt from, for [`read_event_record`].
const EVENT_COLUMNS: &str = "tenant_id, audit_seq, recorded_at, actor, kind, practice_id, sequence,
    source, from_status, to_status, from_delivery, to_delivery, reason, vendor_code,
    audit_prev_hash, audit_hash, service_code, applicant_id, audit_format, outcome_data";

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
    let (practice_id, service_code, applicant_id): (String, String, String) =
        (r.get(5)?, r.get(16)?, r.get(17)?);
    let outcome_data: Option<String> = r.get(19)?;
    let detail = EventAudit {
        sequence: r.get(6)?,
        source: &source,
        from_status: from_status.as_deref(),
        to_status: to_status.as_deref(),
        from_delivery: from_delivery.as_deref(),
        to_delivery: to_delivery.as_deref(),
        reason: reason.as_deref(),
        vendor_code: vendor_code.as_deref(),
        format: None,
        service_code: None,
        applicant: None,
        outcome_data: outcome_data.as_deref().map(outcome_data_digest),
    }
    .in_format(r.get(18)?, &practice_id, &service_code, &applicant_id)
    .to_json();
    record_from(r, detail, 14, true)
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

/// Walks every chain (or `tenant`'s) in one snapshot: the first broken link
/// of each broken chain, and each practice's row (of `tenant`, or with
/// records in its chain) against what its records say.
pub fn verify(conn: &Connection, tenant: Option<&str>) -> Result<AuditReport, StoreError> {
    // One read transaction: records, heads and rows of one moment, also
    // while the hub writes.
    let snapshot = conn.unchecked_transaction()?;
    // One parameter either way: the tenant, or NULL for every chain.
    let only = if tenant.is_some() {
        "WHERE tenant_id = ?1"
    } else {
        "WHERE ?1 IS NULL"
    };
    let mut log = snapshot.prepare(&format!(
        "SELECT {LOG_COLUMNS} FROM audit_log {only} ORDER BY tenant_id, seq"
    ))?;
    // (tenant_id, cursor) is the events' index, and within a tenant the
    // chain was extended in cursor order; a record out of that order is a
    // break like any other.
    let mut events = snapshot.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM events {only} AND audit_seq IS NOT NULL
         ORDER BY tenant_id, cursor"
    ))?;
    let records = merge_chains(
        log.query_map([tenant], read_log_record)?,
        events.query_map([tenant], read_event_record)?,
    );
    let mut walk = ChainWalk::default();
    for record in records {
        walk.push(record?);
    }
    let heads: Vec<(String, i64, String)> = snapshot
        .prepare("SELECT tenant_id, seq, hash FROM audit_heads ORDER BY tenant_id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    walk.check_heads(heads, tenant);
    let (records, breaks, mut state) = walk.finish();

    let mut differences = Vec::new();
    let mut rows = snapshot.prepare(&format!("{PRACTICE_ROW} {only} ORDER BY id"))?;
    let mut found = rows.query([tenant])?;
    while let Some(r) = found.next()? {
        differences.extend(state.compare(&practice_row(&snapshot, r)?));
    }
    // Practices with records in the chains walked whose rows are not among
    // those read: of another tenant now, or gone.
    let mut by_id = snapshot.prepare_cached(&format!("{PRACTICE_ROW} WHERE id = ?1"))?;
    for id in state.uncompared() {
        if let Some(row) = by_id
            .query_row([&id], |r| Ok(practice_row(&snapshot, r)))
            .optional()?
        {
            differences.extend(state.compare(&row?));
        }
    }
    let (summary, missing) = state.finish();
    differences.extend(missing);
    Ok(AuditReport {
        records,
        breaks,
        practices: summary.compared,
        not_compared: summary.not_compared,
        differences,
    })
}

/// A practice's columns the audit vouches for, and whether some of its
/// events are not records of the chain (stored before events carried
/// their links): see [`practice_row`].
const PRACTICE_ROW: &str =
    "SELECT id, tenant_id, service_code, applicant_id, status, outcome_status,
    outcome_reason, outcome_vendor_code,
    EXISTS (SELECT 1 FROM events e WHERE e.practice_id = practices.id AND e.audit_seq IS NULL)
    FROM practices";

/// A row of [`PRACTICE_ROW`], with its references.
fn practice_row(conn: &Connection, r: &rusqlite::Row<'_>) -> Result<PracticeRow, StoreError> {
    let id: String = r.get(0)?;
    let references = conn
        .prepare_cached(
            "SELECT kind, value, system, issued_at FROM external_refs WHERE practice_id = ?1",
        )?
        .query_map([&id], |r| {
            Ok(ReferenceRecord::new(
                &r.get::<_, String>(0)?,
                &r.get::<_, String>(1)?,
                &r.get::<_, String>(2)?,
                r.get(3)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(PracticeRow {
        id,
        tenant_id: r.get(1)?,
        service_code: r.get(2)?,
        applicant_id: r.get(3)?,
        status: r.get(4)?,
        outcome_status: r.get(5)?,
        outcome_reason: r.get(6)?,
        outcome_vendor_code: r.get(7)?,
        references,
        unchained_events: r.get(8)?,
        pending_records: false,
    })
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
