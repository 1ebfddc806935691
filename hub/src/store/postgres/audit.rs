//! The audit trail in PostgreSQL: records are linked into their tenant's
//! chain by the sequencer, after their transaction committed (see
//! `sequencer`); here they are read and the chains verified. The chain
//! itself is defined in the domain crate (`raccordo_domain::audit`). A
//! record not yet sequenced is not part of any chain yet and is not
//! checked, nor is the state of its practice.

use super::tx::{Tx, col};
use crate::store::audit_record::{ChainWalk, StoredAudit};
use crate::store::{AuditReport, StoreError};
use raccordo_domain::audit::state::PracticeRow;
use raccordo_domain::audit::{EventAudit, REFERENCES_ACTION, ReferenceRecord, outcome_data_digest};
use std::collections::{HashMap, HashSet};
use tokio_postgres::Row;

/// The columns of an `audit_log` record, for [`log_record`].
pub(super) const LOG_COLUMNS: &str =
    "tenant_id, seq, recorded_at, actor, action, practice_id, detail, prev_hash, hash";

/// The event columns an audit record is rebuilt from, for [`event_record`].
pub(super) const EVENT_COLUMNS: &str =
    "tenant_id, audit_seq, recorded_at, actor, kind, practice_id,
    sequence, source, from_status, to_status, from_delivery, to_delivery, reason, vendor_code,
    audit_prev_hash, audit_hash, service_code, applicant_id, audit_format, outcome_data";

/// The audit `detail` of an event row whose columns from `at` are
/// sequence, source, from_status, to_status, from_delivery, to_delivery,
/// reason, vendor_code, whose practice id is at `practice_at`, and whose
/// service_code and applicant_id are from `identity_at`, whose outcome
/// data is at `outcome_at`, in `format`: what the sequencer hashes and the
/// verifier checks.
pub(super) fn event_detail(
    r: &Row,
    at: usize,
    practice_at: usize,
    identity_at: usize,
    outcome_at: usize,
    format: Option<i64>,
) -> Result<String, StoreError> {
    let outcome_data: Option<&str> = col(r, outcome_at)?;
    Ok(EventAudit {
        sequence: col(r, at)?,
        source: col(r, at + 1)?,
        from_status: col(r, at + 2)?,
        to_status: col(r, at + 3)?,
        from_delivery: col(r, at + 4)?,
        to_delivery: col(r, at + 5)?,
        reason: col(r, at + 6)?,
        vendor_code: col(r, at + 7)?,
        format: None,
        service_code: None,
        applicant: None,
        outcome_data: outcome_data.map(outcome_data_digest),
    }
    .in_format(
        format,
        col(r, practice_at)?,
        col(r, identity_at)?,
        col(r, identity_at + 1)?,
    )
    .to_json())
}

/// A record of `audit_log` ([`LOG_COLUMNS`]).
pub(super) fn log_record(r: &Row) -> Result<StoredAudit, StoreError> {
    Ok(StoredAudit {
        tenant_id: col(r, 0)?,
        seq: col(r, 1)?,
        recorded_at: col(r, 2)?,
        actor: col(r, 3)?,
        action: col(r, 4)?,
        practice_id: col(r, 5)?,
        detail: col(r, 6)?,
        prev_hash: col(r, 7)?,
        hash: col(r, 8)?,
        event_row: false,
    })
}

/// An event's audit record ([`EVENT_COLUMNS`]), its detail rebuilt as it
/// was hashed.
pub(super) fn event_record(r: &Row) -> Result<StoredAudit, StoreError> {
    Ok(StoredAudit {
        tenant_id: col(r, 0)?,
        seq: col(r, 1)?,
        recorded_at: col(r, 2)?,
        actor: col(r, 3)?,
        action: col(r, 4)?,
        practice_id: col(r, 5)?,
        // In the format it was linked in (empty: format 1).
        detail: event_detail(r, 6, 5, 16, 19, col(r, 18)?)?,
        prev_hash: col(r, 14)?,
        hash: col(r, 15)?,
        event_row: true,
    })
}

