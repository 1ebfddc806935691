//! `WatchPractice` and `WatchPractices` with one protobuf encoding per event.
//!
//! Every live stream receives the bus's one `Arc<Event>` of an event; with a
//! thousand subscribers, converting and encoding it once per stream was most
//! of the hub's work. Here the first stream to send an event encodes it and
//! the others write the same bytes ([`EncodedEvents`]).
//!
//! The generated server cannot send bytes encoded elsewhere: the code
//! generator fixes one codec for the whole service, and a codec's item is the
//! method's message type, so every stream would encode its own
//! `pb::PracticeEvent`. [`PracticeServer`] therefore answers the two watch
//! methods itself, with a codec that writes already-encoded messages as they
//! are, and hands every other method to the generated server. The wire is
//! unchanged: clients decode the same `PracticeEvent` messages.

use super::{Api, EventReceiver, convert::event_pb};
use crate::domain::practice::Event;
use prost::Message;
use prost::bytes::{BufMut, Bytes};
use raccordo_proto::v1 as pb;
use raccordo_proto::v1::practice_service_server::PracticeServiceServer;
use std::collections::HashMap;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

pub(super) const WATCH_PRACTICE: &str = "/raccordo.v1.PracticeService/WatchPractice";
pub(super) const WATCH_PRACTICES: &str = "/raccordo.v1.PracticeService/WatchPractices";

const SUBMIT_PRACTICE: &str = "/raccordo.v1.PracticeService/SubmitPractice";

/// The largest request of every method but `SubmitPractice` (gRPC's usual
/// default): none of them carries more than a few identifiers, and a
/// larger limit only lets a caller make the hub buffer and parse more.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// `raccordo.v1.PracticeService`: the watch methods send events encoded
/// once for all streams, the other methods are the generated server's.
#[derive(Debug, Clone)]
pub struct PracticeServer {
    api: Api,
    /// Every method but `SubmitPractice`, with [`MAX_REQUEST_BYTES`].
    generated: PracticeServiceServer<Api>,
    /// `SubmitPractice`, with room for the largest attachments allowed.
    submit: PracticeServiceServer<Api>,
    encoded: Arc<EncodedEvents>,
    streams: Arc<StreamSlots>,
}

impl PracticeServer {
    /// The service over `api`, refusing `SubmitPractice` requests larger
    /// than `max_submit_bytes`, other requests larger than
    /// [`MAX_REQUEST_BYTES`], and a client's watch streams beyond
    /// `max_streams_per_client`.
    pub fn new(api: Api, max_submit_bytes: usize, max_streams_per_client: usize) -> Self {
        Self {
            generated: PracticeServiceServer::new(api.clone())
                .max_decoding_message_size(MAX_REQUEST_BYTES),
            submit: PracticeServiceServer::new(api.clone())
                .max_decoding_message_size(max_submit_bytes),
            api,
            encoded: Arc::new(EncodedEvents::new()),
            streams: Arc::new(StreamSlots::new(max_streams_per_client)),
        }
    }

    /// The gRPC handler of a watch method decoding requests of type `U`,
    /// with the generated server's limits (and, like it, no compression).
    fn grpc<U: Message + Default + Send + 'static>(&self) -> Grpc<PreEncoded<U>> {
        Grpc::new(PreEncoded(PhantomData))
            .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None)
    }

    fn watch(&self) -> Watch {
        Watch {
            api: self.api.clone(),
            encoded: Arc::clone(&self.encoded),
            streams: Arc::clone(&self.streams),
        }
    }
}

impl NamedService for PracticeServer {
    const NAME: &'static str = <PracticeServiceServer<Api> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for PracticeServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<B>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            WATCH_PRACTICE => {
                let (mut grpc, method) = (self.grpc::<pb::WatchPracticeRequest>(), self.watch());
                Box::pin(async move { Ok(grpc.server_streaming(method, req).await) })
            }
            WATCH_PRACTICES => {
                let (mut grpc, method) = (self.grpc::<pb::WatchPracticesRequest>(), self.watch());
                Box::pin(async move { Ok(grpc.server_streaming(method, req).await) })
            }
            SUBMIT_PRACTICE => self.submit.call(req),
            _ => self.generated.call(req),
        }
    }
}

