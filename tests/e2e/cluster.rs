//! Several hub instances on one PostgreSQL database, as the real binary.
//!
//! - One of three is killed with SIGKILL while its deliveries are in
//!   flight: the others take its work over once its leases run out, under
//!   the same operation ids, every acknowledged practice completes, a
//!   watcher on a survivor sees every event in cursor order, and the audit
//!   chains verify.
//! - The database is stopped and started again under load (a private
//!   PostgreSQL cluster of this test's own: the shared test server serves
//!   other tests meanwhile): the hubs say they are not ready and refuse
//!   submissions with `UNAVAILABLE` while it is away, and recover by
//!   themselves; every acknowledged practice is stored and completes.
//!
//! `RACCORDO_CLUSTER_PRACTICES` changes the number of practices of the
//! first test (default 3,000).

use crate::postgres::Schema;
use crate::support::*;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use raccordo_proto::v1 as pb;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

type Client = pb::practice_service_client::PracticeServiceClient<Channel>;

const TENANTS: [&str; 2] = ["016024", "028060"];
/// The practice service's name in `grpc.health.v1`.
const PRACTICES: &str = "raccordo.v1.PracticeService";
/// `[delivery] lease` of every hub here: short, so a dead instance's work
/// comes back quickly.
const LEASE: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// How long the deferred route's vendor takes to answer: long enough for
/// deliveries to be in flight whenever the load runs.
const DEFERRED_LATENCY: Duration = Duration::from_millis(20);
/// Waits of whole phases (the load, the drain) on two shared cores.
const LONG: Duration = Duration::from_secs(90);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ------------------------------------------------------------------ vendor

/// One request the vendor received.
#[derive(Debug, Clone)]
struct Seen {
    /// The hub that sent it: each hub's base URL ends with its name.
    hub: String,
    operation_id: String,
    practice_id: String,
    /// Unix milliseconds.
    at: i64,
}

#[derive(Default)]
struct VendorState {
    seen: Mutex<Vec<Seen>>,
    /// The hubs whose requests wait, unanswered, until released.
    hold: Mutex<Vec<String>>,
    released: tokio::sync::Notify,
    held: AtomicUsize,
}

/// A vendor back office on loopback that knows which hub sends each
/// request: it answers certificates (the `sync` route) at once and TARI
/// declarations (`deferred`) after [`DEFERRED_LATENCY`], approving each
/// with a protocol number.
#[derive(Clone)]
struct ClusterVendor {
    addr: SocketAddr,
    state: Arc<VendorState>,
}

impl ClusterVendor {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(VendorState::default());
        let app = axum::Router::new()
            .fallback(vendor_answer)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    /// The base URL for the hub called `hub`.
    fn url_for(&self, hub: &str) -> String {
        format!("http://{}/{hub}", self.addr)
    }

    /// From now on the requests of `hubs` are recorded and then left
    /// waiting.
    fn hold(&self, hubs: &[&str]) {
        *self.state.hold.lock().unwrap() = hubs.iter().map(|h| h.to_string()).collect();
    }

    /// Requests waiting in [`hold`](Self::hold).
    fn held(&self) -> usize {
        self.state.held.load(Ordering::SeqCst)
    }

