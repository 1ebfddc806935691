//! Outcome data in vendors' results, checked against the catalogue: every
//! path a result takes (a synchronous reply, a poll, a callback, a reply
//! message, a result file) passes the same check before anything of it is
//! stored, and stores the data typed by the service's declaration.

use super::validate::check_outcome_data;
use crate::config::Config;
use crate::store::OutcomeCheck;
use raccordo_adapters::{DeliveryError, VendorReply};
use std::sync::Arc;

/// `reply` with its outcome data checked and typed for `service`; data the
/// declaration refuses makes the reply a permanent failure naming the
/// field: the hub cannot take the vendor's answer as it is, and an
/// operator replays the delivery once the mapping or the catalogue is put
/// right. A reply without outcome data passes untouched.
pub fn checked_reply(
    config: &Config,
    service: &str,
    reply: VendorReply,
) -> Result<VendorReply, DeliveryError> {
    if reply.outcome_data.is_empty() {
        return Ok(reply);
    }
    let outcome_data = check_outcome_data(&reply.outcome_data, declared(config, service))
        .map_err(|reason| DeliveryError::permanent(format!("vendor reply: {reason}")))?;
    Ok(VendorReply {
        outcome_data,
        ..reply
    })
}

/// The check inbound results pass in the store, once their practice (and
/// so its service) is known.
pub fn inbound_check(config: Arc<Config>) -> OutcomeCheck {
    Arc::new(
        move |service: &str, data: &serde_json::Map<String, serde_json::Value>| {
            check_outcome_data(data, declared(&config, service))
        },
    )
}

/// The outcome fields `service` declares (none for an unknown service).
fn declared<'a>(config: &'a Config, service: &str) -> &'a [crate::config::FieldConfig] {
    config
        .services
        .get(service)
        .map(|s| s.outcome_data.as_slice())
        .unwrap_or(&[])
}
