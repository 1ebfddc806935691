//! Printing API replies for people (text: tables, times in the tenant's
//! time zone, colour on a terminal) or programs (`--json`: the API's
//! canonical JSON, times in RFC 3339 UTC; lists as one JSON array, `[]`
//! when empty; streams as one JSON object per line).

use super::practice_json::to_json;
use super::style::{Style, table};
use prost_types::Timestamp;
use raccordo_proto::v1 as pb;
use serde_json::{Value, json};

/// Text or JSON, and how to show text.
pub struct Printer {
    pub json: bool,
    pub style: Style,
}

fn status_name(v: i32) -> &'static str {
    pb::AdministrativeStatus::try_from(v).map_or("?", |s| s.as_str_name())
}

fn delivery_name(v: i32) -> &'static str {
    pb::DeliveryStatus::try_from(v).map_or("?", |s| s.as_str_name())
}

fn mode_name(v: i32) -> &'static str {
    match pb::InteractionMode::try_from(v) {
        Ok(pb::InteractionMode::Sync) => "sync",
        Ok(pb::InteractionMode::Deferred) => "deferred",
        Ok(pb::InteractionMode::Auto) => "auto",
        _ => "-",
    }
}

fn applicant_id(p: &pb::Practice) -> String {
    match p.applicant.as_ref().and_then(|a| a.subject.as_ref()) {
        Some(pb::applicant::Subject::Person(x)) => x.fiscal_code.clone(),
        Some(pb::applicant::Subject::Company(c)) => c.vat_number.clone(),
        None => String::new(),
    }
}

/// A time for programs: RFC 3339 in UTC, as the canonical JSON writes it.
fn rfc3339(t: &Option<Timestamp>) -> Value {
    t.as_ref()
        .and_then(crate::grpc::convert::from_timestamp)
        .map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        })
}

/// Outcome data as JSON (`null` when there is none).
fn outcome_data_json(data: Option<&prost_types::Struct>) -> Value {
    data.map_or(Value::Null, |s| {
        Value::Object(crate::grpc::convert::struct_to_json(s.clone()))
    })
}

/// A JSON array of canonical messages.
fn json_array<T: prost::Message>(name: &str, items: &[T]) -> Value {
    Value::Array(items.iter().map(|m| to_json(name, m)).collect())
}

impl Printer {
    fn time(&self, t: &Option<Timestamp>) -> String {
        self.style.time(t.as_ref())
    }

