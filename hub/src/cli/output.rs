//! Printing API replies for people (text) or programs (`--json`).

use crate::grpc::convert::from_timestamp;
use prost_types::Timestamp;
use raccordo_proto::v1 as pb;
use serde_json::{Value, json};

fn ts(t: &Option<Timestamp>) -> Value {
    t.as_ref()
        .and_then(from_timestamp)
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
}

fn status_name(v: i32) -> &'static str {
    pb::AdministrativeStatus::try_from(v).map_or("?", |s| s.as_str_name())
}

fn delivery_name(v: i32) -> &'static str {
    pb::DeliveryStatus::try_from(v).map_or("?", |s| s.as_str_name())
}

fn applicant_id(p: &pb::Practice) -> String {
    match p.applicant.as_ref().and_then(|a| a.subject.as_ref()) {
        Some(pb::applicant::Subject::Person(x)) => x.fiscal_code.clone(),
        Some(pb::applicant::Subject::Company(c)) => c.vat_number.clone(),
        None => String::new(),
    }
}

fn event_json(e: &pb::PracticeEvent) -> Value {
    let kind = pb::EventKind::try_from(e.kind).map_or("?", |k| k.as_str_name());
    json!({
        "practice_id": e.practice_id, "sequence": e.sequence, "cursor": e.cursor, "kind": kind,
        "from_status": (e.from_status != 0).then(|| status_name(e.from_status)),
        "to_status": (e.to_status != 0).then(|| status_name(e.to_status)),
        "from_delivery": (e.from_delivery != 0).then(|| delivery_name(e.from_delivery)),
        "to_delivery": (e.to_delivery != 0).then(|| delivery_name(e.to_delivery)),
        "reason": e.reason, "vendor_code": e.vendor_code, "actor": e.actor,
        "occurred_at": ts(&e.occurred_at), "recorded_at": ts(&e.recorded_at),
        "outcome_data": outcome_data_json(e.outcome_data.as_ref()),
    })
}

/// Outcome data as JSON (`null` when there is none).
fn outcome_data_json(data: Option<&prost_types::Struct>) -> Value {
    data.map_or(Value::Null, |s| {
        Value::Object(crate::grpc::convert::struct_to_json(s.clone()))
    })
}

fn practice_json(p: &pb::Practice) -> Value {
    json!({
        "id": p.id, "tenant_id": p.tenant_id, "service_code": p.service_code,
        "applicant_id": applicant_id(p), "status": status_name(p.status),
        "delivery": p.delivery.as_ref().map(|d| json!({
            "status": delivery_name(d.status), "operation_id": d.operation_id, "adapter": d.adapter,
            "attempts": d.attempts, "next_attempt_at": ts(&d.next_attempt_at),
            "last_error": d.last_error, "failure_class": d.failure_class,
        })),
        "outcome": p.outcome.as_ref().map(|o| json!({
            "status": status_name(o.status), "reason": o.reason, "vendor_code": o.vendor_code,
            "documents": o.documents.iter().map(|d| json!({
                "name": d.name, "media_type": d.media_type, "size_bytes": d.size_bytes, "sha256": d.sha256,
            })).collect::<Vec<_>>(),
        })),
        "external_refs": p.external_refs.iter().map(|r| json!({"kind": r.kind, "value": r.value, "system": r.system})).collect::<Vec<_>>(),
        "outcome_data": outcome_data_json(p.outcome_data.as_ref()),
        "received_at": ts(&p.received_at), "legal_deadline": ts(&p.legal_deadline), "concluded_at": ts(&p.concluded_at),
        "events": p.events.iter().map(event_json).collect::<Vec<_>>(),
    })
}

