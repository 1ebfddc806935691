//! W3C Trace Context (`traceparent`): accepted from gRPC callers, kept with
//! each delivery, and passed on to vendors, so one trace id follows a
//! practice from the portal through the hub to the back office.
//!
//! The gRPC layer [`TraceContextLayer`] reads the caller's header and makes
//! it the *caller context* of the request's task; the practice service reads
//! it with [`caller`] when it creates a delivery. A missing or malformed
//! header starts a new trace (as the W3C specification asks).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

tokio::task_local! {
    static CALLER: TraceContext;
}

/// One position in a trace: the trace id, the calling span, the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: String,
    parent_id: String,
    flags: String,
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `bytes` random bytes (at most 16) as lower-case hex: new trace and span
/// ids.
fn random_hex(bytes: usize) -> String {
    raccordo_adapters::model::lower_hex(&uuid::Uuid::new_v4().as_bytes()[..bytes])
}

impl TraceContext {
    /// Parses a `traceparent` header value (version 00; later versions are
    /// read by their first four fields, as the specification says).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = is_lower_hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && is_lower_hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && is_lower_hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && is_lower_hex(flags, 2);
        valid.then(|| Self {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: flags.to_string(),
        })
    }

    /// A new trace, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: random_hex(16),
            parent_id: random_hex(8),
            flags: "01".into(),
        }
    }

    /// The same trace, one span further: what the hub sends downstream.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            parent_id: random_hex(8),
            flags: self.flags.clone(),
        }
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The `traceparent` header value.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

/// The caller's trace context of the current request, if it sent one.
pub fn caller() -> Option<TraceContext> {
    CALLER.try_with(Clone::clone).ok()
}

/// The caller's context, or a new trace when it sent none.
pub fn caller_or_new() -> TraceContext {
    caller().unwrap_or_else(TraceContext::new_root)
}

/// A tower layer that makes a gRPC request's `traceparent` its task's
/// caller context.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextLayer;

impl<S> tower_layer::Layer<S> for TraceContextLayer {
    type Service = WithTraceContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithTraceContext { inner }
    }
}

/// The service [`TraceContextLayer`] wraps.
#[derive(Debug, Clone)]
pub struct WithTraceContext<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for WithTraceContext<S>
where
    S: tower_service::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let context = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse);
        let call = self.inner.call(request);
        match context {
            Some(context) => Box::pin(CALLER.scope(context, call)),
            None => Box::pin(call),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let t = TraceContext::parse(EXAMPLE).expect("valid");
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.header(), EXAMPLE);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let parent = TraceContext::parse(EXAMPLE).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.header(), parent.header());
        assert!(TraceContext::parse(&child.header()).is_some());
        let root = TraceContext::new_root();
        assert!(TraceContext::parse(&root.header()).is_some());
    }
}
