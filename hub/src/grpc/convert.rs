//! Conversions between the wire types (`raccordo.v1`) and the domain.

use super::error::invalid;
use crate::config::{Mode, ServiceConfig};
use crate::domain::practice::{DeliveryView, Event, EventKind, EventSource, Practice};
use crate::domain::status::DeliveryStatus;
use crate::domain::validate::{AttachmentInput, Violations, cut};
use crate::practices::{CatalogEntry, HubError, SubmitInput};
use crate::store::DeadLetter;
use chrono::{DateTime, Utc};
use prost_types::{Struct, Timestamp, value::Kind};
use raccordo_adapters::model::{
    AdminStatus, Applicant, ChannelInfo, ChannelKind, Company, Contacts, Document, ExternalRef,
    Person, Subject, Submitter,
};
use raccordo_proto::v1 as pb;
use serde_json::{Map, Number, Value};
use tonic::Status;

/// Timestamp → chrono (`None` outside the range protobuf allows: years
/// 0001 to 9999, nanoseconds 0 to 999,999,999).
pub fn from_timestamp(t: &Timestamp) -> Option<DateTime<Utc>> {
    const MIN: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(MIN..=MAX).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    DateTime::from_timestamp(t.seconds, t.nanos as u32)
}

/// An optional request timestamp: refused, naming `field`, when out of range.
pub fn timestamp(field: &str, t: Option<&Timestamp>) -> Result<Option<DateTime<Utc>>, Status> {
    t.map(|t| {
        from_timestamp(t).ok_or_else(|| {
            invalid(
                field,
                "must be between 0001-01-01 and 9999-12-31, with nanos from 0 to 999999999",
            )
        })
    })
    .transpose()
}

