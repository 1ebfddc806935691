//! What the command line shows: `raccordo check` with every problem of a
//! file in one run, practices read and written in the API's JSON (the
//! examples of docs/api.md submit unchanged), tables, empty results,
//! colour, times in the tenant's time zone, watching with a goal and a
//! timeout, downloading a verified document, the catalogue. All through
//! the real binary against a real hub.

use crate::support::*;
use raccordo_proto::v1 as pb;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Output};

/// `raccordo ARGS` with only `envs` in its environment.
async fn raccordo(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env_clear().env("HOME", home.path()).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run raccordo")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

#[track_caller]
fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded: {}{}",
        stdout(out),
        stderr(out)
    );
    stderr(out)
}

/// The 1-based line of the only line of `text` containing `needle`.
#[track_caller]
fn line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "«{needle}» is not on exactly one line");
    lines[0]
}

#[test]
fn check_reports_ten_mistakes_in_one_run_each_with_its_line() {
    let good = config_toml(&HubOptions::new("http://127.0.0.1:9"));
    let same_key = "a".repeat(64);
    let broken = good
        // 1. a misspelt key
        .replace(
            "shutdown_grace = \"2s\"",
            "shutdown_grace = \"2s\"\ngrpc_lisen = \"127.0.0.1:1\"",
        )
        // 2. a misspelt enum value outside any adapter
        .replace(
            "adapter = \"vendor\"\nmode = \"deferred\"",
            "adapter = \"vendor\"\nmode = \"defered\"",
        )
        // 3. a misspelt field type
        .replace("type = \"date\"", "type = \"dat\"")
        // 4. a value of the wrong type
        .replace("max_attempts = 4", "max_attempts = \"four\"")
        // 5. a bad duration inside an adapter
        .replace("timeout = \"3s\"", "timeout = \"3 parsecs\"")
        // 6. a reference to an adapter that is not declared
        .replace(
            "service = \"CILA\"\nadapter = \"vendor\"",
            "service = \"CILA\"\nadapter = \"vendr\"",
        )
        + r#"
[store]
# 7. a misspelt enum value
synchronous = "ful"

# 8. a tenant that is not keyed by an ISTAT code
[tenants."16024x"]
name = "Comune sbagliato"

# 9. a misspelt section
[simulator.anagrafe]
listen = "127.0.0.1:0"

[clients.portal]
role = "frontoffice"
tenants = ["016024"]
api_key_sha256 = "SAME"

# 10. the same API key as another client
[clients.desk]
role = "operator"
tenants = ["016024"]
api_key_sha256 = "SAME"
"#
        .replace("SAME", &same_key)
        .as_str();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, &broken).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        // An override: a problem of its own, blamed on the variable.
        .env("RACCORDO__HUB__HTTP_LISTEN", "not-an-address")
        .output()
        .unwrap();
    let err = refused(&out);
    let file_lines: Vec<&str> = err.lines().filter(|l| l.contains("broken.toml:")).collect();
    let at = |needle: &str| format!("broken.toml:{}:", line_of(&broken, needle));
    let expected = [
        (
            at("grpc_lisen"),
            "hub.grpc_lisen: unknown key: did you mean 'grpc_listen'?",
        ),
        (
            at("mode = \"defered\""),
            "routes[1].mode: 'defered' is not an allowed value: did you mean 'deferred'? (allowed values: sync, deferred, auto)",
        ),
        (
            at("type = \"dat\""),
            "services.TARI.fields[1].type: 'dat' is not an allowed value: did you mean 'date'? (allowed values: string, integer, number, boolean, date, email)",
        ),
        (
            at("max_attempts = \"four\""),
            "delivery.max_attempts: invalid type: string \"four\"",
        ),
        (at("3 parsecs"), "adapters.vendor.timeout:"),
        (
            at("adapter = \"vendr\""),
            "routes[2].adapter: 'vendr' is not declared under [adapters]: did you mean 'vendor'?",
        ),
        (
            at("synchronous = \"ful\""),
            "store.synchronous: 'ful' is not an allowed value: did you mean 'full'? (allowed values: full, normal)",
        ),
        (
            at("[tenants.\"16024x\"]"),
            "tenants.16024x: a tenant is keyed by its 6-digit ISTAT code",
        ),
        (
            at("[simulator.anagrafe]"),
            "simulator: unknown section: did you mean 'simulators'?",
        ),
        // The clients are taken in the order of their names: desk, portal.
        (
            format!("broken.toml:{}:", line_of(&broken, "[clients.portal]") + 3),
            "clients.portal.api_key_sha256: the same API key as clients.desk",
        ),
    ];
    for (place, message) in &expected {
        assert!(
            file_lines
                .iter()
                .any(|l| l.contains(place.as_str()) && l.contains(message)),
            "missing «{place}… {message}» in:\n{err}"
        );
    }
    assert_eq!(file_lines.len(), expected.len(), "{err}");
    // Sorted as the file reads.
    let lines: Vec<usize> = file_lines
        .iter()
        .map(|l| l.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(lines.is_sorted(), "{err}");
    assert!(
        err.contains("environment RACCORDO__HUB__HTTP_LISTEN (overrides ")
            && err.contains("hub.http_listen: invalid socket address syntax"),
        "{err}"
    );
    assert!(err.contains("11 problem(s) in"), "{err}");
    assert!(err.contains("indexes count from 0"), "{err}");
}

