//! The SQLite store's own mechanics: group commit, rollbacks, publishing,
//! checkpoints, the audit chain on disk, query plans.

use super::*;
use crate::config::Mode;
use raccordo_adapters::model::AdminStatus;
use rusqlite::params_from_iter;

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("t.db"), Synchronous::Normal, 2)
        .await
        .unwrap();
    store
        .write(|c| Ok(c.execute_batch("CREATE TABLE scratch (x INTEGER NOT NULL)")?))
        .await
        .unwrap();
    (dir, store)
}

pub(super) fn new_practice(id: &str, key: &str) -> NewPractice {
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
        attachments: Vec::new(),
        mode: Mode::Deferred,
        received_at: Utc::now(),
        legal_term_days: 30,
        adapter: "tributi".into(),
        max_attempts: 3,
        traceparent: None,
    }
}

/// Each read runs in a read transaction of its own; one that fails must
/// still end it, or its pooled connection would keep answering from
/// the old snapshot.
#[tokio::test]
async fn a_failed_read_leaves_no_snapshot_behind() {
    let (_dir, store) = store().await;
    let missing = store.get_practice("016024", "p1", false).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    store
        .insert_practice(new_practice("p1", "k1"), false)
        .await
        .unwrap();
    let found = store.get_practice("016024", "p1", false).await.unwrap();
    assert_eq!(found.id, "p1");
}

/// A store publishing its events, and a subscriber to them.
async fn observed_store() -> (
    tempfile::TempDir,
    SqliteStore,
    tokio::sync::broadcast::Receiver<Arc<Event>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let bus = EventBus::new();
    let live = bus.subscribe();
    let store = SqliteStore::open_observed(
        &dir.path().join("t.db"),
        Synchronous::Normal,
        2,
        None,
        Some(bus.clone()),
    )
    .await
    .unwrap();
    (dir, store, live)
}

/// Every event of the tenant's store was published once, as stored, in
/// cursor order; returns how many.
async fn assert_published_as_stored(
    store: &SqliteStore,
    live: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
) -> usize {
    let filter = EventFilter {
        tenant_id: "016024".into(),
        ..Default::default()
    };
    let stored = store.events_after(&filter, 0, 1000).await.unwrap();
    for expected in &stored {
        let published = live.try_recv().expect("every stored event is published");
        assert_eq!(*published, *expected, "published once, as stored");
    }
    assert!(live.try_recv().is_err(), "nothing else is published");
    stored.len()
}

/// Audit records of tenant 016024, oldest first.
fn audit_records(path: &Path) -> Vec<AuditRecord> {
    SqliteStore::export_audit(
        path,
        "016024",
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
    )
    .unwrap()
}

