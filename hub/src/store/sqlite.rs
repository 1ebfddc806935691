//! The embedded store: one SQLite file in WAL mode.
//!
//! Writes go through a single connection (SQLite has one writer; a queue in
//! the pool beats "database is locked" retries), reads through a small pool.
//! sqlx runs SQLite on its own worker threads, so nothing here blocks the
//! async runtime.

use super::schema;
use super::{
    AttemptResult, ClaimedJob, DeadLetter, EventFilter, InsertOutcome, PracticeFilter, Store,
    StoreError, Withdrawal,
};
use crate::config::{Mode, Synchronous};
use crate::domain::apply::{StatusState, plan_reply};
use crate::domain::practice::{
    DeliveryView, Event, EventDraft, EventKind, EventSource, NewPractice, Outcome, Practice,
    PracticeContent,
};
use crate::domain::retry::RetryDecision;
use crate::domain::status::{DeliveryStatus, delivery_transition_allowed};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::Correlation;
use raccordo_adapters::model::{AdminStatus, Document, DocumentMeta, ExternalRef, Operation};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::str::FromStr;

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

type Tx = Transaction<'static, Sqlite>;

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub async fn open(
        path: &Path,
        synchronous: Synchronous,
        readers: u32,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Database(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Database(format!("cannot open {}: {e}", path.display())))?;
        schema::migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

fn parse<T: FromStr<Err = String>>(what: &str, v: &str) -> Result<T, StoreError> {
    v.parse()
        .map_err(|e: String| StoreError::Corrupt(format!("{what}: {e}")))
}

fn mode_str(mode: Mode) -> &'static str {
    match mode {
        Mode::Sync => "sync",
        Mode::Deferred => "deferred",
        Mode::Auto => "auto",
    }
}

fn parse_mode(s: &str) -> Mode {
    match s {
        "sync" => Mode::Sync,
        "auto" => Mode::Auto,
        _ => Mode::Deferred,
    }
}

/// The columns of a practice that transitions read and write.
#[derive(Debug)]
struct StateRow {
    id: String,
    tenant_id: String,
    service_code: String,
    applicant_id: String,
    status: AdminStatus,
    delivery_status: Option<DeliveryStatus>,
    current_operation_id: Option<String>,
    last_sequence: i64,
    legal_term_days: u32,
}

async fn load_state(tx: &mut Tx, practice_id: &str) -> Result<StateRow, StoreError> {
    let row = sqlx::query(
        "SELECT id, tenant_id, service_code, applicant_id, status, delivery_status, current_operation_id,
                last_sequence, legal_term_days
         FROM practices WHERE id = ?",
    )
    .bind(practice_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(StateRow {
        id: row.get("id"),
        tenant_id: row.get("tenant_id"),
        service_code: row.get("service_code"),
        applicant_id: row.get("applicant_id"),
        status: parse("status", row.get::<&str, _>("status"))?,
        delivery_status: row
            .get::<Option<&str>, _>("delivery_status")
            .map(|s| parse("delivery_status", s))
            .transpose()?,
        current_operation_id: row.get("current_operation_id"),
        last_sequence: row.get("last_sequence"),
        legal_term_days: row.get::<i64, _>("legal_term_days") as u32,
    })
}

/// Appends events with the next sequence numbers and returns them stored.
async fn append_events(
    tx: &mut Tx,
    st: &mut StateRow,
    drafts: Vec<EventDraft>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        st.last_sequence += 1;
        let occurred = d.occurred_at.unwrap_or(now);
        let cursor: i64 = sqlx::query_scalar(
            "INSERT INTO events (practice_id, tenant_id, service_code, applicant_id, sequence, occurred_at,
                recorded_at, source, kind, from_status, to_status, from_delivery, to_delivery, reason,
                vendor_code, actor)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING cursor",
        )
        .bind(&st.id)
        .bind(&st.tenant_id)
        .bind(&st.service_code)
        .bind(&st.applicant_id)
        .bind(st.last_sequence)
        .bind(ms(occurred))
        .bind(ms(now))
        .bind(d.source.as_str())
        .bind(d.kind.as_str())
        .bind(d.from_status.map(AdminStatus::as_str))
        .bind(d.to_status.map(AdminStatus::as_str))
        .bind(d.from_delivery.map(DeliveryStatus::as_str))
        .bind(d.to_delivery.map(DeliveryStatus::as_str))
        .bind(&d.reason)
        .bind(&d.vendor_code)
        .bind(&d.actor)
        .fetch_one(&mut **tx)
        .await?;
        out.push(Event {
            cursor,
            practice_id: st.id.clone(),
            tenant_id: st.tenant_id.clone(),
            service_code: st.service_code.clone(),
            applicant_id: st.applicant_id.clone(),
            sequence: st.last_sequence,
            occurred_at: occurred,
            recorded_at: now,
            source: d.source,
            kind: d.kind,
            from_status: d.from_status,
            to_status: d.to_status,
            from_delivery: d.from_delivery,
            to_delivery: d.to_delivery,
            reason: d.reason,
            vendor_code: d.vendor_code,
            actor: d.actor,
        });
    }
    sqlx::query("UPDATE practices SET last_sequence = ? WHERE id = ?")
        .bind(st.last_sequence)
        .bind(&st.id)
        .execute(&mut **tx)
        .await?;
    Ok(out)
}

