//! The audit trail's definition: one hash chain per tenant.
//!
//! Each record's hash is SHA-256 over the previous record's hash and the
//! record's own fields, encoded as one JSON array (unambiguous, and easy to
//! recompute with any tool; `docs/security.md`). Chains are per tenant so
//! one municipality's trail can be handed over and checked on its own.
//! Every store links records the same way; where it keeps them is its own.
//!
//! The chain also vouches for each practice's stored state: [`state`]
//! replays a practice's records and compares the result with its row.

pub mod state;

use crate::model::sha256_hex;

/// `prev_hash` of a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain name of records that name no tenant.
pub const NO_TENANT: &str = "-";

/// The hash of one record, linked to `prev_hash`.
#[allow(clippy::too_many_arguments)]
pub fn record_hash(
    prev_hash: &str,
    tenant_id: &str,
    seq: i64,
    recorded_at_ms: i64,
    actor: &str,
    action: &str,
    practice_id: Option<&str>,
    detail: &str,
) -> String {
    // A tuple serializes as the JSON array the chain is defined over.
    let canonical = serde_json::to_string(&(
        prev_hash,
        tenant_id,
        seq,
        recorded_at_ms,
        actor,
        action,
        practice_id,
        detail,
    ))
    .expect("strings and integers always serialize");
    sha256_hex(canonical.as_bytes())
}

/// The next link after a chain's head (`None`: an empty chain): its
/// sequence number and the hash it links to.
pub fn next_link(head: Option<(i64, String)>) -> (i64, String) {
    match head {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_string()),
    }
}

/// The format of the event records written now. Format 1 (no `format` in
/// `detail`) kept the event's own columns; format 2 adds the practice's
/// service and applicant, so the chain also vouches for who a practice
/// belongs to; format 3 adds the digest of the outcome data an event
/// carries (none when it carries none). Whoever links a record chooses its
/// format and keeps it on the event row (`audit_format`, empty for 1), and
/// the record is rebuilt in that format: older records verify as they were
/// written, and so do those an instance of an earlier version links during
/// an upgrade (it knows nothing of outcome data, and its format says so).
pub const EVENT_FORMAT: i64 = 3;

/// The `format` a [`REFERENCES_ACTION`] record's detail names: the
/// references record has not changed since format 2.
const REFERENCES_FORMAT: i64 = 2;

/// The action of the record that keeps the external references a change
/// added to a practice (format 2 on; references are not events).
pub const REFERENCES_ACTION: &str = "references";

/// What the audit trail keeps of a practice event (its `detail`): the
/// event's own columns, so the record is recomputed from the event row.
#[derive(Clone, serde::Serialize)]
pub struct EventAudit<'a> {
    pub sequence: i64,
    pub source: &'a str,
    pub from_status: Option<&'a str>,
    pub to_status: Option<&'a str>,
    pub from_delivery: Option<&'a str>,
    pub to_delivery: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub vendor_code: Option<&'a str>,
    /// Format 2 on (absent in format 1, which is hashed without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<i64>,
    /// Format 2 on: the practice's service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_code: Option<&'a str>,
    /// Format 2 on: [`applicant_digest`] of the practice's applicant, not
    /// the fiscal code itself (the trail is exported and handed over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applicant: Option<String>,
    /// Format 3 on: [`outcome_data_digest`] of the outcome data the event
    /// carries; absent when it carries none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_data: Option<String>,
}

impl<'a> EventAudit<'a> {
    /// Adds what a record of `format` (`None`: format 1) carries besides
    /// the event's columns: the practice's service and applicant (format
    /// 2 on), and keeps the outcome data's digest only from format 3.
    pub fn in_format(
        mut self,
        format: Option<i64>,
        practice_id: &str,
        service_code: &'a str,
        applicant_id: &str,
    ) -> Self {
        if format.is_some_and(|f| f >= 2) {
            self.format = format;
            self.service_code = Some(service_code);
            self.applicant = Some(applicant_digest(practice_id, applicant_id));
        }
        if format.is_none_or(|f| f < 3) {
            self.outcome_data = None;
        }
        self
    }

    /// The record's `detail`, as hashed.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings and integers always serialize")
    }
}

/// How an event record vouches for the outcome data its event carries:
/// SHA-256 of the data's JSON as the event row stores it. The values (an
/// amount due, a certificate number) may be personal; the digest is not,
/// and whoever holds the row can check it.
pub fn outcome_data_digest(stored_json: &str) -> String {
    sha256_hex(stored_json.as_bytes())
}

/// How an event record names the practice's applicant: SHA-256 over the
/// JSON array `[practice_id, applicant_id]`. Whoever knows the fiscal code
/// can check it; the trail does not carry it, and the same applicant's
/// practices do not share a value.
pub fn applicant_digest(practice_id: &str, applicant_id: &str) -> String {
    let canonical =
        serde_json::to_string(&(practice_id, applicant_id)).expect("strings always serialize");
    sha256_hex(canonical.as_bytes())
}

/// One external reference as a [`REFERENCES_ACTION`] record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ReferenceRecord {
    pub kind: String,
    pub value: String,
    pub system: String,
    /// RFC 3339 with milliseconds, as the store keeps it.
    pub issued_at: Option<String>,
}

impl ReferenceRecord {
    /// A reference as stored: `issued_at_ms` in Unix milliseconds.
    pub fn new(kind: &str, value: &str, system: &str, issued_at_ms: Option<i64>) -> Self {
        Self {
            kind: kind.to_string(),
            value: value.to_string(),
            system: system.to_string(),
            issued_at: issued_at_ms.map(|ms| match chrono::DateTime::from_timestamp_millis(ms) {
                Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                None => ms.to_string(),
            }),
        }
    }
}

