//! Configuration of a file-drop adapter instance (`kind = "file"`).
//! Every key is documented in `docs/adapters/file.md`.

use crate::model::AdminStatus;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[adapters.NAME]` with `kind = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Deliveries written at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Request files: the vendor's inbox folder.
    pub outbound: OutboundConfig,
    /// Result files: the vendor's outbox folder (absent = no results by file).
    #[serde(default)]
    pub inbound: Option<InboundConfig>,
}

/// `[adapters.NAME.outbound]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// The vendor's inbox (relative to the configuration file).
    pub folder: PathBuf,
    /// File name template; sees `tenant_id`, `service_code`, `practice_id`,
    /// `operation_id`, `operation`, `date`, `route.*`.
    pub name_template: String,
    /// Longest file name accepted, in bytes (marker suffixes included).
    #[serde(default = "default_max_name")]
    pub max_name_length: usize,
    /// What the request file contains.
    #[serde(default)]
    pub format: OutboundFormat,
    /// Template file (relative to the configuration file), for `format = "template"`.
    #[serde(default)]
    pub template: Option<String>,
    /// Inline template text, instead of `template`.
    #[serde(default)]
    pub template_inline: Option<String>,
    /// Escaping of template output: `none`, `xml` or `json`.
    #[serde(default)]
    pub escape: TemplateEscape,
    /// Character encoding of template output.
    #[serde(default)]
    pub encoding: Encoding,
    /// Attachments inside the message (`inline`) or as files beside it (`files`).
    #[serde(default)]
    pub attachments: AttachmentFiles,
    /// What tells the vendor a request is complete.
    #[serde(default)]
    pub completion: OutboundCompletion,
    /// Suffix of the marker file (`completion = "marker"`).
    #[serde(default = "default_marker")]
    pub marker_suffix: String,
    /// Suffix of the manifest file (`completion = "manifest"`).
    #[serde(default = "default_manifest")]
    pub manifest_suffix: String,
    /// Whether withdrawals are written too (as a second file).
    #[serde(default = "default_true")]
    pub withdrawals: bool,
}

/// The request file's content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundFormat {
    /// The normalized message as JSON.
    #[default]
    Json,
    /// The normalized message as XML (`docs/schemas/practice-v1.xsd`).
    Xml,
    /// A template (fixed-width, CSV, vendor XML).
    Template,
}

/// Escaping applied to template output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateEscape {
    #[default]
    None,
    Xml,
    Json,
}

/// Text encodings for vendor files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8", alias = "UTF-8")]
    Utf8,
    #[serde(rename = "iso-8859-1", alias = "ISO-8859-1", alias = "latin1")]
    Latin1,
}

/// How attachments travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentFiles {
    /// Inside the message, as the route sends them.
    #[default]
    Inline,
    /// As separate files next to the message, named in it with their hashes.
    Files,
}

/// What marks a request as complete for the vendor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundCompletion {
    /// The atomic rename is the signal.
    #[default]
    Rename,
    /// An empty marker file (`name` + `marker_suffix`) written last.
    Marker,
    /// A manifest (`name` + `manifest_suffix`) with the SHA-256 of every file
    /// of the delivery, in `sha256sum` format, written last.
    Manifest,
}

/// `[adapters.NAME.inbound]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// The vendor's outbox (relative to the configuration file).
    pub folder: PathBuf,
    /// Only names ending with one of these are result files (empty = any).
    #[serde(default)]
    pub suffixes: Vec<String>,
    /// How a complete result file is recognised.
    #[serde(default)]
    pub completion: InboundCompletion,
    /// Suffix of the vendor's marker file (`completion = "marker"`).
    #[serde(default = "default_marker")]
    pub marker_suffix: String,
    /// Names that are still being written (`*` wildcard); always ignored.
    #[serde(default = "default_temp_patterns")]
    pub temp_patterns: Vec<String>,
    /// `completion = "quiet_period"`: unchanged size and mtime for this long.
    #[serde(default = "default_quiet", with = "humantime_serde")]
    pub quiet_period: Duration,
    /// Full scan of the folder, whatever the file events say.
    #[serde(default = "default_scan", with = "humantime_serde")]
    pub scan_interval: Duration,
    /// File content.
    #[serde(default)]
    pub format: InboundFormat,
    #[serde(default)]
    pub encoding: Encoding,
    /// Larger files are rejected unread.
    #[serde(default = "default_max_file")]
    pub max_file_bytes: u64,
    /// Files with more rows are rejected whole (nothing applied).
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// CSV options.
    #[serde(default)]
    pub csv: CsvOptions,
    /// XML: each element with this name is one result (its child elements
    /// and attributes are the fields).
    #[serde(default = "default_row_element")]
    pub row_element: String,
    /// Delete a processed file instead of moving it to `processed/`.
    #[serde(default)]
    pub delete_processed: bool,
    /// Folder for processed files (relative to `folder`).
    #[serde(default = "default_processed")]
    pub processed_folder: PathBuf,
    /// Folder for rejected files and error reports (relative to `folder`).
    #[serde(default = "default_rejected")]
    pub rejected_folder: PathBuf,
    /// Which field says what.
    pub fields: FieldMapping,
}

