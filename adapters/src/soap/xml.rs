//! Hardened, streaming reading of vendor XML (SOAP replies, callbacks).
//!
//! One pass over the document with quick-xml's namespace-aware reader; no
//! tree is built. The caller names what it wants as [`XPath`]s (a small,
//! namespace-aware subset of XPath: element steps from the SOAP `Body`, or
//! from the root with a leading `/`, and an optional final `@attribute`);
//! each match's text is captured, descendants' text included.
//!
//! Inbound XML is untrusted: a DOCTYPE is refused outright (so no DTD, no
//! external or internal entity can exist), any entity beyond the five
//! predefined ones is refused, and [`Limits`] bound the total size, the
//! nesting depth, the attributes per element and the text of any node. A
//! violation is an [`XmlError`] naming the limit.

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// XOP (MTOM) include namespace.
pub const XOP_NS: &str = "http://www.w3.org/2004/08/xop/include";

/// Bounds on an inbound XML document (`[adapters.NAME.limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest document, in bytes (after MTOM unpacking, before decoding).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Deepest element nesting.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Most attributes (namespace declarations included) on one element.
    #[serde(default = "default_max_attributes")]
    pub max_attributes: usize,
    /// Longest text of one node or one captured value (base64 documents
    /// count here), in bytes.
    #[serde(default = "default_max_text")]
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            max_depth: default_max_depth(),
            max_attributes: default_max_attributes(),
            max_text_bytes: default_max_text(),
        }
    }
}

fn default_max_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_max_depth() -> usize {
    64
}
fn default_max_attributes() -> usize {
    64
}
fn default_max_text() -> usize {
    12 * 1024 * 1024
}

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    /// The limit that was exceeded (`limits.max_depth`, …), if one was.
    pub limit: Option<&'static str>,
    pub message: String,
}

impl XmlError {
    fn limit(name: &'static str, value: usize) -> Self {
        Self {
            limit: Some(name),
            message: format!("exceeds {name} ({value})"),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self {
            limit: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for XmlError {}

/// How a path step matches an element's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsMatch {
    /// `*:name`: any namespace, or none.
    Any,
    /// `name`: no namespace.
    None,
    /// `p:name`: the namespace the configuration binds to `p`.
    Uri(String),
}

/// One element step of an [`XPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub ns: NsMatch,
    /// The local name, or `*` for any.
    pub local: String,
}

impl Step {
    fn matches(&self, ns: Option<&str>, local: &str) -> bool {
        (self.local == "*" || self.local == local)
            && match &self.ns {
                NsMatch::Any => true,
                NsMatch::None => ns.is_none(),
                NsMatch::Uri(u) => ns == Some(u.as_str()),
            }
    }

    /// A step in a SOAP envelope namespace (either version).
    fn soap(local: &str) -> Self {
        Self {
            ns: NsMatch::Any,
            local: local.into(),
        }
    }
}

/// A namespace-aware path into a document.
///
/// `ns:response/ns:esito` starts below the SOAP `Body`;
/// `/soap:Envelope/soap:Header/h:id` starts at the root; a final
/// `@name` takes an (unprefixed) attribute instead of the element's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XPath {
    /// The text as configured, for error messages.
    pub text: String,
    absolute: bool,
    steps: Vec<Step>,
    attribute: Option<String>,
}

impl XPath {
    /// Parses `text`; prefixes must be declared in `namespaces`.
    pub fn parse(text: &str, namespaces: &BTreeMap<String, String>) -> Result<Self, String> {
        let trimmed = text.trim();
        let absolute = trimmed.starts_with('/');
        let body = trimmed.trim_start_matches('/');
        if body.is_empty() {
            return Err("is an empty path".into());
        }
        let mut steps = Vec::new();
        let mut attribute = None;
        let parts: Vec<&str> = body.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let part = part.trim();
            if let Some(attr) = part.strip_prefix('@') {
                if i + 1 != parts.len() || attr.is_empty() || attr.contains(':') {
                    return Err(format!(
                        "'{text}': an unprefixed @attribute may only be the last step"
                    ));
                }
                attribute = Some(attr.to_string());
                continue;
            }
            if part.is_empty() {
                return Err(format!("'{text}' has an empty step (// is not supported)"));
            }
            let (ns, local) = match part.split_once(':') {
                Some(("*", local)) => (NsMatch::Any, local),
                Some((prefix, local)) => match namespaces.get(prefix) {
                    Some(uri) => (NsMatch::Uri(uri.clone()), local),
                    None => {
                        return Err(format!(
                            "'{text}': prefix '{prefix}' is not declared in namespaces"
                        ));
                    }
                },
                None => (NsMatch::None, part),
            };
            if local.is_empty() || local.contains(':') {
                return Err(format!("'{text}': '{part}' is not a name"));
            }
            steps.push(Step {
                ns,
                local: local.to_string(),
            });
        }
        if steps.is_empty() {
            return Err(format!("'{text}' names no element"));
        }
        Ok(Self {
            text: text.to_string(),
            absolute,
            steps,
            attribute,
        })
    }

