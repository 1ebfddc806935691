//! The PostgreSQL store against a real server (scripts/ensure-postgres):
//! what several hub instances sharing one database rely on. Each test works
//! in a schema of its own, dropped at the end, so tests run in parallel.

use super::*;
use crate::config::Mode;
use raccordo_adapters::VendorReply;
use std::collections::HashSet;

/// The test database (`RACCORDO_TEST_DATABASE_URL`, default the one
/// scripts/ensure-postgres makes).
pub(crate) fn test_url() -> String {
    std::env::var("RACCORDO_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://raccordo_test:raccordo_test@127.0.0.1:5432/raccordo_test".into()
    })
}

/// A schema of its own for one test, dropped when the test ends (also
/// when it fails).
pub(crate) struct Schema {
    pub(crate) name: String,
}

impl Schema {
    pub(crate) async fn new() -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let (client, conn) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls)
            .await
            .expect("PostgreSQL for the tests: run scripts/ensure-postgres");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        Self { name }
    }

    /// A store (a hub instance) working in this schema.
    pub(crate) async fn store(&self, bus: Option<EventBus>) -> PgStore {
        let opts = PgOptions {
            pool_size: 8,
            search_path: Some(self.name.clone()),
            ..Default::default()
        };
        PgStore::open(&test_url(), &opts, None, bus).await.unwrap()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: clean up from a thread. That
        // runtime is blocked meanwhile, so a transaction its stores' tasks
        // (sequencer, feed) had open cannot end by itself: its session is
        // ended here, or the DROP would wait for it forever.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok((client, conn)) =
                    tokio_postgres::connect(&test_url(), tokio_postgres::NoTls).await
                else {
                    return;
                };
                tokio::spawn(conn);
                for _ in 0..5 {
                    let _ = client
                        .execute(
                            "SELECT pg_terminate_backend(pid) FROM (
                                SELECT DISTINCT l.pid FROM pg_locks l
                                JOIN pg_class c ON c.oid = l.relation
                                JOIN pg_namespace n ON n.oid = c.relnamespace
                                WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()) holders",
                            &[&name],
                        )
                        .await;
                    let dropped = client
                        .batch_execute(&format!(
                            "SET lock_timeout = '2s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                        ))
                        .await;
                    if dropped.is_ok() {
                        return;
                    }
                }
            });
        })
        .join();
    }
}

pub(crate) fn new_practice(id: &str, key: &str) -> NewPractice {
    use crate::domain::practice::PracticeContent;
    use raccordo_adapters::model::{Applicant, ChannelInfo, Person, Subject};
    NewPractice {
        id: id.into(),
        tenant_id: "016024".into(),
        service_code: "TARI".into(),
        idempotency_key: key.into(),
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
        attachments: vec![Document::new("a.pdf", "application/pdf", b"%PDF".to_vec())],
        mode: Mode::Deferred,
        received_at: Utc::now(),
        legal_term_days: 30,
        adapter: "tributi".into(),
        max_attempts: 3,
        traceparent: None,
    }
}

fn lease(owner: &str) -> Lease {
    Lease {
        owner: owner.into(),
        duration: std::time::Duration::from_secs(30),
    }
}

