//! The rules the PostgreSQL store applies across hub instances, kept here
//! too so that both stores answer the same (see the PostgreSQL store's
//! `cluster`). One process owns an embedded database, so nothing here
//! needs a lock: the single writer serializes it all.

use super::rows::ms;
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

/// How many more pieces of work of `adapter` may be claimed now, at most
/// `wanted`: `max_in_flight` minus what is in flight under a lease that has
/// not run out by `now`.
pub(super) fn free_slots(
    conn: &Connection,
    adapter: &str,
    now: DateTime<Utc>,
    wanted: u32,
    max_in_flight: u32,
) -> Result<u32, StoreError> {
    let in_flight: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM jobs WHERE adapter = ?1
               AND state IN ('in_flight', 'poll_in_flight') AND lease_expires_at > ?2",
        )?
        .query_row(params![adapter, ms(now)], |r| r.get(0))?;
    let free = i64::from(max_in_flight).saturating_sub(in_flight).max(0);
    Ok(u32::try_from(free).unwrap_or(u32::MAX).min(wanted))
}

/// Takes or renews the singleton `name` for `owner`; whether it holds it.
pub(super) fn hold_singleton(
    conn: &Connection,
    name: &str,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO singletons (name, owner, expires_at) VALUES (?1, ?2, ?4)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE singletons.owner = excluded.owner OR singletons.expires_at <= ?3
             RETURNING owner",
        )?
        .query_row(params![name, owner, ms(now), ms(until)], |_| Ok(()))
        .optional()?
        .is_some()
        // Renewed to end by `now`: given up, not held.
        && until > now)
}

/// Records `owner` alive until `until`, forgets instances that stopped
/// beating, and counts those alive at `now`.
pub(super) fn heartbeat(
    conn: &Connection,
    owner: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<u32, StoreError> {
    conn.prepare_cached(
        "INSERT INTO hub_instances (id, expires_at) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
    )?
    .execute(params![owner, ms(until)])?;
    conn.prepare_cached("DELETE FROM hub_instances WHERE expires_at <= ?1")?
        .execute([ms(now)])?;
    let live: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM hub_instances")?
        .query_row([], |r| r.get(0))?;
    Ok(u32::try_from(live).unwrap_or(u32::MAX))
}

/// Forgets every singleton holder and every heartbeat: at start, all are a
/// dead process's (one process owns the file).
pub(super) fn forget_instances(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("DELETE FROM singletons; DELETE FROM hub_instances;")?;
    Ok(())
}
