//! What the hub instances sharing the database agree on: how much work of
//! an adapter is in flight (its `max_concurrency` holds for the whole
//! cluster), which instance runs each singleton, and how many instances
//! are alive.

use super::tx::{Tx, col};
use crate::store::StoreError;
use crate::store::sqlite::rows::ms;
use chrono::{DateTime, Utc};

/// The first key of the per-adapter claim lock ("RACA"); the second is a
/// hash of the schema and the adapter's name, so hubs in other schemas of
/// the database do not wait on each other. Two names with the same hash
/// only serialize their claims a little more.
const CLAIM_LOCK_CLASS: i32 = 0x5241_4341;

/// How many more pieces of work of `adapter` may be claimed now, at most
/// `wanted`: `max_in_flight` minus what is in flight under a lease that has
/// not run out by `now`, whoever holds it. Takes the adapter's claim lock
/// first, held until the transaction ends, so that the count stays true
/// until this transaction's own claims are committed.
pub(super) async fn free_slots(
    tx: &Tx,
    adapter: &str,
    now: DateTime<Utc>,
    wanted: u32,
    max_in_flight: u32,
) -> Result<u32, StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '/' || $2))",
        &[&CLAIM_LOCK_CLASS, &adapter],
    )
    .await?;
    let in_flight: i64 = col(
        &tx.query_one(
            "SELECT COUNT(*) FROM jobs WHERE adapter = $1
               AND state IN ('in_flight', 'poll_in_flight') AND lease_expires_at > $2",
            &[&adapter, &ms(now)],
        )
        .await?,
        0,
    )?;
    let free = i64::from(max_in_flight).saturating_sub(in_flight).max(0);
    Ok(u32::try_from(free).unwrap_or(u32::MAX).min(wanted))
}

/// Takes or renews the singleton `name` for `owner`; whether it holds it.
pub(super) async fn hold_singleton(
    tx: &Tx,
    name: &str,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    // One statement: a concurrent taker waits on the row and re-checks it.
    let held = tx
        .query_opt(
            "INSERT INTO singletons (name, owner, expires_at) VALUES ($1, $2, $4)
             ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
             WHERE singletons.owner = EXCLUDED.owner OR singletons.expires_at <= $3
             RETURNING owner",
            &[&name, &owner, &ms(now), &ms(until)],
        )
        .await?;
    // Renewed to end by `now`: given up, not held.
    Ok(held.is_some() && until > now)
}

/// Records `owner` alive until `until`, forgets instances that stopped
/// beating, and counts those alive at `now`.
pub(super) async fn heartbeat(
    tx: &Tx,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<u32, StoreError> {
    tx.execute(
        "INSERT INTO hub_instances (id, expires_at) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at",
        &[&owner, &ms(until)],
    )
    .await?;
    tx.execute(
        "DELETE FROM hub_instances WHERE expires_at <= $1",
        &[&ms(now)],
    )
    .await?;
    let live: i64 = col(
        &tx.query_one("SELECT COUNT(*) FROM hub_instances", &[])
            .await?,
        0,
    )?;
    Ok(u32::try_from(live).unwrap_or(u32::MAX))
}
