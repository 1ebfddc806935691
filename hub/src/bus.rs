//! In-process fan-out of stored events to live watchers.
//!
//! Events are published only after their transaction committed, so a
//! watcher that re-reads the store on a notification always finds them. The
//! store stays the source of truth: a lagging receiver re-reads from it.

use crate::domain::practice::Event;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Capacity before slow watchers lag (they then catch up from the store).
const CAPACITY: usize = 4096;

/// The hub's event bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
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
        }
    }

    /// Subscribes to events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// How many watchers are subscribed (live streams and waiting submitters).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Publishes committed events, logging each state change once.
    pub fn publish(&self, events: Vec<Event>) {
        for e in events {
            log_event(&e);
            // No subscribers is fine: nobody is watching.
            let _ = self.tx.send(Arc::new(e));
        }
    }
}

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
    let reason = e.reason.as_deref().unwrap_or("");
    // Reasons come from the hub and vendors' error summaries, never from
    // form data; applicant identifiers are not logged at all.
    match e.kind {
        crate::domain::practice::EventKind::Anomaly => tracing::warn!(
            practice_id = %e.practice_id, tenant = %e.tenant_id, seq = e.sequence, actor = %e.actor,
            "anomaly: {reason}"
        ),
        _ => tracing::info!(
            practice_id = %e.practice_id, tenant = %e.tenant_id, service = %e.service_code,
            seq = e.sequence, actor = %e.actor, "{change}{}",
            if reason.is_empty() { String::new() } else { format!(": {reason}") }
        ),
    }
}
