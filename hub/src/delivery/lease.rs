//! This hub instance's leases on the attempts it is running.
//!
//! Every claim (by a worker, or by a synchronous submission delivering
//! inline) is held by a lease of this instance. While an attempt runs, its
//! operation id is in [`Leases`]; one keeper task renews all of them in one
//! statement every third of the lease, and sweeps the leases that ran out
//! (this instance's or any other's). An attempt that ends without recording
//! its result (the adapter panicked, the payload could not be loaded, the
//! database refused the record) leaves the set, its lease is no longer
//! renewed, and the sweep makes the job due again: nothing stays in flight.

use crate::practices::PracticeService;
use crate::store::{Lease, Store};
use chrono::Utc;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The attempts this instance runs, by operation id.
#[derive(Debug)]
pub struct Leases {
    lease: Lease,
    running: Mutex<HashMap<String, Running>>,
}

#[derive(Debug, Default)]
struct Running {
    /// Tasks running the operation (a re-claim after a lost lease may run
    /// next to the slow attempt that lost it).
    tasks: usize,
    /// The last renewal did not extend the lease.
    unrenewed: bool,
    /// Two renewals in a row found the lease gone; said once.
    lost: bool,
}

impl Leases {
    /// Leases of `duration` for a new instance id (a fresh UUID: a process
    /// that restarts is another owner).
    pub fn new(duration: Duration) -> Self {
        Self {
            lease: Lease {
                owner: uuid::Uuid::new_v4().to_string(),
                duration,
            },
            running: Mutex::default(),
        }
    }

    /// This hub instance's id, the owner of its leases.
    pub fn owner(&self) -> &str {
        &self.lease.owner
    }

    /// The terms every claim of this instance takes.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Marks `operation_id` running until the returned guard is dropped
    /// (also when the task running it panics).
    pub fn hold(self: &Arc<Self>, operation_id: &str) -> Held {
        self.lock()
            .entry(operation_id.to_string())
            .or_default()
            .tasks += 1;
        Held {
            leases: Arc::clone(self),
            operation_id: operation_id.to_string(),
        }
    }

    /// The operations running now.
    pub fn running(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renews the leases of every running attempt, in one statement, and
    /// says once for each attempt that its lease was lost. Its result is
    /// still recorded when it comes (see [`Store::finish_attempt`]).
    pub async fn renew(&self, store: &dyn Store) {
        let running = self.running();
        if running.is_empty() {
            return;
        }
        let until = self.lease.until(Utc::now());
        match store.renew_leases(self.owner(), &running, until).await {
            Ok(held) => {
                for op in self.lost_now(&running, &held) {
                    tracing::warn!(operation_id = %op, owner = %self.lease.owner,
                        "the lease of a running attempt was lost: the delivery may be sent again \
                         with the same operation id; this attempt's answer is still recorded");
                }
            }
            // Not fatal: the leases run for a while yet, and the next
            // renewal may get through.
            Err(e) => {
                tracing::warn!(error = %e, count = running.len(), "cannot renew delivery leases")
            }
        }
    }
}

impl Leases {
    /// After a renewal of `running` that extended `held`: the attempts
    /// whose lease is now known lost, each named once. An attempt whose
    /// lease a renewal did not extend is lost only if the next renewal
    /// finds it still running: the first miss is usually an attempt that
    /// has just recorded its result (its job is no longer in flight; the
    /// renewal may even have waited for that commit on the job's row) and
    /// leaves the set a moment later. A lost attempt that ends before the
    /// next renewal is reported when its result is recorded instead.
    fn lost_now(&self, running: &[String], held: &[String]) -> Vec<String> {
        let mut map = self.lock();
        let mut lost = Vec::new();
        for op in running {
            let Some(r) = map.get_mut(op) else { continue };
            if held.contains(op) {
                r.unrenewed = false;
            } else if !r.unrenewed {
                r.unrenewed = true;
            } else if !r.lost {
                r.lost = true;
                lost.push(op.clone());
            }
        }
        lost
    }
}

/// An attempt running under this instance's lease.
#[derive(Debug)]
pub struct Held {
    leases: Arc<Leases>,
    operation_id: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut map = self.leases.lock();
        if let Some(r) = map.get_mut(&self.operation_id) {
            r.tasks -= 1;
            if r.tasks == 0 {
                map.remove(&self.operation_id);
            }
        }
    }
}

/// Renews this instance's leases and sweeps expired ones (anyone's) every
/// third of the lease, until aborted (after the last attempts ended). Work
/// made due again wakes the workers. It also beats this instance's
/// heartbeat and renews its singletons (see [`crate::cluster`]).
pub fn spawn_keeper(service: Arc<PracticeService>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let leases = Arc::clone(service.leases());
        let mut tick = tokio::time::interval(leases.lease().duration / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            leases.renew(service.store().as_ref()).await;
            service
                .cluster()
                .beat(service.store().as_ref(), service.adapters().values())
                .await;
            match service.store().expire_leases(Utc::now()).await {
                Ok(expired) if !expired.is_empty() => {
                    service.metrics().count_anomalies(&expired.anomalies);
                    tracing::warn!(
                        due_again = expired.due_again,
                        dead_lettered = expired.dead_lettered,
                        polls = expired.polls,
                        anomalies = expired.anomalies.len(),
                        "delivery leases ran out without a result: made due again (OUTCOME_UNKNOWN, \
                         same operation ids)"
                    );
                    for name in service.adapters().keys() {
                        service.wake(name);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot sweep expired delivery leases"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_lost_when_two_renewals_in_a_row_miss_it_and_said_once() {
        let leases = Arc::new(Leases::new(Duration::from_secs(3)));
        let (a, b) = ("op-a".to_string(), "op-b".to_string());
        let _a = leases.hold(&a);
        let held_b = leases.hold(&b);
        let running = vec![a.clone(), b.clone()];
        // Both miss once: an attempt that has just recorded its result
        // looks like this.
        assert!(leases.lost_now(&running, &[]).is_empty());
        // b ended meanwhile; a is missed again: lost, once.
        drop(held_b);
        assert_eq!(leases.lost_now(&running, &[]), std::slice::from_ref(&a));
        assert!(leases.lost_now(&running, &[]).is_empty());
        // A renewal that extends it resets the count of misses.
        let c = "op-c".to_string();
        let _c = leases.hold(&c);
        let running = vec![c.clone()];
        assert!(leases.lost_now(&running, &[]).is_empty());
        assert!(
            leases
                .lost_now(&running, std::slice::from_ref(&c))
                .is_empty()
        );
        assert!(leases.lost_now(&running, &[]).is_empty());
        assert_eq!(leases.lost_now(&running, &[]), [c]);
    }
}
