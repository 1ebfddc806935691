//! Crash consistency: the real hub killed with SIGKILL at random points under
//! mixed load (synchronous and deferred submissions, push callbacks,
//! withdrawals, and `raccordo purge` as a concurrent process), then checked.
//!
//! After each kill the database must pass `PRAGMA integrity_check`, and
//! every acknowledged submission or withdrawal must be there as it was
//! acknowledged, with all its events; a practice may be missing only if the
//! purge removed it, which the audit trail shows (its events are kept there,
//! a conclusion among them). After the last kill the hub restarts and must
//! complete every delivery, under one operation id per practice, leaving an
//! intact audit trail.
//!
//! The seed of the random kill points and load is printed; run again with
//! `RACCORDO_CRASH_SEED=<seed>` to replay the same schedule (timings differ,
//! so a replay reproduces a failure often, not always).
//! `RACCORDO_CRASH_CYCLES` changes the number of kills (default 20).

use crate::support::*;
use raccordo_proto::v1 as pb;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tonic::Code;
use tonic::transport::Channel;

/// Its concluded practices are removed by every purge (`retention_days = 0`).
const PURGED: &str = "028060";
/// Keeps everything: none of its practices may ever be missing.
const KEPT: &str = "016024";
const TENANTS: [&str; 2] = [KEPT, PURGED];
const SECRET: &str = "crash-callback-secret-0123456789";
/// The final drain: retries, push callbacks and their backoff after the
/// last restart.
const DRAIN: Duration = Duration::from_secs(60);

/// splitmix64: a small seeded generator, so a run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }

    fn tenant(&mut self) -> &'static str {
        TENANTS[self.below(2) as usize]
    }

    /// An independent generator for one task.
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// CERT: `mode = "sync"`, the reply carries the vendor's answer.
    Sync,
    /// TARI: `mode = "deferred"`, a blocking REST vendor.
    Deferred,
    /// SUAP: `mode = "deferred"`, the result comes back by callback.
    Push,
}

/// What the hub acknowledged about one practice.
#[derive(Debug, Clone)]
struct Acked {
    tenant: &'static str,
    kind: Kind,
    /// The status in the submission's reply.
    status: i32,
    /// A withdrawal of it was acknowledged.
    withdrawn: bool,
}

#[derive(Default)]
struct Ledger {
    acked: HashMap<String, Acked>,
    /// Submissions without an answer: the next cycle sends them again
    /// under the same key, as a caller would.
    unanswered: Vec<(Kind, &'static str, pb::SubmitPracticeRequest)>,
    /// Errors while the hub was meant to be up.
    unexpected: Vec<String>,
    duplicates: usize,
    withdrawals: usize,
    purged: u64,
    purge_runs: usize,
    purges_killed: usize,
}

type Shared = Arc<Mutex<Ledger>>;

fn request(
    kind: Kind,
    tenant: &'static str,
    key: String,
    rng: &mut Rng,
) -> pb::SubmitPracticeRequest {
    match kind {
        Kind::Sync => cert_request(tenant, &key),
        Kind::Deferred => {
            let mut r = tari_request(tenant, &key);
            // Some pages of document content: the log grows enough for
            // checkpoints to run during the cycles.
            if rng.below(3) == 0 {
                r.attachments.push(pb::Attachment {
                    name: "planimetria.pdf".into(),
                    media_type: "application/pdf".into(),
                    content: vec![b'x'; 48 * 1024],
                    ..Default::default()
                });
            }
            r
        }
        Kind::Push => pb::SubmitPracticeRequest {
            tenant_id: tenant.into(),
            service_code: "SUAP".into(),
            applicant: Some(mario()),
            idempotency_key: key,
            ..Default::default()
        },
    }
}

/// Submits `kind` practices one after the other until `stop`.
async fn submitter(
    kind: Kind,
    mut client: pb::practice_service_client::PracticeServiceClient<Channel>,
    ledger: Shared,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
    name: String,
) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let retry = {
            let mut l = ledger.lock().unwrap();
            let i = l.unanswered.iter().position(|(k, _, _)| *k == kind);
            i.map(|i| l.unanswered.swap_remove(i))
        };
        let (tenant, req) = match retry {
            Some((_, tenant, req)) => (tenant, req),
            None => {
                n += 1;
                let tenant = rng.tenant();
                (
                    tenant,
                    request(kind, tenant, format!("{name}-{n}"), &mut rng),
                )
            }
        };
        match client.submit_practice(req.clone()).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let p = reply.practice.expect("a practice in the reply");
                let mut l = ledger.lock().unwrap();
                l.duplicates += usize::from(reply.duplicate);
                l.acked.insert(
                    p.id,
                    Acked {
                        tenant,
                        kind,
                        status: p.status,
                        withdrawn: false,
                    },
                );
            }
            Err(status) => {
                let mut l = ledger.lock().unwrap();
                l.unanswered.push((kind, tenant, req));
                if !stop.load(Ordering::SeqCst) {
                    l.unexpected.push(format!("{name}: {status}"));
                }
                return;
            }
        }
    }
}

