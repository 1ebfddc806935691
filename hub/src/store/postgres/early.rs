//! Results judged against what earlier ones left, and results that wait
//! for the attempt they answer (see `store::early`). Every function runs
//! under the practice's lock, taken by `state::load`: a result that finds
//! its attempt in flight and the transaction that ends the attempt are
//! ordered by it, so a waiting result is never missed.

use super::state::{self, Loaded};
use super::tx::{Tx, col, owned};
use crate::store::early;
use crate::store::sqlite::rows::ms;
use crate::store::{RecordedAnomaly, StoreError};
use chrono::{DateTime, Utc};
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::InboundResult;
use raccordo_adapters::model::ExternalRef;
use raccordo_domain::plan::{self, Known, Verdict};

/// The references and outcome documents of practice `loaded`.
async fn known(tx: &Tx, loaded: &Loaded) -> Result<Known, StoreError> {
    let [references, documents] = tx
        .flight([
            (
                "SELECT kind, value, system FROM external_refs WHERE practice_id = $1 AND tenant_id = $2",
                &[&loaded.id, &loaded.tenant_id],
            ),
            (
                "SELECT sha256 FROM documents
                 WHERE practice_id = $1 AND tenant_id = $2 AND role = 'outcome'",
                &[&loaded.id, &loaded.tenant_id],
            ),
        ])
        .await?;
    let references = references
        .iter()
        .map(|r| {
            Ok(ExternalRef {
                kind: col(r, 0)?,
                value: col(r, 1)?,
                system: col(r, 2)?,
                issued_at: None,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    let documents = documents
        .iter()
        .map(|r| col(r, 0))
        .collect::<Result<_, StoreError>>()?;
    Ok(Known {
        references,
        documents,
    })
}

/// Judges `reply` of `adapter` against practice `loaded` and persists the
/// plan: applied whole, or an `ANOMALY` event.
pub(super) async fn judge(
    tx: &mut Tx,
    loaded: &mut Loaded,
    reply: &VendorReply,
    adapter: &str,
    now: DateTime<Utc>,
) -> Result<Verdict, StoreError> {
    let known = known(tx, loaded).await?;
    let (plan, verdict) = plan::plan_result(loaded.state.clone(), &known, reply, adapter, now);
    state::persist(tx, loaded, plan, now).await?;
    Ok(verdict)
}

/// Whether delivery `operation_id` of `adapter` is in flight now.
pub(super) async fn in_flight(
    tx: &Tx,
    operation_id: &str,
    tenant_id: &str,
    adapter: &str,
) -> Result<bool, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT 1 FROM jobs WHERE operation_id = $1 AND tenant_id = $2 AND adapter = $3
               AND state = 'in_flight'",
            &[&operation_id, &tenant_id, &adapter],
        )
        .await?
        .is_some())
}

/// Stores `result` to be applied when the attempt of `operation_id` ends.
pub(super) async fn park(
    tx: &Tx,
    result: &InboundResult,
    operation_id: &str,
    loaded: &Loaded,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO early_results (operation_id, practice_id, tenant_id, adapter, receipt, reply, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &operation_id,
            &loaded.id,
            &loaded.tenant_id,
            &result.adapter,
            &result.receipt,
            &early::encode(&result.reply)?,
            &ms(now),
        ],
    )
    .await?;
    if let Some(receipt) = &result.receipt {
        set_outcome(tx, &result.adapter, receipt, early::PENDING).await?;
    }
    Ok(())
}

/// Records what became of the result named by `receipt`.
pub(super) async fn set_outcome(
    tx: &Tx,
    adapter: &str,
    receipt: &str,
    outcome: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE inbound_receipts SET outcome = $1 WHERE adapter = $2 AND receipt = $3",
        &[&outcome, &adapter, &receipt],
    )
    .await?;
    Ok(())
}

/// The results that wait for the attempt of `operation_id` (of
/// `tenant_id`), in arrival order. Read under the practice's lock (in the
/// same flight as taking it, or after): none can be added until the
/// transaction ends.
pub(super) async fn waiting(
    tx: &Tx,
    operation_id: &str,
    tenant_id: &str,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    tx.query(WAITING, &[&operation_id, &tenant_id]).await
}

/// The statement of [`waiting`] (parameters: operation id, tenant), for a
/// caller that sends it in a flight with others.
pub(super) const WAITING: &str = "SELECT practice_id, adapter, receipt, reply FROM early_results
     WHERE operation_id = $1 AND tenant_id = $2 ORDER BY id";

/// Applies, in arrival order, the results that waited for the attempt of
/// `operation_id` (of `tenant_id`), now ended, and deletes them. The
/// caller holds the practice's lock. Returns how many there were and the
/// anomalies they caused.
pub(super) async fn apply_waiting(
    tx: &mut Tx,
    operation_id: &str,
    tenant_id: &str,
    now: DateTime<Utc>,
) -> Result<(usize, Vec<RecordedAnomaly>), StoreError> {
    let rows = waiting(tx, operation_id, tenant_id).await?;
    apply(tx, &rows, operation_id, tenant_id, now).await
}

/// Applies the results `rows` read by [`waiting`] (see [`apply_waiting`]).
pub(super) async fn apply(
    tx: &mut Tx,
    rows: &[tokio_postgres::Row],
    operation_id: &str,
    tenant_id: &str,
    now: DateTime<Utc>,
) -> Result<(usize, Vec<RecordedAnomaly>), StoreError> {
    if rows.is_empty() {
        return Ok((0, Vec::new()));
    }
    let mut anomalies = Vec::new();
    for row in rows {
        let practice_id: &str = col(row, 0)?;
        let adapter: &str = col(row, 1)?;
        let receipt: Option<&str> = col(row, 2)?;
        let reply = early::decode(col(row, 3)?)?;
        let mut loaded = state::load(tx, practice_id).await?;
        let verdict = judge(tx, &mut loaded, &reply, adapter, now).await?;
        if let Some(receipt) = receipt {
            set_outcome(tx, adapter, receipt, early::outcome_of(&verdict)).await?;
        }
        anomalies.extend(early::recorded(adapter, &verdict));
    }
    tx.execute_later(
        "DELETE FROM early_results WHERE operation_id = $1 AND tenant_id = $2",
        owned![operation_id.to_string(), tenant_id.to_string()],
    );
    Ok((rows.len(), anomalies))
}