#[tokio::test]
async fn records_of_events_stored_before_the_chain_moved_to_the_events_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    {
        // As the schema before events carried their audit links left it:
        // the event's record is a copy in audit_log.
        let mut conn = Connection::open(&path).unwrap();
        schema::migrate_up_to(&mut conn, 5).unwrap();
        let detail = audit::EventAudit {
            sequence: 1,
            source: "APPLICANT",
            from_status: None,
            to_status: Some("SUBMITTED"),
            from_delivery: None,
            to_delivery: None,
            reason: None,
            vendor_code: None,
            format: None,
            service_code: None,
            applicant: None,
            outcome_data: None,
        };
        conn.execute(
            "INSERT INTO practices (id, tenant_id, service_code, applicant_id, idempotency_key,
                content_hash, content, status, mode, received_at, legal_term_days, last_sequence)
             VALUES ('p-old', '016024', 'TARI', 'RSSMRA45D25F205N', 'k-old', 'h', '{}',
                'SUBMITTED', 'deferred', 0, 30, 1)",
            [],
        )
        .unwrap();
        audit::append(
            &conn,
            "016024",
            "applicant",
            "status",
            Some("p-old"),
            &detail,
            Utc::now(),
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path, Synchronous::Normal, 2)
        .await
        .unwrap();
    store
        .insert_practice(new_practice("p-new", "k-new"), false)
        .await
        .unwrap();

    let report = SqliteStore::verify_audit(&path, None).unwrap();
    assert_eq!(report.differences, Vec::new());
    let (checked, breaks) = (report.records, report.breaks);
    assert_eq!(breaks, Vec::new());
    assert_eq!(
        checked, 3,
        "the old record and the new practice's two events"
    );
    let records = audit_records(&path);
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(records[0].practice_id.as_deref(), Some("p-old"));
    assert_eq!(records[1].practice_id.as_deref(), Some("p-new"));
    assert_eq!(records[1].prev_hash, records[0].hash);
    assert_eq!(records[1].detail["to_status"], "SUBMITTED");
    // The old record is format 1, the new ones in the current format; the
    // state of both practices is compared with what their records say.
    assert_eq!(records[0].detail.get("format"), None);
    assert_eq!(
        records[1].detail["format"],
        raccordo_domain::audit::EVENT_FORMAT
    );
    assert_eq!(
        records[1].detail["applicant"],
        raccordo_domain::audit::applicant_digest("p-new", "RSSMRA45D25F205N")
    );
    assert_eq!(report.practices, 2);
    let in_log: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(in_log, 1, "new events are not copied into audit_log");
}

#[tokio::test]
async fn an_edited_or_removed_event_breaks_its_tenants_chain() {
    let (dir, store) = store().await;
    let path = dir.path().join("t.db");
    store
        .insert_practice(new_practice("p-1", "k-1"), false)
        .await
        .unwrap();
    store
        .insert_practice(new_practice("p-2", "k-2"), false)
        .await
        .unwrap();
    let report = SqliteStore::verify_audit(&path, None).unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.records, report.practices), (4, 2));

    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE events SET to_delivery = 'ACKNOWLEDGED' WHERE audit_seq = 4",
        [],
    )
    .unwrap();
    let report = SqliteStore::verify_audit(&path, Some("016024")).unwrap();
    assert_eq!(report.differences, Vec::new());
    let (_, breaks) = (report.records, report.breaks);
    assert_eq!(breaks.len(), 1);
    assert_eq!(breaks[0].seq, 4);
    assert!(breaks[0].reason.contains("edited"), "{breaks:?}");

    conn.execute("DELETE FROM events WHERE audit_seq = 2", [])
        .unwrap();
    let report = SqliteStore::verify_audit(&path, Some("016024")).unwrap();
    assert_eq!(report.differences, Vec::new());
    let (_, breaks) = (report.records, report.breaks);
    assert_eq!(breaks.len(), 1);
    assert_eq!(breaks[0].seq, 3);
    assert_eq!(breaks[0].reason, "record 2 is missing (found 3 next)");
}