/// The `detail` of a [`REFERENCES_ACTION`] record: the references a change
/// added (those already stored are not added again, nor recorded).
pub fn references_detail(references: &[ReferenceRecord]) -> String {
    #[derive(serde::Serialize)]
    struct Detail<'a> {
        format: i64,
        references: &'a [ReferenceRecord],
    }
    serde_json::to_string(&Detail {
        format: REFERENCES_FORMAT,
        references,
    })
    .expect("strings always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records written by earlier versions must keep verifying.
    #[test]
    fn a_record_hash_is_sha256_over_the_documented_json_array() {
        let detail = r#"{"reason":"a \"quoted\" àccent"}"#;
        let expected = serde_json::json!([
            GENESIS,
            "016024",
            7,
            1_700_000_000_000_i64,
            "sportello",
            "status_changed",
            "p-1",
            detail
        ])
        .to_string();
        assert_eq!(
            record_hash(
                GENESIS,
                "016024",
                7,
                1_700_000_000_000,
                "sportello",
                "status_changed",
                Some("p-1"),
                detail
            ),
            sha256_hex(expected.as_bytes())
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Format 1 is hashed exactly as before format 2 existed.
    #[test]
    fn an_event_record_keeps_its_format() {
        let event = || EventAudit {
            sequence: 1,
            source: "applicant",
            from_status: None,
            to_status: Some("SUBMITTED"),
            from_delivery: None,
            to_delivery: None,
            reason: Some("r"),
            vendor_code: None,
            format: None,
            service_code: None,
            applicant: None,
            outcome_data: None,
        };
        let v1 = r#"{"sequence":1,"source":"applicant","from_status":null,"to_status":"SUBMITTED","from_delivery":null,"to_delivery":null,"reason":"r","vendor_code":null}"#;
        assert_eq!(event().to_json(), v1);
        assert_eq!(
            event()
                .in_format(None, "p-1", "TARI", "RSSMRA85M01H501Q")
                .to_json(),
            v1
        );
        let v2 = event()
            .in_format(Some(2), "p-1", "TARI", "RSSMRA85M01H501Q")
            .to_json();
        assert_eq!(
            v2,
            format!(
                r#"{{"sequence":1,"source":"applicant","from_status":null,"to_status":"SUBMITTED","from_delivery":null,"to_delivery":null,"reason":"r","vendor_code":null,"format":2,"service_code":"TARI","applicant":"{}"}}"#,
                applicant_digest("p-1", "RSSMRA85M01H501Q")
            )
        );
        assert!(
            !v2.contains("RSSMRA85M01H501Q"),
            "no fiscal code in the trail"
        );
        assert_eq!(
            applicant_digest("p-1", "RSSMRA85M01H501Q"),
            sha256_hex(br#"["p-1","RSSMRA85M01H501Q"]"#)
        );
        assert_ne!(
            applicant_digest("p-1", "RSSMRA85M01H501Q"),
            applicant_digest("p-2", "RSSMRA85M01H501Q")
        );
    }

    /// Outcome data adds a member only to the records of events that
    /// carry some: the others hash exactly as before.
    #[test]
    fn an_event_with_outcome_data_records_its_digest() {
        let stored = r#"{"importo_dovuto":120.5}"#;
        let event = EventAudit {
            sequence: 3,
            source: "adapter",
            from_status: Some("REGISTERED"),
            to_status: Some("APPROVED"),
            from_delivery: None,
            to_delivery: None,
            reason: None,
            vendor_code: None,
            format: None,
            service_code: None,
            applicant: None,
            outcome_data: Some(outcome_data_digest(stored)),
        };
        let v3 = event
            .clone()
            .in_format(Some(EVENT_FORMAT), "p-1", "TARI", "RSSMRA85M01H501Q")
            .to_json();
        assert_eq!(
            v3,
            format!(
                r#"{{"sequence":3,"source":"adapter","from_status":"REGISTERED","to_status":"APPROVED","from_delivery":null,"to_delivery":null,"reason":null,"vendor_code":null,"format":3,"service_code":"TARI","applicant":"{}","outcome_data":"{}"}}"#,
                applicant_digest("p-1", "RSSMRA85M01H501Q"),
                sha256_hex(stored.as_bytes())
            )
        );
        assert!(!v3.contains("120.5"), "no values in the trail");
        // A record linked in format 2 (an instance of an earlier version)
        // is rebuilt without it, as it was hashed.
        let v2 = event
            .in_format(Some(2), "p-1", "TARI", "RSSMRA85M01H501Q")
            .to_json();
        assert!(
            !v2.contains("outcome_data") && v2.contains(r#""format":2"#),
            "{v2}"
        );
    }

    #[test]
    fn a_reference_keeps_its_date_in_milliseconds() {
        let r = ReferenceRecord::new("protocol", "2026/7", "tributi", Some(1_700_000_000_123));
        assert_eq!(r.issued_at.as_deref(), Some("2023-11-14T22:13:20.123Z"));
        assert_eq!(
            references_detail(&[r]),
            r#"{"format":2,"references":[{"kind":"protocol","value":"2026/7","system":"tributi","issued_at":"2023-11-14T22:13:20.123Z"}]}"#
        );
    }

    #[test]
    fn a_chain_starts_at_one_from_the_genesis_hash() {
        assert_eq!(next_link(None), (1, GENESIS.to_string()));
        assert_eq!(next_link(Some((4, "h".into()))), (5, "h".to_string()));
    }
}
