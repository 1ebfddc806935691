//! What the hub instances sharing the database agree on: how much work of
//! an adapter is in flight (its `max_concurrency` holds for the whole
//! cluster), which instance runs each singleton, and how many instances
//! are alive.

use super::tx::{Tx, col, owned};
use crate::store::StoreError;
use crate::store::sqlite::rows::ms;
use chrono::{DateTime, Utc};

/// The first key of the per-adapter claim lock ("RACA"); the second is a
/// hash of the schema and the adapter's name, so hubs in other schemas of
/// the database do not wait on each other. Two names with the same hash
/// only serialize their claims a little more.
const CLAIM_LOCK_CLASS: i32 = 0x5241_4341;

/// Queues the check that what is in flight for `adapter`, counting this
/// transaction's own uncommitted claims, is within `max_in_flight`: sent
/// last, just before the `COMMIT`, by a transaction that claimed first. It
/// takes the adapter's claim lock (held to the commit: the next check
/// counts this transaction's claims) and counts in the server, so the lock
/// is held for the server's work at the commit only, not for round trips
/// to the hub. Over the limit, the transaction fails with an error that
/// [`is_over_limit`] recognizes, and nothing it wrote stands.
pub(super) fn check_within_limit_at_commit(
    tx: &Tx,
    adapter: &str,
    now: DateTime<Utc>,
    max_in_flight: u32,
) {
    tx.execute_at_commit(
        "SELECT raccordo_claim_within_limit($1, $2, $3, $4)",
        owned![
            CLAIM_LOCK_CLASS,
            adapter.to_string(),
            ms(now),
            i64::from(max_in_flight)
        ],
    );
}

/// The SQLSTATE `raccordo_claim_within_limit` raises over the limit.
pub(super) const OVER_LIMIT: &str = "RA001";

/// Whether `e` is the failure of [`check_within_limit_at_commit`].
pub(super) fn is_over_limit(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict(m) if m.ends_with(&format!("({OVER_LIMIT})")))
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
