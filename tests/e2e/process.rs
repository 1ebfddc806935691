//! The real binary: crash recovery, `raccordo check`, the demo.

use crate::support::*;
use raccordo_proto::v1 as pb;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn killed_with_deliveries_pending_every_practice_completes_once_at_the_vendor() {
    let vendor = Vendor::start().await;
    vendor.set_latency(Duration::from_millis(150));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("raccordo.toml");
    let grpc = free_addr().await;
    std::fs::write(
        &config,
        config_toml(&HubOptions {
            max_concurrency: 2,
            grpc_listen: grpc.to_string(),
            ..HubOptions::new(&vendor.url())
        }),
    )
    .unwrap();

    let mut hub = serve(&config, &[]);
    let addr = grpc_addr_from_banner(&mut hub);
    let mut client =
        pb::practice_service_client::PracticeServiceClient::new(connect_retrying(addr).await);
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let p = client
            .submit_practice(tari_request("016024", &format!("crash-{i}")))
            .await
            .unwrap()
            .into_inner()
            .practice
            .unwrap();
        acknowledged.push(p.id);
    }
    // Some deliveries are done, most are pending or in flight: kill -9.
    eventually("the first deliveries", || async {
        (!vendor.received().is_empty()).then_some(())
    })
    .await;
    hub.0.kill().unwrap();
    hub.0.wait().unwrap();
    let before_restart = vendor.received().len();
    assert!(
        before_restart < 20,
        "the kill must leave deliveries pending ({before_restart} done)"
    );

    let mut hub = serve(&config, &[]);
    let addr = grpc_addr_from_banner(&mut hub);
    let mut client =
        pb::practice_service_client::PracticeServiceClient::new(connect_retrying(addr).await);
    for id in &acknowledged {
        let mut c = client.clone();
        eventually("every acknowledged practice approved", || {
            let mut c = c.clone();
            let id = id.clone();
            async move {
                let p = get(&mut c, "016024", &id).await;
                (p.status == pb::AdministrativeStatus::Approved as i32).then_some(())
            }
        })
        .await;
        let p = get(&mut c, "016024", id).await;
        assert_eq!(p.outcome.unwrap().documents.len(), 1);
    }
    let _ = client.get_practice(pb::GetPracticeRequest::default()).await;

    // The vendor saw each practice under exactly one operation id.
    let mut ops: HashMap<String, HashSet<String>> = HashMap::new();
    for r in vendor.received() {
        ops.entry(r.body["practice_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(r.idempotency_key);
    }
    assert_eq!(ops.len(), 20, "every practice reached the vendor");
    for (practice, keys) in ops {
        assert_eq!(
            keys.len(),
            1,
            "practice {practice} was sent under several operation ids: {keys:?}"
        );
    }
}

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_names_the_file_and_the_key_of_each_problem() {
    let good = config_toml(&HubOptions::new("http://127.0.0.1:9"));
    let (ok, err) = check(&good);
    assert!(ok, "{err}");

    // A typo in a key.
    let (ok, err) = check(&good.replace("connect_timeout", "conect_timeout"));
    assert!(!ok);
    assert!(
        err.contains("broken.toml")
            && err.contains("adapters.vendor")
            && err.contains("conect_timeout"),
        "{err}"
    );

    // A trusted proxy that is neither an address nor a range.
    let (ok, err) = check(&format!(
        "{good}\n[security]\ntrusted_proxies = [\"10.0.0.0/8\", \"proxy.internal\"]\n"
    ));
    assert!(!ok);
    assert!(
        err.contains("security.trusted_proxies") && err.contains("proxy.internal"),
        "{err}"
    );

    // A bad duration.
    let (ok, err) = check(&good.replace("timeout = \"3s\"", "timeout = \"3 parsecs\""));
    assert!(!ok);
    assert!(
        err.contains("adapters.vendor") && err.contains("timeout"),
        "{err}"
    );

    // References to things that do not exist, a bad URL, a bad pattern.
    let broken =
        good.replace(
            "adapter = \"vendor\"\nmode = \"deferred\"",
            "adapter = \"vendr\"\nmode = \"deferred\"",
        )
        .replace("http://127.0.0.1:9", "ftp:/nowhere")
        .replace("pattern = \"BOLLO|ESENTE\"", "pattern = \"BOLLO|(\"")
        .replace(
            "tenants = [\"016024\", \"028060\"]\nservice = \"CERT\"",
            "tenants = [\"016024\", \"999999\"]\nservice = \"CERT\"",
        )
        .replace(
            "poll_interval = \"100ms\"",
            "poll_interval = \"100ms\"\nlease = \"100ms\"",
        )
        .replace(
            "shutdown_grace = \"2s\"",
            "shutdown_grace = \"2s\"\nmax_calls_in_progress = 0\nmax_watch_streams_per_client = 0\n\
             max_in_flight_request_bytes = 1000",
        ) + "\n[store]\nwrite_queue = 0\n";
    let (ok, err) = check(&broken);
    assert!(!ok);
    for needle in [
        "routes[1].adapter: 'vendr' is not declared under [adapters]",
        "adapters.vendor.base_url",
        "services.CERT.fields[0].pattern",
        "routes[0].tenants[1]: '999999' is not declared under [tenants]",
        "delivery.lease: must be at least 1s",
        "hub.max_calls_in_progress: must be at least 1",
        "hub.max_watch_streams_per_client: must be at least 1",
        "hub.max_in_flight_request_bytes: is 1000, less than the largest SubmitPractice request",
        "store.write_queue: must be at least 1",
    ] {
        assert!(err.contains(needle), "missing «{needle}» in:\n{err}");
    }
    assert!(err.lines().all(|l| l.contains("broken.toml")), "{err}");
}

#[tokio::test]
async fn the_demo_starts_answers_health_checks_and_serves_a_certificate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let data = tempfile::tempdir().unwrap();
    let [anagrafe, tributi] = free_addrs().await;
    let mut demo = serve(
        &root.join("config/demo.toml"),
        &[
            // The demo's own file, moved off its fixed ports and data folder.
            ("RACCORDO__HUB__GRPC_LISTEN", "127.0.0.1:0".into()),
            ("RACCORDO__HUB__HTTP_LISTEN", "127.0.0.1:0".into()),
            ("RACCORDO__HUB__DATA_DIR", data.path().display().to_string()),
            (
                "RACCORDO__SIMULATORS__ANAGRAFE__LISTEN",
                anagrafe.to_string(),
            ),
            ("RACCORDO__SIMULATORS__TRIBUTI__LISTEN", tributi.to_string()),
            (
                "RACCORDO__ADAPTERS__ANAGRAFE__BASE_URL",
                format!("http://{anagrafe}/api/v1"),
            ),
            (
                "RACCORDO__ADAPTERS__TRIBUTI__BASE_URL",
                format!("http://{tributi}/tributi"),
            ),
        ],
    );
    let addr = grpc_addr_from_banner(&mut demo);
    let channel = connect_retrying(addr).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "raccordo.v1.PracticeService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    // The README's "try" command: the example certificate request.
    let out = Command::new(BIN)
        .args(["practice", "submit", "--json", "--server"])
        .arg(format!("http://{addr}"))
        .arg(root.join("config/examples/residence-certificate.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["status"], "APPROVED", "{reply}");
    assert_eq!(reply["outcome"]["documents"][0]["name"], "certificato.pdf");
}

/// Everything the hub logs at the most verbose level, through a run that
/// touches every path: accepted, retried, dead-lettered, invalid, withdrawn.
#[tokio::test]
async fn the_logs_of_a_full_run_carry_no_fiscal_code_in_clear() {
    let vendor = Vendor::start().await;
    vendor.push(
        Answer::new(503, serde_json::json!({"title": "occupato"})).header("retry-after", "0"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("raccordo.toml");
    let grpc = free_addr().await;
    let mut options = HubOptions::new(&vendor.url());
    options.grpc_listen = grpc.to_string();
    options.max_attempts = 2;
    std::fs::write(&config, config_toml(&options)).unwrap();
    let log_path = dir.path().join("hub.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let channel = connect_retrying(grpc).await;
    let mut practices = pb::practice_service_client::PracticeServiceClient::new(channel);

    let retried = practices
        .submit_practice(tari_request("016024", "log-1"))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    practices
        .submit_practice(cert_request("016024", "log-2"))
        .await
        .unwrap();
    vendor.push(Answer::new(400, serde_json::json!({"title": "rifiutata"})));
    let dead = practices
        .submit_practice(tari_request("028060", "log-3"))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    let mut invalid = tari_request("016024", "log-4");
    if let Some(pb::applicant::Subject::Person(p)) =
        invalid.applicant.as_mut().and_then(|a| a.subject.as_mut())
    {
        p.fiscal_code = "RSSMRA45Z25F205N".into();
    }
    practices.submit_practice(invalid).await.unwrap_err();
    for (tenant, id, done) in [
        (
            "016024",
            retried.id.clone(),
            pb::DeliveryStatus::Acknowledged,
        ),
        ("028060", dead.id.clone(), pb::DeliveryStatus::DeadLettered),
    ] {
        eventually("the delivery to settle", || {
            let mut practices = practices.clone();
            let (tenant, id) = (tenant.to_string(), id.clone());
            async move {
                let p = get(&mut practices, &tenant, &id).await;
                p.delivery
                    .is_some_and(|d| d.status == done as i32)
                    .then_some(())
            }
        })
        .await;
    }
    practices
        .withdraw_practice(pb::WithdrawPracticeRequest {
            tenant_id: "028060".into(),
            practice_id: dead.id.clone(),
            reason: "ritirata".into(),
            operator_id: String::new(),
        })
        .await
        .unwrap();
    drop(proc);

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains(&retried.id),
        "the logs do name practices by id"
    );
    for secret in ["RSSMRA45D25F205N", "RSSMRA45Z25F205N", "Mario", "Rossi"] {
        let found = logs.lines().find(|l| {
            l.to_ascii_uppercase()
                .contains(&secret.to_ascii_uppercase())
        });
        assert!(found.is_none(), "{secret} in the logs: {found:?}");
    }
}

/// Free text naming a citizen, with a line of its own forged after it.
const NAMED: &str = "Maria Rossi RSSMRA85M01H501Q si e trasferita\n\
    2026-12-03T10:00:00.000000Z  INFO raccordo::bus: forged line";

/// A push adapter whose results come back on the hub's `/callbacks`.
fn push_adapter(vendor: &str, http: std::net::SocketAddr) -> String {
    format!(
        r#"
[services.PUSH]
title = "Segnalazione"
regime = "COMUNICAZIONE"

[adapters.push]
kind = "rest"
pattern = "NONBLOCK_PUSH_REST"
base_url = "{vendor}"
[adapters.push.submit]
path = "/push"
[adapters.push.callback]
public_base_url = "http://{http}"
secret_file = "callback.secret"
max_skew = "60s"
[adapters.push.response]
status_pointer = "/esito"
status_map = {{ OK = "APPROVED", KO = "REJECTED" }}
reason_pointer = "/motivo"

[[routes]]
tenants = ["016024"]
service = "PUSH"
adapter = "push"
mode = "deferred"
"#
    )
}

/// What a hub logs at `trace` in `format` while free text naming a citizen
/// passes through it: a vendor's fault text (retried), a vendor's
/// rejection text (dead-lettered), a withdrawal reason and a callback
/// body's rejection text.
async fn logs_of_free_text(format: &str) -> String {
    let vendor = Vendor::start().await;
    let problem = serde_json::json!({"title": NAMED, "detail": NAMED, "code": "E-42"});
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("raccordo.toml");
    let grpc = free_addr().await;
    let http = free_addr().await;
    let mut options = HubOptions::new(&vendor.url());
    options.grpc_listen = grpc.to_string();
    options.max_attempts = 2;
    let toml = config_toml(&options).replace(
        "http_listen = \"127.0.0.1:0\"",
        &format!("http_listen = \"{http}\""),
    ) + &push_adapter(&vendor.url(), http);
    std::fs::write(&config, toml).unwrap();
    std::fs::write(
        dir.path().join("callback.secret"),
        "callback-secret-0123456789",
    )
    .unwrap();
    let log_path = dir.path().join("hub.log");
    let child = Command::new(BIN)
        .args(["--log-format", format, "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    let channel = connect_retrying(grpc).await;
    let mut practices = pb::practice_service_client::PracticeServiceClient::new(channel);
    // A result pushed back by the vendor, its text naming the citizen.
    vendor.push(Answer::new(202, serde_json::json!({})).header("x-correlation-id", "corr-named"));
    let mut push = cila_request("named-3");
    push.service_code = "PUSH".into();
    let pushed = practices
        .submit_practice(push)
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    eventually("the push delivery to be acknowledged", || {
        let mut practices = practices.clone();
        let id = pushed.id.clone();
        async move {
            let p = get(&mut practices, "016024", &id).await;
            p.delivery
                .is_some_and(|d| d.status == pb::DeliveryStatus::Acknowledged as i32)
                .then_some(())
        }
    })
    .await;
    let body = serde_json::json!({"esito": "KO", "motivo": NAMED}).to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let signature = raccordo_adapters::rest::callback::sign(
        b"callback-secret-0123456789",
        &ts,
        body.as_bytes(),
    );
    let answer = reqwest::Client::new()
        .post(format!("http://{http}/callbacks/push/result"))
        .header("content-type", "application/json")
        .header("x-correlation-id", "corr-named")
        .header("x-timestamp", ts)
        .header("x-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200, "{:?}", answer.text().await);
    vendor.push(Answer::new(503, problem.clone()).header("retry-after", "0"));
    let retried = practices
        .submit_practice(tari_request("016024", "named-1"))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    eventually("the retried delivery to be acknowledged", || {
        let mut practices = practices.clone();
        let id = retried.id.clone();
        async move {
            let p = get(&mut practices, "016024", &id).await;
            p.delivery
                .is_some_and(|d| d.status == pb::DeliveryStatus::Acknowledged as i32)
                .then_some(())
        }
    })
    .await;
    vendor.push(Answer::new(400, problem));
    let rejected = practices
        .submit_practice(tari_request("028060", "named-2"))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    eventually("the rejected delivery to be dead-lettered", || {
        let mut practices = practices.clone();
        let id = rejected.id.clone();
        async move {
            let p = get(&mut practices, "028060", &id).await;
            p.delivery
                .is_some_and(|d| d.status == pb::DeliveryStatus::DeadLettered as i32)
                .then_some(())
        }
    })
    .await;
    practices
        .withdraw_practice(pb::WithdrawPracticeRequest {
            tenant_id: "028060".into(),
            practice_id: rejected.id.clone(),
            reason: NAMED.into(),
            operator_id: String::new(),
        })
        .await
        .unwrap();
    // State changes are logged by a task of their own: wait for the last
    // ones (anywhere in the log: a forged line would split a record).
    for status in ["-> WITHDRAWN", "-> REJECTED"] {
        eventually("the state change in the log", || {
            let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
            async move { logs.contains(status).then_some(()) }
        })
        .await;
    }
    drop(proc);
    std::fs::read_to_string(&log_path).unwrap()
}

#[tokio::test]
async fn free_text_naming_a_citizen_reaches_neither_log_format() {
    for format in ["text", "json"] {
        let logs = logs_of_free_text(format).await;
        assert!(logs.contains("E-42"), "{format}: vendor codes are logged");
        for secret in ["RSSMRA85M01H501Q", "Maria", "Rossi", "trasferita", "forged"] {
            let found = logs.lines().find(|l| l.contains(secret));
            assert!(found.is_none(), "{format}: {secret} in the logs: {found:?}");
        }
        // Every line is a record of the hub's: none was forged.
        for line in logs.lines() {
            match format {
                "json" => assert!(
                    serde_json::from_str::<serde_json::Value>(line).is_ok(),
                    "not a JSON record: {line}"
                ),
                _ => assert!(
                    line.get(..4)
                        .is_some_and(|y| y.bytes().all(|b| b.is_ascii_digit())),
                    "not a log record: {line}"
                ),
            }
        }
    }
}

/// A second hub on the same SQLite file refuses to start and names the
/// first; the first keeps serving.
#[tokio::test]
async fn a_second_hub_on_the_same_database_refuses_to_start() {
    let vendor = Vendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let [first_grpc, second_grpc] = free_addrs().await;
    let write_config = |name: &str, grpc: std::net::SocketAddr| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            config_toml(&HubOptions {
                grpc_listen: grpc.to_string(),
                ..HubOptions::new(&vendor.url())
            }),
        )
        .unwrap();
        path
    };
    let first_config = write_config("first.toml", first_grpc);
    let second_config = write_config("second.toml", second_grpc);

    let mut first = serve(&first_config, &[]);
    let addr = grpc_addr_from_banner(&mut first);
    let mut client =
        pb::practice_service_client::PracticeServiceClient::new(connect_retrying(addr).await);

    let mut second = Proc(
        Command::new(env!("CARGO_BIN_EXE_raccordo"))
            .args(["serve", "--config"])
            .arg(&second_config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the second hub"),
    );
    // A hub that wrongly starts would run until killed: wait for its exit
    // with a deadline instead of forever.
    let status = eventually("the second hub to exit", || {
        let exited = second.0.try_wait().expect("poll the second hub");
        async move { exited }
    })
    .await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "the second hub must not start");
    assert!(
        stderr.contains(&format!("pid {}", first.0.id())) && stderr.contains("PostgreSQL"),
        "the refusal names the first hub and the way out: {stderr}"
    );
    // The first is undisturbed.
    client
        .submit_practice(tari_request("016024", "after-refusal"))
        .await
        .expect("the first hub still serves");
}