fn tenant() -> EventFilter {
    EventFilter {
        tenant_id: "016024".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_practice_is_stored_read_back_and_delivered() {
    let schema = Schema::new().await;
    let store = schema.store(None).await;
    let (outcome, stored) = store
        .insert_practice(new_practice("p1", "k1"), true)
        .await
        .unwrap();
    assert!(matches!(outcome, InsertOutcome::Created));
    let stored = stored.expect("read back");
    assert_eq!(stored.attachments.len(), 1);
    assert!(stored.attachments[0].content.is_empty(), "metadata only");
    let work = store
        .claim_work("tributi", &lease("hub-a"), Utc::now(), 10, 100)
        .await
        .unwrap();
    assert_eq!(work.jobs.len(), 1);
    let (practice, docs) = store.delivery_payload(&work.jobs[0]).await.unwrap();
    assert_eq!(practice.id, "p1");
    assert_eq!(docs[0].content, b"%PDF");
    let done = store
        .finish_attempt(
            &work.jobs[0],
            AttemptResult::Delivered(VendorReply::default()),
            true,
        )
        .await
        .unwrap()
        .practice
        .expect("read back");
    assert_eq!(done.id, "p1");
    let events = store.practice_events("016024", "p1", 0).await.unwrap();
    assert!(events.len() >= 3, "{events:?}");
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(
        store.last_cursor().await.unwrap(),
        events.last().unwrap().cursor
    );
    let missing = store.get_practice("016025", "p1", false).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
}

/// Two instances receive the same submission at once: one stores it, the
/// other answers with it.
#[tokio::test]
async fn concurrent_duplicates_resolve_to_the_practice_that_won() {
    let schema = Schema::new().await;
    let (a, b) = (schema.store(None).await, schema.store(None).await);
    for round in 0..10 {
        let key = format!("k-{round}");
        let (first, second) = tokio::join!(
            a.insert_practice(new_practice(&format!("a-{round}"), &key), false),
            b.insert_practice(new_practice(&format!("b-{round}"), &key), false),
        );
        let outcomes = [first.unwrap().0, second.unwrap().0];
        let created = outcomes
            .iter()
            .filter(|o| matches!(o, InsertOutcome::Created))
            .count();
        assert_eq!(created, 1, "round {round}: {outcomes:?}");
        let winner = a
            .list_practices(
                &PracticeFilter {
                    tenant_id: "016024".into(),
                    ..Default::default()
                },
                None,
                100,
            )
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.idempotency_key == key)
            .expect("stored once")
            .id;
        for o in &outcomes {
            if let InsertOutcome::Existing { id, same_content } = o {
                assert_eq!(*id, winner);
                assert!(same_content);
            }
        }
    }
    let events = a.events_after(&tenant(), 0, 1000).await.unwrap();
    assert_eq!(events.len(), 10 * 2, "the losers wrote nothing");
}

/// Two instances claim the same adapter's queue at once: every job is
/// claimed exactly once.
#[tokio::test]
async fn claims_from_two_instances_never_take_the_same_job() {
    let schema = Schema::new().await;
    let (a, b) = (schema.store(None).await, schema.store(None).await);
    for i in 0..40 {
        a.insert_practice(new_practice(&format!("p-{i:02}"), &format!("k-{i}")), false)
            .await
            .unwrap();
    }
    let claim = |s: PgStore, owner: &'static str| async move {
        let mut mine = Vec::new();
        loop {
            let work = s
                .claim_work("tributi", &lease(owner), Utc::now(), 3, 100)
                .await
                .unwrap();
            if work.jobs.is_empty() {
                return mine;
            }
            mine.extend(work.jobs.into_iter().map(|j| j.operation_id));
        }
    };
    let (from_a, from_b) = tokio::join!(
        tokio::spawn(claim(a.clone(), "hub-a")),
        tokio::spawn(claim(b.clone(), "hub-b"))
    );
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    let all: HashSet<&String> = from_a.iter().chain(&from_b).collect();
    assert_eq!(all.len(), from_a.len() + from_b.len(), "claimed twice");
    assert_eq!(all.len(), 40, "every job claimed");
}

