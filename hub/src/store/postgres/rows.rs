//! Row mapping: the SQLite store's column lists and parsers, fed from
//! PostgreSQL rows, and the reads built on them.

use super::tx::{Tx, col};
use crate::domain::practice::{Event, Outcome, Practice};
use crate::store::sqlite::rows::{
    ClaimedJobRow, EventRow, PRACTICE_COLUMNS, PRACTICE_FROM, PracticeRow, dead_letter,
    event_from_row, from_ms, ms, practice_from_row,
};
use crate::store::{ClaimedJob, DeadLetter, PracticeFilter, StoreError};
use raccordo_adapters::model::{Document, DocumentMeta, ExternalRef, Operation, sha256_hex};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// A claim's [`CLAIMED_JOB_COLUMNS`](crate::store::sqlite::rows::CLAIMED_JOB_COLUMNS).
pub(super) fn claimed_job(r: &Row) -> Result<ClaimedJob, StoreError> {
    ClaimedJobRow {
        operation_id: col(r, 0)?,
        practice_id: col(r, 1)?,
        tenant_id: col(r, 2)?,
        adapter: col(r, 3)?,
        operation: col(r, 4)?,
        attempt: col(r, 5)?,
        max_attempts: col(r, 6)?,
        traceparent: col(r, 7)?,
        owner: col(r, 8)?,
    }
    .into_job()
}

pub(super) fn practice(r: &Row) -> Result<Practice, StoreError> {
    practice_from_row(PracticeRow {
        id: col(r, 0)?,
        tenant_id: col(r, 1)?,
        service_code: col(r, 2)?,
        idempotency_key: col(r, 3)?,
        content: col(r, 4)?,
        status: col(r, 5)?,
        mode: col(r, 6)?,
        delivery_status: col(r, 7)?,
        current_operation_id: col(r, 8)?,
        outcome_status: col(r, 9)?,
        outcome_reason: col(r, 10)?,
        outcome_vendor_code: col(r, 11)?,
        received_at: col(r, 12)?,
        legal_deadline: col(r, 13)?,
        concluded_at: col(r, 14)?,
        job_adapter: col(r, 15)?,
        job_operation: col(r, 16)?,
        job_attempts: col(r, 17)?,
        job_next_attempt_at: col(r, 18)?,
        job_state: col(r, 19)?,
        job_last_error: col(r, 20)?,
        job_failure_class: col(r, 21)?,
        outcome_data: col(r, 22)?,
    })
}

pub(super) fn event(r: &Row) -> Result<Event, StoreError> {
    let row: EventRow = (
        col(r, 0)?,
        col(r, 1)?,
        col(r, 2)?,
        col(r, 3)?,
        col(r, 4)?,
        col(r, 5)?,
        col(r, 6)?,
        col(r, 7)?,
        col(r, 8)?,
        col(r, 9)?,
        [col(r, 10)?, col(r, 11)?, col(r, 12)?, col(r, 13)?],
        col(r, 14)?,
        col(r, 15)?,
        col(r, 16)?,
        col(r, 17)?,
    );
    event_from_row(row)
}

pub(super) fn dead_letter_row(r: &Row) -> Result<DeadLetter, StoreError> {
    let dl = DeadLetter {
        operation_id: col(r, 0)?,
        practice_id: col(r, 1)?,
        tenant_id: col(r, 2)?,
        service_code: col(r, 3)?,
        adapter: col(r, 4)?,
        operation: Operation::Submit,
        attempts: col::<i64>(r, 6)? as u32,
        last_error: col(r, 7)?,
        failure_class: col(r, 8)?,
        dead_lettered_at: from_ms(col(r, 9)?),
    };
    dead_letter((dl, col(r, 5)?))
}

/// Fills attachments, outcome documents and references of `practices`
/// with two queries in all, sent together.
pub(super) async fn attach_details(
    tx: &Tx,
    practices: &mut [Practice],
    with_content: bool,
) -> Result<(), StoreError> {
    if practices.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = practices.iter().map(|p| p.id.clone()).collect();
    let (docs, refs) = details(tx, &ids, with_content).await?;
    fill(practices, &docs, &refs, with_content)
}

/// The documents and the references of practices `ids`: two queries,
/// sent together.
async fn details(
    tx: &Tx,
    ids: &[String],
    with_content: bool,
) -> Result<(Vec<Row>, Vec<Row>), StoreError> {
    let [docs, refs] = tx
        .flight([
            (&documents_sql(with_content), &[&ids]),
            (REFERENCES_SQL, &[&ids]),
        ])
        .await?;
    Ok((docs, refs))
}

/// The documents of practices `$1`, their content only if asked for.
fn documents_sql(with_content: bool) -> String {
    let content = if with_content {
        "content"
    } else {
        "''::BYTEA AS content"
    };
    format!(
        "SELECT practice_id, role, name, media_type, size_bytes, sha256, {content} FROM documents
         WHERE practice_id = ANY($1) ORDER BY practice_id, role, position"
    )
}

