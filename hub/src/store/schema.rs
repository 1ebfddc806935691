//! Versioned schema migrations, embedded in the binary and applied at start.
//! Each runs in its own transaction; the applied versions are recorded in
//! `schema_migrations`, so a restart applies only what is new.

use super::StoreError;
use rusqlite::Connection;

/// (version, name, SQL). Append only: never edit a released migration.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../../migrations/0001_init.sql")),
    (
        2,
        "inbound_receipts",
        include_str!("../../migrations/0002_inbound_receipts.sql"),
    ),
    (
        3,
        "follow_up",
        include_str!("../../migrations/0003_follow_up.sql"),
    ),
    (
        4,
        "job_trace_context",
        include_str!("../../migrations/0004_job_trace_context.sql"),
    ),
    (
        5,
        "audit_log",
        include_str!("../../migrations/0005_audit_log.sql"),
    ),
    (
        6,
        "events_audit",
        include_str!("../../migrations/0006_events_audit.sql"),
    ),
    (
        7,
        "ascending_listing_indexes",
        include_str!("../../migrations/0007_ascending_listing_indexes.sql"),
    ),
    (
        8,
        "job_leases",
        include_str!("../../migrations/0008_job_leases.sql"),
    ),
    (
        9,
        "correlation_purge_indexes",
        include_str!("../../migrations/0009_correlation_purge_indexes.sql"),
    ),
    (
        10,
        "cluster",
        include_str!("../../migrations/0010_cluster.sql"),
    ),
    (
        11,
        "event_audit_format",
        include_str!("../../migrations/0011_event_audit_format.sql"),
    ),
    (
        12,
        "early_results",
        include_str!("../../migrations/0012_early_results.sql"),
    ),
    (
        13,
        "outcome_data",
        include_str!("../../migrations/0013_outcome_data.sql"),
    ),
];

/// Applies pending migrations; returns the schema version.
pub fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    migrate_up_to(conn, MIGRATIONS.last().map_or(0, |m| m.0))
}

/// Applies pending migrations up to `last` (tests build older databases);
/// returns the version the database is at afterwards.
pub(crate) fn migrate_up_to(conn: &mut Connection, last: i64) -> Result<i64, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > newest {
        return Err(StoreError::Internal(format!(
            "the database is at schema version {current}, newer than this binary knows ({newest}): \
             run a newer raccordo"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current && m.0 <= last) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Internal(format!("migration {version} ({name}) failed: {e}"))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, datetime('now'))",
            rusqlite::params![version, name],
        )?;
        tx.commit()?;
        tracing::info!(version, name, "applied schema migration");
    }
    Ok(current.max(last.min(newest)))
}

/// A migration this binary carries: what `raccordo migrate --dry-run` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The newest schema version this binary knows.
pub fn newest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// The database's schema version (0 for a new file) and the migrations a
/// start would apply; reads only.
pub fn pending(conn: &Connection) -> Result<(i64, Vec<Migration>), StoreError> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
        [],
        |r| r.get(0),
    )?;
    let current: i64 = if exists {
        conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?
    } else {
        0
    };
    Ok((current, after(MIGRATIONS, current)))
}

/// The migrations of this binary newer than `current`.
pub fn after_version(current: i64) -> Vec<Migration> {
    after(MIGRATIONS, current)
}

/// The migrations of `all` newer than `current`.
pub(crate) fn after(all: &[(i64, &'static str, &'static str)], current: i64) -> Vec<Migration> {
    all.iter()
        .filter(|m| m.0 > current)
        .map(|&(version, name, sql)| Migration { version, name, sql })
        .collect()
}
