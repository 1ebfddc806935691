//! Real peers for end-to-end tests: a scripted vendor REST back office on
//! loopback, a hub started from a real configuration file on a real SQLite
//! file, and gRPC clients over the real network stack.

#![allow(dead_code)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use raccordo::server::RunningHub;
use raccordo_proto::v1 as pb;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::Channel;

/// How long any test waits for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it yields `Some`, failing after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(DEADLINE, what, check).await
}

/// Polls `check` until it yields `Some`, failing after `deadline`.
pub async fn eventually_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `raccordo` binary built with these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_raccordo");

/// A child process, killed (SIGKILL) and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `raccordo serve` on `config`, its logs (`RUST_LOG=warn`) on this
/// process's stderr.
pub fn serve(config: &Path, envs: &[(&str, String)]) -> Proc {
    serve_logging_to(config, envs, Stdio::inherit())
}

/// `raccordo serve` on `config`, its logs (`RUST_LOG=warn`) to `stderr`.
pub fn serve_logging_to(config: &Path, envs: &[(&str, String)], stderr: Stdio) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("start raccordo"))
}

/// Reads the banner until the gRPC address appears.
pub fn grpc_addr_from_banner(proc: &mut Proc) -> SocketAddr {
    let stdout = proc.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim().strip_prefix("gRPC API") {
                let url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(url.trim_start_matches("http://").to_string());
            }
        }
    });
    rx.recv_timeout(DEADLINE)
        .expect("the hub printed where it listens")
        .parse()
        .unwrap()
}

/// A channel to a hub that may still be starting.
pub async fn connect_retrying(addr: SocketAddr) -> Channel {
    eventually("the hub to accept connections", || async move {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .ok()
    })
    .await
}

/// One request the vendor received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub idempotency_key: String,
    /// The W3C trace context the hub sent, if any.
    pub traceparent: Option<String>,
    pub body: Value,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    /// An answer with a JSON body.
    pub fn new(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
}

struct VendorState {
    script: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Received>>,
    latency: Mutex<Duration>,
    push: Mutex<Option<Push>>,
    callbacks: Mutex<Callbacks>,
    /// Closed: requests wait until it opens (see [`Vendor::hold`]).
    gate: tokio::sync::watch::Sender<bool>,
    /// Requests waiting at the closed gate.
    held: std::sync::atomic::AtomicUsize,
}

/// Results sent the ModI push way for requests under `prefix`.
#[derive(Clone)]
struct Push {
    prefix: String,
    secret: Vec<u8>,
    delay: Duration,
    client: reqwest::Client,
}

/// What became of the results a vendor pushed to the hub's callback.
#[derive(Debug, Clone, Default)]
pub struct Callbacks {
    /// Answered 2xx (`applied` or `duplicate`).
    pub accepted: usize,
    /// Given up on: the hub kept not knowing the correlation id.
    pub uncorrelated: usize,
    /// Answered 409 as not applied, recorded on the practice as an anomaly
    /// (e.g. an approval for a practice withdrawn meanwhile): the class
    /// and the detail.
    pub anomalies: Vec<(String, String)>,
    /// Refused for another reason: (status, body).
    pub refused: Vec<(u16, String)>,
}

impl Default for VendorState {
    fn default() -> Self {
        Self {
            script: Mutex::default(),
            received: Mutex::default(),
            latency: Mutex::default(),
            gate: tokio::sync::watch::Sender::new(true),
            held: std::sync::atomic::AtomicUsize::new(0),
            push: Mutex::default(),
            callbacks: Mutex::default(),
        }
    }
}

