//! Results that arrive before the hub recorded the end of the attempt they
//! answer ("early results"), and what a receipt remembers of a result.
//!
//! A vendor that works fast calls back (or replies, or writes its result
//! file) before the hub has recorded its acknowledgement: the HTTP 202 is
//! still on its way, the attempt still `in_flight`. Applying the result at
//! once would put the outcome before the acknowledgement in the practice's
//! events, and make the acknowledgement's own report (a 202 body saying
//! `REGISTERED`) arrive after an `APPROVED`: an anomaly the vendor never
//! caused. Refusing it (404, "unknown correlation") would lose it for a
//! vendor that treats the refusal as final.
//!
//! So both stores do the same: a result whose practice's delivery by the
//! same adapter instance (the operation its correlation names, else the
//! practice's current one) is in flight is stored in `early_results`,
//! with its receipt marked `pending`, and answered
//! [`InboundVerdict::Pending`]. The transaction that records the end of
//! that attempt — the vendor's answer, or its lease running out — applies
//! the stored results after the attempt's own change, in arrival order,
//! each judged like any result (`plan::plan_result`), and deletes them.
//! Nothing is lost (the row is durable before the vendor is answered) and
//! nothing is applied twice (its receipt is recorded at arrival, and the
//! row is deleted in the transaction that applies it).
//!
//! [`InboundVerdict::Pending`]: super::InboundVerdict::Pending

use super::{InboundVerdict, OutcomeCheck, RecordedAnomaly, StoreError};
use base64::Engine;
use chrono::{DateTime, Utc};
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::InboundResult;
use raccordo_adapters::adapter::{Anomaly, AnomalyClass};
use raccordo_adapters::model::{AdminStatus, Document, ExternalRef};
use raccordo_domain::plan::Verdict;
use serde::{Deserialize, Serialize};

/// What `inbound_receipts.outcome` says became of a result: the answer a
/// repeat of it gets.
pub(super) const APPLIED: &str = "applied";
pub(super) const PENDING: &str = "pending";

/// The stored outcome for a verdict.
pub(super) fn outcome_of(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Applied => APPLIED,
        Verdict::Anomaly(a) => a.class.as_str(),
    }
}

/// The answer to a result whose receipt was recorded with `outcome`.
pub(super) fn repeated(outcome: &str) -> InboundVerdict {
    match outcome.parse::<AnomalyClass>() {
        Ok(class) => InboundVerdict::Anomaly {
            anomaly: Anomaly {
                class,
                reason: format!(
                    "this result was recorded earlier as an anomaly ({class}) and not applied"
                ),
            },
            first: false,
        },
        // `applied`, `pending`: stored either way; nothing to do again.
        Err(_) => InboundVerdict::Duplicate,
    }
}

/// The verdict on a result applied now.
pub(super) fn verdict(v: Verdict) -> InboundVerdict {
    match v {
        Verdict::Applied => InboundVerdict::Applied,
        Verdict::Anomaly(anomaly) => InboundVerdict::Anomaly {
            anomaly,
            first: true,
        },
    }
}

/// An anomaly found applying an early result of `adapter`, for the caller
/// to count.
pub(super) fn recorded(adapter: &str, v: &Verdict) -> Option<RecordedAnomaly> {
    match v {
        Verdict::Applied => None,
        Verdict::Anomaly(a) => Some(RecordedAnomaly {
            adapter: adapter.to_string(),
            class: a.class,
        }),
    }
}

/// `result` with its outcome data checked and typed by `check` for
/// `service` (see [`Store::apply_inbound_checked`]); refused as a
/// conflict naming the field.
///
/// [`Store::apply_inbound_checked`]: crate::store::Store::apply_inbound_checked
pub(super) fn checked(
    result: &InboundResult,
    service: &str,
    check: &OutcomeCheck,
) -> Result<InboundResult, StoreError> {
    let outcome_data = check(service, &result.reply.outcome_data).map_err(StoreError::Conflict)?;
    Ok(InboundResult {
        reply: VendorReply {
            outcome_data,
            ..result.reply.clone()
        },
        ..result.clone()
    })
}

/// A vendor's reply as `early_results.reply` holds it (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct StoredReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<AdminStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vendor_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    documents: Vec<StoredDocument>,
    /// Already checked and typed by the service's declaration.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    outcome_data: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    occurred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredDocument {
    name: String,
    media_type: String,
    content_base64: String,
}

/// `reply` in its stored form. A follow-up is not kept: results that
/// arrive through an inbound channel never carry one.
pub(super) fn encode(reply: &VendorReply) -> Result<String, StoreError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let stored = StoredReply {
        status: reply.status,
        vendor_code: reply.vendor_code.clone(),
        reason: reply.reason.clone(),
        external_refs: reply.external_refs.clone(),
        documents: reply
            .documents
            .iter()
            .map(|d| StoredDocument {
                name: d.meta.name.clone(),
                media_type: d.meta.media_type.clone(),
                content_base64: b64.encode(&d.content),
            })
            .collect(),
        outcome_data: reply.outcome_data.clone(),
        occurred_at: reply.occurred_at,
    };
    serde_json::to_string(&stored).map_err(|e| StoreError::Internal(e.to_string()))
}

/// A stored reply read back.
pub(super) fn decode(text: &str) -> Result<VendorReply, StoreError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let stored: StoredReply = serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("early_results.reply: {e}")))?;
    let documents = stored
        .documents
        .into_iter()
        .map(|d| {
            let content = b64.decode(&d.content_base64).map_err(|e| {
                StoreError::Corrupt(format!("early_results.reply: document '{}': {e}", d.name))
            })?;
            Ok(Document::new(d.name, d.media_type, content))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(VendorReply {
        status: stored.status,
        vendor_code: stored.vendor_code,
        reason: stored.reason,
        external_refs: stored.external_refs,
        documents,
        outcome_data: stored.outcome_data,
        occurred_at: stored.occurred_at,
        follow_up: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_reads_back_as_stored() {
        let reply = VendorReply {
            status: Some(AdminStatus::Approved),
            vendor_code: Some("OK".into()),
            reason: Some("accolta".into()),
            external_refs: vec![ExternalRef {
                kind: "protocol".into(),
                value: "2026/1".into(),
                system: String::new(),
                issued_at: None,
            }],
            documents: vec![Document::new(
                "esito.pdf",
                "application/pdf",
                b"%PDF".to_vec(),
            )],
            outcome_data: serde_json::json!({"importo_dovuto": 120.5})
                .as_object()
                .cloned()
                .unwrap(),
            occurred_at: Some(Utc::now()),
            follow_up: None,
        };
        let back = decode(&encode(&reply).unwrap()).unwrap();
        assert_eq!(back.status, reply.status);
        assert_eq!(back.vendor_code, reply.vendor_code);
        assert_eq!(back.reason, reply.reason);
        assert_eq!(back.external_refs, reply.external_refs);
        assert_eq!(back.documents, reply.documents);
        assert_eq!(back.outcome_data, reply.outcome_data);
        assert_eq!(back.occurred_at, reply.occurred_at);
    }

    #[test]
    fn a_repeat_is_answered_as_the_first_was() {
        assert_eq!(repeated(APPLIED), InboundVerdict::Duplicate);
        assert_eq!(repeated(PENDING), InboundVerdict::Duplicate);
        assert!(matches!(
            repeated("late"),
            InboundVerdict::Anomaly { anomaly, first: false } if anomaly.class == AnomalyClass::Late
        ));
    }
}
