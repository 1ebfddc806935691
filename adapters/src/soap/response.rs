//! From a vendor's SOAP reply to a [`VendorReply`] or a classified failure:
//! MTOM unpacking, character-set decoding, one hardened streaming pass
//! ([`super::xml`]), then the configured paths and value tables.

use super::config::{ErrorClass, FaultMapping, ResponseMapping};
use super::xml::{self, Capture, Fault, Limits, Parsed, XPath, XmlError};
use crate::adapter::{AdapterError, DeliveryError, FailureClass, VendorReply};
use crate::http::reply::truncate;
use crate::model::{Document, ExternalRef};
use base64::Engine;
use std::collections::BTreeMap;

/// Most MIME parts accepted in an MTOM reply.
const MAX_PARTS: usize = 256;

/// A reply read and parsed: the XML pass plus MTOM attachments by Content-ID.
#[derive(Debug, Default)]
pub struct Reply {
    pub parsed: Parsed,
    pub attachments: BTreeMap<String, Vec<u8>>,
}

/// Reads a reply body: unpacks `multipart/related` (MTOM/XOP), decodes the
/// character set (Content-Type `charset`, a BOM, or the XML declaration;
/// UTF-8, ISO-8859-1, Windows-1252, …) and parses it once.
pub fn read_reply(
    body: &[u8],
    content_type: Option<&str>,
    limits: &Limits,
    paths: &[&XPath],
) -> Result<Reply, XmlError> {
    if body.len() > limits.max_bytes {
        return Err(XmlError {
            limit: Some("limits.max_bytes"),
            message: format!("exceeds limits.max_bytes ({})", limits.max_bytes),
        });
    }
    let ct = content_type.unwrap_or_default();
    let (root, root_ct, attachments) = if media_type(ct) == "multipart/related" {
        let (root, root_ct, parts) = split_multipart(body, ct)?;
        (root, root_ct, parts)
    } else {
        (body, ct.to_string(), BTreeMap::new())
    };
    let text = decode(root, param(&root_ct, "charset").as_deref())?;
    let parsed = xml::parse(&text, paths, limits)?;
    Ok(Reply {
        parsed,
        attachments,
    })
}

/// The media type of a Content-Type, lower-cased.
pub fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A Content-Type parameter, unquoted.
pub fn param(ct: &str, name: &str) -> Option<String> {
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// Decodes XML bytes to text: `charset` if given, else a BOM, else the
/// declaration's `encoding`, else UTF-8. Undecodable bytes are refused.
pub fn decode(bytes: &[u8], charset: Option<&str>) -> Result<String, XmlError> {
    let label = charset
        .map(str::to_string)
        .or_else(|| encoding_rs::Encoding::for_bom(bytes).map(|(e, _)| e.name().to_string()))
        .or_else(|| declared_encoding(bytes));
    let encoding = match label {
        Some(l) => {
            encoding_rs::Encoding::for_label(l.trim().as_bytes()).ok_or_else(|| XmlError {
                limit: None,
                message: format!("unknown character set '{}'", truncate(&l, 40)),
            })?
        }
        None => encoding_rs::UTF_8,
    };
    let (text, _, had_errors) = encoding.decode(bytes);
    if had_errors {
        return Err(XmlError {
            limit: None,
            message: format!("the reply is not valid {}", encoding.name()),
        });
    }
    Ok(text.into_owned())
}

/// `encoding="…"` from an ASCII-compatible XML declaration.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let head = &bytes[..bytes.len().min(256)];
    if !head.starts_with(b"<?xml") {
        return None;
    }
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[..end]).ok()?;
    let rest = &decl[decl.find("encoding")? + "encoding".len()..];
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let quote = rest.chars().next()?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let value = &rest[1..];
    Some(value[..value.find(quote)?].to_string())
}

