//! Hostile input over real gRPC: every row is refused with the right code
//! and an answer small enough for any client to read, and the hub still
//! takes a valid submission afterwards.

use crate::support::*;
use prost::bytes::{Buf, BufMut};
use prost_types::value::Kind;
use raccordo_proto::v1 as pb;
use std::marker::PhantomData;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The largest status message and details a refusal may carry.
const MAX_MESSAGE: usize = 2048;
const MAX_DETAILS: usize = 8192;

const T: &str = "016024";
const MB: usize = 1 << 20;

/// One hostile call.
enum Call {
    Submit(Box<pb::SubmitPracticeRequest>),
    Get(pb::GetPracticeRequest),
    List(pb::ListPracticesRequest),
    Watch(pb::WatchPracticeRequest),
    WatchMany(pb::WatchPracticesRequest),
    Withdraw(pb::WithdrawPracticeRequest),
    GetService(pb::GetServiceRequest),
    ListServices(pb::ListServicesRequest),
    Replay(pb::ReplayDeadLetterRequest),
    /// Bytes sent as they are to a method path.
    Raw(&'static str, Vec<u8>),
}

struct Row {
    name: &'static str,
    call: Call,
    code: Code,
    /// A field the `google.rpc.BadRequest` must name (INVALID_ARGUMENT only).
    field: Option<&'static str>,
}

fn row(name: &'static str, call: Call, code: Code, field: Option<&'static str>) -> Row {
    Row {
        name,
        call,
        code,
        field,
    }
}

fn invalid(name: &'static str, call: Call, field: &'static str) -> Row {
    row(name, call, Code::InvalidArgument, Some(field))
}

fn submit(edit: impl FnOnce(&mut pb::SubmitPracticeRequest)) -> Call {
    let mut r = tari_request(T, "hostile");
    edit(&mut r);
    Call::Submit(Box::new(r))
}

fn number(n: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn with_number(n: f64) -> Call {
    submit(|r| {
        r.data
            .as_mut()
            .unwrap()
            .fields
            .insert("superficie_mq".into(), number(n));
    })
}

fn attachment(name: &str) -> pb::Attachment {
    pb::Attachment {
        name: name.into(),
        media_type: "text/plain".into(),
        content: b"x".to_vec(),
        ..Default::default()
    }
}

fn with_attachments(names: &[&str]) -> Call {
    let attachments = names.iter().map(|n| attachment(n)).collect();
    submit(|r| r.attachments = attachments)
}

fn get(id: String) -> Call {
    Call::Get(pb::GetPracticeRequest {
        tenant_id: T.into(),
        practice_id: id,
        ..Default::default()
    })
}

fn list(edit: impl FnOnce(&mut pb::ListPracticesRequest)) -> Call {
    let mut r = pb::ListPracticesRequest {
        tenant_id: T.into(),
        ..Default::default()
    };
    edit(&mut r);
    Call::List(r)
}

fn at(seconds: i64, nanos: i32) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos })
}

fn withdraw(id: &str, edit: impl FnOnce(&mut pb::WithdrawPracticeRequest)) -> Call {
    let mut r = pb::WithdrawPracticeRequest {
        tenant_id: T.into(),
        practice_id: id.into(),
        ..Default::default()
    };
    edit(&mut r);
    Call::Withdraw(r)
}

fn watch_many(edit: impl FnOnce(&mut pb::WatchPracticesRequest)) -> Call {
    let mut r = pb::WatchPracticesRequest {
        tenant_id: T.into(),
        ..Default::default()
    };
    edit(&mut r);
    Call::WatchMany(r)
}

/// A form nested `depth` levels deep (`{"a": {"a": …}}`).
fn nested(depth: usize) -> prost_types::Struct {
    let mut s = prost_types::Struct::default();
    for _ in 0..depth {
        let mut outer = prost_types::Struct::default();
        outer.fields.insert(
            "a".into(),
            prost_types::Value {
                kind: Some(Kind::StructValue(s)),
            },
        );
        s = outer;
    }
    s
}

/// A length-delimited protobuf field.
fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    prost::encoding::encode_varint(bytes.len() as u64, &mut out);
    out.extend_from_slice(bytes);
    out
}