fn event_line(e: &pb::PracticeEvent) -> String {
    let change = if e.to_status != 0 {
        format!(
            "status   {} -> {}",
            if e.from_status == 0 {
                "-"
            } else {
                status_name(e.from_status)
            },
            status_name(e.to_status)
        )
    } else if e.kind == pb::EventKind::OutcomeDataChanged as i32 {
        "outcome data".to_string()
    } else {
        format!(
            "delivery {} -> {}",
            if e.from_delivery == 0 {
                "-"
            } else {
                delivery_name(e.from_delivery)
            },
            delivery_name(e.to_delivery)
        )
    };
    let anomaly = if e.kind == pb::EventKind::Anomaly as i32 {
        " [ANOMALY]"
    } else {
        ""
    };
    let when = ts(&e.recorded_at);
    let reason = if e.reason.is_empty() {
        String::new()
    } else {
        format!("  ({})", e.reason)
    };
    let data = match outcome_data_json(e.outcome_data.as_ref()) {
        Value::Null => String::new(),
        data => format!("  {data}"),
    };
    format!(
        "  #{:<3} {} {change}{anomaly}  by {}{reason}{data}",
        e.sequence,
        when.as_str().unwrap_or(""),
        e.actor
    )
}

/// One practice.
pub fn practice(p: &pb::Practice, as_json: bool) {
    if as_json {
        println!("{}", practice_json(p));
        return;
    }
    println!(
        "practice {}  tenant {}  service {}",
        p.id, p.tenant_id, p.service_code
    );
    println!("  status    {}", status_name(p.status));
    if let Some(d) = &p.delivery {
        let mut line = format!(
            "  delivery  {} via {} (attempts {})",
            delivery_name(d.status),
            d.adapter,
            d.attempts
        );
        if !d.last_error.is_empty() {
            line.push_str(&format!(", last error: {}", d.last_error));
        }
        println!("{line}");
    }
    for r in &p.external_refs {
        println!("  ref       {} {} ({})", r.kind, r.value, r.system);
    }
    if let Value::Object(data) = outcome_data_json(p.outcome_data.as_ref()) {
        for (name, value) in data {
            println!("  data      {name} = {value}");
        }
    }
    if let Some(o) = &p.outcome {
        let reason = if o.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", o.reason)
        };
        println!("  outcome   {}{reason}", status_name(o.status));
        for d in &o.documents {
            println!(
                "  document  {} ({}, {} bytes, sha256 {})",
                d.name, d.media_type, d.size_bytes, d.sha256
            );
        }
    }
    println!("  received  {}", ts(&p.received_at).as_str().unwrap_or(""));
    if let Some(dl) = ts(&p.legal_deadline).as_str() {
        println!("  deadline  {dl}");
    }
    if !p.events.is_empty() {
        println!("  events:");
        for e in &p.events {
            println!("{}", event_line(e));
        }
    }
}

/// A page of practices.
pub fn practice_list(r: &pb::ListPracticesResponse, as_json: bool) {
    if as_json {
        let items: Vec<Value> = r.practices.iter().map(practice_json).collect();
        println!(
            "{}",
            json!({"practices": items, "next_page_token": r.next_page_token})
        );
        return;
    }
    for p in &r.practices {
        println!(
            "{}  {}  {:<12} {:<22} {}",
            p.id,
            ts(&p.received_at).as_str().unwrap_or(""),
            p.service_code,
            status_name(p.status),
            p.delivery.as_ref().map_or("", |d| delivery_name(d.status))
        );
    }
    if !r.next_page_token.is_empty() {
        println!("next page: --page-token {}", r.next_page_token);
    }
}

/// One event of a stream.
pub fn event(e: &pb::PracticeEvent, as_json: bool) {
    if as_json {
        println!("{}", event_json(e));
    } else {
        println!("{}", event_line(e));
    }
}

/// Dead letters.
pub fn dead_letters(items: &[pb::DeadLetter], as_json: bool) {
    for d in items {
        if as_json {
            println!(
                "{}",
                json!({
                    "operation_id": d.operation_id, "practice_id": d.practice_id, "tenant_id": d.tenant_id,
                    "service_code": d.service_code, "adapter": d.adapter, "operation": d.operation,
                    "attempts": d.attempts, "last_error": d.last_error, "failure_class": d.failure_class,
                    "dead_lettered_at": ts(&d.dead_lettered_at),
                })
            );
        } else {
            println!(
                "{}  practice {}  tenant {}  {} via {}  after {} attempt(s): {} ({})",
                d.operation_id,
                d.practice_id,
                d.tenant_id,
                d.operation,
                d.adapter,
                d.attempts,
                d.last_error,
                d.failure_class
            );
        }
    }
    if items.is_empty() && !as_json {
        println!("no dead-lettered deliveries");
    }
}

