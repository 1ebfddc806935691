//! The hub's operational state, as `/readyz`, `GetHubStatus` and
//! `raccordo status` report it: one computation, three views.

use crate::practices::PracticeService;
use raccordo_adapters::AdapterHealth;
use serde::Serialize;
use std::collections::BTreeMap;

/// The state of the hub right now.
#[derive(Debug, Clone, Serialize)]
pub struct HubStatus {
    pub version: &'static str,
    /// This process's id, the owner of its delivery leases.
    pub instance_id: String,
    pub uptime_seconds: f64,
    /// The store answers and no adapter instance is down.
    pub ready: bool,
    pub store: ComponentState,
    /// By instance name.
    pub adapters: BTreeMap<String, AdapterStatus>,
}

/// `up`, or `down` with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentState {
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One adapter instance: its health and its outbox.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterStatus {
    pub kind: &'static str,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub max_concurrency: usize,
    pub jobs_due: i64,
    pub jobs_scheduled: i64,
    pub jobs_in_flight: i64,
    pub dead_letters: i64,
    pub oldest_due_age_seconds: f64,
}

/// Reads the store's outbox counts and every instance's health. With
/// `with_backlog` false only the store is pinged (cheap enough for a load
/// balancer probing every second).
pub async fn hub_status(service: &PracticeService, with_backlog: bool) -> HubStatus {
    let store = if with_backlog {
        service
            .store()
            .ops_snapshot(chrono::Utc::now())
            .await
            .map(Some)
    } else {
        service.store().ping().await.map(|()| None)
    };
    let (store_state, snapshot) = match store {
        Ok(snapshot) => (
            ComponentState {
                state: "up",
                reason: None,
            },
            snapshot,
        ),
        Err(e) => (
            ComponentState {
                state: "down",
                reason: Some(e.to_string()),
            },
            None,
        ),
    };
    let mut ready = store_state.state == "up";
    let adapters: BTreeMap<String, AdapterStatus> = service
        .adapters()
        .iter()
        .map(|(name, instance)| {
            let health = instance.adapter.health();
            ready &= !matches!(health, AdapterHealth::Down(_));
            let backlog = snapshot
                .as_ref()
                .and_then(|s| s.adapters.iter().find(|a| &a.adapter == name));
            let status = AdapterStatus {
                kind: instance.adapter.kind(),
                state: health.state(),
                reason: health.reason().map(str::to_string),
                max_concurrency: instance.max_concurrency,
                jobs_due: backlog.map_or(0, |b| b.due),
                jobs_scheduled: backlog.map_or(0, |b| b.scheduled),
                jobs_in_flight: backlog.map_or(0, |b| b.in_flight),
                dead_letters: backlog.map_or(0, |b| b.dead),
                oldest_due_age_seconds: backlog
                    .and_then(|b| b.oldest_due_age)
                    .map_or(0.0, |d| d.as_secs_f64()),
            };
            (name.clone(), status)
        })
        .collect();
    HubStatus {
        version: env!("CARGO_PKG_VERSION"),
        instance_id: service.leases().owner().to_string(),
        uptime_seconds: service.metrics().uptime().as_secs_f64(),
        ready,
        store: store_state,
        adapters,
    }
}
