//! The file-drop adapter against real folders, with an in-memory hub side.

use async_trait::async_trait;
use raccordo_adapters::adapter::{Correlation, InboundError};
use raccordo_adapters::file::FileAdapter;
use raccordo_adapters::file::config::FileConfig;
use raccordo_adapters::message::{MessageAttachment, NormalizedMessage, SCHEMA_V1};
use raccordo_adapters::model::*;
use raccordo_adapters::{
    Adapter, DeliveryRequest, FailureClass, InboundOutcome, InboundResult, ResultSink,
};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The hub's side: knows some practices, dedupes by receipt like the store.
#[derive(Default)]
struct Sink {
    known: HashSet<String>,
    receipts: Mutex<HashSet<String>>,
    applied: Mutex<Vec<InboundResult>>,
    /// Another hub instance scans (the singleton is not this one's).
    not_mine: std::sync::atomic::AtomicBool,
    /// The singletons asked for, in order.
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl ResultSink for Sink {
    async fn apply(&self, r: InboundResult) -> Result<InboundOutcome, InboundError> {
        let Correlation::PracticeId(id) = &r.correlation else {
            return Err(InboundError::Uncorrelated(format!("{:?}", r.correlation)));
        };
        if !self.known.contains(id) {
            return Err(InboundError::Uncorrelated(id.clone()));
        }
        if let Some(receipt) = &r.receipt
            && !self.receipts.lock().unwrap().insert(receipt.clone())
        {
            return Ok(InboundOutcome::Duplicate);
        }
        self.applied.lock().unwrap().push(r);
        Ok(InboundOutcome::Applied)
    }

    async fn holds(&self, name: &str) -> bool {
        self.asked.lock().unwrap().push(name.to_string());
        !self.not_mine.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Sink {
    fn applied(&self) -> usize {
        self.applied.lock().unwrap().len()
    }
}

fn config(dir: &Path, extra_out: Value, extra_in: Value) -> FileConfig {
    let mut outbound = json!({
        "folder": dir.join("inbox"),
        "name_template": "{{ tenant_id }}_{{ practice_id }}_{{ operation_id }}.json",
    });
    merge(&mut outbound, extra_out);
    let mut inbound = json!({
        "folder": dir.join("outbox"),
        "scan_interval": "100ms",
        "fields": {
            "practice_id": "ID",
            "status": "ESITO",
            "status_map": {"OK": "APPROVED", "KO": "REJECTED"},
            "reason": "MOTIVO",
        },
    });
    merge(&mut inbound, extra_in);
    for sub in ["inbox", "outbox"] {
        let _ = std::fs::create_dir(dir.join(sub));
    }
    serde_json::from_value(json!({"outbound": outbound, "inbound": inbound})).unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    if let (Value::Object(b), Value::Object(e)) = (base, extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

fn request(practice: &str, op: Operation, attachment: Option<&[u8]>) -> DeliveryRequest {
    use base64::Engine;
    let mut data = serde_json::Map::new();
    data.insert("nota".into(), json!("città <b>&</b>"));
    DeliveryRequest {
        message: Arc::new(NormalizedMessage {
            schema: SCHEMA_V1.into(),
            message_id: format!("op-{practice}-{}", op.as_str()),
            operation: op,
            practice_id: practice.into(),
            tenant_id: "016024".into(),
            service_code: "TARI".into(),
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
            data,
            attachments: attachment
                .map(|b| {
                    let d = Document::new("planimetria.pdf", "application/pdf", b.to_vec());
                    vec![MessageAttachment {
                        meta: d.meta,
                        content_base64: Some(base64::engine::general_purpose::STANDARD.encode(b)),
                    }]
                })
                .unwrap_or_default(),
            submitted_at: chrono::Utc::now(),
            withdrawal_reason: None,
            outcome_data: Default::default(),
        }),
        attempt: 1,
        route_vars: Arc::new(serde_json::Map::new()),
        traceparent: None,
    }
}

fn files(folder: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(folder)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn start(cfg: FileConfig, known: &[String]) -> (FileAdapter, Arc<Sink>) {
    let adapter = FileAdapter::build("tributi", cfg, Path::new(".")).unwrap();
    let sink = Arc::new(Sink {
        known: known.iter().cloned().collect(),
        ..Default::default()
    });
    adapter.start_inbound(sink.clone()).await.unwrap();
    (adapter, sink)
}

#[tokio::test]
async fn a_batch_of_1000_with_three_bad_rows_applies_997_and_reports_three_lines() {
    let dir = tempfile::tempdir().unwrap();
    let known: Vec<String> = (0..1000).map(|i| format!("p{i:04}")).collect();
    let mut csv = String::from("ID;ESITO;MOTIVO\n");
    for (i, id) in known.iter().enumerate() {
        // Line numbers: the header is line 1, row i is line i + 2.
        match i {
            10 => csv.push_str(&format!("{id};BOH;\n")), // unknown status: line 12
            500 => csv.push_str("p9999;OK;\n"),          // no such practice: line 502
            998 => csv.push_str(&format!("{id};OK\n")),  // a field missing: line 1000
            _ => csv.push_str(&format!("{id};OK;bene\n")),
        }
    }
    let cfg = config(dir.path(), json!({}), json!({}));
    let (_adapter, sink) = start(cfg, &known).await;
    let outbox = dir.path().join("outbox");
    std::fs::write(outbox.join(".notte.csv.tmp"), &csv).unwrap();
    std::fs::rename(outbox.join(".notte.csv.tmp"), outbox.join("notte.csv")).unwrap();

    let processed = eventually("the batch processed", || {
        let f = files(&outbox.join("processed"));
        (!f.is_empty()).then_some(f)
    })
    .await;
    assert_eq!(sink.applied(), 997);
    assert!(processed[0].ends_with("-notte.csv"), "{processed:?}");
    // Good rows applied; the file goes to processed/ and the bad lines are
    // reported beside the rejected files.
    let reports = files(&outbox.join("rejected"));
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].ends_with("-notte.csv.error.txt"));
    let report = std::fs::read_to_string(outbox.join("rejected").join(&reports[0])).unwrap();
    assert!(report.contains("applied: 997"), "{report}");
    assert!(report.contains("rejected rows: 3"), "{report}");
    assert!(
        report.contains("line 12: status 'BOH' in 'ESITO' has no entry in status_map"),
        "{report}"
    );
    assert!(
        report.contains("line 502: no practice matches p9999"),
        "{report}"
    );
    assert!(
        report.contains("line 1000: 2 fields, the header has 3"),
        "{report}"
    );
    // Receipts are the content hash and the row.
    let receipts: HashSet<String> = sink
        .applied
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.receipt.clone().unwrap())
        .collect();
    assert_eq!(receipts.len(), 997);
    let sha = raccordo_adapters::model::sha256_hex(csv.as_bytes());
    assert!(receipts.contains(&format!("{sha}:1")));
}

#[tokio::test]
async fn a_file_written_slowly_is_not_taken_before_its_quiet_period() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        json!({}),
        json!({"completion": "quiet_period", "quiet_period": "1500ms"}),
    );
    let known: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    let (_adapter, sink) = start(cfg, &known).await;
    let path = dir.path().join("outbox").join("lento.csv");
    let mut f = std::fs::File::create(&path).unwrap();
    use std::io::Write;
    f.write_all(b"ID;ESITO;MOTIVO\n").unwrap();
    // Chunks closer together than the quiet period, cut mid-line: a reader
    // taking the file early would see a truncated last row.
    for i in 0..30 {
        f.write_all(format!("p{i};O").as_bytes()).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        f.write_all(b"K;\n").unwrap();
        f.flush().unwrap();
        assert_eq!(sink.applied(), 0, "taken while still being written");
        assert!(path.exists());
    }
    drop(f);
    eventually("the file processed once quiet", || {
        (!files(&dir.path().join("outbox/processed")).is_empty()).then_some(())
    })
    .await;
    assert_eq!(sink.applied(), 30);
    assert!(files(&dir.path().join("outbox/rejected")).is_empty());
}

#[tokio::test]
async fn marker_convention_waits_for_the_marker_and_moves_it_along() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        json!({}),
        json!({"completion": "marker", "marker_suffix": ".ok"}),
    );
    let (_adapter, sink) = start(cfg, &["p1".to_string()]).await;
    let outbox = dir.path().join("outbox");
    std::fs::write(outbox.join("r.csv"), "ID;ESITO;MOTIVO\np1;KO;incompleta\n").unwrap();
    // Several scans without the marker: nothing happens.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(sink.applied(), 0);
    std::fs::write(outbox.join("r.csv.ok"), "").unwrap();
    eventually("applied", || (sink.applied() == 1).then_some(())).await;
    let done = eventually("moved", || {
        let f = files(&outbox.join("processed"));
        (f.len() == 2).then_some(f)
    })
    .await;
    assert!(done.iter().any(|f| f.ends_with("-r.csv.ok")), "{done:?}");
    assert!(files(&outbox).is_empty());
    let r = &sink.applied.lock().unwrap()[0];
    assert_eq!(r.reply.status, Some(AdminStatus::Rejected));
    assert_eq!(r.reply.reason.as_deref(), Some("incompleta"));
}

