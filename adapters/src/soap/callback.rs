//! The hub's SOAP callback service for `NONBLOCK_PUSH_SOAP`, mounted at
//! `/callbacks/{instance}`:
//!
//! - `GET ?wsdl` publishes the service's WSDL (the vendor generates its
//!   client from it);
//! - `POST` takes a result: a SOAP envelope with `X-Correlation-ID` in a
//!   SOAP header (any namespace) and a WS-Security UsernameToken with the
//!   configured credentials. The Body is mapped with the instance's
//!   response mapping and applied through the [`ResultSink`] with a receipt
//!   (`wsa:MessageID`, else a hash of correlation id and body), so a
//!   re-sent result is applied once. Bad input is answered with a SOAP
//!   fault (Client/Sender); a hub that cannot store now with a
//!   Server/Receiver fault, so the vendor retries.

use super::Protocol;
use super::config::{PushConfig, SoapVersion};
use super::response::{Mapper, refused};
use super::security::{ReceivedToken, verify_token};
use super::xml::{NsMatch, Step, XPath};
use crate::adapter::{AdapterError, InboundError, ResultSink};
use crate::http::auth::read_secret;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quick_xml::escape::escape;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The callback service's target namespace.
pub const CALLBACK_NS: &str = "urn:raccordo:callback:v1";

/// The callback side of one instance.
#[derive(Clone)]
pub struct CallbackSettings {
    /// `{public_base_url}/callbacks/{instance}`: `X-ReplyTo` and the WSDL's address.
    pub service_url: String,
    /// Namespace of the ModI SOAP headers the hub sends.
    pub header_namespace: String,
    username: String,
    password: Arc<String>,
    max_skew: Duration,
}

impl CallbackSettings {
    /// Reads the credentials and computes the service URL.
    pub fn build(
        instance: &str,
        config: &PushConfig,
        config_dir: &Path,
    ) -> Result<Self, AdapterError> {
        let base = reqwest::Url::parse(&config.public_base_url).map_err(|e| {
            AdapterError::new(
                "push.public_base_url",
                format!("'{}' is not a URL: {e}", config.public_base_url),
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(AdapterError::new(
                "push.public_base_url",
                "must be an http:// or https:// URL",
            ));
        }
        if config.username.is_empty() {
            return Err(AdapterError::new("push.username", "must not be empty"));
        }
        let password = read_secret(
            "push",
            "password",
            &config.password_env,
            &config.password_file,
            config_dir,
        )?;
        if password.len() < 12 {
            return Err(AdapterError::new(
                "push.password_env",
                "the callback password is shorter than 12 characters",
            ));
        }
        Ok(Self {
            service_url: format!(
                "{}/callbacks/{instance}",
                config.public_base_url.trim_end_matches('/')
            ),
            header_namespace: config.header_namespace.clone(),
            username: config.username.clone(),
            password: Arc::new(password),
            max_skew: config.max_skew,
        })
    }
}

/// Where the UsernameToken's parts are in the shared capture list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenIndexes {
    username: usize,
    password: usize,
    nonce: usize,
    created: usize,
}

impl TokenIndexes {
    pub(crate) fn add(mapper: &mut Mapper) -> Self {
        let path = |leaf: &str, via: &[&str]| {
            let mut names = vec!["Envelope", "Header", "Security"];
            names.extend(via);
            names.push(leaf);
            XPath::from_steps(
                &format!("Security/{leaf}"),
                true,
                names
                    .iter()
                    .map(|n| Step {
                        ns: NsMatch::Any,
                        local: (*n).into(),
                    })
                    .collect(),
            )
        };
        Self {
            username: mapper.add_path(path("Username", &["UsernameToken"])),
            password: mapper.add_path(path("Password", &["UsernameToken"])),
            nonce: mapper.add_path(path("Nonce", &["UsernameToken"])),
            created: mapper.add_path(path("Created", &["UsernameToken"])),
        }
    }
}

struct Ctx {
    inner: Arc<Protocol>,
    settings: CallbackSettings,
    sink: Arc<dyn ResultSink>,
}

/// The routes, to be mounted under `/callbacks/{instance}`.
pub(super) fn router(inner: Arc<Protocol>, sink: Arc<dyn ResultSink>) -> axum::Router {
    let settings = inner
        .callback
        .clone()
        .expect("router is only built with callback settings");
    let limit = inner.config.limits.max_bytes;
    axum::Router::new()
        .route("/", axum::routing::get(wsdl).post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::new(Ctx {
            inner,
            settings,
            sink,
        }))
}

fn version(ctx: &Ctx) -> SoapVersion {
    ctx.inner.config.soap_version
}

fn soap_response(v: SoapVersion, status: StatusCode, body: String) -> Response {
    let ct = match v {
        SoapVersion::V11 => "text/xml; charset=utf-8",
        SoapVersion::V12 => "application/soap+xml; charset=utf-8",
    };
    let envelope = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="{}"><soap:Body>{body}</soap:Body></soap:Envelope>"#,
        v.namespace()
    );
    (status, [(header::CONTENT_TYPE, ct)], envelope).into_response()
}

