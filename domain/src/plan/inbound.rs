//! Results that arrive after the delivery (callbacks, reply queues, result
//! files, polls): which practice they are about, and what they change.

use super::{Plan, PracticeState, Refused, new_outcome_data};
use crate::adapter::{Anomaly, AnomalyClass, Correlation, VendorReply};
use crate::model::ExternalRef;
use crate::practice::{EventDraft, EventKind, EventSource};
use crate::status::admin_transition_allowed;
use chrono::{DateTime, Utc};

/// A practice a result's correlation matched: (practice id, tenant id).
pub type Correlated = (String, String);

/// Picks the one practice a result is about among those its correlation
/// matched (already confined to the reporting adapter's deliveries), keeping
/// only `tenant`'s when the result names one. `Ok(None)`: no practice
/// matches; a correlation that matches several is refused.
pub fn pick_correlated(
    found: Vec<Correlated>,
    tenant: Option<&str>,
) -> Result<Option<Correlated>, Refused> {
    let mut found: Vec<_> = found
        .into_iter()
        .filter(|(_, t)| tenant.is_none_or(|want| want == t))
        .collect();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(Refused(format!(
            "{n} practices match this correlation; the result names no tenant"
        ))),
    }
}

/// The delivery a result answers: the operation its correlation names,
/// else the practice's current one. While that delivery's attempt is in
/// flight (and it is the reporting adapter's), the result waits for the
/// attempt to end, so that it is applied after the vendor's acknowledgement.
pub fn answered_delivery<'a>(
    correlation: &'a Correlation,
    state: &'a PracticeState,
) -> Option<&'a str> {
    match correlation {
        Correlation::OperationId(op) => Some(op),
        _ => state.current_operation_id.as_deref(),
    }
}

/// A vendor's report on a practice (a result, a poll's progress).
pub fn plan_report(
    state: PracticeState,
    reply: &VendorReply,
    actor: &str,
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan::from_state(state);
    plan.apply_report(reply, actor, now);
    plan
}

/// Reference kinds a reporting system assigns once per practice: a second,
/// different value from the same system contradicts the first. Other kinds
/// (`correlation_id`, one per delivery; a vendor's own kinds) accumulate.
pub const SINGLE_VALUED_KINDS: [&str; 2] = ["protocol", "vendor_id"];

/// What earlier results left on a practice, as a result is judged against:
/// its references and the SHA-256 of its outcome documents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Known {
    pub references: Vec<ExternalRef>,
    pub documents: Vec<String>,
}

/// How a result was taken.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Applied (possibly changing nothing: it repeated what is known).
    Applied,
    /// Recorded as an `ANOMALY` event, nothing else applied.
    Anomaly(Anomaly),
}

/// A result that arrived after the delivery (callback, reply message,
/// result file), judged against the practice before anything of it is
/// applied — all of it or none:
///
/// - on a concluded practice, a result that says nothing new (the same
///   status, known references, documents and outcome data) is applied
///   and changes nothing; one that says anything new is
///   [`AnomalyClass::Late`];
/// - on an open practice, a status the state machine does not allow, or a
///   [`SINGLE_VALUED_KINDS`] reference that differs from the one the same
///   system gave earlier, is [`AnomalyClass::Contradictory`];
/// - anything else is applied like any report ([`plan_report`]).
///
/// An anomaly is recorded as an `ANOMALY` event whose reason says what
/// arrived and why it was not applied; it is never merged.
pub fn plan_result(
    state: PracticeState,
    known: &Known,
    reply: &VendorReply,
    actor: &str,
    now: DateTime<Utc>,
) -> (Plan, Verdict) {
    let current = state.status;
    let refs: Vec<ExternalRef> = reply
        .external_refs
        .iter()
        .map(|r| ExternalRef {
            system: if r.system.is_empty() {
                actor.to_string()
            } else {
                r.system.clone()
            },
            ..r.clone()
        })
        .collect();
    let is_known = |r: &ExternalRef| {
        known
            .references
            .iter()
            .any(|k| k.kind == r.kind && k.value == r.value && k.system == r.system)
    };
    let new_refs: Vec<&ExternalRef> = refs.iter().filter(|r| !is_known(r)).collect();
    let new_documents = reply
        .documents
        .iter()
        .filter(|d| !known.documents.contains(&d.meta.sha256))
        .count();
    let new_status = reply.status.filter(|s| *s != current);
    let new_data = new_outcome_data(&state.outcome_data, &reply.outcome_data);
    let arrived = describe(reply, &refs);
    let mut plan = Plan::from_state(state);
    let anomaly = if current.is_terminal() {
        let news = new_status.is_some()
            || !new_refs.is_empty()
            || new_documents > 0
            || !new_data.is_empty();
        news.then(|| Anomaly {
            class: AnomalyClass::Late,
            reason: format!(
                "late result: {actor} reported {arrived} for a practice already concluded \
                 {current}: not applied"
            ),
        })
    } else if let Some(to) = new_status.filter(|to| !admin_transition_allowed(current, *to)) {
        Some(Anomaly {
            class: AnomalyClass::Contradictory,
            reason: format!(
                "{actor} reported {to} while the practice is {current} ({arrived}): not applied"
            ),
        })
    } else {
        conflict(&new_refs, known).map(|(r, earlier)| Anomaly {
            class: AnomalyClass::Contradictory,
            reason: format!(
                "{actor} reported {} {} but earlier gave {} ({arrived}): not applied",
                r.kind, r.value, earlier.value
            ),
        })
    };
    let Some(anomaly) = anomaly else {
        plan.apply_report(reply, actor, now);
        return (plan, Verdict::Applied);
    };
    plan.events.push(EventDraft {
        source: EventSource::Adapter,
        kind: EventKind::Anomaly,
        from_status: Some(current),
        to_status: reply.status,
        from_delivery: None,
        to_delivery: None,
        reason: Some(anomaly.reason.clone()),
        vendor_code: reply.vendor_code.clone(),
        actor: actor.to_string(),
        occurred_at: Some(reply.occurred_at.unwrap_or(now)),
        // What arrived is recorded with the anomaly, not merged.
        outcome_data: (!reply.outcome_data.is_empty()).then(|| reply.outcome_data.clone()),
    });
    (plan, Verdict::Anomaly(anomaly))
}

