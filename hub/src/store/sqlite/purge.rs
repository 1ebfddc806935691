//! Removing concluded practices past their tenant's retention period.
//!
//! `raccordo purge` runs while the hub runs, as a second writer of the same
//! database. SQLite lets one writer at a time hold the write lock, and the
//! hub's writer waits for it (up to its busy timeout) with every practice of
//! its group commit. So the purge finds its candidates outside the lock and
//! removes them in transactions that each hold the lock a few milliseconds:
//! it takes the lock up front (`BEGIN IMMEDIATE`: a deferred transaction
//! that read first and then tried to write failed with `SQLITE_BUSY` when
//! the hub had written in between) and commits once its time is up, however
//! few practices that was.

use super::super::StoreError;
use super::audit;
use super::rows::ms;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use std::time::{Duration, Instant};

/// How long one transaction goes on removing practices before it commits:
/// what the hub's writer may wait for the purge, on top of the commit.
const LOCK_BUDGET: Duration = Duration::from_millis(3);

/// Candidates read per look-up, outside the write lock.
const CANDIDATES: i64 = 256;

/// How long the purge waits for the write lock in one attempt; the hub's
/// transactions hold it about a millisecond.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Attempts at one transaction before the purge gives up: a minute of a
/// write lock never free.
const ATTEMPTS: u32 = 30;

