//! The audit trail in PostgreSQL: records are linked into their tenant's
//! chain by the sequencer, after their transaction committed (see
//! `sequencer`); here the chains are verified. The chain itself is defined
//! in the domain crate (`raccordo_domain::audit`). A record not yet
//! sequenced is not part of any chain yet and is not checked.

use super::tx::{Tx, col};
use crate::store::{AuditBreak, StoreError};
use raccordo_domain::audit::{EventAudit, GENESIS, record_hash};
use std::collections::HashMap;
use tokio_postgres::Row;

/// The audit `detail` of an event row whose columns from `at` are
/// sequence, source, from_status, to_status, from_delivery, to_delivery,
/// reason, vendor_code: what the sequencer hashes and the verifier checks.
pub(super) fn event_detail(r: &Row, at: usize) -> Result<String, StoreError> {
    Ok(EventAudit {
        sequence: col(r, at)?,
        source: col(r, at + 1)?,
        from_status: col(r, at + 2)?,
        to_status: col(r, at + 3)?,
        from_delivery: col(r, at + 4)?,
        to_delivery: col(r, at + 5)?,
        reason: col(r, at + 6)?,
        vendor_code: col(r, at + 7)?,
    }
    .to_json())
}

/// One record of a chain, from either table.
struct Record {
    tenant_id: String,
    seq: i64,
    hash: String,
    prev_hash: String,
    computed: String,
}

/// Walks every chain (or `tenant`'s) in one snapshot and returns how many
/// records were checked and the first broken link of each broken chain.
pub(super) async fn verify(
    tx: &Tx,
    tenant: Option<&str>,
) -> Result<(u64, Vec<AuditBreak>), StoreError> {
    let log = tx
        .query(
            "SELECT tenant_id, seq, recorded_at, actor, action, practice_id, detail, prev_hash, hash
             FROM audit_log WHERE ($1::TEXT IS NULL OR tenant_id = $1) AND seq IS NOT NULL",
            &[&tenant],
        )
        .await?;
    let events = tx
        .query(
            "SELECT tenant_id, audit_seq, recorded_at, actor, kind, practice_id, sequence, source,
                from_status, to_status, from_delivery, to_delivery, reason, vendor_code,
                audit_prev_hash, audit_hash
             FROM events WHERE ($1::TEXT IS NULL OR tenant_id = $1) AND audit_seq IS NOT NULL",
            &[&tenant],
        )
        .await?;
    let mut records = Vec::with_capacity(log.len() + events.len());
    for r in &log {
        let (tenant_id, seq, prev_hash): (String, i64, String) =
            (col(r, 0)?, col(r, 1)?, col(r, 7)?);
        let detail: &str = col(r, 6)?;
        let practice_id: Option<&str> = col(r, 5)?;
        let computed = record_hash(
            &prev_hash,
            &tenant_id,
            seq,
            col(r, 2)?,
            col(r, 3)?,
            col(r, 4)?,
            practice_id,
            detail,
        );
        records.push(Record {
            tenant_id,
            seq,
            hash: col(r, 8)?,
            prev_hash,
            computed,
        });
    }
    for r in &events {
        let (tenant_id, seq, prev_hash): (String, i64, String) =
            (col(r, 0)?, col(r, 1)?, col(r, 14)?);
        let detail = event_detail(r, 6)?;
        let practice_id: Option<&str> = col(r, 5)?;
        let computed = record_hash(
            &prev_hash,
            &tenant_id,
            seq,
            col(r, 2)?,
            col(r, 3)?,
            col(r, 4)?,
            practice_id,
            &detail,
        );
        records.push(Record {
            tenant_id,
            seq,
            hash: col(r, 15)?,
            prev_hash,
            computed,
        });
    }
    records.sort_by(|a, b| (&a.tenant_id, a.seq).cmp(&(&b.tenant_id, b.seq)));
    let checked = records.len() as u64;
    let mut breaks: Vec<AuditBreak> = Vec::new();
    let mut ends: HashMap<String, (i64, String)> = HashMap::new();
    for record in records {
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
        } else if record.computed != record.hash {
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
    // Each chain must end where its head says (records removed from the end).
    let heads = tx
        .query(
            "SELECT tenant_id, seq, hash FROM audit_heads
             WHERE $1::TEXT IS NULL OR tenant_id = $1 ORDER BY tenant_id",
            &[&tenant],
        )
        .await?;
    for r in &heads {
        let (tenant_id, head_seq, head_hash): (String, i64, String) =
            (col(r, 0)?, col(r, 1)?, col(r, 2)?);
        if breaks.iter().any(|b| b.tenant_id == tenant_id) {
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
