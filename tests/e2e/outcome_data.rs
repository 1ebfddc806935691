//! Outcome data end to end: vendors on loopback answer with the data the
//! front office needs (a certificate's number and validity, the amount of
//! a TARI declaration), by a synchronous reply, a REST callback and a
//! result file; the hub checks it against the catalogue, stores it typed,
//! and shows it in `Practice`, in the watch events of the result that set
//! it and in the catalogue; a result whose data the catalogue refuses is
//! refused whole, naming the field.

use crate::support::*;
use raccordo_proto::v1 as pb;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const TENANT: &str = "016024";
const SECRET: &str = "outcome-secret-0123456789";
/// `%PDF-1.4` and a line: the certificate a vendor sends in one field.
const PDF_BASE64: &str = "JVBERi0xLjQKY2VydGlmaWNhdG8K";

/// CERT (sync, REST `anagrafe`), TARI (deferred, REST push `tributi`) and
/// IMU (deferred, file drop `imu`), each declaring its outcome data.
fn config(vendor: &str, http: SocketAddr) -> String {
    format!(
        r#"
[hub]
grpc_listen = "127.0.0.1:0"
http_listen = "{http}"
data_dir = "data"
shutdown_grace = "2s"

[delivery]
max_attempts = 3
initial_backoff = "50ms"
max_backoff = "200ms"
poll_interval = "50ms"

[tenants."016024"]
name = "Comune di Bergamo"

[services.CERT]
title = "Certificato di residenza"
[[services.CERT.outcome_data]]
name = "numero_certificato"
type = "string"
pattern = "C-[0-9]+"
[[services.CERT.outcome_data]]
name = "valido_fino"
type = "date"

[services.TARI]
title = "Dichiarazione TARI"
[[services.TARI.fields]]
name = "superficie_mq"
type = "number"
required = true
[[services.TARI.outcome_data]]
name = "importo_dovuto"
type = "number"
description = "Importo annuo dovuto, in euro"
[[services.TARI.outcome_data]]
name = "scadenza"
type = "date"
[[services.TARI.outcome_data]]
name = "codice_avviso"
type = "string"

[services.IMU]
title = "Dichiarazione IMU"
[[services.IMU.outcome_data]]
name = "rate"
type = "integer"
[[services.IMU.outcome_data]]
name = "importo_dovuto"
type = "number"

[adapters.anagrafe]
kind = "rest"
base_url = "{vendor}"
timeout = "3s"
connect_timeout = "500ms"
[adapters.anagrafe.submit]
path = "/certificati"
[adapters.anagrafe.response]
status_pointer = "/esito"
status_map = {{ OK = "APPROVED", KO = "REJECTED" }}
protocol_pointer = "/protocollo"
[adapters.anagrafe.response.outcome_data]
numero_certificato = "/certificato/numero"
valido_fino = "/certificato/scadenza"
[[adapters.anagrafe.response.base64_documents]]
field = "/certificato/pdf"
name = "certificato.pdf"
media_type = "application/pdf"
max_bytes = 1024

[adapters.tributi]
kind = "rest"
pattern = "NONBLOCK_PUSH_REST"
base_url = "{vendor}"
timeout = "3s"
connect_timeout = "500ms"
[adapters.tributi.submit]
path = "/tari"
[adapters.tributi.callback]
public_base_url = "http://{http}"
secret_file = "callback.secret"
max_skew = "60s"
[adapters.tributi.response]
status_pointer = "/esito"
status_map = {{ OK = "APPROVED", PRESO = "REGISTERED" }}
outcome_data_pointer = "/dati"
[adapters.tributi.response.outcome_data]
importo_dovuto = "/importo"
scadenza = "/scadenza"

[adapters.imu]
kind = "file"
[adapters.imu.outbound]
folder = "inbox"
name_template = "{{{{ practice_id }}}}.json"
[adapters.imu.inbound]
folder = "outbox"
completion = "rename"
scan_interval = "100ms"
format = "csv"
[adapters.imu.inbound.fields]
practice_id = "ID_PRATICA"
status = "ESITO"
status_map = {{ OK = "APPROVED" }}
[adapters.imu.inbound.fields.outcome_data]
rate = "RATE"
importo_dovuto = "IMPORTO"
[[adapters.imu.inbound.fields.base64_documents]]
field = "F24_PDF"
name = "f24.pdf"
media_type = "application/pdf"

[[routes]]
tenants = ["016024"]
service = "CERT"
adapter = "anagrafe"
mode = "sync"
deadline = "5s"

[[routes]]
tenants = ["016024"]
service = "TARI"
adapter = "tributi"
mode = "deferred"

[[routes]]
tenants = ["016024"]
service = "IMU"
adapter = "imu"
mode = "deferred"
"#
    )
}