/// How a result file is complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundCompletion {
    /// The vendor writes under a temporary name and renames into place.
    #[default]
    Rename,
    /// The vendor writes `name` + `marker_suffix` when `name` is complete.
    Marker,
    /// Size and mtime unchanged for `quiet_period`.
    QuietPeriod,
}

/// Result file formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundFormat {
    /// One row per line after a header line.
    #[default]
    Csv,
    /// One row per `row_element` element.
    Xml,
    /// One object (one result) or an array of objects.
    Json,
}

/// `[adapters.NAME.inbound.csv]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// One character; `;` is common in Italian back offices.
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: default_delimiter(),
        }
    }
}

/// `[adapters.NAME.inbound.fields]`: column names (CSV), element or
/// attribute names (XML) or keys (JSON) of each result.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// The hub's practice id.
    #[serde(default)]
    pub practice_id: Option<String>,
    /// The delivery's operation id (`message_id` of the request).
    #[serde(default)]
    pub operation_id: Option<String>,
    /// A reference the vendor reported earlier (e.g. its protocol number).
    #[serde(default)]
    pub vendor_reference: Option<String>,
    /// The kind that reference was stored under.
    #[serde(default = "default_reference_kind")]
    pub vendor_reference_kind: String,
    /// The municipality (ISTAT code), when the vendor writes it.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// The vendor's status code, mapped by `status_map`.
    #[serde(default)]
    pub status: Option<String>,
    /// Vendor status code → canonical status (`OK = "APPROVED"`).
    #[serde(default)]
    pub status_map: BTreeMap<String, AdminStatus>,
    /// The status when a row carries none.
    #[serde(default = "default_status")]
    pub default_status: AdminStatus,
    /// A human-readable reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// The protocol number assigned by the administration.
    #[serde(default)]
    pub protocol_number: Option<String>,
    /// The protocol date (`YYYY-MM-DD`, `DD/MM/YYYY` or RFC 3339).
    #[serde(default)]
    pub protocol_date: Option<String>,
    /// The vendor's own id of the practice, recorded as a `vendor_id` reference.
    #[serde(default)]
    pub vendor_id: Option<String>,
    /// Outcome data: a field of the service's `outcome_data` declaration →
    /// the column (attribute, key) holding its value, taken as text (the
    /// hub types it by the declaration); an empty cell says nothing.
    #[serde(default)]
    pub outcome_data: BTreeMap<String, String>,
    /// Outcome documents sent as one base64 column each, with the name and
    /// media type given here (`field` is the column).
    #[serde(default)]
    pub base64_documents: Vec<crate::outcome::Base64Document>,
}

fn default_concurrency() -> usize {
    4
}
fn default_max_name() -> usize {
    200
}
fn default_marker() -> String {
    ".done".into()
}
fn default_manifest() -> String {
    ".sha256".into()
}
fn default_true() -> bool {
    true
}
fn default_temp_patterns() -> Vec<String> {
    vec![".*".into(), "*.tmp".into(), "*.part".into(), "~*".into()]
}
fn default_quiet() -> Duration {
    Duration::from_secs(5)
}
fn default_scan() -> Duration {
    Duration::from_secs(30)
}
fn default_max_file() -> u64 {
    64 * 1024 * 1024
}
fn default_max_rows() -> usize {
    100_000
}
fn default_row_element() -> String {
    "result".into()
}
fn default_processed() -> PathBuf {
    PathBuf::from("processed")
}
fn default_rejected() -> PathBuf {
    PathBuf::from("rejected")
}
fn default_delimiter() -> char {
    ';'
}
fn default_reference_kind() -> String {
    "protocol".into()
}
fn default_status() -> AdminStatus {
    AdminStatus::Registered
}
