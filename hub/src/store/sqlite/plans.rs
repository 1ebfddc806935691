//! The query plan of every statement the store runs on a hot or background
//! path: none may scan a table.
//!
//! The statements are not listed by hand. The store's own connections on a
//! database named [`CENSUS_FILE`] report each statement they run (SQLite's
//! statement trace); the test drives every path through the store's public
//! interface and the purge, then asks SQLite for the plan of each statement
//! it saw. A statement added to one of those paths is checked without
//! anyone remembering to list it, and one built at run time (a listing's
//! filters) is checked in the shapes the paths build.

use rusqlite::Connection;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// File name of the database whose connections report their statements.
pub(super) const CENSUS_FILE: &str = "query-plan-census.db";

/// Every statement run on a census database, as written in the code.
static CENSUS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// `conn`, reporting its statements if it is a census database's.
pub(super) fn watched(mut conn: Connection) -> Connection {
    if !conn.path().is_some_and(|p| p.ends_with(CENSUS_FILE)) {
        return conn;
    }
    conn.trace_v2(
        TraceEventCodes::SQLITE_TRACE_STMT,
        Some(|event: TraceEvent<'_>| {
            if let TraceEvent::Stmt(stmt, text) = event {
                // A trigger's sub-program reports itself as a comment.
                if !text.starts_with("--") {
                    CENSUS.lock().unwrap().insert(stmt.sql().into_owned());
                }
            }
        }),
    )
    .expect("statement trace");
    conn
}

/// Statements whose plan may scan (a fragment of the statement, white space
/// made single spaces), each with the one scan allowed (a plan line) and,
/// in a comment, why that is right.
const INTENDED_SCANS: &[(&str, &str)] = &[
    // Dead letters, newest first, any tenant or one: a walk of the partial
    // index `jobs_dead` (dead jobs only) that stops at the page's limit.
    (
        "WHERE j.state = 'dead' AND (?1 IS NULL OR j.tenant_id = ?1)",
        "SCAN j USING INDEX jobs_dead",
    ),
    // Operators' counts (`/metrics`, `raccordo status`), on a reader, per
    // scrape. The outbox walks the compact index of every job; the
    // practice counts read every practice's row: at a million practices
    // that is the whole table per scrape, and the cure is counts kept by
    // the writer, not an index.
    (
        "FROM jobs WHERE state IN ('due', 'in_flight', 'dead')",
        "SCAN jobs USING COVERING INDEX jobs_due",
    ),
    (
        "FROM practices GROUP BY tenant_id, service_code, status",
        "SCAN practices USING INDEX practices_by_service",
    ),
    (
        "WHERE concluded_at IS NULL AND legal_deadline IS NOT NULL",
        "SCAN practices USING INDEX practices_by_service",
    ),
    // `raccordo status`'s anomalies per adapter: a walk of the partial
    // index `events_anomalies`, which holds the (rare) anomaly events only.
    (
        "FROM events WHERE kind = 'anomaly' GROUP BY actor",
        "SCAN events USING COVERING INDEX events_anomalies",
    ),
];

#[cfg(test)]
mod tests {
    use super::super::tests::new_practice;
    use super::super::{SqliteStore, purge};
    use super::*;
    use crate::config::{Mode, Synchronous};
    use crate::domain::practice::{EventDraft, EventSource};
    use crate::domain::retry::RetryDecision;
    use crate::store::{AttemptResult, EventFilter, Lease, PracticeFilter, Store, Withdrawal};
    use chrono::Utc;
    use raccordo_adapters::VendorReply;
    use raccordo_adapters::adapter::{
        Correlation, DeliveryError, FailureClass, FollowUp, InboundResult,
    };
    use raccordo_adapters::model::{AdminStatus, ExternalRef};
    use std::time::Duration;