/// The `-d '…'` bodies of the `SubmitPractice` grpcurl examples of docs/api.md.
fn api_md_submissions() -> Vec<String> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md"))
        .unwrap();
    let mut found = Vec::new();
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("grpcurl -plaintext -d '") {
        let body = &rest[start + "grpcurl -plaintext -d '".len()..];
        let end = body.find('\'').expect("closing quote");
        let after = &body[end..];
        let call = after.lines().next().unwrap_or("");
        if call.contains("PracticeService/SubmitPractice") {
            found.push(body[..end].to_string());
        }
        rest = &body[end..];
    }
    found
}

/// The services of the api.md examples, routed to the test's vendor.
const API_MD_SERVICES: &str = r#"
[services.CERT_RESIDENZA]
title = "Certificato di residenza"
[[services.CERT_RESIDENZA.fields]]
name = "uso"
required = true
pattern = "BOLLO|ESENTE"
[[services.CERT_RESIDENZA.fields]]
name = "copie"
type = "integer"

[services.TARI_DICHIARAZIONE]
title = "Dichiarazione TARI"
[[services.TARI_DICHIARAZIONE.fields]]
name = "tipo"
required = true
[[services.TARI_DICHIARAZIONE.fields]]
name = "indirizzo_immobile"
[[services.TARI_DICHIARAZIONE.fields]]
name = "superficie_mq"
type = "number"
[[services.TARI_DICHIARAZIONE.fields]]
name = "decorrenza"
type = "date"

[[routes]]
tenants = ["016024", "028060"]
service = "CERT_RESIDENZA"
adapter = "vendor"
mode = "sync"

[[routes]]
tenants = ["016024", "028060"]
service = "TARI_DICHIARAZIONE"
adapter = "vendor"
mode = "sync"
"#;

