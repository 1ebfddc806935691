//! Starting and stopping the hub: store, adapters, workers, listeners.

use crate::adapters::{self, AdapterInstance};
use crate::bus::EventBus;
use crate::config::StoreKind;
use crate::config::{self, Config};
use crate::delivery::{Workers, spawn_workers};
use crate::grpc::Api;
use crate::grpc::metrics_layer::RpcMetricsLayer;
use crate::metrics::Metrics;
use crate::practices::PracticeService;
use crate::store::Store;
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::SqliteStore;
use anyhow::Context;
use axum::serve::ListenerExt;
use raccordo_proto::v1 as pb;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

/// A started hub.
#[derive(Debug)]
pub struct RunningHub {
    /// Where the gRPC API listens (useful with port 0).
    pub grpc_addr: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/adapters` are served.
    pub http_addr: SocketAddr,
    /// Simulated back offices, by name.
    pub simulators: HashMap<String, SocketAddr>,
    service: Arc<PracticeService>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningHub {
    /// Live event subscriptions right now (watch streams, waiting submitters).
    pub fn watchers(&self) -> usize {
        self.service.bus().subscribers()
    }

    /// Stops accepting calls, lets deliveries in flight finish (bounded by
    /// `hub.shutdown_grace`) and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("hub task panicked")?
    }

    /// Runs until the process is asked to stop (Ctrl-C or SIGTERM).
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Validates the configuration and starts everything.
pub async fn start(config: Config) -> anyhow::Result<RunningHub> {
    // One crypto provider for every TLS user (reqwest, tonic); a second
    // install attempt (tests start several hubs) is harmless.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let issues = config::check(&config);
    if !issues.is_empty() {
        let list: Vec<String> = issues
            .iter()
            .map(|i| format!("  {}: {i}", config.source.display()))
            .collect();
        anyhow::bail!(
            "the configuration has {} problem(s):\n{}",
            issues.len(),
            list.join("\n")
        );
    }
    for warning in config::warnings(&config) {
        tracing::warn!(key = %warning.key, "{}", warning.reason);
    }
    let config = Arc::new(config);

    let mut simulators = HashMap::new();
    for (name, sim) in &config.simulators {
        let addr = crate::simulator::start(name, sim).await?;
        tracing::info!(simulator = %name, %addr, behaviour = ?sim.behaviour, "simulated back office listening");
        simulators.insert(name.clone(), addr);
    }

    let db = config.database_path();
    let metrics = Arc::new(Metrics::new());
    metrics.declare(&config);
    // Every committed event reaches the bus in cursor order: from the
    // SQLite store after its commit, from the PostgreSQL store's feed
    // (whichever instance committed it).
    let bus = EventBus::new();
    bus.spawn_logger();
    let mut shared: Option<PgStore> = None;
    let (store, expired): (Arc<dyn Store>, _) = match config.store.kind {
        StoreKind::Sqlite => {
            let store = SqliteStore::open_observed(
                &db,
                config.store.synchronous,
                config.store.read_connections,
                Some(metrics.store()),
                Some(bus.clone()),
            )
            .await
            .with_context(|| format!("opening the store {}", db.display()))?
            .with_write_queue(config.store.write_queue);
            // One process owns the embedded database (its lock is held now):
            // every lease in it is a previous process's, so it ends now
            // rather than after its expiry.
            let expired = store.expire_all_leases().await?;
            (Arc::new(store), expired)
        }
        StoreKind::Postgres => {
            let pg = config.store.postgres();
            let url = pg
                .connection_url(&config.base_dir)
                .map_err(|(key, reason)| anyhow::anyhow!("store.postgres.{key}: {reason}"))?;
            let opts = PgOptions::from_config(&pg, &config.base_dir);
            let store = PgStore::open(&url, &opts, Some(metrics.store()), Some(bus.clone()))
                .await
                .context("opening the PostgreSQL store")?;
            // Other instances may hold live leases in a shared database:
            // only those that ran out end now, the rest when they do.
            let expired = store.expire_leases(chrono::Utc::now()).await?;
            shared = Some(store.clone());
            (Arc::new(store), expired)
        }
    };
    if !expired.is_empty() {
        metrics.count_anomalies(&expired.anomalies);
        tracing::warn!(
            due_again = expired.due_again,
            dead_lettered = expired.dead_lettered,
            polls = expired.polls,
            anomalies = expired.anomalies.len(),
            "deliveries interrupted by the last stop are re-sent with their operation ids"
        );
    }

    let mut instances: HashMap<String, AdapterInstance> = HashMap::new();
    let mut wakers: HashMap<String, Arc<Notify>> = HashMap::new();
    for (name, cfg) in &config.adapters {
        let instance = adapters::build(name, cfg, &config.base_dir)
            .map_err(|e| anyhow::anyhow!("adapters.{name}.{}: {}", e.key, e.reason))?;
        wakers.insert(name.clone(), Arc::new(Notify::new()));
        instances.insert(name.clone(), instance);
    }
    if let Some(pg) = &shared {
        // Work queued by another instance wakes this one's worker too.
        let wakers = wakers.clone();
        pg.on_work_queued(Box::new(move |adapter| {
            if let Some(w) = wakers.get(adapter) {
                w.notify_one();
            }
        }));
    }
    let service = Arc::new(PracticeService::new(
        Arc::clone(&config),
        Arc::clone(&store),
        bus,
        instances.clone(),
        wakers.clone(),
        metrics,
    ));
    let sink: Arc<dyn raccordo_adapters::ResultSink> =
        Arc::new(crate::inbound::HubSink::new(Arc::clone(&service)));
    for (name, instance) in &instances {
        instance
            .adapter
            .start_inbound(Arc::clone(&sink))
            .await
            .map_err(|e| anyhow::anyhow!("adapters.{name}.{}: {}", e.key, e.reason))?;
    }
    // A first heartbeat before any delivery: each adapter knows its share
    // of the cluster's limits from its first request on.
    service
        .cluster()
        .beat(service.store().as_ref(), instances.values())
        .await;
    let workers = spawn_workers(Arc::clone(&service), &instances, &wakers);

    let grpc_listener = tokio::net::TcpListener::bind(config.hub.grpc_listen)
        .await
        .with_context(|| {
            format!(
                "hub.grpc_listen: cannot listen on {}",
                config.hub.grpc_listen
            )
        })?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_listener = tokio::net::TcpListener::bind(config.hub.http_listen)
        .await
        .with_context(|| {
            format!(
                "hub.http_listen: cannot listen on {}",
                config.hub.http_listen
            )
        })?;
    let http_addr = http_listener.local_addr()?;

    let (stop, stop_rx) = oneshot::channel::<()>();
    let grace = config.hub.shutdown_grace;
    let max_message = config.max_submit_request_bytes();
    let task = tokio::spawn(serve(
        Arc::clone(&service),
        sink,
        workers,
        grpc_listener,
        http_listener,
        stop_rx,
        grace,
        max_message,
    ));
    tracing::info!(%grpc_addr, %http_addr, db = %db.display(), instance = %service.leases().owner(),
        "raccordo hub ready");
    Ok(RunningHub {
        grpc_addr,
        http_addr,
        simulators,
        service,
        stop,
        task,
    })
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    service: Arc<PracticeService>,
    sink: Arc<dyn raccordo_adapters::ResultSink>,
    workers: Workers,
    grpc_listener: tokio::net::TcpListener,
    http_listener: tokio::net::TcpListener,
    stop: oneshot::Receiver<()>,
    grace: std::time::Duration,
    max_message: usize,
) -> anyhow::Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::practice_service_server::PracticeServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<pb::catalog_service_server::CatalogServiceServer<Api>>()
        .await;
    health_reporter
        .set_serving::<pb::delivery_admin_service_server::DeliveryAdminServiceServer<Api>>()
        .await;
    let store_health = tokio::spawn(follow_store(Arc::clone(&service), health_reporter.clone()));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    // v1alpha too: some clients (Python grpcio-reflection) only speak it.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let api = Api::new(Arc::clone(&service));
    let (grpc_stop_tx, grpc_stop) = oneshot::channel::<()>();
    let (http_stop_tx, http_stop) = oneshot::channel::<()>();
    let auth = crate::security::authn::Authenticator::build(
        &service.config().clients,
        &service.config().security,
        &service.config().base_dir,
    )
    .map_err(|refused| {
        let lines: Vec<String> = refused
            .into_iter()
            .map(|(client, (key, reason))| format!("clients.{client}.{key}: {reason}"))
            .collect();
        anyhow::anyhow!(lines.join("\n"))
    })?;
    if auth.is_anonymous() {
        tracing::warn!("no [clients] declared: the API accepts every caller (development only)");
    }
    let refusals = crate::security::refusals::RefusalAudit::new(
        Arc::clone(service.store()),
        crate::security::refusals::INTERVAL,
    );
    refusals.spawn_flusher();
    let auth_layer = crate::security::AuthLayer::new(Arc::new(auth), Arc::clone(&refusals));
    let rpc_metrics = RpcMetricsLayer::new(
        Arc::clone(service.metrics()),
        &[
            pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ],
    );
    let config = service.config();
    let grpc = tonic::transport::Server::builder()
        .layer(rpc_metrics)
        // Inside the metrics: a request that does not decode is counted as
        // the INVALID_ARGUMENT its caller receives.
        .layer(crate::grpc::malformed::MalformedLayer)
        // Before authentication: shedding load must cost less than the
        // work it saves (verifying a token is not free).
        .layer(crate::grpc::admission::AdmissionLayer::new(
            config.hub.max_calls_in_progress,
        ))
        .layer(crate::trace::TraceContextLayer)
        .layer(auth_layer)
        // After authentication: only a known caller's request holds bytes
        // of the budget, and a refused one is never read.
        .layer(crate::grpc::budget::ByteBudgetLayer::new(
            config.max_in_flight_request_bytes(),
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(crate::grpc::watch::PracticeServer::new(
            api.clone(),
            max_message,
            config.hub.max_watch_streams_per_client,
        ))
        .add_service(pb::catalog_service_server::CatalogServiceServer::new(
            api.clone(),
        ))
        .add_service(pb::delivery_admin_service_server::DeliveryAdminServiceServer::new(api));
    let grpc_stopped = async move {
        let _ = grpc_stop.await;
    };
    let http_stopped = async move {
        let _ = http_stop.await;
    };
    let app = crate::http::router(Arc::clone(&service), sink);
    let base_dir = service.config().base_dir.clone();
    let (grpc, http) =
        match &service.config().hub.tls {
            Some(tls) => {
                let reload = tls.reload_interval;
                let on = |alpn: &[&[u8]]| {
                    crate::tls::setup(tls, &base_dir, alpn)
                        .map_err(|(key, reason)| anyhow::anyhow!("hub.tls.{key}: {reason}"))
                };
                let grpc_tls = on(&[b"h2"])?;
                let http_tls = on(&[b"h2", b"http/1.1"])?;
                let grpc_conns = crate::tls::accept(grpc_listener, grpc_tls, reload);
                let http_addr = http_listener.local_addr()?;
                let http_conns = crate::tls::accept(http_listener, http_tls, reload);
                let incoming = tokio_stream::wrappers::ReceiverStream::new(grpc_conns)
                    .map(Ok::<_, std::io::Error>);
                let listener = crate::tls::TlsListener {
                    connections: http_conns,
                    local_addr: http_addr,
                };
                (
                    tokio::spawn(grpc.serve_with_incoming_shutdown(incoming, grpc_stopped)),
                    tokio::spawn(async move {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(http_stopped)
                            .await
                    }),
                )
            }
            None => (
                tokio::spawn(grpc.serve_with_incoming_shutdown(
                    accepted_without_delay(grpc_listener),
                    grpc_stopped,
                )),
                tokio::spawn(async move {
                    axum::serve(http_listener.tap_io(no_delay), app)
                        .with_graceful_shutdown(http_stopped)
                        .await
                }),
            ),
        };
    let _ = stop.await;
    // From here on `/readyz` answers 503 (shutting down).
    service.close_streams();
    let _ = grpc_stop_tx.send(());
    store_health.abort();
    health_reporter
        .set_not_serving::<pb::practice_service_server::PracticeServiceServer<Api>>()
        .await;
    grpc.await??;
    // The counts of the interval under way: nothing refused goes unrecorded.
    refusals.flush().await;
    workers.shutdown(grace).await;
    // The HTTP listener last: while the deliveries in flight finish, their
    // vendors' callbacks are still received, and a load balancer probing
    // `/readyz` reads that this instance is going rather than finding the
    // port closed.
    let _ = http_stop_tx.send(());
    http.await??;
    tracing::info!("stopped");
    Ok(())
}

/// How often the gRPC health of the services that need the store is
/// checked against it: as often as a load balancer typically probes.
const STORE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps `grpc.health.v1` of the services that need the store (practices,
/// delivery administration) in step with it, as `/readyz` is: a gRPC load
/// balancer stops sending calls to an instance cut off from its database,
/// and sends them again once it answers. The whole server (`""`) stays
/// `SERVING`: a liveness probe must not restart a hub because its
/// database is away.
async fn follow_store(
    service: Arc<PracticeService>,
    reporter: tonic_health::server::HealthReporter,
) {
    type Practices = pb::practice_service_server::PracticeServiceServer<Api>;
    type Admin = pb::delivery_admin_service_server::DeliveryAdminServiceServer<Api>;
    let mut up = true;
    let mut tick = tokio::time::interval(STORE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let answer =
            tokio::time::timeout(crate::status::STORE_PING_TIMEOUT, service.store().ping()).await;
        let now_up = matches!(answer, Ok(Ok(())));
        if now_up == up {
            continue;
        }
        up = now_up;
        if up {
            tracing::info!("the store answers again: the practice service is serving");
            reporter.set_serving::<Practices>().await;
            reporter.set_serving::<Admin>().await;
        } else {
            tracing::warn!("the store does not answer: the practice service is not serving");
            reporter.set_not_serving::<Practices>().await;
            reporter.set_not_serving::<Admin>().await;
        }
    }
}

/// The connections `listener` accepts, with `TCP_NODELAY` set, for
/// tonic's `serve_with_incoming`: tonic ignores its own `TCP_NODELAY`
/// setting for a custom incoming stream, and without it small replies wait
/// for the peer's delayed ACK (~40 ms).
pub fn accepted_without_delay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        conn.inspect(|s| {
            let _ = s.set_nodelay(true);
        })
    })
}

/// Small replies go out at once instead of waiting for the peer's delayed ACK.
pub fn no_delay(stream: &mut tokio::net::TcpStream) {
    let _ = stream.set_nodelay(true);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
