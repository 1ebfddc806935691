//! A budget of request bytes in progress, in one tower layer.
//!
//! Each method bounds one request (`SubmitPractice` to the largest
//! submission allowed, the others to 4 MiB), but not how many the hub holds
//! at once: sixteen concurrent 17 MB submissions held hundreds of MB. Here
//! every call takes the length of its request message (the gRPC frame's
//! length prefix, read before the message itself) from
//! `hub.max_in_flight_request_bytes`, and gives it back when its handler
//! answers. A call that would take the budget past its limit is refused at
//! once with `RESOURCE_EXHAUSTED` and a retry hint, before its message is
//! read, buffered or decoded. Health checks take nothing: a probe must
//! answer when the hub is full.

use super::error::busy;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio_stream::StreamExt;
use tonic::codegen::Bytes;
use tonic::{Code, Status};

/// The gRPC length-prefixed message header: a compression flag and the
/// message length (big-endian).
const PREFIX: usize = 5;

/// The bytes of requests in progress, against their limit.
#[derive(Debug)]
struct Budget {
    limit: usize,
    in_use: AtomicUsize,
}

/// Bytes taken from the budget, given back when dropped.
#[derive(Debug)]
struct Taken {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.budget.in_use.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl Budget {
    /// Takes `bytes`, or says why not.
    fn take(self: &Arc<Self>, bytes: usize) -> Result<Taken, Status> {
        if bytes > self.limit {
            return Err(Status::resource_exhausted(format!(
                "the request's message of {bytes} bytes is larger than all the requests the hub \
                 holds at once may be (hub.max_in_flight_request_bytes = {})",
                self.limit
            )));
        }
        let mut in_use = self.in_use.load(Ordering::Acquire);
        loop {
            if in_use + bytes > self.limit {
                return Err(busy(
                    Code::ResourceExhausted,
                    format!(
                        "the hub holds {in_use} bytes of requests in progress and this one has \
                         {bytes}: together they exceed hub.max_in_flight_request_bytes ({}); \
                         retry later",
                        self.limit
                    ),
                ));
            }
            match self.in_use.compare_exchange_weak(
                in_use,
                in_use + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Ok(Taken {
                        budget: Arc::clone(self),
                        bytes,
                    });
                }
                Err(now) => in_use = now,
            }
        }
    }
}

/// Paths that take nothing from the budget.
fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.")
}

/// The length of the first message of a request body that starts with
/// `head`, once `head` holds its prefix.
fn message_length(head: &[Bytes]) -> Option<usize> {
    let mut prefix = [0u8; PREFIX];
    let mut filled = 0;
    for chunk in head {
        let n = (PREFIX - filled).min(chunk.len());
        prefix[filled..filled + n].copy_from_slice(&chunk[..n]);
        filled += n;
        if filled == PREFIX {
            let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
            return Some(length as usize);
        }
    }
    None
}

/// Holds the bytes of requests in progress under `limit`; see the module
/// documentation.
#[derive(Debug, Clone)]
pub struct ByteBudgetLayer {
    budget: Arc<Budget>,
}

impl ByteBudgetLayer {
    /// A budget of `limit` bytes (at least one).
    pub fn new(limit: usize) -> Self {
        Self {
            budget: Arc::new(Budget {
                limit: limit.max(1),
                in_use: AtomicUsize::new(0),
            }),
        }
    }
}

impl<S> tower_layer::Layer<S> for ByteBudgetLayer {
    type Service = ByteBudget<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ByteBudget {
            inner,
            budget: Arc::clone(&self.budget),
        }
    }
}

/// The service [`ByteBudgetLayer`] wraps.
#[derive(Debug, Clone)]
pub struct ByteBudget<S> {
    inner: S,
    budget: Arc<Budget>,
}

impl<S, RB> tower_service::Service<http::Request<tonic::body::Body>> for ByteBudget<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>, Response = http::Response<RB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        // The service that was made ready goes with this call.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let budget = Arc::clone(&self.budget);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let mut data = axum::body::Body::new(body).into_data_stream();
            // The body's first bytes, read to learn the message's length
            // and then handed on as they came (an error included).
            let mut head: Vec<Result<Bytes, axum::Error>> = Vec::new();
            let mut read: Vec<Bytes> = Vec::new();
            let mut length = None;
            while length.is_none() {
                match data.next().await {
                    Some(Ok(chunk)) => {
                        read.push(chunk.clone());
                        head.push(Ok(chunk));
                        length = message_length(&read);
                    }
                    Some(Err(e)) => {
                        head.push(Err(e));
                        break;
                    }
                    None => break,
                }
            }
            let taken = match length.map(|bytes| budget.take(bytes)).transpose() {
                Ok(taken) => taken,
                Err(status) => {
                    tracing::debug!(
                        rpc = parts.uri.path(),
                        bytes = length,
                        "call refused: the request byte budget is spent"
                    );
                    return Ok(status.into_http::<RB>());
                }
            };
            let replayed = tokio_stream::iter(head).chain(data);
            let body = tonic::body::Body::new(axum::body::Body::from_stream(replayed));
            let response = inner.call(http::Request::from_parts(parts, body)).await;
            // Held until the handler answered: a unary call's request is
            // decoded, used and dropped by then.
            drop(taken);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_is_read_across_chunks() {
        let frame = |b: &[u8]| Bytes::copy_from_slice(b);
        assert_eq!(message_length(&[frame(&[0, 0, 1])]), None);
        assert_eq!(
            message_length(&[frame(&[0, 0, 1]), frame(&[0, 2, 9, 9])]),
            Some(0x0001_0002)
        );
        assert_eq!(message_length(&[frame(&[0, 0, 0, 0, 7])]), Some(7));
    }

    #[test]
    fn the_budget_refuses_what_would_exceed_it_and_takes_back_what_ends() {
        let budget = ByteBudgetLayer::new(100).budget;
        let a = budget.take(60).unwrap();
        let refused = budget.take(41).unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("hub.max_in_flight_request_bytes (100)")
                && refused.message().contains("60 bytes")
                && refused.message().contains("41"),
            "{}",
            refused.message()
        );
        let b = budget.take(40).unwrap();
        drop(a);
        let c = budget.take(60).unwrap();
        drop((b, c));
        assert_eq!(budget.in_use.load(Ordering::Acquire), 0);
        let too_large = budget.take(101).unwrap_err();
        assert!(too_large.message().contains("larger than"), "{too_large:?}");
        assert!(exempt("/grpc.health.v1.Health/Check"));
        assert!(!exempt("/raccordo.v1.PracticeService/SubmitPractice"));
    }
}