/// Splits an MTOM `multipart/related` body: the root part (the `start`
/// parameter's Content-ID, or the first part), its Content-Type, and the
/// other parts by Content-ID (without angle brackets).
#[allow(clippy::type_complexity)]
fn split_multipart<'a>(
    body: &'a [u8],
    ct: &str,
) -> Result<(&'a [u8], String, BTreeMap<String, Vec<u8>>), XmlError> {
    let bad = |m: &str| XmlError {
        limit: None,
        message: format!("MTOM reply: {m}"),
    };
    let boundary = param(ct, "boundary").ok_or_else(|| bad("no boundary parameter"))?;
    if boundary.is_empty() || boundary.len() > 200 {
        return Err(bad("the boundary is empty or too long"));
    }
    let start = param(ct, "start").map(|s| s.trim_matches(['<', '>']).to_string());
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut positions = Vec::new();
    let mut i = 0;
    while let Some(p) = find(&body[i..], delim) {
        let at = i + p;
        // A delimiter starts a line.
        if at == 0 || body[..at].ends_with(b"\n") {
            positions.push(at);
            if positions.len() > MAX_PARTS + 1 {
                return Err(bad(&format!("more than {MAX_PARTS} parts")));
            }
        }
        i = at + delim.len();
    }
    let mut parts: Vec<(Option<String>, String, &[u8])> = Vec::new();
    for w in positions.windows(2) {
        let mut seg = &body[w[0] + delim.len()..w[1]];
        if seg.starts_with(b"--") {
            break;
        }
        seg = strip_line_end(seg);
        let seg = seg.strip_suffix(b"\n").unwrap_or(seg);
        let seg = seg.strip_suffix(b"\r").unwrap_or(seg);
        let (head, content) = match find(seg, b"\r\n\r\n") {
            Some(p) => (&seg[..p], &seg[p + 4..]),
            None => match find(seg, b"\n\n") {
                Some(p) => (&seg[..p], &seg[p + 2..]),
                None => return Err(bad("a part has no header/body separator")),
            },
        };
        let head = String::from_utf8_lossy(head);
        let mut id = None;
        let mut part_ct = String::new();
        let mut transfer = String::new();
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "content-id" => id = Some(v.trim_matches(['<', '>']).to_string()),
                "content-type" => part_ct = v.to_string(),
                "content-transfer-encoding" => transfer = v.to_ascii_lowercase(),
                _ => {}
            }
        }
        let _ = transfer;
        parts.push((id, part_ct, content));
    }
    if parts.is_empty() {
        return Err(bad("no parts"));
    }
    let root_index = start
        .as_ref()
        .and_then(|s| parts.iter().position(|p| p.0.as_deref() == Some(s)))
        .unwrap_or(0);
    let mut attachments = BTreeMap::new();
    for (i, (id, part_ct, content)) in parts.iter().enumerate() {
        if i == root_index {
            continue;
        }
        let _ = part_ct;
        if let Some(id) = id {
            attachments.insert(id.clone(), content.to_vec());
        }
    }
    let (_, root_ct, root) = parts.swap_remove(root_index);
    Ok((root, root_ct, attachments))
}