#[tokio::test]
async fn every_listing_walks_an_index_newest_first_without_sorting() {
    let (dir, _store) = store().await;
    let conn = open_read_only(&dir.path().join("t.db")).unwrap();
    let tenant = PracticeFilter {
        tenant_id: "016024".into(),
        ..Default::default()
    };
    let filters = [
        (tenant.clone(), "practices_by_tenant"),
        (
            PracticeFilter {
                applicant_id: Some("RSSMRA45D25F205N".into()),
                ..tenant.clone()
            },
            "practices_by_applicant",
        ),
        (
            PracticeFilter {
                service_code: Some("TARI".into()),
                ..tenant.clone()
            },
            "practices_by_service",
        ),
        (
            PracticeFilter {
                status: Some(AdminStatus::Submitted),
                ..tenant.clone()
            },
            "practices_by_status",
        ),
    ];
    for (filter, index) in filters {
        for after in [None, Some("0190a1b2-0000-7000-8000-000000000000")] {
            let (sql, values) = list_query(&filter, after, 100);
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params_from_iter(values.iter()), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains(&format!("SEARCH p USING INDEX {index}")),
                "{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }
}

#[tokio::test]
async fn committed_events_are_published_in_order_with_their_stored_cursors() {
    let (dir, store, mut live) = observed_store().await;
    // Audit records share the transaction; they must not shift cursors.
    store
        .record_audit(AuditEntry {
            tenant_id: Some("016024".into()),
            actor: "intruder".into(),
            action: "call_denied".into(),
            practice_id: None,
            detail: serde_json::json!({}),
        })
        .await
        .unwrap();
    // Concurrent inserts share transactions; a failing one (a duplicate
    // id) is rolled back with its events, which must not be published.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        let id = if i == 7 {
            "p-0".to_string()
        } else {
            format!("p-{i}")
        };
        tasks.spawn(async move {
            store
                .insert_practice(new_practice(&id, &format!("k-{i}")), false)
                .await
        });
    }
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        failed += r.unwrap().is_err() as usize;
    }
    assert_eq!(failed, 1, "the duplicate id fails alone");
    assert_eq!(assert_published_as_stored(&store, &mut live).await, 19 * 2);
    // The audit chain stays whole across shared transactions, the
    // rolled-back command included, and its head matches.
    let report = SqliteStore::verify_audit(&dir.path().join("t.db"), None).unwrap();
    assert_eq!(report.differences, Vec::new());
    let (checked, breaks) = (report.records, report.breaks);
    assert_eq!(checked, 1 + 19 * 2);
    assert!(breaks.is_empty(), "{breaks:?}");
}

/// A command that fails after writing rolls its whole batch back, and
/// the others run again: their events and audit records must be
/// stored, and published, once.
#[tokio::test]
async fn commands_run_again_after_a_rollback_publish_and_audit_once() {
    let (dir, store, mut live) = observed_store().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                store
                    .insert_practice(new_practice(&format!("p-{i}"), &format!("k-{i}")), false)
                    .await
                    .map(|_| ())
            } else {
                store
                    .write(move |c| {
                        c.execute(
                            "UPDATE practices SET status = 'REJECTED' WHERE id = ?1",
                            [format!("p-{}", i - 1)],
                        )?;
                        c.execute("INSERT INTO practices (id) VALUES (NULL)", [])?;
                        Ok(())
                    })
                    .await
            }
        });
    }
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        failed += r.unwrap().is_err() as usize;
    }
    assert_eq!(failed, 20, "every command that wrote and then failed");
    let rejected: i64 = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM practices WHERE status = 'REJECTED'",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(rejected, 0, "the failed commands' first writes are undone");
    assert_eq!(assert_published_as_stored(&store, &mut live).await, 20 * 2);
    let report = SqliteStore::verify_audit(&dir.path().join("t.db"), None).unwrap();
    assert_eq!(report.differences, Vec::new());
    let (checked, breaks) = (report.records, report.breaks);
    assert_eq!(checked, 20 * 2);
    assert!(breaks.is_empty(), "{breaks:?}");
}

#[tokio::test]
async fn the_log_is_checkpointed_into_the_database_by_its_own_thread() {
    let (dir, store) = store().await;
    let db = dir.path().join("t.db");
    let before = std::fs::metadata(&db).unwrap().len();
    // Well over the 1,000-frame threshold of WAL pages.
    for batch in 0..20 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let store = store.clone();
            let n = batch * 100 + i;
            tasks.spawn(async move {
                store
                    .insert_practice(new_practice(&format!("p-{n}"), &format!("k-{n}")), false)
                    .await
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&db).unwrap().len() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file never received the logged pages"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failing_command_is_rolled_back_without_failing_its_batch() {
    let (_dir, store) = store().await;
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .write(move |c| {
                    c.execute("INSERT INTO scratch (x) VALUES (?1)", [i])?;
                    if i % 3 == 0 {
                        // Wrote, then failed: its write must vanish.
                        return Err(StoreError::Conflict(format!("refused {i}")));
                    }
                    Ok(i)
                })
                .await
        }));
    }
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, i as i64);
                ok += 1;
            }
            Err(StoreError::Conflict(m)) => assert_eq!(m, format!("refused {i}")),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    let (rows, refused): (i64, i64) = store
        .read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*), COUNT(CASE WHEN x % 3 = 0 THEN 1 END) FROM scratch",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(rows, ok);
    assert_eq!(refused, 0);
}