/// A SOAP fault: `sender` = the caller's input is at fault (Client/Sender),
/// otherwise the hub (Server/Receiver).
pub fn fault(v: SoapVersion, sender: bool, text: &str) -> Response {
    let text = escape(text);
    match v {
        SoapVersion::V11 => {
            let code = if sender { "soap:Client" } else { "soap:Server" };
            soap_response(
                v,
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "<soap:Fault><faultcode>{code}</faultcode><faultstring>{text}</faultstring></soap:Fault>"
                ),
            )
        }
        SoapVersion::V12 => {
            let (code, status) = if sender {
                ("soap:Sender", StatusCode::BAD_REQUEST)
            } else {
                ("soap:Receiver", StatusCode::INTERNAL_SERVER_ERROR)
            };
            soap_response(
                v,
                status,
                format!(
                    r#"<soap:Fault><soap:Code><soap:Value>{code}</soap:Value></soap:Code><soap:Reason><soap:Text xml:lang="en">{text}</soap:Text></soap:Reason></soap:Fault>"#
                ),
            )
        }
    }
}

async fn wsdl(State(ctx): State<Arc<Ctx>>, RawQuery(query): RawQuery) -> Response {
    if !query.is_some_and(|q| q.eq_ignore_ascii_case("wsdl")) {
        return (
            StatusCode::NOT_FOUND,
            "this is a SOAP endpoint: POST an envelope, or GET ?wsdl\n",
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        callback_wsdl(&ctx.settings.service_url, version(&ctx)),
    )
        .into_response()
}

/// The callback service's WSDL 1.1 (document/literal): one operation,
/// `result`, whose input carries the vendor's result in any shape the
/// instance's response mapping reads.
pub fn callback_wsdl(service_url: &str, v: SoapVersion) -> String {
    let (soap_ns, prefix) = match v {
        SoapVersion::V11 => ("http://schemas.xmlsoap.org/wsdl/soap/", "soap"),
        SoapVersion::V12 => ("http://schemas.xmlsoap.org/wsdl/soap12/", "soap12"),
    };
    let url = escape(service_url);
    format!(
        r###"<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="RaccordoCallback" targetNamespace="{CALLBACK_NS}"
    xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:{prefix}="{soap_ns}"
    xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:tns="{CALLBACK_NS}">
  <wsdl:documentation>Raccordo's callback service (ModI NONBLOCK_PUSH_SOAP). Send the result with X-Correlation-ID in a SOAP header and a WS-Security UsernameToken.</wsdl:documentation>
  <wsdl:types>
    <xsd:schema targetNamespace="{CALLBACK_NS}" elementFormDefault="qualified">
      <xsd:element name="X-Correlation-ID" type="xsd:string"/>
      <xsd:element name="result">
        <xsd:complexType><xsd:sequence>
          <xsd:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
      <xsd:element name="ack">
        <xsd:complexType><xsd:sequence>
          <xsd:element name="outcome" type="xsd:string"/>
        </xsd:sequence></xsd:complexType>
      </xsd:element>
    </xsd:schema>
  </wsdl:types>
  <wsdl:message name="resultRequest">
    <wsdl:part name="correlation" element="tns:X-Correlation-ID"/>
    <wsdl:part name="body" element="tns:result"/>
  </wsdl:message>
  <wsdl:message name="resultResponse"><wsdl:part name="body" element="tns:ack"/></wsdl:message>
  <wsdl:portType name="CallbackPortType">
    <wsdl:operation name="result">
      <wsdl:input message="tns:resultRequest"/>
      <wsdl:output message="tns:resultResponse"/>
    </wsdl:operation>
  </wsdl:portType>
  <wsdl:binding name="CallbackBinding" type="tns:CallbackPortType">
    <{prefix}:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
    <wsdl:operation name="result">
      <{prefix}:operation soapAction="{CALLBACK_NS}/result"/>
      <wsdl:input>
        <{prefix}:header message="tns:resultRequest" part="correlation" use="literal"/>
        <{prefix}:body parts="body" use="literal"/>
      </wsdl:input>
      <wsdl:output><{prefix}:body use="literal"/></wsdl:output>
    </wsdl:operation>
  </wsdl:binding>
  <wsdl:service name="CallbackService">
    <wsdl:port name="CallbackPort" binding="tns:CallbackBinding">
      <{prefix}:address location="{url}"/>
    </wsdl:port>
  </wsdl:service>
</wsdl:definitions>
"###
    )
}

async fn receive(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    let v = version(&ctx);
    let inner = &ctx.inner;
    let name = &inner.name;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok());
    let reply = match inner.mapper.read(&body, ct, &inner.config.limits) {
        Ok(r) => r,
        Err(e) => {
            let e = refused(&e, "callback");
            return fault(v, true, &e.reason);
        }
    };
    if reply.parsed.soap_version.is_none() {
        return fault(v, true, "the request is not a SOAP envelope");
    }
    let idx = inner.idx;
    let text = |i: usize| inner.mapper.text(&reply, Some(i));
    let password_cap = reply.parsed.captures[idx.token.password].first();
    let token = ReceivedToken {
        username: text(idx.token.username).unwrap_or_default(),
        password: password_cap.map(|c| c.text.clone()).unwrap_or_default(),
        password_type: password_cap
            .and_then(|c| c.attributes.iter().find(|(k, _)| k == "Type"))
            .map(|(_, t)| t.clone())
            .unwrap_or_default(),
        nonce_b64: text(idx.token.nonce),
        created: text(idx.token.created),
    };
    if let Err(reason) = verify_token(
        &token,
        &ctx.settings.username,
        &ctx.settings.password,
        ctx.settings.max_skew,
        chrono::Utc::now(),
    ) {
        tracing::warn!(adapter = %name, "SOAP callback refused: {reason}");
        return fault(v, true, &format!("authentication failed: {reason}"));
    }
    if reply.parsed.fault.is_some() {
        return fault(v, true, "a fault is not a result");
    }
    let Some(correlation) = text(idx.header_correlation) else {
        return fault(v, true, "X-Correlation-ID is required in a SOAP header");
    };
    let mapped = match inner.mapper.map(&reply, name, true) {
        Ok(m) => m,
        Err(e) => return fault(v, true, &format!("unreadable result: {}", e.reason)),
    };
    let message_id = text(idx.header_message_id);
    let outcome = crate::http::callback::apply_correlated(
        ctx.sink.as_ref(),
        name,
        &correlation,
        mapped,
        message_id.as_deref(),
        &body,
    )
    .await;
    match outcome {
        Ok(o) => {
            let state = o.as_str();
            tracing::info!(adapter = %name, correlation = %correlation, state, "SOAP callback result stored");
            soap_response(
                v,
                StatusCode::OK,
                format!(r#"<r:ack xmlns:r="{CALLBACK_NS}"><r:outcome>{state}</r:outcome></r:ack>"#),
            )
        }
        Err(InboundError::Uncorrelated(_)) => fault(
            v,
            true,
            &format!("no practice awaits X-Correlation-ID {correlation}"),
        ),
        Err(InboundError::Refused(reason)) => fault(v, true, &reason),
        // Recorded on the practice, not applied: a Client/Sender fault whose
        // code names the class, so the vendor does not retry it.
        Err(InboundError::Anomaly(a)) => fault(
            v,
            true,
            &format!("result not applied: anomaly ({}): {}", a.class, a.reason),
        ),
        Err(InboundError::Unavailable(reason)) => {
            tracing::warn!(adapter = %name, "SOAP callback not stored: {reason}");
            fault(v, false, "the hub cannot store the result now; retry later")
        }
    }
}
