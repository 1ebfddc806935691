//! Row mapping: how practices, events, claimed jobs and dead letters are
//! read from their tables, and the reads built on it.

use crate::domain::practice::{
    DeliveryView, Event, EventKind, EventSource, Outcome, Practice, PracticeContent,
};
use crate::store::{ClaimedJob, DeadLetter, JobState, PracticeFilter, StoreError, outcome_data};
use chrono::{DateTime, Utc};
use raccordo_adapters::model::{Document, DocumentMeta, ExternalRef, Operation, sha256_hex};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params_from_iter};
use std::str::FromStr;

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

pub(crate) fn parse<T: FromStr<Err = String>>(what: &str, v: &str) -> Result<T, StoreError> {
    v.parse()
        .map_err(|e: String| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The columns a claim returns first, in this order, for
/// [`read_claimed_job`]; a claim of polls returns its own after them.
pub(crate) const CLAIMED_JOB_COLUMNS: &str =
    "operation_id, practice_id, tenant_id, adapter, operation, attempts,
    max_attempts, traceparent, lease_owner";
/// How many columns [`CLAIMED_JOB_COLUMNS`] names.
pub(crate) const CLAIMED_JOB_COLUMN_COUNT: usize = 9;

/// A claimed job as its claim returned it, before its operation is parsed.
pub(crate) struct ClaimedJobRow {
    pub(crate) operation_id: String,
    pub(crate) practice_id: String,
    pub(crate) tenant_id: String,
    pub(crate) adapter: String,
    pub(crate) operation: String,
    pub(crate) attempt: i64,
    pub(crate) max_attempts: i64,
    pub(crate) traceparent: Option<String>,
    pub(crate) owner: Option<String>,
}

/// Reads the [`CLAIMED_JOB_COLUMNS`] at the start of a claim's row.
pub(super) fn read_claimed_job(r: &Row<'_>) -> rusqlite::Result<ClaimedJobRow> {
    Ok(ClaimedJobRow {
        operation_id: r.get(0)?,
        practice_id: r.get(1)?,
        tenant_id: r.get(2)?,
        adapter: r.get(3)?,
        operation: r.get(4)?,
        attempt: r.get(5)?,
        max_attempts: r.get(6)?,
        traceparent: r.get(7)?,
        owner: r.get(8)?,
    })
}

impl ClaimedJobRow {
    pub(crate) fn into_job(self) -> Result<ClaimedJob, StoreError> {
        Ok(ClaimedJob {
            operation: parse("operation", &self.operation)?,
            operation_id: self.operation_id,
            practice_id: self.practice_id,
            tenant_id: self.tenant_id,
            adapter: self.adapter,
            attempt: self.attempt as u32,
            max_attempts: self.max_attempts as u32,
            traceparent: self.traceparent,
            owner: self.owner.unwrap_or_default(),
        })
    }
}

/// The columns every practice read selects, in the order
/// [`read_practice_row`] reads them.
pub(crate) const PRACTICE_COLUMNS: &str = "p.id, p.tenant_id, p.service_code, p.idempotency_key, p.content, p.status, p.mode,
    p.delivery_status, p.current_operation_id, p.outcome_status, p.outcome_reason, p.outcome_vendor_code,
    p.received_at, p.legal_deadline, p.concluded_at,
    j.adapter AS job_adapter, j.operation AS job_operation, j.attempts AS job_attempts,
    j.next_attempt_at AS job_next_attempt_at, j.state AS job_state, j.last_error AS job_last_error,
    j.failure_class AS job_failure_class, p.outcome_data";

pub(crate) const PRACTICE_FROM: &str =
    "FROM practices p LEFT JOIN jobs j ON j.operation_id = p.current_operation_id";

/// A practice row as read, before parsing (rusqlite rows borrow the statement).
pub(crate) struct PracticeRow {
    pub(crate) id: String,
    pub(crate) tenant_id: String,
    pub(crate) service_code: String,
    pub(crate) idempotency_key: String,
    pub(crate) content: String,
    pub(crate) status: String,
    pub(crate) mode: String,
    pub(crate) delivery_status: Option<String>,
    pub(crate) current_operation_id: Option<String>,
    pub(crate) outcome_status: Option<String>,
    pub(crate) outcome_reason: Option<String>,
    pub(crate) outcome_vendor_code: Option<String>,
    pub(crate) received_at: i64,
    pub(crate) legal_deadline: Option<i64>,
    pub(crate) concluded_at: Option<i64>,
    pub(crate) job_adapter: Option<String>,
    pub(crate) job_operation: Option<String>,
    pub(crate) job_attempts: Option<i64>,
    pub(crate) job_next_attempt_at: Option<i64>,
    pub(crate) job_state: Option<String>,
    pub(crate) job_last_error: Option<String>,
    pub(crate) job_failure_class: Option<String>,
    pub(crate) outcome_data: Option<String>,
}

/// Reads the columns of [`PRACTICE_COLUMNS`] by position: looking columns up
/// by name compares every name of the row for each one, which was a fifth of
/// the time of a folder listing.
pub(super) fn read_practice_row(r: &Row<'_>) -> rusqlite::Result<PracticeRow> {
    Ok(PracticeRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        service_code: r.get(2)?,
        idempotency_key: r.get(3)?,
        content: r.get(4)?,
        status: r.get(5)?,
        mode: r.get(6)?,
        delivery_status: r.get(7)?,
        current_operation_id: r.get(8)?,
        outcome_status: r.get(9)?,
        outcome_reason: r.get(10)?,
        outcome_vendor_code: r.get(11)?,
        received_at: r.get(12)?,
        legal_deadline: r.get(13)?,
        concluded_at: r.get(14)?,
        job_adapter: r.get(15)?,
        job_operation: r.get(16)?,
        job_attempts: r.get(17)?,
        job_next_attempt_at: r.get(18)?,
        job_state: r.get(19)?,
        job_last_error: r.get(20)?,
        job_failure_class: r.get(21)?,
        outcome_data: r.get(22)?,
    })
}

pub(crate) fn practice_from_row(row: PracticeRow) -> Result<Practice, StoreError> {
    let content: PracticeContent = serde_json::from_str(&row.content)
        .map_err(|e| StoreError::Corrupt(format!("practice content: {e}")))?;
    let delivery = match (row.delivery_status.as_deref(), row.current_operation_id) {
        (Some(status), Some(operation_id)) => {
            // A polled result shows its next poll.
            let job_state = row
                .job_state
                .as_deref()
                .map(|s| parse::<JobState>("job state", s))
                .transpose()?;
            let due = matches!(job_state, Some(JobState::Due | JobState::Polling));
            Some(DeliveryView {
                status: parse("delivery_status", status)?,
                operation_id,
                operation: parse(
                    "operation",
                    row.job_operation.as_deref().unwrap_or("submit"),
                )?,
                adapter: row.job_adapter.unwrap_or_default(),
                attempts: row.job_attempts.unwrap_or(0) as u32,
                next_attempt_at: if due {
                    row.job_next_attempt_at.map(from_ms)
                } else {
                    None
                },
                last_error: row.job_last_error,
                failure_class: row.job_failure_class,
            })
        }
        _ => None,
    };
    let outcome = row
        .outcome_status
        .as_deref()
        .map(|s| -> Result<Outcome, StoreError> {
            Ok(Outcome {
                status: parse("outcome_status", s)?,
                reason: row.outcome_reason.clone(),
                vendor_code: row.outcome_vendor_code.clone(),
                documents: Vec::new(),
            })
        })
        .transpose()?;
    Ok(Practice {
        id: row.id,
        tenant_id: row.tenant_id,
        service_code: row.service_code,
        idempotency_key: row.idempotency_key,
        content,
        attachments: Vec::new(),
        status: parse("status", &row.status)?,
        mode: parse("mode", &row.mode)?,
        delivery,
        outcome,
        external_refs: Vec::new(),
        received_at: from_ms(row.received_at),
        legal_deadline: row.legal_deadline.map(from_ms),
        concluded_at: row.concluded_at.map(from_ms),
        outcome_data: outcome_data::decode(row.outcome_data.as_deref(), "practices.outcome_data")?,
    })
}

/// An event row as read, before parsing.
pub(crate) type EventRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    String,
    [Option<String>; 4],
    Option<String>,
    Option<String>,
    String,
    Option<String>,
);