#[tokio::test]
async fn xml_results_in_iso_8859_1_and_unusable_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        json!({}),
        json!({"format": "xml", "row_element": "esito", "encoding": "iso-8859-1"}),
    );
    let (_adapter, sink) = start(cfg, &["p1".to_string()]).await;
    let outbox = dir.path().join("outbox");
    let xml = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<esiti>\n <esito ID=\"p1\">\n  <ESITO>OK</ESITO>\n  <MOTIVO>conformit\xE0 verificata</MOTIVO>\n </esito>\n</esiti>\n";
    std::fs::write(outbox.join("a.xml"), xml).unwrap();
    eventually("applied", || (sink.applied() == 1).then_some(())).await;
    assert_eq!(
        sink.applied.lock().unwrap()[0].reply.reason.as_deref(),
        Some("conformità verificata")
    );
    std::fs::write(outbox.join("b.xml"), "<esiti>\n<esito ID=\"p1\">\n</esiti>").unwrap();
    let rejected = eventually("the broken file rejected", || {
        let f = files(&outbox.join("rejected"));
        (f.len() == 2).then_some(f)
    })
    .await;
    let report = rejected
        .iter()
        .find(|f| f.ends_with("-b.xml.error.txt"))
        .unwrap();
    let text = std::fs::read_to_string(outbox.join("rejected").join(report)).unwrap();
    assert!(text.contains("line 3: not well-formed XML"), "{text}");
    assert!(rejected.iter().any(|f| f.ends_with("-b.xml")));
    assert_eq!(sink.applied(), 1);
}