/// The first new reference that contradicts one the same system gave
/// earlier, with that earlier one.
fn conflict<'a>(
    new_refs: &[&'a ExternalRef],
    known: &'a Known,
) -> Option<(&'a ExternalRef, &'a ExternalRef)> {
    new_refs
        .iter()
        .filter(|r| SINGLE_VALUED_KINDS.contains(&r.kind.as_str()))
        .find_map(|r| {
            known
                .references
                .iter()
                .find(|k| k.kind == r.kind && k.system == r.system && k.value != r.value)
                .map(|k| (*r, k))
        })
}

/// What a result carries, for an anomaly's reason: `status APPROVED,
/// protocol 2026/2, 1 document, reason "…"`.
fn describe(reply: &VendorReply, refs: &[ExternalRef]) -> String {
    let mut parts = Vec::new();
    if let Some(status) = reply.status {
        parts.push(format!("status {status}"));
    }
    if let Some(code) = &reply.vendor_code {
        parts.push(format!("code {code}"));
    }
    parts.extend(refs.iter().map(|r| format!("{} {}", r.kind, r.value)));
    match reply.documents.len() {
        0 => {}
        1 => parts.push("1 document".into()),
        n => parts.push(format!("{n} documents")),
    }
    if !reply.outcome_data.is_empty() {
        // Names only: the values are on the event's outcome data.
        let names: Vec<&str> = reply.outcome_data.keys().map(String::as_str).collect();
        parts.push(format!("outcome data {}", names.join(", ")));
    }
    if let Some(reason) = &reply.reason {
        parts.push(format!("reason \"{reason}\""));
    }
    if parts.is_empty() {
        "an empty result".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AdminStatus;
    use crate::plan::fixtures::state;
    use crate::practice::EventKind;
    use crate::status::DeliveryStatus;

    fn pair(p: &str, t: &str) -> Correlated {
        (p.into(), t.into())
    }

    #[test]
    fn one_match_is_the_practice() {
        assert_eq!(
            pick_correlated(vec![pair("p1", "016024")], None),
            Ok(Some(pair("p1", "016024")))
        );
        assert_eq!(pick_correlated(Vec::new(), None), Ok(None));
    }

    #[test]
    fn the_named_tenant_narrows_and_confines_the_match() {
        let both = vec![pair("p1", "016024"), pair("p2", "028060")];
        assert_eq!(
            pick_correlated(both.clone(), Some("028060")),
            Ok(Some(pair("p2", "028060")))
        );
        assert_eq!(
            pick_correlated(vec![pair("p1", "016024")], Some("028060")),
            Ok(None)
        );
        assert!(pick_correlated(both, None).is_err());
    }

    fn protocol(value: &str, system: &str) -> ExternalRef {
        ExternalRef {
            kind: "protocol".into(),
            value: value.into(),
            system: system.into(),
            issued_at: None,
        }
    }

    fn approved_with(value: &str) -> VendorReply {
        VendorReply {
            status: Some(AdminStatus::Approved),
            external_refs: vec![protocol(value, "")],
            ..VendorReply::default()
        }
    }

    fn known(value: &str) -> Known {
        Known {
            references: vec![protocol(value, "suap")],
            documents: Vec::new(),
        }
    }

    #[test]
    fn a_result_that_fits_is_applied_whole() {
        let (plan, verdict) = plan_result(
            state(AdminStatus::Registered, DeliveryStatus::Acknowledged),
            &known("2026/1"),
            &approved_with("2026/1"),
            "suap",
            Utc::now(),
        );
        assert_eq!(verdict, Verdict::Applied);
        assert_eq!(plan.state.status, AdminStatus::Approved);
        assert_eq!(plan.events[0].kind, EventKind::StatusChanged);
    }

    #[test]
    fn news_about_a_concluded_practice_is_a_late_anomaly_and_nothing_else() {
        let (plan, verdict) = plan_result(
            state(AdminStatus::Approved, DeliveryStatus::Acknowledged),
            &known("2026/1"),
            &approved_with("2026/2"),
            "suap",
            Utc::now(),
        );
        let Verdict::Anomaly(anomaly) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(anomaly.class, AnomalyClass::Late);
        assert!(anomaly.reason.contains("protocol 2026/2"), "{anomaly:?}");
        assert!(anomaly.reason.contains("concluded APPROVED"), "{anomaly:?}");
        assert!(plan.references.is_empty(), "not merged");
        assert_eq!(plan.state.status, AdminStatus::Approved);
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].kind, EventKind::Anomaly);
        assert_eq!(plan.events[0].reason.as_deref(), Some(&*anomaly.reason));
    }

    #[test]
    fn the_same_result_again_on_a_concluded_practice_changes_nothing() {
        let (plan, verdict) = plan_result(
            state(AdminStatus::Approved, DeliveryStatus::Acknowledged),
            &known("2026/1"),
            &approved_with("2026/1"),
            "suap",
            Utc::now(),
        );
        assert_eq!(verdict, Verdict::Applied);
        assert!(plan.events.is_empty());
    }

    #[test]
    fn a_second_protocol_number_from_the_same_system_contradicts() {
        let reply = VendorReply {
            status: Some(AdminStatus::InProgress),
            external_refs: vec![protocol("2026/9", "")],
            ..VendorReply::default()
        };
        let (plan, verdict) = plan_result(
            state(AdminStatus::Registered, DeliveryStatus::Acknowledged),
            &known("2026/1"),
            &reply,
            "suap",
            Utc::now(),
        );
        assert!(
            matches!(&verdict, Verdict::Anomaly(a) if a.class == AnomalyClass::Contradictory),
            "{verdict:?}"
        );
        assert_eq!(plan.state.status, AdminStatus::Registered, "not applied");
        // Another system's protocol number is its own.
        let (_, verdict) = plan_result(
            state(AdminStatus::Registered, DeliveryStatus::Acknowledged),
            &known("2026/1"),
            &reply,
            "tributi",
            Utc::now(),
        );
        assert_eq!(verdict, Verdict::Applied);
    }

    #[test]
    fn a_status_the_state_machine_forbids_contradicts() {
        let reply = VendorReply {
            status: Some(AdminStatus::Approved),
            ..VendorReply::default()
        };
        let (plan, verdict) = plan_result(
            state(
                AdminStatus::IntegrationRequested,
                DeliveryStatus::Acknowledged,
            ),
            &Known::default(),
            &reply,
            "suap",
            Utc::now(),
        );
        assert!(
            matches!(&verdict, Verdict::Anomaly(a) if a.class == AnomalyClass::Contradictory),
            "{verdict:?}"
        );
        assert_eq!(plan.events[0].to_status, Some(AdminStatus::Approved));
        assert_eq!(plan.state.status, AdminStatus::IntegrationRequested);
    }

    #[test]
    fn a_result_answers_the_operation_it_names_else_the_current_one() {
        let s = state(AdminStatus::Submitted, DeliveryStatus::Sent);
        let by_op = Correlation::OperationId("op-0".into());
        assert_eq!(answered_delivery(&by_op, &s), Some("op-0"));
        let by_id = Correlation::PracticeId("p-1".into());
        assert_eq!(answered_delivery(&by_id, &s), Some("op-1"));
    }

    fn with_data(status: AdminStatus, data: serde_json::Value) -> VendorReply {
        VendorReply {
            status: Some(status),
            outcome_data: data.as_object().cloned().unwrap(),
            ..VendorReply::default()
        }
    }

    #[test]
    fn outcome_data_rides_on_the_status_change_or_on_an_event_of_its_own() {
        let (plan, _) = plan_result(
            state(AdminStatus::Submitted, DeliveryStatus::Acknowledged),
            &Known::default(),
            &with_data(
                AdminStatus::Registered,
                serde_json::json!({"importo": 120.5}),
            ),
            "tributi",
            Utc::now(),
        );
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].kind, EventKind::StatusChanged);
        assert_eq!(
            plan.events[0].outcome_data,
            Some(
                serde_json::json!({"importo": 120.5})
                    .as_object()
                    .cloned()
                    .unwrap()
            )
        );
        // The same status with one field more: only the new field, on an
        // event of its own; the practice holds both.
        let (plan, verdict) = plan_result(
            plan.state,
            &Known::default(),
            &with_data(
                AdminStatus::Registered,
                serde_json::json!({"importo": 120.5, "avviso": "3012"}),
            ),
            "tributi",
            Utc::now(),
        );
        assert_eq!(verdict, Verdict::Applied);
        assert_eq!(plan.events.len(), 1);
        assert_eq!(plan.events[0].kind, EventKind::OutcomeData);
        assert_eq!(
            plan.events[0].outcome_data,
            Some(
                serde_json::json!({"avviso": "3012"})
                    .as_object()
                    .cloned()
                    .unwrap()
            )
        );
        assert_eq!(
            serde_json::Value::Object(plan.state.outcome_data.clone()),
            serde_json::json!({"importo": 120.5, "avviso": "3012"})
        );
        // Saying it all again says nothing.
        let (plan, _) = plan_result(
            plan.state,
            &Known::default(),
            &with_data(
                AdminStatus::Registered,
                serde_json::json!({"avviso": "3012"}),
            ),
            "tributi",
            Utc::now(),
        );
        assert!(plan.events.is_empty());
    }

    #[test]
    fn new_outcome_data_for_a_concluded_practice_is_late_and_not_merged() {
        let mut concluded = state(AdminStatus::Approved, DeliveryStatus::Acknowledged);
        concluded.outcome_data = serde_json::json!({"importo": 10})
            .as_object()
            .cloned()
            .unwrap();
        let (plan, verdict) = plan_result(
            concluded.clone(),
            &Known::default(),
            &with_data(AdminStatus::Approved, serde_json::json!({"importo": 12})),
            "tributi",
            Utc::now(),
        );
        let Verdict::Anomaly(anomaly) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(anomaly.class, AnomalyClass::Late);
        assert!(
            anomaly.reason.contains("outcome data importo"),
            "{anomaly:?}"
        );
        assert!(
            !anomaly.reason.contains("12"),
            "names, not values: {anomaly:?}"
        );
        assert_eq!(plan.state.outcome_data, concluded.outcome_data);
        assert_eq!(
            plan.events[0].outcome_data,
            Some(
                serde_json::json!({"importo": 12})
                    .as_object()
                    .cloned()
                    .unwrap()
            )
        );
        let (_, verdict) = plan_result(
            concluded,
            &Known::default(),
            &with_data(AdminStatus::Approved, serde_json::json!({"importo": 10})),
            "tributi",
            Utc::now(),
        );
        assert_eq!(verdict, Verdict::Applied, "the same data again");
    }

    #[test]
    fn outcome_data_of_a_refused_transition_is_recorded_not_merged() {
        let plan = plan_report(
            state(AdminStatus::Withdrawn, DeliveryStatus::Acknowledged),
            &with_data(AdminStatus::Approved, serde_json::json!({"importo": 1})),
            "suap",
            Utc::now(),
        );
        assert_eq!(plan.events[0].kind, EventKind::Anomaly);
        assert!(plan.events[0].outcome_data.is_some());
        assert!(plan.state.outcome_data.is_empty());
    }

    #[test]
    fn a_late_conclusion_after_withdrawal_is_an_anomaly() {
        let reply = VendorReply {
            status: Some(AdminStatus::Approved),
            ..VendorReply::default()
        };
        let plan = plan_report(
            state(AdminStatus::Withdrawn, DeliveryStatus::Acknowledged),
            &reply,
            "suap",
            Utc::now(),
        );
        assert_eq!(plan.state.status, AdminStatus::Withdrawn);
        assert_eq!(plan.events[0].kind, EventKind::Anomaly);
    }
}
