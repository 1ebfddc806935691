//! The hub's operational state, in three views of two computations:
//!
//! - [`readiness`] (`/readyz`): whether this instance can accept and store
//!   practices — the store answers (its migrations ran before the
//!   listeners opened) and the hub is not shutting down. A vendor that is
//!   down does not make an instance unready: its deliveries wait in the
//!   outbox, and every other instance would be just as unable to reach it.
//! - [`adapters_report`] (`/adapters`): each adapter instance's health
//!   (breaker, connection) and its outbox (backlog, dead letters).
//! - [`hub_status`] (`GetHubStatus`, `raccordo status`): both.

use crate::practices::PracticeService;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// A store that takes longer than this to answer a readiness ping counts
/// as away (a connection to an unreachable server may hang far longer than
/// a load balancer waits).
pub const STORE_PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this instance can accept and store practices now.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub version: &'static str,
    /// This process's id, the owner of its delivery leases.
    pub instance_id: String,
    pub uptime_seconds: f64,
    /// The store answers and the hub is not shutting down.
    pub ready: bool,
    pub store: ComponentState,
    /// A stop has begun: calls are no longer accepted.
    pub shutting_down: bool,
}

/// `up`, or `down` with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentState {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ComponentState {
    fn up() -> Self {
        Self {
            state: "up",
            reason: None,
        }
    }

    fn down(reason: String) -> Self {
        Self {
            state: "down",
            reason: Some(reason),
        }
    }

    /// Whether the component is up.
    pub fn is_up(&self) -> bool {
        self.state == "up"
    }
}

/// Every adapter instance: its health and its outbox.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptersReport {
    /// The store the backlog is read from; when it is down the backlog is
    /// unknown and left out.
    pub store: ComponentState,
    /// By instance name.
    pub adapters: BTreeMap<String, AdapterStatus>,
}

/// One adapter instance.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterStatus {
    pub kind: &'static str,
    /// `up`, `degraded` or `down` (an open circuit breaker is `down`, a
    /// half-open one `degraded`; the reason says which).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub max_concurrency: usize,
    /// Read from the store; absent when the store does not answer.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Backlog>,
}

/// An adapter instance's share of the outbox.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Backlog {
    pub jobs_due: i64,
    pub jobs_scheduled: i64,
    pub jobs_in_flight: i64,
    pub dead_letters: i64,
    /// How long the oldest due delivery has waited; absent when none is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_due_age_seconds: Option<f64>,
    /// `ANOMALY` events this instance's reports caused on stored practices
    /// (results not applied: late, contradictory, or changes the state
    /// machines do not allow), and when the last one was recorded.
    pub anomalies: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_anomaly_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The whole picture, for `GetHubStatus`.
#[derive(Debug, Clone)]
pub struct HubStatus {
    pub readiness: Readiness,
    pub adapters: AdaptersReport,
}

/// Pings the store (bounded by [`STORE_PING_TIMEOUT`]): cheap enough for a
/// load balancer probing every second.
pub async fn readiness(service: &PracticeService) -> Readiness {
    let store = match tokio::time::timeout(STORE_PING_TIMEOUT, service.store().ping()).await {
        Ok(Ok(())) => ComponentState::up(),
        Ok(Err(e)) => ComponentState::down(e.to_string()),
        Err(_) => ComponentState::down(format!(
            "no answer within {}",
            humantime::format_duration(STORE_PING_TIMEOUT)
        )),
    };
    let shutting_down = service.is_closing();
    Readiness {
        version: env!("CARGO_PKG_VERSION"),
        instance_id: service.leases().owner().to_string(),
        uptime_seconds: service.metrics().uptime().as_secs_f64(),
        ready: store.is_up() && !shutting_down,
        store,
        shutting_down,
    }
}

/// Reads the outbox counts from the store and every instance's health.
pub async fn adapters_report(service: &PracticeService) -> AdaptersReport {
    let snapshot = tokio::time::timeout(
        STORE_PING_TIMEOUT,
        service.store().ops_snapshot(chrono::Utc::now()),
    )
    .await;
    let (store, snapshot) = match snapshot {
        Ok(Ok(s)) => (ComponentState::up(), Some(s)),
        Ok(Err(e)) => (ComponentState::down(e.to_string()), None),
        Err(_) => (
            ComponentState::down(format!(
                "no answer within {}",
                humantime::format_duration(STORE_PING_TIMEOUT)
            )),
            None,
        ),
    };
    let adapters = service
        .adapters()
        .iter()
        .map(|(name, instance)| {
            let health = instance.adapter.health();
            // An instance with nothing queued has no row in the snapshot:
            // its counts are real zeros.
            let backlog = snapshot.as_ref().map(|s| {
                let anomalies = s.anomalies.iter().find(|a| &a.actor == name);
                let counts = s.adapters.iter().find(|a| &a.adapter == name).map_or_else(
                    Backlog::default,
                    |b| Backlog {
                        jobs_due: b.due,
                        jobs_scheduled: b.scheduled,
                        jobs_in_flight: b.in_flight,
                        dead_letters: b.dead,
                        oldest_due_age_seconds: b.oldest_due_age.map(|d| d.as_secs_f64()),
                        ..Backlog::default()
                    },
                );
                Backlog {
                    anomalies: anomalies.map_or(0, |a| a.count),
                    last_anomaly_at: anomalies.and_then(|a| a.last_at),
                    ..counts
                }
            });
            let status = AdapterStatus {
                kind: instance.adapter.kind(),
                state: health.state(),
                reason: health.reason().map(str::to_string),
                max_concurrency: instance.max_concurrency,
                backlog,
            };
            (name.clone(), status)
        })
        .collect();
    AdaptersReport { store, adapters }
}

/// Readiness and the adapters' report together.
pub async fn hub_status(service: &PracticeService) -> HubStatus {
    HubStatus {
        readiness: readiness(service).await,
        adapters: adapters_report(service).await,
    }
}