    /// A path built in code (SOAP structure, headers).
    pub fn from_steps(text: &str, absolute: bool, steps: Vec<Step>) -> Self {
        Self {
            text: text.into(),
            absolute,
            steps,
            attribute: None,
        }
    }

    /// Whether `stack` (root first) is this path's element.
    fn matches(&self, stack: &[Frame]) -> bool {
        let rel = if self.absolute {
            stack
        } else {
            // Envelope / Body / …
            if stack.len() < 2 || !stack[1].is_soap("Body") || !stack[0].is_soap("Envelope") {
                return false;
            }
            &stack[2..]
        };
        rel.len() == self.steps.len()
            && rel
                .iter()
                .zip(&self.steps)
                .all(|(f, s)| s.matches(f.ns.as_deref(), &f.local))
    }
}

/// One captured match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// The element's text (all descendants' text, in order), or the attribute.
    pub text: String,
    /// `xop:Include/@href` found inside the element (MTOM).
    pub xop_href: Option<String>,
    /// The element's attributes (unprefixed names), for documents that
    /// carry their file name or media type there.
    pub attributes: Vec<(String, String)>,
}

/// A SOAP fault, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// `faultcode` (1.1) or `Code/Value` (1.2), as written (`soap:Server`).
    pub code: String,
    /// 1.2 `Subcode/Value`s, outermost first.
    pub subcodes: Vec<String>,
    /// `faultstring` (1.1) or the first `Reason/Text` (1.2).
    pub reason: String,
    /// The text of `detail`/`Detail`, whitespace collapsed.
    pub detail: String,
}

/// What one pass over a document found.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// The envelope's SOAP version (`1.1`/`1.2`), when the root is an Envelope.
    pub soap_version: Option<&'static str>,
    /// The Body holds a Fault.
    pub fault: Option<Fault>,
    /// Per requested path, every match in document order.
    pub captures: Vec<Vec<Capture>>,
}

#[derive(Debug)]
struct Frame {
    ns: Option<String>,
    local: String,
}

impl Frame {
    fn is_soap(&self, local: &str) -> bool {
        self.local == local && matches!(self.ns.as_deref(), Some(SOAP11_NS) | Some(SOAP12_NS))
    }
}

/// The built-in paths that read a fault; indexes into the capture list
/// after the caller's paths.
const FAULT_PATHS: usize = 7;

fn fault_paths() -> Vec<XPath> {
    let p = |text: &str, steps: &[&str]| {
        XPath::from_steps(text, false, steps.iter().map(|s| Step::soap(s)).collect())
    };
    vec![
        p("Fault/faultcode", &["Fault", "faultcode"]),
        p("Fault/faultstring", &["Fault", "faultstring"]),
        p("Fault/detail", &["Fault", "detail"]),
        p("Fault/Code/Value", &["Fault", "Code", "Value"]),
        p("Fault/Reason/Text", &["Fault", "Reason", "Text"]),
        p("Fault/Detail", &["Fault", "Detail"]),
        // Nested Subcodes: captured by a dedicated check below.
        p(
            "Fault/Code/Subcode/Value",
            &["Fault", "Code", "Subcode", "Value"],
        ),
    ]
}

struct Open {
    target: usize,
    depth: usize,
    capture: Capture,
}