/// Removes `tenant`'s practices concluded before `before`, with their
/// documents, references, events, deliveries and receipts, and records one
/// `purge` entry in the tenant's audit trail. Returns how many went.
/// With `dry_run` it only counts.
pub fn purge(
    conn: &Connection,
    tenant: &str,
    before: DateTime<Utc>,
    dry_run: bool,
) -> Result<u64, StoreError> {
    let cutoff = ms(before);
    if dry_run {
        let n: i64 = conn.query_row(COUNT_SQL, params![tenant, cutoff], |r| r.get(0))?;
        return Ok(n as u64);
    }
    let mut total = 0u64;
    let mut after = String::new();
    loop {
        // A read in autocommit mode: no lock that the hub's writer waits on.
        let ids: Vec<String> = conn
            .prepare_cached(CANDIDATES_SQL)?
            .query_map(params![tenant, after, cutoff, CANDIDATES], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = ids.last() else { break };
        after = last.clone();
        let mut rest = ids.as_slice();
        while !rest.is_empty() {
            let (done, removed) = with_write_lock(conn, |tx| {
                let started = Instant::now();
                let (mut done, mut removed) = (0, 0);
                for id in rest {
                    removed += remove(tx, id, cutoff)? as u64;
                    done += 1;
                    if started.elapsed() >= LOCK_BUDGET {
                        break;
                    }
                }
                Ok((done, removed))
            })?;
            rest = &rest[done..];
            total += removed;
        }
    }
    if total > 0 {
        with_write_lock(conn, |tx| {
            audit::append(
                tx,
                tenant,
                "raccordo purge",
                "purge",
                None,
                &serde_json::json!({"practices": total, "concluded_before": before.to_rfc3339()}),
                Utc::now(),
            )
        })?;
    }
    Ok(total)
}

/// How many practices a purge would remove.
pub(super) const COUNT_SQL: &str = "SELECT COUNT(*) FROM practices
     WHERE tenant_id = ?1 AND concluded_at IS NOT NULL AND concluded_at < ?2";

/// The next candidates after `?2` in id order: the walk resumes where it
/// stopped instead of starting over past practices it had to keep.
pub(super) const CANDIDATES_SQL: &str = "SELECT id FROM practices
     WHERE tenant_id = ?1 AND id > ?2 AND concluded_at IS NOT NULL AND concluded_at < ?3
     ORDER BY id LIMIT ?4";

/// Still past retention (checked again under the lock).
pub(super) const STILL_CONCLUDED_SQL: &str =
    "SELECT 1 FROM practices WHERE id = ?1 AND concluded_at IS NOT NULL AND concluded_at < ?2";

/// The rows of a practice, children first (foreign keys are on).
pub(super) const DELETE_SQL: [&str; 7] = [
    "DELETE FROM documents WHERE practice_id = ?1",
    "DELETE FROM external_refs WHERE practice_id = ?1",
    "DELETE FROM events WHERE practice_id = ?1",
    "DELETE FROM early_results WHERE practice_id = ?1",
    "DELETE FROM jobs WHERE practice_id = ?1",
    "DELETE FROM inbound_receipts WHERE practice_id = ?1",
    "DELETE FROM practices WHERE id = ?1",
];

/// Removes one practice if it is still past retention.
fn remove(conn: &Connection, id: &str, cutoff: i64) -> Result<bool, StoreError> {
    let still: Option<i64> = conn
        .prepare_cached(STILL_CONCLUDED_SQL)?
        .query_row(params![id, cutoff], |r| r.get(0))
        .optional()?;
    if still.is_none() {
        return Ok(false);
    }
    audit::keep_event_records(conn, id)?;
    for sql in DELETE_SQL {
        conn.prepare_cached(sql)?.execute([id])?;
    }
    Ok(true)
}

/// Runs `op` in a transaction that holds the write lock from its start.
/// Only taking the lock can meet a busy database (a writer in WAL mode
/// holds it to its commit), so only that is tried again, each attempt
/// waiting up to the busy timeout.
fn with_write_lock<R>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let mut attempt = 1;
    loop {
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => break,
            Err(e)
                if e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) && attempt < ATTEMPTS =>
            {
                tracing::debug!(attempt, error = %e, "purge: the database stayed locked, trying again");
                attempt += 1;
            }
            Err(e) => {
                return Err(StoreError::from(e)
                    .context(&format!("purge: taking the write lock (attempt {attempt})")));
            }
        }
    }
    let outcome = op(conn).and_then(|value| Ok(conn.execute_batch("COMMIT").map(|()| value)?));
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::super::SqliteStore;
    use super::super::tests::new_practice;
    use crate::config::Synchronous;
    use crate::store::Store;
    use chrono::Utc;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// `raccordo purge` against a database the hub's store is writing to:
    /// the store's writes go on while the purge runs, and neither side
    /// fails on the other's lock.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn purge_and_the_hubs_writer_both_progress_on_one_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raccordo.db");
        const OLD: usize = 3_000;
        // Every seeding insert is queued at once: room for all of them.
        let store = SqliteStore::open(&path, Synchronous::Full, 2)
            .await
            .unwrap()
            .with_write_queue(2 * OLD);
        let mut seeding = tokio::task::JoinSet::new();
        for i in 0..OLD {
            let store = store.clone();
            seeding.spawn(async move {
                store
                    .insert_practice(
                        new_practice(&format!("old-{i:05}"), &format!("old-{i}")),
                        false,
                    )
                    .await
            });
        }
        while let Some(r) = seeding.join_next().await {
            r.unwrap().unwrap();
        }
        // Concluded long ago, with a vendor's receipt each.
        store
            .write(|c| {
                c.execute_batch(
                    "UPDATE practices SET concluded_at = 1000 WHERE id LIKE 'old-%';
                     INSERT INTO inbound_receipts (adapter, receipt, tenant_id, practice_id, received_at)
                     SELECT 'tributi', id, tenant_id, id, 1000 FROM practices WHERE id LIKE 'old-%';",
                )?;
                Ok(())
            })
            .await
            .unwrap();

        let purging = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let during = Arc::new(AtomicUsize::new(0));
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..8 {
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
                Ok::<_, crate::store::StoreError>(n)
            });
        }
        // The writers are under way before the purge starts.
        while during.load(Ordering::SeqCst) == 0 {
            purging.store(true, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
        let purge_path = path.clone();
        let purged = tokio::task::spawn_blocking(move || {
            SqliteStore::purge_concluded(&purge_path, "016024", Utc::now(), false)
        })
        .await
        .unwrap();
        let written_during_purge = during.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        let mut written = 0;
        while let Some(r) = writers.join_next().await {
            written += r
                .unwrap()
                .expect("the store's writes do not fail during a purge");
        }
        assert_eq!(
            purged.expect("the purge does not fail while the store writes"),
            OLD as u64
        );
        // Progress on both sides: a purge holding the lock to its end would
        // leave the writers waiting for the whole of it.
        assert!(
            written_during_purge >= 8,
            "only {written_during_purge} writes completed while the purge ran"
        );
        let conn = rusqlite::Connection::open(&path).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(
            count("SELECT COUNT(*) FROM practices WHERE id LIKE 'old-%'"),
            0
        );
        assert_eq!(count("SELECT COUNT(*) FROM inbound_receipts"), 0);
        assert_eq!(
            count("SELECT COUNT(*) FROM practices WHERE id LIKE 'new-%'"),
            written as i64
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM audit_log WHERE action = 'purge'"),
            1,
            "one purge record"
        );
    }
}
