//! Versioned schema migrations, embedded in the binary and applied at start.
//! Each runs in its own transaction; the applied versions are recorded in
//! `schema_migrations`, so a restart applies only what is new.

use super::StoreError;
use sqlx::SqlitePool;

/// (version, name, SQL). Append only: never edit a released migration.
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "init", include_str!("../../migrations/0001_init.sql"))];

/// Applies pending migrations; returns the schema version.
pub async fn migrate(pool: &SqlitePool) -> Result<i64, StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(pool)
            .await?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        return Err(StoreError::Database(format!(
            "the database is at schema version {current}, newer than this binary knows ({newest}): \
             run a newer raccordo"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::Database(format!("migration {version} ({name}) failed: {e}"))
            })?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, datetime('now'))")
            .bind(version)
            .bind(*name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied schema migration");
    }
    Ok(newest)
}
