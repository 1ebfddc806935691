//! What operators watch, read in one snapshot (see the SQLite store's `ops`).

use super::tx::{Tx, col};
use crate::store::JobState;
use crate::store::sqlite::rows::{from_ms, ms, parse};
use crate::store::{AdapterBacklog, AnomalyCount, OpsSnapshot, PracticeCount, StoreError};
use chrono::{DateTime, Utc};

pub(super) async fn snapshot(tx: &Tx, now: DateTime<Utc>) -> Result<OpsSnapshot, StoreError> {
    let now_ms = ms(now);
    let mut adapters: Vec<AdapterBacklog> = Vec::new();
    let rows = tx
        .query(
            "SELECT adapter, state, next_attempt_at <= $1 AS ready, COUNT(*), MIN(next_attempt_at)
             FROM jobs WHERE state IN ('due', 'in_flight', 'dead')
             GROUP BY adapter, state, ready ORDER BY adapter",
            &[&now_ms],
        )
        .await?;
    for r in &rows {
        let (adapter, state, ready, count, oldest): (String, &str, bool, i64, i64) =
            (col(r, 0)?, col(r, 1)?, col(r, 2)?, col(r, 3)?, col(r, 4)?);
        if adapters.last().is_none_or(|a| a.adapter != adapter) {
            adapters.push(AdapterBacklog {
                adapter,
                ..Default::default()
            });
        }
        let entry = adapters.last_mut().expect("pushed above");
        match (parse::<JobState>("job state", state)?, ready) {
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
    let practices = tx
        .query(
            "SELECT tenant_id, service_code, status, COUNT(*) FROM practices
             GROUP BY tenant_id, service_code, status",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(PracticeCount {
                tenant: col(r, 0)?,
                service: col(r, 1)?,
                status: col(r, 2)?,
                count: col(r, 3)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let past_deadline = tx
        .query(
            "SELECT tenant_id, service_code, COUNT(*) FROM practices
             WHERE concluded_at IS NULL AND legal_deadline IS NOT NULL AND legal_deadline < $1
             GROUP BY tenant_id, service_code",
            &[&now_ms],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(PracticeCount {
                tenant: col(r, 0)?,
                service: col(r, 1)?,
                status: String::new(),
                count: col(r, 2)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let anomalies = tx
        .query(
            "SELECT actor, COUNT(*), MAX(recorded_at) FROM events WHERE kind = 'anomaly'
             GROUP BY actor",
            &[],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(AnomalyCount {
                actor: col(r, 0)?,
                count: col(r, 1)?,
                last_at: col::<Option<i64>>(r, 2)?.map(from_ms),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // The whole database: the hub's tables are most of it.
    let store_bytes: i64 = col(
        &tx.query_one("SELECT pg_database_size(current_database())", &[])
            .await?,
        0,
    )?;
    Ok(OpsSnapshot {
        adapters,
        practices,
        past_deadline,
        store_bytes,
        anomalies,
    })
}
