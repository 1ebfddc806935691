//! The file-drop adapter (`kind = "file"`): batch back offices that read
//! request files from a folder and write result files to another.
//!
//! - Outbound ([`FileAdapter::deliver`]): one request file per delivery in
//!   the vendor's inbox, named by a checked template, written atomically
//!   (temporary name, `fsync`, rename, folder `fsync`), optionally followed
//!   by a marker or a manifest. The delivery succeeds only once the rename
//!   is durable; I/O failures are transient, with the reason.
//! - Inbound ([`inbound`]): result files in the vendor's outbox, one result
//!   or many rows per file, applied row by row and idempotently, then moved.
//!
//! Operator documentation: `docs/adapters/file.md`.

pub mod config;
mod fsio;
pub mod inbound;
mod mapping;
pub mod name;
pub mod parse;

use crate::adapter::{
    Adapter, AdapterError, AdapterHealth, DeliveryError, DeliveryRequest, ResultSink, VendorReply,
};
use crate::message::{NormalizedMessage, SCHEMA_V1};
use crate::model::{Operation, sha256_hex};
use crate::template::{BodyTemplate, Escape, Templates};
use async_trait::async_trait;
use base64::Engine;
use config::{
    AttachmentFiles, Encoding, FileConfig, InboundCompletion, OutboundCompletion, OutboundFormat,
    TemplateEscape,
};
use name::NameTemplate;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A configured file-drop instance.
pub struct FileAdapter {
    name: String,
    config: FileConfig,
    names: NameTemplate,
    templates: Templates,
    /// Last outbound problem (cleared by the next good delivery).
    outbound_problem: Mutex<Option<String>>,
    inbound_problem: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for FileAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAdapter")
            .field("name", &self.name)
            .field("inbox", &self.config.outbound.folder)
            .finish_non_exhaustive()
    }
}

/// One file of a delivery.
struct OutFile {
    name: String,
    bytes: Vec<u8>,
}

