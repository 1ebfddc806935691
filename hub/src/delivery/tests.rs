//! The worker's paths that end an attempt without recording its result:
//! each leaves the job to lease expiry, which makes it due again.

use super::spawn_workers;
use crate::adapters::AdapterInstance;
use crate::bus::EventBus;
use crate::config::{Mode, Synchronous};
use crate::domain::practice::{NewPractice, PracticeContent};
use crate::domain::status::DeliveryStatus;
use crate::metrics::Metrics;
use crate::practices::PracticeService;
use crate::store::sqlite::SqliteStore;
use crate::store::{InsertOutcome, Store};
use async_trait::async_trait;
use chrono::{SubsecRound, Utc};
use raccordo_adapters::model::{AdminStatus, Applicant, ChannelInfo, Operation, Person, Subject};
use raccordo_adapters::{Adapter, DeliveryError, DeliveryRequest, VendorReply};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

const TENANT: &str = "016024";
const ADAPTER: &str = "tributi";

/// What the test adapter does on each attempt (by attempt number).
#[derive(Clone, Copy, Debug)]
enum Act {
    Panic,
    Approve,
    Fail,
    /// Waits for [`Scripted::release`], then approves.
    Stall,
}

/// An adapter following a script; records every (operation id, attempt).
struct Scripted {
    script: fn(u32) -> Act,
    calls: Mutex<Vec<(String, u32)>>,
    release: Notify,
}

#[async_trait]
impl Adapter for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn supports(&self, operation: Operation) -> bool {
        operation == Operation::Submit
    }

    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
        self.calls
            .lock()
            .unwrap()
            .push((request.message.message_id.clone(), request.attempt));
        let approve = || VendorReply {
            status: Some(AdminStatus::Approved),
            ..Default::default()
        };
        match (self.script)(request.attempt) {
            Act::Panic => panic!("the adapter has a bug"),
            Act::Approve => Ok(approve()),
            Act::Fail => Err(DeliveryError::transient("503")),
            Act::Stall => {
                self.release.notified().await;
                Ok(approve())
            }
        }
    }
}

/// A hub's delivery side on a real SQLite store: the service, its
/// workers (once started), and the adapter.
struct Harness {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    service: Arc<PracticeService>,
    adapter: Arc<Scripted>,
    adapters: HashMap<String, AdapterInstance>,
    wakers: HashMap<String, Arc<Notify>>,
    workers: Option<super::Workers>,
}

async fn harness(lease: &str, script: fn(u32) -> Act) -> Harness {
    harness_with(lease, "", script).await
}

/// A synchronous route of [`TENANT`]'s TARI towards [`ADAPTER`], for
/// submissions through the service.
const SYNC_ROUTE: &str = r#"
[tenants."016024"]
name = "Comune di Bergamo"
[services.TARI]
title = "Dichiarazione TARI"
legal_term_days = 60
[[routes]]
tenants = ["016024"]
service = "TARI"
adapter = "tributi"
mode = "sync"
deadline = "200ms"
"#;

/// [`harness`] with `extra` appended to the configuration.
async fn harness_with(lease: &str, extra: &str, script: fn(u32) -> Act) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("raccordo.toml");
    std::fs::write(
        &toml,
        format!(
            "[delivery]\nlease = \"{lease}\"\npoll_interval = \"50ms\"\n\
             initial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\n{extra}"
        ),
    )
    .unwrap();
    let config = Arc::new(crate::config::load(&toml).unwrap());
    let db = dir.path().join("hub.db");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&db, Synchronous::Normal, 2)
            .await
            .unwrap(),
    );
    let adapter = Arc::new(Scripted {
        script,
        calls: Mutex::default(),
        release: Notify::new(),
    });
    let instance = AdapterInstance {
        name: ADAPTER.into(),
        adapter: Arc::clone(&adapter) as Arc<dyn Adapter>,
        max_concurrency: 4,
        slots: Arc::new(Semaphore::new(4)),
    };
    let adapters = HashMap::from([(ADAPTER.to_string(), instance)]);
    let wakers = HashMap::from([(ADAPTER.to_string(), Arc::new(Notify::new()))]);
    let service = Arc::new(PracticeService::new(
        config,
        store,
        EventBus::new(),
        adapters.clone(),
        wakers.clone(),
        Arc::new(Metrics::new()),
    ));
    Harness {
        _dir: dir,
        db,
        service,
        adapter,
        adapters,
        wakers,
        workers: None,
    }
}

impl Harness {
    fn start(&mut self) {
        let workers = spawn_workers(Arc::clone(&self.service), &self.adapters, &self.wakers);
        self.workers = Some(workers);
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.service.store()
    }

