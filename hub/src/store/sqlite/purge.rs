//! Removing concluded practices past their tenant's retention period.

use super::super::StoreError;
use super::audit;
use super::rows::ms;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, TransactionBehavior, params};

/// Practices removed per transaction: bounded so the hub's own writes
/// (another process, same database) wait at most a few milliseconds.
const BATCH: i64 = 500;

/// Removes `tenant`'s practices concluded before `before`, with their
/// documents, references, events, deliveries and receipts, and records one
/// `purge` entry in the tenant's audit trail. Returns how many went.
/// With `dry_run` it only counts.
pub fn purge(
    conn: &mut Connection,
    tenant: &str,
    before: DateTime<Utc>,
    dry_run: bool,
) -> Result<u64, StoreError> {
    let cutoff = ms(before);
    if dry_run {
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM practices WHERE tenant_id = ?1 AND concluded_at IS NOT NULL AND concluded_at < ?2",
            params![tenant, cutoff],
            |r| r.get(0),
        )?;
        return Ok(n as u64);
    }
    let mut total = 0u64;
    loop {
        // IMMEDIATE: the write lock is taken (waiting for the hub's writer
        // under the busy timeout) before the first read. A deferred
        // transaction that reads, then writes after the hub has committed
        // fails at once with SQLITE_BUSY, which no busy timeout retries.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ids: Vec<String> = tx
            .prepare(
                "SELECT id FROM practices WHERE tenant_id = ?1 AND concluded_at IS NOT NULL AND concluded_at < ?2
                 LIMIT ?3",
            )?
            .query_map(params![tenant, cutoff, BATCH], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if ids.is_empty() {
            break;
        }
        for id in &ids {
            audit::keep_event_records(&tx, id)?;
            for table in [
                "documents",
                "external_refs",
                "events",
                "jobs",
                "inbound_receipts",
            ] {
                tx.execute(&format!("DELETE FROM {table} WHERE practice_id = ?1"), [id])?;
            }
            tx.execute("DELETE FROM practices WHERE id = ?1", [id])?;
        }
        total += ids.len() as u64;
        tx.commit()?;
    }
    if total > 0 {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        audit::append(
            &tx,
            tenant,
            "raccordo purge",
            "purge",
            None,
            &serde_json::json!({"practices": total, "concluded_before": before.to_rfc3339()}),
            Utc::now(),
        )?;
        tx.commit()?;
    }
    Ok(total)
}
