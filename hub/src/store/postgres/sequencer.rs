//! The sequencer: gives committed events their cursors and links committed
//! audit records (events and refused calls) into their tenants' chains.
//!
//! Writers insert events with cursor NULL and audit records unlinked, and
//! commit without touching a shared row. A sequencer run then, in one
//! transaction:
//! 1. takes a transaction advisory lock, the same key on every instance
//!    (per schema), so runs are serialized across the cluster;
//! 2. reads the unsequenced rows in `id` order (ids come from one sequence,
//!    taken at insert), as committed when the lock was granted;
//! 3. gives the events consecutive cursors from `event_cursor` and links
//!    each tenant's records after its `audit_heads` head;
//! 4. notifies `raccordo_events` (and `raccordo_work` with the adapter of
//!    each job these changes made due) and commits.
//!
//! Why cursor order never goes back: a run sees only committed rows, and
//! the next run starts after it committed (the lock is released at commit,
//! after the commit is visible). A row that a run did not see committed
//! after that run's snapshot, and gets a cursor from a later run, so a
//! higher one. A reader of "cursor > c" therefore never skips an event.
//! Within a practice, events are ordered by id as they are by sequence: the
//! practice's row lock orders the transactions that insert them.
//!
//! Each instance runs one sequencer task, woken by its own commits (a
//! coalescing `Notify`: one run at a time, one more if woken during it) and
//! every [`TICK`], so rows committed by an instance that stopped before its
//! run are sequenced by another's. A write returns once a run that started
//! after its commit ended (see [`Sequencer::request`]): what a caller
//! wrote, it reads back with its cursor.

use super::audit::event_detail;
use super::pool;
use super::tx::{Ended, Tx, col};
use crate::store::StoreError;
use deadpool_postgres::Pool;
use raccordo_domain::audit::{EVENT_FORMAT, next_link, record_hash};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The advisory lock's first key ("RACS"); the second is the schema's.
/// Not the migration lock's: a run must not wait for a session that holds
/// that one across several transactions.
const LOCK_CLASS: i32 = 0x5241_4353;
/// Rows of each table one run takes at most; a run that took that many is
/// followed by another at once.
const BATCH: i64 = 1000;
/// How often a run happens with no commit of this instance to wake it.
pub(super) const TICK: Duration = Duration::from_secs(1);
/// The channel the sequencer notifies after every run that sequenced events.
pub(super) const EVENTS_CHANNEL: &str = "raccordo_events";
/// The channel a run notifies with each adapter that has new due work.
pub(super) const WORK_CHANNEL: &str = "raccordo_work";

/// One instance's sequencer: how writers wake it and wait for it.
#[derive(Debug)]
pub(super) struct Sequencer {
    wake: Notify,
    /// Runs started so far (the number of the one in progress).
    started: AtomicU64,
    /// The number of the last run that ended.
    finished: watch::Sender<u64>,
}

impl Sequencer {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            wake: Notify::new(),
            started: AtomicU64::new(0),
            finished: watch::Sender::new(0),
        })
    }

    /// Asks for a run that sees everything committed before this call and
    /// returns its number. A run in progress may have read before the
    /// caller's commit, so the one after it is the one to wait for.
    pub(super) fn request(&self) -> u64 {
        let target = self.started.load(Ordering::SeqCst) + 1;
        self.wake.notify_one();
        target
    }

    /// Waits until run `target` ended (sequenced, or failed: the rows are
    /// committed and a later run sequences them).
    pub(super) async fn wait(&self, target: u64) {
        let mut finished = self.finished.subscribe();
        // The guard `wait_for` returns is not `Send`: dropped at once.
        let _ = finished.wait_for(|n| *n >= target).await.is_ok();
    }

    /// Runs until the task is aborted: on a wake-up or every [`TICK`].
    /// After each run that sequenced events, `sequenced` is notified (this
    /// instance's feed, which need not wait for the notification to come
    /// back from the server).
    pub(super) async fn run(self: Arc<Self>, pool: Pool, sequenced: Arc<Notify>) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
            let run = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            match sequence_all(&pool).await {
                Ok(count) => {
                    if failing {
                        tracing::info!("the event sequencer runs again");
                        failing = false;
                    }
                    if count > 0 {
                        sequenced.notify_one();
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e,
                            "the event sequencer cannot run: new events wait for their cursors \
                             (they are stored) and watchers do not see them until it runs again");
                        failing = true;
                    }
                }
            }
            self.finished.send_replace(run);
        }
    }
}