/// Walks every chain (or `tenant`'s) in one snapshot: the first broken
/// link of each broken chain, and each practice's row (of `tenant`, or
/// with records in its chain) against what its records say.
pub(super) async fn verify(tx: &Tx, tenant: Option<&str>) -> Result<AuditReport, StoreError> {
    let log = tx
        .query(
            &format!(
                "SELECT {LOG_COLUMNS} FROM audit_log
                 WHERE ($1::TEXT IS NULL OR tenant_id = $1) AND seq IS NOT NULL"
            ),
            &[&tenant],
        )
        .await?;
    let events = tx
        .query(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events
                 WHERE ($1::TEXT IS NULL OR tenant_id = $1) AND audit_seq IS NOT NULL"
            ),
            &[&tenant],
        )
        .await?;
    let mut records = Vec::with_capacity(log.len() + events.len());
    for r in &log {
        records.push(log_record(r)?);
    }
    drop(log);
    for r in &events {
        records.push(event_record(r)?);
    }
    drop(events);
    records.sort_by(|a, b| (&a.tenant_id, a.seq).cmp(&(&b.tenant_id, b.seq)));
    let mut walk = ChainWalk::default();
    for record in records {
        walk.push(record);
    }
    // Each chain must end where its head says (records removed from the end).
    let heads = tx
        .query(
            "SELECT tenant_id, seq, hash FROM audit_heads
             WHERE $1::TEXT IS NULL OR tenant_id = $1 ORDER BY tenant_id",
            &[&tenant],
        )
        .await?
        .iter()
        .map(|r| Ok((col(r, 0)?, col(r, 1)?, col(r, 2)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    walk.check_heads(heads, tenant);
    let (records, breaks, mut state) = walk.finish();

    // Practices with events or references not linked yet: their rows may
    // already show what their records will say after the next sequencer run.
    let pending: HashSet<String> = tx
        .query(
            "SELECT practice_id FROM events WHERE cursor IS NULL
             UNION SELECT practice_id FROM audit_log
             WHERE seq IS NULL AND action = $1 AND practice_id IS NOT NULL",
            &[&REFERENCES_ACTION],
        )
        .await?
        .iter()
        .map(|r| col(r, 0))
        .collect::<Result<_, _>>()?;
    let mut differences = Vec::new();
    let rows = practice_rows(tx, "p.tenant_id = $1 OR $1 IS NULL", &tenant, &pending).await?;
    for row in &rows {
        differences.extend(state.compare(row));
    }
    drop(rows);
    // Practices with records in the chains walked whose rows are not among
    // those read: of another tenant now, or gone.
    let others = state.uncompared();
    if !others.is_empty() {
        for row in &practice_rows(tx, "p.id = ANY($1)", &others, &pending).await? {
            differences.extend(state.compare(row));
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

/// The rows of the practices `filter` (over `practices p`, with `$1`)
/// selects, with their references.
async fn practice_rows(
    tx: &Tx,
    filter: &str,
    param: &(dyn tokio_postgres::types::ToSql + Sync),
    pending: &HashSet<String>,
) -> Result<Vec<PracticeRow>, StoreError> {
    let mut references: HashMap<String, Vec<ReferenceRecord>> = HashMap::new();
    for r in &tx
        .query(
            &format!(
                "SELECT r.practice_id, r.kind, r.value, r.system, r.issued_at
                 FROM external_refs r JOIN practices p ON p.id = r.practice_id WHERE {filter}"
            ),
            &[param],
        )
        .await?
    {
        references
            .entry(col(r, 0)?)
            .or_default()
            .push(ReferenceRecord::new(
                col(r, 1)?,
                col(r, 2)?,
                col(r, 3)?,
                col(r, 4)?,
            ));
    }
    tx.query(
        &format!(
            "SELECT p.id, p.tenant_id, p.service_code, p.applicant_id, p.status, p.outcome_status,
                p.outcome_reason, p.outcome_vendor_code,
                EXISTS (SELECT 1 FROM events e WHERE e.practice_id = p.id AND e.audit_seq IS NULL)
             FROM practices p WHERE {filter} ORDER BY p.id"
        ),
        &[param],
    )
    .await?
    .iter()
    .map(|r| {
        let id: String = col(r, 0)?;
        Ok(PracticeRow {
            tenant_id: col(r, 1)?,
            service_code: col(r, 2)?,
            applicant_id: col(r, 3)?,
            status: col(r, 4)?,
            outcome_status: col(r, 5)?,
            outcome_reason: col(r, 6)?,
            outcome_vendor_code: col(r, 7)?,
            references: references.remove(&id).unwrap_or_default(),
            unchained_events: col(r, 8)?,
            pending_records: pending.contains(&id),
            id,
        })
    })
    .collect()
}