/// Withdraws random acknowledged deferred practices until `stop`.
async fn withdrawer(
    mut client: pb::practice_service_client::PracticeServiceClient<Channel>,
    ledger: Shared,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) {
    let mut tried = HashSet::new();
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(rng.millis(10, 60)).await;
        let target = {
            let l = ledger.lock().unwrap();
            let open: Vec<_> = l
                .acked
                .iter()
                .filter(|(id, a)| a.kind != Kind::Sync && !tried.contains(*id))
                .map(|(id, a)| (id.clone(), a.tenant))
                .collect();
            (!open.is_empty()).then(|| open[rng.below(open.len() as u64) as usize].clone())
        };
        let Some((id, tenant)) = target else { continue };
        tried.insert(id.clone());
        let answer = client
            .withdraw_practice(pb::WithdrawPracticeRequest {
                tenant_id: tenant.into(),
                practice_id: id.clone(),
                reason: "ritirata dal cittadino".into(),
                operator_id: String::new(),
            })
            .await;
        let mut l = ledger.lock().unwrap();
        match answer {
            Ok(_) => {
                l.withdrawals += 1;
                l.acked.get_mut(&id).unwrap().withdrawn = true;
            }
            // Already concluded (approved, or purged once concluded).
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => {}
            Err(s) => {
                if !stop.load(Ordering::SeqCst) {
                    l.unexpected.push(format!("withdraw {id}: {s}"));
                }
                return;
            }
        }
    }
}

/// What the purge loop is told: keep going, let the current run finish, or
/// kill it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PurgeSignal {
    Run,
    Finish,
    Kill,
}

