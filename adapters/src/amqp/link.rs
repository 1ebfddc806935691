//! The broker connection: one supervisor task per adapter instance keeps a
//! [`Session`] (connection, confirm-mode publishing channels, the reply
//! consumer) alive, and rebuilds all of it after any loss.
//!
//! Recovery is done here rather than by lapin's built-in auto-recovery: one
//! path, owned and tested, that re-reads the configuration's topology,
//! re-creates the consumer and reports itself in [`AdapterHealth`]. A
//! publish caught by a loss fails as transient and the hub re-sends it
//! from its durable job table with the same `message_id`.

use super::config::AmqpConfig;
use super::{consume, topology};
use crate::adapter::{AdapterHealth, ResultSink};
use crate::rest::config::ResponseMapping;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, DefaultConnectionBuilder, Event};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

/// What the adapter and its supervisor share.
pub(crate) struct Link {
    pub name: String,
    pub config: AmqpConfig,
    /// Carries the password: never printed (see `endpoint`).
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    /// `scheme://host:port/vhost`, for messages.
    pub endpoint: String,
    pub mapping: ResponseMapping,
    session: watch::Sender<Option<Arc<Session>>>,
    health: Mutex<AdapterHealth>,
    started: AtomicBool,
    pub sink: OnceLock<Arc<dyn ResultSink>>,
    sink_ready: Notify,
    /// A publish saw a connection-level error: check the connection now
    /// instead of at the next tick.
    broken: Notify,
    sessions: AtomicU64,
}

/// One live connection and what hangs off it.
pub(crate) struct Session {
    pub id: u64,
    pub conn: Connection,
    idle: Mutex<Vec<Channel>>,
    slots: Arc<Semaphore>,
}

impl Session {
    /// A confirm-mode channel with no publish in flight. One publish per
    /// channel at a time makes a `basic.return` unambiguous: it belongs to
    /// the message whose confirm it arrives with.
    pub async fn checkout(&self) -> Result<(Channel, OwnedSemaphorePermit), lapin::Error> {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the slots semaphore is never closed");
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let channel = match idle {
            Some(c) if c.status().connected() => c,
            _ => {
                let c = self.conn.create_channel().await?;
                c.confirm_select(ConfirmSelectOptions::default()).await?;
                c
            }
        };
        Ok((channel, permit))
    }

    /// Returns a channel whose publish is settled.
    pub fn checkin(&self, channel: Channel) {
        if channel.status().connected() {
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(channel);
        }
    }
}

impl Link {
    pub fn new(
        name: String,
        config: AmqpConfig,
        uri: AMQPUri,
        tls: OwnedTLSConfig,
        mapping: ResponseMapping,
    ) -> Self {
        let endpoint = format!(
            "{}://{}:{}/{}",
            uri.scheme,
            uri.authority.host,
            uri.authority.port,
            uri.vhost.replace('%', "%25").replace('/', "%2f")
        );
        Self {
            name,
            config,
            uri,
            tls,
            endpoint,
            mapping,
            session: watch::channel(None).0,
            health: Mutex::new(AdapterHealth::Degraded(
                "not connected to the broker yet".into(),
            )),
            started: AtomicBool::new(false),
            sink: OnceLock::new(),
            sink_ready: Notify::new(),
            broken: Notify::new(),
            sessions: AtomicU64::new(0),
        }
    }