    fn release(&self) {
        self.state.hold.lock().unwrap().clear();
        self.state.released.notify_waiters();
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

async fn vendor_answer(
    State(state): State<Arc<VendorState>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    // "/<hub>/pratiche/<service>"
    let mut parts = uri.path().trim_start_matches('/').split('/');
    let hub = parts.next().unwrap_or_default().to_string();
    let service = parts.nth(1).unwrap_or_default().to_string();
    let operation_id = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let n = {
        let mut seen = state.seen.lock().unwrap();
        seen.push(Seen {
            hub: hub.clone(),
            operation_id: operation_id.clone(),
            practice_id: body["practice_id"].as_str().unwrap_or_default().into(),
            at: now_ms(),
        });
        seen.len()
    };
    loop {
        let released = state.released.notified();
        if !state.hold.lock().unwrap().contains(&hub) {
            break;
        }
        state.held.fetch_add(1, Ordering::SeqCst);
        released.await;
        state.held.fetch_sub(1, Ordering::SeqCst);
    }
    if service == "TARI" {
        tokio::time::sleep(DEFERRED_LATENCY).await;
    }
    let reply = json!({"esito": "OK", "protocollo": {"numero": format!("2026/{n:07}")}});
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        reply.to_string(),
    )
        .into_response()
}

// ------------------------------------------------------------------- hubs

/// One hub's configuration: both tenants, a synchronous certificate and a
/// deferred declaration towards the vendor, leases of [`LEASE`].
fn hub_config(vendor_url: &str, grpc: SocketAddr, http: SocketAddr) -> String {
    format!(
        r#"
[hub]
grpc_listen = "{grpc}"
http_listen = "{http}"
shutdown_grace = "1s"

[store]
kind = "postgres"

[store.postgres]
url_env = "TEST_HUB_DATABASE_URL"
pool_size = 8

[delivery]
max_attempts = 50
initial_backoff = "20ms"
max_backoff = "{max_backoff}ms"
poll_interval = "{poll}ms"
lease = "{lease}s"

[tenants."016024"]
name = "Comune di Bergamo"

[tenants."028060"]
name = "Comune di Padova"

[services.CERT]
title = "Certificato di residenza"
[[services.CERT.fields]]
name = "uso"
type = "string"
required = true

[services.TARI]
title = "Dichiarazione TARI"
[[services.TARI.fields]]
name = "superficie_mq"
type = "number"
required = true
[[services.TARI.fields]]
name = "decorrenza"
type = "date"

[adapters.vendor]
kind = "rest"
base_url = "{vendor_url}"
timeout = "5s"
connect_timeout = "500ms"
# The vendor's limit, shared by every instance alive: eight each.
max_concurrency = 24
[adapters.vendor.submit]
path = "/pratiche/{{{{ service_code }}}}"
[adapters.vendor.response]
status_pointer = "/esito"
status_map = {{ OK = "APPROVED", KO = "REJECTED" }}
protocol_pointer = "/protocollo/numero"

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
"#,
        max_backoff = MAX_BACKOFF.as_millis(),
        poll = POLL_INTERVAL.as_millis(),
        lease = LEASE.as_secs(),
    )
}

/// A running `raccordo serve` on the shared database.
struct Hub {
    name: String,
    proc: Proc,
    config: PathBuf,
    http: SocketAddr,
    channel: Channel,
    client: Client,
}

/// The hubs' logs, printed (their last lines) when a test fails.
struct Logs(Vec<PathBuf>);

impl Drop for Logs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for log in &self.0 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- last lines of {}:", log.display());
            for line in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// Starts the hub `name` with its configuration in `dir`, on the database
/// at `url`, logging to `<dir>/<name>.log`.
async fn start_hub(dir: &Path, name: &str, vendor_url: &str, url: &str) -> Hub {
    let [grpc, http] = free_addrs().await;
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, hub_config(vendor_url, grpc, http)).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut proc = serve_logging_to(
        &config,
        &[("TEST_HUB_DATABASE_URL", url.to_string())],
        Stdio::from(log),
    );
    let addr = grpc_addr_from_banner(&mut proc);
    let channel = connect_retrying(addr).await;
    Hub {
        name: name.to_string(),
        proc,
        config,
        http,
        client: Client::new(channel.clone()),
        channel,
    }
}

/// `GET /readyz`: (HTTP status, body).
async fn readyz(http: &reqwest::Client, hub: &Hub) -> Option<(u16, serde_json::Value)> {
    let r = http
        .get(format!("http://{}/readyz", hub.http))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.ok()?))
}