impl FileAdapter {
    /// Builds an instance. Relative folders and template files resolve
    /// against `config_dir`. The name template is rendered with a sample
    /// delivery of each operation and refused if it could leave the folder.
    pub fn build(
        name: &str,
        mut config: FileConfig,
        config_dir: &Path,
    ) -> Result<Self, AdapterError> {
        if config.max_concurrency == 0 {
            return Err(AdapterError::new("max_concurrency", "must be at least 1"));
        }
        let out = &mut config.outbound;
        out.folder = resolve(config_dir, &out.folder);
        if out.max_name_length == 0 || out.max_name_length > MAX_NAME {
            return Err(AdapterError::new(
                "outbound.max_name_length",
                format!(
                    "must be between 1 and {MAX_NAME} (file systems limit names to 255 bytes, and temporary names are longer)"
                ),
            ));
        }
        let suffix_len = match out.completion {
            OutboundCompletion::Rename => 0,
            OutboundCompletion::Marker => {
                check_suffix("outbound.marker_suffix", &out.marker_suffix)?
            }
            OutboundCompletion::Manifest => {
                check_suffix("outbound.manifest_suffix", &out.manifest_suffix)?
            }
        };
        // Leave room for the marker after the name.
        let max_len = out.max_name_length.saturating_sub(suffix_len);
        let names = NameTemplate::new(&out.name_template, max_len)
            .map_err(|e| AdapterError::new("outbound.name_template", e))?;
        let render = |op, n| {
            names
                .render_sample(&sample_request(op, n))
                .map_err(|e| AdapterError::new("outbound.name_template", e))
        };
        let (first, other, withdrawal) = (
            render(Operation::Submit, 1)?,
            render(Operation::Submit, 2)?,
            render(Operation::Withdraw, 3)?,
        );
        // Two deliveries under one name would overwrite each other.
        if first == other || (out.withdrawals && first == withdrawal) {
            return Err(AdapterError::new(
                "outbound.name_template",
                format!(
                    "gives different deliveries the same name ('{first}'): include {{{{ operation_id }}}}, or {{{{ practice_id }}}} and {{{{ operation }}}}"
                ),
            ));
        }
        let mut templates = Templates::new();
        BodyTemplate {
            key: "outbound",
            selector: "format",
            selected: out.format == OutboundFormat::Template,
            file: out.template.as_deref(),
            inline: out.template_inline.as_deref(),
        }
        .add_to(
            &mut templates,
            "request",
            template_escape(out.escape),
            config_dir,
        )?;
        if let Some(inb) = config.inbound.as_mut() {
            inb.folder = resolve(config_dir, &inb.folder);
            if inb.folder == config.outbound.folder {
                return Err(AdapterError::new(
                    "inbound.folder",
                    "is the same folder as outbound.folder: request files would be read as results",
                ));
            }
            for (key, sub) in [
                ("inbound.processed_folder", &inb.processed_folder),
                ("inbound.rejected_folder", &inb.rejected_folder),
            ] {
                let mut parts = sub.components();
                let plain = matches!(parts.next(), Some(std::path::Component::Normal(_)))
                    && parts.next().is_none();
                if !plain {
                    return Err(AdapterError::new(
                        key,
                        "must be one plain folder name inside inbound.folder (same file system, so moves are atomic)",
                    ));
                }
            }
            if inb.completion == InboundCompletion::Marker {
                check_suffix("inbound.marker_suffix", &inb.marker_suffix)?;
            }
            if inb.quiet_period.is_zero() && inb.completion == InboundCompletion::QuietPeriod {
                return Err(AdapterError::new(
                    "inbound.quiet_period",
                    "must be longer than zero",
                ));
            }
            if inb.scan_interval < Duration::from_millis(100) {
                return Err(AdapterError::new(
                    "inbound.scan_interval",
                    "must be at least 100ms",
                ));
            }
            if inb.max_rows == 0 {
                return Err(AdapterError::new("inbound.max_rows", "must be at least 1"));
            }
            if inb.max_file_bytes == 0 {
                return Err(AdapterError::new(
                    "inbound.max_file_bytes",
                    "must be at least 1",
                ));
            }
            if matches!(inb.csv.delimiter, '"' | '\n' | '\r') {
                return Err(AdapterError::new(
                    "inbound.csv.delimiter",
                    "cannot be a quote or a line break",
                ));
            }
            if inb.row_element.is_empty() {
                return Err(AdapterError::new("inbound.row_element", "is empty"));
            }
            let f = &inb.fields;
            if f.practice_id.is_none() && f.operation_id.is_none() && f.vendor_reference.is_none() {
                return Err(AdapterError::new(
                    "inbound.fields",
                    "name at least one of practice_id, operation_id, vendor_reference: each result must say which practice it is about",
                ));
            }
            if f.status.is_some() && f.status_map.is_empty() {
                return Err(AdapterError::new(
                    "inbound.fields.status_map",
                    "is empty: map the vendor's status codes to canonical statuses",
                ));
            }
            let error = |(key, reason): (String, String)| AdapterError::new(key, reason);
            crate::outcome::validate_outcome_fields("inbound.fields.outcome_data", &f.outcome_data)
                .map_err(error)?;
            for (i, d) in f.base64_documents.iter().enumerate() {
                d.validate(&format!("inbound.fields.base64_documents[{i}]"))
                    .map_err(error)?;
            }
        }
        Ok(Self {
            name: name.to_string(),
            config,
            names,
            templates,
            outbound_problem: Mutex::new(None),
            inbound_problem: Arc::new(Mutex::new(None)),
        })
    }

    /// Deliveries this instance writes at once.
    pub fn max_concurrency(&self) -> usize {
        self.config.max_concurrency
    }

