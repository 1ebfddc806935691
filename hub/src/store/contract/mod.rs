//! The contract every [`Store`] backend must pass.
//!
//! The cases are written once against the trait, as `async fn(&Backend)`,
//! and [`store_contract!`] turns the list into one `#[tokio::test]` per case
//! for a backend: adding a backend is one line at the bottom of this file.
//! What the cases assert is what the rest of the hub relies on; errors are
//! checked by class ([`StoreError::NotFound`], [`StoreError::Conflict`]),
//! never by message. Backend mechanics (group commit, rollback,
//! checkpointing) are tested next to the backend instead.

mod audit;
mod cluster;
mod early;
mod events;
mod inbound;
mod leases;
mod ops;
mod outbox;
mod outcome;
mod practices;
mod withdraw;

use super::{AuditReport, ClaimedJob, InsertOutcome, Lease, Store, StoreError};
use crate::config::Mode;
use crate::domain::practice::{Event, NewPractice, Practice, PracticeContent};
use chrono::{DateTime, SubsecRound, Utc};
use raccordo_adapters::model::{Applicant, ChannelInfo, Document, Person, Subject};
use std::sync::Arc;

/// `raccordo audit verify` on a backend's database, for every tenant (`None`)
/// or one.
pub(crate) type VerifyAudit = dyn Fn(Option<&str>) -> AuditReport + Send + Sync;

/// One backend under test, open on a fresh, empty database.
pub(crate) struct Backend {
    pub store: Arc<dyn Store>,
    /// Verifies every audit chain (or one tenant's) and the state of the
    /// practices against it.
    pub verify_audit: Box<VerifyAudit>,
    /// Runs SQL on the database directly, past the store: what someone
    /// with access to the database could do.
    pub sql: Box<dyn Fn(&str) + Send + Sync>,
    /// Whatever must outlive the store (a temporary directory).
    pub _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl std::ops::Deref for Backend {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

/// Expands to one `#[tokio::test]` per contract case, in a module named
/// `$backend`, each on a database `$open` (an async closure returning a
/// [`Backend`]) creates afresh.
macro_rules! store_contract {
    ($backend:ident, $open:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $crate::store::contract::cases! { $open;
                practices::a_new_practice_is_stored_with_its_first_events,
                practices::an_attachment_is_read_with_its_bytes_only_when_asked,
                practices::a_reused_idempotency_key_finds_the_first_practice,
                practices::another_tenants_practice_is_never_found,
                practices::listing_filters_and_pages_newest_first,
                events::events_carry_sequences_and_hub_wide_cursors,
                events::events_after_follows_the_filter,
                outbox::claims_take_due_jobs_earliest_first_up_to_the_limit,
                outbox::due_polls_are_claimed_before_deliveries,
                outbox::a_synchronous_submission_is_stored_claimed,
                outbox::a_delivered_attempt_records_status_references_and_documents,
                outbox::a_rejection_concludes_the_practice,
                outbox::a_failure_with_attempts_left_is_due_again_later,
                outbox::a_failure_without_attempts_left_is_dead_lettered,
                outbox::a_replay_puts_a_dead_letter_back_with_its_operation_id,
                outbox::a_replay_refuses_what_is_not_dead_or_already_concluded,
                outbox::a_pending_poll_applies_progress_and_waits,
                inbound::inbound_results_find_their_practice_three_ways,
                inbound::a_repeated_receipt_changes_nothing,
                inbound::an_adapter_cannot_report_on_another_adapters_practice,
                early::a_result_for_a_delivery_in_flight_waits_and_follows_its_acknowledgement,
                early::a_result_waiting_for_an_attempt_whose_lease_runs_out_is_applied_by_the_sweep,
                early::a_result_for_a_failed_attempt_is_applied_when_the_failure_is_recorded,
                early::a_late_result_is_an_anomaly_and_its_repeat_is_answered_the_same,
                early::a_result_contradicting_an_earlier_one_is_an_anomaly,
                early::results_racing_their_attempts_end_are_applied_once_after_it,
                outcome::outcome_data_is_merged_result_by_result_and_rides_on_its_events,
                outcome::outcome_data_the_check_refuses_refuses_the_result_whole,
                outcome::new_outcome_data_on_a_concluded_practice_is_a_late_anomaly,
                withdraw::withdrawing_a_never_sent_practice_cancels_its_delivery,
                withdraw::withdrawing_a_maybe_sent_practice_forwards_the_withdrawal,
                withdraw::withdrawing_a_concluded_practice_conflicts,
                ops::the_snapshot_counts_the_outbox_and_the_practices,
                ops::audit_records_join_the_tenants_chain_without_events,
                audit::an_untouched_store_verifies_with_every_practice_as_recorded,
                audit::an_edited_practice_row_is_named_with_its_field,
                audit::a_removed_reference_or_a_made_up_row_is_named,
                leases::a_claimed_job_is_not_claimable_by_another_owner_before_its_lease_runs_out,
                leases::a_renewed_lease_holds_past_its_first_expiry,
                leases::an_expired_lease_makes_the_delivery_outcome_unknown_once,
                leases::a_lease_that_runs_out_on_the_last_attempt_dead_letters_it,
                leases::a_synchronous_claim_is_leased_too,
                leases::a_poll_whose_lease_runs_out_is_polled_again_without_resending,
                leases::a_result_after_a_lost_lease_is_kept_only_if_it_concludes,
                cluster::claims_stay_within_the_adapters_limit_across_instances,
                cluster::a_synchronous_claim_counts_against_the_limit,
                cluster::a_singleton_has_one_holder_until_its_lease_runs_out,
                cluster::heartbeats_count_the_instances_alive,
            }
        }
    };
}

/// The test functions of [`store_contract!`].
macro_rules! cases {
    ($open:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let backend: $crate::store::contract::Backend = ($open)().await;
                $crate::store::contract::$module::$case(&backend).await;
            }
        )*
    };
}

