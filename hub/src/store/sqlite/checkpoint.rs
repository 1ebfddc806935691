//! WAL checkpoints, mostly on their own thread.
//!
//! SQLite's automatic checkpoint runs inside the committing connection: on
//! our single writer thread, copying pages into the database file and
//! fsyncing it while every submission waits behind it. Here the writer's WAL
//! hook only signals, each time the log has grown by [`FRAMES`] pages, a
//! separate thread that runs a PASSIVE checkpoint (never blocking the writer
//! or the readers).
//!
//! Signalling on every commit past the threshold, as SQLite's own hook does,
//! made the thread checkpoint after nearly every group commit: two fsyncs
//! each, competing with the writer's, and no page copied once for several
//! commits.
//!
//! A log is only rewound to its start when a write transaction begins with
//! every frame already copied; under sustained load the background thread is
//! always a few commits behind, so the log would grow without bound. Past
//! [`LIMIT`] frames the writer therefore copies the last few frames itself
//! (the thread has done the rest), so its next transaction restarts the log.

use super::super::StoreError;
use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;
use std::path::Path;
use std::sync::mpsc;

/// WAL growth (pages) after which the background thread checkpoints:
/// SQLite's own automatic threshold.
const FRAMES: i32 = 1000;

/// WAL length (pages, 4 KiB each) past which the writer finishes the
/// checkpoint itself so the log restarts: 32 MiB.
const LIMIT: i32 = 8 * FRAMES;

/// Starts the checkpoint thread for the database at `path` and makes
/// `writer` signal it instead of checkpointing itself. The thread ends when
/// the writer connection is dropped.
pub fn start(path: &Path, writer: &mut Connection) -> Result<(), StoreError> {
    start_with(path, writer, FRAMES, LIMIT)
}

/// [`start`] with other thresholds (pages): tests use small ones.
fn start_with(
    path: &Path,
    writer: &mut Connection,
    frames_between: i32,
    limit: i32,
) -> Result<(), StoreError> {
    let mut conn = Connection::open(path)
        .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    // Only this thread's explicit checkpoints, never one on its own.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.wal_hook(None::<fn(&mut Wal, i32) -> rusqlite::Result<()>>)?;
    let (signal, wake) = mpsc::sync_channel::<()>(1);
    let mut next_signal = frames_between;
    writer.wal_hook(Some(move |wal: &mut Wal, frames: i32| {
        if frames < next_signal - frames_between {
            // The log restarted from its beginning.
            next_signal = frames_between;
        }
        if frames >= next_signal {
            next_signal = frames + frames_between;
            // Full means a checkpoint is already asked for.
            let _ = signal.try_send(());
        }
        if frames >= limit {
            // Busy (the thread is mid-checkpoint) is fine: the next commit
            // tries again.
            if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                tracing::debug!(error = %e, frames, "catch-up checkpoint deferred");
            }
        }
        Ok(())
    }))?;
    std::thread::Builder::new()
        .name("raccordo-store-checkpoint".into())
        .spawn(move || {
            while wake.recv().is_ok() {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retried at the next signal");
                }
            }
        })
        .map_err(|e| StoreError::Internal(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_pages(db: &Path) -> u64 {
        let wal = db.with_extension("db-wal");
        std::fs::metadata(wal).map_or(0, |m| m.len()) / 4096
    }

    /// Under writes that never pause, the log must still restart from its
    /// beginning instead of growing with everything ever written. The
    /// background thread is never signalled here (its threshold is out of
    /// reach), so what is measured is the writer's own catch-up alone, with
    /// nothing that depends on how fast another thread runs.
    #[test]
    fn the_log_stays_bounded_under_sustained_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let mut writer = Connection::open(&db).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, pad BLOB NOT NULL)")
            .unwrap();
        start_with(&db, &mut writer, 1_000_000, 100).unwrap();
        // About 2,000 pages written in all: twenty times the limit.
        for i in 0..1_000 {
            writer
                .execute("INSERT INTO t (id, pad) VALUES (?1, zeroblob(6000))", [i])
                .unwrap();
        }
        // A log that never restarted would hold all ~2,000 pages; one that
        // restarts at the first commit past the limit, the limit and that
        // commit's few pages.
        let pages = wal_pages(&db);
        assert!(
            pages < 120,
            "the log grew to {pages} pages; it should restart right after 100"
        );
        let rows: i64 = writer
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1_000);
    }
}
