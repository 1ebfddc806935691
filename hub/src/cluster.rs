//! This hub instance's place among the instances sharing one database.
//!
//! - **Heartbeat.** Every third of `delivery.lease` the keeper records this
//!   instance alive for one lease ([`Store::heartbeat`]) and learns how many
//!   instances are alive; each adapter is told ([`Adapter::share`]), and
//!   divides the limits set for its vendor as a whole (a request rate) by
//!   that number.
//! - **Singletons.** Work that must run on one instance at a time (scanning
//!   a shared folder, reporting the store gauges) runs on the holder of a
//!   named lease ([`Store::hold_singleton`]), renewed by the keeper; when
//!   its holder stops, the lease runs out and another instance takes it.
//!
//! With the embedded store there is one instance: it is always alone, and
//! holds every singleton.
//!
//! [`Adapter::share`]: raccordo_adapters::Adapter::share

use crate::adapters::AdapterInstance;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// The singleton whose holder reports the store-derived gauges on
/// `/metrics` (the others report none, so sums over instances count once).
pub const STORE_GAUGES: &str = "store-gauges";

/// This instance's heartbeat and singletons.
#[derive(Debug)]
pub struct Cluster {
    owner: String,
    lease: Duration,
    /// Singletons this instance wants, and until when it holds each (as
    /// far as it knows; `None`: not held).
    singletons: Mutex<HashMap<String, Option<DateTime<Utc>>>>,
    /// Live instances at the last heartbeat (this one included).
    live: AtomicU32,
    /// Set by [`leave`](Self::leave): work still running while the hub
    /// stops (a folder scan) takes no singleton again.
    left: AtomicBool,
}

impl Cluster {
    /// The cluster as seen by instance `owner`, whose leases run for
    /// `lease`: alone until its first heartbeat.
    pub fn new(owner: &str, lease: Duration) -> Self {
        Self {
            owner: owner.to_string(),
            lease,
            singletons: Mutex::default(),
            live: AtomicU32::new(1),
            left: AtomicBool::new(false),
        }
    }

    /// Live instances at the last heartbeat, this one included (at least 1).
    pub fn live(&self) -> u32 {
        self.live.load(Ordering::Relaxed).max(1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<DateTime<Utc>>>> {
        self.singletons.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(30))
    }

    /// Whether this instance holds the singleton `name` now. The first ask
    /// registers it (the keeper renews it from then on) and tries to take
    /// it at once; later asks answer from what the keeper last found.
    ///
    /// A holder counts itself holding until a third of a lease before its
    /// lease runs out: if its renewals stop getting through (the database
    /// is unreachable), it stops before another instance may take over.
    pub async fn holds(&self, store: &dyn Store, name: &str) -> bool {
        if self.left.load(Ordering::Relaxed) {
            return false;
        }
        let known = self.lock().get(name).copied();
        let held_until = match known {
            Some(until) => until,
            None => {
                self.lock().insert(name.to_string(), None);
                self.hold(store, name).await
            }
        };
        held_until.is_some_and(|until| Utc::now() + self.lease / 3 < until)
    }

    /// Takes or renews `name`; records and returns until when it is held.
    async fn hold(&self, store: &dyn Store, name: &str) -> Option<DateTime<Utc>> {
        let now = Utc::now();
        let until = self.until(now);
        let held = match store.hold_singleton(name, &self.owner, now, until).await {
            Ok(true) => Some(until),
            Ok(false) => None,
            Err(e) => {
                // Keeps what it had: it runs out by itself.
                tracing::warn!(singleton = name, error = %e, "cannot renew a singleton lease");
                return self.lock().get(name).copied().flatten();
            }
        };
        let was = self.lock().insert(name.to_string(), held).flatten();
        match (was.is_some(), held.is_some()) {
            (false, true) => tracing::info!(singleton = name, "this instance runs it now"),
            (true, false) => {
                tracing::warn!(singleton = name, "another instance took it over")
            }
            _ => {}
        }
        held
    }

    /// One heartbeat: records this instance alive, tells every adapter how
    /// many instances share its vendor, and takes or renews the singletons
    /// this instance wants. Nothing once it left.
    pub async fn beat<'a>(
        &self,
        store: &dyn Store,
        adapters: impl IntoIterator<Item = &'a AdapterInstance>,
    ) {
        if self.left.load(Ordering::Relaxed) {
            return;
        }
        let now = Utc::now();
        match store.heartbeat(&self.owner, now, self.until(now)).await {
            Ok(live) => {
                let live = live.max(1);
                let was = self.live.swap(live, Ordering::Relaxed);
                if was != live {
                    tracing::info!(
                        instances = live,
                        "hub instances alive: shared limits are divided by this number"
                    );
                }
                for instance in adapters {
                    instance.adapter.share(live);
                }
            }
            // The last count stands until a heartbeat gets through.
            Err(e) => tracing::warn!(error = %e, "cannot record this instance's heartbeat"),
        }
        let names: Vec<String> = self.lock().keys().cloned().collect();
        for name in names {
            self.hold(store, &name).await;
        }
    }