fn rows(practice_id: &str) -> Vec<Row> {
    let big = |n: usize| "x".repeat(n);
    let p = practice_id;
    vec![
        // SubmitPractice: identifiers.
        invalid(
            "huge service code",
            submit(|r| r.service_code = big(MB)),
            "service_code",
        ),
        invalid(
            "empty service code",
            submit(|r| r.service_code.clear()),
            "service_code",
        ),
        invalid(
            "service code with NUL",
            submit(|r| r.service_code = "TA\0RI".into()),
            "service_code",
        ),
        invalid("empty tenant", submit(|r| r.tenant_id.clear()), "tenant_id"),
        invalid(
            "huge tenant",
            submit(|r| r.tenant_id = big(MB)),
            "tenant_id",
        ),
        invalid(
            "tenant with NUL",
            submit(|r| r.tenant_id = "01602\0".into()),
            "tenant_id",
        ),
        invalid(
            "empty idempotency key",
            submit(|r| r.idempotency_key.clear()),
            "idempotency_key",
        ),
        invalid(
            "huge idempotency key",
            submit(|r| r.idempotency_key = big(MB)),
            "idempotency_key",
        ),
        invalid("no applicant", submit(|r| r.applicant = None), "applicant"),
        invalid(
            "huge fiscal code",
            submit(|r| {
                r.applicant = Some(pb::Applicant {
                    subject: Some(pb::applicant::Subject::Person(pb::Person {
                        fiscal_code: big(MB),
                        ..Default::default()
                    })),
                    contacts: None,
                })
            }),
            "applicant.person.fiscal_code",
        ),
        invalid(
            "huge partita IVA",
            submit(|r| {
                r.applicant = Some(pb::Applicant {
                    subject: Some(pb::applicant::Subject::Company(pb::Company {
                        vat_number: big(MB),
                        ..Default::default()
                    })),
                    contacts: None,
                })
            }),
            "applicant.company.vat_number",
        ),
        // SubmitPractice: enums and numbers.
        invalid(
            "channel 99",
            submit(|r| {
                r.channel = Some(pb::ChannelInfo {
                    channel: 99,
                    ..Default::default()
                })
            }),
            "channel.channel",
        ),
        invalid(
            "negative channel",
            submit(|r| {
                r.channel = Some(pb::ChannelInfo {
                    channel: -1,
                    ..Default::default()
                })
            }),
            "channel.channel",
        ),
        invalid("NaN", with_number(f64::NAN), "data.superficie_mq"),
        invalid(
            "+infinity",
            with_number(f64::INFINITY),
            "data.superficie_mq",
        ),
        invalid(
            "-infinity",
            with_number(f64::NEG_INFINITY),
            "data.superficie_mq",
        ),
        invalid(
            "NaN in a list",
            submit(|r| {
                r.data.as_mut().unwrap().fields.insert(
                    "misure".into(),
                    prost_types::Value {
                        kind: Some(Kind::ListValue(prost_types::ListValue {
                            values: vec![number(1.0), number(f64::NAN)],
                        })),
                    },
                );
            }),
            "data.misure[1]",
        ),
        // SubmitPractice: the form.
        invalid(
            "5,000 unknown fields",
            submit(|r| {
                let fields = &mut r.data.as_mut().unwrap().fields;
                for i in 0..5000 {
                    fields.insert(format!("campo_{i:05}"), number(1.0));
                }
            }),
            "data.campo_00000",
        ),
        invalid(
            "100 KB key",
            submit(|r| {
                r.data
                    .as_mut()
                    .unwrap()
                    .fields
                    .insert(big(100_000), number(1.0));
            }),
            "data.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…",
        ),
        invalid(
            "NUL in a key",
            submit(|r| {
                r.data
                    .as_mut()
                    .unwrap()
                    .fields
                    .insert("a\0b".into(), number(1.0));
            }),
            "data.a\\0b",
        ),
        invalid(
            "huge date",
            submit(|r| {
                r.data.as_mut().unwrap().fields.insert(
                    "decorrenza".into(),
                    prost_types::Value {
                        kind: Some(Kind::StringValue(big(60_000))),
                    },
                );
            }),
            "data.decorrenza",
        ),
        invalid(
            "nested 60 levels",
            submit(|r| r.data = Some(nested(60))),
            "data",
        ),
        invalid(
            "nested 30 levels (decodes, undeclared)",
            submit(|r| r.data = Some(nested(30))),
            "data.a",
        ),
        // SubmitPractice: attachments.
        invalid(
            "attachment .",
            with_attachments(&["."]),
            "attachments[0].name",
        ),
        invalid(
            "attachment ..",
            with_attachments(&[".."]),
            "attachments[0].name",
        ),
        invalid(
            "attachment a/b",
            with_attachments(&["a/b"]),
            "attachments[0].name",
        ),
        invalid(
            "attachment a\\b",
            with_attachments(&["a\\b"]),
            "attachments[0].name",
        ),
        invalid(
            "attachment with NUL",
            with_attachments(&["a\0b.pdf"]),
            "attachments[0].name",
        ),
        invalid(
            "attachment with newline",
            with_attachments(&["a\nb.pdf"]),
            "attachments[0].name",
        ),
        invalid(
            "attachment leading space",
            with_attachments(&[" a.pdf"]),
            "attachments[0].name",
        ),
        invalid(
            "attachment trailing space",
            with_attachments(&["a.pdf "]),
            "attachments[0].name",
        ),
        invalid(
            "attachment 256 bytes",
            with_attachments(&[&big(256)]),
            "attachments[0].name",
        ),
        invalid(
            "duplicate attachments",
            with_attachments(&["a.pdf", "a.pdf"]),
            "attachments[1].name",
        ),
        invalid(
            "5,000 empty attachments",
            submit(|r| {
                r.attachments = (0..5000)
                    .map(|i| pb::Attachment {
                        name: format!("{i}.pdf"),
                        ..Default::default()
                    })
                    .collect()
            }),
            "attachments",
        ),
        invalid(
            "huge sha256",
            submit(|r| {
                r.attachments = vec![pb::Attachment {
                    sha256: big(MB),
                    ..attachment("a.pdf")
                }]
            }),
            "attachments[0].sha256",
        ),
        invalid(
            "5 MiB submission is within its limit",
            submit(|r| {
                r.attachments = vec![pb::Attachment {
                    content: vec![1; 5 * MB],
                    ..attachment("..")
                }]
            }),
            "attachments[0].name",
        ),
        // SubmitPractice: bytes that do not decode.
        invalid(
            "invalid UTF-8 in service_code",
            Call::Raw(
                "/raccordo.v1.PracticeService/SubmitPractice",
                [field(1, b"016024"), field(2, &[0xff, 0xfe])].concat(),
            ),
            "service_code",
        ),
        invalid(
            "truncated submission",
            Call::Raw(
                "/raccordo.v1.PracticeService/SubmitPractice",
                vec![0x0a, 0x10, b'0'],
            ),
            "tenant_id",
        ),
        invalid(
            "unknown wire type",
            Call::Raw("/raccordo.v1.PracticeService/SubmitPractice", vec![0x0f]),
            "(request)",
        ),
        // GetPractice.
        invalid("empty practice id", get(String::new()), "practice_id"),
        invalid("practice id of 129 chars", get(big(129)), "practice_id"),
        invalid("huge practice id", get(big(MB)), "practice_id"),
        invalid("practice id with NUL", get("a\0b".into()), "practice_id"),
        row(
            "5 MiB practice id",
            get(big(5 * MB)),
            Code::OutOfRange,
            None,
        ),
        row("unknown practice id", get(big(128)), Code::NotFound, None),
        invalid(
            "invalid UTF-8 in practice_id",
            Call::Raw(
                "/raccordo.v1.PracticeService/GetPractice",
                [field(1, b"016024"), field(2, &[0xc3, 0x28])].concat(),
            ),
            "practice_id",
        ),
        // ListPractices.
        invalid("status 99", list(|r| r.status = 99), "status"),
        invalid("status -5", list(|r| r.status = -5), "status"),
        invalid(
            "from i64::MAX",
            list(|r| r.submitted_from = at(i64::MAX, 0)),
            "submitted_from",
        ),
        invalid(
            "to i64::MIN",
            list(|r| r.submitted_to = at(i64::MIN, 0)),
            "submitted_to",
        ),
        invalid(
            "year 10000",
            list(|r| r.submitted_to = at(253_402_300_800, 0)),
            "submitted_to",
        ),
        invalid(
            "negative nanos",
            list(|r| r.submitted_from = at(0, -1)),
            "submitted_from",
        ),
        invalid(
            "nanos of a second",
            list(|r| r.submitted_from = at(0, 1_000_000_000)),
            "submitted_from",
        ),
        invalid(
            "garbage page token",
            list(|r| r.page_token = "%%%".into()),
            "page_token",
        ),
        invalid(
            "huge page token",
            list(|r| r.page_token = big(MB)),
            "page_token",
        ),
        invalid(
            "huge applicant filter",
            list(|r| r.applicant_id = big(MB)),
            "applicant_id",
        ),
        invalid(
            "service filter with NUL",
            list(|r| r.service_code = "T\0".into()),
            "service_code",
        ),
        invalid(
            "list bad tenant",
            list(|r| r.tenant_id = "x".into()),
            "tenant_id",
        ),
        // WatchPractice and WatchPractices.
        invalid(
            "from_sequence 2^63",
            Call::Watch(one_practice_from(T, p, 1 << 63)),
            "from_sequence",
        ),
        invalid(
            "from_sequence u64::MAX",
            Call::Watch(one_practice_from(T, p, u64::MAX)),
            "from_sequence",
        ),
        invalid(
            "watch empty id",
            Call::Watch(one_practice_from(T, "", 0)),
            "practice_id",
        ),
        invalid(
            "watch huge id",
            Call::Watch(one_practice_from(T, &big(MB), 0)),
            "practice_id",
        ),
        invalid(
            "watch bad tenant",
            Call::Watch(one_practice_from("0", p, 0)),
            "tenant_id",
        ),
        invalid(
            "after_cursor 2^63",
            watch_many(|r| r.after_cursor = 1 << 63),
            "after_cursor",
        ),
        invalid(
            "watch huge applicant",
            watch_many(|r| r.applicant_id = big(MB)),
            "applicant_id",
        ),
        row(
            "watch 5 MiB",
            watch_many(|r| r.service_code = big(5 * MB)),
            Code::OutOfRange,
            None,
        ),
        invalid(
            "watch invalid UTF-8",
            Call::Raw(
                "/raccordo.v1.PracticeService/WatchPractices",
                [field(1, b"016024"), field(2, &[0xff])].concat(),
            ),
            "applicant_id",
        ),
        // WithdrawPractice.
        invalid(
            "3 MB reason",
            withdraw(p, |r| r.reason = big(3 * MB)),
            "reason",
        ),
        invalid(
            "2,001 char reason",
            withdraw(p, |r| r.reason = "è".repeat(2001)),
            "reason",
        ),
        invalid(
            "reason with NUL",
            withdraw(p, |r| r.reason = "a\0b".into()),
            "reason",
        ),
        invalid(
            "huge operator",
            withdraw(p, |r| r.operator_id = big(MB)),
            "operator_id",
        ),
        invalid("withdraw empty id", withdraw("", |_| {}), "practice_id"),
        // CatalogService and DeliveryAdminService.
        invalid(
            "huge service code (catalog)",
            Call::GetService(pb::GetServiceRequest {
                tenant_id: T.into(),
                service_code: big(MB),
            }),
            "service_code",
        ),
        row(
            "unknown service with escapes",
            Call::GetService(pb::GetServiceRequest {
                tenant_id: T.into(),
                service_code: "NOPE\u{1b}[31m".replace('\u{1b}', "").repeat(10),
            }),
            Code::NotFound,
            None,
        ),
        invalid(
            "huge tenant (catalog)",
            Call::ListServices(pb::ListServicesRequest { tenant_id: big(MB) }),
            "tenant_id",
        ),
        invalid(
            "huge operation id",
            Call::Replay(pb::ReplayDeadLetterRequest {
                operation_id: big(MB),
                ..Default::default()
            }),
            "operation_id",
        ),
        row(
            "unknown operation id",
            Call::Replay(pb::ReplayDeadLetterRequest {
                operation_id: big(128),
                ..Default::default()
            }),
            Code::NotFound,
            None,
        ),
    ]
}