/// Moves the delivery status, or records an anomaly if the table forbids it.
async fn set_delivery(
    tx: &mut Tx,
    st: &mut StateRow,
    to: DeliveryStatus,
    draft: EventDraft,
    drafts: &mut Vec<EventDraft>,
) -> Result<(), StoreError> {
    let from = st.delivery_status;
    if from == Some(to) {
        return Ok(());
    }
    let mut draft = EventDraft {
        from_delivery: from,
        to_delivery: Some(to),
        kind: EventKind::DeliveryChanged,
        ..draft
    };
    if from.is_some_and(|f| !delivery_transition_allowed(f, to)) {
        draft.kind = EventKind::Anomaly;
        draft.reason = Some(format!(
            "delivery {} -> {to} is not allowed: not applied{}",
            from.map(|f| f.as_str()).unwrap_or("-"),
            draft
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        drafts.push(draft);
        return Ok(());
    }
    sqlx::query("UPDATE practices SET delivery_status = ? WHERE id = ?")
        .bind(to.as_str())
        .bind(&st.id)
        .execute(&mut **tx)
        .await?;
    st.delivery_status = Some(to);
    drafts.push(draft);
    Ok(())
}

/// Applies a vendor reply's administrative effect, references and documents.
async fn apply_reply(
    tx: &mut Tx,
    st: &mut StateRow,
    reply: &VendorReply,
    actor: &str,
    now: DateTime<Utc>,
    drafts: &mut Vec<EventDraft>,
) -> Result<(), StoreError> {
    let plan = plan_reply(
        &StatusState {
            status: st.status,
            legal_term_days: st.legal_term_days,
        },
        reply,
        actor,
        now,
    );
    drafts.extend(plan.events);
    if let Some(to) = plan.new_status {
        let terminal = to.is_terminal();
        sqlx::query(
            "UPDATE practices SET status = ?,
                legal_deadline = COALESCE(?, legal_deadline),
                concluded_at = COALESCE(?, concluded_at),
                outcome_status = CASE WHEN ? THEN ? ELSE outcome_status END,
                outcome_reason = CASE WHEN ? THEN ? ELSE outcome_reason END,
                outcome_vendor_code = CASE WHEN ? THEN ? ELSE outcome_vendor_code END
             WHERE id = ?",
        )
        .bind(to.as_str())
        .bind(plan.legal_deadline.map(ms))
        .bind(plan.concluded_at.map(ms))
        .bind(terminal)
        .bind(to.as_str())
        .bind(terminal)
        .bind(&reply.reason)
        .bind(terminal)
        .bind(&reply.vendor_code)
        .bind(&st.id)
        .execute(&mut **tx)
        .await?;
        st.status = to;
    }
    for r in &reply.external_refs {
        sqlx::query(
            "INSERT OR IGNORE INTO external_refs (practice_id, tenant_id, kind, value, system, issued_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&st.id)
        .bind(&st.tenant_id)
        .bind(&r.kind)
        .bind(&r.value)
        .bind(if r.system.is_empty() { actor } else { &r.system })
        .bind(r.issued_at.or(reply.occurred_at).unwrap_or(now).timestamp_millis())
        .execute(&mut **tx)
        .await?;
    }
    for doc in &reply.documents {
        // The same document reported twice (a re-sent result) is stored once.
        sqlx::query(
            "INSERT INTO documents (practice_id, tenant_id, role, position, name, media_type, size_bytes, sha256, content)
             SELECT ?1, ?2, 'outcome', COALESCE(MAX(position), -1) + 1, ?3, ?4, ?5, ?6, ?7
             FROM documents WHERE practice_id = ?1 AND role = 'outcome'
             HAVING NOT EXISTS (SELECT 1 FROM documents WHERE practice_id = ?1 AND role = 'outcome' AND sha256 = ?6)",
        )
        .bind(&st.id)
        .bind(&st.tenant_id)
        .bind(&doc.meta.name)
        .bind(&doc.meta.media_type)
        .bind(doc.meta.size_bytes as i64)
        .bind(&doc.meta.sha256)
        .bind(&doc.content)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn insert_job(
    tx: &mut Tx,
    st: &StateRow,
    operation_id: &str,
    adapter: &str,
    operation: Operation,
    max_attempts: u32,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO jobs (operation_id, practice_id, tenant_id, adapter, operation, state, attempts,
            max_attempts, next_attempt_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, 'due', 0, ?, ?, ?, ?)",
    )
    .bind(operation_id)
    .bind(&st.id)
    .bind(&st.tenant_id)
    .bind(adapter)
    .bind(operation.as_str())
    .bind(max_attempts as i64)
    .bind(ms(now))
    .bind(ms(now))
    .bind(ms(now))
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE practices SET current_operation_id = ? WHERE id = ?")
        .bind(operation_id)
        .bind(&st.id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

const PRACTICE_COLUMNS: &str = "p.id, p.tenant_id, p.service_code, p.idempotency_key, p.content, p.status, p.mode,
    p.delivery_status, p.current_operation_id, p.outcome_status, p.outcome_reason, p.outcome_vendor_code,
    p.received_at, p.legal_deadline, p.concluded_at,
    j.adapter AS job_adapter, j.operation AS job_operation, j.attempts AS job_attempts,
    j.next_attempt_at AS job_next_attempt_at, j.state AS job_state, j.last_error AS job_last_error,
    j.failure_class AS job_failure_class";

const PRACTICE_FROM: &str =
    "FROM practices p LEFT JOIN jobs j ON j.operation_id = p.current_operation_id";

fn practice_from_row(row: &SqliteRow) -> Result<Practice, StoreError> {
    let content: PracticeContent = serde_json::from_str(row.get::<&str, _>("content"))
        .map_err(|e| StoreError::Corrupt(format!("practice content: {e}")))?;
    let delivery = match (
        row.get::<Option<&str>, _>("delivery_status"),
        row.get::<Option<String>, _>("current_operation_id"),
    ) {
        (Some(status), Some(operation_id)) => {
            let due = row.get::<Option<&str>, _>("job_state") == Some("due");
            Some(DeliveryView {
                status: parse("delivery_status", status)?,
                operation_id,
                operation: parse(
                    "operation",
                    row.get::<Option<&str>, _>("job_operation")
                        .unwrap_or("submit"),
                )?,
                adapter: row
                    .get::<Option<String>, _>("job_adapter")
                    .unwrap_or_default(),
                attempts: row.get::<Option<i64>, _>("job_attempts").unwrap_or(0) as u32,
                next_attempt_at: if due {
                    row.get::<Option<i64>, _>("job_next_attempt_at")
                        .map(from_ms)
                } else {
                    None
                },
                last_error: row.get("job_last_error"),
                failure_class: row.get("job_failure_class"),
            })
        }
        _ => None,
    };
    let outcome = row
        .get::<Option<&str>, _>("outcome_status")
        .map(|s| -> Result<Outcome, StoreError> {
            Ok(Outcome {
                status: parse("outcome_status", s)?,
                reason: row.get("outcome_reason"),
                vendor_code: row.get("outcome_vendor_code"),
                documents: Vec::new(),
            })
        })
        .transpose()?;
    Ok(Practice {
        id: row.get("id"),
        tenant_id: row.get("tenant_id"),
        service_code: row.get("service_code"),
        idempotency_key: row.get("idempotency_key"),
        content,
        attachments: Vec::new(),
        status: parse("status", row.get::<&str, _>("status"))?,
        mode: parse_mode(row.get("mode")),
        delivery,
        outcome,
        external_refs: Vec::new(),
        received_at: from_ms(row.get("received_at")),
        legal_deadline: row.get::<Option<i64>, _>("legal_deadline").map(from_ms),
        concluded_at: row.get::<Option<i64>, _>("concluded_at").map(from_ms),
    })
}

fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    let opt_status = |col: &str| -> Result<Option<AdminStatus>, StoreError> {
        row.get::<Option<&str>, _>(col)
            .map(|s| parse(col, s))
            .transpose()
    };
    let opt_delivery = |col: &str| -> Result<Option<DeliveryStatus>, StoreError> {
        row.get::<Option<&str>, _>(col)
            .map(|s| parse(col, s))
            .transpose()
    };
    Ok(Event {
        cursor: row.get("cursor"),
        practice_id: row.get("practice_id"),
        tenant_id: row.get("tenant_id"),
        service_code: row.get("service_code"),
        applicant_id: row.get("applicant_id"),
        sequence: row.get("sequence"),
        occurred_at: from_ms(row.get("occurred_at")),
        recorded_at: from_ms(row.get("recorded_at")),
        source: EventSource::parse(row.get("source"))
            .ok_or_else(|| StoreError::Corrupt("event source".into()))?,
        kind: EventKind::parse(row.get("kind"))
            .ok_or_else(|| StoreError::Corrupt("event kind".into()))?,
        from_status: opt_status("from_status")?,
        to_status: opt_status("to_status")?,
        from_delivery: opt_delivery("from_delivery")?,
        to_delivery: opt_delivery("to_delivery")?,
        reason: row.get("reason"),
        vendor_code: row.get("vendor_code"),
        actor: row.get("actor"),
    })
}

impl SqliteStore {
    /// Fills attachments, outcome documents and references of `practices`.
    /// Fills attachments, outcome documents and references of `practices`
    /// with two queries in all (not two per practice: lists stay fast).
    async fn attach_details(
        &self,
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
        let in_list = |q: &mut QueryBuilder<Sqlite>| {
            let mut sep = q.separated(", ");
            for p in practices.iter() {
                sep.push_bind(p.id.clone());
            }
            sep.push_unseparated(")");
        };
        let mut q = QueryBuilder::<Sqlite>::new(if with_content {
            "SELECT practice_id, role, name, media_type, size_bytes, sha256, content FROM documents WHERE practice_id IN ("
        } else {
            "SELECT practice_id, role, name, media_type, size_bytes, sha256, X'' AS content FROM documents WHERE practice_id IN ("
        });
        in_list(&mut q);
        q.push(" ORDER BY practice_id, role, position");
        let docs = q.build().fetch_all(&self.reader).await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT practice_id, kind, value, system, issued_at FROM external_refs WHERE practice_id IN (",
        );
        in_list(&mut q);
        q.push(" ORDER BY practice_id, issued_at, kind");
        let refs = q.build().fetch_all(&self.reader).await?;

        for row in docs {
            let Some(&i) = index.get(row.get::<&str, _>("practice_id")) else {
                continue;
            };
            let p = &mut practices[i];
            let doc = Document {
                meta: DocumentMeta {
                    name: row.get("name"),
                    media_type: row.get("media_type"),
                    size_bytes: row.get::<i64, _>("size_bytes") as u64,
                    sha256: row.get("sha256"),
                },
                content: row.get("content"),
            };
            match row.get::<&str, _>("role") {
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
        for r in refs {
            let Some(&i) = index.get(r.get::<&str, _>("practice_id")) else {
                continue;
            };
            practices[i].external_refs.push(ExternalRef {
                kind: r.get("kind"),
                value: r.get("value"),
                system: r.get("system"),
                issued_at: r.get::<Option<i64>, _>("issued_at").map(from_ms),
            });
        }
        Ok(())
    }

    async fn dead_letter_row(&self, operation_id: &str) -> Result<DeadLetter, StoreError> {
        let row = sqlx::query(
            "SELECT j.*, p.service_code FROM jobs j JOIN practices p ON p.id = j.practice_id
             WHERE j.operation_id = ?",
        )
        .bind(operation_id)
        .fetch_optional(&self.writer)
        .await?
        .ok_or(StoreError::NotFound)?;
        dead_letter_from_row(&row)
    }
}

fn dead_letter_from_row(row: &SqliteRow) -> Result<DeadLetter, StoreError> {
    Ok(DeadLetter {
        operation_id: row.get("operation_id"),
        practice_id: row.get("practice_id"),
        tenant_id: row.get("tenant_id"),
        service_code: row.get("service_code"),
        adapter: row.get("adapter"),
        operation: parse("operation", row.get::<&str, _>("operation"))?,
        attempts: row.get::<i64, _>("attempts") as u32,
        last_error: row.get("last_error"),
        failure_class: row.get("failure_class"),
        dead_lettered_at: from_ms(row.get("updated_at")),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_practice(&self, new: NewPractice) -> Result<InsertOutcome, StoreError> {
        let mut tx = self.writer.begin().await?;
        if let Some(row) = sqlx::query(
            "SELECT id, content_hash FROM practices WHERE tenant_id = ? AND idempotency_key = ?",
        )
        .bind(&new.tenant_id)
        .bind(&new.idempotency_key)
        .fetch_optional(&mut *tx)
        .await?
        {
            return Ok(InsertOutcome::Existing {
                id: row.get("id"),
                same_content: row.get::<&str, _>("content_hash") == new.content_hash,
            });
        }
        let content =
            serde_json::to_string(&new.content).map_err(|e| StoreError::Database(e.to_string()))?;
        let applicant_id = new.content.applicant.id().to_ascii_uppercase();
        let deadline = new.received_at + Duration::days(new.legal_term_days.into());
        sqlx::query(
            "INSERT INTO practices (id, tenant_id, service_code, applicant_id, idempotency_key, content_hash,
                content, status, mode, delivery_status, received_at, legal_term_days, legal_deadline)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'SUBMITTED', ?, 'QUEUED', ?, ?, ?)",
        )
        .bind(&new.id)
        .bind(&new.tenant_id)
        .bind(&new.service_code)
        .bind(&applicant_id)
        .bind(&new.idempotency_key)
        .bind(&new.content_hash)
        .bind(&content)
        .bind(mode_str(new.mode))
        .bind(ms(new.received_at))
        .bind(new.legal_term_days as i64)
        .bind(ms(deadline))
        .execute(&mut *tx)
        .await?;
        for (i, a) in new.attachments.iter().enumerate() {
            sqlx::query(
                "INSERT INTO documents (practice_id, tenant_id, role, position, name, media_type, size_bytes, sha256, content)
                 VALUES (?, ?, 'attachment', ?, ?, ?, ?, ?, ?)",
            )
            .bind(&new.id)
            .bind(&new.tenant_id)
            .bind(i as i64)
            .bind(&a.meta.name)
            .bind(&a.meta.media_type)
            .bind(a.meta.size_bytes as i64)
            .bind(&a.meta.sha256)
            .bind(&a.content)
            .execute(&mut *tx)
            .await?;
        }
        let mut st = StateRow {
            id: new.id.clone(),
            tenant_id: new.tenant_id.clone(),
            service_code: new.service_code.clone(),
            applicant_id,
            status: AdminStatus::Submitted,
            delivery_status: Some(DeliveryStatus::Queued),
            current_operation_id: None,
            last_sequence: 0,
            legal_term_days: new.legal_term_days,
        };
        let operation_id = uuid::Uuid::now_v7().to_string();
        insert_job(
            &mut tx,
            &st,
            &operation_id,
            &new.adapter,
            Operation::Submit,
            new.max_attempts,
            new.received_at,
        )
        .await?;
        let (source, actor) = match new.content.channel.operator_id.as_str() {
            "" => (EventSource::Applicant, "applicant".to_string()),
            op => (EventSource::Operator, op.to_string()),
        };
        let mut submitted = EventDraft::status(
            source,
            &actor,
            AdminStatus::Submitted,
            AdminStatus::Submitted,
        );
        submitted.from_status = None;
        submitted.occurred_at = Some(new.received_at);
        let queued = EventDraft::delivery(EventSource::Hub, "hub", None, DeliveryStatus::Queued)
            .reason(format!("to adapter {}", new.adapter));
        let events =
            append_events(&mut tx, &mut st, vec![submitted, queued], new.received_at).await?;
        tx.commit().await?;
        Ok(InsertOutcome::Created(events))
    }

    async fn get_practice(
        &self,
        tenant_id: &str,
        id: &str,
        with_content: bool,
    ) -> Result<Practice, StoreError> {
        let sql =
            format!("SELECT {PRACTICE_COLUMNS} {PRACTICE_FROM} WHERE p.tenant_id = ? AND p.id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut practices = [practice_from_row(&row)?];
        self.attach_details(&mut practices, with_content).await?;
        let [p] = practices;
        Ok(p)
    }

    async fn list_practices(
        &self,
        filter: &PracticeFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Practice>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {PRACTICE_COLUMNS} {PRACTICE_FROM} WHERE p.tenant_id = "
        ));
        q.push_bind(filter.tenant_id.clone());
        if let Some(a) = &filter.applicant_id {
            q.push(" AND p.applicant_id = ")
                .push_bind(a.to_ascii_uppercase());
        }
        if let Some(s) = &filter.service_code {
            q.push(" AND p.service_code = ").push_bind(s.clone());
        }
        if let Some(s) = filter.status {
            q.push(" AND p.status = ").push_bind(s.as_str());
        }
        if let Some(t) = filter.submitted_from {
            q.push(" AND p.received_at >= ").push_bind(ms(t));
        }
        if let Some(t) = filter.submitted_to {
            q.push(" AND p.received_at < ").push_bind(ms(t));
        }
        if let Some(after) = after {
            q.push(" AND p.id < ").push_bind(after.to_string());
        }
        q.push(" ORDER BY p.id DESC LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.reader).await?;
        let mut practices = rows
            .iter()
            .map(practice_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.attach_details(&mut practices, false).await?;
        Ok(practices)
    }

    async fn practice_events(
        &self,
        tenant_id: &str,
        practice_id: &str,
        from_sequence: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM events WHERE tenant_id = ? AND practice_id = ? AND sequence >= ? ORDER BY sequence",
        )
        .bind(tenant_id)
        .bind(practice_id)
        .bind(from_sequence)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn events_after(
        &self,
        filter: &EventFilter,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM events WHERE tenant_id = ");
        q.push_bind(filter.tenant_id.clone());
        q.push(" AND cursor > ").push_bind(after_cursor);
        if let Some(a) = &filter.applicant_id {
            q.push(" AND applicant_id = ")
                .push_bind(a.to_ascii_uppercase());
        }
        if let Some(s) = &filter.service_code {
            q.push(" AND service_code = ").push_bind(s.clone());
        }
        q.push(" ORDER BY cursor LIMIT ").push_bind(limit as i64);
        let rows = q.build().fetch_all(&self.reader).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn last_cursor(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(cursor), 0) FROM events")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    async fn claim_due(
        &self,
        adapter: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<(Vec<ClaimedJob>, Vec<Event>), StoreError> {
        let mut tx = self.writer.begin().await?;
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'in_flight', attempts = attempts + 1, updated_at = ?1
             WHERE operation_id IN (
                SELECT operation_id FROM jobs WHERE adapter = ?2 AND state = 'due' AND next_attempt_at <= ?1
                ORDER BY next_attempt_at LIMIT ?3)
             RETURNING operation_id, practice_id, tenant_id, adapter, operation, attempts, max_attempts",
        )
        .bind(ms(now))
        .bind(adapter)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut events = Vec::new();
        for row in rows {
            let job = ClaimedJob {
                operation_id: row.get("operation_id"),
                practice_id: row.get("practice_id"),
                tenant_id: row.get("tenant_id"),
                adapter: row.get("adapter"),
                operation: parse("operation", row.get::<&str, _>("operation"))?,
                attempt: row.get::<i64, _>("attempts") as u32,
                max_attempts: row.get::<i64, _>("max_attempts") as u32,
            };
            let mut st = load_state(&mut tx, &job.practice_id).await?;
            if st.current_operation_id.as_deref() == Some(&job.operation_id) {
                let mut drafts = Vec::new();
                let draft = EventDraft::delivery(
                    EventSource::Hub,
                    &job.adapter,
                    None,
                    DeliveryStatus::Sent,
                )
                .reason(format!("attempt {} of {}", job.attempt, job.max_attempts));
                set_delivery(&mut tx, &mut st, DeliveryStatus::Sent, draft, &mut drafts).await?;
                events.extend(append_events(&mut tx, &mut st, drafts, now).await?);
            }
            jobs.push(job);
        }
        tx.commit().await?;
        Ok((jobs, events))
    }

    async fn next_due_at(&self, adapter: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM jobs WHERE adapter = ? AND state = 'due'",
        )
        .bind(adapter)
        .fetch_one(&self.reader)
        .await?;
        Ok(next.map(from_ms))
    }

    async fn delivery_payload(
        &self,
        job: &ClaimedJob,
    ) -> Result<(Practice, Vec<Document>), StoreError> {
        let practice = self
            .get_practice(&job.tenant_id, &job.practice_id, true)
            .await?;
        let attachments = practice.attachments.clone();
        Ok((practice, attachments))
    }

    async fn finish_attempt(
        &self,
        job: &ClaimedJob,
        result: AttemptResult,
    ) -> Result<Vec<Event>, StoreError> {
        let now = Utc::now();
        let mut tx = self.writer.begin().await?;
        let mut st = load_state(&mut tx, &job.practice_id).await?;
        let current = st.current_operation_id.as_deref() == Some(&job.operation_id);
        let actor = job.adapter.as_str();
        let mut drafts = Vec::new();
        let set_job = |state: &'static str,
                       next: Option<DateTime<Utc>>,
                       err: Option<&raccordo_adapters::DeliveryError>| {
            sqlx::query(
                "UPDATE jobs SET state = ?, next_attempt_at = COALESCE(?, next_attempt_at),
                    last_error = ?, failure_class = ?, updated_at = ? WHERE operation_id = ?",
            )
            .bind(state)
            .bind(next.map(ms))
            .bind(err.map(|e| e.reason.clone()))
            .bind(err.map(|e| e.class.as_str()))
            .bind(ms(now))
            .bind(job.operation_id.clone())
        };
        match &result {
            AttemptResult::Delivered(_) | AttemptResult::Rejected(_) => {
                let err = match &result {
                    AttemptResult::Rejected(e) => Some(e),
                    _ => None,
                };
                set_job("done", None, err).execute(&mut *tx).await?;
                if current {
                    let mut draft = EventDraft::delivery(
                        EventSource::Adapter,
                        actor,
                        None,
                        DeliveryStatus::Acknowledged,
                    );
                    draft.vendor_code = match &result {
                        AttemptResult::Delivered(r) => r.vendor_code.clone(),
                        AttemptResult::Rejected(e) => e.vendor_code.clone(),
                        AttemptResult::Failed(..) => None,
                    };
                    set_delivery(
                        &mut tx,
                        &mut st,
                        DeliveryStatus::Acknowledged,
                        draft,
                        &mut drafts,
                    )
                    .await?;
                }
                let reply = match &result {
                    AttemptResult::Delivered(reply) => reply.clone(),
                    // A refusal on the merits is the practice's outcome.
                    AttemptResult::Rejected(e) | AttemptResult::Failed(e, _) => VendorReply {
                        status: Some(AdminStatus::Rejected),
                        vendor_code: e.vendor_code.clone(),
                        reason: Some(e.reason.clone()),
                        ..VendorReply::default()
                    },
                };
                let reply = &reply;
                if job.operation == Operation::Submit {
                    apply_reply(&mut tx, &mut st, reply, actor, now, &mut drafts).await?;
                } else {
                    // A withdrawal's answer only adds references: the status
                    // is already WITHDRAWN.
                    let refs_only = VendorReply {
                        external_refs: reply.external_refs.clone(),
                        ..VendorReply::default()
                    };
                    apply_reply(&mut tx, &mut st, &refs_only, actor, now, &mut drafts).await?;
                }
            }
            AttemptResult::Failed(err, RetryDecision::RetryAfter(delay)) => {
                let next = now + Duration::from_std(*delay).unwrap_or_else(|_| Duration::hours(1));
                set_job("due", Some(next), Some(err))
                    .execute(&mut *tx)
                    .await?;
                if current {
                    let to = if err.class == raccordo_adapters::FailureClass::OutcomeUnknown {
                        DeliveryStatus::OutcomeUnknown
                    } else {
                        DeliveryStatus::Retrying
                    };
                    let mut draft = EventDraft::delivery(EventSource::Adapter, actor, None, to)
                        .reason(format!(
                            "attempt {} of {} failed ({}): {}; next attempt at {}",
                            job.attempt,
                            job.max_attempts,
                            err.class,
                            err.reason,
                            next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ));
                    draft.vendor_code = err.vendor_code.clone();
                    set_delivery(&mut tx, &mut st, to, draft, &mut drafts).await?;
                }
            }
            AttemptResult::Failed(err, RetryDecision::DeadLetter) => {
                set_job("dead", None, Some(err)).execute(&mut *tx).await?;
                if current {
                    let mut draft = EventDraft::delivery(
                        EventSource::Adapter,
                        actor,
                        None,
                        DeliveryStatus::DeadLettered,
                    )
                    .reason(format!(
                        "attempt {} of {} failed ({}): {}",
                        job.attempt, job.max_attempts, err.class, err.reason
                    ));
                    draft.vendor_code = err.vendor_code.clone();
                    set_delivery(
                        &mut tx,
                        &mut st,
                        DeliveryStatus::DeadLettered,
                        draft,
                        &mut drafts,
                    )
                    .await?;
                }
            }
        }
        let events = append_events(&mut tx, &mut st, drafts, now).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn apply_inbound(
        &self,
        tenant_id: Option<&str>,
        correlation: &Correlation,
        actor: &str,
        reply: &VendorReply,
    ) -> Result<Vec<Event>, StoreError> {
        let now = Utc::now();
        let mut tx = self.writer.begin().await?;
        let found: Vec<(String, String)> =
            match correlation {
                Correlation::PracticeId(id) => {
                    sqlx::query_as("SELECT id, tenant_id FROM practices WHERE id = ?")
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?
                }
                Correlation::OperationId(op) => {
                    sqlx::query_as("SELECT practice_id, tenant_id FROM jobs WHERE operation_id = ?")
                        .bind(op)
                        .fetch_all(&mut *tx)
                        .await?
                }
                Correlation::ExternalRef { kind, value } => sqlx::query_as(
                    "SELECT practice_id, tenant_id FROM external_refs WHERE kind = ? AND value = ?",
                )
                .bind(kind)
                .bind(value)
                .fetch_all(&mut *tx)
                .await?,
            };
        let found: Vec<_> = found
            .into_iter()
            .filter(|(_, t)| tenant_id.is_none_or(|want| want == t))
            .collect();
        let practice_id = match found.as_slice() {
            [] => return Err(StoreError::NotFound),
            [(id, _)] => id.clone(),
            _ => {
                return Err(StoreError::Conflict(format!(
                    "{} practices match this correlation; the result names no tenant",
                    found.len()
                )));
            }
        };
        let mut st = load_state(&mut tx, &practice_id).await?;
        let mut drafts = Vec::new();
        apply_reply(&mut tx, &mut st, reply, actor, now, &mut drafts).await?;
        let events = append_events(&mut tx, &mut st, drafts, now).await?;
        tx.commit().await?;
        Ok(events)
    }

    async fn withdraw(&self, w: Withdrawal) -> Result<(Vec<Event>, Option<String>), StoreError> {
        let now = Utc::now();
        let mut tx = self.writer.begin().await?;
        let tenant: Option<String> =
            sqlx::query_scalar("SELECT tenant_id FROM practices WHERE id = ?")
                .bind(&w.practice_id)
                .fetch_optional(&mut *tx)
                .await?;
        if tenant.as_deref() != Some(w.tenant_id.as_str()) {
            return Err(StoreError::NotFound);
        }
        let mut st = load_state(&mut tx, &w.practice_id).await?;
        if st.status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "the practice is already {}: it can no longer be withdrawn",
                st.status
            )));
        }
        let mut drafts = Vec::new();
        let mut status = w.draft_actor.clone();
        status.kind = EventKind::StatusChanged;
        status.from_status = Some(st.status);
        status.to_status = Some(AdminStatus::Withdrawn);
        status.reason = w.reason.clone();
        drafts.push(status);
        sqlx::query(
            "UPDATE practices SET status = 'WITHDRAWN', concluded_at = ?, outcome_status = 'WITHDRAWN',
                outcome_reason = ? WHERE id = ?",
        )
        .bind(ms(now))
        .bind(&w.reason)
        .bind(&st.id)
        .execute(&mut *tx)
        .await?;
        st.status = AdminStatus::Withdrawn;

        // The pending submission, if any: a never-sent one is simply cancelled
        // (the vendor never saw it); one that may have arrived is cancelled
        // and the withdrawal forwarded.
        let mut vendor_may_know = false;
        if let Some(op) = st.current_operation_id.clone() {
            let job: Option<(String, i64)> =
                sqlx::query_as("SELECT state, attempts FROM jobs WHERE operation_id = ?")
                    .bind(&op)
                    .fetch_optional(&mut *tx)
                    .await?;
            match job {
                Some((state, attempts)) if state == "due" || state == "dead" => {
                    vendor_may_know = attempts > 0;
                    sqlx::query("UPDATE jobs SET state = 'cancelled', updated_at = ? WHERE operation_id = ?")
                        .bind(ms(now))
                        .bind(&op)
                        .execute(&mut *tx)
                        .await?;
                    let draft = EventDraft::delivery(
                        EventSource::Hub,
                        "hub",
                        None,
                        DeliveryStatus::Cancelled,
                    )
                    .reason("the practice was withdrawn");
                    set_delivery(
                        &mut tx,
                        &mut st,
                        DeliveryStatus::Cancelled,
                        draft,
                        &mut drafts,
                    )
                    .await?;
                }
                Some(_) => vendor_may_know = true,
                None => {}
            }
        }
        let mut new_job = None;
        if let Some((adapter, max_attempts)) = w.forward_to.filter(|_| vendor_may_know) {
            let op = uuid::Uuid::now_v7().to_string();
            insert_job(
                &mut tx,
                &st,
                &op,
                &adapter,
                Operation::Withdraw,
                max_attempts,
                now,
            )
            .await?;
            // A new delivery starts: its status is not a transition of the previous one.
            st.delivery_status = None;
            let draft = EventDraft::delivery(EventSource::Hub, "hub", None, DeliveryStatus::Queued)
                .reason(format!("withdrawal to adapter {adapter}"));
            set_delivery(&mut tx, &mut st, DeliveryStatus::Queued, draft, &mut drafts).await?;
            new_job = Some(adapter);
        }
        let events = append_events(&mut tx, &mut st, drafts, now).await?;
        tx.commit().await?;
        Ok((events, new_job))
    }

    async fn dead_letters(
        &self,
        tenant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.*, p.service_code FROM jobs j JOIN practices p ON p.id = j.practice_id
             WHERE j.state = 'dead' AND (?1 IS NULL OR j.tenant_id = ?1)
             ORDER BY j.updated_at DESC LIMIT ?2",
        )
        .bind(tenant_id)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(dead_letter_from_row).collect()
    }

    async fn replay(
        &self,
        operation_id: &str,
        actor: &str,
    ) -> Result<(DeadLetter, Vec<Event>), StoreError> {
        let now = Utc::now();
        let mut tx = self.writer.begin().await?;
        let job: Option<(String, String, String)> =
            sqlx::query_as("SELECT state, practice_id, operation FROM jobs WHERE operation_id = ?")
                .bind(operation_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((state, practice_id, operation)) = job else {
            return Err(StoreError::NotFound);
        };
        if state != "dead" {
            return Err(StoreError::Conflict(format!(
                "delivery {operation_id} is not dead-lettered (it is {state})"
            )));
        }
        let mut st = load_state(&mut tx, &practice_id).await?;
        if operation == "submit" && st.status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "the practice is already {}: its submission will not be sent again",
                st.status
            )));
        }
        sqlx::query(
            "UPDATE jobs SET state = 'due', attempts = 0, next_attempt_at = ?, updated_at = ? WHERE operation_id = ?",
        )
        .bind(ms(now))
        .bind(ms(now))
        .bind(operation_id)
        .execute(&mut *tx)
        .await?;
        let mut drafts = Vec::new();
        if st.current_operation_id.as_deref() == Some(operation_id) {
            let draft =
                EventDraft::delivery(EventSource::Operator, actor, None, DeliveryStatus::Queued)
                    .reason("replayed by an operator");
            set_delivery(&mut tx, &mut st, DeliveryStatus::Queued, draft, &mut drafts).await?;
        }
        let events = append_events(&mut tx, &mut st, drafts, now).await?;
        tx.commit().await?;
        let dl = self.dead_letter_row(operation_id).await?;
        Ok((dl, events))
    }

    async fn recover_in_flight(&self) -> Result<Vec<Event>, StoreError> {
        let now = Utc::now();
        let mut tx = self.writer.begin().await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "UPDATE jobs SET state = 'due', next_attempt_at = ?, updated_at = ? WHERE state = 'in_flight'
             RETURNING operation_id, practice_id, adapter",
        )
        .bind(ms(now))
        .bind(ms(now))
        .fetch_all(&mut *tx)
        .await?;
        let mut events = Vec::new();
        for (op, practice_id, adapter) in rows {
            let mut st = load_state(&mut tx, &practice_id).await?;
            if st.current_operation_id.as_deref() == Some(op.as_str()) {
                let mut drafts = Vec::new();
                let draft = EventDraft::delivery(
                    EventSource::Hub,
                    &adapter,
                    None,
                    DeliveryStatus::OutcomeUnknown,
                )
                .reason(
                    "the hub stopped during the attempt: re-sending with the same operation id",
                );
                set_delivery(
                    &mut tx,
                    &mut st,
                    DeliveryStatus::OutcomeUnknown,
                    draft,
                    &mut drafts,
                )
                .await?;
                events.extend(append_events(&mut tx, &mut st, drafts, now).await?);
            }
        }
        tx.commit().await?;
        Ok(events)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }
}
