//! Refused calls in the audit trail, aggregated so that a flood cannot
//! grow it without bound and nothing is left out.
//!
//! Per (source, reason) and interval: the first refusal is recorded at
//! once (`count` 1); later ones in the same interval are counted and
//! recorded as one record when the interval ends (`count` n). The counts
//! of a source's records add up to its refusals. Distinct sources per
//! interval are bounded too: beyond [`MAX_SOURCES`], refusals are counted
//! under one `other sources` record.

use crate::store::{AuditEntry, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long repeats of one source and reason are counted before their
/// count is recorded.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// Distinct (source, reason) pairs recorded one by one per interval.
pub const MAX_SOURCES: usize = 1000;

/// The source under which refusals beyond [`MAX_SOURCES`] are counted.
const OTHER_SOURCES: &str = "other sources";

/// The audit of refused calls.
pub struct RefusalAudit {
    store: Arc<dyn Store>,
    interval: Duration,
    window: Mutex<Window>,
}

impl std::fmt::Debug for RefusalAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalAudit")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Window {
    started: Option<chrono::DateTime<chrono::Utc>>,
    /// (source, reason) → (first rpc, refusals after the first).
    seen: HashMap<(String, String), (String, u64)>,
}

impl RefusalAudit {
    /// An audit writing to `store`, aggregating per `interval`. Call
    /// [`Self::flush`] at each interval's end ([`Self::spawn_flusher`]) and
    /// on shutdown.
    pub fn new(store: Arc<dyn Store>, interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            interval,
            window: Mutex::new(Window::default()),
        })
    }

    /// Flushes every `interval` until the audit is dropped elsewhere.
    pub fn spawn_flusher(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let interval = self.interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(audit) = weak.upgrade() else { return };
                audit.flush().await;
            }
        });
    }

    /// Records one refused call of `rpc` by `source` for `reason`; true
    /// when it is the first of its source and reason in this interval.
    pub fn refused(&self, source: &str, rpc: &str, reason: &str) -> bool {
        let first = {
            let mut w = self.window.lock().expect("refusal audit lock");
            let w = &mut *w;
            w.started.get_or_insert_with(chrono::Utc::now);
            let key = (source.to_string(), reason.to_string());
            if let Some((_, n)) = w.seen.get_mut(&key) {
                *n += 1;
                false
            } else if w.seen.len() >= MAX_SOURCES {
                let other = (OTHER_SOURCES.to_string(), "various".to_string());
                w.seen.entry(other).or_insert_with(|| (String::new(), 0)).1 += 1;
                false
            } else {
                w.seen.insert(key, (rpc.to_string(), 0));
                true
            }
        };
        if first {
            let entry = entry(source, rpc, reason, 1, None, self.interval);
            let store = Arc::clone(&self.store);
            tokio::spawn(async move { write(&*store, entry).await });
        }
        first
    }

    /// Records the counts of the interval now ending and starts a new one.
    pub async fn flush(&self) {
        let window = std::mem::take(&mut *self.window.lock().expect("refusal audit lock"));
        for ((source, reason), (rpc, n)) in window.seen {
            if n > 0 {
                let e = entry(&source, &rpc, &reason, n, window.started, self.interval);
                write(&*self.store, e).await;
            }
        }
    }
}

fn entry(
    source: &str,
    rpc: &str,
    reason: &str,
    count: u64,
    since: Option<chrono::DateTime<chrono::Utc>>,
    interval: Duration,
) -> AuditEntry {
    let mut detail = serde_json::json!({"rpc": rpc, "reason": reason, "count": count});
    if let Some(since) = since {
        // The repeats of an interval: when it began and how long it is.
        detail["since"] = serde_json::json!(since.to_rfc3339());
        detail["interval_seconds"] = serde_json::json!(interval.as_secs());
    }
    AuditEntry {
        tenant_id: None,
        actor: source.to_string(),
        action: "call_denied".into(),
        practice_id: None,
        detail,
    }
}

async fn write(store: &dyn Store, entry: AuditEntry) {
    if let Err(e) = store.record_audit(entry).await {
        tracing::error!(error = %e, "cannot record refused calls in the audit trail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::store::sqlite::SqliteStore;

    /// Many sources and many repeats: the records stay bounded and their
    /// counts add up to every refusal.
    #[tokio::test]
    async fn records_stay_bounded_and_count_every_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&db, Synchronous::Normal, 2)
                .await
                .unwrap(),
        );
        let audit = RefusalAudit::new(store, INTERVAL);
        let sources = MAX_SOURCES + 500;
        for round in 0..3 {
            for s in 0..sources {
                let first = audit.refused(
                    &format!("unauthenticated 10.0.{s}"),
                    "/rpc",
                    "no credentials",
                );
                assert_eq!(first, round == 0 && s < MAX_SOURCES);
            }
        }
        audit.flush().await;
        // The first records are written in the background: wait for them.
        let read = || {
            SqliteStore::export_audit(
                &db,
                "-",
                chrono::DateTime::<chrono::Utc>::MIN_UTC,
                chrono::DateTime::<chrono::Utc>::MAX_UTC,
            )
            .unwrap()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let records = loop {
            let records = read();
            if records.len() > 2 * MAX_SOURCES || tokio::time::Instant::now() > deadline {
                break records;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(records.len(), 2 * MAX_SOURCES + 1);
        let counted: u64 = records
            .iter()
            .map(|r| r.detail["count"].as_u64().unwrap())
            .sum();
        assert_eq!(counted, 3 * sources as u64);
        let other = records.iter().find(|r| r.actor == OTHER_SOURCES).unwrap();
        assert_eq!(other.detail["count"], 3 * 500);
    }
}