pub(crate) const EVENT_COLUMNS: &str = "cursor, practice_id, tenant_id, service_code, applicant_id, sequence, occurred_at,
    recorded_at, source, kind, from_status, to_status, from_delivery, to_delivery, reason, vendor_code, actor,
    outcome_data";

pub(super) fn read_event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        [r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?],
        r.get(14)?,
        r.get(15)?,
        r.get(16)?,
        r.get(17)?,
    ))
}

pub(crate) fn event_from_row(row: EventRow) -> Result<Event, StoreError> {
    let (
        cursor,
        practice_id,
        tenant_id,
        service_code,
        applicant_id,
        sequence,
        occurred,
        recorded,
        source,
        kind,
    ) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9,
    );
    let [from_status, to_status, from_delivery, to_delivery] = row.10;
    Ok(Event {
        cursor,
        practice_id,
        tenant_id,
        service_code,
        applicant_id,
        sequence,
        occurred_at: from_ms(occurred),
        recorded_at: from_ms(recorded),
        source: EventSource::parse(&source)
            .ok_or_else(|| StoreError::Corrupt("event source".into()))?,
        kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt("event kind".into()))?,
        from_status: from_status
            .as_deref()
            .map(|s| parse("from_status", s))
            .transpose()?,
        to_status: to_status
            .as_deref()
            .map(|s| parse("to_status", s))
            .transpose()?,
        from_delivery: from_delivery
            .as_deref()
            .map(|s| parse("from_delivery", s))
            .transpose()?,
        to_delivery: to_delivery
            .as_deref()
            .map(|s| parse("to_delivery", s))
            .transpose()?,
        reason: row.11,
        vendor_code: row.12,
        actor: row.13,
        outcome_data: row
            .14
            .as_deref()
            .map(|text| outcome_data::decode(Some(text), "events.outcome_data"))
            .transpose()?,
    })
}