/// Runs until no committed row is left unsequenced; returns how many
/// events and records were sequenced.
pub(super) async fn sequence_all(pool: &Pool) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let (count, full) = run_once(pool).await?;
        total += count;
        if !full {
            return Ok(total);
        }
    }
}

/// One run in one transaction: (records sequenced, whether a batch was full).
async fn run_once(pool: &Pool) -> Result<(u64, bool), StoreError> {
    let client = pool::connection(pool).await?;
    let tx = Tx::new(client, "BEGIN");
    let result = assign(&tx).await;
    match tx.end(result).await {
        Ended::Done(done) => done.map(|(value, _)| value),
        Ended::Retry(e) => Err(e),
    }
}

/// A row of either table, as the chain hashes it.
struct Record {
    id: i64,
    tenant_id: String,
    recorded_at: i64,
    actor: String,
    action: String,
    practice_id: Option<String>,
    detail: String,
    event: bool,
}

async fn assign(tx: &Tx) -> Result<(u64, bool), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))",
        &[&LOCK_CLASS],
    )
    .await?;
    // Each statement from here on reads what was committed when it began
    // (READ COMMITTED), so after the previous run's commit.
    let events = tx
        .query(
            "SELECT id, tenant_id, recorded_at, actor, kind, practice_id, sequence, source,
                from_status, to_status, from_delivery, to_delivery, reason, vendor_code,
                service_code, applicant_id, outcome_data
             FROM events WHERE cursor IS NULL ORDER BY id LIMIT $1",
            &[&BATCH],
        )
        .await?;
    let audits = tx
        .query(
            "SELECT id, tenant_id, recorded_at, actor, action, practice_id, detail
             FROM audit_log WHERE seq IS NULL ORDER BY id LIMIT $1",
            &[&BATCH],
        )
        .await?;
    if events.is_empty() && audits.is_empty() {
        return Ok((0, false));
    }
    // A full batch stops at its last id: the other table's rows after it
    // wait for the next run, so the two keep their common order.
    let last_id = |rows: &[tokio_postgres::Row]| -> Result<i64, StoreError> {
        if rows.len() as i64 == BATCH {
            col(rows.last().expect("a full batch"), 0)
        } else {
            Ok(i64::MAX)
        }
    };
    let cut = last_id(&events)?.min(last_id(&audits)?);
    let mut records = Vec::with_capacity(events.len() + audits.len());
    for r in &events {
        records.push(Record {
            id: col(r, 0)?,
            tenant_id: col(r, 1)?,
            recorded_at: col(r, 2)?,
            actor: col(r, 3)?,
            action: col(r, 4)?,
            practice_id: col(r, 5)?,
            // The linker decides the format (and records it, below): an
            // instance of an earlier version, running beside this one while
            // a cluster is upgraded, links in the format it knows.
            detail: event_detail(r, 6, 5, 14, 16, Some(EVENT_FORMAT))?,
            event: true,
        });
    }
    for r in &audits {
        records.push(Record {
            id: col(r, 0)?,
            tenant_id: col(r, 1)?,
            recorded_at: col(r, 2)?,
            actor: col(r, 3)?,
            action: col(r, 4)?,
            practice_id: col(r, 5)?,
            detail: col(r, 6)?,
            event: false,
        });
    }
    records.retain(|r| r.id <= cut);
    records.sort_unstable_by_key(|r| r.id);

    let mut tenants: Vec<&str> = records.iter().map(|r| r.tenant_id.as_str()).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let mut heads: HashMap<String, Option<(i64, String)>> =
        tenants.iter().map(|t| (t.to_string(), None)).collect();
    for r in tx
        .query(
            "SELECT tenant_id, seq, hash FROM audit_heads WHERE tenant_id = ANY($1)",
            &[&tenants],
        )
        .await?
    {
        let seq: i64 = col(&r, 1)?;
        // seq 0: an empty chain.
        heads.insert(
            col(&r, 0)?,
            (seq > 0).then(|| col(&r, 2)).transpose()?.map(|h| (seq, h)),
        );
    }
    let count = records.iter().filter(|r| r.event).count() as i64;
    let mut cursor = 0;
    if count > 0 {
        let last: i64 = col(
            &tx.query_one(
                "UPDATE event_cursor SET last = last + $1 RETURNING last",
                &[&count],
            )
            .await?,
            0,
        )?;
        cursor = last - count;
    }

    // (id, cursor, seq, prev_hash, hash) of each event; (id, seq, prev_hash, hash) of each record.
    let mut ev = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut au = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut practices: Vec<&str> = Vec::new();
    for r in &records {
        let head = heads
            .get_mut(&r.tenant_id)
            .expect("every tenant's head is loaded");
        let (seq, prev_hash) = next_link(head.take());
        let hash = record_hash(
            &prev_hash,
            &r.tenant_id,
            seq,
            r.recorded_at,
            &r.actor,
            &r.action,
            r.practice_id.as_deref(),
            &r.detail,
        );
        *head = Some((seq, hash.clone()));
        if r.event {
            cursor += 1;
            ev.0.push(r.id);
            ev.1.push(cursor);
            ev.2.push(seq);
            ev.3.push(prev_hash);
            ev.4.push(hash);
            practices.extend(r.practice_id.as_deref());
        } else {
            au.0.push(r.id);
            au.1.push(seq);
            au.2.push(prev_hash);
            au.3.push(hash);
        }
    }
    if !ev.0.is_empty() {
        tx.execute(
            "UPDATE events SET cursor = u.cursor, audit_seq = u.seq, audit_prev_hash = u.prev,
                audit_hash = u.hash, audit_format = $6
             FROM unnest($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[])
                AS u(id, cursor, seq, prev, hash)
             WHERE events.id = u.id",
            &[&ev.0, &ev.1, &ev.2, &ev.3, &ev.4, &EVENT_FORMAT],
        )
        .await?;
    }
    if !au.0.is_empty() {
        tx.execute(
            "UPDATE audit_log SET seq = u.seq, prev_hash = u.prev, hash = u.hash
             FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[]) AS u(id, seq, prev, hash)
             WHERE audit_log.id = u.id",
            &[&au.0, &au.1, &au.2, &au.3],
        )
        .await?;
    }
    let (names, seqs, hashes): (Vec<&str>, Vec<i64>, Vec<&str>) = heads
        .iter()
        .filter_map(|(t, h)| h.as_ref().map(|(s, h)| (t.as_str(), *s, h.as_str())))
        .fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |mut acc, (t, s, h)| {
                acc.0.push(t);
                acc.1.push(s);
                acc.2.push(h);
                acc
            },
        );
    tx.execute(
        "INSERT INTO audit_heads (tenant_id, seq, hash)
         SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::TEXT[])
         ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
        &[&names, &seqs, &hashes],
    )
    .await?;
    if count > 0 {
        // Work these events made due, for the delivery workers of every
        // instance (a job is queued or made due again with an event).
        practices.sort_unstable();
        practices.dedup();
        tx.execute(
            "SELECT pg_notify($1, current_schema() || '/' || adapter) FROM (
                SELECT DISTINCT adapter FROM jobs WHERE practice_id = ANY($2) AND state = 'due') j",
            &[&WORK_CHANNEL, &practices],
        )
        .await?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&EVENTS_CHANNEL, &cursor.to_string()],
        )
        .await?;
    }
    let full = events.len() as i64 == BATCH || audits.len() as i64 == BATCH;
    Ok((records.len() as u64, full))
}
