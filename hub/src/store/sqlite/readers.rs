//! Read-only connections: a small pool, each read in one snapshot.

use crate::store::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Read-only connections, opened on demand and reused. At most `size`
/// blocking reads run at once (the semaphore); point reads on the async
/// workers add at most one connection per worker thread.
pub(super) struct ReaderPool {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) slots: tokio::sync::Semaphore,
}

impl ReaderPool {
    pub(super) fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().expect("reader pool lock").pop() {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        #[cfg(test)]
        let conn = super::plans::watched(conn);
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(64);
        // 8 MiB instead of SQLite's 2: a folder listing at 1,000,000
        // practices touches about 300 scattered pages, which then stay.
        conn.pragma_update(None, "cache_size", -8_192)?;
        keep_plans(&conn)?;
        Ok(conn)
    }

    pub(super) fn put(&self, conn: Connection) {
        // One left inside a read transaction would pin an old snapshot:
        // stale reads, and a log that can never restart. Closed instead.
        if conn.is_autocommit() {
            self.idle.lock().expect("reader pool lock").push(conn);
        }
    }
}

/// Runs `op` in one read transaction. Its statements then share one
/// snapshot (a practice and its references, documents and delivery agree
/// with each other), and the log's read lock is taken once: in autocommit
/// mode each statement began and ended a read transaction of its own, with
/// `fcntl` locks on the shared-memory file each time, about a third of the
/// hub's CPU for a `GetPractice`.
pub(super) fn in_snapshot<R>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = op(conn);
    let end = conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]));
    let value = result?;
    end?;
    Ok(value)
}

/// Turns on the query planner stability guarantee. Without it, the bundled
/// SQLite (built with STAT4) re-parses and re-plans a cached statement
/// whenever a newly bound value might change its plan - for our point
/// queries, on nearly every execution. Our queries are planned once.
pub(super) fn keep_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

pub(super) fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Internal(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}
