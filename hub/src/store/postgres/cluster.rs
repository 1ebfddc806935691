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
    let in_flight = lock_and_count(tx, adapter, now).await?;
    let free = i64::from(max_in_flight).saturating_sub(in_flight).max(0);
    Ok(u32::try_from(free).unwrap_or(u32::MAX).min(wanted))
}

/// Whether what is in flight for `adapter` now, counting this
/// transaction's own uncommitted claims, is within `max_in_flight`. For a
/// transaction that claimed first and checks at its end: it takes the
/// adapter's claim lock (held to the commit, as in [`free_slots`]) only for
/// its last statements, not for all of its work. One round trip: the lock
/// and the count go out together and run in that order, so the count sees
/// every claim committed before the lock was granted.
pub(super) async fn within_limit(
    tx: &Tx,
    adapter: &str,
    now: DateTime<Utc>,
    max_in_flight: u32,
) -> Result<bool, StoreError> {
    let in_flight = lock_and_count(tx, adapter, now).await?;
    Ok(in_flight <= i64::from(max_in_flight))
}

/// Counts what is in flight for `adapter` under a lease alive at `now`.
const IN_FLIGHT: &str = "SELECT COUNT(*) FROM jobs WHERE adapter = $1
    AND state IN ('in_flight', 'poll_in_flight') AND lease_expires_at > $2";

/// What is in flight for `adapter` now, as this transaction sees it:
/// without the claim lock, an estimate.
pub(super) async fn in_flight(
    tx: &Tx,
    adapter: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    col(&tx.query_one(IN_FLIGHT, &[&adapter, &ms(now)]).await?, 0)
}

/// Takes `adapter`'s claim lock, then counts what is in flight (a count
/// that, under the lock, every other claimer waits for), in one round trip.
async fn lock_and_count(tx: &Tx, adapter: &str, now: DateTime<Utc>) -> Result<i64, StoreError> {
    let row = tx
        .execute_then_query_one(
            (
                "SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '/' || $2))",
                &[&CLAIM_LOCK_CLASS, &adapter],
            ),
            (IN_FLIGHT, &[&adapter, &ms(now)]),
        )
        .await?;
    col(&row, 0)
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