    /// Drives every path of the store once, so that each statement it runs
    /// is seen.
    async fn drive_every_path(store: &SqliteStore, path: &std::path::Path) {
        let tenant = "016024";
        let now = Utc::now();
        let lease = Lease {
            owner: "hub-a".into(),
            duration: Duration::from_secs(60),
        };
        // Submission, deferred (read back) and synchronous (claimed).
        store
            .insert_practice(new_practice("p-1", "k-1"), true)
            .await
            .unwrap();
        let mut sync = new_practice("p-2", "k-2");
        sync.mode = Mode::Sync;
        let (_, claimed) = store
            .insert_practice_claimed(sync, &lease, 100)
            .await
            .unwrap();
        let job = claimed.expect("the first delivery, claimed");
        store.delivery_payload(&job).await.unwrap();
        // A result that arrives while the attempt is in flight waits for it.
        store
            .apply_inbound(&InboundResult {
                adapter: "tributi".into(),
                tenant_id: None,
                correlation: Correlation::OperationId(job.operation_id.clone()),
                reply: VendorReply {
                    status: Some(AdminStatus::InProgress),
                    ..Default::default()
                },
                receipt: Some("early-1".into()),
            })
            .await
            .unwrap();
        // Attempt recording: accepted with the vendor's reference.
        let accepted = VendorReply {
            status: Some(AdminStatus::Registered),
            external_refs: vec![ExternalRef {
                kind: "protocol".into(),
                value: "P-2".into(),
                system: String::new(),
                issued_at: None,
            }],
            ..Default::default()
        };
        store
            .finish_attempt(&job, AttemptResult::Delivered(accepted.clone()), true)
            .await
            .unwrap();
        // Claims; a failed attempt, retried, then dead-lettered and replayed.
        store.next_due_at("tributi").await.unwrap();
        let work = store
            .claim_work("tributi", &lease, now, 10, 100)
            .await
            .unwrap();
        let job = work.jobs.first().expect("p-1's delivery is due").clone();
        let failure = DeliveryError::new(FailureClass::Transient, "connection refused");
        store
            .finish_attempt(
                &job,
                AttemptResult::Failed(failure.clone(), RetryDecision::RetryAfter(Duration::ZERO)),
                false,
            )
            .await
            .unwrap();
        let work = store
            .claim_work("tributi", &lease, Utc::now(), 10, 100)
            .await
            .unwrap();
        let job = work.jobs.first().expect("retried at once").clone();
        store
            .finish_attempt(
                &job,
                AttemptResult::Failed(failure, RetryDecision::DeadLetter),
                false,
            )
            .await
            .unwrap();
        store.dead_letters(Some(tenant), 10).await.unwrap();
        store.dead_letters(None, 10).await.unwrap();
        store.replay(&job.operation_id, "operator").await.unwrap();
        // A delivery whose result is polled, polled once more, then stopped
        // in flight and its lease run out.
        let work = store
            .claim_work("tributi", &lease, Utc::now(), 10, 100)
            .await
            .unwrap();
        let job = work.jobs.first().expect("replayed").clone();
        let pending = VendorReply {
            follow_up: Some(FollowUp {
                token: "https://vendor/status/1".into(),
                poll_after: Duration::ZERO,
                max_wait: Duration::from_secs(3600),
            }),
            ..Default::default()
        };
        store
            .finish_attempt(&job, AttemptResult::Delivered(pending), false)
            .await
            .unwrap();
        let work = store
            .claim_work("tributi", &lease, Utc::now(), 10, 100)
            .await
            .unwrap();
        let poll = work.polls.first().expect("the poll is due").clone();
        store
            .reschedule_poll(&poll, None, None, Utc::now(), None)
            .await
            .unwrap();
        store
            .insert_practice(new_practice("p-3", "k-3"), false)
            .await
            .unwrap();
        let work = store
            .claim_work("tributi", &lease, Utc::now(), 10, 100)
            .await
            .unwrap();
        // A result for p-3's delivery in flight, applied when its lease
        // runs out below.
        store
            .apply_inbound(&InboundResult {
                adapter: "tributi".into(),
                tenant_id: None,
                correlation: Correlation::PracticeId("p-3".into()),
                reply: VendorReply {
                    status: Some(AdminStatus::Registered),
                    ..Default::default()
                },
                receipt: Some("early-2".into()),
            })
            .await
            .unwrap();
        // Leases renewed, then run out (what start-up and the sweep do).
        let held: Vec<String> = work.jobs.iter().map(|j| j.operation_id.clone()).collect();
        store
            .renew_leases("hub-a", &held, Utc::now())
            .await
            .unwrap();
        store
            .expire_leases(Utc::now() + chrono::Duration::hours(1))
            .await
            .unwrap();
        // Inbound results, by each correlation, one with a receipt twice.
        let inbound = |correlation, receipt: Option<&str>| InboundResult {
            adapter: "tributi".into(),
            tenant_id: None,
            correlation,
            reply: VendorReply {
                status: Some(AdminStatus::InProgress),
                ..Default::default()
            },
            receipt: receipt.map(str::to_string),
        };
        for correlation in [
            Correlation::PracticeId("p-1".into()),
            Correlation::OperationId(job.operation_id.clone()),
        ] {
            store
                .apply_inbound(&inbound(correlation, None))
                .await
                .unwrap();
        }
        let by_ref = || Correlation::ExternalRef {
            kind: "protocol".into(),
            value: "P-2".into(),
        };
        store
            .apply_inbound(&inbound(by_ref(), Some("r-1")))
            .await
            .unwrap();
        store
            .apply_inbound(&inbound(by_ref(), Some("r-1")))
            .await
            .unwrap();
        // A result that concludes p-2, for the purge below.
        let concluded = InboundResult {
            reply: VendorReply {
                status: Some(AdminStatus::Approved),
                ..Default::default()
            },
            ..inbound(by_ref(), Some("r-2"))
        };
        store.apply_inbound(&concluded).await.unwrap();
        // Withdrawal, forwarded to the vendor.
        store
            .withdraw(Withdrawal {
                tenant_id: tenant.into(),
                practice_id: "p-3".into(),
                reason: Some("no longer needed".into()),
                draft_actor: EventDraft::status(
                    EventSource::Applicant,
                    "applicant",
                    AdminStatus::Submitted,
                    AdminStatus::Withdrawn,
                ),
                forward_to: Some(("tributi".into(), 3)),
                traceparent: None,
            })
            .await
            .unwrap();
        // Reads: one practice, listings by each filter and page, events.
        store.get_practice(tenant, "p-1", true).await.unwrap();
        store.get_practice(tenant, "p-1", false).await.unwrap();
        let all = PracticeFilter {
            tenant_id: tenant.into(),
            ..Default::default()
        };
        let filters = [
            all.clone(),
            PracticeFilter {
                applicant_id: Some("RSSMRA45D25F205N".into()),
                ..all.clone()
            },
            PracticeFilter {
                service_code: Some("TARI".into()),
                ..all.clone()
            },
            PracticeFilter {
                status: Some(AdminStatus::Submitted),
                ..all.clone()
            },
        ];
        for filter in &filters {
            store.list_practices(filter, None, 10).await.unwrap();
            store.list_practices(filter, Some("p-2"), 10).await.unwrap();
        }
        store.practice_events(tenant, "p-1", 0).await.unwrap();
        store.last_cursor().await.unwrap();
        let events = EventFilter {
            tenant_id: tenant.into(),
            applicant_id: None,
            service_code: None,
        };
        store.events_after(&events, 0, 100).await.unwrap();
        store
            .events_after(
                &EventFilter {
                    applicant_id: Some("RSSMRA45D25F205N".into()),
                    service_code: Some("TARI".into()),
                    ..events
                },
                0,
                100,
            )
            .await
            .unwrap();
        store.ping().await.unwrap();
        store.ops_snapshot(Utc::now()).await.unwrap();
        // The purge, counting and removing (p-2 approved, p-3 withdrawn).
        let later = Utc::now() + chrono::Duration::days(1);
        assert_eq!(
            SqliteStore::purge_concluded(path, tenant, later, true).unwrap(),
            2
        );
        assert_eq!(
            SqliteStore::purge_concluded(path, tenant, later, false).unwrap(),
            2
        );
    }