    /// The files of one delivery, in writing order (attachments, message).
    fn encode(&self, request: &DeliveryRequest, name: &str) -> Result<Vec<OutFile>, DeliveryError> {
        let out = &self.config.outbound;
        let mut files = Vec::new();
        let mut json = serde_json::to_value(&*request.message)
            .map_err(|e| DeliveryError::permanent(format!("cannot encode message: {e}")))?;
        if out.attachments == AttachmentFiles::Files
            && let Some(items) = json.get_mut("attachments").and_then(|a| a.as_array_mut())
        {
            for (i, item) in items.iter_mut().enumerate() {
                let Some(obj) = item.as_object_mut() else {
                    continue;
                };
                let Some(serde_json::Value::String(b64)) = obj.remove("content_base64") else {
                    // Sent by reference: metadata and hash only, no file.
                    continue;
                };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| DeliveryError::permanent(format!("attachment {i}: {e}")))?;
                let original = obj
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("allegato");
                let file = attachment_name(name, i, original);
                obj.insert("file".into(), serde_json::Value::String(file.clone()));
                files.push(OutFile { name: file, bytes });
            }
        }
        let body = match out.format {
            OutboundFormat::Json => serde_json::to_vec_pretty(&json)
                .map_err(|e| DeliveryError::permanent(format!("cannot encode message: {e}")))?,
            OutboundFormat::Xml => {
                let serde_json::Value::Object(map) = &json else {
                    return Err(DeliveryError::permanent("the message is not an object"));
                };
                crate::message_xml::to_xml_from_map(map).map_err(DeliveryError::permanent)?
            }
            OutboundFormat::Template => {
                let text = self
                    .templates
                    .render("request", request)
                    .map_err(|e| DeliveryError::permanent(format!("outbound.template: {e}")))?;
                parse::encode(text, out.encoding)
                    .map_err(|e| DeliveryError::permanent(format!("outbound.encoding: {e}")))?
            }
        };
        files.push(OutFile {
            name: name.to_string(),
            bytes: body,
        });
        Ok(files)
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn check_suffix(key: &str, suffix: &str) -> Result<usize, AdapterError> {
    if suffix.is_empty() {
        return Err(AdapterError::new(key, "is empty"));
    }
    name::validate(&format!("x{suffix}"), 255).map_err(|e| AdapterError::new(key, e))?;
    Ok(suffix.len())
}

fn template_escape(escape: TemplateEscape) -> Escape {
    match escape {
        TemplateEscape::None => Escape::None,
        TemplateEscape::Xml => Escape::Xml,
        TemplateEscape::Json => Escape::Json,
    }
}

/// `REQUEST.N.ORIGINAL`, sanitised and bounded.
fn attachment_name(message: &str, index: usize, original: &str) -> String {
    let mut clean = name::sanitize_value(original)
        .trim_start_matches('.')
        .to_string();
    if clean.trim().is_empty() {
        clean = "allegato".into();
    }
    let prefix = format!("{message}.{}.", index + 1);
    let room = MAX_NAME.saturating_sub(prefix.len()).max(1);
    if clean.len() > room {
        let mut cut = clean.len() - room;
        while !clean.is_char_boundary(cut) {
            cut += 1;
        }
        clean = clean[cut..].to_string();
    }
    format!("{prefix}{clean}")
}

/// Longest request file name: temporary names add about 25 bytes.
const MAX_NAME: usize = 225;

/// A delivery with placeholder values (`n` varies the ids), to check the
/// name template at build.
fn sample_request(operation: Operation, n: u8) -> DeliveryRequest {
    use crate::model::*;
    DeliveryRequest {
        message: Arc::new(NormalizedMessage {
            schema: SCHEMA_V1.into(),
            message_id: format!("0190b7d2-0000-7000-8000-00000000010{n}"),
            operation,
            practice_id: format!("0190b7d2-0000-7000-8000-00000000020{}", n.min(2)),
            tenant_id: "000000".into(),
            service_code: "SERVICE".into(),
            applicant: Applicant {
                subject: Subject::Person(Person::default()),
                contacts: Contacts::default(),
            },
            submitter: None,
            channel: ChannelInfo::default(),
            data: Default::default(),
            attachments: vec![],
            submitted_at: chrono::Utc::now(),
            withdrawal_reason: None,
            outcome_data: Default::default(),
        }),
        attempt: 1,
        route_vars: Arc::new(Default::default()),
        traceparent: None,
    }
}

#[async_trait]
impl Adapter for FileAdapter {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn supports(&self, operation: Operation) -> bool {
        operation == Operation::Submit || self.config.outbound.withdrawals
    }

    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
        if !self.supports(request.operation()) {
            return Err(DeliveryError::permanent(format!(
                "adapter '{}' does not write withdrawals (outbound.withdrawals = false)",
                self.name
            )));
        }
        // Validated again here: the sample at build cannot cover every value.
        let name = self
            .names
            .render(&request)
            .map_err(|e| DeliveryError::permanent(format!("outbound.name_template {e}")))?;
        let files = self.encode(&request, &name)?;
        let out = self.config.outbound.clone();
        let written = tokio::task::spawn_blocking(move || write_delivery(&out, &name, files)).await;
        let result = match written {
            Ok(Ok(())) => Ok(VendorReply::default()),
            Ok(Err(e)) => Err(DeliveryError::transient(e.to_string())),
            Err(e) => Err(DeliveryError::transient(format!("file writer failed: {e}"))),
        };
        if let Ok(mut p) = self.outbound_problem.lock() {
            *p = result
                .as_ref()
                .err()
                .map(|e| format!("inbox: {}", e.reason));
        }
        result
    }

    fn render(&self, request: &DeliveryRequest) -> Option<Result<String, DeliveryError>> {
        if !self.supports(request.operation()) {
            return Some(Err(DeliveryError::permanent(
                "no request file is written for withdrawals (outbound.withdrawals = false)",
            )));
        }
        let rendered = self
            .names
            .render(request)
            .map_err(|e| DeliveryError::permanent(format!("outbound.name_template {e}")))
            .and_then(|name| {
                let files = self.encode(request, &name)?;
                Ok(render_files(&self.config.outbound, &name, &files))
            });
        Some(rendered)
    }

