//! Results judged against what earlier ones left, and results that wait
//! for the attempt they answer (see `store::early`).

use super::rows::ms;
use super::state::{self, Loaded};
use crate::store::early;
use crate::store::{RecordedAnomaly, StoreError};
use chrono::{DateTime, Utc};
use raccordo_adapters::adapter::InboundResult;
use raccordo_adapters::model::ExternalRef;
use raccordo_domain::plan::{self, Known, Verdict};
use rusqlite::{Connection, OptionalExtension, params};

/// The references and outcome documents of practice `loaded`.
fn known(conn: &Connection, loaded: &Loaded) -> Result<Known, StoreError> {
    let references = conn
        .prepare_cached(
            "SELECT kind, value, system FROM external_refs WHERE practice_id = ?1 AND tenant_id = ?2",
        )?
        .query_map([&loaded.id, &loaded.tenant_id], |r| {
            Ok(ExternalRef {
                kind: r.get(0)?,
                value: r.get(1)?,
                system: r.get(2)?,
                issued_at: None,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let documents = conn
        .prepare_cached(
            "SELECT sha256 FROM documents
             WHERE practice_id = ?1 AND tenant_id = ?2 AND role = 'outcome'",
        )?
        .query_map([&loaded.id, &loaded.tenant_id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Known {
        references,
        documents,
    })
}

/// Judges `reply` of `adapter` against practice `loaded` and persists the
/// plan: applied whole, or an `ANOMALY` event.
pub(super) fn judge(
    conn: &Connection,
    loaded: &mut Loaded,
    reply: &raccordo_adapters::VendorReply,
    adapter: &str,
    now: DateTime<Utc>,
) -> Result<Verdict, StoreError> {
    let known = known(conn, loaded)?;
    let (plan, verdict) = plan::plan_result(loaded.state.clone(), &known, reply, adapter, now);
    state::persist(conn, loaded, plan, now)?;
    Ok(verdict)
}

/// Whether delivery `operation_id` of `adapter` is in flight now: a result
/// about it then waits for the attempt to end.
pub(super) fn in_flight(
    conn: &Connection,
    operation_id: &str,
    tenant_id: &str,
    adapter: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM jobs WHERE operation_id = ?1 AND tenant_id = ?2 AND adapter = ?3
               AND state = 'in_flight'",
        )?
        .query_row([operation_id, tenant_id, adapter], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Stores `result` to be applied when the attempt of `operation_id` ends.
pub(super) fn park(
    conn: &Connection,
    result: &InboundResult,
    operation_id: &str,
    loaded: &Loaded,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO early_results (operation_id, practice_id, tenant_id, adapter, receipt, reply, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        operation_id,
        loaded.id,
        loaded.tenant_id,
        result.adapter,
        result.receipt,
        early::encode(&result.reply)?,
        ms(now),
    ])?;
    if let Some(receipt) = &result.receipt {
        set_outcome(conn, &result.adapter, receipt, early::PENDING)?;
    }
    Ok(())
}

/// Records what became of the result named by `receipt`.
pub(super) fn set_outcome(
    conn: &Connection,
    adapter: &str,
    receipt: &str,
    outcome: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE inbound_receipts SET outcome = ?1 WHERE adapter = ?2 AND receipt = ?3",
    )?
    .execute([outcome, adapter, receipt])?;
    Ok(())
}

/// Applies, in arrival order, the results that waited for the attempt of
/// `operation_id` (of `tenant_id`), now ended, and deletes them. Returns
/// how many there were and the anomalies they caused.
pub(super) fn apply_waiting(
    conn: &Connection,
    operation_id: &str,
    tenant_id: &str,
    now: DateTime<Utc>,
) -> Result<(usize, Vec<RecordedAnomaly>), StoreError> {
    let waiting: Vec<(String, String, Option<String>, String)> = conn
        .prepare_cached(
            "SELECT practice_id, adapter, receipt, reply FROM early_results
             WHERE operation_id = ?1 AND tenant_id = ?2 ORDER BY id",
        )?
        .query_map([operation_id, tenant_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if waiting.is_empty() {
        return Ok((0, Vec::new()));
    }
    let mut anomalies = Vec::new();
    for (practice_id, adapter, receipt, reply) in &waiting {
        let reply = early::decode(reply)?;
        let mut loaded = state::load(conn, practice_id)?;
        let verdict = judge(conn, &mut loaded, &reply, adapter, now)?;
        if let Some(receipt) = receipt {
            set_outcome(conn, adapter, receipt, early::outcome_of(&verdict))?;
        }
        anomalies.extend(early::recorded(adapter, &verdict));
    }
    conn.prepare_cached("DELETE FROM early_results WHERE operation_id = ?1 AND tenant_id = ?2")?
        .execute([operation_id, tenant_id])?;
    Ok((waiting.len(), anomalies))
}