/// chrono → Timestamp.
pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// `google.protobuf.Struct` → JSON object.
pub fn struct_to_json(s: Struct) -> Map<String, Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> Value {
    match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => {
            // Struct has only doubles; keep integers integral in the JSON.
            if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
                Value::Number(Number::from(n as i64))
            } else {
                Number::from_f64(n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

/// JSON object → `google.protobuf.Struct`.
pub fn json_to_struct(m: &Map<String, Value>) -> Struct {
    Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn person(p: pb::Person) -> Person {
    Person {
        fiscal_code: p.fiscal_code.trim().to_string(),
        given_name: p.given_name,
        family_name: p.family_name,
    }
}

pub fn person_pb(p: &Person) -> pb::Person {
    pb::Person {
        fiscal_code: p.fiscal_code.clone(),
        given_name: p.given_name.clone(),
        family_name: p.family_name.clone(),
    }
}

fn contacts(c: Option<pb::Contacts>) -> Contacts {
    let c = c.unwrap_or_default();
    Contacts {
        email: c.email,
        pec: c.pec,
        phone: c.phone,
        address: c.address,
    }
}

pub fn contacts_pb(c: &Contacts) -> Option<pb::Contacts> {
    (c != &Contacts::default()).then(|| pb::Contacts {
        email: c.email.clone(),
        pec: c.pec.clone(),
        phone: c.phone.clone(),
        address: c.address.clone(),
    })
}

fn applicant(a: pb::Applicant) -> Option<Applicant> {
    let subject = match a.subject? {
        pb::applicant::Subject::Person(p) => Subject::Person(person(p)),
        pb::applicant::Subject::Company(c) => Subject::Company(Company {
            vat_number: c.vat_number.trim().to_string(),
            name: c.name,
            representative: c.representative.map(person),
        }),
    };
    Some(Applicant {
        subject,
        contacts: contacts(a.contacts),
    })
}

pub fn applicant_pb(a: &Applicant) -> pb::Applicant {
    pb::Applicant {
        subject: Some(match &a.subject {
            Subject::Person(p) => pb::applicant::Subject::Person(person_pb(p)),
            Subject::Company(c) => pb::applicant::Subject::Company(pb::Company {
                vat_number: c.vat_number.clone(),
                name: c.name.clone(),
                representative: c.representative.as_ref().map(person_pb),
            }),
        }),
        contacts: contacts_pb(&a.contacts),
    }
}

/// What the domain types cannot carry: an enum value outside the declared
/// set, a number that is not finite (JSON has no NaN: it would arrive as
/// a missing value). Reported before the rest of validation.
fn wire_violations(r: &pb::SubmitPracticeRequest) -> Violations {
    let mut v = Violations::default();
    if let Some(c) = &r.channel
        && pb::Channel::try_from(c.channel).is_err()
    {
        v.add(
            "channel.channel",
            format!("{} is not a value of Channel (ONLINE, DESK)", c.channel),
        );
    }
    if let Some(d) = &r.data {
        for (k, value) in &d.fields {
            non_finite(&mut v, &format!("data.{}", cut(k)), value);
        }
    }
    v
}

fn non_finite(v: &mut Violations, path: &str, value: &prost_types::Value) {
    match &value.kind {
        Some(Kind::NumberValue(n)) if !n.is_finite() => {
            v.add(path, "must be a finite number");
        }
        Some(Kind::StructValue(s)) => {
            for (k, value) in &s.fields {
                non_finite(v, &format!("{path}.{}", cut(k)), value);
            }
        }
        Some(Kind::ListValue(l)) => {
            for (i, value) in l.values.iter().enumerate() {
                non_finite(v, &format!("{path}[{i}]"), value);
            }
        }
        _ => {}
    }
}

/// The wire submission → the domain input (the domain validates it; what
/// only the wire can get wrong is refused here).
pub fn submit_input(r: pb::SubmitPracticeRequest) -> Result<SubmitInput, Status> {
    let wrong = wire_violations(&r);
    if !wrong.is_empty() {
        return Err(HubError::Invalid(wrong.0).into());
    }
    let channel = r.channel.unwrap_or_default();
    Ok(SubmitInput {
        tenant_id: r.tenant_id.trim().to_string(),
        service_code: r.service_code.trim().to_string(),
        applicant: r.applicant.and_then(applicant),
        submitter: r.submitter.map(|s| Submitter {
            person: person(s.person.unwrap_or_default()),
            role: s.role,
            contacts: contacts(s.contacts),
        }),
        channel: ChannelInfo {
            kind: if channel.channel == pb::Channel::Desk as i32 {
                ChannelKind::Desk
            } else {
                ChannelKind::Online
            },
            operator_id: channel.operator_id,
            desk_id: channel.desk_id,
        },
        data: r.data.map(struct_to_json).unwrap_or_default(),
        attachments: r
            .attachments
            .into_iter()
            .map(|a| AttachmentInput {
                name: a.name,
                media_type: a.media_type,
                sha256: a.sha256,
                content: a.content,
            })
            .collect(),
        idempotency_key: r.idempotency_key,
    })
}

/// Administrative status → wire enum.
pub fn status_pb(s: AdminStatus) -> pb::AdministrativeStatus {
    use pb::AdministrativeStatus as P;
    match s {
        AdminStatus::Submitted => P::Submitted,
        AdminStatus::Registered => P::Registered,
        AdminStatus::InProgress => P::InProgress,
        AdminStatus::IntegrationRequested => P::IntegrationRequested,
        AdminStatus::Integrated => P::Integrated,
        AdminStatus::Approved => P::Approved,
        AdminStatus::Rejected => P::Rejected,
        AdminStatus::Withdrawn => P::Withdrawn,
        AdminStatus::Cancelled => P::Cancelled,
    }
}

/// Wire enum → administrative status (`None` for UNSPECIFIED/unknown).
pub fn status_from_pb(v: i32) -> Option<AdminStatus> {
    AdminStatus::ALL
        .into_iter()
        .find(|s| status_pb(*s) as i32 == v)
}

/// Delivery status → wire enum.
pub fn delivery_pb(d: DeliveryStatus) -> pb::DeliveryStatus {
    use pb::DeliveryStatus as P;
    match d {
        DeliveryStatus::Queued => P::Queued,
        DeliveryStatus::Sent => P::Sent,
        DeliveryStatus::Acknowledged => P::Acknowledged,
        DeliveryStatus::Retrying => P::Retrying,
        DeliveryStatus::OutcomeUnknown => P::OutcomeUnknown,
        DeliveryStatus::DeadLettered => P::DeadLettered,
        DeliveryStatus::Cancelled => P::DeliveryCancelled,
    }
}

/// Mode → wire enum.
pub fn mode_pb(m: Mode) -> pb::InteractionMode {
    match m {
        Mode::Sync => pb::InteractionMode::Sync,
        Mode::Deferred => pb::InteractionMode::Deferred,
        Mode::Auto => pb::InteractionMode::Auto,
    }
}

fn document_pb(d: &Document) -> pb::Attachment {
    pb::Attachment {
        name: d.meta.name.clone(),
        media_type: d.meta.media_type.clone(),
        size_bytes: d.meta.size_bytes,
        sha256: d.meta.sha256.clone(),
        content: d.content.clone(),
    }
}

fn external_ref_pb(r: &ExternalRef) -> pb::ExternalRef {
    pb::ExternalRef {
        kind: r.kind.clone(),
        value: r.value.clone(),
        system: r.system.clone(),
        issued_at: r.issued_at.map(to_timestamp),
    }
}

fn delivery_view_pb(d: &DeliveryView) -> pb::Delivery {
    pb::Delivery {
        status: delivery_pb(d.status) as i32,
        operation_id: d.operation_id.clone(),
        adapter: d.adapter.clone(),
        attempts: d.attempts,
        next_attempt_at: d.next_attempt_at.map(to_timestamp),
        last_error: d.last_error.clone().unwrap_or_default(),
        failure_class: d.failure_class.clone().unwrap_or_default(),
    }
}

/// A stored practice → the wire message.
pub fn practice_pb(p: &Practice, events: &[Event]) -> pb::Practice {
    let c = &p.content;
    pb::Practice {
        id: p.id.clone(),
        tenant_id: p.tenant_id.clone(),
        service_code: p.service_code.clone(),
        applicant: Some(applicant_pb(&c.applicant)),
        submitter: c.submitter.as_ref().map(|s| pb::Submitter {
            person: Some(person_pb(&s.person)),
            role: s.role.clone(),
            contacts: contacts_pb(&s.contacts),
        }),
        channel: Some(pb::ChannelInfo {
            channel: match c.channel.kind {
                ChannelKind::Online => pb::Channel::Online,
                ChannelKind::Desk => pb::Channel::Desk,
            } as i32,
            operator_id: c.channel.operator_id.clone(),
            desk_id: c.channel.desk_id.clone(),
        }),
        data: Some(json_to_struct(&c.data)),
        attachments: p.attachments.iter().map(document_pb).collect(),
        idempotency_key: p.idempotency_key.clone(),
        status: status_pb(p.status) as i32,
        delivery: p.delivery.as_ref().map(delivery_view_pb),
        events: events.iter().map(event_pb).collect(),
        outcome: p.outcome.as_ref().map(|o| pb::Outcome {
            status: status_pb(o.status) as i32,
            reason: o.reason.clone().unwrap_or_default(),
            vendor_code: o.vendor_code.clone().unwrap_or_default(),
            documents: o.documents.iter().map(document_pb).collect(),
        }),
        external_refs: p.external_refs.iter().map(external_ref_pb).collect(),
        received_at: Some(to_timestamp(p.received_at)),
        legal_deadline: p.legal_deadline.map(to_timestamp),
        concluded_at: p.concluded_at.map(to_timestamp),
        mode: mode_pb(p.mode) as i32,
        outcome_data: (!p.outcome_data.is_empty()).then(|| json_to_struct(&p.outcome_data)),
    }
}

/// An event → the wire message.
pub fn event_pb(e: &Event) -> pb::PracticeEvent {
    pb::PracticeEvent {
        practice_id: e.practice_id.clone(),
        tenant_id: e.tenant_id.clone(),
        sequence: e.sequence as u64,
        occurred_at: Some(to_timestamp(e.occurred_at)),
        recorded_at: Some(to_timestamp(e.recorded_at)),
        source: match e.source {
            EventSource::Hub => pb::EventSource::Hub,
            EventSource::Adapter => pb::EventSource::Adapter,
            EventSource::Operator => pb::EventSource::Operator,
            EventSource::Applicant => pb::EventSource::Applicant,
        } as i32,
        kind: match e.kind {
            EventKind::StatusChanged => pb::EventKind::StatusChanged,
            EventKind::DeliveryChanged => pb::EventKind::DeliveryChanged,
            EventKind::Anomaly => pb::EventKind::Anomaly,
            EventKind::OutcomeData => pb::EventKind::OutcomeDataChanged,
        } as i32,
        from_status: e.from_status.map_or(0, |s| status_pb(s) as i32),
        to_status: e.to_status.map_or(0, |s| status_pb(s) as i32),
        from_delivery: e.from_delivery.map_or(0, |d| delivery_pb(d) as i32),
        to_delivery: e.to_delivery.map_or(0, |d| delivery_pb(d) as i32),
        reason: e.reason.clone().unwrap_or_default(),
        vendor_code: e.vendor_code.clone().unwrap_or_default(),
        cursor: e.cursor as u64,
        service_code: e.service_code.clone(),
        actor: e.actor.clone(),
        outcome_data: e.outcome_data.as_ref().map(json_to_struct),
    }
}

/// A catalogue entry → the wire message.
pub fn service_pb(entry: &CatalogEntry) -> pb::Service {
    let s: &ServiceConfig = &entry.service;
    pb::Service {
        tenant_id: entry.tenant_id.clone(),
        code: entry.code.clone(),
        title: s.title.clone(),
        description: s.description.clone(),
        legal_term_days: s.legal_term_days,
        administrative_regime: s.regime.clone(),
        mode: mode_pb(entry.mode) as i32,
        fields: s.fields.iter().map(form_field_pb).collect(),
        withdrawal_forwarded: entry.withdrawal_forwarded,
        outcome_fields: s.outcome_data.iter().map(form_field_pb).collect(),
    }
}

/// A declared field (form or outcome data) → the wire message.
fn form_field_pb(f: &crate::config::FieldConfig) -> pb::FormField {
    pb::FormField {
        name: f.name.clone(),
        r#type: f.field_type.as_str().to_string(),
        required: f.required,
        pattern: f.pattern.clone().unwrap_or_default(),
        description: f.description.clone(),
    }
}

/// A dead letter → the wire message.
pub fn dead_letter_pb(d: &DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        operation_id: d.operation_id.clone(),
        practice_id: d.practice_id.clone(),
        tenant_id: d.tenant_id.clone(),
        service_code: d.service_code.clone(),
        adapter: d.adapter.clone(),
        operation: d.operation.as_str().to_string(),
        attempts: d.attempts,
        last_error: d.last_error.clone().unwrap_or_default(),
        failure_class: d.failure_class.clone().unwrap_or_default(),
        dead_lettered_at: Some(to_timestamp(d.dead_lettered_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_round_trip_keeps_integers_integral() {
        let json = serde_json::json!({"a": 1, "b": 1.5, "c": [true, null, "x"], "d": {"e": "f"}});
        let back = struct_to_json(json_to_struct(json.as_object().unwrap()));
        assert_eq!(Value::Object(back), json);
    }

    /// A small deterministic generator (xorshift64*): the same inputs on
    /// every run, so a failure is reproduced by running the test again.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// A request the demo catalogue accepts, encoded.
    fn valid_request() -> Vec<u8> {
        use prost::Message;
        let data = serde_json::json!({"anno": 2026, "superficie_mq": 84.5, "note": "a\nb",
            "nested": {"list": [1, "x", null, {"k": true}]}});
        pb::SubmitPracticeRequest {
            tenant_id: "016024".into(),
            service_code: "CERT_RESIDENZA".into(),
            idempotency_key: "property-test".into(),
            applicant: Some(pb::Applicant {
                subject: Some(pb::applicant::Subject::Person(pb::Person {
                    fiscal_code: "RSSMRA85M01H501Q".into(),
                    given_name: "Maria".into(),
                    family_name: "Rossi".into(),
                })),
                contacts: None,
            }),
            data: Some(json_to_struct(data.as_object().expect("an object"))),
            attachments: vec![pb::Attachment {
                name: "domanda.pdf".into(),
                media_type: "application/pdf".into(),
                content: b"%PDF-1.7 hostile".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// A refusal the client can read: `INVALID_ARGUMENT`, bounded.
    fn assert_readable_refusal(status: &Status, input: &[u8]) {
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{status:?} for {input:?}"
        );
        assert!(
            status.message().len() < 2048,
            "message of {} bytes",
            status.message().len()
        );
        assert!(
            status.details().len() < 8192,
            "details of {} bytes",
            status.details().len()
        );
    }

    /// Hostile bytes on the request path: random bytes and random
    /// mutations of a valid request (bytes flipped, inserted, cut), through
    /// decoding, the wire checks and the domain's validators against every
    /// form of the demo catalogue. None panics, and every refusal is
    /// `INVALID_ARGUMENT` with a bounded message and details.
    #[test]
    fn the_request_path_refuses_hostile_bytes_readably() {
        use crate::domain::validate;
        use prost::Message;
        use sha2::Digest;
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo.toml");
        let config = crate::config::load(&demo).expect("the demo configuration loads");
        let valid = valid_request();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut decoded, mut refused) = (0, 0);
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 5 == 0 {
                (0..rng.below(600)).map(|_| rng.next() as u8).collect()
            } else {
                let mut b = valid.clone();
                for _ in 0..=rng.below(2) {
                    let at = rng.below(b.len());
                    match rng.below(8) {
                        0..=4 => b[at] = rng.next() as u8,
                        5 | 6 => b.insert(at, rng.next() as u8),
                        _ => b.truncate(at.max(1)),
                    }
                }
                b
            };
            let Ok(request) = pb::SubmitPracticeRequest::decode(&bytes[..]) else {
                continue; // the codec's refusal: tested end to end
            };
            decoded += 1;
            let input = match submit_input(request) {
                Ok(input) => input,
                Err(status) => {
                    refused += 1;
                    assert_readable_refusal(&status, &bytes);
                    continue;
                }
            };
            let mut v = Violations::default();
            validate::check_applicant(&mut v, input.applicant.as_ref());
            validate::check_submitter(&mut v, input.submitter.as_ref());
            for service in config.services.values() {
                validate::check_form(&mut v, &input.data, &service.fields, &config.limits);
            }
            let digests: Vec<String> = input
                .attachments
                .iter()
                .map(|a| format!("{:x}", sha2::Sha256::digest(&a.content)))
                .collect();
            validate::check_attachments(&mut v, &input.attachments, &digests, &config.limits);
            if !v.is_empty() {
                refused += 1;
                assert_readable_refusal(&Status::from(HubError::Invalid(v.0)), &bytes);
            }
        }
        // The generator reached past the decoder, and the checks refused.
        println!("{decoded} of 20000 inputs decoded, {refused} refused");
        assert!(decoded > 2_000, "only {decoded} inputs decoded");
        assert!(refused > 500, "only {refused} refusals");
    }

    #[test]
    fn status_enum_round_trip() {
        for s in AdminStatus::ALL {
            assert_eq!(status_from_pb(status_pb(s) as i32), Some(s));
        }
        assert_eq!(status_from_pb(0), None);
    }
}