/// Runs `raccordo purge` back to back, as another process would.
async fn purger(
    config: PathBuf,
    ledger: Shared,
    mut signal: watch::Receiver<PurgeSignal>,
    mut rng: Rng,
) {
    while *signal.borrow() == PurgeSignal::Run {
        let mut child = tokio::process::Command::new(BIN)
            .args(["purge", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start raccordo purge");
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let status = loop {
            tokio::select! {
                status = child.wait() => break Some(status.unwrap()),
                _ = signal.changed() => {
                    if *signal.borrow() == PurgeSignal::Kill {
                        child.start_kill().unwrap();
                        child.wait().await.unwrap();
                        break None;
                    }
                }
            }
        };
        let (mut stdout, mut stderr) = (String::new(), String::new());
        out.read_to_string(&mut stdout).await.unwrap();
        err.read_to_string(&mut stderr).await.unwrap();
        let go_on = 'ledger: {
            let mut l = ledger.lock().unwrap();
            let Some(status) = status else {
                l.purges_killed += 1;
                break 'ledger false;
            };
            l.purge_runs += 1;
            if !status.success() {
                l.unexpected
                    .push(format!("raccordo purge failed ({status}): {stderr}"));
                break 'ledger false;
            }
            // "tenant 028060: removed N practice(s) concluded before …"
            l.purged += stdout
                .lines()
                .filter_map(|line| {
                    line.split("removed ")
                        .nth(1)?
                        .split(' ')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>();
            true
        };
        if !go_on {
            return;
        }
        tokio::time::sleep(rng.millis(0, 80)).await;
    }
}

/// Two tenants (one purged at every run), a synchronous certificate, a
/// deferred declaration to a blocking REST vendor, and a deferred SUAP
/// practice whose result the vendor pushes to the hub's callback.
fn config(vendor: &str, grpc: SocketAddr, http: SocketAddr) -> String {
    format!(
        r#"
[hub]
grpc_listen = "{grpc}"
http_listen = "{http}"
data_dir = "data"
shutdown_grace = "1s"

[delivery]
# Each kill may cost an in-flight attempt; none may run out.
max_attempts = 100
initial_backoff = "20ms"
max_backoff = "200ms"
poll_interval = "100ms"

[tenants."{KEPT}"]
name = "Comune di Bergamo"

[tenants."{PURGED}"]
name = "Comune di Padova"
retention_days = 0

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

[services.SUAP]
title = "Pratica SUAP"

[adapters.vendor]
kind = "rest"
base_url = "{vendor}"
timeout = "3s"
connect_timeout = "500ms"
max_concurrency = 4
[adapters.vendor.submit]
path = "/pratiche/{{{{ service_code }}}}"
[adapters.vendor.withdraw]
path = "/pratiche/{{{{ practice_id }}}}/ritiro"
[adapters.vendor.response]
status_pointer = "/esito"
status_map = {{ OK = "APPROVED", KO = "REJECTED" }}
protocol_pointer = "/protocollo/numero"
documents_pointer = "/documenti"

[adapters.suap]
kind = "rest"
pattern = "NONBLOCK_PUSH_REST"
base_url = "{vendor}"
timeout = "3s"
connect_timeout = "500ms"
max_concurrency = 4
[adapters.suap.submit]
path = "/suap/{{{{ service_code }}}}"
[adapters.suap.callback]
public_base_url = "http://{http}"
secret_file = "callback.secret"
max_skew = "5m"
[adapters.suap.response]
status_pointer = "/esito"
status_map = {{ OK = "APPROVED", KO = "REJECTED" }}
protocol_pointer = "/protocollo/numero"

[[routes]]
tenants = ["{KEPT}", "{PURGED}"]
service = "CERT"
adapter = "vendor"
mode = "sync"
deadline = "5s"

[[routes]]
tenants = ["{KEPT}", "{PURGED}"]
service = "TARI"
adapter = "vendor"
mode = "deferred"

[[routes]]
tenants = ["{KEPT}", "{PURGED}"]
service = "SUAP"
adapter = "suap"
mode = "deferred"
"#
    )
}

/// `raccordo audit verify` on the configuration.
fn audit_verify(config: &Path) -> Result<String, String> {
    let out = std::process::Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Read-only: closing it never checkpoints the log, so the next hub
/// recovers the log the crash left, not one this test tidied up.
fn open(db: &Path) -> Connection {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the database file");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// The statuses a practice ends in.
const FINAL: [&str; 4] = ["APPROVED", "REJECTED", "WITHDRAWN", "CANCELLED"];

/// Checks the database after a kill; returns how many acknowledged
/// practices the purge removed.
fn check_after_kill(db: &Path, acked: &HashMap<String, Acked>, cycle: usize) -> usize {
    let conn = open(db);
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(integrity, ["ok"], "cycle {cycle}: integrity_check");
    let violations: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(violations, 0, "cycle {cycle}: foreign_key_check");
    for table in ["events", "jobs", "documents", "external_refs"] {
        let orphans: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM {table} WHERE practice_id NOT IN (SELECT id FROM practices)"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            orphans, 0,
            "cycle {cycle}: {table} rows of practices that do not exist"
        );
    }

    let mut purged = 0;
    for (id, a) in acked {
        let row: Option<(String, String, i64)> = conn
            .query_row(
                "SELECT tenant_id, status, last_sequence FROM practices WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .unwrap();
        let Some((tenant, status, last_sequence)) = row else {
            // Only the purge removes practices: its tenant's, concluded,
            // with their events kept in the audit trail.
            assert_eq!(
                a.tenant, PURGED,
                "cycle {cycle}: acknowledged practice {id} ({a:?}) is gone"
            );
            let kept: Vec<String> = conn
                .prepare(
                    "SELECT detail FROM audit_log WHERE practice_id = ?1 AND action = 'status'",
                )
                .unwrap()
                .query_map([id], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let concluded = kept.iter().any(|d| {
                let d: serde_json::Value = serde_json::from_str(d).unwrap();
                FINAL.iter().any(|s| d["to_status"] == *s)
            });
            assert!(
                concluded,
                "cycle {cycle}: practice {id} ({a:?}) is gone, but the audit trail shows no conclusion: {kept:?}"
            );
            purged += 1;
            continue;
        };
        assert_eq!(tenant, a.tenant, "cycle {cycle}: practice {id}");
        let sequences: Vec<i64> = conn
            .prepare("SELECT sequence FROM events WHERE practice_id = ?1 ORDER BY sequence")
            .unwrap()
            .query_map([id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            !sequences.is_empty() && sequences == (1..=last_sequence).collect::<Vec<_>>(),
            "cycle {cycle}: practice {id} ({a:?}) has events {sequences:?}, last_sequence {last_sequence}"
        );
        if a.withdrawn {
            assert_eq!(
                status, "WITHDRAWN",
                "cycle {cycle}: withdrawn practice {id} ({a:?})"
            );
        } else if a.status == pb::AdministrativeStatus::Approved as i32 {
            assert_eq!(
                status, "APPROVED",
                "cycle {cycle}: approved practice {id} ({a:?})"
            );
        }
    }
    purged
}

/// One practice as stored: status, delivery status, current operation id.
type Row = (String, Option<String>, Option<String>);

fn practices(db: &Path) -> HashMap<String, Row> {
    let conn = open(db);
    let mut stmt = conn
        .prepare("SELECT id, status, delivery_status, current_operation_id FROM practices")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The states of a job that still has work to do.
const UNSETTLED: &str = "'due', 'in_flight', 'polling', 'poll_in_flight'";

/// Jobs in `states`, counted by state.
fn jobs_in(db: &Path, states: &str) -> Vec<(String, i64)> {
    open(db)
        .prepare(&format!(
            "SELECT state, COUNT(*) FROM jobs WHERE state IN ({states}) GROUP BY state"
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A panic in a background task (a delivery worker) leaves the process
/// up, and the work it held waits until the next restart: it is a failure
/// the kills would otherwise hide.
fn hub_never_panicked(log: &Path, cycle: usize, seed: u64) {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked at")).collect();
    assert!(
        panics.is_empty(),
        "cycle {cycle}, seed {seed}: the hub panicked:\n{}",
        log.lines()
            .skip_while(|l| !l.contains("panicked at"))
            .take(4)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every run of the hub logs to the same file.
fn appending(log: &Path) -> Stdio {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
    Stdio::from(file.unwrap())
}

/// Starts the hub and returns it with a client, once it serves.
async fn start(
    config: &Path,
    log: &Path,
) -> (
    Proc,
    pb::practice_service_client::PracticeServiceClient<Channel>,
) {
    let mut hub = serve_logging_to(config, &[], appending(log));
    let addr = grpc_addr_from_banner(&mut hub);
    let channel = connect_retrying(addr).await;
    (
        hub,
        pb::practice_service_client::PracticeServiceClient::new(channel),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_under_mixed_load_the_store_stays_consistent() {
    let seed = std::env::var("RACCORDO_CRASH_SEED")
        .ok()
        .map(|s| {
            s.parse::<u64>()
                .expect("RACCORDO_CRASH_SEED is an unsigned integer")
        })
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let cycles: usize = std::env::var("RACCORDO_CRASH_CYCLES")
        .ok()
        .map(|s| s.parse().expect("RACCORDO_CRASH_CYCLES is a number"))
        .unwrap_or(20);
    eprintln!("crash test seed {seed} (replay: RACCORDO_CRASH_SEED={seed}), {cycles} cycles");
    let mut rng = Rng(seed);
    let began = Instant::now();

    let vendor = Vendor::start().await;
    vendor.push_results("/suap/", SECRET.as_bytes(), Duration::from_millis(30));
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("raccordo.toml");
    let log = dir.path().join("hub.log");
    let [grpc, http] = free_addrs().await;
    std::fs::write(&config_path, config(&vendor.url(), grpc, http)).unwrap();
    std::fs::write(dir.path().join("callback.secret"), SECRET).unwrap();
    let db = dir.path().join("data").join("raccordo.db");

    let ledger: Shared = Arc::default();
    let mut early_kills = 0;
    for cycle in 1..=cycles {
        // Now and then a kill while the hub starts: migrations, recovery of
        // in-flight jobs, the first deliveries after a restart.
        if cycle > 1 && rng.below(4) == 0 {
            let mut hub = serve_logging_to(&config_path, &[], appending(&log));
            tokio::time::sleep(rng.millis(0, 150)).await;
            hub.0.kill().unwrap();
            hub.0.wait().unwrap();
            early_kills += 1;
        }
        vendor.set_latency(rng.millis(0, 40));
        let (mut hub, client) = start(&config_path, &log).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (purge_signal, purge_rx) = watch::channel(PurgeSignal::Run);
        let mut tasks = Vec::new();
        for (kind, workers) in [(Kind::Sync, 2), (Kind::Deferred, 2), (Kind::Push, 2)] {
            for w in 0..workers {
                tasks.push(tokio::spawn(submitter(
                    kind,
                    client.clone(),
                    Arc::clone(&ledger),
                    Arc::clone(&stop),
                    rng.fork(),
                    format!("{kind:?}-{cycle}-{w}").to_lowercase(),
                )));
            }
        }
        tasks.push(tokio::spawn(withdrawer(
            client.clone(),
            Arc::clone(&ledger),
            Arc::clone(&stop),
            rng.fork(),
        )));
        tasks.push(tokio::spawn(purger(
            config_path.clone(),
            Arc::clone(&ledger),
            purge_rx,
            rng.fork(),
        )));

        let killed_after = rng.millis(50, 700);
        tokio::time::sleep(killed_after).await;
        stop.store(true, Ordering::SeqCst);
        hub.0.kill().unwrap();
        hub.0.wait().unwrap();
        // The log as the kill left it (checkpoints run every 1,000 pages).
        let wal_pages =
            std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len() / 4096);
        let kill_purge = rng.below(2) == 0;
        // The purge loop may have ended already (it failed: reported below).
        purge_signal.send_replace(if kill_purge {
            PurgeSignal::Kill
        } else {
            PurgeSignal::Finish
        });
        for task in tasks {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("the load stops once the hub is gone")
                .unwrap();
        }

        let (acked, unexpected) = {
            let l = ledger.lock().unwrap();
            (l.acked.clone(), l.unexpected.clone())
        };
        assert!(
            unexpected.is_empty(),
            "cycle {cycle}, seed {seed}: {unexpected:#?}"
        );
        let db = db.clone();
        let purged = tokio::task::spawn_blocking(move || check_after_kill(&db, &acked, cycle))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        hub_never_panicked(&log, cycle, seed);
        if let Err(e) = audit_verify(&config_path) {
            panic!("cycle {cycle}, seed {seed}: audit verify after the kill: {e}");
        }
        let l = ledger.lock().unwrap();
        eprintln!(
            "cycle {cycle}: killed after {killed_after:?} with {wal_pages} log pages; \
             {} practices acknowledged, {purged} of them purged, {} unanswered",
            l.acked.len(),
            l.unanswered.len()
        );
    }

    // The last restart: everything acknowledged completes.
    let (_hub, _client) = start(&config_path, &log).await;
    let acked = ledger.lock().unwrap().acked.clone();
    let final_rows = eventually_within(DRAIN, "every delivery to complete", || {
        let (db, acked) = (db.clone(), acked.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let rows = practices(&db);
                let open = acked
                    .keys()
                    .filter_map(|id| rows.get(id))
                    .filter(|(status, delivery, _)| {
                        !FINAL.contains(&status.as_str())
                            || !matches!(
                                delivery.as_deref(),
                                Some("ACKNOWLEDGED" | "CANCELLED" | "DEAD_LETTERED")
                            )
                    })
                    .count();
                (open == 0 && jobs_in(&db, UNSETTLED).is_empty()).then_some(rows)
            })
            .await
            .unwrap()
        }
    })
    .await;
    assert_eq!(jobs_in(&db, "'dead'"), [], "dead-lettered jobs");

    // The vendor saw each delivered practice under one operation id: the
    // practice's own.
    let mut ops: HashMap<String, HashSet<String>> = HashMap::new();
    for r in vendor.received() {
        if r.path.ends_with("/ritiro") {
            continue;
        }
        let practice = r.body["practice_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ops.entry(practice).or_default().insert(r.idempotency_key);
    }
    for (practice, keys) in &ops {
        assert_eq!(
            keys.len(),
            1,
            "practice {practice} was sent under several operation ids: {keys:?}"
        );
    }
    let mut delivered = 0;
    for (id, a) in &acked {
        let Some((status, delivery, op)) = final_rows.get(id) else {
            continue; // purged: checked after the kill that followed
        };
        assert_ne!(
            delivery.as_deref(),
            Some("DEAD_LETTERED"),
            "practice {id} ({a:?})"
        );
        // A withdrawn practice's last delivery may be the withdrawal.
        if status != "WITHDRAWN" {
            assert_eq!(
                delivery.as_deref(),
                Some("ACKNOWLEDGED"),
                "practice {id} ({a:?})"
            );
            let seen = ops.get(id).unwrap_or_else(|| {
                panic!("practice {id} ({a:?}) is {status}, never seen by the vendor")
            });
            assert_eq!(
                seen.iter().next(),
                op.as_ref(),
                "practice {id}: the vendor's operation id"
            );
            delivered += 1;
        }
    }
    hub_never_panicked(&log, cycles + 1, seed);
    let callbacks = vendor.callbacks();
    assert!(
        callbacks.refused.is_empty(),
        "callbacks refused: {:?}",
        callbacks.refused
    );
    // An approval pushed for a practice withdrawn meanwhile is late: not
    // applied, and the vendor is told so.
    for (class, detail) in &callbacks.anomalies {
        assert_eq!(class, "late", "{detail}");
        assert!(detail.contains("concluded WITHDRAWN"), "{detail}");
    }
    let verified = audit_verify(&config_path).unwrap_or_else(|e| panic!("audit verify: {e}"));

    let l = ledger.lock().unwrap();
    eprintln!(
        "crash test seed {seed}: {cycles} kills under load (+{early_kills} while starting) in {:.1?}; \
         {} practices acknowledged ({delivered} delivered, {} duplicates on retry), {} withdrawals, \
         {} purge runs ({} killed) removing {} practices, {} callbacks accepted ({} uncorrelated, {} late); {}",
        began.elapsed(),
        l.acked.len(),
        l.duplicates,
        l.withdrawals,
        l.purge_runs,
        l.purges_killed,
        l.purged,
        callbacks.accepted,
        callbacks.uncorrelated,
        callbacks.anomalies.len(),
        verified.trim()
    );
}