/// A vendor back office: answers from its script, then approves with a
/// protocol number, and records every request.
#[derive(Clone)]
pub struct Vendor {
    pub addr: SocketAddr,
    state: Arc<VendorState>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Vendor {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts on `addr` (to bring a "down" vendor up on its known port).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("vendor bind");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(VendorState::default());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            axum::serve(listener.tap_io(raccordo::server::no_delay), app)
                .await
                .unwrap();
        });
        Self {
            addr,
            state,
            task: Arc::new(task),
        }
    }

    /// The base URL adapters should use.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues an answer for the next request.
    pub fn push(&self, answer: Answer) {
        self.state.script.lock().unwrap().push_back(answer);
    }

    /// Delays every answer.
    pub fn set_latency(&self, d: Duration) {
        *self.state.latency.lock().unwrap() = d;
    }

    /// Holds every request from now on until [`release`](Self::release):
    /// calls stay in progress for as long as a test needs, without sleeps.
    pub fn hold(&self) {
        self.state.gate.send_replace(false);
    }

    /// Requests waiting in [`hold`](Self::hold).
    pub fn held(&self) -> usize {
        self.state.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answers the held requests and every later one.
    pub fn release(&self) {
        self.state.gate.send_replace(true);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Answers every request whose path starts with `prefix` the ModI
    /// push way (`NONBLOCK_PUSH_REST`): 202 with the operation id as
    /// `X-Correlation-ID`, then, after `delay`, an approval POSTed to the
    /// request's `X-ReplyTo`, signed with `secret`. Like a real vendor it
    /// retries while the hub is unreachable or answers 5xx, and for a while
    /// when the hub does not know the correlation id yet (the 202 may not
    /// be stored); the body depends only on the operation id, so a
    /// re-delivered request yields the same result.
    pub fn push_results(&self, prefix: &str, secret: &[u8], delay: Duration) {
        *self.state.push.lock().unwrap() = Some(Push {
            prefix: prefix.to_string(),
            secret: secret.to_vec(),
            delay,
            client: reqwest::Client::new(),
        });
    }

    /// What became of the pushed results so far.
    pub fn callbacks(&self) -> Callbacks {
        self.state.callbacks.lock().unwrap().clone()
    }

    /// Stops listening.
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn handle(
    State(state): State<Arc<VendorState>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut gate = state.gate.subscribe();
    if !*gate.borrow_and_update() {
        use std::sync::atomic::Ordering::SeqCst;
        state.held.fetch_add(1, SeqCst);
        let _ = gate.wait_for(|open| *open).await;
        state.held.fetch_sub(1, SeqCst);
    }
    let latency = *state.latency.lock().unwrap();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let n = {
        let mut received = state.received.lock().unwrap();
        received.push(Received {
            path: uri.path().to_string(),
            idempotency_key: key.clone(),
            traceparent: headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body,
        });
        received.len()
    };
    let push = state.push.lock().unwrap().clone();
    if let Some(push) = push.filter(|p| uri.path().starts_with(&p.prefix)) {
        let reply_to = headers
            .get("x-replyto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        tokio::spawn(push_result(Arc::clone(&state), push, reply_to, key.clone()));
        let mut resp = StatusCode::ACCEPTED.into_response();
        resp.headers_mut()
            .insert("x-correlation-id", key.parse().unwrap());
        return resp;
    }
    let answer = state.script.lock().unwrap().pop_front().unwrap_or_else(|| {
        Answer::new(
            200,
            json!({
                "esito": "OK",
                "protocollo": {"numero": format!("2026/{n:06}")},
                "documenti": [{"name": "esito.txt", "media_type": "text/plain", "content_base64": "b2s="}],
            }),
        )
    });
    let mut resp = (
        StatusCode::from_u16(answer.status).unwrap(),
        answer.body.to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (k, v) in answer.headers {
        resp.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

/// POSTs the approval of the operation `key` to `url`, retrying as a
/// vendor would; records the outcome in the vendor's [`Callbacks`].
async fn push_result(state: Arc<VendorState>, push: Push, url: String, key: String) {
    // Long enough to outlive the restarts of a test; a purged practice's
    // correlation id stays unknown forever.
    const GIVE_UP: Duration = Duration::from_secs(120);
    const UNKNOWN_FOR: Duration = Duration::from_secs(20);
    tokio::time::sleep(push.delay).await;
    let body = json!({"esito": "OK", "protocollo": {"numero": format!("P-{key}")}}).to_string();
    let start = tokio::time::Instant::now();
    loop {
        let ts = chrono::Utc::now().timestamp().to_string();
        let signature = raccordo_adapters::rest::callback::sign(&push.secret, &ts, body.as_bytes());
        let sent = push
            .client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-correlation-id", &key)
            .header("x-timestamp", ts)
            .header("x-signature", signature)
            .body(body.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                state.callbacks.lock().unwrap().accepted += 1;
                return;
            }
            Ok(r) if r.status() == StatusCode::NOT_FOUND && start.elapsed() > UNKNOWN_FOR => {
                state.callbacks.lock().unwrap().uncorrelated += 1;
                return;
            }
            Ok(r) if r.status().is_client_error() && r.status() != StatusCode::NOT_FOUND => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                let problem: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let mut callbacks = state.callbacks.lock().unwrap();
                match problem["anomaly"].as_str() {
                    Some(class) if status == 409 => {
                        let detail = problem["detail"].as_str().unwrap_or_default();
                        callbacks.anomalies.push((class.into(), detail.into()));
                    }
                    _ => callbacks.refused.push((status, text)),
                }
                return;
            }
            _ if start.elapsed() > GIVE_UP => {
                let why = format!("no answer from the hub in {GIVE_UP:?}");
                state.callbacks.lock().unwrap().refused.push((0, why));
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A free loopback port (the listener is closed before returning).
pub async fn free_addr() -> SocketAddr {
    let [addr] = free_addrs().await;
    addr
}

/// `N` different free loopback ports: every listener is held until all are
/// chosen, since ports asked for one after the other may come back equal.
pub async fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let mut listeners = Vec::with_capacity(N);
    for _ in 0..N {
        listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    std::array::from_fn(|i| listeners[i].local_addr().unwrap())
}

/// A `WatchPractice` request for one practice, from `from_sequence` on.
pub fn one_practice_from(
    tenant_id: &str,
    practice_id: &str,
    from_sequence: u64,
) -> pb::WatchPracticeRequest {
    pb::WatchPracticeRequest {
        tenant_id: tenant_id.into(),
        practice_id: practice_id.into(),
        from_sequence,
    }
}

/// Options of the test configuration.
pub struct HubOptions {
    pub vendor_url: String,
    pub max_attempts: u32,
    pub max_concurrency: u32,
    pub grpc_listen: String,
    /// TOML appended to the configuration (clients, security, …).
    pub extra_toml: String,
    /// TOML lines added to `[hub]`.
    pub hub_toml: String,
    /// `hub.shutdown_grace`.
    pub shutdown_grace: String,
    /// Files written beside the configuration before it loads.
    pub files: Vec<(String, String)>,
}

impl HubOptions {
    /// Defaults for a vendor at `vendor_url`.
    pub fn new(vendor_url: &str) -> Self {
        Self {
            vendor_url: vendor_url.to_string(),
            max_attempts: 4,
            max_concurrency: 8,
            grpc_listen: "127.0.0.1:0".into(),
            extra_toml: String::new(),
            hub_toml: String::new(),
            shutdown_grace: "2s".into(),
            files: Vec::new(),
        }
    }
}

/// Two tenants, a synchronous certificate, a deferred declaration and an
/// `auto` service, all towards one vendor; retries are fast.
pub fn config_toml(o: &HubOptions) -> String {
    format!(
        r#"
[hub]
grpc_listen = "{grpc}"
http_listen = "127.0.0.1:0"
data_dir = "data"
shutdown_grace = "{grace}"
{hub_extra}

[delivery]
max_attempts = {attempts}
initial_backoff = "50ms"
max_backoff = "200ms"
poll_interval = "100ms"

[tenants."016024"]
name = "Comune di Bergamo"

[tenants."028060"]
name = "Comune di Padova"

[services.CERT]
title = "Certificato di residenza"
legal_term_days = 30
[[services.CERT.fields]]
name = "uso"
type = "string"
required = true
pattern = "BOLLO|ESENTE"

[services.TARI]
title = "Dichiarazione TARI"
legal_term_days = 60
[[services.TARI.fields]]
name = "superficie_mq"
type = "number"
required = true
[[services.TARI.fields]]
name = "decorrenza"
type = "date"

[adapters.vendor]
kind = "rest"
base_url = "{url}"
timeout = "3s"
connect_timeout = "500ms"
max_concurrency = {concurrency}
[adapters.vendor.submit]
path = "/pratiche/{{{{ service_code }}}}"
[adapters.vendor.withdraw]
path = "/pratiche/{{{{ practice_id }}}}/ritiro"
[adapters.vendor.response]
status_pointer = "/esito"
status_map = {{ OK = "APPROVED", KO = "REJECTED", PRESO = "REGISTERED" }}
reason_pointer = "/motivo"
protocol_pointer = "/protocollo/numero"
documents_pointer = "/documenti"

[[routes]]
tenants = ["016024", "028060"]
service = "CERT"
adapter = "vendor"
mode = "sync"
deadline = "5s"

[[routes]]
tenants = ["016024", "028060"]
service = "TARI"
adapter = "vendor"
mode = "deferred"

[services.CILA]
title = "Comunicazione di inizio lavori asseverata"
regime = "COMUNICAZIONE"

[[routes]]
tenants = ["016024"]
service = "CILA"
adapter = "vendor"
mode = "auto"
deadline = "400ms"
"#,
        grpc = o.grpc_listen,
        attempts = o.max_attempts,
        url = o.vendor_url,
        concurrency = o.max_concurrency,
        hub_extra = o.hub_toml,
        grace = o.shutdown_grace,
    )
}

/// A hub running in this process.
pub struct TestHub {
    pub hub: Option<RunningHub>,
    pub dir: tempfile::TempDir,
    pub practices: pb::practice_service_client::PracticeServiceClient<Channel>,
    pub admin: pb::delivery_admin_service_client::DeliveryAdminServiceClient<Channel>,
    pub catalog: pb::catalog_service_client::CatalogServiceClient<Channel>,
    pub channel: Channel,
}

/// Writes the configuration into a fresh directory and starts a hub on it.
pub async fn start_hub(options: HubOptions) -> TestHub {
    // Hub logs in test output (shown for failing tests); RUST_LOG filters.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raccordo.toml");
    let toml = format!("{}\n{}", config_toml(&options), options.extra_toml);
    std::fs::write(&path, toml).unwrap();
    for (name, content) in &options.files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let config = raccordo::config::load(&path).expect("test config loads");
    let hub = raccordo::server::start(config).await.expect("hub starts");
    // Lazy: a hub with TLS listeners takes no plain-text connection.
    let channel = Channel::from_shared(format!("http://{}", hub.grpc_addr))
        .unwrap()
        .connect_lazy();
    TestHub {
        practices: pb::practice_service_client::PracticeServiceClient::new(channel.clone()),
        admin: pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel.clone()),
        catalog: pb::catalog_service_client::CatalogServiceClient::new(channel.clone()),
        channel,
        hub: Some(hub),
        dir,
    }
}

/// A gRPC channel to `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the hub")
}

impl TestHub {
    /// Stops the hub cleanly.
    pub async fn stop(mut self) {
        if let Some(h) = self.hub.take() {
            h.shutdown().await.unwrap();
        }
    }

    /// Submits and returns the practice of the reply.
    pub async fn submit(&mut self, request: pb::SubmitPracticeRequest) -> pb::Practice {
        self.practices
            .submit_practice(request)
            .await
            .expect("submit practice")
            .into_inner()
            .practice
            .expect("a practice in the reply")
    }

    /// Waits until the current delivery reaches `status`.
    pub async fn wait_delivery(
        &mut self,
        tenant: &str,
        id: &str,
        status: pb::DeliveryStatus,
    ) -> pb::Practice {
        self.wait_practice(tenant, id, status.as_str_name(), |p| {
            p.delivery
                .as_ref()
                .is_some_and(|d| d.status == status as i32)
        })
        .await
    }

    /// Waits until the practice reaches `status`.
    pub async fn wait_status(
        &mut self,
        tenant: &str,
        id: &str,
        status: pb::AdministrativeStatus,
    ) -> pb::Practice {
        self.wait_practice(tenant, id, status.as_str_name(), |p| {
            p.status == status as i32
        })
        .await
    }

    /// The whole practice with events.
    pub async fn get(&mut self, tenant: &str, id: &str) -> pb::Practice {
        get(&mut self.practices, tenant, id).await
    }

    /// Waits until the practice satisfies `done`.
    pub async fn wait_practice(
        &mut self,
        tenant: &str,
        id: &str,
        what: &str,
        done: impl Fn(&pb::Practice) -> bool,
    ) -> pb::Practice {
        let client = self.practices.clone();
        eventually(what, || {
            let mut client = client.clone();
            let (tenant, id) = (tenant.to_string(), id.to_string());
            let done = &done;
            async move {
                let p = get(&mut client, &tenant, &id).await;
                done(&p).then_some(p)
            }
        })
        .await
    }
}

/// GetPractice with events.
pub async fn get(
    client: &mut pb::practice_service_client::PracticeServiceClient<Channel>,
    tenant: &str,
    id: &str,
) -> pb::Practice {
    client
        .get_practice(pb::GetPracticeRequest {
            tenant_id: tenant.into(),
            practice_id: id.into(),
            include_events: true,
            include_content: false,
        })
        .await
        .expect("get practice")
        .into_inner()
}

/// A valid person (the check character is right).
pub fn mario() -> pb::Applicant {
    pb::Applicant {
        subject: Some(pb::applicant::Subject::Person(pb::Person {
            fiscal_code: "RSSMRA45D25F205N".into(),
            given_name: "Mario".into(),
            family_name: "Rossi".into(),
        })),
        contacts: None,
    }
}

/// Form data from JSON.
pub fn data(v: Value) -> prost_types::Struct {
    raccordo::grpc::convert::json_to_struct(v.as_object().unwrap())
}

/// A certificate request (sync route).
pub fn cert_request(tenant: &str, key: &str) -> pb::SubmitPracticeRequest {
    pb::SubmitPracticeRequest {
        tenant_id: tenant.into(),
        service_code: "CERT".into(),
        applicant: Some(mario()),
        data: Some(data(json!({"uso": "ESENTE"}))),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

/// A TARI declaration (deferred route).
pub fn tari_request(tenant: &str, key: &str) -> pb::SubmitPracticeRequest {
    pb::SubmitPracticeRequest {
        tenant_id: tenant.into(),
        service_code: "TARI".into(),
        applicant: Some(mario()),
        data: Some(data(
            json!({"superficie_mq": 85.5, "decorrenza": "2026-12-01"}),
        )),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

/// Reads a watch stream until `stop` matches an event (inclusive) or the
/// stream ends; fails after [`DEADLINE`].
pub async fn collect_until(
    stream: &mut tonic::Streaming<pb::PracticeEvent>,
    stop: impl Fn(&pb::PracticeEvent) -> bool,
) -> (Vec<pb::PracticeEvent>, bool) {
    let mut out = Vec::new();
    let read = async {
        while let Some(e) = stream.message().await.expect("stream error") {
            let last = stop(&e);
            out.push(e);
            if last {
                return false;
            }
        }
        true
    };
    let ended = tokio::time::timeout(DEADLINE, read)
        .await
        .expect("timed out reading the event stream");
    (out, ended)
}

/// True for the event that moved the delivery to `status`.
pub fn delivery_is(e: &pb::PracticeEvent, status: pb::DeliveryStatus) -> bool {
    e.kind == pb::EventKind::DeliveryChanged as i32 && e.to_delivery == status as i32
}

/// True for the event that moved the practice to `status`.
pub fn status_is(e: &pb::PracticeEvent, status: pb::AdministrativeStatus) -> bool {
    e.kind == pb::EventKind::StatusChanged as i32 && e.to_status == status as i32
}

/// A CILA (auto route: waits up to 400 ms).
pub fn cila_request(key: &str) -> pb::SubmitPracticeRequest {
    pb::SubmitPracticeRequest {
        tenant_id: "016024".into(),
        service_code: "CILA".into(),
        applicant: Some(mario()),
        idempotency_key: key.into(),
        ..Default::default()
    }
}