    async fn submit(&self, id: &str, max_attempts: u32) {
        let new = NewPractice {
            id: id.into(),
            tenant_id: TENANT.into(),
            service_code: "TARI".into(),
            idempotency_key: format!("k-{id}"),
            content_hash: "h".into(),
            content: PracticeContent {
                applicant: Applicant {
                    subject: Subject::Person(Person {
                        fiscal_code: "RSSMRA45D25F205N".into(),
                        given_name: "Mario".into(),
                        family_name: "Rossi".into(),
                    }),
                    contacts: Default::default(),
                },
                submitter: None,
                channel: ChannelInfo::default(),
                data: Default::default(),
            },
            attachments: Vec::new(),
            mode: Mode::Deferred,
            received_at: Utc::now().trunc_subsecs(3),
            legal_term_days: 30,
            adapter: ADAPTER.into(),
            max_attempts,
            traceparent: None,
        };
        let (outcome, _) = self.store().insert_practice(new, false).await.unwrap();
        assert!(matches!(outcome, InsertOutcome::Created));
    }

    fn calls(&self) -> Vec<(String, u32)> {
        self.adapter.calls.lock().unwrap().clone()
    }

    async fn delivery_trail(&self, id: &str) -> Vec<DeliveryStatus> {
        let events = self.store().practice_events(TENANT, id, 0).await.unwrap();
        events.into_iter().filter_map(|e| e.to_delivery).collect()
    }

    async fn status(&self, id: &str) -> AdminStatus {
        self.store()
            .get_practice(TENANT, id, false)
            .await
            .unwrap()
            .status
    }
}

/// Waits for `check` to hold, for 15 seconds at most.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_attempt_whose_adapter_panics_is_sent_again_when_its_lease_runs_out() {
    let mut hub = harness("1s", |attempt| {
        if attempt == 1 {
            Act::Panic
        } else {
            Act::Approve
        }
    })
    .await;
    hub.submit("p-1", 3).await;
    hub.start();
    eventually("the practice approved", || async {
        hub.status("p-1").await == AdminStatus::Approved
    })
    .await;
    let calls = hub.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, calls[1].0, "the same operation id");
    assert_eq!((calls[0].1, calls[1].1), (1, 2));
    // The panicking attempt gave its in-flight count back.
    let gauge = hub
        .service
        .metrics()
        .deliveries_in_flight
        .get_or_create(&crate::metrics::AdapterLabels {
            adapter: ADAPTER.into(),
        })
        .get();
    assert_eq!(gauge, 0, "deliveries in flight after both attempts ended");
    assert_eq!(
        hub.delivery_trail("p-1").await,
        [
            DeliveryStatus::Queued,
            DeliveryStatus::Sent,
            DeliveryStatus::OutcomeUnknown,
            DeliveryStatus::Sent,
            DeliveryStatus::Acknowledged
        ]
    );
}

#[tokio::test]
async fn a_payload_that_cannot_be_loaded_ends_in_the_dead_letters_not_in_flight() {
    let mut hub = harness("1s", |_| Act::Approve).await;
    // Stored, then unreadable: every attempt fails before the adapter.
    hub.submit("p-1", 2).await;
    let conn = rusqlite::Connection::open(&hub.db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute("UPDATE practices SET content = '{' WHERE id = 'p-1'", [])
        .unwrap();
    hub.start();
    eventually("the delivery dead-lettered", || async {
        !hub.store().dead_letters(None, 10).await.unwrap().is_empty()
    })
    .await;
    let dead = hub.store().dead_letters(None, 10).await.unwrap();
    assert_eq!(
        (dead[0].attempts, dead[0].failure_class.as_deref()),
        (2, Some("outcome_unknown"))
    );
    assert!(hub.calls().is_empty(), "the adapter was never called");
    let snapshot = hub.store().ops_snapshot(Utc::now()).await.unwrap();
    assert_eq!(
        snapshot.adapters[0].in_flight, 0,
        "nothing is stuck in flight"
    );
}

#[tokio::test]
async fn a_slow_attempt_whose_lease_is_lost_still_records_the_vendors_answer() {
    // A long lease, renewed while the attempt runs.
    let mut hub = harness(
        "30s",
        |attempt| if attempt == 1 { Act::Stall } else { Act::Fail },
    )
    .await;
    hub.submit("p-1", 2).await;
    hub.start();
    eventually("the first attempt running", || async {
        hub.calls().len() == 1
    })
    .await;
    // Its renewals do not get through for a while (as when the database is
    // out of reach): the lease runs out, and a sweep ends it.
    let conn = rusqlite::Connection::open(&hub.db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute("UPDATE jobs SET lease_expires_at = 0", [])
        .unwrap();
    let expired = hub.store().expire_leases(Utc::now()).await.unwrap();
    assert_eq!(expired.due_again, 1);
    // The job is sent again (same operation id) and fails for good...
    eventually("the second attempt dead-lettered", || async {
        !hub.store().dead_letters(None, 10).await.unwrap().is_empty()
    })
    .await;
    // ...then the slow first attempt's answer arrives: it is the vendor's
    // answer to this operation id, and it stands.
    hub.adapter.release.notify_one();
    eventually("the practice approved", || async {
        hub.status("p-1").await == AdminStatus::Approved
    })
    .await;
    let calls = hub.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].0, calls[1].0, "the same operation id");
    assert!(hub.store().dead_letters(None, 10).await.unwrap().is_empty());
    let trail = hub.delivery_trail("p-1").await;
    assert_eq!(
        trail,
        [
            DeliveryStatus::Queued,
            DeliveryStatus::Sent,
            DeliveryStatus::OutcomeUnknown,
            DeliveryStatus::Sent,
            DeliveryStatus::DeadLettered,
            DeliveryStatus::Acknowledged
        ]
    );
    assert!(hub.service.leases().running().is_empty());
}

