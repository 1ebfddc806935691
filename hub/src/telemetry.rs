//! Logging setup: readable lines on a terminal, JSON lines when asked.
//!
//! Log call sites carry ids, codes, classes and counts, never free text
//! from citizens, operators or vendors. As a last defence every logged
//! string — message, field value, span field — passes [`sanitize`] on its
//! way out, in both formats: anything shaped like a codice fiscale or a
//! partita IVA is masked, control characters are escaped (a value cannot
//! forge a line) and each string is cut at [`MAX_FIELD_BYTES`].

use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The longest string a log record carries per field; longer ones are cut
/// and marked, so a huge value cannot make a huge line.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Installs the global subscriber. `RUST_LOG` overrides the default level
/// (`info` for the hub, `warn` for dependencies). `color`: whether the
/// text format may colour its lines (see `--color`: by default only on a
/// terminal, since in a file or a collector colour codes are noise).
pub fn init(format: LogFormat, color: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,raccordo=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color && format == LogFormat::Text);
    let _ = match format {
        // Field by field: the text format has no quoting of its own.
        LogFormat::Text => builder
            .fmt_fields(SanitizedFields)
            .with_writer(std::io::stderr)
            .try_init(),
        // JSON already escapes control characters; each string literal of
        // the finished record is rewritten, keeping the record's shape.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_writer(|| JsonRecordWriter::new(std::io::stderr()))
            .try_init(),
    };
}

/// What may leave the process of one logged string: identifiers masked,
/// control characters escaped, at most [`MAX_FIELD_BYTES`] bytes.
pub fn sanitize(value: &str) -> String {
    let masked = mask_identifiers(value);
    let mut out = String::with_capacity(masked.len().min(MAX_FIELD_BYTES + 32));
    for c in masked.chars() {
        if out.len() >= MAX_FIELD_BYTES {
            let _ = write!(out, "…[truncated, {} bytes]", masked.len());
            return out;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // C0, DEL, C1, and the Unicode line and paragraph separators.
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Digit positions of a codice fiscale, where omocodia puts letters.
const CF_DIGITS: [usize; 7] = [6, 7, 9, 10, 12, 13, 14];
const OMOCODIA: &[u8] = b"LMNPQRSTUV";

fn cf_shaped(w: &[u8]) -> bool {
    w.len() == 16
        && w.iter().enumerate().all(|(i, b)| {
            let b = b.to_ascii_uppercase();
            if CF_DIGITS.contains(&i) {
                b.is_ascii_digit() || OMOCODIA.contains(&b)
            } else {
                b.is_ascii_uppercase()
            }
        })
}

/// Masks every codice fiscale shape (anywhere, whatever surrounds it) and
/// every run of exactly 11 digits standing alone or after `IT` (a partita
/// IVA); runs of other lengths — practice ids, counts — are left alone.
fn mask_identifiers(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i + 11 <= b.len() {
        if i + 16 <= b.len() && cf_shaped(&b[i..i + 16]) {
            spans.push((i, i + 16));
            i += 16;
            continue;
        }
        if b[i].is_ascii_digit() {
            let end = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let before = &b[..i];
            let alone = match before.last() {
                None => true,
                Some(c) if !c.is_ascii_alphanumeric() => true,
                Some(_) => {
                    before.len() >= 2
                        && before[before.len() - 2..].eq_ignore_ascii_case(b"IT")
                        && before
                            .len()
                            .checked_sub(3)
                            .is_none_or(|j| !before[j].is_ascii_alphanumeric())
                }
            };
            let after_ok = b.get(end).is_none_or(|c| !c.is_ascii_alphanumeric());
            if end - i == 11 && alone && after_ok {
                spans.push((i, end));
            }
            i = end;
            continue;
        }
        i += 1;
    }
    if spans.is_empty() {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (start, end) in spans {
        out.push_str(&s[at..start]);
        out.push_str(&raccordo_domain::identifiers::mask(&s[start..end]));
        at = end;
    }
    out.push_str(&s[at..]);
    std::borrow::Cow::Owned(out)
}

/// Text-format fields: the message as it reads, then `name=value`, each
/// passed through [`sanitize`]; strings quoted as `Debug` would.
#[derive(Debug, Clone, Copy, Default)]
pub struct SanitizedFields;

impl<'writer> FormatFields<'writer> for SanitizedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl TextVisitor<'_, '_> {
    fn put(&mut self, field: &Field, value: &str, quoted: bool) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let clean = sanitize(value);
        self.result = match (field.name(), quoted) {
            ("message", _) => write!(self.writer, "{sep}{clean}"),
            (name, true) => write!(
                self.writer,
                "{sep}{name}=\"{}\"",
                clean.replace('"', "\\\"")
            ),
            (name, false) => write!(self.writer, "{sep}{name}={clean}"),
        };
    }
}

impl Visit for TextVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value, true);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, &format!("{value:?}"), false);
    }
}