#[tokio::test]
async fn files_over_the_size_limit_are_rejected_unread() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), json!({}), json!({"max_file_bytes": 64}));
    let (_adapter, sink) = start(cfg, &["p1".to_string()]).await;
    let outbox = dir.path().join("outbox");
    std::fs::write(
        outbox.join("big.csv"),
        format!("ID;ESITO;MOTIVO\np1;OK;{}\n", "x".repeat(100)),
    )
    .unwrap();
    let rejected = eventually("rejected", || {
        let f = files(&outbox.join("rejected"));
        (f.len() == 2).then_some(f)
    })
    .await;
    let report = rejected.iter().find(|f| f.ends_with(".error.txt")).unwrap();
    let text = std::fs::read_to_string(outbox.join("rejected").join(report)).unwrap();
    assert!(text.contains("max_file_bytes (64)"), "{text}");
    assert_eq!(sink.applied(), 0);
}

#[tokio::test]
async fn attachments_as_files_with_a_manifest_written_last() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        json!({"attachments": "files", "completion": "manifest", "format": "xml",
               "name_template": "{{ practice_id }}_{{ operation }}.xml"}),
        json!({}),
    );
    let (adapter, _sink) = start(cfg, &[]).await;
    let reply = adapter
        .deliver(request("p1", Operation::Submit, Some(b"%PDF-1.7 fake")))
        .await
        .unwrap();
    assert_eq!(reply.status, None, "written, no outcome yet");
    let inbox = dir.path().join("inbox");
    assert_eq!(
        files(&inbox),
        [
            "p1_submit.xml",
            "p1_submit.xml.1.planimetria.pdf",
            "p1_submit.xml.sha256"
        ]
    );
    assert_eq!(
        std::fs::read(inbox.join("p1_submit.xml.1.planimetria.pdf")).unwrap(),
        b"%PDF-1.7 fake"
    );
    let xml = std::fs::read_to_string(inbox.join("p1_submit.xml")).unwrap();
    assert!(
        xml.contains("<file>p1_submit.xml.1.planimetria.pdf</file>"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<sha256>{}</sha256>",
            sha256_hex(b"%PDF-1.7 fake")
        )),
        "{xml}"
    );
    assert!(!xml.contains("content_base64"), "{xml}");
    assert!(xml.contains("città &lt;b&gt;&amp;&lt;/b&gt;"), "{xml}");
    let manifest = std::fs::read_to_string(inbox.join("p1_submit.xml.sha256")).unwrap();
    assert!(manifest.contains(&format!(
        "{}  p1_submit.xml.1.planimetria.pdf\n",
        sha256_hex(b"%PDF-1.7 fake")
    )));
    assert!(manifest.contains(&format!("{}  p1_submit.xml\n", sha256_hex(xml.as_bytes()))));
}