/// `raccordo status`.
pub fn hub_status(s: &pb::HubStatus, as_json: bool) {
    // While the store does not answer the counts are unknown (the hub
    // sends zeros): they are left out rather than shown as zeros.
    let backlog_known = s.store_state == "up";
    if as_json {
        let adapters: Vec<Value> = s
            .adapters
            .iter()
            .map(|a| {
                let mut v = json!({
                    "name": a.name, "kind": a.kind, "state": a.state,
                    "max_concurrency": a.max_concurrency,
                });
                if !a.reason.is_empty() {
                    v["reason"] = json!(a.reason);
                }
                if backlog_known {
                    v["jobs_due"] = json!(a.jobs_due);
                    v["jobs_scheduled"] = json!(a.jobs_scheduled);
                    v["jobs_in_flight"] = json!(a.jobs_in_flight);
                    v["dead_letters"] = json!(a.dead_letters);
                    if a.jobs_due > 0 {
                        v["oldest_due_age_seconds"] = json!(a.oldest_due_age_seconds);
                    }
                    v["anomalies"] = json!(a.anomalies);
                    if a.last_anomaly_at.is_some() {
                        v["last_anomaly_at"] = ts(&a.last_anomaly_at);
                    }
                }
                v
            })
            .collect();
        let mut store = json!({"state": s.store_state});
        if !s.store_reason.is_empty() {
            store["reason"] = json!(s.store_reason);
        }
        println!(
            "{}",
            json!({
                "version": s.version, "instance_id": s.instance_id,
                "uptime_seconds": s.uptime_seconds, "ready": s.ready,
                "store": store,
                "adapters": adapters,
            })
        );
        return;
    }
    println!(
        "raccordo {}  up {}  {}",
        s.version,
        humantime::format_duration(std::time::Duration::from_secs(s.uptime_seconds as u64)),
        if s.ready { "READY" } else { "NOT READY" }
    );
    println!("instance   {}", s.instance_id);
    if s.store_reason.is_empty() {
        println!("store      {}", s.store_state);
    } else {
        println!("store      {}: {}", s.store_state, s.store_reason);
    }
    println!(
        "{:<16} {:<6} {:<9} {:>6} {:>9} {:>9} {:>5} {:>12} {:>9}",
        "ADAPTER",
        "KIND",
        "STATE",
        "DUE",
        "SCHEDULED",
        "IN FLIGHT",
        "DEAD",
        "OLDEST DUE",
        "ANOMALIES"
    );
    for a in &s.adapters {
        let count = |n: i64| {
            if backlog_known {
                n.to_string()
            } else {
                "-".to_string()
            }
        };
        let oldest = if !backlog_known || a.jobs_due == 0 {
            "-".to_string()
        } else {
            humantime::format_duration(std::time::Duration::from_secs(
                a.oldest_due_age_seconds as u64,
            ))
            .to_string()
        };
        println!(
            "{:<16} {:<6} {:<9} {:>6} {:>9} {:>5}/{:<3} {:>5} {:>12} {:>9}",
            a.name,
            a.kind,
            a.state,
            count(a.jobs_due),
            count(a.jobs_scheduled),
            count(a.jobs_in_flight),
            a.max_concurrency,
            count(a.dead_letters),
            oldest,
            count(a.anomalies)
        );
        if !a.reason.is_empty() {
            println!("  {}: {}", a.name, a.reason);
        }
        if let Value::String(at) = ts(&a.last_anomaly_at) {
            println!(
                "  {}: last anomaly recorded at {at} (the practice's events say what arrived)",
                a.name
            );
        }
    }
    let down: Vec<&str> = s
        .adapters
        .iter()
        .filter(|a| a.state == "down")
        .map(|a| a.name.as_str())
        .collect();
    if !down.is_empty() {
        println!(
            "{} adapter instance(s) down: {} (their deliveries wait in the outbox)",
            down.len(),
            down.join(", ")
        );
    }
}