/// Cursors never go back: a watcher reading "after my last cursor"
/// while two instances write sees every event, none skipped.
#[tokio::test]
async fn a_watcher_skips_no_event_while_two_instances_write() {
    let schema = Schema::new().await;
    let (a, b) = (schema.store(None).await, schema.store(None).await);
    let watcher = schema.store(None).await;
    let writers: Vec<_> = [a, b]
        .into_iter()
        .enumerate()
        .map(|(w, s)| {
            tokio::spawn(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..30 {
                    let s = s.clone();
                    tasks.spawn(async move {
                        let id = format!("w{w}-{i:02}");
                        s.insert_practice(new_practice(&id, &id), false)
                            .await
                            .unwrap();
                    });
                }
                tasks.join_all().await;
            })
        })
        .collect();
    let expected = 2 * 30 * 2;
    let mut seen = Vec::new();
    let mut cursor = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while seen.len() < expected {
        assert!(
            std::time::Instant::now() < deadline,
            "saw {} of {expected}",
            seen.len()
        );
        for e in watcher.events_after(&tenant(), cursor, 7).await.unwrap() {
            cursor = e.cursor;
            seen.push(e.cursor);
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let stored: Vec<i64> = watcher
        .events_after(&tenant(), 0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.cursor)
        .collect();
    assert_eq!(seen, stored, "the watcher saw every stored event, in order");
    assert_eq!(stored, (1..=expected as i64).collect::<Vec<_>>(), "no gaps");
}

/// Concurrent writers of two instances (events and refused calls) extend
/// one audit chain per tenant; an edited event breaks it.
#[tokio::test]
async fn concurrent_writers_extend_one_audit_chain() {
    let schema = Schema::new().await;
    let (a, b) = (schema.store(None).await, schema.store(None).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let id = format!("p-{i:02}");
            s.insert_practice(new_practice(&id, &id), false)
                .await
                .unwrap();
            s.record_audit(AuditEntry {
                tenant_id: Some("016024".into()),
                actor: "intruder".into(),
                action: "call_denied".into(),
                practice_id: None,
                detail: serde_json::json!({ "i": i }),
            })
            .await
            .unwrap();
        });
    }
    tasks.join_all().await;
    let report = a.verify_audit(None).await.unwrap();
    assert_eq!(report.differences, Vec::new());
    let (checked, breaks) = (report.records, report.breaks);
    assert!(breaks.is_empty(), "{breaks:?}");
    assert_eq!(checked, 20 * 2 + 20);
    // Edited afterwards, the chain breaks at that record.
    let client = pool::connection(&a.inner.pool).await.unwrap();
    client
        .execute(
            "UPDATE events SET reason = 'edited' WHERE audit_seq = 7 AND tenant_id = '016024'",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE audit_log SET detail = '{}' WHERE seq = 7 AND tenant_id = '016024'",
            &[],
        )
        .await
        .unwrap();
    let report = a.verify_audit(Some("016024")).await.unwrap();
    assert_eq!(report.differences, Vec::new());
    let (_, breaks) = (report.records, report.breaks);
    assert_eq!(breaks.len(), 1, "{breaks:?}");
    assert_eq!(breaks[0].seq, 7);
}

/// Events are published after their commit, in cursor order, as stored.
#[tokio::test]
async fn committed_events_are_published_in_cursor_order() {
    let schema = Schema::new().await;
    let bus = EventBus::new();
    let mut live = bus.subscribe();
    let store = schema.store(Some(bus)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            let id = format!("p-{i:02}");
            store.insert_practice(new_practice(&id, &id), false).await
        });
    }
    tasks.join_all().await;
    // A duplicate id fails and publishes nothing.
    let dup = store
        .insert_practice(new_practice("p-00", "other"), false)
        .await;
    assert!(matches!(dup, Err(StoreError::Internal(_))), "{dup:?}");
    let stored = store.events_after(&tenant(), 0, 1000).await.unwrap();
    assert_eq!(stored.len(), 40);
    for expected in &stored {
        let published = next_published(&mut live).await;
        assert_eq!(*published, *expected, "published once, in order, as stored");
    }
    assert!(live.try_recv().is_err(), "nothing else is published");
}

/// The next event `bus` publishes; a minute at most.
async fn next_published(live: &mut tokio::sync::broadcast::Receiver<Arc<Event>>) -> Arc<Event> {
    tokio::time::timeout(std::time::Duration::from_secs(60), live.recv())
        .await
        .expect("published within a minute")
        .expect("the bus is open")
}