#[tokio::test]
async fn the_api_md_examples_submit_unchanged_through_the_cli() {
    let vendor = Vendor::start().await;
    let mut options = HubOptions::new(&vendor.url());
    options.extra_toml = API_MD_SERVICES.into();
    let hub = start_hub(options).await;
    let server = hub.hub.as_ref().unwrap().grpc_addr.to_string();
    let examples = api_md_submissions();
    assert!(examples.len() >= 2, "{examples:?}");
    let dir = tempfile::tempdir().unwrap();
    for (i, example) in examples.iter().enumerate() {
        let file = dir.path().join(format!("example-{i}.json"));
        std::fs::write(&file, example).unwrap();
        let out = raccordo(
            &[
                "practice",
                "submit",
                "--json",
                "--server",
                &server,
                file.to_str().unwrap(),
            ],
            &[],
        )
        .await;
        let reply: Value = serde_json::from_str(&ok(&out)).unwrap();
        let sent: Value = serde_json::from_str(example).unwrap();
        // Written back in the canonical form, as the API's own JSON.
        assert_eq!(reply["status"], "APPROVED", "{reply}");
        assert_eq!(reply["tenantId"], sent["tenant_id"], "{reply}");
        assert_eq!(reply["idempotencyKey"], sent["idempotency_key"], "{reply}");
        assert!(
            reply["receivedAt"].as_str().unwrap().ends_with('Z'),
            "{reply}"
        );
        if let Some(attachments) = sent["attachments"].as_array() {
            assert_eq!(
                reply["attachments"][0]["name"], attachments[0]["name"],
                "{reply}"
            );
        }
    }
    // The reply example's keys are those the CLI writes.
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md"))
        .unwrap();
    let start = doc
        .find("```json\n{\n  \"practice\": {")
        .expect("the reply example");
    let body = &doc[start + "```json\n".len()..];
    let example: Value = serde_json::from_str(&body[..body.find("```").unwrap()]).unwrap();
    let file = dir.path().join("example-0.json");
    let out = raccordo(
        &[
            "practice",
            "submit",
            "--json",
            "--server",
            &server,
            file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let reply: Value = serde_json::from_str(&ok(&out)).unwrap();
    for key in example["practice"].as_object().unwrap().keys() {
        assert!(
            reply.get(key).is_some(),
            "the CLI does not write {key}: {reply}"
        );
    }
    hub.stop().await;
}

#[tokio::test]
async fn lists_are_aligned_tables_or_json_arrays_and_say_when_nothing_matches() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let server = hub.hub.as_ref().unwrap().grpc_addr.to_string();
    let s = server.as_str();

    // Nothing yet: a sentence for people, an empty array for programs.
    let out = ok(&raccordo(
        &["practice", "list", "--tenant", "016024", "--server", s],
        &[],
    )
    .await);
    assert_eq!(out.trim(), "no practice matches (tenant 016024)");
    let out = ok(&raccordo(
        &[
            "practice", "list", "--tenant", "016024", "--status", "approved", "--json", "--server",
            s,
        ],
        &[],
    )
    .await);
    assert_eq!(out.trim(), "[]");
    let out = ok(&raccordo(&["dlq", "list", "--server", s], &[]).await);
    assert_eq!(out.trim(), "no dead-lettered deliveries (every tenant)");
    let out = ok(&raccordo(&["dlq", "list", "--json", "--server", s], &[]).await);
    assert_eq!(out.trim(), "[]");

    let approved = hub.submit(cert_request("016024", "table-1")).await;
    vendor.push(Answer::new(422, json!({"title": "dati incompleti"})));
    let dead = hub.submit(tari_request("016024", "table-2")).await;
    hub.wait_delivery("016024", &dead.id, pb::DeliveryStatus::DeadLettered)
        .await;

    // A table: a header, one row per practice, columns aligned.
    let out = ok(&raccordo(
        &["practice", "list", "--tenant", "016024", "--server", s],
        &[],
    )
    .await);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let header = lines[0];
    for name in [
        "ID",
        "RECEIVED",
        "SERVICE",
        "APPLICANT",
        "STATUS",
        "DELIVERY",
    ] {
        assert!(header.contains(name), "{out}");
    }
    let row = lines.iter().find(|l| l.contains(&approved.id)).unwrap();
    let status_at = header.find("STATUS").unwrap();
    assert_eq!(
        &row[status_at..status_at + "APPROVED".len()],
        "APPROVED",
        "{out}"
    );
    assert_eq!(
        row.find("CERT").unwrap(),
        header.find("SERVICE").unwrap(),
        "{out}"
    );
    // Piped: no colour, unless asked.
    assert!(!out.contains('\x1b'), "{out:?}");
    let coloured = ok(&raccordo(
        &["practice", "list", "--tenant", "016024", "--server", s],
        &[("RACCORDO_COLOR", "always")],
    )
    .await);
    assert!(coloured.contains("\x1b[32mAPPROVED\x1b[0m"), "{coloured:?}");
    let plain = ok(&raccordo(
        &[
            "practice", "list", "--tenant", "016024", "--color", "never", "--server", s,
        ],
        &[("RACCORDO_COLOR", "always")],
    )
    .await);
    assert!(!plain.contains('\x1b'), "{plain:?}");

    // Times in Rome for people, in UTC for programs.
    let received = approved.received_at.unwrap();
    let received = jiff::Timestamp::new(received.seconds, received.nanos).unwrap();
    let rome = received
        .to_zoned(jiff::tz::TimeZone::get("Europe/Rome").unwrap())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string();
    assert!(row.contains(&rome), "{rome} in {out}");
    let utc = ok(&raccordo(
        &[
            "practice",
            "list",
            "--tenant",
            "016024",
            "--time-zone",
            "UTC",
            "--server",
            s,
        ],
        &[],
    )
    .await);
    assert!(
        utc.contains(&received.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()),
        "{utc}"
    );
    let json: Value = serde_json::from_str(&ok(&raccordo(
        &[
            "practice", "list", "--tenant", "016024", "--json", "--server", s,
        ],
        &[],
    )
    .await))
    .unwrap();
    let listed = json.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{json}");
    let first = listed
        .iter()
        .find(|p| p["id"] == approved.id.as_str())
        .unwrap();
    assert_eq!(first["tenantId"], "016024");
    let when = first["receivedAt"].as_str().unwrap();
    assert_eq!(when.parse::<jiff::Timestamp>().unwrap(), received, "{when}");
    assert!(when.ends_with('Z'), "{when}");

    // Dead letters: a table too, and an array.
    let out = ok(&raccordo(&["dlq", "list", "--tenant", "016024", "--server", s], &[]).await);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("OPERATION") && lines[0].contains("LAST ERROR"),
        "{out}"
    );
    assert!(
        lines[1].contains(&dead.id) && lines[1].contains("TARI"),
        "{out}"
    );
    let json: Value = serde_json::from_str(&ok(&raccordo(
        &["dlq", "list", "--json", "--server", s],
        &[],
    )
    .await))
    .unwrap();
    assert_eq!(json[0]["practiceId"], dead.id.as_str(), "{json}");

    // The catalogue.
    let out = ok(&raccordo(
        &["catalog", "list", "--tenant", "016024", "--server", s],
        &[],
    )
    .await);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("SERVICE") && header.contains("TITLE"),
        "{out}"
    );
    let cert = out.lines().find(|l| l.starts_with("CERT ")).unwrap();
    assert!(
        cert.contains("sync") && cert.contains("30 days") && cert.contains("uso*:string"),
        "{out}"
    );
    let json: Value = serde_json::from_str(&ok(&raccordo(
        &[
            "catalog", "list", "--tenant", "016024", "--json", "--server", s,
        ],
        &[],
    )
    .await))
    .unwrap();
    assert!(
        json.as_array().unwrap().iter().any(|s| s["code"] == "CILA"),
        "{json}"
    );
    let err = refused(
        &raccordo(
            &["catalog", "list", "--tenant", "099999", "--server", s],
            &[],
        )
        .await,
    );
    assert!(
        err.contains("tenant 099999 is not served by this hub"),
        "{err}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn watch_says_what_it_waits_for_and_stops_at_a_status_or_a_timeout() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let server = hub.hub.as_ref().unwrap().grpc_addr.to_string();
    let s = server.as_str();
    let approved = hub.submit(cert_request("016024", "watch-1")).await;

    let out = raccordo(
        &[
            "practice",
            "watch",
            "--tenant",
            "016024",
            "--until",
            "approved",
            "--timeout",
            "30s",
            "--server",
            s,
            &approved.id,
        ],
        &[],
    )
    .await;
    let printed = ok(&out);
    assert!(
        stderr(&out).contains(&format!(
            "watching practice {} of tenant 016024 from event #1 until it is APPROVED, at most 30s",
            approved.id
        )),
        "{}",
        stderr(&out)
    );
    assert!(printed.contains("-> APPROVED"), "{printed}");

    // A practice the vendor only registers: APPROVED never comes.
    vendor.push(Answer::new(
        200,
        json!({"esito": "PRESO", "protocollo": {"numero": "2026/000042"}}),
    ));
    let registered = hub.submit(tari_request("016024", "watch-2")).await;
    hub.wait_status(
        "016024",
        &registered.id,
        pb::AdministrativeStatus::Registered,
    )
    .await;
    let started = std::time::Instant::now();
    let out = raccordo(
        &[
            "practice",
            "watch",
            "--tenant",
            "016024",
            "--until",
            "APPROVED",
            "--timeout",
            "1s",
            "--server",
            s,
            &registered.id,
        ],
        &[],
    )
    .await;
    let err = refused(&out);
    assert!(
        err.contains("timed out after 1s: the practice did not reach APPROVED"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    assert!(stdout(&out).contains("-> REGISTERED"), "{}", stdout(&out));

    // A practice that concludes otherwise fails at once.
    vendor.push(Answer::new(
        200,
        json!({"esito": "KO", "motivo": "non residente"}),
    ));
    let rejected = hub.submit(cert_request("016024", "watch-3")).await;
    let err = refused(
        &raccordo(
            &[
                "practice",
                "watch",
                "--tenant",
                "016024",
                "--until",
                "APPROVED",
                "--server",
                s,
                &rejected.id,
            ],
            &[],
        )
        .await,
    );
    assert!(
        err.contains("the practice concluded REJECTED: it will not be APPROVED"),
        "{err}"
    );
    let err = refused(
        &raccordo(
            &[
                "practice",
                "watch",
                "--tenant",
                "016024",
                "--until",
                "DONE",
                "--server",
                s,
                &rejected.id,
            ],
            &[],
        )
        .await,
    );
    assert!(err.contains("--until DONE is not a status"), "{err}");
    hub.stop().await;
}

#[tokio::test]
async fn document_downloads_an_outcome_document_after_checking_its_hash() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let server = hub.hub.as_ref().unwrap().grpc_addr.to_string();
    let s = server.as_str();
    // The vendor's answer carries one document, esito.txt ("ok").
    let approved = hub.submit(cert_request("016024", "doc-1")).await;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();

    let out = raccordo(
        &[
            "practice",
            "document",
            "--tenant",
            "016024",
            "--output",
            folder,
            "--server",
            s,
            &approved.id,
        ],
        &[],
    )
    .await;
    ok(&out);
    assert_eq!(std::fs::read(dir.path().join("esito.txt")).unwrap(), b"ok");
    assert!(
        stderr(&out).contains("SHA-256 verified"),
        "{}",
        stderr(&out)
    );
    // Never over an existing file, unless asked.
    let err = refused(
        &raccordo(
            &[
                "practice",
                "document",
                "--tenant",
                "016024",
                "-o",
                folder,
                "--server",
                s,
                &approved.id,
                "esito.txt",
            ],
            &[],
        )
        .await,
    );
    assert!(err.contains("exists"), "{err}");
    ok(&raccordo(
        &[
            "practice",
            "document",
            "--tenant",
            "016024",
            "-o",
            folder,
            "--force",
            "--server",
            s,
            &approved.id,
        ],
        &[],
    )
    .await);
    // To standard output.
    let out = ok(&raccordo(
        &[
            "practice",
            "document",
            "--tenant",
            "016024",
            "-o",
            "-",
            "--server",
            s,
            &approved.id,
        ],
        &[],
    )
    .await);
    assert_eq!(out, "ok");
    let err = refused(
        &raccordo(
            &[
                "practice",
                "document",
                "--tenant",
                "016024",
                "--server",
                s,
                &approved.id,
                "altro.pdf",
            ],
            &[],
        )
        .await,
    );
    assert!(
        err.contains("has no document altro.pdf (it has: esito.txt)"),
        "{err}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn the_hubs_log_is_coloured_only_when_asked() {
    for (envs, coloured) in [
        (vec![], false),
        (vec![("RACCORDO_COLOR", "always".to_string())], true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("raccordo.toml");
        std::fs::write(&config, config_toml(&HubOptions::new("http://127.0.0.1:9"))).unwrap();
        let log_path = dir.path().join("hub.log");
        let log_file = std::fs::File::create(&log_path).unwrap();
        // A log redirected to a file, as a service manager does.
        let mut hub = serve_logging_to(&config, &envs, log_file.into());
        grpc_addr_from_banner(&mut hub);
        let log = eventually("the hub to log its open API", || {
            let path = log_path.clone();
            async move {
                let text = std::fs::read_to_string(&path).ok()?;
                text.contains("no [clients] declared").then_some(text)
            }
        })
        .await;
        drop(hub);
        assert_eq!(log.contains('\x1b'), coloured, "{envs:?}: {log:?}");
    }
}
