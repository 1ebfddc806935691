//! What operators see: Prometheus metrics, trace context at the vendor,
//! readiness and `raccordo status`.

use crate::support::*;
use raccordo_proto::v1 as pb;
use serde_json::json;

/// The value of the exposition line whose series is exactly `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

async fn scrape(hub: &TestHub) -> String {
    let addr = hub.hub.as_ref().unwrap().http_addr;
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_count_successes_retries_dead_letters_and_invalid_calls() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;

    // One delivery that succeeds after a retry …
    vendor.push(Answer::new(503, json!({"title": "in manutenzione"})).header("retry-after", "0"));
    let retried = hub.submit(tari_request("016024", "m-retry")).await;
    hub.wait_status("016024", &retried.id, pb::AdministrativeStatus::Approved)
        .await;
    // … one the vendor refuses for good …
    vendor.push(Answer::new(400, json!({"title": "Richiesta non valida"})));
    let dead = hub.submit(tari_request("028060", "m-dead")).await;
    hub.wait_delivery("028060", &dead.id, pb::DeliveryStatus::DeadLettered)
        .await;
    // … a re-sent submission and an invalid one.
    hub.submit(tari_request("016024", "m-retry")).await;
    let mut invalid = tari_request("016024", "m-invalid");
    invalid.applicant = None;
    let refused = hub.practices.submit_practice(invalid).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let m = scrape(&hub).await;
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&m, series), Some(value), "{series} in\n{m}");
    };
    expect(
        r#"raccordo_submissions_total{tenant="016024",service="TARI",mode="deferred",result="accepted"}"#,
        1.0,
    );
    expect(
        r#"raccordo_submissions_total{tenant="016024",service="TARI",mode="deferred",result="duplicate"}"#,
        1.0,
    );
    expect(
        r#"raccordo_submissions_total{tenant="028060",service="TARI",mode="deferred",result="accepted"}"#,
        1.0,
    );
    expect(
        r#"raccordo_submissions_total{tenant="016024",service="TARI",mode="deferred",result="invalid"}"#,
        1.0,
    );
    expect(
        r#"raccordo_delivery_attempts_total{adapter="vendor",outcome="transient"}"#,
        1.0,
    );
    expect(
        r#"raccordo_delivery_attempts_total{adapter="vendor",outcome="delivered"}"#,
        1.0,
    );
    expect(
        r#"raccordo_delivery_attempts_total{adapter="vendor",outcome="permanent"}"#,
        1.0,
    );
    expect(
        r#"raccordo_delivery_retries_scheduled_total{adapter="vendor"}"#,
        1.0,
    );
    expect(
        r#"raccordo_delivery_dead_lettered_total{adapter="vendor"}"#,
        1.0,
    );
    expect(r#"raccordo_dead_letters{adapter="vendor"}"#, 1.0);
    expect(r#"raccordo_jobs_due{adapter="vendor"}"#, 0.0);
    expect(
        r#"raccordo_delivery_duration_seconds_count{adapter="vendor"}"#,
        3.0,
    );
    expect(
        r#"raccordo_practices{tenant="016024",service="TARI",status="APPROVED"}"#,
        1.0,
    );
    expect(
        r#"raccordo_practices{tenant="028060",service="TARI",status="SUBMITTED"}"#,
        1.0,
    );
    expect(
        r#"raccordo_grpc_request_duration_seconds_count{rpc="/raccordo.v1.PracticeService/SubmitPractice",code="Ok"}"#,
        3.0,
    );
    expect(
        r#"raccordo_grpc_request_duration_seconds_count{rpc="/raccordo.v1.PracticeService/SubmitPractice",code="InvalidArgument"}"#,
        1.0,
    );
    expect(
        r#"raccordo_adapter_state{adapter="vendor",kind="rest",state="up"}"#,
        1.0,
    );
    expect(
        r#"raccordo_delivery_concurrency_limit{adapter="vendor"}"#,
        8.0,
    );
    assert!(sample(&m, "raccordo_store_size_bytes").unwrap() > 0.0);
    // Alone on its database: it reports the store gauges.
    expect("raccordo_store_gauges_reporter", 1.0);
    expect("raccordo_cluster_instances", 1.0);
    assert!(sample(&m, "raccordo_store_commit_batch_size_count").unwrap() > 0.0);
    // Nothing about one practice or one citizen is a label.
    for secret in [retried.id.as_str(), dead.id.as_str(), "RSSMRA45D25F205N"] {
        assert!(!m.contains(secret), "{secret} appears in the metrics");
    }
    hub.stop().await;
}

/// Before any traffic, every series the configuration makes possible is
/// there at 0: alert rules (dead letters, anomalies, failing attempts)
/// see a series from the start, not only after the first failure.
#[tokio::test]
async fn every_configured_series_exists_at_zero_before_any_traffic() {
    let vendor = Vendor::start().await;
    let hub = start_hub(HubOptions::new(&vendor.url())).await;
    let m = scrape(&hub).await;
    for series in [
        r#"raccordo_submissions_total{tenant="016024",service="TARI",mode="deferred",result="accepted"}"#,
        r#"raccordo_submissions_total{tenant="028060",service="TARI",mode="deferred",result="invalid"}"#,
        r#"raccordo_delivery_attempts_total{adapter="vendor",outcome="delivered"}"#,
        r#"raccordo_delivery_attempts_total{adapter="vendor",outcome="outcome_unknown"}"#,
        r#"raccordo_delivery_retries_scheduled_total{adapter="vendor"}"#,
        r#"raccordo_delivery_dead_lettered_total{adapter="vendor"}"#,
        r#"raccordo_inbound_results_total{adapter="vendor",outcome="applied"}"#,
        r#"raccordo_anomalies_total{adapter="vendor",class="late"}"#,
        r#"raccordo_jobs_due{adapter="vendor"}"#,
        r#"raccordo_dead_letters{adapter="vendor"}"#,
    ] {
        assert_eq!(sample(&m, series), Some(0.0), "{series} in\n{m}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn labels_cannot_be_invented_by_callers() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let mut request = tari_request("099999", "unknown-tenant");
    request.service_code = "NO_SUCH_SERVICE_X".into();
    hub.practices.submit_practice(request).await.unwrap_err();
    let m = scrape(&hub).await;
    assert!(
        !m.contains("099999") && !m.contains("NO_SUCH_SERVICE_X"),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"raccordo_submissions_total{tenant="unknown",service="unknown",mode="unknown",result="invalid"}"#
        ),
        Some(1.0)
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_callers_trace_reaches_the_vendor_on_every_attempt() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let vendor = Vendor::start().await;
    vendor.push(Answer::new(503, json!({"title": "occupato"})).header("retry-after", "0"));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let mut request = tonic::Request::new(tari_request("016024", "traced"));
    request
        .metadata_mut()
        .insert("traceparent", caller.parse().unwrap());
    let p = hub
        .practices
        .submit_practice(request)
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    hub.wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    let received = vendor.received();
    assert_eq!(received.len(), 2, "one failed attempt and one retry");
    let mut spans = Vec::new();
    for r in &received {
        let header = r.traceparent.as_deref().expect("a traceparent header");
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!(parts[1], TRACE_ID, "the caller's trace id");
        assert_ne!(parts[2], "00f067aa0ba902b7", "each attempt is a new span");
        spans.push(parts[2].to_string());
    }
    assert_ne!(spans[0], spans[1]);

    // Without a caller context, the hub starts a trace of its own.
    let q = hub.submit(tari_request("016024", "untraced")).await;
    hub.wait_status("016024", &q.id, pb::AdministrativeStatus::Approved)
        .await;
    let last = vendor.received().pop().unwrap();
    let header = last.traceparent.expect("a traceparent header");
    assert!(
        header.starts_with("00-") && !header.contains(TRACE_ID),
        "{header}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn status_shows_each_adapter_and_its_dead_letters() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    vendor.push(Answer::new(422, json!({"title": "dati incompleti"})));
    let p = hub.submit(tari_request("016024", "status-dead")).await;
    hub.wait_delivery("016024", &p.id, pb::DeliveryStatus::DeadLettered)
        .await;

    let grpc = hub.hub.as_ref().unwrap().grpc_addr;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_raccordo"))
        .args(["status", "--json", "--server", &format!("http://{grpc}")])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["store"]["state"], "up");
    let vendor_status = &status["adapters"][0];
    assert_eq!(vendor_status["name"], "vendor");
    assert_eq!(vendor_status["kind"], "rest");
    assert_eq!(vendor_status["state"], "up");
    assert_eq!(vendor_status["dead_letters"], 1);
    assert_eq!(vendor_status["jobs_due"], 0);

    let text = tokio::process::Command::new(env!("CARGO_BIN_EXE_raccordo"))
        .args(["status", "--server", &format!("http://{grpc}")])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("READY") && text.contains("vendor"), "{text}");

    let addr = hub.hub.as_ref().unwrap().http_addr;
    let get = |path: &'static str| async move {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let code = r.status().as_u16();
        (code, r.json::<serde_json::Value>().await.unwrap())
    };
    let (code, ready) = get("/readyz").await;
    assert_eq!((code, &ready["ready"]), (200, &json!(true)), "{ready}");
    assert_eq!(ready["store"]["state"], "up");
    assert_eq!(ready["shutting_down"], false);
    // Readiness carries no per-adapter counts it has not read.
    assert!(ready.get("adapters").is_none(), "{ready}");
    let (code, adapters) = get("/adapters").await;
    assert_eq!(code, 200);
    let vendor_report = &adapters["adapters"]["vendor"];
    assert_eq!(vendor_report["state"], "up", "{adapters}");
    assert_eq!(vendor_report["kind"], "rest");
    assert_eq!(vendor_report["dead_letters"], 1, "{adapters}");
    assert_eq!(vendor_report["jobs_due"], 0, "{adapters}");
    assert!(vendor_report.get("oldest_due_age_seconds").is_none());
    hub.stop().await;
}

/// A stopping hub tells load balancers so at once: `/readyz` answers 503
/// while the deliveries in flight finish, before the port closes.
#[tokio::test]
async fn readiness_turns_503_as_soon_as_the_hub_stops() {
    let vendor = Vendor::start().await;
    let mut options = HubOptions::new(&vendor.url());
    options.shutdown_grace = "20s".into();
    let mut hub = start_hub(options).await;
    let p = hub
        .submit(tari_request("016024", "in-flight-at-stop"))
        .await;
    vendor.hold();
    hub.wait_delivery("016024", &p.id, pb::DeliveryStatus::Sent)
        .await;
    eventually("the delivery held at the vendor", || {
        let held = vendor.held();
        async move { (held == 1).then_some(()) }
    })
    .await;
    let http = hub.hub.as_ref().unwrap().http_addr;
    let running = hub.hub.take().unwrap();
    let stopping = tokio::spawn(running.shutdown());
    let body = eventually("/readyz to answer 503", || async {
        let r = reqwest::get(format!("http://{http}/readyz")).await.ok()?;
        (r.status().as_u16() == 503).then_some(())?;
        r.json::<serde_json::Value>().await.ok()
    })
    .await;
    assert_eq!(body["shutting_down"], true, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["store"]["state"], "up", "{body}");
    vendor.release();
    stopping.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("http://{http}/readyz")).await.is_err(),
        "the listener closes once the deliveries finished"
    );
}
