//! Fixtures shared by the adapter tests.

use raccordo_adapters::DeliveryRequest;
use raccordo_adapters::message::{NormalizedMessage, SCHEMA_V1};
use raccordo_adapters::model::*;
use std::sync::Arc;

/// A first-attempt submission of a TARI declaration for Mario Rossi.
pub fn request() -> DeliveryRequest {
    DeliveryRequest {
        message: Arc::new(NormalizedMessage {
            schema: SCHEMA_V1.into(),
            message_id: "op-1".into(),
            operation: Operation::Submit,
            practice_id: "p-1".into(),
            tenant_id: "016024".into(),
            service_code: "CERT".into(),
            applicant: Applicant {
                subject: Subject::Person(Person {
                    fiscal_code: "RSSMRA45D25F205N".into(),
                    given_name: "Mario".into(),
                    family_name: "Rossi".into(),
                }),
                contacts: Contacts::default(),
            },
            submitter: None,
            channel: ChannelInfo::default(),
            data: serde_json::Map::new(),
            attachments: vec![],
            submitted_at: chrono::Utc::now(),
            withdrawal_reason: None,
            outcome_data: Default::default(),
        }),
        attempt: 1,
        route_vars: Arc::new(serde_json::Map::new()),
        traceparent: None,
    }
}