/// Reads `xml` once, capturing `paths`. Refuses DOCTYPEs, unknown
/// entities and anything beyond `limits`.
pub fn parse(xml: &str, paths: &[&XPath], limits: &Limits) -> Result<Parsed, XmlError> {
    if xml.len() > limits.max_bytes {
        return Err(XmlError::limit("limits.max_bytes", limits.max_bytes));
    }
    let faults = fault_paths();
    let all: Vec<&XPath> = paths.iter().copied().chain(faults.iter()).collect();
    let mut captures: Vec<Vec<Capture>> = vec![Vec::new(); all.len()];
    let mut subcodes: Vec<String> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut seen_root = false;
    let mut root_ns: Option<String> = None;
    let mut in_fault = false;
    let mut saw_fault = false;

    let mut reader = NsReader::from_str(xml);
    {
        let cfg = reader.config_mut();
        cfg.expand_empty_elements = true;
        cfg.check_end_names = true;
        cfg.trim_text_start = false;
        cfg.trim_text_end = false;
    }
    let syntax = |e: quick_xml::Error, pos: u64| {
        XmlError::bad(format!("not well-formed XML at byte {pos}: {e}"))
    };

    loop {
        let pos = reader.buffer_position();
        let (resolved, event) = reader.read_resolved_event().map_err(|e| syntax(e, pos))?;
        let ns = match resolved {
            ResolveResult::Bound(n) => Some(n.0.to_string()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(p) => {
                return Err(XmlError::bad(format!(
                    "namespace prefix '{p}' is not declared"
                )));
            }
        };
        match event {
            Event::DocType(_) => {
                return Err(XmlError::bad(
                    "DOCTYPE declarations are refused (no DTDs, no custom entities)",
                ));
            }
            Event::Start(e) => {
                if stack.is_empty() {
                    if seen_root {
                        return Err(XmlError::bad("more than one root element"));
                    }
                    seen_root = true;
                    root_ns = ns.clone();
                }
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::limit("limits.max_depth", limits.max_depth));
                }
                let local = e.local_name().as_ref().to_string();
                let mut attrs = Vec::new();
                let mut count = 0usize;
                for attr in e.attributes() {
                    count += 1;
                    if count > limits.max_attributes {
                        return Err(XmlError::limit(
                            "limits.max_attributes",
                            limits.max_attributes,
                        ));
                    }
                    let attr = attr.map_err(|e| XmlError::bad(format!("bad attribute: {e}")))?;
                    let key = attr.key.as_ref();
                    if key.starts_with("xmlns") {
                        continue;
                    }
                    let value = attr
                        .normalized_value(XmlVersion::Implicit1_0)
                        .map_err(|e| XmlError::bad(format!("attribute {key}: {e}")))?;
                    if value.len() > limits.max_text_bytes {
                        return Err(XmlError::limit(
                            "limits.max_text_bytes",
                            limits.max_text_bytes,
                        ));
                    }
                    attrs.push((key.to_string(), value.into_owned()));
                }
                let is_xop = local == "Include" && ns.as_deref() == Some(XOP_NS);
                if is_xop {
                    let href = attrs
                        .iter()
                        .find(|(k, _)| k == "href")
                        .map(|(_, v)| v.clone());
                    for o in &mut open {
                        if o.capture.xop_href.is_none() {
                            o.capture.xop_href.clone_from(&href);
                        }
                    }
                }
                stack.push(Frame { ns, local });
                if stack.len() == 3
                    && stack[2].is_soap("Fault")
                    && stack[1].is_soap("Body")
                    && stack[0].is_soap("Envelope")
                {
                    in_fault = true;
                    saw_fault = true;
                }
                if in_fault
                    && stack.len() >= 6
                    && stack[stack.len() - 1].is_soap("Value")
                    && stack[stack.len() - 2].is_soap("Subcode")
                {
                    open.push(Open {
                        target: usize::MAX,
                        depth: stack.len(),
                        capture: Capture::default(),
                    });
                }
                for (i, path) in all.iter().enumerate() {
                    if !path.matches(&stack) {
                        continue;
                    }
                    match &path.attribute {
                        Some(name) => {
                            if let Some((_, v)) = attrs.iter().find(|(k, _)| k == name) {
                                captures[i].push(Capture {
                                    text: v.clone(),
                                    ..Capture::default()
                                });
                            }
                        }
                        None => open.push(Open {
                            target: i,
                            depth: stack.len(),
                            capture: Capture {
                                attributes: attrs.clone(),
                                ..Capture::default()
                            },
                        }),
                    }
                }
            }
            Event::End(_) => {
                let depth = stack.len();
                // Captures nest strictly: every one still open at this depth ends here.
                while open.last().is_some_and(|o| o.depth == depth) {
                    let Some(o) = open.pop() else { break };
                    if o.target == usize::MAX {
                        subcodes.push(o.capture.text.trim().to_string());
                    } else {
                        captures[o.target].push(o.capture);
                    }
                }
                stack.pop();
                if stack.len() < 3 {
                    in_fault = false;
                }
            }
            Event::Text(t) => {
                if stack.is_empty() && !t.trim().is_empty() {
                    return Err(XmlError::bad("text outside the root element"));
                }
                let text = t.xml10_content();
                append(&mut open, &text, limits)?;
            }
            Event::CData(c) => {
                if stack.is_empty() {
                    return Err(XmlError::bad("CDATA outside the root element"));
                }
                let text = c.xml10_content();
                append(&mut open, &text, limits)?;
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.to_string(),
                        _ => {
                            return Err(XmlError::bad(format!(
                                "character reference &{}; is not valid",
                                r.as_ref() as &str
                            )));
                        }
                    }
                } else {
                    let name: &str = r.as_ref();
                    match name {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "apos" => "'".into(),
                        "quot" => "\"".into(),
                        other => {
                            return Err(XmlError::bad(format!(
                                "entity &{}; refused: only the five predefined entities are allowed",
                                crate::http::reply::truncate(other, 40)
                            )));
                        }
                    }
                };
                append(&mut open, &ch, limits)?;
            }
            Event::Empty(_) => {
                // expand_empty_elements turns these into Start + End.
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !seen_root {
        return Err(XmlError::bad("the document has no root element"));
    }
    if !stack.is_empty() {
        return Err(XmlError::bad("the document ends inside an element"));
    }
    let soap_version = match root_ns.as_deref() {
        Some(SOAP11_NS) => Some("1.1"),
        Some(SOAP12_NS) => Some("1.2"),
        _ => None,
    };
    let fault_caps = captures.split_off(paths.len());
    let first = |i: usize| {
        fault_caps[i]
            .first()
            .map(|c| collapse(&c.text))
            .unwrap_or_default()
    };
    let fault = saw_fault.then(|| {
        let v11 = !fault_caps[0].is_empty() || !fault_caps[1].is_empty();
        if v11 {
            Fault {
                code: first(0),
                subcodes: Vec::new(),
                reason: first(1),
                detail: first(2),
            }
        } else {
            Fault {
                code: first(3),
                subcodes: subcodes.iter().filter(|s| !s.is_empty()).cloned().collect(),
                reason: first(4),
                detail: first(5),
            }
        }
    });
    debug_assert_eq!(fault_caps.len(), FAULT_PATHS);
    Ok(Parsed {
        soap_version,
        fault,
        captures,
    })
}