    /// `sql` with each run of white space made one space, as the
    /// fragments of [`INTENDED_SCANS`] are written.
    fn one_line(sql: &str) -> String {
        sql.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Whether one plan line reads a whole table (or a whole index of it).
    fn scans(detail: &str) -> bool {
        // A table-valued function (`json_each` over a bound list) is a scan
        // of the parameter, not of stored rows.
        detail.starts_with("SCAN ")
            && !detail.starts_with("SCAN CONSTANT ROW")
            && !detail.contains(" VIRTUAL TABLE ")
    }

    #[tokio::test]
    async fn every_statement_of_the_store_searches_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CENSUS_FILE);
        let store = SqliteStore::open(&path, Synchronous::Normal, 2)
            .await
            .unwrap();
        drive_every_path(&store, &path).await;
        let census = CENSUS.lock().unwrap().clone();
        // The census saw the paths (a trace that stopped reporting would
        // otherwise pass with nothing checked).
        for expected in [
            "INSERT INTO practices",
            "UPDATE jobs SET state = 'in_flight'",
            "FROM external_refs",
            "INSERT OR IGNORE INTO inbound_receipts",
            "lease_expires_at <=",
            "DELETE FROM inbound_receipts",
            "INSERT INTO early_results",
            "DELETE FROM early_results",
            purge::CANDIDATES_SQL,
        ] {
            assert!(
                census.iter().any(|s| s.contains(expected)),
                "no statement containing {expected:?} ran: {census:#?}"
            );
        }
        let conn = Connection::open(&path).unwrap();
        let mut failures = Vec::new();
        let mut checked = 0;
        for sql in &census {
            let head = sql.trim_start().to_ascii_uppercase();
            if !["SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "REPLACE"]
                .iter()
                .any(|k| head.starts_with(k))
            {
                continue; // BEGIN, COMMIT, PRAGMA, schema changes
            }
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap_or_else(|e| panic!("{e}: {sql}"));
            // Parameters left unbound: the plan does not depend on them
            // (the planner stability guarantee is on in the store).
            let plan: Vec<String> = stmt
                .raw_query()
                .mapped(|r| r.get::<_, String>(3))
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            checked += 1;
            let allowed = INTENDED_SCANS
                .iter()
                .find(|(s, _)| one_line(sql).contains(s))
                .map(|(_, scan)| *scan);
            if plan.iter().any(|d| scans(d) && Some(d.as_str()) != allowed) {
                failures.push(format!("{sql}\n  plan: {}", plan.join("; ")));
            }
        }
        assert!(checked >= 40, "only {checked} statements checked");
        assert!(
            failures.is_empty(),
            "statements that scan a table:\n\n{}",
            failures.join("\n\n")
        );
    }
}