async fn run(hub: &TestHub, call: Call) -> Result<(), Status> {
    let (mut practices, mut catalog, mut admin) = (
        hub.practices.clone(),
        hub.catalog.clone(),
        hub.admin.clone(),
    );
    match call {
        Call::Submit(r) => practices.submit_practice(*r).await.map(drop),
        Call::Get(r) => practices.get_practice(r).await.map(drop),
        Call::List(r) => practices.list_practices(r).await.map(drop),
        Call::Watch(r) => practices.watch_practice(r).await.map(drop),
        Call::WatchMany(r) => practices.watch_practices(r).await.map(drop),
        Call::Withdraw(r) => practices.withdraw_practice(r).await.map(drop),
        Call::GetService(r) => catalog.get_service(r).await.map(drop),
        Call::ListServices(r) => catalog.list_services(r).await.map(drop),
        Call::Replay(r) => admin.replay_dead_letter(r).await.map(drop),
        Call::Raw(path, bytes) => {
            let mut grpc = tonic::client::Grpc::new(hub.channel.clone());
            grpc.ready()
                .await
                .map_err(|e| Status::unknown(e.to_string()))?;
            let path = http::uri::PathAndQuery::from_static(path);
            if path.as_str().ends_with("WatchPractices") {
                let mut stream = grpc
                    .server_streaming(tonic::Request::new(bytes), path, RawCodec::default())
                    .await?
                    .into_inner();
                stream.message().await.map(drop)
            } else {
                grpc.unary(tonic::Request::new(bytes), path, RawCodec::default())
                    .await
                    .map(drop)
            }
        }
    }
}