/// Another hub instance runs three of the adapter's four slots: this hub's
/// worker takes only the one left, and the rest once the other instance's
/// attempts end (nothing wakes it then: it looks again by itself).
#[tokio::test]
async fn the_worker_leaves_the_slots_another_instance_holds() {
    let mut hub = harness("30s", |_| Act::Stall).await;
    for i in 1..=6 {
        hub.submit(&format!("p-{i}"), 3).await;
    }
    let other = crate::store::Lease {
        owner: "hub-other".into(),
        duration: Duration::from_secs(30),
    };
    let theirs = hub
        .store()
        .claim_work(ADAPTER, &other, Utc::now(), 3, 4)
        .await
        .unwrap()
        .jobs;
    assert_eq!(theirs.len(), 3);
    hub.start();
    eventually("the worker's first attempt", || async {
        !hub.calls().is_empty()
    })
    .await;
    // Claims are atomic: what the worker claimed is in flight already.
    let backlog = |hub: &Harness| {
        let store = Arc::clone(hub.store());
        async move {
            store
                .ops_snapshot(Utc::now())
                .await
                .unwrap()
                .adapters
                .first()
                .cloned()
                .unwrap_or_default()
        }
    };
    let now = backlog(&hub).await;
    assert_eq!((now.in_flight, now.due), (4, 2), "{now:?}");
    // The other instance's attempts end.
    for job in &theirs {
        let approved = crate::store::AttemptResult::Delivered(VendorReply::default());
        hub.store()
            .finish_attempt(job, approved, false)
            .await
            .unwrap();
    }
    eventually("the worker's three attempts", || async {
        hub.calls().len() == 3
    })
    .await;
    eventually("every practice approved", || async {
        hub.adapter.release.notify_waiters();
        let mut all = true;
        for i in 4..=6 {
            all &= hub.status(&format!("p-{i}")).await == AdminStatus::Approved;
        }
        all
    })
    .await;
    assert_eq!(hub.calls().len(), 3, "{:?}", hub.calls());
    let after = backlog(&hub).await;
    assert_eq!((after.in_flight, after.due), (0, 0), "{after:?}");
}

/// A synchronous submission while another instance runs all of the
/// adapter's slots is not delivered inline: it is stored queued and
/// answered (never refused), and a worker delivers it once a slot frees.
#[tokio::test]
async fn a_synchronous_submission_beyond_the_cluster_limit_is_queued_for_a_worker() {
    let mut hub = harness_with("30s", SYNC_ROUTE, |_| Act::Approve).await;
    for i in 1..=4 {
        hub.submit(&format!("p-{i}"), 3).await;
    }
    let other = crate::store::Lease {
        owner: "hub-other".into(),
        duration: Duration::from_secs(30),
    };
    let theirs = hub
        .store()
        .claim_work(ADAPTER, &other, Utc::now(), 4, 4)
        .await
        .unwrap()
        .jobs;
    assert_eq!(theirs.len(), 4, "every slot of the cluster");
    hub.start();
    let input = crate::practices::SubmitInput {
        tenant_id: TENANT.into(),
        service_code: "TARI".into(),
        applicant: Some(Applicant {
            subject: Subject::Person(Person {
                fiscal_code: "RSSMRA45D25F205N".into(),
                given_name: "Mario".into(),
                family_name: "Rossi".into(),
            }),
            contacts: Default::default(),
        }),
        submitter: None,
        channel: ChannelInfo::default(),
        data: Default::default(),
        attachments: Vec::new(),
        idempotency_key: "k-sync".into(),
    };
    let submitted = hub
        .service
        .submit(input)
        .await
        .expect("answered, not refused");
    let id = submitted.practice.id.clone();
    assert_eq!(
        submitted.practice.delivery.map(|d| d.status),
        Some(DeliveryStatus::Queued),
        "stored queued: no slot in the cluster"
    );
    assert!(hub.calls().is_empty(), "not delivered inline");
    for job in &theirs {
        let approved = crate::store::AttemptResult::Delivered(VendorReply::default());
        hub.store()
            .finish_attempt(job, approved, false)
            .await
            .unwrap();
    }
    eventually("the worker delivering it", || async {
        hub.status(&id).await == AdminStatus::Approved
    })
    .await;
    assert_eq!(hub.calls().len(), 1);
}
