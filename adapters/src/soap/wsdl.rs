//! Reading a vendor's WSDL 1.1 for engineers (`raccordo soap inspect`):
//! services, ports, operations, SOAP versions and actions, and a starting
//! Body template for one operation from the embedded XML Schema.
//!
//! WSDLs are read with the same refusals as replies (no DOCTYPE, no custom
//! entities, bounded depth and size); imported schemas are not fetched.

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use std::collections::BTreeMap;
use std::fmt::Write;

const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";
const WSDL_SOAP11: &str = "http://schemas.xmlsoap.org/wsdl/soap/";
const WSDL_SOAP12: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";
const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema";
const MAX_BYTES: usize = 8 * 1024 * 1024;
const MAX_DEPTH: usize = 100;

/// An element of the parsed WSDL, with the namespace bindings in scope
/// (attribute values such as `element="tns:x"` are QNames).
#[derive(Debug, Clone, Default)]
struct Node {
    ns: String,
    local: String,
    attrs: BTreeMap<String, String>,
    scope: BTreeMap<String, String>,
    children: Vec<Node>,
}

impl Node {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }

    fn kids<'a>(&'a self, ns: &'a str, local: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children
            .iter()
            .filter(move |c| c.ns == ns && c.local == local)
    }

    /// Resolves a QName attribute value to (namespace, local).
    fn qname(&self, value: &str) -> (String, String) {
        match value.split_once(':') {
            Some((p, l)) => (
                self.scope.get(p).cloned().unwrap_or_default(),
                l.to_string(),
            ),
            None => (
                self.scope.get("").cloned().unwrap_or_default(),
                value.to_string(),
            ),
        }
    }
}

fn parse_tree(text: &str) -> Result<Node, String> {
    if text.len() > MAX_BYTES {
        return Err(format!("the WSDL is larger than {MAX_BYTES} bytes"));
    }
    let mut reader = NsReader::from_str(text);
    reader.config_mut().expand_empty_elements = true;
    let mut stack: Vec<Node> = Vec::new();
    let mut scopes: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
    loop {
        let (res, ev) = reader
            .read_resolved_event()
            .map_err(|e| format!("not well-formed XML: {e}"))?;
        let ns = match res {
            ResolveResult::Bound(n) => n.0.to_string(),
            _ => String::new(),
        };
        match ev {
            Event::DocType(_) => return Err("DOCTYPE declarations are refused".into()),
            Event::GeneralRef(r) => {
                let name: &str = r.as_ref();
                if !r.is_char_ref() && !matches!(name, "amp" | "lt" | "gt" | "apos" | "quot") {
                    return Err(format!("entity &{name}; refused"));
                }
            }
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("nesting deeper than {MAX_DEPTH}"));
                }
                let mut scope = scopes.last().cloned().unwrap_or_default();
                let mut attrs = BTreeMap::new();
                for a in e.attributes() {
                    let a = a.map_err(|e| format!("bad attribute: {e}"))?;
                    let v = a
                        .normalized_value(XmlVersion::Implicit1_0)
                        .map_err(|e| format!("bad attribute: {e}"))?
                        .into_owned();
                    let k: &str = a.key.as_ref();
                    if k == "xmlns" {
                        scope.insert(String::new(), v);
                    } else if let Some(p) = k.strip_prefix("xmlns:") {
                        scope.insert(p.to_string(), v);
                    } else {
                        attrs.insert(k.to_string(), v);
                    }
                }
                scopes.push(scope.clone());
                stack.push(Node {
                    ns,
                    local: e.local_name().as_ref().to_string(),
                    attrs,
                    scope,
                    children: Vec::new(),
                });
            }
            Event::End(_) => {
                scopes.pop();
                let node = stack.pop().ok_or("unbalanced end tag")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::Eof => return Err("the document ends before its root element closes".into()),
            _ => {}
        }
    }
}

/// One operation as a binding exposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationInfo {
    pub name: String,
    pub action: String,
    /// The input's Body element (namespace, local name), document/literal.
    pub input_element: Option<(String, String)>,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    pub binding: String,
    /// `1.1` or `1.2` (`?` for a non-SOAP binding).
    pub soap_version: &'static str,
    pub address: String,
    pub operations: Vec<OperationInfo>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub name: String,
    pub ports: Vec<PortInfo>,
}

/// What a WSDL describes.
#[derive(Debug)]
pub struct Wsdl {
    pub target_namespace: String,
    pub services: Vec<ServiceInfo>,
    /// Global schema elements by (namespace, name).
    elements: BTreeMap<(String, String), Node>,
    /// Named complex types by (namespace, name).
    types: BTreeMap<(String, String), Node>,
}