/// One watch call: the [`Api`] checks it and opens the event channel, the
/// stream sends each event's shared encoding.
#[derive(Clone)]
struct Watch {
    api: Api,
    encoded: Arc<EncodedEvents>,
    streams: Arc<StreamSlots>,
}

type EncodedStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<EncodedEvent, Status>> + Send>>;

impl Watch {
    /// The stream sending `rx`'s events; it holds the client's `slot` and
    /// gives it back when it ends or the client goes away.
    fn stream(self, rx: EventReceiver, slot: StreamSlot) -> EncodedStream {
        let encoded = self.encoded;
        Box::pin(ReceiverStream::new(rx).map(move |r| {
            let _held = &slot;
            match r {
                Ok(e) => Ok(encoded.encode(&e)),
                Err(e) => Err(Status::from(e)),
            }
        }))
    }

    /// A stream slot of the request's caller (RESOURCE_EXHAUSTED when it
    /// has none left); taken before any other work on the call.
    fn slot<T>(&self, request: &Request<T>) -> Result<StreamSlot, Status> {
        let caller = crate::security::caller(request)?;
        self.streams.take(&caller.client)
    }
}

/// Watch streams open per client, against `hub.max_watch_streams_per_client`.
/// Clients are named as the security layer names them (every caller of a
/// hub without `[clients]` is `anonymous`).
#[derive(Debug)]
struct StreamSlots {
    limit: usize,
    open: Mutex<HashMap<String, usize>>,
}

impl StreamSlots {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn take(self: &Arc<Self>, client: &str) -> Result<StreamSlot, Status> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client.to_string()).or_insert(0);
        if *count >= self.limit {
            tracing::warn!(%client, limit = self.limit, "watch stream refused: the client has too many open");
            return Err(Status::resource_exhausted(format!(
                "client '{client}' already has {} watch streams open \
                 (hub.max_watch_streams_per_client): close one first",
                self.limit
            )));
        }
        *count += 1;
        Ok(StreamSlot {
            slots: Arc::clone(self),
            client: client.to_string(),
        })
    }
}

/// One open watch stream of a client; dropping it frees the slot.
struct StreamSlot {
    slots: Arc<StreamSlots>,
    client: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            // No entry left behind per client that ever watched.
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

impl ServerStreamingService<pb::WatchPracticeRequest> for Watch {
    type Response = EncodedEvent;
    type ResponseStream = EncodedStream;
    type Future = BoxFuture<Response<EncodedStream>, Status>;

    fn call(&mut self, request: Request<pb::WatchPracticeRequest>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let slot = this.slot(&request)?;
            let rx = this.api.practice_events(request).await?;
            Ok(Response::new(this.stream(rx, slot)))
        })
    }
}

impl ServerStreamingService<pb::WatchPracticesRequest> for Watch {
    type Response = EncodedEvent;
    type ResponseStream = EncodedStream;
    type Future = BoxFuture<Response<EncodedStream>, Status>;

    fn call(&mut self, request: Request<pb::WatchPracticesRequest>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let slot = this.slot(&request)?;
            let rx = this.api.folder_events(request).await?;
            Ok(Response::new(this.stream(rx, slot)))
        })
    }
}

/// A `pb::PracticeEvent` already encoded (without the gRPC frame header).
#[derive(Debug, Clone)]
pub struct EncodedEvent(Bytes);

/// Table slots: as many as the bus holds, so a stream that is behind but
/// not lagging still finds what the others encoded.
const SLOTS: usize = 4096;

/// The encodings of recent events, shared by every stream of a server.
///
/// A slot, chosen by cursor, keeps one event and its encoding, and serves
/// only that very `Arc`: the bus's copy, which every live stream shares. A
/// copy read back from the store (a replay, or a stream catching up after a
/// lag) belongs to one stream and may differ from the published one (the
/// store keeps timestamps to the millisecond), so it is encoded on its own.
pub struct EncodedEvents {
    slots: Box<[Mutex<Option<Slot>>]>,
}

struct Slot {
    event: Arc<Event>,
    bytes: Bytes,
}

