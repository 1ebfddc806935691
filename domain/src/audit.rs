//! The audit trail's definition: one hash chain per tenant.
//!
//! Each record's hash is SHA-256 over the previous record's hash and the
//! record's own fields, encoded as one JSON array (unambiguous, and easy to
//! recompute with any tool; `docs/security.md`). Chains are per tenant so
//! one municipality's trail can be handed over and checked on its own.
//! Every store links records the same way; where it keeps them is its own.

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

/// What the audit trail keeps of a practice event (its `detail`): the
/// event's own columns, so the record is recomputed from the event row.
#[derive(serde::Serialize)]
pub struct EventAudit<'a> {
    pub sequence: i64,
    pub source: &'a str,
    pub from_status: Option<&'a str>,
    pub to_status: Option<&'a str>,
    pub from_delivery: Option<&'a str>,
    pub to_delivery: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub vendor_code: Option<&'a str>,
}

impl EventAudit<'_> {
    /// The record's `detail`, as hashed.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("strings and integers always serialize")
    }
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

    #[test]
    fn a_chain_starts_at_one_from_the_genesis_hash() {
        assert_eq!(next_link(None), (1, GENESIS.to_string()));
        assert_eq!(next_link(Some((4, "h".into()))), (5, "h".to_string()));
    }
}