/// A hub on [`config`], with the vendor at `vendor`.
async fn start(vendor: &str, http: SocketAddr) -> TestHub {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    for sub in ["inbox", "outbox"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    std::fs::write(dir.path().join("callback.secret"), SECRET).unwrap();
    let path = dir.path().join("raccordo.toml");
    std::fs::write(&path, config(vendor, http)).unwrap();
    let config = raccordo::config::load(&path).expect("test config loads");
    assert!(raccordo::config::check(&config).is_empty());
    let hub = raccordo::server::start(config).await.expect("hub starts");
    let channel = connect(hub.grpc_addr).await;
    TestHub {
        practices: pb::practice_service_client::PracticeServiceClient::new(channel.clone()),
        admin: pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel.clone()),
        catalog: pb::catalog_service_client::CatalogServiceClient::new(channel.clone()),
        channel,
        hub: Some(hub),
        dir,
    }
}

/// Stops the hub and checks the audit trail of its database.
async fn stop_and_verify(mut hub: TestHub) {
    let path = hub.dir.path().join("raccordo.toml");
    let db = raccordo::config::load(&path).unwrap().database_path();
    hub.hub.take().unwrap().shutdown().await.unwrap();
    let report = raccordo::store::sqlite::SqliteStore::verify_audit(&db, None).unwrap();
    assert!(report.is_intact(), "{report:?}");
}