    /// Before stopping: gives up every singleton and the heartbeat, so the
    /// other instances take over at once instead of after a lease.
    pub async fn leave(&self, store: &dyn Store) {
        self.left.store(true, Ordering::Relaxed);
        let now = Utc::now();
        let names: Vec<String> = self.lock().drain().map(|(name, _)| name).collect();
        for name in names {
            if let Err(e) = store.hold_singleton(&name, &self.owner, now, now).await {
                tracing::warn!(singleton = %name, error = %e,
                    "cannot give up a singleton; another instance takes it when its lease runs out");
            }
        }
        if let Err(e) = store.heartbeat(&self.owner, now, now).await {
            tracing::warn!(error = %e, "cannot withdraw this instance's heartbeat");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::tests::Schema;
    use async_trait::async_trait;
    use raccordo_adapters::model::Operation;
    use raccordo_adapters::{Adapter, DeliveryError, DeliveryRequest, VendorReply};
    use std::sync::Arc;

    /// An adapter that remembers the last share it was told.
    #[derive(Default)]
    struct Shared(AtomicU32);

    #[async_trait]
    impl Adapter for Shared {
        fn kind(&self) -> &'static str {
            "shared"
        }

        fn supports(&self, _: Operation) -> bool {
            true
        }

        async fn deliver(&self, _: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
            Err(DeliveryError::permanent("not in this test"))
        }

        fn share(&self, instances: u32) {
            self.0.store(instances, Ordering::SeqCst);
        }
    }

    fn instance(adapter: &Arc<Shared>) -> AdapterInstance {
        AdapterInstance {
            name: "tributi".into(),
            adapter: Arc::clone(adapter) as Arc<dyn Adapter>,
            max_concurrency: 1,
            slots: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Waits for `check`, for 15 seconds at most.
    async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
        let start = std::time::Instant::now();
        while !check().await {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Two instances on one database: one reports the store gauges, both
    /// pace at half the rate; the holder dies and the other takes over
    /// once its lease ran out; a clean stop hands over at once.
    #[tokio::test]
    async fn singletons_and_shares_follow_the_instances_alive() {
        let schema = Schema::new().await;
        let (store_a, store_b) = (schema.store(None).await, schema.store(None).await);
        // Long enough that a loaded machine does not lose a lease between
        // two lines of the test; the takeover waits for one to run out.
        let lease = Duration::from_secs(3);
        let (a, b) = (Cluster::new("hub-a", lease), Cluster::new("hub-b", lease));
        let (shared_a, shared_b) = (Arc::new(Shared::default()), Arc::new(Shared::default()));
        let (inst_a, inst_b) = (instance(&shared_a), instance(&shared_b));

        assert!(a.holds(&store_a, STORE_GAUGES).await, "free: taken");
        assert!(!b.holds(&store_b, STORE_GAUGES).await, "hub-a holds it");
        a.beat(&store_a, [&inst_a]).await;
        b.beat(&store_b, [&inst_b]).await;
        assert_eq!((a.live(), b.live()), (1, 2), "hub-a beat before hub-b");
        a.beat(&store_a, [&inst_a]).await;
        assert_eq!(a.live(), 2);
        assert_eq!(shared_a.0.load(Ordering::SeqCst), 2, "half the rate each");
        assert_eq!(shared_b.0.load(Ordering::SeqCst), 2);
        assert!(a.holds(&store_a, STORE_GAUGES).await, "renewed by the beat");
        assert!(!b.holds(&store_b, STORE_GAUGES).await);

        // hub-a dies: no more beats. Once its lease and its heartbeat ran
        // out, hub-b holds the singleton and paces at the whole rate.
        eventually("hub-b taking over", || async {
            b.beat(&store_b, [&inst_b]).await;
            b.holds(&store_b, STORE_GAUGES).await && b.live() == 1
        })
        .await;
        assert_eq!(shared_b.0.load(Ordering::SeqCst), 1);
        // hub-a was only cut off and comes back: the singleton stays.
        a.beat(&store_a, [&inst_a]).await;
        assert!(!a.holds(&store_a, STORE_GAUGES).await);
        assert_eq!(a.live(), 2);

        // hub-b stops cleanly: hub-a takes over at its next beat.
        b.leave(&store_b).await;
        assert!(
            !b.holds(&store_b, STORE_GAUGES).await,
            "a stopping hub takes nothing"
        );
        a.beat(&store_a, [&inst_a]).await;
        assert!(a.holds(&store_a, STORE_GAUGES).await);
        assert_eq!(a.live(), 1);
        assert_eq!(shared_a.0.load(Ordering::SeqCst), 1);
    }
}
