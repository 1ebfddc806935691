//! Keeps the planner's statistics current while the store's tables grow
//! from nothing.
//!
//! Each pooled connection prepares its statements once and, after a few
//! runs, keeps a generic plan for each. Made while a table is new (a few
//! pages, never analyzed), such a plan may walk a whole index that only
//! narrows by tenant (e.g. the idempotency look-up reading every practice
//! of the tenant), and it stays until the table's statistics change.
//! Autovacuum analyzes a table after a tenth of it changed, but looks only
//! once a minute: a new store, or one just moved or purged, reads rows in
//! proportion to its size until then (measured in `docs/performance.md`).
//!
//! So every [`EVERY`], one instance (the first to take a transaction
//! advisory lock) analyzes each of the store's tables that changed by at
//! least as many rows as it held when last analyzed (and by at least
//! [`MIN_CHANGES`]): it doubled, or was rewritten once over. An
//! `ANALYZE` invalidates the plans that read the table, so every connection
//! plans again with the new figures. Growth by doubling means a handful of
//! runs in a table's life; steady state is autovacuum's.

use super::pool;
use super::tx::{Ended, Tx, col};
use crate::store::StoreError;
use deadpool_postgres::Pool;
use std::time::Duration;

/// How often the tables' changes are looked at.
pub(super) const EVERY: Duration = Duration::from_secs(2);
/// Changes below which a table is not worth analyzing again.
const MIN_CHANGES: i64 = 500;
/// The advisory lock's first key ("RAST"); the second is the schema's.
const LOCK_CLASS: i32 = 0x5241_5354;
/// The store's tables (the only names ever put into `ANALYZE`).
const TABLES: &[&str] = &[
    "practices",
    "documents",
    "external_refs",
    "events",
    "jobs",
    "inbound_receipts",
    "audit_log",
];

/// Runs until the task is aborted. A failed round is tried again at the
/// next one: statistics are an optimisation, never a reason to stop.
pub(super) async fn run(pool: Pool) {
    loop {
        tokio::time::sleep(EVERY).await;
        if let Err(e) = analyze_grown(&pool).await {
            tracing::debug!(error = %e, "could not refresh the planner's statistics");
        }
    }
}

/// Analyzes the tables that grew enough since their last analysis (by
/// autovacuum or by this); returns their names.
pub(super) async fn analyze_grown(pool: &Pool) -> Result<Vec<&'static str>, StoreError> {
    let tx = Tx::new(pool::connection(pool).await?, "BEGIN");
    let result = async {
        let locked: bool = col(
            &tx.query_one(
                "SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))",
                &[&LOCK_CLASS],
            )
            .await?,
            0,
        )?;
        if !locked {
            return Ok(Vec::new()); // another instance is at it
        }
        // `reltuples`: the rows counted by the last analysis (-1: none
        // yet); `n_mod_since_analyze`: rows inserted, updated or deleted
        // since.
        let rows = tx
            .query(
                "SELECT s.relname::TEXT FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                 WHERE s.schemaname = current_schema() AND s.relname::TEXT = ANY($1::TEXT[])
                   AND s.n_mod_since_analyze >= GREATEST($2, c.reltuples::BIGINT)",
                &[&TABLES, &MIN_CHANGES],
            )
            .await?;
        let mut analyzed = Vec::new();
        for row in &rows {
            let name: &str = col(row, 0)?;
            let Some(&table) = TABLES.iter().find(|t| **t == name) else {
                continue;
            };
            tx.execute(&format!("ANALYZE {table}"), &[]).await?;
            analyzed.push(table);
        }
        Ok(analyzed)
    }
    .await;
    match tx.end(result).await {
        Ended::Done(done) => done.map(|(analyzed, _)| analyzed),
        Ended::Retry(e) => Err(e),
    }
}