fn append(open: &mut [Open], text: &str, limits: &Limits) -> Result<(), XmlError> {
    if text.len() > limits.max_text_bytes {
        return Err(XmlError::limit(
            "limits.max_text_bytes",
            limits.max_text_bytes,
        ));
    }
    for o in open.iter_mut() {
        if o.capture.text.len() + text.len() > limits.max_text_bytes {
            return Err(XmlError::limit(
                "limits.max_text_bytes",
                limits.max_text_bytes,
            ));
        }
        o.capture.text.push_str(text);
    }
    Ok(())
}

/// Whitespace runs collapsed to one space, trimmed.
pub fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> BTreeMap<String, String> {
        [("c".to_string(), "urn:cert".to_string())].into()
    }

    const OK: &str = r#"<?xml version="1.0"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
  <s:Header><h:X-Correlation-ID xmlns:h="urn:x">abc</h:X-Correlation-ID></s:Header>
  <s:Body><r:resp xmlns:r="urn:cert"><r:esito>OK &amp; fine</r:esito><r:doc nome="a.pdf">aGk=</r:doc><r:doc nome="b.pdf">aG8=</r:doc></r:resp></s:Body>
</s:Envelope>"#;

    #[test]
    fn captures_by_namespace_not_prefix() {
        let esito = XPath::parse("c:resp/c:esito", &ns()).unwrap();
        let doc = XPath::parse("c:resp/c:doc", &ns()).unwrap();
        let nome = XPath::parse("c:resp/c:doc/@nome", &ns()).unwrap();
        let corr = XPath::parse("/*:Envelope/*:Header/*:X-Correlation-ID", &ns()).unwrap();
        let wrong = XPath::parse("resp/esito", &ns()).unwrap();
        let p = parse(
            OK,
            &[&esito, &doc, &nome, &corr, &wrong],
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.soap_version, Some("1.1"));
        assert!(p.fault.is_none());
        assert_eq!(p.captures[0][0].text, "OK & fine");
        assert_eq!(p.captures[1].len(), 2);
        assert_eq!(p.captures[1][1].attributes[0].1, "b.pdf");
        assert_eq!(p.captures[2][0].text, "a.pdf");
        assert_eq!(p.captures[3][0].text, "abc");
        assert!(p.captures[4].is_empty());
    }

    #[test]
    fn undeclared_prefixes_are_config_errors() {
        assert!(XPath::parse("x:a", &ns()).unwrap_err().contains("'x'"));
        assert!(XPath::parse("a//b", &ns()).is_err());
        assert!(XPath::parse("@a/b", &ns()).is_err());
    }

    #[test]
    fn doctype_and_custom_entities_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><a>&lol2;</a>"#;
        let e = parse(bomb, &[], &Limits::default()).unwrap_err();
        assert!(e.message.contains("DOCTYPE"), "{e}");
        let e = parse("<a>&ext;</a>", &[], &Limits::default()).unwrap_err();
        assert!(e.message.contains("&ext;"), "{e}");
        let ok = parse("<a>&#65;&#x42;&lt;</a>", &[], &Limits::default());
        assert!(ok.is_ok());
    }

    #[test]
    fn limits_are_named() {
        let l = Limits {
            max_depth: 3,
            max_attributes: 2,
            max_text_bytes: 5,
            max_bytes: 100,
        };
        let e = parse("<a><b><c><d/></c></b></a>", &[], &l).unwrap_err();
        assert_eq!(e.limit, Some("limits.max_depth"));
        let e = parse(r#"<a x="1" y="2" z="3"/>"#, &[], &l).unwrap_err();
        assert_eq!(e.limit, Some("limits.max_attributes"));
        let e = parse("<a>123456</a>", &[], &l).unwrap_err();
        assert_eq!(e.limit, Some("limits.max_text_bytes"));
        let e = parse(&format!("<a>{}</a>", " ".repeat(200)), &[], &l).unwrap_err();
        assert_eq!(e.limit, Some("limits.max_bytes"));
    }

    #[test]
    fn soap11_and_12_faults() {
        let f11 = r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault>
            <faultcode>soap:Server</faultcode><faultstring>Servizio non disponibile</faultstring>
            <detail><e:errore xmlns:e="urn:e"><e:codice>E042</e:codice></e:errore></detail></soap:Fault></soap:Body></soap:Envelope>"#;
        let f = parse(f11, &[], &Limits::default()).unwrap().fault.unwrap();
        assert_eq!(f.code, "soap:Server");
        assert_eq!(f.reason, "Servizio non disponibile");
        assert_eq!(f.detail, "E042");
        let f12 = r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body><env:Fault>
            <env:Code><env:Value>env:Sender</env:Value><env:Subcode><env:Value>a:Invalid</env:Value>
            <env:Subcode><env:Value>a:CF</env:Value></env:Subcode></env:Subcode></env:Code>
            <env:Reason><env:Text xml:lang="it">Codice fiscale errato</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"#;
        let p = parse(f12, &[], &Limits::default()).unwrap();
        assert_eq!(p.soap_version, Some("1.2"));
        let f = p.fault.unwrap();
        assert_eq!(f.code, "env:Sender");
        assert_eq!(f.subcodes, vec!["a:Invalid", "a:CF"]);
        assert_eq!(f.reason, "Codice fiscale errato");
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic generator: no external crate needed.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: &[u8] = b"<>/=\"' &;#x:ab!?[]-DOCTYPE\n\txmlns";
        let paths = [XPath::parse("*:a/*:b", &ns()).unwrap()];
        let refs: Vec<&XPath> = paths.iter().collect();
        for _ in 0..3000 {
            let len = (next() % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r % 4 == 0 {
                        (r >> 8) as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text, &refs, &Limits::default());
            let _ = super::super::response::read_reply(&bytes, None, &Limits::default(), &refs);
        }
        for seed in [
            OK,
            "<s:Envelope xmlns:s=\"http://www.w3.org/2003/05/soap-envelope\"><s:Body><s:Fault>",
        ] {
            for cut in 0..seed.len() {
                if seed.is_char_boundary(cut) {
                    let _ = parse(&seed[..cut], &refs, &Limits::default());
                }
            }
        }
    }
}
