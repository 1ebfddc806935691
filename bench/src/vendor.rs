//! The minimal fast vendor: answers every POST at once with an approval
//! carrying a new protocol number, as a registry would (numbers in
//! sequence: the hub indexes them for look-ups by reference).

use axum::http::header::CONTENT_TYPE;
use axum::serve::ListenerExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The approval of request `n`.
fn answer(n: u64) -> String {
    format!(r#"{{"esito":"OK","protocollo":{{"numero":"2026/{n:07}"}},"id":"BENCH-{n}"}}"#)
}

/// A running vendor and its request counter.
#[derive(Clone)]
pub struct Vendor {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
}

impl Vendor {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        let app = axum::Router::new().fallback(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
            async move { ([(CONTENT_TYPE, "application/json")], answer(n)) }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener.tap_io(raccordo::server::no_delay), app).await;
        });
        Ok(Self { addr, requests })
    }

    /// Requests served so far.
    pub fn served(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}
