//! `raccordo audit verify` compares each practice's row with what its
//! audit records say: an edit made past the store, straight in the
//! database, is named with its practice and field on either backend.

use super::withdraw::withdrawal;
use super::*;
use crate::store::{AttemptResult, StateDifference};
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::{Correlation, InboundResult};
use raccordo_adapters::model::{AdminStatus, ExternalRef};

/// Three practices: p-1 approved with a protocol number, p-2 submitted,
/// p-3 withdrawn.
async fn three_practices(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    let reply = VendorReply {
        status: Some(AdminStatus::Approved),
        vendor_code: Some("OK".into()),
        reason: Some("rilasciato".into()),
        external_refs: vec![ExternalRef {
            kind: "protocol".into(),
            value: "2026/123".into(),
            system: String::new(),
            issued_at: None,
        }],
        ..Default::default()
    };
    b.finish_attempt(&job, AttemptResult::Delivered(reply.clone()), false)
        .await
        .unwrap();
    // The same reference reported again (with another date) is kept as
    // first stored, and not recorded again.
    let again = InboundResult {
        adapter: ADAPTER.into(),
        tenant_id: Some(TENANT.into()),
        correlation: Correlation::PracticeId("p-1".into()),
        reply,
        receipt: None,
    };
    b.apply_inbound(&again).await.unwrap();
    insert(b, practice("p-2")).await;
    insert(b, practice("p-3")).await;
    b.withdraw(withdrawal("p-3", false)).await.unwrap();
}

/// The fields that differ, by practice.
fn named(report: &AuditReport) -> Vec<(&str, &str)> {
    report
        .differences
        .iter()
        .map(|d: &StateDifference| (d.practice_id.as_str(), d.field))
        .collect()
}

pub(super) async fn an_untouched_store_verifies_with_every_practice_as_recorded(b: &Backend) {
    three_practices(b).await;
    let report = (b.verify_audit)(None);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.practices, report.not_compared), (3, 0));
}

pub(super) async fn an_edited_practice_row_is_named_with_its_field(b: &Backend) {
    three_practices(b).await;
    // Each edit, what it names, and the statement that undoes it.
    let edits = [
        (
            "UPDATE practices SET status = 'REJECTED' WHERE id = 'p-1'",
            ("p-1", "status"),
            "UPDATE practices SET status = 'APPROVED' WHERE id = 'p-1'",
        ),
        (
            "UPDATE practices SET status = 'APPROVED' WHERE id = 'p-2'",
            ("p-2", "status"),
            "UPDATE practices SET status = 'SUBMITTED' WHERE id = 'p-2'",
        ),
        // The applicant decides what a citizen may see.
        (
            "UPDATE practices SET applicant_id = 'VRDLGU80A01F205X' WHERE id = 'p-2'",
            ("p-2", "applicant_id"),
            "UPDATE practices SET applicant_id = 'RSSMRA45D25F205N' WHERE id = 'p-2'",
        ),
        (
            "UPDATE practices SET tenant_id = '016091' WHERE id = 'p-2'",
            ("p-2", "tenant_id"),
            "UPDATE practices SET tenant_id = '016024' WHERE id = 'p-2'",
        ),
        (
            "UPDATE practices SET service_code = 'CERT' WHERE id = 'p-2'",
            ("p-2", "service_code"),
            "UPDATE practices SET service_code = 'TARI' WHERE id = 'p-2'",
        ),
        (
            "UPDATE practices SET outcome_reason = 'respinto' WHERE id = 'p-1'",
            ("p-1", "outcome_reason"),
            "UPDATE practices SET outcome_reason = 'rilasciato' WHERE id = 'p-1'",
        ),
        (
            "UPDATE practices SET outcome_reason = NULL WHERE id = 'p-3'",
            ("p-3", "outcome_reason"),
            "UPDATE practices SET outcome_reason = 'presentata per errore' WHERE id = 'p-3'",
        ),
        (
            "UPDATE practices SET outcome_vendor_code = 'KO' WHERE id = 'p-1'",
            ("p-1", "outcome_vendor_code"),
            "UPDATE practices SET outcome_vendor_code = 'OK' WHERE id = 'p-1'",
        ),
    ];
    for (edit, expected, undo) in edits {
        (b.sql)(edit);
        let report = (b.verify_audit)(None);
        assert!(report.breaks.is_empty(), "{edit}: the chain is intact");
        assert_eq!(named(&report), [expected], "{edit}: {report:?}");
        assert_eq!(report.differences[0].tenant_id, TENANT);
        assert!(
            !report.differences[0].reason.contains("VRDLGU80A01F205X"),
            "no fiscal code in the report: {report:?}"
        );
        (b.sql)(undo);
        let report = (b.verify_audit)(None);
        assert!(report.is_intact(), "{undo}: {report:?}");
    }
    // One tenant's verification finds a practice moved out of it by its
    // records, and the other tenant's finds it unknown to its trail.
    (b.sql)("UPDATE practices SET tenant_id = '016091' WHERE id = 'p-2'");
    let report = (b.verify_audit)(Some(TENANT));
    assert_eq!(named(&report), [("p-2", "tenant_id")], "{report:?}");
    let report = (b.verify_audit)(Some(OTHER_TENANT));
    assert_eq!(named(&report), [("p-2", "practice")], "{report:?}");
    assert_eq!(report.differences[0].tenant_id, OTHER_TENANT);
    (b.sql)("UPDATE practices SET tenant_id = '016024' WHERE id = 'p-2'");
    assert!((b.verify_audit)(Some(TENANT)).is_intact());
    assert!((b.verify_audit)(Some(OTHER_TENANT)).is_intact());

    // A status and its outcome edited together, consistently with each
    // other, still differ from the records.
    (b.sql)(
        "UPDATE practices SET status = 'REJECTED', outcome_status = 'REJECTED' WHERE id = 'p-1'",
    );
    let report = (b.verify_audit)(None);
    assert_eq!(
        named(&report),
        [("p-1", "status"), ("p-1", "outcome_status")],
        "{report:?}"
    );
    assert_eq!(
        report.differences[0].reason,
        r#"the row says "REJECTED", its records say APPROVED"#
    );
}

pub(super) async fn a_removed_reference_or_a_made_up_row_is_named(b: &Backend) {
    three_practices(b).await;
    (b.sql)("DELETE FROM external_refs WHERE practice_id = 'p-1'");
    let report = (b.verify_audit)(None);
    assert_eq!(named(&report), [("p-1", "external_refs")], "{report:?}");
    // One no record names is not a difference (an earlier version stores
    // references without recording them); the recorded one is still missing.
    (b.sql)(
        "INSERT INTO external_refs (practice_id, tenant_id, kind, value, system)
         VALUES ('p-1', '016024', 'protocol', '2026/999', 'tributi')",
    );
    let report = (b.verify_audit)(None);
    assert_eq!(named(&report), [("p-1", "external_refs")], "{report:?}");
    assert!(
        report.differences[0].reason.contains(r#""2026/123""#),
        "{report:?}"
    );
    // A practice row made up in the database: no record vouches for it.
    (b.sql)(
        "INSERT INTO practices (id, tenant_id, service_code, applicant_id, idempotency_key,
            content_hash, content, status, mode, received_at, legal_term_days, last_sequence)
         VALUES ('p-9', '016024', 'TARI', 'VRDLGU80A01F205X', 'k-9', 'h', '{}', 'APPROVED',
            'deferred', 0, 30, 0)",
    );
    let report = (b.verify_audit)(None);
    assert_eq!(
        named(&report),
        [("p-1", "external_refs"), ("p-9", "practice")],
        "{report:?}"
    );
}