fn request(service: &str, key: &str, form: Value) -> pb::SubmitPracticeRequest {
    pb::SubmitPracticeRequest {
        tenant_id: TENANT.into(),
        service_code: service.into(),
        applicant: Some(mario()),
        data: Some(data(form)),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

fn json_of(s: Option<&prost_types::Struct>) -> Value {
    s.map_or(Value::Null, |s| {
        Value::Object(raccordo::grpc::convert::struct_to_json(s.clone()))
    })
}

/// POSTs a signed callback about operation `correlation`.
async fn callback(http: SocketAddr, correlation: &str, receipt: &str, body: Value) -> (u16, Value) {
    let body = body.to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = raccordo_adapters::rest::callback::sign(SECRET.as_bytes(), &ts, body.as_bytes());
    let resp = reqwest::Client::new()
        .post(format!("http://{http}/callbacks/tributi/result"))
        .header("content-type", "application/json")
        .header("x-correlation-id", correlation)
        .header("idempotency-key", receipt)
        .header("x-timestamp", ts)
        .header("x-signature", sig)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_synchronous_reply_carries_typed_outcome_data_and_a_base64_certificate() {
    let vendor = Vendor::start().await;
    let http = free_addr().await;
    let mut hub = start(&vendor.url(), http).await;
    // The catalogue tells front offices what to expect.
    let service = hub
        .catalog
        .get_service(pb::GetServiceRequest {
            tenant_id: TENANT.into(),
            service_code: "TARI".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let declared: Vec<(&str, &str)> = service
        .outcome_fields
        .iter()
        .map(|f| (f.name.as_str(), f.r#type.as_str()))
        .collect();
    assert_eq!(
        declared,
        [
            ("importo_dovuto", "number"),
            ("scadenza", "date"),
            ("codice_avviso", "string")
        ]
    );

    vendor.push(Answer::new(
        200,
        json!({"esito": "OK", "protocollo": "2026/9",
            "certificato": {"numero": "C-77", "scadenza": "2027-01-31", "pdf": PDF_BASE64}}),
    ));
    let p = hub.submit(request("CERT", "cert-1", json!({}))).await;
    assert_eq!(p.status, pb::AdministrativeStatus::Approved as i32);
    assert_eq!(
        json_of(p.outcome_data.as_ref()),
        json!({"numero_certificato": "C-77", "valido_fino": "2027-01-31"})
    );
    let p = hub.get(TENANT, &p.id).await;
    let outcome = p.outcome.as_ref().expect("an outcome");
    assert_eq!(outcome.documents.len(), 1);
    assert_eq!(outcome.documents[0].name, "certificato.pdf");
    assert_eq!(outcome.documents[0].media_type, "application/pdf");
    assert_eq!(outcome.documents[0].size_bytes, 21);
    // The approval's event carries the data it set.
    let approved = p
        .events
        .iter()
        .find(|e| status_is(e, pb::AdministrativeStatus::Approved))
        .expect("the approval");
    assert_eq!(
        json_of(approved.outcome_data.as_ref()),
        json!({"numero_certificato": "C-77", "valido_fino": "2027-01-31"})
    );
    stop_and_verify(hub).await;
}

#[tokio::test]
async fn a_reply_whose_data_the_catalogue_refuses_is_dead_lettered_naming_the_field() {
    let vendor = Vendor::start().await;
    let http = free_addr().await;
    let mut hub = start(&vendor.url(), http).await;
    for (key, body, field) in [
        (
            "bad-date",
            json!({"esito": "OK", "certificato": {"numero": "C-1", "scadenza": "31/01/2027"}}),
            "outcome_data.valido_fino: must be a date",
        ),
        (
            "bad-pattern",
            json!({"esito": "OK", "certificato": {"numero": "X-1"}}),
            "outcome_data.numero_certificato: does not match",
        ),
        (
            "bad-base64",
            json!({"esito": "OK", "certificato": {"pdf": "§§§"}}),
            "/certificato/pdf: not base64",
        ),
    ] {
        vendor.push(Answer::new(200, body));
        let p = hub.submit(request("CERT", key, json!({}))).await;
        let p = hub
            .wait_delivery(TENANT, &p.id, pb::DeliveryStatus::DeadLettered)
            .await;
        let delivery = p.delivery.unwrap();
        assert!(
            delivery.last_error.contains(field),
            "{}",
            delivery.last_error
        );
        assert_eq!(delivery.failure_class, "permanent");
        assert_eq!(p.status, pb::AdministrativeStatus::Submitted as i32);
        assert!(p.outcome_data.is_none(), "nothing applied");
    }
    stop_and_verify(hub).await;
}

#[tokio::test]
async fn callbacks_set_outcome_data_in_parts_seen_by_watchers_and_bad_data_is_refused() {
    let vendor = Vendor::start().await;
    let http = free_addr().await;
    let mut hub = start(&vendor.url(), http).await;
    vendor.push(Answer::new(202, json!({})));
    let p = hub
        .submit(request("TARI", "tari-1", json!({"superficie_mq": 85.5})))
        .await;
    let p = hub
        .wait_delivery(TENANT, &p.id, pb::DeliveryStatus::Acknowledged)
        .await;
    let op = p.delivery.unwrap().operation_id;
    let mut stream = hub
        .practices
        .watch_practice(one_practice_from(TENANT, &p.id, 1))
        .await
        .unwrap()
        .into_inner();

    // Registered with the amount, as a number; the due date as text.
    let (status, body) = callback(
        http,
        &op,
        "cb-1",
        json!({"esito": "PRESO", "importo": 120.5, "scadenza": "2026-12-16"}),
    )
    .await;
    assert_eq!((status, body["result"].as_str()), (200, Some("applied")));
    // The payment notice's code alone: no status change.
    let (status, _) = callback(
        http,
        &op,
        "cb-2",
        json!({"esito": "PRESO", "dati": {"codice_avviso": "3012"}}),
    )
    .await;
    assert_eq!(status, 200);
    // Ill-typed, undeclared: refused whole with the field, nothing applied.
    for (receipt, body, field) in [
        (
            "cb-3",
            json!({"esito": "OK", "importo": "tanti"}),
            "outcome_data.importo_dovuto",
        ),
        (
            "cb-4",
            json!({"esito": "OK", "dati": {"sconosciuto": 1}}),
            "outcome_data.sconosciuto",
        ),
    ] {
        let (status, problem) = callback(http, &op, receipt, body).await;
        assert_eq!(status, 409, "{problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{problem}");
    }
    let unchanged = hub.get(TENANT, &p.id).await;
    assert_eq!(
        unchanged.status,
        pb::AdministrativeStatus::Registered as i32
    );
    // The conclusion, then a late change of the amount: an anomaly.
    let (status, _) = callback(http, &op, "cb-5", json!({"esito": "OK"})).await;
    assert_eq!(status, 200);
    let (status, problem) =
        callback(http, &op, "cb-6", json!({"esito": "OK", "importo": 99})).await;
    assert_eq!(
        (status, problem["anomaly"].as_str()),
        (409, Some("late")),
        "{problem}"
    );

    // The watcher saw the data arrive with the results that set it (its
    // stream ends with the conclusion).
    let (events, _) = collect_until(&mut stream, |e| {
        status_is(e, pb::AdministrativeStatus::Approved)
    })
    .await;
    let carrying = |events: &[pb::PracticeEvent]| -> Vec<(i32, Value)> {
        events
            .iter()
            .filter(|e| e.outcome_data.is_some())
            .map(|e| (e.kind, json_of(e.outcome_data.as_ref())))
            .collect()
    };
    assert_eq!(
        carrying(&events),
        [
            (
                pb::EventKind::StatusChanged as i32,
                json!({"importo_dovuto": 120.5, "scadenza": "2026-12-16"})
            ),
            (
                pb::EventKind::OutcomeDataChanged as i32,
                json!({"codice_avviso": "3012"})
            ),
        ]
    );
    // The late amount is on its anomaly, not on the practice.
    let p = hub.get(TENANT, &p.id).await;
    assert_eq!(
        carrying(&p.events).last(),
        Some(&(pb::EventKind::Anomaly as i32, json!({"importo_dovuto": 99})))
    );
    assert_eq!(p.status, pb::AdministrativeStatus::Approved as i32);
    assert_eq!(
        json_of(p.outcome_data.as_ref()),
        json!({"importo_dovuto": 120.5, "scadenza": "2026-12-16", "codice_avviso": "3012"})
    );
    stop_and_verify(hub).await;
}

/// Writes a result file the way a vendor must: hidden name, then rename.
fn drop_result(outbox: &Path, name: &str, content: &str) {
    let temp = outbox.join(format!(".{name}.part"));
    std::fs::write(&temp, content).unwrap();
    std::fs::rename(&temp, outbox.join(name)).unwrap();
}

#[tokio::test]
async fn result_file_columns_fill_outcome_data_and_a_bad_cell_is_a_bad_row() {
    let vendor = Vendor::start().await;
    let http = free_addr().await;
    let mut hub = start(&vendor.url(), http).await;
    let good = hub.submit(request("IMU", "imu-1", json!({}))).await;
    let bad = hub.submit(request("IMU", "imu-2", json!({}))).await;
    for id in [&good.id, &bad.id] {
        hub.wait_delivery(TENANT, id, pb::DeliveryStatus::Acknowledged)
            .await;
    }
    let outbox = hub.dir.path().join("outbox");
    drop_result(
        &outbox,
        "esiti.csv",
        &format!(
            "ID_PRATICA;ESITO;RATE;IMPORTO;F24_PDF\n{};OK;2;310,00;\n{};OK; 2 ;310.5;{PDF_BASE64}\n",
            bad.id, good.id
        ),
    );
    let p = hub
        .wait_status(TENANT, &good.id, pb::AdministrativeStatus::Approved)
        .await;
    // CSV text typed by the declaration.
    assert_eq!(
        json_of(p.outcome_data.as_ref()),
        json!({"rate": 2, "importo_dovuto": 310.5})
    );
    let docs = &p.outcome.as_ref().unwrap().documents;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].name, "f24.pdf");
    // The other row is reported with its field, and changed nothing.
    let rejected = outbox.join("rejected");
    let report = eventually("the error report", || async {
        let entry = std::fs::read_dir(&rejected)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with(".error.txt"))?;
        std::fs::read_to_string(entry.path()).ok()
    })
    .await;
    assert!(report.contains("line 2"), "{report}");
    assert!(
        report.contains("outcome_data.importo_dovuto: must be a number"),
        "{report}"
    );
    let p = hub.get(TENANT, &bad.id).await;
    assert_eq!(p.status, pb::AdministrativeStatus::Submitted as i32);
    assert!(p.outcome_data.is_none());
    stop_and_verify(hub).await;
}
