//! Results that arrive after the delivery (callbacks, reply queues, result
//! files, polls): which practice they are about, and what they change.

use super::{Plan, PracticeState, Refused};
use crate::adapter::VendorReply;
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