/// The references of practices `$1`.
const REFERENCES_SQL: &str = "SELECT practice_id, kind, value, system, issued_at FROM external_refs
     WHERE practice_id = ANY($1) ORDER BY practice_id, issued_at, kind";

/// Adds the rows of `details` to `practices`.
fn fill(
    practices: &mut [Practice],
    docs: &[Row],
    refs: &[Row],
    with_content: bool,
) -> Result<(), StoreError> {
    let index: std::collections::HashMap<String, usize> = practices
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.clone(), i))
        .collect();
    for r in docs {
        let practice_id: &str = col(r, 0)?;
        let role: &str = col(r, 1)?;
        let doc = Document {
            meta: DocumentMeta {
                name: col(r, 2)?,
                media_type: col(r, 3)?,
                size_bytes: col::<i64>(r, 4)? as u64,
                sha256: col(r, 5)?,
            },
            content: col(r, 6)?,
        };
        // Bytes changed since they were stored must not reach a vendor or
        // a citizen as if they were the original.
        if with_content && sha256_hex(&doc.content) != doc.meta.sha256 {
            return Err(StoreError::Corrupt(format!(
                "document '{}' of practice {practice_id} fails its SHA-256 check",
                doc.meta.name
            )));
        }
        let Some(&i) = index.get(practice_id) else {
            continue;
        };
        let p = &mut practices[i];
        match role {
            "attachment" => p.attachments.push(doc),
            _ => match p.outcome.as_mut() {
                Some(o) => o.documents.push(doc),
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
    for r in refs {
        let practice_id: &str = col(r, 0)?;
        if let Some(&i) = index.get(practice_id) {
            practices[i].external_refs.push(ExternalRef {
                kind: col(r, 1)?,
                value: col(r, 2)?,
                system: col(r, 3)?,
                issued_at: col::<Option<i64>>(r, 4)?.map(from_ms),
            });
        }
    }
    Ok(())
}

/// One practice of `tenant_id`, read in `tx`: its row, documents and
/// references asked for together, in one round trip.
pub(super) async fn get_practice(
    tx: &Tx,
    tenant_id: &str,
    id: &str,
    with_content: bool,
) -> Result<Practice, StoreError> {
    let sql =
        format!("SELECT {PRACTICE_COLUMNS} {PRACTICE_FROM} WHERE p.tenant_id = $1 AND p.id = $2");
    let ids = vec![id.to_string()];
    let [row, docs, refs] = tx
        .flight([
            (&sql, &[&tenant_id, &id]),
            (&documents_sql(with_content), &[&ids]),
            (REFERENCES_SQL, &[&ids]),
        ])
        .await?;
    let mut practices = [practice(row.first().ok_or(StoreError::NotFound)?)?];
    fill(&mut practices, &docs, &refs, with_content)?;
    let [p] = practices;
    Ok(p)
}

/// A value of a query built at run time.
pub(super) enum Value {
    Text(String),
    Int(i64),
}

impl Value {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Text(s) => s,
            Value::Int(i) => i,
        }
    }
}

/// The parameters of `values`, for [`Tx::query`].
pub(super) fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(Value::sql).collect()
}

/// The query of a page of practices, newest first, and its values.
pub(super) fn list_query(
    filter: &PracticeFilter,
    after: Option<&str>,
    limit: u32,
) -> (String, Vec<Value>) {
    let mut sql = format!("SELECT {PRACTICE_COLUMNS} {PRACTICE_FROM} WHERE p.tenant_id = $1");
    let mut values = vec![Value::Text(filter.tenant_id.clone())];
    let mut add = |clause: &str, v: Value| {
        values.push(v);
        sql.push_str(&clause.replace('?', &format!("${}", values.len())));
    };
    if let Some(a) = &filter.applicant_id {
        add(
            " AND p.applicant_id = ?",
            Value::Text(a.to_ascii_uppercase()),
        );
    }
    if let Some(s) = &filter.service_code {
        add(" AND p.service_code = ?", Value::Text(s.clone()));
    }
    if let Some(s) = filter.status {
        add(" AND p.status = ?", Value::Text(s.as_str().into()));
    }
    if let Some(t) = filter.submitted_from {
        add(" AND p.received_at >= ?", Value::Int(ms(t)));
    }
    if let Some(t) = filter.submitted_to {
        add(" AND p.received_at < ?", Value::Int(ms(t)));
    }
    if let Some(after) = after {
        add(" AND p.id < ?", Value::Text(after.to_string()));
    }
    add(" ORDER BY p.id DESC LIMIT ?", Value::Int(limit as i64));
    (sql, values)
}