/// Runs a query whose SQL is built at runtime with positional values:
/// `read` copies each row out of SQLite, `parse` turns it into a domain value.
pub(super) fn query_all<R, T>(
    conn: &Connection,
    sql: &str,
    values: &[SqlValue],
    read: fn(&Row<'_>) -> rusqlite::Result<R>,
    parse: fn(R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(params_from_iter(values.iter()), read)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(parse).collect()
}

pub(super) fn query_events(
    conn: &Connection,
    sql: &str,
    values: &[SqlValue],
) -> Result<Vec<Event>, StoreError> {
    query_all(conn, sql, values, read_event_row, event_from_row)
}

/// Fills attachments, outcome documents and references of `practices`
/// with two queries in all (not two per practice: lists stay fast).
pub(super) fn attach_details(
    conn: &Connection,
    practices: &mut [Practice],
    with_content: bool,
) -> Result<(), StoreError> {
    if practices.is_empty() {
        return Ok(());
    }
    let index: std::collections::HashMap<String, usize> = practices
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.clone(), i))
        .collect();
    let ids: Vec<SqlValue> = practices
        .iter()
        .map(|p| SqlValue::Text(p.id.clone()))
        .collect();
    let marks = vec!["?"; ids.len()].join(", ");
    let content = if with_content {
        "content"
    } else {
        "X'' AS content"
    };
    let sql = format!(
        "SELECT practice_id, role, name, media_type, size_bytes, sha256, {content} FROM documents
         WHERE practice_id IN ({marks}) ORDER BY practice_id, role, position"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let docs = stmt
        .query_map(params_from_iter(ids.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                Document {
                    meta: DocumentMeta {
                        name: r.get(2)?,
                        media_type: r.get(3)?,
                        size_bytes: r.get::<_, i64>(4)? as u64,
                        sha256: r.get(5)?,
                    },
                    content: r.get(6)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (practice_id, role, doc) in docs {
        // Bytes changed on disk since they were stored must not reach a
        // vendor or a citizen as if they were the original.
        if with_content && sha256_hex(&doc.content) != doc.meta.sha256 {
            return Err(StoreError::Corrupt(format!(
                "document '{}' of practice {practice_id} fails its SHA-256 check",
                doc.meta.name
            )));
        }
        let Some(&i) = index.get(&practice_id) else {
            continue;
        };
        let p = &mut practices[i];
        match role.as_str() {
            "attachment" => p.attachments.push(doc),
            _ => match p.outcome.as_mut() {
                Some(o) => o.documents.push(doc),
                // Documents reported before the conclusion (a receipt):
                // visible, with the practice's current status.
                None => {
                    p.outcome = Some(Outcome {
                        status: p.status,
                        reason: None,
                        vendor_code: None,
                        documents: vec![doc],
                    })
                }
            },
        }
    }
    let sql = format!(
        "SELECT practice_id, kind, value, system, issued_at FROM external_refs
         WHERE practice_id IN ({marks}) ORDER BY practice_id, issued_at, kind"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let refs = stmt
        .query_map(params_from_iter(ids.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                ExternalRef {
                    kind: r.get(1)?,
                    value: r.get(2)?,
                    system: r.get(3)?,
                    issued_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (practice_id, r) in refs {
        if let Some(&i) = index.get(&practice_id) {
            practices[i].external_refs.push(r);
        }
    }
    Ok(())
}

/// The query of a page of practices, newest first, and its values.
pub(super) fn list_query(
    filter: &PracticeFilter,
    after: Option<&str>,
    limit: u32,
) -> (String, Vec<SqlValue>) {
    let mut sql = format!("SELECT {PRACTICE_COLUMNS} {PRACTICE_FROM} WHERE p.tenant_id = ?");
    let mut values = vec![SqlValue::Text(filter.tenant_id.clone())];
    let mut add = |clause: &str, v: SqlValue| {
        sql.push_str(clause);
        values.push(v);
    };
    if let Some(a) = &filter.applicant_id {
        add(
            " AND p.applicant_id = ?",
            SqlValue::Text(a.to_ascii_uppercase()),
        );
    }
    if let Some(s) = &filter.service_code {
        add(" AND p.service_code = ?", SqlValue::Text(s.clone()));
    }
    if let Some(s) = filter.status {
        add(" AND p.status = ?", SqlValue::Text(s.as_str().into()));
    }
    if let Some(t) = filter.submitted_from {
        add(" AND p.received_at >= ?", SqlValue::Integer(ms(t)));
    }
    if let Some(t) = filter.submitted_to {
        add(" AND p.received_at < ?", SqlValue::Integer(ms(t)));
    }
    if let Some(after) = after {
        add(" AND p.id < ?", SqlValue::Text(after.to_string()));
    }
    add(
        " ORDER BY p.id DESC LIMIT ?",
        SqlValue::Integer(limit as i64),
    );
    (sql, values)
}

pub(super) fn get_practice(
    conn: &Connection,
    tenant_id: &str,
    id: &str,
    with_content: bool,
) -> Result<Practice, StoreError> {
    let sql =
        format!("SELECT {PRACTICE_COLUMNS} {PRACTICE_FROM} WHERE p.tenant_id = ?1 AND p.id = ?2");
    let row = conn
        .prepare_cached(&sql)?
        .query_row([tenant_id, id], read_practice_row)
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let mut practices = [practice_from_row(row)?];
    attach_details(conn, &mut practices, with_content)?;
    let [p] = practices;
    Ok(p)
}

/// The practice as the writer's open transaction has it (attachment
/// metadata only), if `wanted`: the reply to a submission. Read here and
/// not on a reader: every commit leaves a reader's page cache stale (SQLite
/// resets it at the next read transaction), so a read right after the
/// commit fetched every page again with a `pread`, while the writer has
/// them all in its cache.
pub(super) fn read_back_if(
    wanted: bool,
    conn: &Connection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Practice>, StoreError> {
    wanted
        .then(|| get_practice(conn, tenant_id, id, false))
        .transpose()
}

pub(crate) const DEAD_LETTER_SQL: &str =
    "SELECT j.operation_id, j.practice_id, j.tenant_id, p.service_code, j.adapter,
    j.operation, j.attempts, j.last_error, j.failure_class, j.updated_at
    FROM jobs j JOIN practices p ON p.id = j.practice_id";

pub(super) fn read_dead_letter(r: &Row<'_>) -> rusqlite::Result<(DeadLetter, String)> {
    Ok((
        DeadLetter {
            operation_id: r.get(0)?,
            practice_id: r.get(1)?,
            tenant_id: r.get(2)?,
            service_code: r.get(3)?,
            adapter: r.get(4)?,
            operation: Operation::Submit,
            attempts: r.get::<_, i64>(6)? as u32,
            last_error: r.get(7)?,
            failure_class: r.get(8)?,
            dead_lettered_at: from_ms(r.get(9)?),
        },
        r.get(5)?,
    ))
}

pub(crate) fn dead_letter(
    (mut dl, operation): (DeadLetter, String),
) -> Result<DeadLetter, StoreError> {
    dl.operation = parse("operation", &operation)?;
    Ok(dl)
}
