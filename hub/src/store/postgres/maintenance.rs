//! What operators run against the database besides the hub: migrations on
//! demand, the audit export and the retention purge. Same behaviour and
//! output as on SQLite (`store::sqlite::{audit, purge}`).

use super::audit::{EVENT_COLUMNS, LOG_COLUMNS, event_record, log_record};
use super::tx::{Ended, Pending, Tx, col};
use super::{MAX_RUNS, PgStore, READ, WRITE, migrations, pool};
use crate::store::audit_record::StoredAudit;
use crate::store::sqlite::rows::ms;
use crate::store::{AuditRecord, Migration, StoreError};
use chrono::{DateTime, Utc};

/// Candidates read per look-up, outside any transaction that locks.
const CANDIDATES: i64 = 256;

/// Practices removed per transaction: each holds their rows' locks only
/// for a short batch, so the hub's own writes to them (there should be
/// none: they are concluded) never wait long.
const BATCH: usize = 32;

impl PgStore {
    /// The schema's version and the migrations a start (or `raccordo
    /// migrate`) would apply; changes nothing.
    pub async fn pending_migrations(&self) -> Result<(i64, Vec<Migration>), StoreError> {
        migrations::pending(&pool::connection(&self.inner.pool).await?).await
    }

    /// Applies pending migrations (one instance at a time, as at start);
    /// returns the schema version.
    pub async fn migrate(&self) -> Result<i64, StoreError> {
        migrations::migrate(&pool::connection(&self.inner.pool).await?).await
    }

    /// A tenant's audit records recorded in `[from, to)`, oldest first, read
    /// in one snapshot.
    pub async fn export_audit(
        &self,
        tenant: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let (from, to) = (ms(from), ms(to));
        let range = "tenant_id = $1 AND recorded_at >= $2 AND recorded_at < $3";
        // Only records linked into their chain: one the sequencer has not
        // reached yet (a second at most while a hub runs) is not exported.
        let log_sql =
            format!("SELECT {LOG_COLUMNS} FROM audit_log WHERE {range} AND seq IS NOT NULL");
        let event_sql =
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE {range} AND audit_seq IS NOT NULL");
        let mut records = in_tx!(self, READ, |tx| {
            let mut records = Vec::new();
            for r in &tx.query(&log_sql, &[&tenant, &from, &to]).await? {
                records.push(log_record(r)?);
            }
            for r in &tx.query(&event_sql, &[&tenant, &from, &to]).await? {
                records.push(event_record(r)?);
            }
            Ok(records)
        })?;
        // One chain per tenant: its seq is the order of record.
        records.sort_by_key(|r| r.seq);
        Ok(records.into_iter().map(StoredAudit::into_export).collect())
    }

    /// Removes `tenant`'s practices concluded before `before`, with their
    /// documents, references, events, deliveries and receipts, in short
    /// transactions, while the hub runs; the audit records of their events
    /// move to `audit_log` unchanged, and one `purge` record is appended.
    /// Returns how many went; with `dry_run` it only counts.
    pub async fn purge_concluded(
        &self,
        tenant: &str,
        before: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        let cutoff = ms(before);
        if dry_run {
            let n: i64 = in_tx!(self, READ, |tx| col(
                &tx.query_one(
                    "SELECT COUNT(*) FROM practices
                     WHERE tenant_id = $1 AND concluded_at IS NOT NULL AND concluded_at < $2",
                    &[&tenant, &cutoff],
                )
                .await?,
                0
            ))?;
            return Ok(n as u64);
        }
        let mut total = 0u64;
        let mut after = String::new();
        loop {
            // The walk resumes where it stopped instead of starting over
            // past practices it had to keep.
            let ids: Vec<String> = in_tx!(self, READ, |tx| {
                tx.query(
                    "SELECT id FROM practices
                     WHERE tenant_id = $1 AND id > $2 AND concluded_at IS NOT NULL AND concluded_at < $3
                     ORDER BY id LIMIT $4",
                    &[&tenant, &after, &cutoff, &CANDIDATES],
                )
                .await?
                .iter()
                .map(|r| col(r, 0))
                .collect()
            })?;
            let Some(last) = ids.last() else { break };
            after = last.clone();
            for batch in ids.chunks(BATCH) {
                let batch = batch.to_vec();
                total += in_tx!(self, WRITE, |tx| remove(&tx, tenant, &batch, cutoff).await)?;
            }
        }
        if total > 0 {
            let detail = serde_json::json!({
                "practices": total,
                "concluded_before": before.to_rfc3339(),
            })
            .to_string();
            in_tx!(self, WRITE, |tx| {
                tx.pending.push(Pending::Audit {
                    tenant_id: tenant.to_string(),
                    recorded_at: Utc::now().timestamp_millis(),
                    actor: "raccordo purge".into(),
                    action: "purge".into(),
                    practice_id: None,
                    detail: detail.clone(),
                });
                Ok(())
            })?;
        }
        Ok(total)
    }
}

