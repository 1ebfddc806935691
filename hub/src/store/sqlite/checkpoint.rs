//! WAL checkpoints on their own thread.
//!
//! SQLite's automatic checkpoint runs inside the committing connection: on
//! our single writer thread, copying pages into the database file and
//! fsyncing it while every submission waits behind it. Here the writer only
//! signals, from its WAL hook, that the log has grown; a separate thread
//! with its own connection runs a PASSIVE checkpoint, which never blocks
//! the writer or the readers.

use super::super::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc;

/// WAL frames (pages) after which a checkpoint is asked for: SQLite's own
/// automatic threshold.
const FRAMES: i32 = 1000;

/// Starts the checkpoint thread for the database at `path` and makes
/// `writer` signal it instead of checkpointing itself. The thread ends when
/// the writer connection is dropped.
pub fn start(path: &Path, writer: &mut Connection) -> Result<(), StoreError> {
    let mut conn = Connection::open(path)
        .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    // Only this thread's explicit checkpoints, never one on its own.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.wal_hook(None::<fn(&mut rusqlite::hooks::Wal, i32) -> rusqlite::Result<()>>)?;
    let (signal, wake) = mpsc::sync_channel::<()>(1);
    writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: i32| {
        if frames >= FRAMES {
            // Full means a checkpoint is already asked for.
            let _ = signal.try_send(());
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
        .map_err(|e| StoreError::Database(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}