/// Three instances write at once (submissions, deliveries, refused calls;
/// two tenants); a watcher of the second instance's bus, subscribed from
/// the start, sees exactly the store's event log: every event once, in
/// cursor order, none missing. And the audit chains hold.
#[tokio::test]
async fn three_instances_feed_a_watcher_the_whole_log_in_cursor_order() {
    let schema = Schema::new().await;
    let buses = [EventBus::new(), EventBus::new(), EventBus::new()];
    let mut watcher = buses[1].subscribe();
    let mut stores = Vec::new();
    for bus in &buses {
        stores.push(schema.store(Some(bus.clone())).await);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (w, store) in stores.iter().enumerate() {
        for i in 0..15 {
            let s = store.clone();
            tasks.spawn(async move {
                let id = format!("w{w}-{i:02}");
                let mut new = new_practice(&id, &id);
                if i % 3 == 0 {
                    new.tenant_id = "016025".into();
                }
                let tenant = new.tenant_id.clone();
                s.insert_practice(new, false).await.unwrap();
                let work = s
                    .claim_work("tributi", &lease(&format!("hub-{w}")), Utc::now(), 1, 100)
                    .await
                    .unwrap();
                for job in &work.jobs {
                    s.finish_attempt(job, AttemptResult::Delivered(VendorReply::default()), false)
                        .await
                        .unwrap();
                }
                s.record_audit(AuditEntry {
                    tenant_id: Some(tenant),
                    actor: "intruder".into(),
                    action: "call_denied".into(),
                    practice_id: None,
                    detail: serde_json::json!({ "w": w, "i": i }),
                })
                .await
                .unwrap();
            });
        }
    }
    tasks.join_all().await;
    let last = stores[0].last_cursor().await.unwrap();
    let mut seen = Vec::new();
    while seen.last().is_none_or(|e: &Arc<Event>| e.cursor < last) {
        seen.push(next_published(&mut watcher).await);
    }
    let mut stored = Vec::new();
    for t in ["016024", "016025"] {
        let filter = EventFilter {
            tenant_id: t.into(),
            ..Default::default()
        };
        stored.extend(stores[2].events_after(&filter, 0, 10_000).await.unwrap());
    }
    stored.sort_by_key(|e| e.cursor);
    assert_eq!(
        stored.iter().map(|e| e.cursor).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "cursors have no gaps"
    );
    assert_eq!(seen.len(), stored.len(), "every event once");
    for (published, expected) in seen.iter().zip(&stored) {
        assert_eq!(**published, *expected, "in cursor order, as stored");
    }
    // A practice's events follow its sequence in the cursor order.
    let mut next: std::collections::HashMap<&str, i64> = Default::default();
    for e in &stored {
        let n = next.entry(e.practice_id.as_str()).or_insert(1);
        assert_eq!(e.sequence, *n, "{e:?}");
        *n += 1;
    }
    let report = stores[0].verify_audit(None).await.unwrap();
    assert_eq!(report.differences, Vec::new());
    let (checked, breaks) = (report.records, report.breaks);
    assert!(breaks.is_empty(), "{breaks:?}");
    assert_eq!(checked, stored.len() as u64 + 3 * 15);
}

/// Rows committed by an instance that stopped before sequencing them are
/// sequenced by another instance's periodic run, and reach its watchers.
#[tokio::test]
async fn rows_an_instance_left_unsequenced_are_sequenced_by_another() {
    let schema = Schema::new().await;
    let opts = PgOptions {
        search_path: Some(schema.name.clone()),
        ..Default::default()
    };
    let stopped = PgStore::open_with(&test_url(), &opts, None, None, false)
        .await
        .unwrap();
    stopped
        .insert_practice(new_practice("p1", "k1"), false)
        .await
        .unwrap();
    stopped
        .record_audit(AuditEntry {
            tenant_id: Some("016024".into()),
            actor: "intruder".into(),
            action: "call_denied".into(),
            practice_id: None,
            detail: serde_json::json!({}),
        })
        .await
        .unwrap();
    // Not linked yet: the practice is not compared with records that are
    // not in its chain yet (its row already says what they will).
    let before = stopped.verify_audit(None).await.unwrap();
    assert!(before.is_intact(), "{before:?}");
    assert_eq!(
        (before.records, before.practices, before.not_compared),
        (0, 0, 1)
    );
    let bus = EventBus::new();
    let mut live = bus.subscribe();
    // No commit of its own wakes this one: only its periodic run.
    let other = schema.store(Some(bus)).await;
    let first = next_published(&mut live).await;
    let second = next_published(&mut live).await;
    assert_eq!((first.cursor, second.cursor), (1, 2));
    assert_eq!((first.sequence, second.sequence), (1, 2));
    assert_eq!(first.practice_id, "p1");
    assert_eq!(other.last_cursor().await.unwrap(), 2);
    let report = other.verify_audit(None).await.unwrap();
    assert_eq!(report.differences, Vec::new());
    let (checked, breaks) = (report.records, report.breaks);
    assert!(breaks.is_empty(), "{breaks:?}");
    assert_eq!(checked, 3, "two events and the refused call");
    assert_eq!((report.practices, report.not_compared), (1, 0));
}

/// Work queued on one instance wakes the adapter's worker on another.
#[tokio::test]
async fn work_queued_on_one_instance_wakes_the_workers_of_another() {
    let schema = Schema::new().await;
    let a = schema.store(None).await;
    let b = schema.store(Some(EventBus::new())).await;
    let (woken, mut wakes) = tokio::sync::mpsc::unbounded_channel();
    b.on_work_queued(Box::new(move |adapter| {
        let _ = woken.send(adapter.to_string());
    }));
    // A notification sent before `b` listens is not heard (its workers'
    // poll finds that work): a practice is queued again until one is
    // heard, up to a deadline.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut n = 0;
    let adapter = loop {
        n += 1;
        a.insert_practice(new_practice(&format!("p{n}"), &format!("k{n}")), false)
            .await
            .unwrap();
        let wait = std::time::Duration::from_secs(1);
        if let Ok(woken) = tokio::time::timeout(wait, wakes.recv()).await {
            break woken.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not woken within a minute"
        );
    };
    assert_eq!(adapter, "tributi");
}

/// How long an event committed on one instance takes to reach another
/// instance's bus: p50 and p99 over 1,000 events, one at a time. A
/// measurement, not a test (docs/performance.md):
/// `cargo test --release -p raccordo-hub --lib cross_instance_delivery_latency -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn cross_instance_delivery_latency() {
    let schema = Schema::new().await;
    let a = schema.store(None).await;
    let bus = EventBus::new();
    let mut live = bus.subscribe();
    let _b = schema.store(Some(bus)).await;
    // From the write's start (its commit is within) and from its return
    // (its events sequenced): the commit-to-bus time lies between the two.
    let (mut from_start, mut from_return) = (Vec::new(), Vec::new());
    for i in 0..1000 {
        let id = format!("p-{i:04}");
        let started = std::time::Instant::now();
        a.insert_practice(new_practice(&id, &id), false)
            .await
            .unwrap();
        let returned = std::time::Instant::now();
        // Both events of the submission.
        loop {
            let e = next_published(&mut live).await;
            if e.practice_id == id && e.sequence == 2 {
                break;
            }
        }
        from_start.push(started.elapsed());
        from_return.push(returned.elapsed());
    }
    for (what, mut took) in [
        ("write's start", from_start),
        ("write's return", from_return),
    ] {
        took.sort();
        let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
        println!(
            "from A's {what} to B's bus, 1000 submissions: p50 {:?}, p99 {:?}, max {:?}",
            at(0.5),
            at(0.99),
            took.last().unwrap()
        );
    }
}