/// `raccordo audit verify` against the database at `url`.
fn audit_verify(config: &Path, url: &str) -> String {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(config)
        .env("TEST_HUB_DATABASE_URL", url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("audit trail intact"),
        "audit verify: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A connection of the test's own to the database at `url`.
async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

/// Every practice as stored: id → (status, delivery status, operation id).
async fn stored_practices(
    db: &tokio_postgres::Client,
) -> HashMap<String, (String, String, String)> {
    db.query(
        "SELECT id, status, COALESCE(delivery_status, ''), COALESCE(current_operation_id, '')
         FROM practices",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
    .collect()
}

/// Jobs with work left (due, in flight, polling), and dead-lettered ones.
async fn unsettled_jobs(db: &tokio_postgres::Client) -> (i64, i64) {
    let row = db
        .query_one(
            "SELECT COUNT(*) FILTER (WHERE state IN ('due', 'in_flight', 'polling', 'poll_in_flight')),
                    COUNT(*) FILTER (WHERE state = 'dead')
             FROM jobs",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Waits until every practice of `acked` is approved with its delivery
/// acknowledged and no job has work left; returns the stored rows.
async fn wait_all_final(
    db: &tokio_postgres::Client,
    acked: &HashMap<String, Acked>,
) -> HashMap<String, (String, String, String)> {
    let start = Instant::now();
    loop {
        let rows = stored_practices(db).await;
        let open: Vec<_> = acked
            .keys()
            .filter(|id| {
                rows.get(*id)
                    .is_none_or(|(s, d, _)| s != "APPROVED" || d != "ACKNOWLEDGED")
            })
            .collect();
        let (unsettled, dead) = unsettled_jobs(db).await;
        assert_eq!(dead, 0, "dead-lettered deliveries");
        if open.is_empty() && unsettled == 0 {
            return rows;
        }
        assert!(
            start.elapsed() < LONG,
            "timed out waiting for every acknowledged practice to be approved: {} still open \
             (e.g. {:?}), {unsettled} jobs with work left",
            open.len(),
            open.iter()
                .take(3)
                .map(|id| (id, rows.get(*id)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The events of one practice, for a failure's message.
async fn trail(db: &tokio_postgres::Client, practice: &str) -> Vec<String> {
    db.query(
        "SELECT sequence, kind, COALESCE(to_status, ''), COALESCE(to_delivery, ''),
                COALESCE(reason, ''), actor, recorded_at
         FROM events WHERE practice_id = $1 ORDER BY sequence",
        &[&practice],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let (seq, kind, status, delivery): (i64, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let (reason, actor, at): (String, String, i64) = (r.get(4), r.get(5), r.get(6));
        format!("{seq} {kind} {status}{delivery} by {actor} at {at}: {reason}")
    })
    .collect()
}

/// Checks that the vendor saw every stored practice under exactly one
/// operation id, the one the store has; returns how many operation ids it
/// saw more than once.
fn one_operation_id_each(seen: &[Seen], rows: &HashMap<String, (String, String, String)>) -> usize {
    let mut ops: HashMap<&str, HashSet<&str>> = HashMap::new();
    let mut sends: HashMap<&str, usize> = HashMap::new();
    for s in seen {
        ops.entry(&s.practice_id)
            .or_default()
            .insert(&s.operation_id);
        *sends.entry(&s.operation_id).or_default() += 1;
    }
    for (id, (_, _, op)) in rows {
        let keys = ops.get(id.as_str());
        assert_eq!(
            keys.map(|k| k.iter().copied().collect::<Vec<_>>()),
            Some(vec![op.as_str()]),
            "practice {id}: the operation ids the vendor saw"
        );
    }
    sends.values().filter(|n| **n > 1).count()
}

/// Reads every acknowledged practice back through `client`: it exists,
/// in its tenant, approved.
async fn check_through_api(client: &Client, acked: &HashMap<String, Acked>) {
    let bad: Vec<String> = futures::stream::iter(acked.iter())
        .map(|(id, a)| {
            let mut c = client.clone();
            async move {
                let answer = c
                    .get_practice(pb::GetPracticeRequest {
                        tenant_id: a.tenant.into(),
                        practice_id: id.clone(),
                        include_events: false,
                        include_content: false,
                    })
                    .await;
                match answer {
                    Ok(p) if p.get_ref().status == pb::AdministrativeStatus::Approved as i32 => {
                        None
                    }
                    Ok(p) => Some(format!("{id}: status {}", p.get_ref().status)),
                    Err(s) => Some(format!("{id}: {s}")),
                }
            }
        })
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    assert!(
        bad.is_empty(),
        "{} acknowledged practices not approved through the API: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

// ------------------------------------------------------------------- load

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sync,
    Deferred,
}

/// What the hub acknowledged about one practice.
#[derive(Debug, Clone)]
struct Acked {
    tenant: &'static str,
    kind: Kind,
    /// The hub that answered.
    hub: usize,
}

fn request(n: usize) -> (Kind, &'static str, pb::SubmitPracticeRequest) {
    let tenant = TENANTS[(n / 2) % 2];
    let key = format!("cluster-{n}");
    if n.is_multiple_of(2) {
        (Kind::Sync, tenant, cert_request(tenant, &key))
    } else {
        (Kind::Deferred, tenant, tari_request(tenant, &key))
    }
}

// ------------------------------------------------------- kill one of three

/// The submissions of the kill test, shared by its client tasks.
#[derive(Default)]
struct Ledger {
    acked: Mutex<HashMap<String, Acked>>,
    unexpected: Mutex<Vec<String>>,
    /// Submissions sent again to another hub after the victim died with
    /// them unanswered.
    resent: AtomicUsize,
    /// `UNAVAILABLE` answers of live hubs, sent again.
    busy: AtomicUsize,
    duplicates: AtomicUsize,
    /// Synchronous submissions answered approved (the others were past
    /// their route's deadline, or answered as duplicates while pending).
    answered_approved: AtomicUsize,
}

/// Submits practice numbers from `next` until `total`, each to hub
/// `n % 3` (round robin), moving on to the next hub when the victim is
/// down; a submission is sent again under the same key until a hub
/// acknowledges it, as a caller would.
async fn kill_test_client(
    clients: Vec<Client>,
    next: Arc<AtomicUsize>,
    total: usize,
    victim: usize,
    victim_down: Arc<AtomicBool>,
    ledger: Arc<Ledger>,
) {
    loop {
        let n = next.fetch_add(1, Ordering::SeqCst);
        if n >= total {
            return;
        }
        let (kind, tenant, req) = request(n);
        let mut target = n % clients.len();
        let mut tries = 0;
        loop {
            tries += 1;
            if tries > 100 {
                ledger
                    .unexpected
                    .lock()
                    .unwrap()
                    .push(format!("practice {n}: no hub acknowledged it in 100 tries"));
                break;
            }
            if target == victim && victim_down.load(Ordering::SeqCst) {
                target = (target + 1) % clients.len();
                continue;
            }
            match clients[target].clone().submit_practice(req.clone()).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    if reply.duplicate {
                        ledger.duplicates.fetch_add(1, Ordering::SeqCst);
                    }
                    let p = reply.practice.expect("a practice in the reply");
                    if kind == Kind::Sync && p.status == pb::AdministrativeStatus::Approved as i32 {
                        ledger.answered_approved.fetch_add(1, Ordering::SeqCst);
                    }
                    ledger.acked.lock().unwrap().insert(
                        p.id,
                        Acked {
                            tenant,
                            kind,
                            hub: target,
                        },
                    );
                    break;
                }
                // The victim died with it unanswered: another hub gets it.
                Err(_) if target == victim && victim_down.load(Ordering::SeqCst) => {
                    ledger.resent.fetch_add(1, Ordering::SeqCst);
                }
                // A busy hub asks to be called again (two shared cores): a
                // caller does so, and the test counts it.
                Err(s) if s.code() == Code::Unavailable => {
                    ledger.busy.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => {
                    ledger
                        .unexpected
                        .lock()
                        .unwrap()
                        .push(format!("practice {n} on hub {target}: {s}"));
                }
            }
            target = (target + 1) % clients.len();
        }
    }
}

/// Collects what a `WatchPractices` stream delivers: (cursor, practice,
/// sequence), and the error that ended it, if any.
type Watched = Arc<Mutex<(Vec<(i64, String, i64)>, Option<String>)>>;

async fn watch_all(client: &Client, tenant: &str) -> Watched {
    let mut stream = client
        .clone()
        .watch_practices(pb::WatchPracticesRequest {
            tenant_id: tenant.into(),
            after_cursor: 0,
            ..Default::default()
        })
        .await
        .expect("watch practices")
        .into_inner();
    let watched: Watched = Arc::default();
    let out = Arc::clone(&watched);
    tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(e)) => {
                    out.lock()
                        .unwrap()
                        .0
                        .push((e.cursor as i64, e.practice_id, e.sequence as i64))
                }
                Ok(None) => {
                    out.lock().unwrap().1 = Some("the stream ended".into());
                    return;
                }
                Err(s) => {
                    out.lock().unwrap().1 = Some(s.to_string());
                    return;
                }
            }
        }
    });
    watched
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_hubs_killed_under_load_the_others_finish_its_work() {
    let total: usize = std::env::var("RACCORDO_CLUSTER_PRACTICES")
        .ok()
        .map(|s| s.parse().expect("RACCORDO_CLUSTER_PRACTICES is a number"))
        .unwrap_or(3000);
    let began = Instant::now();
    let schema = Schema::new();
    let vendor = ClusterVendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b", "c"];
    let _logs = Logs(
        names
            .iter()
            .map(|n| dir.path().join(format!("{n}.log")))
            .collect(),
    );
    let mut hubs = Vec::new();
    for name in names {
        hubs.push(start_hub(dir.path(), name, &vendor.url_for(name), &schema.url).await);
    }
    const VICTIM: usize = 2;
    const WATCHED: usize = 0;
    let http = reqwest::Client::new();
    let mut instance = Vec::new();
    for hub in &hubs {
        let (status, body) = readyz(&http, hub).await.expect("readyz answers");
        assert_eq!(status, 200, "hub {} ready: {body}", hub.name);
        instance.push(body["instance_id"].as_str().unwrap().to_string());
    }
    let victim_id = instance[VICTIM].clone();

    // Watchers on a survivor, live from before the first submission.
    let mut watchers = Vec::new();
    for tenant in TENANTS {
        watchers.push((tenant, watch_all(&hubs[WATCHED].client, tenant).await));
    }

    // The load: round robin over the three hubs, half synchronous.
    let clients: Vec<Client> = hubs.iter().map(|h| h.client.clone()).collect();
    let ledger = Arc::new(Ledger::default());
    let next = Arc::new(AtomicUsize::new(0));
    let victim_down = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            tokio::spawn(kill_test_client(
                clients.clone(),
                Arc::clone(&next),
                total,
                VICTIM,
                Arc::clone(&victim_down),
                Arc::clone(&ledger),
            ))
        })
        .collect();

    // A third of the way in, the victim's deliveries are held at the
    // vendor; with several of them in flight, kill -9.
    eventually_within(LONG, "a third of the practices acknowledged", || {
        let n = ledger.acked.lock().unwrap().len();
        async move { (n >= total / 3).then_some(()) }
    })
    .await;
    vendor.hold(&names[VICTIM..=VICTIM]);
    eventually("deliveries of the victim in flight at the vendor", || {
        let held = vendor.held();
        async move { (held >= 4).then_some(()) }
    })
    .await;
    let in_flight_at_kill = vendor.held();
    victim_down.store(true, Ordering::SeqCst);
    let killed_at = now_ms();
    hubs[VICTIM].proc.0.kill().unwrap();
    hubs[VICTIM].proc.0.wait().unwrap();
    let load_before_kill = ledger.acked.lock().unwrap().len();
    vendor.release();
    // When its leases end: its last renewal was before the kill.
    let db = sql(&schema.url).await;
    let leases_end: i64 = db
        .query_one(
            "SELECT COALESCE(MAX(lease_expires_at), $2) FROM jobs WHERE lease_owner = $1",
            &[&victim_id, &killed_at],
        )
        .await
        .unwrap()
        .get(0);

    for task in tasks {
        tokio::time::timeout(LONG, task)
            .await
            .expect("the load ends")
            .unwrap();
    }
    let load_done = began.elapsed();
    let unexpected = ledger.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    let acked = ledger.acked.lock().unwrap().clone();
    assert_eq!(acked.len(), total, "every submission acknowledged once");

    // 1. Every acknowledged practice is stored and approved, read through
    // a survivor too; nothing else is stored.
    let rows = wait_all_final(&db, &acked).await;
    assert_eq!(rows.len(), total, "practices stored");
    check_through_api(&hubs[WATCHED].client, &acked).await;

    // 2. The vendor saw each practice under one operation id, its own.
    let seen = vendor.seen();
    let sent_again = one_operation_id_each(&seen, &rows);

    // 3. The victim's work in flight came back once its leases ended: they
    // ran out (an OUTCOME_UNKNOWN event naming it), and a survivor sent
    // each delivery again, same operation id; or a survivor's own earlier
    // attempt of it, whose lease had run out before the victim took it,
    // came back with the vendor's answer, which stands (the next event is
    // then ACKNOWLEDGED, not SENT). Only leases swept after the kill: on
    // two loaded cores a 2 s lease of a live instance may lapse now and
    // then, and its late answer stands.
    let expired = db
        .query(
            "SELECT e.practice_id, e.recorded_at,
                    (SELECT MIN(s.recorded_at) FROM events s
                     WHERE s.practice_id = e.practice_id AND s.sequence > e.sequence
                       AND s.kind = 'delivery' AND s.to_delivery IN ('SENT', 'ACKNOWLEDGED'))
             FROM events e
             WHERE e.kind = 'delivery' AND e.to_delivery = 'OUTCOME_UNKNOWN'
               AND e.reason LIKE '%' || $1 || '%' AND e.recorded_at >= $2",
            &[&victim_id, &killed_at],
        )
        .await
        .unwrap();
    assert!(
        expired.len() >= in_flight_at_kill,
        "{in_flight_at_kill} deliveries were in flight on the victim, {} leases of it ran out",
        expired.len()
    );
    // Once its leases end, a survivor's sweep (every third of the lease)
    // finds them and wakes its workers, which may wait a poll interval and
    // a backoff: that is the bound. The margin on top is generous: the
    // delivery made due again queues behind the survivors' own due work,
    // and two shared cores under other load slow everything down (5.9 s
    // after the leases ended was seen with a load average of 9).
    let retry = LEASE / 3 + POLL_INTERVAL + MAX_BACKOFF;
    let margin = Duration::from_secs(10);
    let bound = leases_end + (retry + margin).as_millis() as i64;
    let (mut slowest_sweep, mut slowest_resend) = (0, 0);
    for row in &expired {
        let practice: String = row.get(0);
        let swept: i64 = row.get(1);
        let resent: Option<i64> = row.get(2);
        let Some(resent) = resent else {
            panic!(
                "practice {practice}: neither sent again nor answered after its lease ran out (killed at {killed_at}); \
                 events: {:#?}; vendor: {:#?}",
                trail(&db, &practice).await,
                seen.iter()
                    .filter(|s| s.practice_id == practice)
                    .collect::<Vec<_>>()
            )
        };
        slowest_sweep = slowest_sweep.max(swept - leases_end);
        slowest_resend = slowest_resend.max(resent - swept);
        assert!(
            resent <= bound,
            "practice {practice}: the victim's leases ended {} ms after the kill; its lease was \
             swept {} ms and the delivery sent again or answered {} ms after that (bound: {retry:?} + {margin:?})",
            leases_end - killed_at,
            swept - leases_end,
            resent - leases_end,
        );
        let op = &rows[&practice].2;
        assert!(
            seen.iter()
                .any(|s| s.operation_id == *op && s.hub != names[VICTIM]),
            "practice {practice}: the vendor never saw {op} from a survivor; it saw it from \
             (hub, ms after the kill): {:?}",
            seen.iter()
                .filter(|s| s.operation_id == *op)
                .map(|s| (&s.hub, s.at - killed_at))
                .collect::<Vec<_>>()
        );
    }
    let held_by_victim: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM jobs WHERE lease_owner = $1",
            &[&victim_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(held_by_victim, 0, "jobs still leased by the dead instance");

    // 4. The audit chains verify.
    let verified = audit_verify(&hubs[WATCHED].config, &schema.url);

    let by_hub = |h: usize| acked.values().filter(|a| a.hub == h).count();
    let sync = acked.values().filter(|a| a.kind == Kind::Sync).count();
    let approved_in_reply = ledger.answered_approved.load(Ordering::SeqCst);
    eprintln!(
        "cluster: {total} practices ({sync} sync, {approved_in_reply} answered approved) acknowledged by hubs a/b/c: {}/{}/{} \
         ({} resent after the kill, {} duplicates, {} busy answers), load in {load_done:.1?}; killed c after \
         {load_before_kill} acknowledgements with {in_flight_at_kill} deliveries held at the vendor; \
         its leases ended {} ms after the kill; {} of them ran out, swept at most {slowest_sweep} ms \
         after they ended and sent again by a survivor at most {slowest_resend} ms after the sweep \
         (bound: {retry:?} + {margin:?} after they ended); {sent_again} operation ids sent more than once; {}",
        by_hub(0),
        by_hub(1),
        by_hub(2),
        ledger.resent.load(Ordering::SeqCst),
        ledger.duplicates.load(Ordering::SeqCst),
        ledger.busy.load(Ordering::SeqCst),
        leases_end - killed_at,
        expired.len(),
        verified.trim()
    );

    // 5. The watchers on a survivor saw every event of their tenant, in
    // cursor order: events committed by the other instances included.
    for (tenant, watched) in &watchers {
        let logged: Vec<(i64, String, i64)> = db
            .query(
                "SELECT cursor, practice_id, sequence FROM events WHERE tenant_id = $1
                 ORDER BY cursor",
                &[tenant],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let (events, ended) = watched.lock().unwrap().clone();
                if events.len() >= logged.len() || ended.is_some() {
                    return (events, ended);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let (events, ended) = got.unwrap_or_else(|_| watched.lock().unwrap().clone());
        assert!(
            ended.is_none(),
            "tenant {tenant}: the watch ended: {ended:?}"
        );
        let missing = logged.iter().filter(|e| !events.contains(e)).count();
        assert!(
            events == logged,
            "tenant {tenant}: the watcher on hub {} received {} events, the store has {} \
             ({missing} missing; in cursor order: {})",
            names[WATCHED],
            events.len(),
            logged.len(),
            events.windows(2).all(|w| w[0].0 < w[1].0)
        );
    }
    eprintln!("cluster: in {:.1?}", began.elapsed());
}

// ------------------------------------------------------- database restart

/// Directory of the PostgreSQL server programs (`initdb`, `pg_ctl`).
fn server_bin_dir() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let mut installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    // The newest version first: "15" < "16", and "9.6" sorts last.
    installed.sort_by_key(|p| {
        std::cmp::Reverse(
            p.parent()
                .and_then(|v| {
                    v.file_name()?
                        .to_str()?
                        .split('.')
                        .next()?
                        .parse::<u32>()
                        .ok()
                })
                .unwrap_or(0),
        )
    });
    candidates.extend(installed);
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .unwrap_or_else(|| {
            panic!(
                "the PostgreSQL server programs (initdb, pg_ctl) are not installed: neither \
                 `pg_config --bindir` nor /usr/lib/postgresql/*/bin has them. \
                 scripts/ensure-postgres installs them (CI runs it first)"
            )
        })
}

/// A PostgreSQL cluster of one test's own, in a temporary directory, on
/// a free loopback port; stopped (immediately) when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The server refuses to run as root: then it runs as `postgres`.
    as_postgres: bool,
}

impl PrivatePostgres {
    async fn start() -> Self {
        use std::os::unix::fs::MetadataExt;
        let bin = server_bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if as_postgres {
            let chown = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(
                chown.success(),
                "running as root, the test cluster runs as the `postgres` user, which \
                 scripts/ensure-postgres creates with the server"
            );
        }
        let port = free_addr().await.port();
        let pg = Self {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "raccordo",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        pg.start_server();
        let out = Command::new("psql")
            .arg(format!("postgres://raccordo@127.0.0.1:{port}/postgres"))
            .args(["-v", "ON_ERROR_STOP=1", "-qc", "CREATE DATABASE raccordo"])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "create the database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The hubs' URL: trust authentication, loopback only.
    fn url(&self) -> String {
        format!("postgres://raccordo@127.0.0.1:{}/raccordo", self.port)
    }

    /// Runs a server program, as `postgres` when this test runs as root.
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", path.display()));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "start", "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options,
            ],
        );
    }

    /// `pg_ctl stop -m immediate`: every backend ends at once, as in a
    /// crash of the server; the next start recovers from the log.
    fn stop_server(&self) {
        let data = self.data();
        self.run("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["stop", "-D", data.as_str(), "-m", "immediate", "-w"];
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = cmd
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Where the database is, as the load sees it when a call starts and ends.
const UP: u8 = 0;
const STOPPING: u8 = 1;
const DOWN: u8 = 2;
const STARTING: u8 = 3;
const BACK: u8 = 4;

#[derive(Default)]
struct RestartLedger {
    acked: Mutex<HashMap<String, Acked>>,
    /// Acknowledgements by the phase their call started in.
    acked_in: [AtomicUsize; 5],
    /// `UNAVAILABLE` refusals by the phase their call started in.
    refused_in: [AtomicUsize; 5],
    /// Acknowledged while the database was down from start to end.
    acked_while_down: Mutex<Vec<String>>,
    unexpected: Mutex<Vec<String>>,
}

/// Submits new practices round robin to `clients` until `stop`, noting
/// each answer with the database's phase.
async fn restart_test_client(
    clients: Vec<Client>,
    next: Arc<AtomicUsize>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    ledger: Arc<RestartLedger>,
) {
    while !stop.load(Ordering::SeqCst) {
        let n = next.fetch_add(1, Ordering::SeqCst);
        let (kind, tenant, req) = request(n);
        let target = n % clients.len();
        let started = phase.load(Ordering::SeqCst);
        let answer = clients[target].clone().submit_practice(req).await;
        let ended = phase.load(Ordering::SeqCst);
        match answer {
            Ok(reply) => {
                let p = reply
                    .into_inner()
                    .practice
                    .expect("a practice in the reply");
                ledger.acked_in[started as usize].fetch_add(1, Ordering::SeqCst);
                if started == DOWN && ended == DOWN {
                    ledger.acked_while_down.lock().unwrap().push(p.id.clone());
                }
                ledger.acked.lock().unwrap().insert(
                    p.id,
                    Acked {
                        tenant,
                        kind,
                        hub: target,
                    },
                );
            }
            Err(s) if s.code() == Code::Unavailable => {
                ledger.refused_in[started as usize].fetch_add(1, Ordering::SeqCst);
                // A caller backs off a little before the next one.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(s) => {
                ledger.unexpected.lock().unwrap().push(format!(
                    "practice {n} on hub {target} (phase {started}-{ended}): {s}"
                ));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits until every hub's `grpc.health.v1` says `status` for `service`.
async fn wait_grpc_health(hubs: &[Hub], service: &str, status: ServingStatus, what: &str) {
    eventually_within(Duration::from_secs(30), what, || async move {
        for hub in hubs {
            let mut health = HealthClient::new(hub.channel.clone());
            let answer = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .ok()?;
            if answer.into_inner().status != status as i32 {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Waits until every hub's `/readyz` answers `status`.
async fn wait_readiness(http: &reqwest::Client, hubs: &[Hub], status: u16, what: &str) {
    eventually_within(Duration::from_secs(30), what, || async move {
        for hub in hubs {
            match readyz(http, hub).await {
                Some((s, _)) if s == status => {}
                _ => return None,
            }
        }
        Some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarts_under_load_the_hubs_refuse_then_recover() {
    let began = Instant::now();
    let pg = PrivatePostgres::start().await;
    let vendor = ClusterVendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b"];
    let _logs = Logs(
        names
            .iter()
            .map(|n| dir.path().join(format!("{n}.log")))
            .collect(),
    );
    let mut hubs = Vec::new();
    for name in names {
        hubs.push(start_hub(dir.path(), name, &vendor.url_for(name), &pg.url()).await);
    }
    let http = reqwest::Client::new();
    wait_readiness(&http, &hubs, 200, "both hubs ready").await;

    let clients: Vec<Client> = hubs.iter().map(|h| h.client.clone()).collect();
    let ledger = Arc::new(RestartLedger::default());
    let next = Arc::new(AtomicUsize::new(0));
    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(restart_test_client(
                clients.clone(),
                Arc::clone(&next),
                Arc::clone(&phase),
                Arc::clone(&stop),
                Arc::clone(&ledger),
            ))
        })
        .collect();
    let acked_in = |p: u8| ledger.acked_in[p as usize].load(Ordering::SeqCst);
    let refused_in = |p: u8| ledger.refused_in[p as usize].load(Ordering::SeqCst);

    eventually_within(LONG, "submissions acknowledged before the stop", || {
        let n = acked_in(UP);
        async move { (n >= 200).then_some(()) }
    })
    .await;

    // The database goes away under load, with deliveries in flight: their
    // answers arrive while it is away.
    vendor.hold(&names);
    eventually("deliveries in flight at the vendor", || {
        let held = vendor.held();
        async move { (held >= 2).then_some(()) }
    })
    .await;
    phase.store(STOPPING, Ordering::SeqCst);
    tokio::task::block_in_place(|| pg.stop_server());
    phase.store(DOWN, Ordering::SeqCst);
    let down_at = Instant::now();
    vendor.release();
    wait_readiness(
        &http,
        &hubs,
        503,
        "both hubs not ready without the database",
    )
    .await;
    let not_ready_after = down_at.elapsed();
    let (_, body) = readyz(&http, &hubs[0]).await.unwrap();
    assert_eq!(body["store"]["state"], "down", "{body}");
    // gRPC load balancers read grpc.health.v1: the practice service needs
    // the store; the process as a whole ("") is alive and stays SERVING.
    wait_grpc_health(
        &hubs,
        PRACTICES,
        ServingStatus::NotServing,
        "the practice service not serving without the database",
    )
    .await;
    wait_grpc_health(&hubs, "", ServingStatus::Serving, "the server alive").await;
    // Away longer than a lease and its sweep: the leases of the attempts
    // in flight at the stop run out meanwhile, and their answers cannot be
    // recorded.
    let outage = LEASE + LEASE / 3 + Duration::from_secs(1);
    eventually("submissions refused while the database is down", || {
        let n = refused_in(DOWN);
        let long_enough = down_at.elapsed() >= outage;
        async move { (n >= 50 && long_enough).then_some(()) }
    })
    .await;

    // It comes back: the hubs recover by themselves.
    phase.store(STARTING, Ordering::SeqCst);
    tokio::task::block_in_place(|| pg.start_server());
    phase.store(BACK, Ordering::SeqCst);
    let back_at = Instant::now();
    wait_readiness(&http, &hubs, 200, "both hubs ready again").await;
    let ready_after = back_at.elapsed();
    wait_grpc_health(
        &hubs,
        PRACTICES,
        ServingStatus::Serving,
        "the practice service serving again",
    )
    .await;
    eventually_within(LONG, "submissions acknowledged after the restart", || {
        let n = acked_in(BACK);
        async move { (n >= 200).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        tokio::time::timeout(LONG, task)
            .await
            .expect("the load ends")
            .unwrap();
    }

    let unexpected = ledger.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "answers other than an acknowledgement or UNAVAILABLE: {unexpected:#?}"
    );
    let while_down = ledger.acked_while_down.lock().unwrap().clone();
    assert!(
        while_down.is_empty(),
        "acknowledged while the database was down: {while_down:?}"
    );
    let acked = ledger.acked.lock().unwrap().clone();
    let db = sql(&pg.url()).await;
    let rows = wait_all_final(&db, &acked).await;
    for id in acked.keys() {
        assert!(
            rows.contains_key(id),
            "acknowledged practice {id} is not stored"
        );
    }
    check_through_api(&hubs[0].client, &acked).await;
    let sent_again = one_operation_id_each(&vendor.seen(), &rows);
    let verified = audit_verify(&hubs[0].config, &pg.url());
    eprintln!(
        "database restart: acknowledged {} before / {} while stopping / {} down / {} starting / {} \
         after; refused (UNAVAILABLE) {} / {} / {} / {} / {}; not ready {not_ready_after:.1?} after \
         the stop (away {outage:?}), ready {ready_after:.1?} after the start; {} practices stored, \
         {sent_again} operation ids sent more than once; {}; in {:.1?}",
        acked_in(UP),
        acked_in(STOPPING),
        acked_in(DOWN),
        acked_in(STARTING),
        acked_in(BACK),
        refused_in(UP),
        refused_in(STOPPING),
        refused_in(DOWN),
        refused_in(STARTING),
        refused_in(BACK),
        rows.len(),
        verified.trim(),
        began.elapsed()
    );
}