    /// Starts the supervisor once; it stops when `stop`'s sender is dropped.
    pub fn ensure_started(self: &Arc<Self>, stop: &watch::Receiver<()>) {
        if !self.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(supervise(Arc::clone(self), stop.clone()));
        }
    }

    /// Hands over the hub's sink; the consumer starts on the live session.
    pub fn set_sink(&self, sink: Arc<dyn ResultSink>) {
        if self.sink.set(sink).is_ok() {
            self.sink_ready.notify_one();
        }
    }

    pub fn health(&self) -> AdapterHealth {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_health(&self, h: AdapterHealth) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = h;
    }

    /// The live session, waiting up to `wait` for one.
    pub async fn session(&self, wait: Duration) -> Option<Arc<Session>> {
        let mut rx = self.session.subscribe();
        let found = tokio::time::timeout(wait, async {
            rx.wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|s| s.clone())
        })
        .await;
        found.ok().flatten()
    }

    /// A publish or an ack failed at the connection level.
    pub fn report_broken(&self) {
        self.broken.notify_one();
    }

    async fn connect(
        self: &Arc<Self>,
    ) -> Result<(Arc<Session>, Option<JoinHandle<String>>), String> {
        let name = (self.config.connection_name.clone())
            .unwrap_or_else(|| format!("raccordo {}", self.name));
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let builder = DefaultConnectionBuilder::new()
            .map_err(|e| format!("no async runtime for the AMQP client: {e}"))?
            .with_uri(self.uri.clone())
            .with_properties(properties)
            .with_tls_config(self.tls.clone());
        let conn = tokio::time::timeout(self.config.connect_timeout, builder.connect())
            .await
            .map_err(|_| format!("no answer within {:?}", self.config.connect_timeout))?
            .map_err(|e| e.to_string())?;
        let setup = async {
            let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
            topology::apply(&channel, &self.config.topology)
                .await
                .map_err(|e| format!("topology: {e}"))?;
            let _ = channel.close(200, "topology ready".into()).await;
            Ok::<_, String>(())
        };
        let ready = tokio::time::timeout(self.config.connect_timeout, setup)
            .await
            .unwrap_or_else(|_| Err("topology: no answer from the broker".into()));
        if let Err(e) = ready {
            let _ = conn.close(200, "topology failed".into()).await;
            return Err(e);
        }
        let session = Arc::new(Session {
            id: self.sessions.fetch_add(1, Ordering::Relaxed) + 1,
            conn,
            idle: Mutex::new(Vec::new()),
            // Deliveries plus the consumer's dead-letter copies.
            slots: Arc::new(Semaphore::new(self.config.max_concurrency + 2)),
        });
        let consumer = match self.sink.get() {
            Some(_) if self.config.consume.is_some() => {
                match consume::start(Arc::clone(self), Arc::clone(&session)).await {
                    Ok(handle) => Some(handle),
                    Err(e) => {
                        let _ = session.conn.close(200, "consumer failed".into()).await;
                        return Err(e);
                    }
                }
            }
            _ => None,
        };
        Ok((session, consumer))
    }

    /// Returns why the session ended.
    async fn watch(
        self: &Arc<Self>,
        session: &Arc<Session>,
        mut consumer: Option<JoinHandle<String>>,
    ) -> String {
        let mut events = Box::pin(session.conn.events_listener());
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Event::Error(e)) if !session.conn.status().connected() => return e.to_string(),
                    // A resource alarm (memory, disk): publishes wait, then
                    // time out as outcome unknown; say why meanwhile.
                    Some(Event::ConnectionBlocked(why)) => {
                        tracing::warn!(adapter = %self.name, "the broker blocks publishing: {why}");
                        self.set_health(AdapterHealth::Degraded(format!("the broker blocks publishing: {why}")));
                    }
                    Some(Event::ConnectionUnblocked) => self.set_health(AdapterHealth::Up),
                    Some(_) => {}
                    None => return "the connection was closed".into(),
                },
                ended = async { consumer.as_mut().expect("guarded").await }, if consumer.is_some() => {
                    return match ended {
                        Ok(reason) => reason,
                        Err(e) => format!("the reply consumer stopped: {e}"),
                    };
                }
                _ = self.sink_ready.notified(), if consumer.is_none() && self.config.consume.is_some() => {
                    match consume::start(Arc::clone(self), Arc::clone(session)).await {
                        Ok(handle) => consumer = Some(handle),
                        Err(e) => return e,
                    }
                }
                _ = self.broken.notified() => {
                    if !session.conn.status().connected() {
                        return "the connection was lost".into();
                    }
                }
                _ = tick.tick() => {
                    if !session.conn.status().connected() {
                        return "the connection was lost".into();
                    }
                }
            }
        }
    }
}

fn backoff(link: &Link) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(link.config.reconnect.initial_backoff)
        .with_max_delay(link.config.reconnect.max_backoff)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Connects, watches, reconnects with backoff, until the adapter is dropped.
async fn supervise(link: Arc<Link>, mut stop: watch::Receiver<()>) {
    let mut delays = backoff(&link);
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            r = link.connect() => r,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok((session, consumer)) => {
                delays = backoff(&link);
                if failures > 0 || session.id > 1 {
                    tracing::info!(adapter = %link.name, endpoint = %link.endpoint, "connected to the broker again");
                } else {
                    tracing::info!(adapter = %link.name, endpoint = %link.endpoint, "connected to the broker");
                }
                failures = 0;
                link.set_health(AdapterHealth::Up);
                link.session.send_replace(Some(Arc::clone(&session)));
                let reason = tokio::select! {
                    r = link.watch(&session, consumer) => Some(r),
                    _ = stop.changed() => None,
                };
                link.session.send_replace(None);
                let Some(reason) = reason else {
                    let _ = session.conn.close(200, "adapter stopped".into()).await;
                    return;
                };
                tracing::warn!(adapter = %link.name, endpoint = %link.endpoint,
                    "lost the broker connection ({reason}); reconnecting");
                link.set_health(AdapterHealth::Degraded(format!(
                    "reconnecting… (connection lost: {reason})"
                )));
                // Best effort: the socket may be gone already.
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    session.conn.close(320, "reconnecting".into()),
                )
                .await;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(adapter = %link.name, endpoint = %link.endpoint, attempt = failures,
                    "cannot set up the broker connection: {e}");
                // The broker answered but the topology is wrong or missing:
                // say that, not "unreachable".
                let reason = if e.starts_with("topology:") {
                    e
                } else {
                    format!("broker unreachable: {e}")
                };
                link.set_health(AdapterHealth::Down(reason));
            }
        }
        let delay = delays.next().unwrap_or(link.config.reconnect.max_backoff);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}