/// Server errors keep their class: a statement cancelled by the timeout is
/// worth retrying.
#[tokio::test]
async fn a_statement_timeout_is_unavailable() {
    let schema = Schema::new().await;
    let opts = PgOptions {
        statement_timeout: std::time::Duration::from_millis(50),
        search_path: Some(schema.name.clone()),
        ..Default::default()
    };
    let store = PgStore::open(&test_url(), &opts, None, None).await.unwrap();
    let client = pool::connection(&store.inner.pool).await.unwrap();
    let e = pool::from_pg(client.execute("SELECT pg_sleep(1)", &[]).await.unwrap_err());
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(e.is_transient());
    let unreachable = PgStore::open(
        "postgres://postgres@127.0.0.1:1/raccordo_test",
        &PgOptions::default(),
        None,
        None,
    )
    .await;
    assert!(
        matches!(unreachable, Err(StoreError::Unavailable(_))),
        "{unreachable:?}"
    );
}

/// Instances starting together migrate once; the others wait and find
/// the schema current.
#[tokio::test]
async fn instances_starting_together_migrate_once() {
    let schema = Schema::new().await;
    let stores = futures::future::join_all((0..4).map(|_| schema.store(None))).await;
    let client = pool::connection(&stores[0].inner.pool).await.unwrap();
    let applied: i64 = client
        .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(applied, migrations::MIGRATIONS.len() as i64);
}