/// Collects one JSON record (the formatter writes each record whole) and,
/// when dropped, writes it with every string literal sanitized.
pub struct JsonRecordWriter<W: std::io::Write> {
    record: Vec<u8>,
    out: W,
}

impl<W: std::io::Write> JsonRecordWriter<W> {
    /// A writer of one record to `out`.
    pub fn new(out: W) -> Self {
        Self {
            record: Vec::new(),
            out,
        }
    }
}

impl<W: std::io::Write> std::io::Write for JsonRecordWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.record.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: std::io::Write> Drop for JsonRecordWriter<W> {
    fn drop(&mut self) {
        if self.record.is_empty() {
            return;
        }
        let clean = sanitize_json_record(&String::from_utf8_lossy(&self.record));
        let _ = self.out.write_all(clean.as_bytes());
        let _ = self.out.flush();
    }
}

/// Rewrites every string literal of a JSON text through [`sanitize`],
/// copying everything between literals as it is.
pub fn sanitize_json_record(json: &str) -> String {
    let b = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut at = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < b.len() && b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        let end = (i + 1).min(b.len());
        out.push_str(&json[at..start]);
        let literal = &json[start..end];
        match serde_json::from_str::<String>(literal) {
            Ok(s) => {
                let clean = sanitize(&s);
                out.push_str(&serde_json::to_string(&clean).unwrap_or_else(|_| "\"\"".into()));
            }
            // Not a literal the formatter would write: dropped rather
            // than passed on unchecked.
            Err(_) => out.push_str("\"\""),
        }
        at = end;
        i = end;
    }
    out.push_str(&json[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fiscal_codes_and_vat_numbers_are_masked_wherever_they_stand() {
        let s = sanitize("Maria RSSMRA85M01H501Q, omocode RSSMRA85M0MH50MQ, xRSSMRA85M01H501Qy");
        assert!(!s.contains("RSSMRA85M01H501Q"), "{s}");
        assert!(!s.contains("RSSMRA85M0MH50MQ"), "{s}");
        assert!(s.contains("RSS***********1Q"), "{s}");
        let s = sanitize("P.IVA 12345678903 / IT86334519757; order 123456789012; n=42");
        assert!(
            !s.contains("12345678903") && !s.contains("86334519757"),
            "{s}"
        );
        assert!(s.contains("123456789012"), "{s}");
        // Practice ids stay readable.
        let id = "0195f0a4-1b2c-7d3e-8f40-123456789012";
        assert_eq!(sanitize(id), id);
    }

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert_eq!(
            sanitize("a\nb\r\x1b[31m\u{2028}"),
            "a\\nb\\r\\u{1b}[31m\\u{2028}"
        );
        let long = "é".repeat(3000);
        let s = sanitize(&long);
        assert!(s.len() < MAX_FIELD_BYTES + 40, "{}", s.len());
        assert!(s.ends_with("…[truncated, 6000 bytes]"), "{s}");
    }

    #[test]
    fn json_records_keep_their_shape() {
        let line = r#"{"level":"INFO","message":"x RSSMRA85M01H501Q\nforged","n":3,"a":["\"q\""]}"#;
        let clean = sanitize_json_record(&format!("{line}\n"));
        assert!(clean.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&clean).unwrap();
        assert_eq!(v["message"], "x RSS***********1Q\\nforged");
        assert_eq!(v["n"], 3);
        assert_eq!(v["a"][0], "\"q\"");
    }
}