/// Parses a WSDL 1.1 document.
pub fn parse(text: &str) -> Result<Wsdl, String> {
    let root = parse_tree(text)?;
    if root.ns != WSDL_NS || root.local != "definitions" {
        return Err("the root is not wsdl:definitions (WSDL 1.1)".into());
    }
    let tns = root.attr("targetNamespace").unwrap_or_default().to_string();
    let mut elements = BTreeMap::new();
    let mut types = BTreeMap::new();
    for t in root.kids(WSDL_NS, "types") {
        for schema in t.kids(XSD_NS, "schema") {
            let stns = schema
                .attr("targetNamespace")
                .unwrap_or_default()
                .to_string();
            for el in schema.kids(XSD_NS, "element") {
                if let Some(n) = el.attr("name") {
                    elements.insert((stns.clone(), n.to_string()), el.clone());
                }
            }
            for ct in schema.kids(XSD_NS, "complexType") {
                if let Some(n) = ct.attr("name") {
                    types.insert((stns.clone(), n.to_string()), ct.clone());
                }
            }
        }
    }
    let local_name = |v: &str| v.rsplit(':').next().unwrap_or(v).to_string();
    let messages: BTreeMap<String, Option<(String, String)>> = root
        .kids(WSDL_NS, "message")
        .filter_map(|m| {
            // Parts bound to SOAP headers come first in some WSDLs: prefer
            // the conventional Body part names.
            let parts: Vec<&Node> = m.kids(WSDL_NS, "part").collect();
            let part = parts
                .iter()
                .find(|p| matches!(p.attr("name"), Some("parameters" | "body" | "request")))
                .or(parts.first())
                .copied();
            let el = part.and_then(|p| p.attr("element").map(|e| p.qname(e)));
            Some((m.attr("name")?.to_string(), el))
        })
        .collect();
    let port_types: BTreeMap<String, BTreeMap<String, Option<(String, String)>>> = root
        .kids(WSDL_NS, "portType")
        .filter_map(|pt| {
            let ops = pt
                .kids(WSDL_NS, "operation")
                .filter_map(|op| {
                    let input = op
                        .kids(WSDL_NS, "input")
                        .next()
                        .and_then(|i| i.attr("message"))
                        .and_then(|m| messages.get(&local_name(m)).cloned().flatten());
                    Some((op.attr("name")?.to_string(), input))
                })
                .collect();
            Some((pt.attr("name")?.to_string(), ops))
        })
        .collect();
    let mut services = Vec::new();
    for s in root.kids(WSDL_NS, "service") {
        let mut ports = Vec::new();
        for p in s.kids(WSDL_NS, "port") {
            let binding_name = local_name(p.attr("binding").unwrap_or_default());
            let (version, address) = p
                .children
                .iter()
                .find(|c| c.local == "address")
                .map(|a| {
                    let v = match a.ns.as_str() {
                        WSDL_SOAP11 => "1.1",
                        WSDL_SOAP12 => "1.2",
                        _ => "?",
                    };
                    (v, a.attr("location").unwrap_or_default().to_string())
                })
                .unwrap_or(("?", String::new()));
            let binding = root
                .kids(WSDL_NS, "binding")
                .find(|b| b.attr("name") == Some(binding_name.as_str()));
            let mut operations = Vec::new();
            if let Some(b) = binding {
                let pt = port_types.get(&local_name(b.attr("type").unwrap_or_default()));
                for op in b.kids(WSDL_NS, "operation") {
                    let name = op.attr("name").unwrap_or_default().to_string();
                    let action = op
                        .children
                        .iter()
                        .find(|c| c.local == "operation" && c.ns != WSDL_NS)
                        .and_then(|c| c.attr("soapAction"))
                        .unwrap_or_default()
                        .to_string();
                    let input_element = pt.and_then(|pt| pt.get(&name).cloned().flatten());
                    operations.push(OperationInfo {
                        name,
                        action,
                        input_element,
                    });
                }
            }
            ports.push(PortInfo {
                name: p.attr("name").unwrap_or_default().to_string(),
                binding: binding_name,
                soap_version: version,
                address,
                operations,
            });
        }
        services.push(ServiceInfo {
            name: s.attr("name").unwrap_or_default().to_string(),
            ports,
        });
    }
    Ok(Wsdl {
        target_namespace: tns,
        services,
        elements,
        types,
    })
}