/// `tls = "require"` encrypts the connection (the local server has TLS on,
/// as Debian's packaging sets it up); `verify-full` refuses a certificate
/// that does not name the host it connects to.
#[tokio::test]
async fn tls_require_encrypts_and_verify_full_checks_the_name() {
    let schema = Schema::new().await;
    let opts = PgOptions {
        tls: crate::config::PgTlsMode::Require,
        search_path: Some(schema.name.clone()),
        ..Default::default()
    };
    let store = PgStore::open(&test_url(), &opts, None, None).await.unwrap();
    let client = pool::connection(&store.inner.pool).await.unwrap();
    let encrypted: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted);
    store
        .insert_practice(new_practice("p1", "k1"), false)
        .await
        .unwrap();
    // The feed listens over TLS too, and hears the other store's commits.
    let bus = EventBus::new();
    let mut live = bus.subscribe();
    let _listening = PgStore::open(&test_url(), &opts, None, Some(bus))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let listeners: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
                 WHERE a.query LIKE 'LISTEN raccordo_events%' AND s.ssl",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if listeners > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no encrypted listener"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    store
        .insert_practice(new_practice("p2", "k2"), false)
        .await
        .unwrap();
    assert_eq!(next_published(&mut live).await.practice_id, "p2");

    let cert: String = client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    let opts = PgOptions {
        tls: crate::config::PgTlsMode::VerifyFull,
        // The server's own certificate as the CA: it names a host, not 127.0.0.1.
        ca_file: Some(cert.into()),
        ..Default::default()
    };
    let refused = PgStore::connect(&test_url(), &opts, None).await;
    assert!(refused.is_err(), "{refused:?}");
}

/// Every instance sweeps expired leases; two sweeping at once end each
/// lease once, so each delivery gets one OUTCOME_UNKNOWN, not two.
#[tokio::test]
async fn concurrent_sweeps_end_each_lease_once() {
    let schema = Schema::new().await;
    let (a, b) = (schema.store(None).await, schema.store(None).await);
    for i in 0..20 {
        let id = format!("p-{i:02}");
        a.insert_practice(new_practice(&id, &id), false)
            .await
            .unwrap();
    }
    let short = Lease {
        owner: "hub-gone".into(),
        duration: std::time::Duration::from_millis(1),
    };
    let claimed = a
        .claim_work("tributi", &short, Utc::now(), 20, 100)
        .await
        .unwrap();
    assert_eq!(claimed.jobs.len(), 20);
    let later = Utc::now() + chrono::Duration::seconds(1);
    let (x, y) = tokio::join!(a.expire_leases(later), b.expire_leases(later));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.due_again + y.due_again, 20, "{x:?} {y:?}");
    for i in 0..20 {
        let events = a
            .practice_events("016024", &format!("p-{i:02}"), 0)
            .await
            .unwrap();
        let unknown = events
            .iter()
            .filter(|e| {
                e.to_delivery == Some(raccordo_domain::status::DeliveryStatus::OutcomeUnknown)
            })
            .count();
        assert_eq!(unknown, 1, "{events:?}");
    }
    let report = a.verify_audit(None).await.unwrap();
    assert_eq!(report.differences, Vec::new());
    let (_, breaks) = (report.records, report.breaks);
    assert!(breaks.is_empty(), "{breaks:?}");
}