/// Removes those of `ids` still past retention (checked again under their
/// row locks); returns how many. A practice with an event that has no
/// cursor yet (not yet in its chain) waits for a later purge: its record
/// could not be kept.
async fn remove(tx: &Tx, tenant: &str, ids: &[String], cutoff: i64) -> Result<u64, StoreError> {
    let still: Vec<String> = tx
        .query(
            "SELECT id FROM practices p
             WHERE tenant_id = $1 AND id = ANY($2) AND concluded_at IS NOT NULL AND concluded_at < $3
               AND NOT EXISTS (SELECT 1 FROM events e WHERE e.practice_id = p.id AND e.cursor IS NULL)
             ORDER BY id FOR UPDATE",
            &[&tenant, &ids, &cutoff],
        )
        .await?
        .iter()
        .map(|r| col(r, 0))
        .collect::<Result<_, _>>()?;
    if still.is_empty() {
        return Ok(0);
    }
    // The trail outlives the events: their records move to audit_log as
    // they were hashed.
    let kept = tx
        .query(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM events
                 WHERE tenant_id = $1 AND practice_id = ANY($2) AND audit_seq IS NOT NULL"
            ),
            &[&tenant, &still],
        )
        .await?
        .iter()
        .map(event_record)
        .collect::<Result<Vec<_>, _>>()?;
    if !kept.is_empty() {
        let column = |f: fn(&StoredAudit) -> String| kept.iter().map(f).collect::<Vec<_>>();
        let seqs: Vec<i64> = kept.iter().map(|r| r.seq).collect();
        let times: Vec<i64> = kept.iter().map(|r| r.recorded_at).collect();
        let practices: Vec<Option<String>> = kept.iter().map(|r| r.practice_id.clone()).collect();
        tx.execute(
            "INSERT INTO audit_log (tenant_id, seq, recorded_at, actor, action, practice_id, detail,
                prev_hash, hash)
             SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[],
                $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[])",
            &[
                &column(|r| r.tenant_id.clone()),
                &seqs,
                &times,
                &column(|r| r.actor.clone()),
                &column(|r| r.action.clone()),
                &practices,
                &column(|r| r.detail.clone()),
                &column(|r| r.prev_hash.clone()),
                &column(|r| r.hash.clone()),
            ],
        )
        .await?;
    }
    // Children first (foreign keys), every statement within the tenant.
    for table in [
        "documents",
        "external_refs",
        "events",
        "early_results",
        "jobs",
        "inbound_receipts",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE tenant_id = $1 AND practice_id = ANY($2)"),
            &[&tenant, &still],
        )
        .await?;
    }
    let removed = tx
        .execute(
            "DELETE FROM practices WHERE tenant_id = $1 AND id = ANY($2)",
            &[&tenant, &still],
        )
        .await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::super::pool;
    use super::super::tests::{Schema, new_practice};
    use crate::store::Store;
    use crate::store::StoreError;
    use chrono::Utc;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// The applicant withdrawing practice `id`.
    fn withdrawal(id: &str) -> crate::store::Withdrawal {
        use crate::domain::practice::{EventDraft, EventSource};
        use raccordo_adapters::model::AdminStatus;
        crate::store::Withdrawal {
            tenant_id: "016024".into(),
            practice_id: id.into(),
            reason: None,
            draft_actor: EventDraft::status(
                EventSource::Applicant,
                "applicant",
                AdminStatus::Submitted,
                AdminStatus::Withdrawn,
            ),
            forward_to: None,
            traceparent: None,
        }
    }

    /// `raccordo purge` on PostgreSQL while the hub's instances write: both
    /// progress, every removed practice's events stay in the audit trail,
    /// which still verifies, and the export shows the purge.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn purge_and_the_hubs_writes_both_progress_and_the_trail_verifies() {
        let schema = Schema::new().await;
        let store = schema.store(None).await;
        const OLD: usize = 200;
        for i in 0..OLD {
            let id = format!("old-{i:04}");
            store
                .insert_practice(new_practice(&id, &id), false)
                .await
                .unwrap();
            // Concluded (only concluded practices are purged), long ago.
            store.withdraw(withdrawal(&id)).await.unwrap();
        }
        pool::connection(&store.inner.pool)
            .await
            .unwrap()
            .batch_execute("UPDATE practices SET concluded_at = 1000 WHERE id LIKE 'old-%'")
            .await
            .unwrap();
        let report = store.verify_audit(None).await.unwrap();
        assert_eq!(report.differences, Vec::new());
        let (events_before, _) = (report.records, report.breaks);

        let purging = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let during = Arc::new(AtomicUsize::new(0));
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..4 {
            let (store, purging, stop, during) =
                (store.clone(), purging.clone(), stop.clone(), during.clone());
            writers.spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("new-{w}-{n:05}");
                    store.insert_practice(new_practice(&id, &id), false).await?;
                    if purging.load(Ordering::SeqCst) {
                        during.fetch_add(1, Ordering::SeqCst);
                    }
                    n += 1;
                }
                Ok::<_, StoreError>(n)
            });
        }
        while during.load(Ordering::SeqCst) == 0 {
            purging.store(true, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
        let counted = store
            .purge_concluded("016024", Utc::now(), true)
            .await
            .unwrap();
        assert_eq!(counted, OLD as u64, "a dry run counts");
        let purged = store
            .purge_concluded("016024", Utc::now(), false)
            .await
            .expect("the purge does not fail while the store writes");
        let written_during_purge = during.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        let mut written = 0;
        while let Some(r) = writers.join_next().await {
            written += r.unwrap().expect("writes do not fail during a purge");
        }
        assert_eq!(purged, OLD as u64);
        assert!(
            written_during_purge > 1,
            "only {written_during_purge} writes completed while the purge ran"
        );
        // Another tenant's practices are never touched.
        assert_eq!(
            store
                .purge_concluded("028060", Utc::now(), false)
                .await
                .unwrap(),
            0
        );

        let report = store.verify_audit(None).await.unwrap();
        assert_eq!(report.differences, Vec::new());
        let (checked, breaks) = (report.records, report.breaks);
        assert!(breaks.is_empty(), "{breaks:?}");
        assert!(
            checked > events_before,
            "the old events' records are all still there, with the new ones"
        );
        let client = pool::connection(&store.inner.pool).await.unwrap();
        let count = |sql: &'static str| {
            let client = &client;
            async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        assert_eq!(
            count("SELECT COUNT(*) FROM practices WHERE id LIKE 'old-%'").await,
            0
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM practices WHERE id LIKE 'new-%'").await,
            written as i64
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM audit_log WHERE practice_id LIKE 'old-%'").await as u64,
            events_before,
            "every event of a purged practice kept its record"
        );
        let export = store
            .export_audit(
                "016024",
                chrono::DateTime::<Utc>::MIN_UTC,
                chrono::DateTime::<Utc>::MAX_UTC,
            )
            .await
            .unwrap();
        assert_eq!(export.len() as u64, checked);
        assert!(export.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        let purges: Vec<_> = export.iter().filter(|r| r.action == "purge").collect();
        assert_eq!(purges.len(), 1, "one purge record");
        assert_eq!(purges[0].detail["practices"], OLD as u64);
    }
}
