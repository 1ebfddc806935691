//! In-process fan-out of stored events to live watchers.
//!
//! Events are published only after their transaction committed, so a
//! watcher that re-reads the store on a notification always finds them, and
//! in cursor order: by the SQLite writer after each commit, or by the
//! PostgreSQL store's feed, which publishes every instance's events once
//! sequenced. The store stays the source of truth: a lagging receiver
//! re-reads from it.

use crate::domain::practice::Event;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::broadcast;

/// Capacity before slow watchers lag (they then catch up from the store).
const CAPACITY: usize = 4096;

/// The hub's event bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    /// The hub's own subscribers (the event logger), not counted as watchers.
    internal: Arc<AtomicUsize>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            internal: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Logs every published event from a task of its own. Events are
    /// published by the store's writer thread, the one serial stage of every
    /// submission: formatting and writing log lines there would slow every
    /// write. Not started when info logging is off.
    pub fn spawn_logger(&self) {
        if !tracing::enabled!(tracing::Level::INFO) {
            return;
        }
        let mut events = self.tx.subscribe();
        self.internal.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => log_event(&e),
                    Err(broadcast::error::RecvError::Lagged(missed)) => tracing::warn!(
                        missed,
                        "the event log fell behind: {missed} state changes were not logged \
                         (they are stored, with their events)"
                    ),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// Subscribes to events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// How many watchers are subscribed (live streams and waiting submitters).
    pub fn subscribers(&self) -> usize {
        self.tx
            .receiver_count()
            .saturating_sub(self.internal.load(Ordering::Relaxed))
    }

    /// Publishes committed events (the logger, if started, logs each once).
    pub fn publish(&self, events: Vec<Event>) {
        for e in events {
            // No subscribers is fine: nobody is watching.
            let _ = self.tx.send(Arc::new(e));
        }
    }
}

/// Logs one state change with ids, statuses, codes and sizes only: the
/// event's free text (vendor rejections and error details, withdrawal
/// reasons) can name citizens, so it stays in the practice's events, where
/// roles guard it; the log says only how long it is.
fn log_event(e: &Event) {
    let change = match (e.from_status, e.to_status, e.from_delivery, e.to_delivery) {
        (from, Some(to), _, _) => {
            format!("status {} -> {to}", from.map(|s| s.as_str()).unwrap_or("-"))
        }
        (_, _, from, Some(to)) => format!(
            "delivery {} -> {to}",
            from.map(|s| s.as_str()).unwrap_or("-")
        ),
        _ => String::new(),
    };
    let reason_chars = e.reason.as_deref().map_or(0, |r| r.chars().count());
    let vendor_code = e.vendor_code.as_deref().unwrap_or("");
    match e.kind {
        crate::domain::practice::EventKind::Anomaly => tracing::warn!(
            practice_id = %e.practice_id, tenant = %e.tenant_id, seq = e.sequence, actor = %e.actor,
            vendor_code, reason_chars, "anomaly recorded on the practice"
        ),
        _ => tracing::info!(
            practice_id = %e.practice_id, tenant = %e.tenant_id, service = %e.service_code,
            seq = e.sequence, actor = %e.actor, vendor_code, reason_chars, "{change}"
        ),
    }
}
