//! Simulated vendor back offices: small REST servers the hub starts on
//! loopback when the configuration declares `[simulators.*]`, so the demo
//! and the benchmarks need nothing external.
//!
//! They speak the shape the demo's REST adapters map: `esito` (OK, KO,
//! PRESA_IN_CARICO), `protocollo.numero`, `id`, `motivo`, `documenti[]`. They
//! answer a re-sent request (same `Idempotency-Key`) with the first answer,
//! as a well-behaved vendor does.

use crate::config::{SimulatorBehaviour, SimulatorConfig};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::serve::ListenerExt;
use base64::Engine;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

struct Sim {
    name: String,
    config: SimulatorConfig,
    counter: AtomicU64,
    answers: Mutex<HashMap<String, serde_json::Value>>,
}

/// Starts a simulator; returns the address it listens on.
pub async fn start(name: &str, config: &SimulatorConfig) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("simulator {name} cannot listen on {}: {e}", config.listen),
            )
        })?;
    let addr = listener.local_addr()?;
    let sim = Arc::new(Sim {
        name: name.to_string(),
        config: config.clone(),
        counter: AtomicU64::new(0),
        answers: Mutex::new(HashMap::new()),
    });
    let app = axum::Router::new().fallback(answer).with_state(sim);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener.tap_io(crate::server::no_delay), app).await {
            tracing::error!(error = %e, "simulator stopped");
        }
    });
    Ok(addr)
}

async fn answer(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> Json<serde_json::Value> {
    if !sim.config.latency.is_zero() {
        tokio::time::sleep(sim.config.latency).await;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if let Some(previous) = sim.answers.lock().expect("simulator lock").get(&key) {
        return Json(previous.clone());
    }
    let n = sim.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let year = chrono::Utc::now().format("%Y");
    let protocol = format!("{year}/{n:06}");
    let body = match sim.config.behaviour {
        SimulatorBehaviour::Approve => {
            let pdf = format!("%PDF-1.4\n% {} certificate {protocol}\n%%EOF\n", sim.name);
            serde_json::json!({
                "esito": "OK",
                "id": format!("{}-{n}", sim.name.to_uppercase()),
                "protocollo": {"numero": protocol},
                "documenti": [{
                    "name": "certificato.pdf",
                    "media_type": "application/pdf",
                    "content_base64": base64::engine::general_purpose::STANDARD.encode(pdf),
                }],
            })
        }
        SimulatorBehaviour::Register => serde_json::json!({
            "esito": "PRESA_IN_CARICO",
            "id": format!("{}-{n}", sim.name.to_uppercase()),
            "protocollo": {"numero": protocol},
        }),
        SimulatorBehaviour::Reject => serde_json::json!({
            "esito": "KO",
            "motivo": "requisiti non soddisfatti",
        }),
    };
    if !key.is_empty() {
        let mut answers = sim.answers.lock().expect("simulator lock");
        // Remember recent answers only: a long benchmark must not grow memory.
        if answers.len() >= 100_000 {
            answers.clear();
        }
        answers.insert(key, body.clone());
    }
    Json(body)
}