fn strip_line_end(seg: &[u8]) -> &[u8] {
    let seg = seg.strip_prefix(b"\r").unwrap_or(seg);
    seg.strip_prefix(b"\n").unwrap_or(seg)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A permanent delivery error for a refused document.
pub fn refused(e: &XmlError, what: &str) -> DeliveryError {
    DeliveryError::permanent(format!("{what} refused: {}", e.message))
}

/// The compiled response mapping of one instance: every path it reads, in
/// one list, so a reply is parsed once.
#[derive(Debug, Clone)]
pub struct Mapper {
    mapping: ResponseMapping,
    faults: FaultMapping,
    paths: Vec<XPath>,
    status: Option<usize>,
    reason: Option<usize>,
    protocol: Option<usize>,
    reference: Option<usize>,
    date: Option<usize>,
    documents: Vec<usize>,
    required: Vec<usize>,
    /// Each outcome data field with its capture index.
    outcome: Vec<(String, usize)>,
    fault_code: Option<usize>,
}

impl Mapper {
    /// Compiles the paths; errors name the key (`response.status_path`, …).
    pub fn build(
        mapping: &ResponseMapping,
        faults: &FaultMapping,
        namespaces: &BTreeMap<String, String>,
    ) -> Result<Self, AdapterError> {
        let mut m = Self {
            mapping: mapping.clone(),
            faults: faults.clone(),
            paths: Vec::new(),
            status: None,
            reason: None,
            protocol: None,
            reference: None,
            date: None,
            documents: Vec::new(),
            required: Vec::new(),
            outcome: Vec::new(),
            fault_code: None,
        };
        m.status = m.add_opt("response.status_path", &mapping.status_path, namespaces)?;
        m.reason = m.add_opt("response.reason_path", &mapping.reason_path, namespaces)?;
        m.protocol = m.add_opt("response.protocol_path", &mapping.protocol_path, namespaces)?;
        m.reference = m.add_opt(
            "response.reference_path",
            &mapping.reference_path,
            namespaces,
        )?;
        m.date = m.add_opt("response.date_path", &mapping.date_path, namespaces)?;
        for (i, d) in mapping.documents.iter().enumerate() {
            let idx = m.add(
                &format!("response.documents[{i}].path"),
                &d.path,
                namespaces,
            )?;
            m.documents.push(idx);
        }
        for (i, p) in mapping.required_paths.iter().enumerate() {
            let idx = m.add(&format!("response.required_paths[{i}]"), p, namespaces)?;
            m.required.push(idx);
        }
        crate::outcome::validate_outcome_fields("response.outcome_data", &mapping.outcome_data)
            .map_err(|(key, reason)| AdapterError::new(key, reason))?;
        for (name, path) in &mapping.outcome_data {
            let idx = m.add(&format!("response.outcome_data.{name}"), path, namespaces)?;
            m.outcome.push((name.clone(), idx));
        }
        m.fault_code = m.add_opt("faults.code_path", &faults.code_path, namespaces)?;
        Ok(m)
    }

    /// Adds a path read with every reply; returns its capture index.
    pub fn add(
        &mut self,
        key: &str,
        text: &str,
        namespaces: &BTreeMap<String, String>,
    ) -> Result<usize, AdapterError> {
        let p = XPath::parse(text, namespaces).map_err(|e| AdapterError::new(key, e))?;
        self.paths.push(p);
        Ok(self.paths.len() - 1)
    }

    /// Adds a path built in code.
    pub fn add_path(&mut self, path: XPath) -> usize {
        self.paths.push(path);
        self.paths.len() - 1
    }

    fn add_opt(
        &mut self,
        key: &str,
        text: &Option<String>,
        namespaces: &BTreeMap<String, String>,
    ) -> Result<Option<usize>, AdapterError> {
        text.as_deref()
            .map(|t| self.add(key, t, namespaces))
            .transpose()
    }

    /// Reads a reply with every path.
    pub fn read(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        limits: &Limits,
    ) -> Result<Reply, XmlError> {
        let refs: Vec<&XPath> = self.paths.iter().collect();
        read_reply(body, content_type, limits, &refs)
    }

    /// The first match of capture `i`, trimmed, non-empty.
    pub fn text(&self, reply: &Reply, i: Option<usize>) -> Option<String> {
        let c = reply.parsed.captures.get(i?)?.first()?;
        let t = c.text.trim();
        (!t.is_empty()).then(|| t.to_string())
    }

    /// Maps a fault-free reply. `is_final` = the practice's outcome (default
    /// status and required paths apply); otherwise only stated facts.
    pub fn map(
        &self,
        reply: &Reply,
        system: &str,
        is_final: bool,
    ) -> Result<VendorReply, DeliveryError> {
        let m = &self.mapping;
        if is_final {
            for (&i, text) in self.required.iter().zip(&m.required_paths) {
                if self.text(reply, Some(i)).is_none() {
                    return Err(DeliveryError::permanent(format!(
                        "vendor reply has nothing at {text} (response.required_paths)"
                    )));
                }
            }
        }
        let vendor_code = self.text(reply, self.status);
        let status = match (&vendor_code, &m.status_path) {
            (Some(code), Some(path)) => Some(*m.status_map.get(code).ok_or_else(|| {
                DeliveryError::permanent(format!(
                    "vendor status '{}' at {path} has no entry in response.status_map",
                    truncate(code, 80)
                ))
            })?),
            _ if is_final => Some(m.default_status),
            _ => None,
        };
        let occurred_at = match (self.text(reply, self.date), &m.date_path) {
            (Some(text), Some(path)) => Some(parse_date(&text).ok_or_else(|| {
                DeliveryError::permanent(format!(
                    "vendor date '{}' at {path} is neither RFC 3339 nor YYYY-MM-DD",
                    truncate(&text, 40)
                ))
            })?),
            _ => None,
        };
        let mut refs = Vec::new();
        if let Some(protocol) = self.text(reply, self.protocol) {
            refs.push(ExternalRef {
                kind: "protocol".into(),
                value: protocol,
                system: system.into(),
                issued_at: occurred_at,
            });
        }
        if let Some(reference) = self.text(reply, self.reference) {
            refs.push(ExternalRef {
                kind: "vendor_id".into(),
                value: reference,
                system: system.into(),
                issued_at: None,
            });
        }
        let mut documents = Vec::new();
        for (spec, &i) in m.documents.iter().zip(&self.documents) {
            let caps = &reply.parsed.captures[i];
            for (n, cap) in caps.iter().enumerate() {
                documents.push(document(spec, cap, n, &reply.attachments)?);
            }
        }
        // Text as the vendor wrote it: the hub types it by the declaration.
        let outcome_data = self
            .outcome
            .iter()
            .filter_map(|(name, i)| {
                let text = self.text(reply, Some(*i))?;
                Some((name.clone(), serde_json::Value::String(text)))
            })
            .collect();
        Ok(VendorReply {
            status,
            vendor_code,
            reason: self.text(reply, self.reason),
            external_refs: refs,
            documents,
            outcome_data,
            occurred_at,
            follow_up: None,
        })
    }

    /// The failure a fault means: Server/Receiver transient, Client/Sender
    /// (and version or mustUnderstand faults) permanent, then `faults.map`
    /// by vendor code, subcode or fault code. The fault's text becomes the
    /// reason (recorded in the practice's events, not logged).
    pub fn fault_error(&self, reply: &Reply, fault: &Fault) -> DeliveryError {
        let vendor = self.text(reply, self.fault_code);
        let local = |c: &str| c.rsplit(':').next().unwrap_or(c).to_string();
        let code_local = local(&fault.code);
        let family = code_local.split('.').next().unwrap_or_default();
        let mut class = match family {
            "Server" | "Receiver" => FailureClass::Transient,
            _ => FailureClass::Permanent,
        };
        let mut candidates: Vec<String> = Vec::new();
        candidates.extend(vendor.clone());
        for s in fault.subcodes.iter().rev() {
            candidates.push(s.clone());
            candidates.push(local(s));
        }
        candidates.push(fault.code.clone());
        candidates.push(code_local.clone());
        if let Some(c) = candidates.iter().find_map(|c| self.faults.map.get(c)) {
            class = match c {
                ErrorClass::Transient => FailureClass::Transient,
                ErrorClass::Permanent => FailureClass::Permanent,
                ErrorClass::Rejection => FailureClass::Rejection,
            };
        }
        let mut reason = format!("SOAP fault {}", truncate(&fault.code, 80));
        if let Some(sub) = fault.subcodes.last() {
            reason.push_str(&format!(" ({})", truncate(sub, 80)));
        }
        if !fault.reason.is_empty() {
            reason.push_str(": ");
            reason.push_str(&truncate(&fault.reason, 400));
        }
        DeliveryError {
            class,
            reason,
            vendor_code: vendor
                .or_else(|| fault.subcodes.last().cloned())
                .or_else(|| (!fault.code.is_empty()).then(|| fault.code.clone())),
            retry_after: None,
        }
    }
}

fn document(
    spec: &super::config::DocumentMapping,
    cap: &Capture,
    index: usize,
    attachments: &BTreeMap<String, Vec<u8>>,
) -> Result<Document, DeliveryError> {
    let attr = |name: &Option<String>| {
        name.as_ref().and_then(|n| {
            cap.attributes
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        })
    };
    let name = attr(&spec.name_attribute).unwrap_or_else(|| numbered(&spec.name, index));
    let media_type = attr(&spec.media_type_attribute).unwrap_or_else(|| spec.media_type.clone());
    let bytes = match &cap.xop_href {
        Some(href) => {
            let cid = href.strip_prefix("cid:").unwrap_or(href);
            let cid = percent_decode(cid);
            attachments.get(&cid).cloned().ok_or_else(|| {
                DeliveryError::permanent(format!(
                    "document at {}: MTOM part '{}' is missing",
                    spec.path,
                    truncate(&cid, 80)
                ))
            })?
        }
        None => {
            let compact: String = cap.text.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| {
                    DeliveryError::permanent(format!(
                        "document at {} is not base64: {e}",
                        spec.path
                    ))
                })?
        }
    };
    Ok(Document::new(name, media_type, bytes))
}

