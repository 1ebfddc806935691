//! The reply consumer: each reply is applied through the hub's sink and
//! acknowledged only after the sink stored it. A reply that can never be
//! applied is re-published, confirmed, to the dead-letter exchange with
//! headers saying why, and only then acknowledged: the queue keeps flowing
//! and nothing is acknowledged-and-lost.

use super::link::{Link, Session};
use super::reply::{self, Unusable};
use crate::adapter::InboundError;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Confirmation, Consumer};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Opens the consumer on `session`; the task returns why it stopped.
pub(crate) async fn start(
    link: Arc<Link>,
    session: Arc<Session>,
) -> Result<JoinHandle<String>, String> {
    let Some(consume) = link.config.consume.as_ref() else {
        return Err("no consume section".into());
    };
    let channel = session
        .conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open the consumer channel: {e}"))?;
    channel
        .basic_qos(consume.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| format!("cannot set prefetch: {e}"))?;
    let consumer = channel
        .basic_consume(
            consume.queue.as_str().into(),
            // An over-long instance name must not fail the consumer: the
            // broker then picks the tag.
            ShortString::try_new(format!("raccordo-{}-{}", link.name, session.id))
                .unwrap_or_default(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot consume from queue '{}': {e}", consume.queue))?;
    Ok(tokio::spawn(run(link, session, consumer)))
}

async fn run(link: Arc<Link>, session: Arc<Session>, mut consumer: Consumer) -> String {
    // Replies about one practice are applied in the order they were queued
    // (IN_PROGRESS before APPROVED); different practices go in parallel.
    // Lanes are keyed by `correlation_id`; at most `prefetch` replies are
    // unacknowledged, so the lanes' queues never hold more than that.
    let prefetch = link
        .config
        .consume
        .as_ref()
        .map_or(1, |c| usize::from(c.prefetch));
    let lanes: Vec<mpsc::Sender<Delivery>> = (0..prefetch.clamp(1, 8))
        .map(|_| {
            let (tx, mut rx) = mpsc::channel::<Delivery>(prefetch.max(1));
            let (link, session) = (Arc::clone(&link), Arc::clone(&session));
            tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    handle(&link, &session, d).await;
                }
            });
            tx
        })
        .collect();
    while let Some(delivery) = consumer.next().await {
        match delivery {
            Ok(d) => {
                let lane = lane_of(&d, lanes.len());
                if lanes[lane].send(d).await.is_err() {
                    return "a reply lane stopped".into();
                }
            }
            Err(e) => return format!("the reply consumer failed: {e}"),
        }
    }
    "the broker cancelled the reply consumer".into()
}

fn lane_of(d: &Delivery, lanes: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let key = d
        .properties
        .correlation_id()
        .as_ref()
        .map(|c| c.as_str())
        .unwrap_or_default();
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % lanes as u64) as usize
}

enum Disposition {
    Ack,
    DeadLetter(Unusable),
    Requeue(String),
}

async fn handle(link: &Link, session: &Session, delivery: Delivery) {
    let Some(sink) = link.sink.get() else { return };
    let Some(consume) = link.config.consume.as_ref() else {
        return;
    };
    let disposition = match reply::parse(
        &link.name,
        &link.mapping,
        &delivery.properties,
        &delivery.data,
    ) {
        Err(u) => Disposition::DeadLetter(u),
        Ok(result) => match sink.apply(result).await {
            Ok(_) => Disposition::Ack,
            Err(InboundError::Uncorrelated(m)) => Disposition::DeadLetter(Unusable {
                class: "uncorrelated",
                detail: format!("no practice matches {m}"),
            }),
            Err(InboundError::Refused(m)) => Disposition::DeadLetter(Unusable {
                class: "refused",
                detail: m,
            }),
            // Recorded on the practice as an ANOMALY event, not applied:
            // the vendor finds it, with what it said, in the dead letters.
            Err(InboundError::Anomaly(a)) => Disposition::DeadLetter(Unusable {
                class: match a.class {
                    crate::adapter::AnomalyClass::Late => "anomaly_late",
                    crate::adapter::AnomalyClass::Contradictory => "anomaly_contradictory",
                },
                detail: a.reason,
            }),
            Err(InboundError::Unavailable(m)) => Disposition::Requeue(m),
        },
    };
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let settled = match disposition {
        Disposition::Ack => delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Disposition::DeadLetter(why) => match dead_letter(link, session, &delivery, &why).await {
            Ok(()) => {
                // The detail can quote the reply: it travels with the
                // dead-lettered message, not into the log.
                tracing::warn!(adapter = %link.name, %message_id, class = why.class,
                    "reply dead-lettered to '{}'", consume.dead_letter_exchange);
                delivery.ack(BasicAckOptions::default()).await.map(|_| ())
            }
            Err(e) => {
                tracing::error!(adapter = %link.name, %message_id, class = why.class,
                    "cannot dead-letter an unusable reply: {e}; handing it back to the broker");
                requeue(&delivery, consume.requeue_delay).await
            }
        },
        Disposition::Requeue(m) => {
            tracing::warn!(adapter = %link.name, %message_id, "the hub cannot store a reply now ({m}); handing it back to the broker");
            requeue(&delivery, consume.requeue_delay).await
        }
    };
    if let Err(e) = settled {
        // The broker redelivers it on the next connection; its receipt makes
        // the second application a no-op.
        tracing::warn!(adapter = %link.name, %message_id, "cannot settle a reply: {e}; it will be redelivered");
        link.report_broken();
    }
}

async fn requeue(delivery: &Delivery, delay: std::time::Duration) -> Result<(), lapin::Error> {
    // A short pause so a struggling store is not hammered by the same reply.
    tokio::time::sleep(delay).await;
    delivery
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .map(|_| ())
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Publishes a copy of `delivery` with `x-raccordo-*` headers and waits
/// for the broker's confirm.
async fn dead_letter(
    link: &Link,
    session: &Session,
    delivery: &Delivery,
    why: &Unusable,
) -> Result<(), String> {
    let consume = link.config.consume.as_ref().ok_or("no consume section")?;
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let detail: String = why.detail.chars().take(1000).collect();
    headers.insert("x-raccordo-reason".into(), long(why.class));
    headers.insert("x-raccordo-detail".into(), long(&detail));
    headers.insert("x-raccordo-adapter".into(), long(&link.name));
    headers.insert("x-raccordo-queue".into(), long(&consume.queue));
    headers.insert(
        "x-raccordo-dead-lettered-at".into(),
        long(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    let properties = delivery.properties.clone().with_headers(headers);
    let routing_key = consume
        .dead_letter_routing_key
        .clone()
        .unwrap_or_else(|| consume.queue.clone());
    let (channel, _permit) = session.checkout().await.map_err(|e| e.to_string())?;
    let publish = async {
        channel
            .basic_publish(
                consume.dead_letter_exchange.as_str().into(),
                routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &delivery.data,
                properties,
            )
            .await?
            .await
    };
    let confirmation = tokio::time::timeout(link.config.confirm_timeout, publish)
        .await
        .map_err(|_| "no confirm from the broker".to_string())?
        .map_err(|e| e.to_string())?;
    session.checkin(channel);
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(r)) => Err(format!(
            "dead-letter exchange '{}' routes nothing for '{routing_key}' ({} {})",
            consume.dead_letter_exchange, r.reply_code, r.reply_text
        )),
        Confirmation::Nack(_) => Err("the broker refused the dead-letter copy (nack)".into()),
        Confirmation::NotRequested => Err("the channel is not in confirm mode".into()),
    }
}