pub(crate) use cases;

/// The tenant most cases use, and another one.
pub(super) const TENANT: &str = "016024";
pub(super) const OTHER_TENANT: &str = "016091";
/// The adapter instance of the practices, and another one.
pub(super) const ADAPTER: &str = "tributi";
pub(super) const OTHER_ADAPTER: &str = "anagrafe";
pub(super) const APPLICANT: &str = "RSSMRA45D25F205N";

/// The adapter's limit on work in flight in most cases: more than any
/// case claims, so that only the cases about the limit meet it.
pub(super) const MAX_IN_FLIGHT: u32 = 100;

/// The hub instance most cases claim as.
pub(super) const OWNER: &str = "hub-a";

/// A lease of [`OWNER`] for 30 seconds.
pub(super) fn lease() -> Lease {
    Lease {
        owner: OWNER.into(),
        duration: std::time::Duration::from_secs(30),
    }
}

/// Now, as the store keeps time (milliseconds).
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// A practice of [`TENANT`] for [`ADAPTER`], received now, with key
/// `k-{id}`; the fields are public, so cases vary them with `..`.
pub(super) fn practice(id: &str) -> NewPractice {
    NewPractice {
        id: id.into(),
        tenant_id: TENANT.into(),
        service_code: "TARI".into(),
        idempotency_key: format!("k-{id}"),
        content_hash: format!("h-{id}"),
        content: content(APPLICANT),
        attachments: Vec::new(),
        mode: Mode::Deferred,
        received_at: now(),
        legal_term_days: 30,
        adapter: ADAPTER.into(),
        max_attempts: 3,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    }
}

pub(super) fn content(fiscal_code: &str) -> PracticeContent {
    PracticeContent {
        applicant: Applicant {
            subject: Subject::Person(Person {
                fiscal_code: fiscal_code.into(),
                given_name: "Mario".into(),
                family_name: "Rossi".into(),
            }),
            contacts: Default::default(),
        },
        submitter: None,
        channel: ChannelInfo::default(),
        data: serde_json::json!({"anno": 2026})
            .as_object()
            .cloned()
            .unwrap(),
    }
}

pub(super) fn attachment(name: &str) -> Document {
    Document::new(name, "application/pdf", format!("%PDF {name}").into_bytes())
}

/// Stores `new`, which must be new.
pub(super) async fn insert(store: &Backend, new: NewPractice) {
    let id = new.id.clone();
    match store.insert_practice(new, false).await {
        Ok((InsertOutcome::Created, None)) => {}
        other => panic!("inserting {id}: {other:?}"),
    }
}

/// Claims the one due job of [`ADAPTER`].
pub(super) async fn claim_one(store: &Backend) -> ClaimedJob {
    let work = store
        .claim_work(
            ADAPTER,
            &lease(),
            now() + chrono::Duration::minutes(1),
            1,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(work.polls.is_empty(), "{work:?}");
    let [job] = <[ClaimedJob; 1]>::try_from(work.jobs).expect("one due job");
    job
}

pub(super) async fn get(store: &Backend, id: &str) -> Practice {
    store.get_practice(TENANT, id, false).await.unwrap()
}

/// Every event of practice `id`, oldest first.
pub(super) async fn events(store: &Backend, id: &str) -> Vec<Event> {
    store.practice_events(TENANT, id, 0).await.unwrap()
}

pub(super) fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    assert!(
        matches!(r, Err(StoreError::NotFound)),
        "expected NotFound: {r:?}"
    );
}

pub(super) fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    assert!(
        matches!(r, Err(StoreError::Conflict(_))),
        "expected Conflict: {r:?}"
    );
}

store_contract!(sqlite, || async {
    use crate::config::Synchronous;
    use crate::store::sqlite::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("contract.db");
    let store = SqliteStore::open(&path, Synchronous::Normal, 2)
        .await
        .unwrap();
    let db = path.clone();
    crate::store::contract::Backend {
        store: Arc::new(store),
        verify_audit: Box::new(move |tenant| SqliteStore::verify_audit(&path, tenant).unwrap()),
        sql: Box::new(move |sql| {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            conn.execute_batch(sql).unwrap()
        }),
        _keep: Box::new(dir),
    }
});

store_contract!(postgres, || async {
    use crate::store::postgres::{PgOptions, PgStore};
    let schema = crate::store::postgres::tests::Schema::new().await;
    let store = schema.store(None).await;
    let search_path = schema.name.clone();
    let sql_path = schema.name.clone();
    crate::store::contract::Backend {
        store: Arc::new(store),
        sql: Box::new(move |sql| {
            let sql = format!("SET search_path TO {sql_path}; {sql}");
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let url = crate::store::postgres::tests::test_url();
                    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    let conn = tokio::spawn(conn);
                    client.batch_execute(&sql).await.unwrap();
                    drop(client);
                    let _ = conn.await;
                })
            })
            .join()
            .unwrap()
        }),
        // The contract verifies from synchronous code: on a thread of its
        // own, with a runtime and a connection of its own.
        verify_audit: Box::new(move |tenant| {
            let search_path = search_path.clone();
            let tenant = tenant.map(str::to_string);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let opts = PgOptions {
                        search_path: Some(search_path),
                        ..Default::default()
                    };
                    let url = crate::store::postgres::tests::test_url();
                    PgStore::connect(&url, &opts, None)
                        .await
                        .unwrap()
                        .verify_audit(tenant.as_deref())
                        .await
                        .unwrap()
                })
            })
            .join()
            .unwrap()
        }),
        _keep: Box::new(schema),
    }
});