impl std::fmt::Debug for EncodedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedEvents")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Default for EncodedEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl EncodedEvents {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The encoding of `e`, made at most once while `e` stays in its slot.
    pub fn encode(&self, e: &Arc<Event>) -> EncodedEvent {
        let slot = &self.slots[e.cursor.rem_euclid(SLOTS as i64) as usize];
        // Encoding under the lock: streams sending the same event wait about
        // a microsecond for its bytes rather than each encoding it again.
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = slot.as_ref().filter(|s| Arc::ptr_eq(&s.event, e)) {
            return EncodedEvent(s.bytes.clone());
        }
        let bytes = Bytes::from(event_pb(e).encode_to_vec());
        // A copy nobody else holds can never be asked for again. An older
        // event (a stream far behind) leaves a newer one in place: the
        // streams that share the newer one are the many.
        let shared = Arc::strong_count(e) > 1;
        if shared && slot.as_ref().is_none_or(|s| s.event.cursor < e.cursor) {
            *slot = Some(Slot {
                event: Arc::clone(e),
                bytes: bytes.clone(),
            });
        }
        EncodedEvent(bytes)
    }
}

/// The codec of the watch methods: decodes the request `U` with prost and
/// writes [`EncodedEvent`]s as they are.
struct PreEncoded<U>(PhantomData<fn() -> U>);

impl<U: Message + Default + Send + 'static> Codec for PreEncoded<U> {
    type Encode = EncodedEvent;
    type Decode = U;
    type Encoder = PreEncodedEncoder;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(PhantomData)
    }
}

struct PreEncodedEncoder;

impl Encoder for PreEncodedEncoder {
    type Item = EncodedEvent;
    type Error = Status;

    fn encode(&mut self, item: EncodedEvent, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

struct RequestDecoder<U>(PhantomData<fn() -> U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(src)
            .map(Some)
            .map_err(|e| super::malformed::malformed(&e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::practice::{EventKind, EventSource};
    use chrono::{TimeZone, Utc};
    use raccordo_adapters::model::AdminStatus;

    fn event(cursor: i64, nanos: u32) -> Event {
        Event {
            cursor,
            practice_id: "p-1".into(),
            tenant_id: "016024".into(),
            service_code: "tari".into(),
            applicant_id: "RSSMRA45D25F205N".into(),
            sequence: 2,
            occurred_at: Utc.timestamp_opt(1_790_000_000, nanos).unwrap(),
            recorded_at: Utc.timestamp_opt(1_790_000_000, nanos).unwrap(),
            source: EventSource::Adapter,
            kind: EventKind::StatusChanged,
            from_status: Some(AdminStatus::InProgress),
            to_status: Some(AdminStatus::Approved),
            from_delivery: None,
            to_delivery: None,
            reason: Some("ok".into()),
            vendor_code: Some("V-9".into()),
            actor: "sim".into(),
            outcome_data: None,
        }
    }

    fn decoded(e: &EncodedEvent) -> pb::PracticeEvent {
        pb::PracticeEvent::decode(e.0.as_ref()).unwrap()
    }

    #[test]
    fn streams_sharing_an_event_share_one_encoding() {
        let table = EncodedEvents::new();
        let published = Arc::new(event(7, 123_456_789));
        let (a, b) = (Arc::clone(&published), Arc::clone(&published));
        let first = table.encode(&a);
        let second = table.encode(&b);
        assert_eq!(first.0.as_ptr(), second.0.as_ptr(), "encoded once");
        assert_eq!(decoded(&first), event_pb(&published));
    }

    #[test]
    fn a_copy_read_from_the_store_is_encoded_as_it_is() {
        let table = EncodedEvents::new();
        let published = Arc::new(event(7, 123_456_789));
        let _other_stream = Arc::clone(&published);
        let live = table.encode(&published);
        // The same event read back, timestamps cut to the millisecond.
        let stored = Arc::new(event(7, 123_000_000));
        assert_eq!(decoded(&table.encode(&stored)), event_pb(&stored));
        // The live streams still share their encoding.
        assert_eq!(table.encode(&published).0.as_ptr(), live.0.as_ptr());
    }

    #[test]
    fn an_older_event_does_not_evict_a_newer_one() {
        let table = EncodedEvents::new();
        let newer = Arc::new(event(7 + SLOTS as i64, 0));
        let _other = Arc::clone(&newer);
        let shared = table.encode(&newer);
        let older = Arc::new(event(7, 0));
        let _behind = Arc::clone(&older);
        assert_eq!(decoded(&table.encode(&older)).cursor, 7);
        assert_eq!(table.encode(&newer).0.as_ptr(), shared.0.as_ptr());
    }
}