/// On a full disk or an I/O error SQLite rolls the whole transaction
/// back by itself; the other commands of the batch must run again in a
/// new one, not commit one statement at a time.
#[tokio::test]
async fn a_transaction_sqlite_rolled_back_is_run_again() {
    let (_dir, store) = store().await;
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .write(move |c| {
                    if i == 20 {
                        // What SQLite does on SQLITE_FULL.
                        c.execute_batch("ROLLBACK")?;
                        return Err(StoreError::Full("disk full".into()));
                    }
                    c.execute("INSERT INTO scratch (x) VALUES (?1)", [i])?;
                    Ok(())
                })
                .await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let result = t.await.unwrap();
        assert_eq!(result.is_err(), i == 20, "command {i}: {result:?}");
    }
    let rows: i64 = store
        .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM scratch", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(rows, 39);
}

#[tokio::test]
async fn a_panicking_command_does_not_stop_the_writer() {
    let (_dir, store) = store().await;
    let err = store
        .write(|_c| -> Result<(), StoreError> { panic!("bug in an operation") })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    store
        .write(|c| Ok(c.execute("INSERT INTO scratch (x) VALUES (1)", [])?))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_refuses_new_work_at_once() {
    let (_dir, store) = store().await;
    let store = store.with_write_queue(2);
    // A command that holds the writer until the test lets it go.
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let (entered, mut writer_busy) = tokio::sync::mpsc::unbounded_channel();
    let blocker = tokio::spawn({
        let (store, gate) = (store.clone(), Arc::clone(&gate));
        async move {
            store
                .write(move |_c| {
                    let _ = entered.send(());
                    let (open, cv) = &*gate;
                    let guard = open.lock().unwrap();
                    drop(cv.wait_while(guard, |open| !*open).unwrap());
                    Ok(())
                })
                .await
        }
    });
    let deadline = std::time::Duration::from_secs(10);
    tokio::time::timeout(deadline, writer_busy.recv())
        .await
        .expect("the writer took the blocking command");
    // One more fills the queue (the running command holds a slot).
    let queued = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .write(|c| Ok(c.execute("INSERT INTO scratch (x) VALUES (1)", [])?))
                .await
        }
    });
    let filled = tokio::time::timeout(deadline, async {
        while store.queued.load(Ordering::Relaxed) < 2 {
            tokio::task::yield_now().await;
        }
    });
    filled.await.expect("the second write was queued");

    let refused = store.write(|c| Ok(c.execute("INSERT INTO scratch (x) VALUES (2)", [])?));
    let refused = tokio::time::timeout(std::time::Duration::from_secs(1), refused)
        .await
        .expect("refused at once, not queued")
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::Unavailable(m) if m.contains("write queue is full")),
        "{refused:?}"
    );
    // Work the hub owes still gets in.
    let owed = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .write_owed(|c| Ok(c.execute("INSERT INTO scratch (x) VALUES (3)", [])?))
                .await
        }
    });

    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    blocker.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    owed.await.unwrap().unwrap();
    assert_eq!(
        store.queued.load(Ordering::Relaxed),
        0,
        "every slot given back"
    );
    store
        .write(|c| Ok(c.execute("INSERT INTO scratch (x) VALUES (4)", [])?))
        .await
        .expect("room again once the writer caught up");
    let rows: Vec<i64> = store
        .read(|c| {
            let mut s = c.prepare("SELECT x FROM scratch ORDER BY x")?;
            let rows = s.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    assert_eq!(rows, vec![1, 3, 4], "the refused write stored nothing");
}