    fn event_line(&self, e: &pb::PracticeEvent) -> String {
        let change = if e.to_status != 0 {
            format!(
                "status   {} -> {}",
                if e.from_status == 0 {
                    "-"
                } else {
                    status_name(e.from_status)
                },
                self.style.status(status_name(e.to_status))
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
                self.style.status(delivery_name(e.to_delivery))
            )
        };
        let anomaly = if e.kind == pb::EventKind::Anomaly as i32 {
            " [ANOMALY]"
        } else {
            ""
        };
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
            self.time(&e.recorded_at),
            e.actor
        )
    }

    /// One practice.
    pub fn practice(&self, p: &pb::Practice) {
        if self.json {
            println!("{}", to_json("Practice", p));
            return;
        }
        println!(
            "practice {}  tenant {}  service {}",
            p.id, p.tenant_id, p.service_code
        );
        println!("  status    {}", self.style.status(status_name(p.status)));
        if let Some(d) = &p.delivery {
            let mut line = format!(
                "  delivery  {} via {} (attempts {})",
                self.style.status(delivery_name(d.status)),
                d.adapter,
                d.attempts
            );
            if !d.last_error.is_empty() {
                line.push_str(&format!(", last error: {}", d.last_error));
            }
            if d.next_attempt_at.is_some() {
                line.push_str(&format!(", next attempt {}", self.time(&d.next_attempt_at)));
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
            println!(
                "  outcome   {}{reason}",
                self.style.status(status_name(o.status))
            );
            for d in &o.documents {
                println!(
                    "  document  {} ({}, {} bytes, sha256 {})",
                    d.name, d.media_type, d.size_bytes, d.sha256
                );
            }
        }
        println!("  received  {}", self.time(&p.received_at));
        if p.legal_deadline.is_some() {
            println!("  deadline  {}", self.time(&p.legal_deadline));
        }
        if p.concluded_at.is_some() {
            println!("  concluded {}", self.time(&p.concluded_at));
        }
        if !p.events.is_empty() {
            println!("  events:");
            for e in &p.events {
                println!("{}", self.event_line(e));
            }
        }
    }

    /// A page of practices; `filters` says what was asked, for the message
    /// when nothing matches.
    pub fn practice_list(&self, r: &pb::ListPracticesResponse, filters: &str) {
        if self.json {
            println!("{}", json_array("Practice", &r.practices));
        } else if r.practices.is_empty() {
            println!("no practice matches ({filters})");
        } else {
            let rows: Vec<Vec<String>> = r
                .practices
                .iter()
                .map(|p| {
                    vec![
                        p.id.clone(),
                        self.time(&p.received_at),
                        p.service_code.clone(),
                        applicant_id(p),
                        self.style.status(status_name(p.status)),
                        p.delivery.as_ref().map_or(String::new(), |d| {
                            self.style.status(delivery_name(d.status))
                        }),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &self.style,
                    &[
                        "ID",
                        "RECEIVED",
                        "SERVICE",
                        "APPLICANT",
                        "STATUS",
                        "DELIVERY"
                    ],
                    &rows
                )
            );
        }
        if !r.next_page_token.is_empty() {
            // On standard error with --json, so the output stays one array.
            let line = format!("next page: --page-token {}", r.next_page_token);
            if self.json {
                eprintln!("{line}");
            } else {
                println!("{}", self.style.dim(&line));
            }
        }
    }

    /// One event of a stream.
    pub fn event(&self, e: &pb::PracticeEvent) {
        if self.json {
            println!("{}", to_json("PracticeEvent", e));
        } else {
            println!("{}", self.event_line(e));
        }
    }

    /// Dead letters.
    pub fn dead_letters(&self, items: &[pb::DeadLetter], filters: &str) {
        if self.json {
            println!("{}", json_array("DeadLetter", items));
            return;
        }
        if items.is_empty() {
            println!("no dead-lettered deliveries ({filters})");
            return;
        }
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|d| {
                vec![
                    d.operation_id.clone(),
                    d.practice_id.clone(),
                    d.tenant_id.clone(),
                    d.service_code.clone(),
                    d.adapter.clone(),
                    d.operation.clone(),
                    d.attempts.to_string(),
                    self.time(&d.dead_lettered_at),
                    format!("{} ({})", d.last_error, d.failure_class),
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &self.style,
                &[
                    "OPERATION",
                    "PRACTICE",
                    "TENANT",
                    "SERVICE",
                    "ADAPTER",
                    "OP",
                    "ATTEMPTS",
                    "DEAD-LETTERED",
                    "LAST ERROR",
                ],
                &rows
            )
        );
    }

    /// One dead letter (a replay's answer).
    pub fn dead_letter(&self, d: &pb::DeadLetter) {
        if self.json {
            println!("{}", to_json("DeadLetter", d));
        } else {
            println!(
                "requeued {} (practice {}, adapter {})",
                d.operation_id, d.practice_id, d.adapter
            );
        }
    }

    /// A tenant's catalogue.
    pub fn services(&self, tenant: &str, services: &[pb::Service]) {
        if self.json {
            println!("{}", json_array("Service", services));
            return;
        }
        if services.is_empty() {
            println!("tenant {tenant} offers no service on this hub");
            return;
        }
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| {
                let fields: Vec<String> = s
                    .fields
                    .iter()
                    .map(|f| {
                        format!(
                            "{}{}:{}",
                            f.name,
                            if f.required { "*" } else { "" },
                            f.r#type
                        )
                    })
                    .collect();
                vec![
                    s.code.clone(),
                    mode_name(s.mode).to_string(),
                    format!("{} days", s.legal_term_days),
                    s.administrative_regime.clone(),
                    s.title.clone(),
                    fields.join(", "),
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                &self.style,
                &[
                    "SERVICE",
                    "MODE",
                    "TERM",
                    "REGIME",
                    "TITLE",
                    "FIELDS (* required)"
                ],
                &rows
            )
        );
    }

    /// `raccordo status`.
    pub fn hub_status(&self, s: &pb::HubStatus) {
        // While the store does not answer the counts are unknown (the hub
        // sends zeros): they are left out rather than shown as zeros.
        let backlog_known = s.store_state == "up";
        if self.json {
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
                            v["last_anomaly_at"] = rfc3339(&a.last_anomaly_at);
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
        let style = &self.style;
        println!(
            "raccordo {}  up {}  {}",
            s.version,
            humantime::format_duration(std::time::Duration::from_secs(s.uptime_seconds as u64)),
            style.status(if s.ready { "READY" } else { "NOT READY" })
        );
        println!("instance   {}", s.instance_id);
        if s.store_reason.is_empty() {
            println!("store      {}", style.status(&s.store_state));
        } else {
            println!(
                "store      {}: {}",
                style.status(&s.store_state),
                s.store_reason
            );
        }
        let count = |n: i64| {
            if backlog_known {
                n.to_string()
            } else {
                "-".to_string()
            }
        };
        let rows: Vec<Vec<String>> = s
            .adapters
            .iter()
            .map(|a| {
                let oldest = if !backlog_known || a.jobs_due == 0 {
                    "-".to_string()
                } else {
                    humantime::format_duration(std::time::Duration::from_secs(
                        a.oldest_due_age_seconds as u64,
                    ))
                    .to_string()
                };
                vec![
                    a.name.clone(),
                    a.kind.clone(),
                    style.status(&a.state),
                    count(a.jobs_due),
                    count(a.jobs_scheduled),
                    format!("{}/{}", count(a.jobs_in_flight), a.max_concurrency),
                    count(a.dead_letters),
                    oldest,
                    count(a.anomalies),
                ]
            })
            .collect();
        println!(
            "{}",
            table(
                style,
                &[
                    "ADAPTER",
                    "KIND",
                    "STATE",
                    "DUE",
                    "SCHEDULED",
                    "IN FLIGHT",
                    "DEAD",
                    "OLDEST DUE",
                    "ANOMALIES",
                ],
                &rows
            )
        );
        for a in &s.adapters {
            if !a.reason.is_empty() {
                println!("  {}: {}", a.name, a.reason);
            }
            if a.last_anomaly_at.is_some() {
                println!(
                    "  {}: last anomaly recorded at {} (the practice's events say what arrived)",
                    a.name,
                    self.time(&a.last_anomaly_at)
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
}