impl Wsdl {
    /// A readable listing of services, ports and operations.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for s in &self.services {
            let _ = writeln!(out, "service {}", s.name);
            for p in &s.ports {
                let _ = writeln!(
                    out,
                    "  port {}  (binding {}, SOAP {})  {}",
                    p.name, p.binding, p.soap_version, p.address
                );
                for op in &p.operations {
                    let input = op
                        .input_element
                        .as_ref()
                        .map(|(ns, l)| format!("  body {{{ns}}}{l}"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "    operation {}  action \"{}\"{input}",
                        op.name, op.action
                    );
                }
            }
        }
        out
    }

    /// A starting Body template for `operation` (placeholders `?`, types
    /// in comments), with the configuration lines that go with it.
    pub fn request_template(&self, operation: &str) -> Result<String, String> {
        let (port, op) = self
            .services
            .iter()
            .flat_map(|s| &s.ports)
            .find_map(|p| {
                p.operations
                    .iter()
                    .find(|o| o.name == operation)
                    .map(|o| (p, o))
            })
            .ok_or_else(|| format!("no operation named '{operation}'"))?;
        let (ns, local) = op.input_element.clone().ok_or_else(|| {
            format!("operation '{operation}' has no document/literal input element")
        })?;
        let mut out = String::new();
        let _ = writeln!(out, "# [adapters.NAME]  kind = \"soap\"");
        let _ = writeln!(out, "# endpoint = \"{}\"", port.address);
        let _ = writeln!(out, "# soap_version = \"{}\"", port.soap_version);
        let _ = writeln!(out, "# namespaces = {{ m = \"{ns}\" }}");
        let _ = writeln!(out, "# [adapters.NAME.submit]  action = \"{}\"", op.action);
        let _ = writeln!(out, "# template = \"templates/{operation}.xml.j2\" with:");
        let el = self.elements.get(&(ns.clone(), local.clone()));
        let _ = write!(out, "<m:{local} xmlns:m=\"{ns}\">");
        match el {
            Some(el) => {
                out.push('\n');
                self.write_content(el, 1, &mut out);
            }
            None => out.push_str("<!-- element not found in the embedded schemas -->\n"),
        }
        let _ = writeln!(out, "</m:{local}>");
        Ok(out)
    }

    fn write_content(&self, el: &Node, depth: usize, out: &mut String) {
        if depth > 12 {
            return;
        }
        let complex = el.kids(XSD_NS, "complexType").next().cloned().or_else(|| {
            el.attr("type")
                .map(|t| el.qname(t))
                .and_then(|q| self.types.get(&q).cloned())
        });
        let Some(ct) = complex else { return };
        for group in ["sequence", "all", "choice"] {
            for seq in ct.kids(XSD_NS, group) {
                for child in seq.kids(XSD_NS, "element") {
                    let indent = "  ".repeat(depth);
                    let (name, node) = match child.attr("ref") {
                        Some(r) => {
                            let q = child.qname(r);
                            (
                                q.1.clone(),
                                self.elements
                                    .get(&q)
                                    .cloned()
                                    .unwrap_or_else(|| child.clone()),
                            )
                        }
                        None => (child.attr("name").unwrap_or("?").to_string(), child.clone()),
                    };
                    let optional = child.attr("minOccurs") == Some("0");
                    let note = if optional { "<!-- optional -->" } else { "" };
                    let is_complex = node.kids(XSD_NS, "complexType").next().is_some()
                        || node
                            .attr("type")
                            .map(|t| self.types.contains_key(&node.qname(t)))
                            .unwrap_or(false);
                    if is_complex {
                        let _ = writeln!(out, "{indent}{note}<m:{name}>");
                        self.write_content(&node, depth + 1, out);
                        let _ = writeln!(out, "{indent}</m:{name}>");
                    } else {
                        let ty = node.attr("type").unwrap_or("string");
                        let _ = writeln!(out, "{indent}{note}<m:{name}><!-- {ty} -->?</m:{name}>");
                    }
                }
            }
        }
    }
}

/// Reads a WSDL from a file or an `http(s)://` URL (bounded, 30 s).
pub async fn load(source: &str) -> Result<String, String> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut resp = client
            .get(source)
            .send()
            .await
            .map_err(|e| format!("cannot fetch {source}: {}", crate::http::error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("{source} answered HTTP {}", resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading {source}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(format!("{source} is larger than {MAX_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        body
    } else {
        let meta = std::fs::metadata(source).map_err(|e| format!("cannot read {source}: {e}"))?;
        if meta.len() > MAX_BYTES as u64 {
            return Err(format!("{source} is larger than {MAX_BYTES} bytes"));
        }
        std::fs::read(source).map_err(|e| format!("cannot read {source}: {e}"))?
    };
    super::response::decode(&bytes, None).map_err(|e| format!("{source}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callback_wsdl_reads_back() {
        let text = super::super::callback::callback_wsdl(
            "http://hub/callbacks/x",
            super::super::config::SoapVersion::V12,
        );
        let w = parse(&text).unwrap();
        assert_eq!(w.services[0].ports[0].soap_version, "1.2");
        assert_eq!(w.services[0].ports[0].operations[0].name, "result");
        let t = w.request_template("result").unwrap();
        assert!(t.contains("<m:result"), "{t}");
    }
}