    async fn start_inbound(&self, sink: Arc<dyn ResultSink>) -> Result<(), AdapterError> {
        let Some(cfg) = self.config.inbound.clone() else {
            return Ok(());
        };
        if !cfg.folder.is_dir() {
            // A vendor share that is not mounted yet must not stop the hub:
            // the scanner keeps trying and health says why.
            tracing::warn!(adapter = %self.name, folder = %cfg.folder.display(),
                "the outbox folder is not reachable yet; scanning until it is");
        }
        let inbound = inbound::Inbound {
            name: self.name.clone(),
            config: cfg,
            sink,
            health: Arc::clone(&self.inbound_problem),
        };
        tokio::spawn(inbound.run());
        Ok(())
    }

    fn health(&self) -> AdapterHealth {
        let out = self.outbound_problem.lock().ok().and_then(|p| p.clone());
        let inb = self.inbound_problem.lock().ok().and_then(|p| p.clone());
        match (out, inb) {
            (None, None) => AdapterHealth::Up,
            (Some(a), Some(b)) => AdapterHealth::Degraded(format!("{a}; {b}")),
            (Some(a), None) | (None, Some(a)) => AdapterHealth::Degraded(a),
        }
    }
}

/// The marker or manifest written after a delivery's files, if any: its
/// name and bytes.
fn completion_file(
    out: &config::OutboundConfig,
    name: &str,
    files: &[OutFile],
) -> Option<(String, Vec<u8>)> {
    match out.completion {
        OutboundCompletion::Rename => None,
        OutboundCompletion::Marker => Some((format!("{name}{}", out.marker_suffix), Vec::new())),
        OutboundCompletion::Manifest => {
            let lines: String = files
                .iter()
                .map(|f| format!("{}  {}\n", sha256_hex(&f.bytes), f.name))
                .collect();
            Some((format!("{name}{}", out.manifest_suffix), lines.into_bytes()))
        }
    }
}

/// The files of a delivery as text for `raccordo route render`: the
/// folder, each file's name and size in writing order, then the request
/// file's content and the marker or manifest. Attachments are named, not
/// printed (they may be binary).
fn render_files(out: &config::OutboundConfig, name: &str, files: &[OutFile]) -> String {
    let mut text = format!("file drop into {}\n", out.folder.display());
    for f in files {
        text.push_str(&format!("file {} ({} bytes)\n", f.name, f.bytes.len()));
    }
    let completion = completion_file(out, name, files);
    if let Some((marker, bytes)) = &completion {
        let what = match out.completion {
            OutboundCompletion::Manifest => "manifest",
            _ => "marker",
        };
        text.push_str(&format!(
            "{what} {marker} ({} bytes), written last\n",
            bytes.len()
        ));
    }
    if let Some(request) = files.iter().find(|f| f.name == name) {
        // Shown as text in the file's encoding; the file holds the bytes.
        let shown = match (std::str::from_utf8(&request.bytes), out.encoding) {
            (Ok(utf8), _) => utf8.to_string(),
            (Err(_), Encoding::Latin1) => request.bytes.iter().map(|&b| char::from(b)).collect(),
            (Err(_), Encoding::Utf8) => String::from_utf8_lossy(&request.bytes).into_owned(),
        };
        let encoding = match out.encoding {
            Encoding::Utf8 => "utf-8",
            Encoding::Latin1 => "iso-8859-1",
        };
        text.push_str(&format!("\n--- {} ({encoding}) ---\n", request.name));
        text.push_str(&shown);
        if !shown.ends_with('\n') {
            text.push('\n');
        }
    }
    if let Some((marker, bytes)) = completion.filter(|(_, b)| !b.is_empty()) {
        text.push_str(&format!("\n--- {marker} ---\n"));
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    text
}

/// Writes every file of a delivery atomically, makes them durable, then
/// writes the marker or manifest (so the vendor sees it last).
fn write_delivery(
    out: &config::OutboundConfig,
    name: &str,
    files: Vec<OutFile>,
) -> Result<(), fsio::FsError> {
    let folder = fsio::open_folder(&out.folder, "inbox")?;
    for f in &files {
        fsio::write_atomic(&folder, &f.name, &f.bytes)?;
    }
    fsio::sync_dir(&folder)?;
    if let Some((marker, bytes)) = completion_file(out, name, &files) {
        fsio::write_atomic(&folder, &marker, &bytes)?;
        fsio::sync_dir(&folder)?;
    }
    Ok(())
}
