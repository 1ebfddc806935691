//! The AMQP adapter against a real RabbitMQ on 127.0.0.1:5672
//! (`scripts/ensure-rabbitmq` makes sure one runs). Each test declares its
//! own uniquely named exchanges and queues and deletes them at the end. The
//! hub reaches the broker through a TCP proxy the test can sever, so
//! connections are cut exactly when the test says, with no broker admin
//! rights needed; the test's vendor talks to the broker directly.

use crate::support::*;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use raccordo_proto::v1 as pb;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BROKER: &str = "127.0.0.1:5672";
const TENANT: &str = "016024";

/// Queue and exchange names private to one test.
#[derive(Clone)]
struct Names {
    prefix: String,
    exchange: String,
    inbox: String,
    results: String,
    dlx: String,
    dead: String,
}

impl Names {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = format!("raccordo-test.{test}.{}.{nanos}", std::process::id());
        Self {
            prefix: p.clone(),
            exchange: format!("{p}.practices"),
            inbox: format!("{p}.inbox"),
            results: format!("{p}.results"),
            dlx: format!("{p}.dlx"),
            dead: format!("{p}.dead"),
        }
    }
}

/// The test's own connection to the broker (not through the proxy).
struct Broker {
    _conn: Connection,
    ch: Channel,
    names: Names,
}

impl Broker {
    async fn connect(names: &Names) -> Self {
        let conn = Connection::connect(
            &format!("amqp://guest:guest@{BROKER}/%2f"),
            ConnectionProperties::default(),
        )
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (run scripts/ensure-rabbitmq)");
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            _conn: conn,
            ch,
            names: names.clone(),
        }
    }

    /// Deletes everything the test declared.
    async fn cleanup(&self) {
        let n = &self.names;
        for q in [&n.inbox, &n.results, &n.dead] {
            let _ = self
                .ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for e in [&n.exchange, &n.dlx] {
            let _ = self
                .ch
                .exchange_delete(e.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }

    /// Messages ready in `queue`.
    async fn count(&self, queue: &str) -> u32 {
        self.ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// Takes one message off `queue`, waiting for it.
    async fn take(&self, queue: &str) -> Delivery {
        eventually(&format!("a message in {queue}"), || async {
            self.ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .map(|m| m.delivery)
        })
        .await
    }

    /// Publishes a reply on the results queue, as a vendor would.
    async fn reply(&self, correlation_id: &str, message_id: &str, body: &[u8]) {
        let props = BasicProperties::default()
            .with_correlation_id(correlation_id.into())
            .with_message_id(message_id.into())
            .with_content_type("application/json".into());
        let c = self
            .ch
            .basic_publish(
                "".into(),
                self.names.results.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(c.is_ack());
    }
}

/// A TCP proxy between the hub and the broker that the test can sever.
struct Proxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    blocked: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let blocked = Arc::new(AtomicBool::new(false));
        let (c, b) = (Arc::clone(&conns), Arc::clone(&blocked));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if b.load(Ordering::SeqCst) {
                    continue; // dropped: the broker is "unreachable"
                }
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(BROKER).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut list = c.lock().unwrap();
                list.retain(|h| !h.is_finished());
                list.push(handle.abort_handle());
            }
        });
        Self {
            addr,
            conns,
            blocked,
            task,
        }
    }

    /// Waits until the hub is connected through the proxy, then cuts
    /// every connection; returns how many.
    async fn cut(&self) -> usize {
        eventually("a connection through the proxy", || async {
            let live = self.conns.lock().unwrap().iter().any(|h| !h.is_finished());
            live.then_some(())
        })
        .await;
        self.sever()
    }

    /// Cuts every connection through the proxy; returns how many.
    fn sever(&self) -> usize {
        let list = std::mem::take(&mut *self.conns.lock().unwrap());
        let n = list.iter().filter(|h| !h.is_finished()).count();
        for h in list {
            h.abort();
        }
        n
    }

    /// While blocked, new connections are dropped at once.
    fn block(&self, on: bool) {
        self.blocked.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.sever();
    }
}