/// Three instances claim one adapter's queue at once, by workers and by
/// synchronous submissions, with `max_concurrency` 2: never more than two
/// attempts are in flight in the whole cluster, and every job is delivered.
#[tokio::test]
async fn three_instances_never_exceed_the_adapters_limit() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const MAX: u32 = 2;
    let schema = Schema::new().await;
    let stores = [
        schema.store(None).await,
        schema.store(None).await,
        schema.store(None).await,
    ];
    for i in 0..30 {
        let id = format!("p-{i:02}");
        stores[0]
            .insert_practice(new_practice(&id, &id), false)
            .await
            .unwrap();
    }
    // Attempts held by the tasks below: raised only after a claim committed
    // and lowered before its result is recorded, so it is never above what
    // the store itself counts in flight.
    let held = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, store) in stores.iter().enumerate() {
        let (store, held, most) = (store.clone(), Arc::clone(&held), Arc::clone(&most));
        tasks.spawn(async move {
            let owner = format!("hub-{n}");
            let mut delivered = 0;
            let mut sync = 0;
            loop {
                // The first rounds also make a synchronous submission, which
                // tries to claim its own delivery with the insert.
                let mut jobs = Vec::new();
                if sync < 5 {
                    sync += 1;
                    let id = format!("s-{n}-{sync}");
                    let (_, job) = store
                        .insert_practice_claimed(new_practice(&id, &id), &lease(&owner), MAX)
                        .await
                        .unwrap();
                    jobs.extend(job);
                }
                let work = store
                    .claim_work("tributi", &lease(&owner), Utc::now(), MAX, MAX)
                    .await
                    .unwrap();
                jobs.extend(work.jobs);
                if jobs.is_empty() {
                    if !work.saturated && sync == 5 {
                        break; // nothing due, and no more submissions
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                let now_held = held.fetch_add(jobs.len(), Ordering::SeqCst) + jobs.len();
                most.fetch_max(now_held, Ordering::SeqCst);
                let snapshot = store.ops_snapshot(Utc::now()).await.unwrap();
                let in_flight = snapshot.adapters.first().map_or(0, |a| a.in_flight);
                assert!(in_flight <= i64::from(MAX), "{in_flight} in flight");
                for job in jobs {
                    held.fetch_sub(1, Ordering::SeqCst);
                    let done = AttemptResult::Delivered(VendorReply::default());
                    store.finish_attempt(&job, done, false).await.unwrap();
                    delivered += 1;
                }
            }
            delivered
        });
    }
    let delivered: usize = tasks.join_all().await.into_iter().sum();
    let most = most.load(Ordering::SeqCst);
    assert!(most <= MAX as usize, "{most} attempts held at once");
    let snapshot = stores[0].ops_snapshot(Utc::now()).await.unwrap();
    assert!(
        snapshot.adapters.is_empty(),
        "nothing due or in flight: {snapshot:?}"
    );
    assert_eq!(delivered, 30 + 15, "every job delivered once");
}

/// Synchronous submissions racing for the last free slot: each estimates
/// it free before its writes and checks at its end, under the adapter's
/// lock. Forty at once on three instances with `max_concurrency` 1: every
/// practice is stored, exactly one delivery is in flight, the rest are due.
#[tokio::test]
async fn racing_synchronous_submissions_take_one_slot_and_queue_the_rest() {
    let schema = Schema::new().await;
    let stores = [
        schema.store(None).await,
        schema.store(None).await,
        schema.store(None).await,
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = stores[i % 3].clone();
        tasks.spawn(async move {
            let id = format!("s-{i:02}");
            let (outcome, job) = store
                .insert_practice_claimed(
                    new_practice(&id, &id),
                    &lease(&format!("hub-{}", i % 3)),
                    1,
                )
                .await
                .unwrap();
            assert!(matches!(outcome, InsertOutcome::Created));
            job.is_some()
        });
    }
    let claimed = tasks.join_all().await.into_iter().filter(|c| *c).count();
    assert_eq!(claimed, 1, "exactly one submission takes the only slot");
    let snapshot = stores[0].ops_snapshot(Utc::now()).await.unwrap();
    let adapter = &snapshot.adapters[0];
    assert_eq!(
        (adapter.in_flight, adapter.due + adapter.scheduled),
        (1, 39)
    );
}

/// Three instances want one singleton at once: one gets it. When it stops
/// renewing, its lease runs out and exactly one of the others takes over.
#[tokio::test]
async fn a_singleton_moves_when_its_holder_stops() {
    let schema = Schema::new().await;
    let stores = [
        schema.store(None).await,
        schema.store(None).await,
        schema.store(None).await,
    ];
    let t = Utc::now();
    let at = move |s: i64| t + chrono::Duration::seconds(s);
    let round = |from: i64, owners: Vec<usize>| {
        let stores = stores.clone();
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for n in owners {
                let store = stores[n].clone();
                tasks.spawn(async move {
                    let held = store
                        .hold_singleton(
                            "file-scan:anagrafe",
                            &format!("hub-{n}"),
                            at(from),
                            at(from + 30),
                        )
                        .await
                        .unwrap();
                    held.then_some(n)
                });
            }
            tasks
                .join_all()
                .await
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
        }
    };
    let first = round(0, vec![0, 1, 2]).await;
    let [holder] = <[usize; 1]>::try_from(first.clone()).expect("one holder");
    // The holder renews; the others keep asking: nothing moves.
    assert_eq!(round(20, vec![0, 1, 2]).await, [holder]);
    // The holder stops (no more renewals); before its lease runs out
    // nobody takes it, after it one of the others does.
    let others: Vec<usize> = (0..3).filter(|n| *n != holder).collect();
    assert!(round(45, others.clone()).await.is_empty());
    let next = round(51, others).await;
    assert_eq!(next.len(), 1, "{next:?}");
    assert_ne!(next[0], holder);
    // The three heartbeats are counted by every instance.
    for (n, store) in stores.iter().enumerate() {
        store
            .heartbeat(&format!("hub-{n}"), Utc::now(), at(600))
            .await
            .unwrap();
    }
    let live = stores[0]
        .heartbeat("hub-0", Utc::now(), at(600))
        .await
        .unwrap();
    assert_eq!(live, 3);
}