fn numbered(name: &str, index: usize) -> String {
    if index == 0 {
        return name.to_string();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}-{}.{ext}", index + 1),
        None => format!("{name}-{}", index + 1),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_date(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_declared_or_in_the_header_decodes() {
        let mut doc = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>Niccol".to_vec();
        doc.extend([0xF2, b' ', b'M', b'a', b'z', b'z', 0xE0]);
        doc.extend(b"</a>");
        assert!(decode(&doc, None).unwrap().contains("Niccolò Mazzà"));
        let body = "<a>Niccolò</a>".as_bytes();
        assert!(decode(body, Some("utf-8")).unwrap().contains("Niccolò"));
        let bad = [b'<', b'a', b'>', 0xF2, b'<', b'/', b'a', b'>'];
        assert!(decode(&bad, None).is_err());
    }

    #[test]
    fn multipart_root_and_parts() {
        let body = b"--b1\r\nContent-Type: application/xop+xml; charset=UTF-8; type=\"text/xml\"\r\nContent-ID: <root@x>\r\n\r\n<a/>\r\n--b1\r\nContent-Type: application/pdf\r\nContent-ID: <doc1@x>\r\n\r\n%PDF-1\r\n--b1--\r\n";
        let (root, ct, parts) =
            split_multipart(body, "multipart/related; boundary=b1; start=\"<root@x>\"").unwrap();
        assert_eq!(root, b"<a/>");
        assert!(ct.starts_with("application/xop+xml"));
        assert_eq!(parts["doc1@x"], b"%PDF-1");
    }
}