#[tokio::test]
async fn hostile_input_is_refused_by_field_with_bounded_answers() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let practice = hub.submit(tari_request(T, "before")).await;

    let rows = rows(&practice.id);
    assert!(rows.len() >= 60, "{} rows", rows.len());
    let mut failures = Vec::new();
    for Row {
        name,
        call,
        code,
        field,
    } in rows
    {
        let status = match run(&hub, call).await {
            Ok(()) => {
                failures.push(format!("{name}: accepted"));
                continue;
            }
            Err(s) => s,
        };
        if status.code() != code {
            failures.push(format!(
                "{name}: {:?} instead of {code:?}: {}",
                status.code(),
                status.message().chars().take(300).collect::<String>()
            ));
            continue;
        }
        if status.message().len() >= MAX_MESSAGE || status.details().len() >= MAX_DETAILS {
            failures.push(format!(
                "{name}: message of {} bytes, details of {}",
                status.message().len(),
                status.details().len()
            ));
        }
        if let Some(field) = field {
            let violations = status
                .get_details_bad_request()
                .map(|b| b.field_violations)
                .unwrap_or_default();
            // A path cut short still starts with the field expected.
            let named = |v: &String| v == field || v.starts_with(&format!("{field}."));
            if !violations.iter().any(|v| named(&v.field)) {
                failures.push(format!(
                    "{name}: no violation of {field:?} in {:?}",
                    violations
                        .iter()
                        .map(|v| &v.field)
                        .take(5)
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The hub still serves, and nothing hostile was stored.
    let after = hub.submit(tari_request(T, "after")).await;
    assert_eq!(after.status, pb::AdministrativeStatus::Submitted as i32);
    let listed = hub
        .practices
        .list_practices(pb::ListPracticesRequest {
            tenant_id: T.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .practices;
    assert_eq!(listed.len(), 2, "only the two valid submissions are stored");
    hub.stop().await;
}

#[tokio::test]
async fn a_refusal_lists_twenty_violations_and_counts_the_rest() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let mut r = tari_request(T, "many");
    let fields = &mut r.data.as_mut().unwrap().fields;
    for i in 0..5000 {
        fields.insert(format!("x{i:04}"), number(1.0));
    }
    let status = hub.practices.submit_practice(r).await.unwrap_err();
    let violations = status.get_details_bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 21);
    assert_eq!(violations[0].field, "data.x0000");
    assert_eq!(
        violations[20].description,
        "and 4980 more violations not listed"
    );
    hub.stop().await;
}

/// Sends bytes as they are and reads replies as bytes: for requests no
/// generated client can encode.
#[derive(Default)]
struct RawCodec(PhantomData<()>);

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec::default()
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}
