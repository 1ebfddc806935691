//! The writer thread: every write of the hub runs here, in group commits.

use super::pending;
use crate::bus::EventBus;
use crate::metrics::StoreMetrics;
use crate::store::StoreError;
use rusqlite::Connection;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

/// Commands the writer runs in one transaction at most.
pub(super) const MAX_BATCH: usize = 512;

/// Default of `store.write_queue`: four of the writer's transactions.
pub const DEFAULT_WRITE_QUEUE: usize = 4 * MAX_BATCH;

/// Writes queued or running, against the queue's capacity. A slot is held
/// by its command and given back when the command is answered, so a caller
/// that stops waiting does not free a slot its command still takes.
pub(super) struct QueueSlot(pub(super) Arc<AtomicUsize>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A write waiting for the writer thread. It runs inside a transaction
/// shared with other commands and may run again from the start when
/// another command of its batch is rolled back, so its operation is a `Fn`
/// that only reads what it captured.
pub(super) trait WriteCommand: Send {
    /// Runs the operation and keeps its result; returns whether it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known: the commit's
    /// error, if it failed, replaces a successful result.
    fn answer(self: Box<Self>, commit_error: Option<StoreError>);
}

pub(super) struct Write<F, R> {
    pub(super) op: F,
    pub(super) result: Option<Result<R, StoreError>>,
    pub(super) reply: oneshot::Sender<Result<R, StoreError>>,
    pub(super) slot: QueueSlot,
}

impl<F, R> WriteCommand for Write<F, R>
where
    F: Fn(&Connection) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        // A panicking operation must not take the writer thread down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.op)(conn)))
            .unwrap_or_else(|_| Err(StoreError::Internal("a store operation panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit_error: Option<StoreError>) {
        let Write {
            result,
            reply,
            slot,
            ..
        } = *self;
        // Free before the caller hears back: it may write again at once.
        drop(slot);
        let result = match (result, commit_error) {
            (Some(Err(own)), _) => Err(own),
            (_, Some(e)) => Err(e),
            (Some(ok), None) => ok,
            (None, None) => Err(StoreError::Internal("the store command did not run".into())),
        };
        let _ = reply.send(result);
    }
}

/// The writer thread: group commit. Commands run one after the other in one
/// transaction, without a savepoint each: a savepoint copies every page a
/// command touches into a sub-journal first, a tenth of the writer's time.
/// A command that fails without writing anything (the usual failure: a
/// check before the first write) is simply left out. One that fails after
/// writing rolls the transaction back, and the others run again from the
/// start without it (a failed statement undoes itself, so "wrote nothing"
/// is "the connection's change count did not move").
pub(super) fn run_writer(
    conn: Connection,
    commands: mpsc::Receiver<Box<dyn WriteCommand>>,
    metrics: Option<StoreMetrics>,
    bus: Option<EventBus>,
) {
    pending::start_writer();
    while let Ok(first) = commands.recv() {
        let started = std::time::Instant::now();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let commit_error = run_batch(&conn, &mut batch).err();
        let committed = pending::finish();
        if let (Some(bus), None) = (&bus, &commit_error) {
            bus.publish(committed);
        }
        if let Some(m) = &metrics {
            m.transaction_duration
                .observe(started.elapsed().as_secs_f64());
            m.commit_batch.observe(batch.len() as f64);
        }
        for command in batch {
            command.answer(commit_error.clone());
        }
    }
}

/// Runs `batch` in one transaction and commits what succeeded; the error
/// is the transaction's (nothing of the batch was stored).
pub(super) fn run_batch(
    conn: &Connection,
    batch: &mut [Box<dyn WriteCommand>],
) -> Result<(), StoreError> {
    // Cached like every other statement: parsing these per batch showed
    // up in profiles.
    let run = |sql: &str| -> rusqlite::Result<()> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    let mut left_out = vec![false; batch.len()];
    'transaction: loop {
        run("BEGIN IMMEDIATE")
            .map_err(|e| StoreError::from(e).context("cannot begin a transaction"))?;
        for (command, left_out) in batch.iter_mut().zip(left_out.iter_mut()) {
            if *left_out {
                continue;
            }
            let changes = conn.total_changes();
            let before = pending::mark();
            if command.run(conn) {
                continue;
            }
            *left_out = true;
            // SQLite itself rolls the whole transaction back on some errors
            // (a full disk, an I/O error): the others must not go on in
            // autocommit mode, each statement committing on its own.
            let rolled_back = conn.is_autocommit();
            if conn.total_changes() == changes && !rolled_back {
                if let Some(before) = before {
                    pending::roll_back_to(before);
                }
                continue;
            }
            if !rolled_back {
                let _ = run("ROLLBACK");
            }
            pending::finish();
            continue 'transaction;
        }
        if left_out.iter().all(|l| *l) {
            // Every command failed and answers with its own error.
            let _ = run("ROLLBACK");
            return Ok(());
        }
        return pending::write_audit_heads(conn)
            .and_then(|()| run("COMMIT"))
            .map_err(|e| {
                let _ = run("ROLLBACK");
                StoreError::from(e).context("commit failed")
            });
    }
}
