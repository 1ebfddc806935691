//! Declares (or passively checks) the configured exchanges, queues and
//! bindings on every connect, so a broker that lost its definitions (a new
//! node, a reset) gets them back before anything is published.

use super::config::{QueueDecl, QueueType, Topology, TopologyMode};
use crate::adapter::AdapterError;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// Checks what the types cannot: names, exchange types, queue arguments.
pub fn validate(t: &Topology) -> Result<(), AdapterError> {
    for (i, e) in t.exchanges.iter().enumerate() {
        let key = format!("topology.exchanges[{i}]");
        short(&e.name).map_err(|r| AdapterError::new(format!("{key}.name"), r))?;
        if e.name.is_empty() || e.name.starts_with("amq.") {
            return Err(AdapterError::new(
                format!("{key}.name"),
                "must be set and must not start with 'amq.' (reserved by the broker)",
            ));
        }
        if !matches!(e.kind.as_str(), "direct" | "fanout" | "topic" | "headers") {
            return Err(AdapterError::new(
                format!("{key}.type"),
                format!("'{}' is not one of direct, fanout, topic, headers", e.kind),
            ));
        }
    }
    for (i, q) in t.queues.iter().enumerate() {
        let key = format!("topology.queues[{i}]");
        if q.name.is_empty() {
            return Err(AdapterError::new(format!("{key}.name"), "is empty"));
        }
        short(&q.name).map_err(|r| AdapterError::new(format!("{key}.name"), r))?;
        if q.kind == QueueType::Quorum && !q.durable {
            return Err(AdapterError::new(
                format!("{key}.durable"),
                "quorum queues are always durable",
            ));
        }
        if let Some(o) = &q.overflow
            && !matches!(
                o.as_str(),
                "drop-head" | "reject-publish" | "reject-publish-dlx"
            )
        {
            return Err(AdapterError::new(
                format!("{key}.overflow"),
                format!("'{o}' is not one of drop-head, reject-publish, reject-publish-dlx"),
            ));
        }
        queue_arguments(q).map_err(|(k, r)| AdapterError::new(format!("{key}.{k}"), r))?;
    }
    for (i, b) in t.bindings.iter().enumerate() {
        let key = format!("topology.bindings[{i}]");
        for (field, value) in [
            ("exchange", &b.exchange),
            ("queue", &b.queue),
            ("routing_key", &b.routing_key),
        ] {
            short(value).map_err(|r| AdapterError::new(format!("{key}.{field}"), r))?;
        }
    }
    Ok(())
}

/// Declares or checks everything on `channel`. A failure closes the
/// channel; the error names the entity.
pub async fn apply(channel: &Channel, t: &Topology) -> Result<(), String> {
    let passive = t.mode == TopologyMode::Passive;
    let what = if passive { "check" } else { "declare" };
    for e in &t.exchanges {
        let kind = match e.kind.as_str() {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "headers" => ExchangeKind::Headers,
            _ => ExchangeKind::Topic,
        };
        let options = ExchangeDeclareOptions {
            passive,
            durable: e.durable,
            ..Default::default()
        };
        channel
            .exchange_declare(e.name.as_str().into(), kind, options, FieldTable::default())
            .await
            .map_err(|err| format!("cannot {what} exchange '{}': {err}", e.name))?;
    }
    for q in &t.queues {
        let options = QueueDeclareOptions {
            passive,
            durable: q.durable,
            ..Default::default()
        };
        let args = if passive {
            FieldTable::default()
        } else {
            queue_arguments(q).map_err(|(k, r)| format!("queue '{}' {k}: {r}", q.name))?
        };
        channel
            .queue_declare(q.name.as_str().into(), options, args)
            .await
            .map_err(|err| format!("cannot {what} queue '{}': {err}", q.name))?;
    }
    // A binding cannot be checked passively in AMQP 0-9-1: the vendor owns it.
    if !passive {
        for b in &t.bindings {
            channel
                .queue_bind(
                    b.queue.as_str().into(),
                    b.exchange.as_str().into(),
                    b.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|err| {
                    format!(
                        "cannot bind queue '{}' to exchange '{}' with '{}': {err}",
                        b.queue, b.exchange, b.routing_key
                    )
                })?;
        }
    }
    Ok(())
}

fn short(s: &str) -> Result<ShortString, String> {
    ShortString::try_new(s).map_err(|e| e.to_string())
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn queue_arguments(q: &QueueDecl) -> Result<FieldTable, (String, String)> {
    let mut args = FieldTable::default();
    if q.kind == QueueType::Quorum {
        args.insert("x-queue-type".into(), long("quorum"));
    }
    if let Some(dlx) = &q.dead_letter_exchange {
        args.insert("x-dead-letter-exchange".into(), long(dlx));
    }
    if let Some(rk) = &q.dead_letter_routing_key {
        args.insert("x-dead-letter-routing-key".into(), long(rk));
    }
    if let Some(ttl) = q.message_ttl {
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(ttl.as_millis().min(i64::MAX as u128) as i64),
        );
    }
    if let Some(max) = q.max_length {
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(max.min(i64::MAX as u64) as i64),
        );
    }
    if let Some(o) = &q.overflow {
        args.insert("x-overflow".into(), long(o));
    }
    for (k, v) in &q.arguments {
        let key = format!("arguments.{k}");
        let name = ShortString::try_new(k.as_str()).map_err(|e| (key.clone(), e.to_string()))?;
        let value = match v {
            serde_json::Value::String(s) => long(s),
            serde_json::Value::Bool(b) => AMQPValue::Boolean(*b),
            serde_json::Value::Number(n) if n.is_i64() => {
                AMQPValue::LongLongInt(n.as_i64().unwrap_or_default())
            }
            serde_json::Value::Number(n) => AMQPValue::Double(n.as_f64().unwrap_or_default()),
            _ => return Err((key, "must be a string, a number or a boolean".into())),
        };
        args.insert(name, value);
    }
    Ok(args)
}
