//! `raccordo route render` for the kinds that do not speak HTTP: what an
//! AMQP route publishes and what a file-drop route writes, from the real
//! binary, without a broker or a folder being touched, secrets hidden.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_raccordo");

/// A configuration routing TARI for Bergamo to the adapter `vendor`, whose
/// keys are `adapter`, written in `dir` with `sample.json` beside it.
fn setup(dir: &Path, adapter: &str) -> (PathBuf, PathBuf) {
    let config = format!(
        r#"
[tenants."016024"]
name = "Comune di Bergamo"

[services.TARI]
title = "Dichiarazione TARI"
[[services.TARI.fields]]
name = "superficie_mq"
type = "number"
required = true

[[routes]]
tenants = ["016024"]
service = "TARI"
adapter = "vendor"
mode = "deferred"
vars = {{ ufficio = "tributi" }}

[adapters.vendor]
{adapter}
"#
    );
    let path = dir.join("raccordo.toml");
    std::fs::write(&path, config).unwrap();
    let sample = dir.join("sample.json");
    std::fs::write(
        &sample,
        json!({
            "applicant": {"type": "person", "fiscal_code": "RSSMRA45D25F205N",
                          "given_name": "Mario", "family_name": "D'Alò"},
            "data": {"superficie_mq": 85.5}
        })
        .to_string(),
    )
    .unwrap();
    (path, sample)
}

/// Runs `raccordo route render`; the standard output, or the failure.
fn render(config: &Path, sample: &Path) -> String {
    let out = std::process::Command::new(BIN)
        .args(["route", "render", "--tenant", "016024", "--service", "TARI"])
        .arg("--config")
        .arg(config)
        .arg("--practice")
        .arg(sample)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(feature = "amqp")]
#[test]
fn an_amqp_route_renders_its_publication_without_the_broker_password() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broker.password"), "very-secret-broker").unwrap();
    let (config, sample) = setup(
        dir.path(),
        r#"kind = "amqp"
url = "amqp://raccordo@127.0.0.1:5672/comuni"
password_file = "broker.password"
[adapters.vendor.submit]
exchange = "pratiche.{{ route.ufficio }}"
routing_key = "{{ tenant_id }}.{{ service_code }}"
[adapters.vendor.consume]
queue = "esiti"
dead_letter_exchange = "esiti.dlx"
"#,
    );
    let text = render(&config, &sample);
    assert!(!text.contains("very-secret-broker"), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "AMQP publish to amqp://127.0.0.1:5672/comuni");
    for expected in [
        "exchange: pratiche.tributi",
        "routing_key: 016024.TARI",
        "mandatory: true",
        "property message_id: 00000000-0000-7000-8000-000000000001",
        "property correlation_id: 00000000-0000-7000-8000-000000000000",
        "property content_type: application/json",
        "property delivery_mode: 2 (persistent)",
        "property type: raccordo.practice/v1",
        "property app_id: raccordo",
        "property reply_to: esiti",
        "header tenant: 016024",
        "header service: TARI",
        "header operation: submit",
        "header attempt: 1",
    ] {
        assert!(lines.contains(&expected), "{expected} in\n{text}");
    }
    let body: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(body["applicant"]["family_name"], "D'Alò");
    assert_eq!(body["data"]["superficie_mq"], 85.5);
}

#[test]
fn a_file_drop_route_renders_its_files_and_marker_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("inbox")).unwrap();
    let (config, sample) = setup(
        dir.path(),
        r#"kind = "file"
[adapters.vendor.outbound]
folder = "inbox"
name_template = "TARI_{{ tenant_id }}_{{ operation_id }}.txt"
format = "template"
encoding = "iso-8859-1"
completion = "marker"
template_inline = "{{ applicant.fiscal_code }};{{ applicant.family_name }};{{ data.superficie_mq }}"
"#,
    );
    let text = render(&config, &sample);
    let name = "TARI_016024_00000000-0000-7000-8000-000000000001.txt";
    // "D'Alò" is 5 bytes in ISO-8859-1: 16 + 1 + 5 + 1 + 4.
    let expected = format!(
        "file drop into {inbox}\n\
         file {name} (27 bytes)\n\
         marker {name}.done (0 bytes), written last\n\
         \n\
         --- {name} (iso-8859-1) ---\n\
         RSSMRA45D25F205N;D'Alò;85.5\n",
        inbox = dir.path().join("inbox").display()
    );
    assert_eq!(text, expected);
    assert_eq!(
        std::fs::read_dir(dir.path().join("inbox")).unwrap().count(),
        0,
        "nothing is written"
    );
}