/// A table that grew from nothing is analyzed once its changes reach the
/// threshold, so plans made while it was empty are made again; one that
/// has not changed since is left alone.
#[tokio::test]
async fn tables_that_grew_from_nothing_are_analyzed() {
    let schema = Schema::new().await;
    let store = schema.store(None).await;
    // Autovacuum would analyze the table too, at a moment of its own
    // choosing: off for this table, what is tested is the store's task.
    tx::read(
        &store.inner.pool,
        "ALTER TABLE practices SET (autovacuum_enabled = false)",
        &[],
    )
    .await
    .unwrap();
    for i in 0..600 {
        let id = format!("p-{i:03}");
        store
            .insert_practice(new_practice(&id, &id), false)
            .await
            .unwrap();
    }
    // The server publishes a session's table counters at most once a
    // second: ask until the practices were analyzed (by this round or by
    // the store's own task, which runs the same rounds), within a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let counted = || async {
        let rows = tx::read(
            &store.inner.pool,
            "SELECT reltuples::BIGINT FROM pg_class WHERE oid = 'practices'::regclass",
            &[],
        )
        .await
        .unwrap();
        rows[0].get::<_, i64>(0)
    };
    loop {
        let analyzed = statistics::analyze_grown(&store.inner.pool).await.unwrap();
        assert!(!analyzed.contains(&"audit_log"), "{analyzed:?}");
        // The store's task may have analyzed it while the inserts went on
        // (at 500 changes or more): counted then, not again before it doubles.
        if counted().await >= 500 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "practices never analyzed (last round: {analyzed:?})"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Analyzed just now, unchanged since: not again.
    let again = statistics::analyze_grown(&store.inner.pool).await.unwrap();
    assert!(!again.contains(&"practices"), "{again:?}");
}