#[tokio::test]
async fn fixed_width_template_in_iso_8859_1_with_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        json!({"format": "template", "encoding": "iso-8859-1", "completion": "marker",
               "name_template": "RICH_{{ date }}_{{ operation_id }}.txt",
               "template_inline": "{{ service_code | fixed(10) }}{{ data.nota | fixed(20) }}{{ 42 | fixed(5, \"right\", \"0\") }}|"}),
        json!({}),
    );
    let (adapter, _sink) = start(cfg, &[]).await;
    let req = request("p1", Operation::Submit, None);
    adapter.deliver(req.clone()).await.unwrap();
    let date = req.message.submitted_at.format("%Y%m%d").to_string();
    let name = format!("RICH_{date}_op-p1-submit.txt");
    let inbox = dir.path().join("inbox");
    assert_eq!(files(&inbox), [name.clone(), format!("{name}.done")]);
    let bytes = std::fs::read(inbox.join(&name)).unwrap();
    // Columns count characters: the accented letter is one byte in ISO-8859-1.
    assert_eq!(bytes, b"TARI      citt\xE0 <b>&</b>      00042|");
}

#[tokio::test]
async fn unsafe_names_are_refused_at_build_and_at_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let build = |template: &str| {
        FileAdapter::build(
            "t",
            config(dir.path(), json!({"name_template": template}), json!({})),
            Path::new("."),
        )
    };
    for bad in [
        "../x_{{ operation_id }}",
        "a/{{ operation_id }}",
        ".{{ operation_id }}",
        "{{ tenant_id }}.json",
    ] {
        let err = build(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(err.key, "outbound.name_template", "{bad}");
    }
    // A template whose output depends on the data passes the sample check
    // but is still refused when a delivery renders an unsafe name.
    let sneaky = build("{% if practice_id == 'evil' %}..{% endif %}x_{{ operation_id }}").unwrap();
    let err = sneaky
        .deliver(request("evil", Operation::Submit, None))
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(
        err.reason.contains("outbound.name_template") && err.reason.contains(".."),
        "{}",
        err.reason
    );
    assert!(files(&dir.path().join("inbox")).is_empty());
    // Values are sanitised: route variables cannot smuggle a path in.
    let routed = build("{{ route.ufficio }}_{{ operation_id }}").unwrap();
    let mut req = request("p1", Operation::Submit, None);
    req.route_vars = Arc::new(json!({"ufficio": "../../etc"}).as_object().unwrap().clone());
    routed.deliver(req).await.unwrap();
    assert_eq!(files(&dir.path().join("inbox")), ["____etc_op-p1-submit"]);
}

#[tokio::test]
async fn a_missing_inbox_is_a_transient_failure_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), json!({}), json!({}));
    let (adapter, _sink) = start(cfg, &[]).await;
    std::fs::remove_dir(dir.path().join("inbox")).unwrap();
    let err = adapter
        .deliver(request("p1", Operation::Submit, None))
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Transient);
    assert!(
        err.reason.contains("inbox folder") && err.reason.contains("not found"),
        "{}",
        err.reason
    );
    assert_eq!(adapter.health().state(), "degraded");
    std::fs::create_dir(dir.path().join("inbox")).unwrap();
    adapter
        .deliver(request("p1", Operation::Submit, None))
        .await
        .unwrap();
    assert_eq!(adapter.health().state(), "up");
}

/// With several hub instances on one folder, only the holder of the
/// folder's scan singleton reads it; the others leave the files alone
/// until the turn is theirs.
#[tokio::test]
async fn only_the_holder_of_the_scan_singleton_reads_the_folder() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), json!({}), json!({}));
    let adapter = FileAdapter::build("tributi", cfg, Path::new(".")).unwrap();
    let sink = Arc::new(Sink {
        known: ["p0001".to_string()].into_iter().collect(),
        ..Default::default()
    });
    sink.not_mine.store(true, Ordering::SeqCst);
    let outbox = dir.path().join("outbox");
    std::fs::write(outbox.join("notte.csv"), "ID;ESITO;MOTIVO\np0001;OK;bene\n").unwrap();
    adapter.start_inbound(sink.clone()).await.unwrap();
    // Asked twice: a whole round passed in which it would have scanned.
    let asked = eventually("the scan singleton asked for twice", || {
        let asked = sink.asked.lock().unwrap().clone();
        (asked.len() >= 2).then_some(asked)
    })
    .await;
    assert!(asked.iter().all(|a| a == "file-scan:tributi"), "{asked:?}");
    assert_eq!(sink.applied(), 0, "another instance scans");
    assert_eq!(files(&outbox), ["notte.csv"], "left in place");
    // The turn becomes this instance's (its holder died): it reads the file.
    sink.not_mine.store(false, Ordering::SeqCst);
    eventually("the file processed", || {
        (!files(&outbox.join("processed")).is_empty()).then_some(())
    })
    .await;
    assert_eq!(sink.applied(), 1);
}
