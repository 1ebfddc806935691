//! Versioned schema migrations for PostgreSQL, embedded in the binary and
//! applied at open by exactly one instance: each instance takes a session
//! advisory lock first, so the others wait and then find nothing to do.

use super::pool::from_pg;
use crate::store::StoreError;
use deadpool_postgres::Object;

/// (version, name, SQL). Append only: never edit a released migration.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "cluster",
        include_str!("../../../migrations/postgres/0002_cluster.sql"),
    ),
    (
        3,
        "sequencer",
        include_str!("../../../migrations/postgres/0003_sequencer.sql"),
    ),
    (
        4,
        "event_audit_format",
        include_str!("../../../migrations/postgres/0004_event_audit_format.sql"),
    ),
    (
        5,
        "sequenced_event_indexes",
        include_str!("../../../migrations/postgres/0005_sequenced_event_indexes.sql"),
    ),
    (
        6,
        "early_results",
        include_str!("../../../migrations/postgres/0006_early_results.sql"),
    ),
    (
        7,
        "live_job_indexes",
        include_str!("../../../migrations/postgres/0007_live_job_indexes.sql"),
    ),
    (
        8,
        "claim_check",
        include_str!("../../../migrations/postgres/0008_claim_check.sql"),
    ),
    (
        9,
        "outcome_data",
        include_str!("../../../migrations/postgres/0009_outcome_data.sql"),
    ),
];

/// The advisory lock's first key ("RACC"); the second is the schema's,
/// so databases with one hub schema each do not wait on each other.
const LOCK_CLASS: i32 = 0x5241_4343;

/// Applies pending migrations; returns the schema version.
pub(super) async fn migrate(client: &Object) -> Result<i64, StoreError> {
    client
        .execute(
            "SELECT pg_advisory_lock($1, hashtext(current_schema()))",
            &[&LOCK_CLASS],
        )
        .await
        .map_err(|e| from_pg(e).context("cannot take the migration lock"))?;
    let result = apply(client).await;
    // Released even after a failure: the lock belongs to the session, and
    // the connection goes back to the pool.
    let unlock = client
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
            &[&LOCK_CLASS],
        )
        .await;
    let version = result?;
    unlock.map_err(from_pg)?;
    Ok(version)
}

async fn apply(client: &Object) -> Result<i64, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(from_pg)?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(from_pg)?
        .get(0);
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        return Err(StoreError::Internal(format!(
            "the database is at schema version {current}, newer than this binary knows ({newest}): \
             run a newer raccordo"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let failed = |e: tokio_postgres::Error| {
            from_pg(e).context(&format!("migration {version} ({name}) failed"))
        };
        // A migration rebuilds indexes of tables that may hold millions of
        // rows: `store.postgres.statement_timeout` bounds the hub's
        // statements, not the upgrade (SET LOCAL: this transaction only).
        client
            .batch_execute("BEGIN; SET LOCAL statement_timeout = 0")
            .await
            .map_err(failed)?;
        let applied = async {
            client.batch_execute(sql).await?;
            client
                .execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    &[version, name],
                )
                .await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        if let Err(e) = applied {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(failed(e));
        }
        tracing::info!(version, name, "applied PostgreSQL schema migration");
    }
    Ok(current.max(newest))
}

/// The schema's version (0 for an empty schema) and the migrations a start
/// would apply; reads only, takes no lock.
pub(super) async fn pending(
    client: &Object,
) -> Result<(i64, Vec<crate::store::Migration>), StoreError> {
    // `to_regclass` looks in the search_path: the hub's own schema.
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(from_pg)?
        .get(0);
    let current: i64 = if exists {
        client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .await
            .map_err(from_pg)?
            .get(0)
    } else {
        0
    };
    Ok((current, crate::store::schema::after(MIGRATIONS, current)))
}
