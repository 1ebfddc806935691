//! What operators watch, read in one snapshot: the outbox per adapter
//! instance, practices by status, practices past their legal deadline and
//! the database's size.

use super::rows::{from_ms, ms, parse};
use crate::store::JobState;
use crate::store::{AdapterBacklog, AnomalyCount, OpsSnapshot, PracticeCount, StoreError};
use chrono::{DateTime, Utc};
use rusqlite::Connection;
use std::path::Path;

/// Reads the counts from `conn`; `path` is the database file.
pub(super) fn snapshot(
    conn: &Connection,
    path: &Path,
    now: DateTime<Utc>,
) -> Result<OpsSnapshot, StoreError> {
    let now_ms = ms(now);
    let mut adapters: Vec<AdapterBacklog> = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT adapter, state, next_attempt_at <= ?1 AS ready, COUNT(*), MIN(next_attempt_at)
         FROM jobs WHERE state IN ('due', 'in_flight', 'dead')
         GROUP BY adapter, state, ready ORDER BY adapter",
    )?;
    let rows = stmt.query_map([now_ms], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    for row in rows {
        let (adapter, state, ready, count, oldest) = row?;
        if adapters.last().is_none_or(|a| a.adapter != adapter) {
            adapters.push(AdapterBacklog {
                adapter,
                ..Default::default()
            });
        }
        let entry = adapters.last_mut().expect("pushed above");
        match (parse::<JobState>("job state", &state)?, ready) {
            (JobState::Due, true) => {
                entry.due += count;
                entry.oldest_due_age = Some(std::time::Duration::from_millis(
                    (now_ms - oldest).max(0) as u64,
                ));
            }
            (JobState::Due, false) => entry.scheduled += count,
            (JobState::InFlight, _) => entry.in_flight += count,
            _ => entry.dead += count,
        }
    }
    let practices = conn
        .prepare_cached(
            "SELECT tenant_id, service_code, status, COUNT(*) FROM practices
             GROUP BY tenant_id, service_code, status",
        )?
        .query_map([], |r| {
            Ok(PracticeCount {
                tenant: r.get(0)?,
                service: r.get(1)?,
                status: r.get(2)?,
                count: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let past_deadline = conn
        .prepare_cached(
            "SELECT tenant_id, service_code, COUNT(*) FROM practices
             WHERE concluded_at IS NULL AND legal_deadline IS NOT NULL AND legal_deadline < ?1
             GROUP BY tenant_id, service_code",
        )?
        .query_map([now_ms], |r| {
            Ok(PracticeCount {
                tenant: r.get(0)?,
                service: r.get(1)?,
                status: String::new(),
                count: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let anomalies = conn
        .prepare_cached(
            "SELECT actor, COUNT(*), MAX(recorded_at) FROM events WHERE kind = 'anomaly'
             GROUP BY actor",
        )?
        .query_map([], |r| {
            Ok(AnomalyCount {
                actor: r.get(0)?,
                count: r.get(1)?,
                last_at: r.get::<_, Option<i64>>(2)?.map(from_ms),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let file_len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() as i64);
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let store_bytes = file_len(path) + file_len(Path::new(&wal));
    Ok(OpsSnapshot {
        adapters,
        practices,
        past_deadline,
        store_bytes,
        anomalies,
    })
}