/// One message the vendor received.
#[derive(Debug, Clone)]
struct Got {
    message_id: String,
    correlation_id: String,
    reply_to: String,
    content_type: String,
    kind: String,
    delivery_mode: u8,
    timestamp: u64,
    routing_key: String,
    headers: HashMap<String, String>,
    body: Value,
}

fn text(v: &Option<lapin::types::ShortString>) -> String {
    v.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

fn headers(props: &BasicProperties) -> HashMap<String, String> {
    props
        .headers()
        .as_ref()
        .map(|h| {
            h.inner()
                .iter()
                .filter_map(|(k, v)| match v {
                    AMQPValue::LongString(s) => {
                        Some((k.to_string(), String::from_utf8_lossy(s.as_bytes()).into()))
                    }
                    AMQPValue::LongLongInt(n) => Some((k.to_string(), n.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A vendor back office consuming the inbox: records every message and
/// approves it on the reply queue (reply `message_id` = `reply-` + the
/// request's, so a redelivered request yields a duplicate reply).
struct MqVendor {
    received: Arc<Mutex<Vec<Got>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MqVendor {
    async fn start(names: &Names) -> Self {
        let conn = Connection::connect(
            &format!("amqp://guest:guest@{BROKER}/%2f"),
            ConnectionProperties::default(),
        )
        .await
        .unwrap();
        let consume = conn.create_channel().await.unwrap();
        consume
            .basic_qos(100, BasicQosOptions::default())
            .await
            .unwrap();
        let publish = conn.create_channel().await.unwrap();
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        let mut consumer = consume
            .basic_consume(
                names.inbox.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = Arc::clone(&received);
        let task = tokio::spawn(async move {
            let _conn = conn;
            while let Some(Ok(d)) = consumer.next().await {
                let p = &d.properties;
                let got = Got {
                    message_id: text(p.message_id()),
                    correlation_id: text(p.correlation_id()),
                    reply_to: text(p.reply_to()),
                    content_type: text(p.content_type()),
                    kind: text(p.kind()),
                    delivery_mode: p.delivery_mode().unwrap_or_default(),
                    timestamp: p.timestamp().unwrap_or_default(),
                    routing_key: d.routing_key.to_string(),
                    headers: headers(p),
                    body: serde_json::from_slice(&d.data).unwrap_or(Value::Null),
                };
                let n = {
                    let mut r = rec.lock().unwrap();
                    r.push(got.clone());
                    r.len()
                };
                let reply = json!({"status": "APPROVED", "protocol": format!("2026/{n:06}")});
                let props = BasicProperties::default()
                    .with_correlation_id(got.correlation_id.as_str().into())
                    .with_message_id(format!("reply-{}", got.message_id).into())
                    .with_content_type("application/json".into());
                let confirm = publish
                    .basic_publish(
                        "".into(),
                        got.reply_to.as_str().into(),
                        BasicPublishOptions::default(),
                        reply.to_string().as_bytes(),
                        props,
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                assert!(matches!(confirm, Confirmation::Ack(None)));
                d.ack(BasicAckOptions::default()).await.unwrap();
            }
        });
        Self { received, task }
    }

    fn received(&self) -> Vec<Got> {
        self.received.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

impl Drop for MqVendor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Hub settings that differ between tests.
struct Opts {
    max_attempts: u32,
    /// Extra keys of the inbox queue's declaration.
    inbox_extra: &'static str,
    /// `declare` or `passive`.
    topology_mode: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            inbox_extra: "",
            topology_mode: "declare",
        }
    }
}

fn config(n: &Names, proxy: SocketAddr, o: &Opts) -> String {
    format!(
        r#"
[hub]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "data"
shutdown_grace = "2s"

[delivery]
max_attempts = {attempts}
initial_backoff = "50ms"
max_backoff = "500ms"
poll_interval = "100ms"

[tenants."016024"]
name = "Comune di Bergamo"

[services.TARI]
title = "Dichiarazione TARI"
[[services.TARI.fields]]
name = "superficie_mq"
type = "number"
required = true
[[services.TARI.outcome_data]]
name = "importo_dovuto"
type = "number"

[services.PASSO]
title = "Passo carrabile"

[adapters.mq]
kind = "amqp"
url = "amqp://guest@{proxy}/%2f"
password_file = "mq.secret"
connection_name = "{prefix}"
connect_timeout = "2s"
confirm_timeout = "5s"
max_concurrency = 32
reconnect = {{ initial_backoff = "50ms", max_backoff = "500ms" }}

[adapters.mq.submit]
exchange = "{exchange}"
routing_key = "practices.{{{{ tenant_id }}}}.{{{{ service_code }}}}"

[adapters.mq.withdraw]
exchange = "{exchange}"
routing_key = "withdrawals.{{{{ tenant_id }}}}.{{{{ service_code }}}}"

[adapters.mq.consume]
queue = "{results}"
prefetch = 64
dead_letter_exchange = "{dlx}"
requeue_delay = "100ms"

[adapters.mq.topology]
mode = "{mode}"
exchanges = [{{ name = "{exchange}", type = "topic" }}, {{ name = "{dlx}", type = "fanout" }}]
queues = [
  {{ name = "{inbox}"{inbox_extra} }},
  {{ name = "{results}", type = "quorum" }},
  {{ name = "{dead}" }},
]
bindings = [
  {{ exchange = "{exchange}", queue = "{inbox}", routing_key = "practices.*.TARI" }},
  {{ exchange = "{exchange}", queue = "{inbox}", routing_key = "withdrawals.*.TARI" }},
  {{ exchange = "{dlx}", queue = "{dead}" }},
]

[[routes]]
tenants = ["016024"]
service = "TARI"
adapter = "mq"
mode = "deferred"

[[routes]]
tenants = ["016024"]
service = "PASSO"
adapter = "mq"
mode = "deferred"
"#,
        attempts = o.max_attempts,
        exchange = n.exchange,
        inbox = n.inbox,
        inbox_extra = o.inbox_extra,
        results = n.results,
        dlx = n.dlx,
        dead = n.dead,
        mode = o.topology_mode,
        prefix = n.prefix,
    )
}

async fn start(n: &Names, proxy: &Proxy, o: Opts) -> TestHub {
    let hub = start_unchecked(n, proxy, o).await;
    // The topology exists once the adapter is up.
    wait_adapter(&hub, "up", Duration::from_secs(20)).await;
    hub
}

async fn start_unchecked(n: &Names, proxy: &Proxy, o: Opts) -> TestHub {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mq.secret"), "guest\n").unwrap();
    let path = dir.path().join("raccordo.toml");
    std::fs::write(&path, config(n, proxy.addr, &o)).unwrap();
    let config = raccordo::config::load(&path).expect("test config loads");
    let hub = raccordo::server::start(config).await.expect("hub starts");
    let channel = connect(hub.grpc_addr).await;
    TestHub {
        practices: pb::practice_service_client::PracticeServiceClient::new(channel.clone()),
        admin: pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel.clone()),
        catalog: pb::catalog_service_client::CatalogServiceClient::new(channel.clone()),
        channel,
        hub: Some(hub),
        dir,
    }
}

/// The `mq` adapter's entry in `/adapters`.
async fn adapter_health(hub: &TestHub) -> Value {
    let addr = hub.hub.as_ref().unwrap().http_addr;
    let body: Value = reqwest::get(format!("http://{addr}/adapters"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["adapters"]["mq"].clone()
}

async fn wait_adapter(hub: &TestHub, state: &str, deadline: Duration) -> Value {
    let start = tokio::time::Instant::now();
    loop {
        let h = adapter_health(hub).await;
        if h["state"] == state {
            return h;
        }
        assert!(
            start.elapsed() < deadline,
            "adapter never became {state}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tari(key: &str) -> pb::SubmitPracticeRequest {
    pb::SubmitPracticeRequest {
        tenant_id: TENANT.into(),
        service_code: "TARI".into(),
        applicant: Some(mario()),
        data: Some(data(json!({"superficie_mq": 85.5}))),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

fn status_changes(p: &pb::Practice, to: pb::AdministrativeStatus) -> usize {
    p.events.iter().filter(|e| status_is(e, to)).count()
}

#[tokio::test]
async fn amqp_round_trip_carries_the_message_contract() {
    let names = Names::new("roundtrip");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let mut hub = start(&names, &proxy, Opts::default()).await;
    let vendor = MqVendor::start(&names).await;

    let p = hub.submit(tari("rt-1")).await;
    let done = hub
        .wait_status(TENANT, &p.id, pb::AdministrativeStatus::Approved)
        .await;
    let delivery = done.delivery.clone().unwrap();
    assert_eq!(delivery.status, pb::DeliveryStatus::Acknowledged as i32);
    let got = vendor.received();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.message_id, delivery.operation_id);
    assert_eq!(m.correlation_id, p.id);
    assert_eq!(m.reply_to, names.results);
    assert_eq!(m.content_type, "application/json");
    assert_eq!(m.kind, "raccordo.practice/v1");
    assert_eq!(m.delivery_mode, 2, "persistent");
    assert!(m.timestamp > 1_700_000_000, "timestamp {}", m.timestamp);
    assert_eq!(m.routing_key, "practices.016024.TARI");
    assert_eq!(m.headers["tenant"], TENANT);
    assert_eq!(m.headers["service"], "TARI");
    assert_eq!(m.headers["operation"], "submit");
    assert_eq!(m.body["practice_id"], p.id);
    assert_eq!(m.body["schema"], "raccordo.practice/v1");
    assert_eq!(m.body["data"]["superficie_mq"], 85.5);
    // The protocol number came back through the reply queue.
    assert!(
        done.external_refs
            .iter()
            .any(|r| r.kind == "protocol" && r.value == "2026/000001"),
        "{:?}",
        done.external_refs
    );
    assert_eq!(status_changes(&done, pb::AdministrativeStatus::Approved), 1);
    assert_eq!(broker.count(&names.dead).await, 0);

    drop(vendor);
    hub.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn delivery_is_acknowledged_only_after_the_broker_confirms() {
    let names = Names::new("confirms");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    // The inbox takes one message; the broker nacks any further publish.
    let opts = Opts {
        max_attempts: 100,
        inbox_extra: r#", max_length = 1, overflow = "reject-publish""#,
        ..Opts::default()
    };
    let mut hub = start(&names, &proxy, opts).await;

    let a = hub.submit(tari("first")).await;
    hub.wait_delivery(TENANT, &a.id, pb::DeliveryStatus::Acknowledged)
        .await;
    let b = hub.submit(tari("second")).await;
    let refused = hub
        .wait_practice(TENANT, &b.id, "a nacked attempt", |p| {
            p.delivery.as_ref().is_some_and(|d| d.attempts >= 2)
        })
        .await;
    let d = refused.delivery.clone().unwrap();
    assert!(d.last_error.contains("nack"), "{}", d.last_error);
    assert_eq!(d.failure_class, "transient");
    assert!(
        !refused
            .events
            .iter()
            .any(|e| delivery_is(e, pb::DeliveryStatus::Acknowledged)),
        "a nacked message must not be acknowledged"
    );
    assert_eq!(broker.count(&names.inbox).await, 1);

    // The vendor drains the inbox: the re-sent message is confirmed.
    let vendor = MqVendor::start(&names).await;
    for p in [&a, &b] {
        hub.wait_status(TENANT, &p.id, pb::AdministrativeStatus::Approved)
            .await;
    }
    let done = hub.get(TENANT, &b.id).await;
    let got: Vec<_> = vendor
        .received()
        .into_iter()
        .filter(|g| g.correlation_id == b.id)
        .collect();
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|g| g.message_id == done.delivery.as_ref().unwrap().operation_id),
        "re-sends keep the message_id"
    );

    drop(vendor);
    hub.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn unroutable_message_is_a_clear_permanent_failure() {
    let names = Names::new("unroutable");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let mut hub = start(&names, &proxy, Opts::default()).await;

    // Nothing is bound for practices.*.PASSO.
    let p = hub
        .submit(pb::SubmitPracticeRequest {
            tenant_id: TENANT.into(),
            service_code: "PASSO".into(),
            applicant: Some(mario()),
            idempotency_key: "passo".into(),
            ..Default::default()
        })
        .await;
    let dead = hub
        .wait_delivery(TENANT, &p.id, pb::DeliveryStatus::DeadLettered)
        .await;
    let d = dead.delivery.unwrap();
    assert_eq!(d.failure_class, "permanent");
    assert_eq!(d.attempts, 1);
    assert!(
        d.last_error.contains("unroutable")
            && d.last_error.contains("NO_ROUTE")
            && d.last_error.contains("practices.016024.PASSO"),
        "{}",
        d.last_error
    );
    assert_eq!(dead.status, pb::AdministrativeStatus::Submitted as i32);

    hub.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn unusable_replies_are_dead_lettered_with_the_reason_and_the_queue_flows() {
    let names = Names::new("malformed");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let mut hub = start(&names, &proxy, Opts::default()).await;

    let p = hub.submit(tari("bad-replies")).await;
    let request = broker.take(&names.inbox).await;
    assert_eq!(text(request.properties.correlation_id()), p.id);
    broker.reply(&p.id, "bad-1", b"not json at all").await;
    broker
        .reply("no-such-practice", "bad-2", br#"{"status":"APPROVED"}"#)
        .await;
    broker
        .reply(&p.id, "bad-3", br#"{"status":"WHATEVER"}"#)
        .await;
    broker
        .reply(
            &p.id,
            "good-1",
            br#"{"status":"APPROVED","protocol":"2026/42"}"#,
        )
        .await;

    let done = hub
        .wait_status(TENANT, &p.id, pb::AdministrativeStatus::Approved)
        .await;
    assert!(done.external_refs.iter().any(|r| r.value == "2026/42"));
    let mut dead = HashMap::new();
    for _ in 0..3 {
        let d = broker.take(&names.dead).await;
        let h = headers(&d.properties);
        dead.insert(
            text(d.properties.message_id()),
            (
                h["x-raccordo-reason"].clone(),
                h["x-raccordo-detail"].clone(),
                d.data.clone(),
            ),
        );
        assert_eq!(h["x-raccordo-adapter"], "mq");
        assert_eq!(h["x-raccordo-queue"], names.results);
    }
    assert_eq!(dead["bad-1"].0, "malformed");
    assert_eq!(
        dead["bad-1"].2, b"not json at all",
        "the copy keeps the body"
    );
    assert_eq!(dead["bad-2"].0, "uncorrelated");
    assert_eq!(dead["bad-3"].0, "malformed");
    assert!(dead["bad-3"].1.contains("WHATEVER"), "{}", dead["bad-3"].1);
    // Every reply was settled: nothing waits in the results queue.
    assert_eq!(broker.count(&names.results).await, 0);
    assert_eq!(broker.count(&names.dead).await, 0);

    hub.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_late_reply_is_recorded_as_an_anomaly_and_dead_lettered() {
    let names = Names::new("late");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let mut hub = start(&names, &proxy, Opts::default()).await;

    let p = hub.submit(tari("late-reply")).await;
    broker.take(&names.inbox).await;
    broker
        .reply(
            &p.id,
            "r-1",
            br#"{"status":"APPROVED","protocol":"2026/42"}"#,
        )
        .await;
    let done = hub
        .wait_status(TENANT, &p.id, pb::AdministrativeStatus::Approved)
        .await;
    // Another protocol number for the concluded practice: not merged.
    broker
        .reply(
            &p.id,
            "r-2",
            br#"{"status":"APPROVED","protocol":"2026/43"}"#,
        )
        .await;
    let d = broker.take(&names.dead).await;
    let h = headers(&d.properties);
    assert_eq!(text(d.properties.message_id()), "r-2");
    assert_eq!(h["x-raccordo-reason"], "anomaly_late");
    assert!(h["x-raccordo-detail"].contains("2026/43"), "{h:?}");
    let after = hub
        .wait_practice(TENANT, &p.id, "the anomaly recorded", |q| {
            q.events.len() > done.events.len()
        })
        .await;
    let last = after.events.last().unwrap();
    assert_eq!(last.kind, pb::EventKind::Anomaly as i32);
    let protocols: Vec<&str> = after
        .external_refs
        .iter()
        .filter(|r| r.kind == "protocol")
        .map(|r| r.value.as_str())
        .collect();
    assert_eq!(protocols, ["2026/42"]);
    assert_eq!(broker.count(&names.results).await, 0);

    hub.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_reply_carries_outcome_data_and_one_the_catalogue_refuses_is_dead_lettered() {
    let names = Names::new("outcome");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let mut hub = start(&names, &proxy, Opts::default()).await;

    let p = hub.submit(tari("outcome-data")).await;
    broker.take(&names.inbox).await;
    broker
        .reply(
            &p.id,
            "bad-1",
            br#"{"status":"APPROVED","outcome_data":{"importo_dovuto":"tanti"}}"#,
        )
        .await;
    broker
        .reply(
            &p.id,
            "good-1",
            br#"{"status":"APPROVED","outcome_data":{"importo_dovuto":120.5}}"#,
        )
        .await;
    let d = broker.take(&names.dead).await;
    let h = headers(&d.properties);
    assert_eq!(text(d.properties.message_id()), "bad-1");
    assert_eq!(h["x-raccordo-reason"], "refused");
    assert!(
        h["x-raccordo-detail"].contains("outcome_data.importo_dovuto: must be a number"),
        "{h:?}"
    );
    let done = hub
        .wait_status(TENANT, &p.id, pb::AdministrativeStatus::Approved)
        .await;
    let data = raccordo::grpc::convert::struct_to_json(done.outcome_data.clone().unwrap());
    assert_eq!(
        Value::Object(data),
        serde_json::json!({"importo_dovuto": 120.5})
    );
    let approved = done
        .events
        .iter()
        .find(|e| {
            e.kind == pb::EventKind::StatusChanged as i32
                && e.to_status == pb::AdministrativeStatus::Approved as i32
        })
        .unwrap();
    assert!(approved.outcome_data.is_some(), "the approval carries it");
    assert_eq!(broker.count(&names.results).await, 0);

    hub.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_reply_is_applied_once() {
    let names = Names::new("duplicate");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let mut hub = start(&names, &proxy, Opts::default()).await;

    let p = hub.submit(tari("dup")).await;
    broker.take(&names.inbox).await;
    let working = br#"{"status":"IN_PROGRESS"}"#;
    broker.reply(&p.id, "r-1", working).await;
    broker.reply(&p.id, "r-1", working).await;
    broker
        .reply(&p.id, "r-2", br#"{"status":"APPROVED"}"#)
        .await;
    let done = hub
        .wait_status(TENANT, &p.id, pb::AdministrativeStatus::Approved)
        .await;
    assert_eq!(
        status_changes(&done, pb::AdministrativeStatus::InProgress),
        1
    );
    assert_eq!(status_changes(&done, pb::AdministrativeStatus::Approved), 1);
    assert_eq!(
        broker.count(&names.dead).await,
        0,
        "a duplicate is not an error"
    );
    assert_eq!(broker.count(&names.results).await, 0);

    hub.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn passive_topology_waits_for_the_vendor_to_create_it() {
    let names = Names::new("passive");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let opts = Opts {
        topology_mode: "passive",
        ..Opts::default()
    };
    let mut hub = start_unchecked(&names, &proxy, opts).await;
    // Nothing exists yet: the adapter says what is missing and keeps trying.
    let down = wait_adapter(&hub, "down", DEADLINE).await;
    let reason = down["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("topology: cannot check exchange") && reason.contains(&names.exchange),
        "{reason}"
    );
    let p = hub.submit(tari("passive")).await;

    // The vendor creates its topology; the hub connects and delivers.
    let ch = &broker.ch;
    for (e, kind) in [
        (&names.exchange, lapin::ExchangeKind::Topic),
        (&names.dlx, lapin::ExchangeKind::Fanout),
    ] {
        ch.exchange_declare(
            e.as_str().into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for q in [&names.inbox, &names.results, &names.dead] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.queue_bind(
        names.inbox.as_str().into(),
        names.exchange.as_str().into(),
        "practices.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let vendor = MqVendor::start(&names).await;
    hub.wait_status(TENANT, &p.id, pb::AdministrativeStatus::Approved)
        .await;
    wait_adapter(&hub, "up", DEADLINE).await;

    drop(vendor);
    hub.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_withdrawal_is_published_as_its_own_operation() {
    let names = Names::new("withdraw");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let mut hub = start(&names, &proxy, Opts::default()).await;

    let p = hub.submit(tari("to-withdraw")).await;
    let submit = broker.take(&names.inbox).await;
    hub.practices
        .withdraw_practice(pb::WithdrawPracticeRequest {
            tenant_id: TENANT.into(),
            practice_id: p.id.clone(),
            reason: "presentata per errore".into(),
            operator_id: String::new(),
        })
        .await
        .unwrap();
    let withdrawal = broker.take(&names.inbox).await;
    assert_eq!(withdrawal.routing_key.as_str(), "withdrawals.016024.TARI");
    assert_eq!(headers(&withdrawal.properties)["operation"], "withdraw");
    assert_eq!(text(withdrawal.properties.correlation_id()), p.id);
    assert_ne!(
        text(withdrawal.properties.message_id()),
        text(submit.properties.message_id()),
        "each operation has its own id"
    );
    let body: Value = serde_json::from_slice(&withdrawal.data).unwrap();
    assert_eq!(body["operation"], "withdraw");
    assert_eq!(body["withdrawal_reason"], "presentata per errore");
    hub.wait_delivery(TENANT, &p.id, pb::DeliveryStatus::Acknowledged)
        .await;

    hub.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_deleted_reply_queue_is_declared_and_consumed_again() {
    let names = Names::new("requeue");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let mut hub = start(&names, &proxy, Opts::default()).await;

    // The broker cancels the hub's consumer when its queue goes away.
    broker
        .ch
        .queue_delete(names.results.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    // The hub notices, reconnects, declares the queue and consumes again.
    // (Until then a vendor's reply to the missing queue would be dropped
    // by the broker: that is the vendor's publish, not the hub's.)
    eventually("the reply queue consumed again", || async {
        // A failed passive declare closes its channel: one per probe.
        let probe = broker._conn.create_channel().await.unwrap();
        let q = probe
            .queue_declare(
                names.results.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .ok()?;
        let _ = probe.close(200, "probe".into()).await;
        (q.consumer_count() >= 1).then_some(())
    })
    .await;
    let vendor = MqVendor::start(&names).await;
    let p = hub.submit(tari("after-delete")).await;
    hub.wait_status(TENANT, &p.id, pb::AdministrativeStatus::Approved)
        .await;

    drop(vendor);
    hub.stop().await;
    broker.cleanup().await;
}

/// Closes the hub's connection from the broker side with `rabbitmqctl`, as
/// an operator (or a broker shutting down) would. Returns false when
/// `rabbitmqctl` cannot be used here.
fn broker_close(connection_name: &str) -> bool {
    let Ok(out) = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "--no-table-headers",
            "-q",
        ])
        .output()
    else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains(connection_name))
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert!(
        !pids.is_empty(),
        "the hub's connection is not listed:\n{listing}"
    );
    for pid in pids {
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by the test", "-q"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    true
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_is_recovered() {
    let names = Names::new("forced");
    let broker = Broker::connect(&names).await;
    let proxy = Proxy::start().await;
    let mut hub = start(&names, &proxy, Opts::default()).await;
    let vendor = MqVendor::start(&names).await;

    let first = hub.submit(tari("before")).await;
    hub.wait_status(TENANT, &first.id, pb::AdministrativeStatus::Approved)
        .await;
    if !broker_close(&names.prefix) {
        println!(
            "rabbitmqctl is not usable here: the forced close is covered by the proxy cuts only"
        );
    } else {
        let second = hub.submit(tari("after")).await;
        hub.wait_status(TENANT, &second.id, pb::AdministrativeStatus::Approved)
            .await;
        wait_adapter(&hub, "up", DEADLINE).await;
    }

    drop(vendor);
    hub.stop().await;
    broker.cleanup().await;
}

/// Lists every practice of the tenant in `status`.
async fn list_all(hub: &TestHub, status: pb::AdministrativeStatus) -> Vec<pb::Practice> {
    let mut client = hub.practices.clone();
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_practices(pb::ListPracticesRequest {
                tenant_id: TENANT.into(),
                status: status as i32,
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.practices);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_practices_survive_connection_cuts() {
    const TOTAL: usize = 1000;
    let names = Names::new("cuts");
    let broker = Broker::connect(&names).await;
    let proxy = Arc::new(Proxy::start().await);
    let opts = Opts {
        max_attempts: 1000,
        ..Opts::default()
    };
    let hub = start(&names, &proxy, opts).await;
    let vendor = Arc::new(MqVendor::start(&names).await);

    // Cut the hub's connection (publisher and consumer) as the vendor's
    // count passes each mark; at one mark, keep the broker unreachable
    // until the adapter reports it.
    let chaos = {
        let (proxy, vendor) = (Arc::clone(&proxy), Arc::clone(&vendor));
        let http = hub.hub.as_ref().unwrap().http_addr;
        tokio::spawn(async move {
            let mut cuts = Vec::new();
            let mut down_reason = String::new();
            for mark in [50, 200, 400, 550, 700, 850, 950] {
                let start = tokio::time::Instant::now();
                while vendor.count() < mark {
                    assert!(
                        start.elapsed() < Duration::from_secs(120),
                        "stuck before {mark}"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if mark == 400 {
                    proxy.block(true);
                    cuts.push(proxy.cut().await);
                    let start = tokio::time::Instant::now();
                    loop {
                        let body: Value = reqwest::get(format!("http://{http}/adapters"))
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                        if body["adapters"]["mq"]["state"] == "down" {
                            down_reason = body["adapters"]["mq"]["reason"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string();
                            break;
                        }
                        assert!(
                            start.elapsed() < Duration::from_secs(30),
                            "never down: {body}"
                        );
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    proxy.block(false);
                } else {
                    cuts.push(proxy.cut().await);
                }
            }
            (cuts, down_reason)
        })
    };

    let submitted: Vec<pb::Practice> = futures::stream::iter(0..TOTAL)
        .map(|i| {
            let mut client = hub.practices.clone();
            async move {
                client
                    .submit_practice(tari(&format!("cut-{i}")))
                    .await
                    .expect("submit")
                    .into_inner()
                    .practice
                    .unwrap()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(submitted.len(), TOTAL);

    let (cuts, down_reason) = chaos.await.expect("chaos task");
    assert!(
        down_reason.starts_with("broker unreachable"),
        "health while the broker was unreachable: {down_reason}"
    );
    let start = tokio::time::Instant::now();
    let approved = loop {
        let approved = list_all(&hub, pb::AdministrativeStatus::Approved).await;
        if approved.len() == TOTAL {
            break approved;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "only {} of {TOTAL} approved",
            approved.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    wait_adapter(&hub, "up", Duration::from_secs(20)).await;

    // Every practice reached the vendor under its operation id; anything
    // received twice is a re-send of the same message_id.
    let operations: HashSet<String> = approved
        .iter()
        .map(|p| p.delivery.as_ref().unwrap().operation_id.clone())
        .collect();
    assert_eq!(operations.len(), TOTAL);
    let received = vendor.received();
    let distinct: HashSet<String> = received.iter().map(|g| g.message_id.clone()).collect();
    assert_eq!(
        distinct, operations,
        "each practice delivered under its own message_id"
    );
    // The result of each was applied exactly once, however often it came.
    let mut client = hub.practices.clone();
    let counts: Vec<usize> = futures::stream::iter(approved.iter().map(|p| p.id.clone()))
        .map(|id| {
            let mut client = client.clone();
            async move {
                let p = get(&mut client, TENANT, &id).await;
                status_changes(&p, pb::AdministrativeStatus::Approved)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(counts.iter().all(|&c| c == 1), "a result applied twice");
    let _ = &mut client;
    assert_eq!(
        broker.count(&names.dead).await,
        0,
        "no reply was dead-lettered"
    );
    assert_eq!(broker.count(&names.results).await, 0);
    println!(
        "{TOTAL} practices, connections cut {} times ({:?} each), {} messages received ({} re-sends)",
        cuts.len(),
        cuts,
        received.len(),
        received.len() - TOTAL
    );

    hub.stop().await;
    broker.cleanup().await;
}
