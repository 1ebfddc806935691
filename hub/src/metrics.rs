//! Prometheus metrics, served at `/metrics` on the HTTP listener.
//!
//! Every label comes from a bounded set: tenants, services and adapter
//! instances are named in the configuration, outcomes and statuses are
//! enums, RPC names come from the compiled service descriptors. Nothing
//! about a single practice (its id, a fiscal code) is ever a label.
//!
//! Counters and histograms are updated where things happen; gauges that
//! describe the store (jobs due, practices by status, …) are read from it at
//! scrape time, at most once per [`SNAPSHOT_TTL`], so a busy Prometheus
//! cannot turn scrapes into table scans. Several instances sharing one
//! database would each report the same store gauges: only the holder of the
//! `store-gauges` singleton reports them (see [`crate::cluster`]), the
//! others report them empty (and `store_size_bytes` 0), so a sum over
//! instances counts the store once; `store_gauges_reporter` says which
//! instance reports.

use crate::store::OpsSnapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a store snapshot serves scrapes before it is read again.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(5);

/// How a delivery attempt ends (`delivery_attempts_total{outcome}`).
const ATTEMPT_OUTCOMES: [&str; 5] = [
    "delivered",
    "rejection",
    "transient",
    "permanent",
    "outcome_unknown",
];

/// How an inbound result ends (`inbound_results_total{outcome}`).
const INBOUND_OUTCOMES: [&str; 7] = [
    "applied",
    "duplicate",
    "pending",
    "anomaly",
    "uncorrelated",
    "refused",
    "unavailable",
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Latency buckets from 0.5 ms to ~33 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

/// Transactions per commit: 1 … 512.
fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 10))
}

/// `SubmitPractice` results.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubmissionLabels {
    pub tenant: String,
    pub service: String,
    pub mode: String,
    /// accepted | duplicate | invalid | conflict | error
    pub result: String,
}

/// One gRPC method and its status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/package.Service/Method`, or `other` for paths no service declares.
    pub rpc: String,
    /// The gRPC status code name (`Ok`, `InvalidArgument`, …).
    pub code: String,
}

/// An adapter instance.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterLabels {
    pub adapter: String,
}

/// An adapter instance and how something ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub adapter: String,
    /// For attempts: delivered | rejection | transient | permanent |
    /// outcome_unknown. For inbound results: applied | duplicate |
    /// pending | anomaly | uncorrelated | refused | unavailable.
    pub outcome: String,
}

/// An adapter instance and the class of an anomaly.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyLabels {
    pub adapter: String,
    /// late | contradictory
    pub class: String,
}

/// An adapter instance's health state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdapterStateLabels {
    pub adapter: String,
    pub kind: String,
    /// up | degraded | down
    pub state: String,
}

/// Practices of one tenant and service in one administrative status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PracticeLabels {
    pub tenant: String,
    pub service: String,
    pub status: String,
}

/// One tenant and service.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantServiceLabels {
    pub tenant: String,
    pub service: String,
}

/// The hub's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    started: Instant,
    uptime: FloatGauge,
    snapshot_at: Mutex<Option<Instant>>,

    /// `SubmitPractice` calls by tenant, service, mode and result.
    pub submissions: Family<SubmissionLabels, Counter>,
    /// gRPC handling time until the response headers, per method and code.
    pub rpc_duration: HistogramFamily<RpcLabels>,
    /// Delivery attempts by adapter instance and outcome.
    pub delivery_attempts: Family<OutcomeLabels, Counter>,
    /// Delivery attempt duration per adapter instance.
    pub delivery_duration: HistogramFamily<AdapterLabels>,
    /// Failed attempts that were scheduled again.
    pub retries_scheduled: Family<AdapterLabels, Counter>,
    /// Deliveries moved to the dead-letter list.
    pub dead_lettered: Family<AdapterLabels, Counter>,
    /// Attempts running right now.
    pub deliveries_in_flight: Family<AdapterLabels, Gauge>,
    /// The instance's configured concurrency (saturation = in flight / limit).
    pub delivery_concurrency_limit: Family<AdapterLabels, Gauge>,
    /// 1 for the instance's current health state.
    pub adapter_state: Family<AdapterStateLabels, Gauge>,
    /// Results received through callbacks, reply queues and files.
    pub inbound_results: Family<OutcomeLabels, Counter>,
    /// Results recorded as `ANOMALY` events instead of being applied.
    pub anomalies: Family<AnomalyLabels, Counter>,
    /// Deliveries waiting for their next attempt whose time has come.
    pub jobs_due: Family<AdapterLabels, Gauge>,
    /// Deliveries waiting for a later retry.
    pub jobs_scheduled: Family<AdapterLabels, Gauge>,
    /// Age of the oldest delivery that is due and not yet running.
    pub oldest_due_seconds: Family<AdapterLabels, FloatGauge>,
    /// Deliveries in the dead-letter list now.
    pub dead_letters: Family<AdapterLabels, Gauge>,
    /// Practices by administrative status.
    pub practices: Family<PracticeLabels, Gauge>,
    /// Open practices past their legal deadline.
    pub practices_past_deadline: Family<TenantServiceLabels, Gauge>,
    /// Store write transaction duration (group commit included).
    pub store_transaction_duration: Histogram,
    /// Commands committed per transaction.
    pub store_commit_batch: Histogram,
    /// Database file size, write-ahead log included.
    pub store_size_bytes: Gauge,
    /// 1 on the instance that reports the store-derived gauges.
    pub store_gauges_reporter: Gauge,
    /// Hub instances alive at this instance's last heartbeat.
    pub cluster_instances: Gauge,
    /// The adapter instances of the configuration (see [`Metrics::declare`]),
    /// whose store-derived gauges read 0 rather than vanish when idle.
    declared_adapters: Mutex<Vec<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `raccordo_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("raccordo");
        let m = Self {
            started: Instant::now(),
            uptime: FloatGauge::default(),
            snapshot_at: Mutex::new(None),
            submissions: Family::default(),
            rpc_duration: Family::new_with_constructor(latency_histogram),
            delivery_attempts: Family::default(),
            delivery_duration: Family::new_with_constructor(latency_histogram),
            retries_scheduled: Family::default(),
            dead_lettered: Family::default(),
            deliveries_in_flight: Family::default(),
            delivery_concurrency_limit: Family::default(),
            adapter_state: Family::default(),
            inbound_results: Family::default(),
            anomalies: Family::default(),
            jobs_due: Family::default(),
            jobs_scheduled: Family::default(),
            oldest_due_seconds: Family::default(),
            dead_letters: Family::default(),
            store_gauges_reporter: Gauge::default(),
            cluster_instances: Gauge::default(),
            declared_adapters: Mutex::new(Vec::new()),
            practices: Family::default(),
            practices_past_deadline: Family::default(),
            store_transaction_duration: latency_histogram(),
            store_commit_batch: batch_histogram(),
            store_size_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_with_unit(
            "uptime",
            "Time since the hub started",
            Unit::Seconds,
            m.uptime.clone(),
        );
        registry.register(
            "submissions",
            "SubmitPractice calls by tenant, service, mode and result",
            m.submissions.clone(),
        );
        registry.register_with_unit(
            "grpc_request_duration",
            "gRPC handling time until the response headers, per method and status code",
            Unit::Seconds,
            m.rpc_duration.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Delivery attempts by adapter instance and outcome",
            m.delivery_attempts.clone(),
        );
        registry.register_with_unit(
            "delivery_duration",
            "Duration of one delivery attempt (the vendor call) per adapter instance",
            Unit::Seconds,
            m.delivery_duration.clone(),
        );
        registry.register(
            "delivery_retries_scheduled",
            "Failed attempts scheduled to be tried again",
            m.retries_scheduled.clone(),
        );
        registry.register(
            "delivery_dead_lettered",
            "Deliveries moved to the dead-letter list",
            m.dead_lettered.clone(),
        );
        registry.register(
            "deliveries_in_flight",
            "Delivery attempts running now",
            m.deliveries_in_flight.clone(),
        );
        registry.register(
            "delivery_concurrency_limit",
            "Configured concurrent deliveries per adapter instance",
            m.delivery_concurrency_limit.clone(),
        );
        registry.register(
            "adapter_state",
            "1 for the adapter instance's current health state (up, degraded, down)",
            m.adapter_state.clone(),
        );
        registry.register(
            "inbound_results",
            "Results received from vendors (callbacks, reply queues, files) by outcome",
            m.inbound_results.clone(),
        );
        registry.register(
            "anomalies",
            "Vendor results recorded as ANOMALY events and not applied (late, contradictory)",
            m.anomalies.clone(),
        );
        registry.register(
            "jobs_due",
            "Deliveries whose next attempt is due and not yet running",
            m.jobs_due.clone(),
        );
        registry.register(
            "jobs_scheduled",
            "Deliveries waiting for a later retry",
            m.jobs_scheduled.clone(),
        );
        registry.register_with_unit(
            "oldest_due_job_age",
            "How long the oldest due delivery has been waiting",
            Unit::Seconds,
            m.oldest_due_seconds.clone(),
        );
        registry.register(
            "dead_letters",
            "Deliveries in the dead-letter list now",
            m.dead_letters.clone(),
        );
        registry.register(
            "practices",
            "Practices by tenant, service and administrative status",
            m.practices.clone(),
        );
        registry.register(
            "practices_past_legal_deadline",
            "Open practices whose legal deadline has passed",
            m.practices_past_deadline.clone(),
        );
        registry.register_with_unit(
            "store_transaction_duration",
            "Store write transaction duration, commit included",
            Unit::Seconds,
            m.store_transaction_duration.clone(),
        );
        registry.register(
            "store_commit_batch_size",
            "Commands committed together in one store transaction",
            m.store_commit_batch.clone(),
        );
        registry.register_with_unit(
            "store_size",
            "Database size on disk, write-ahead log included",
            Unit::Bytes,
            m.store_size_bytes.clone(),
        );
        registry.register(
            "store_gauges_reporter",
            "1 on the hub instance that reports the store-derived gauges (one per cluster)",
            m.store_gauges_reporter.clone(),
        );
        registry.register(
            "cluster_instances",
            "Hub instances sharing the store alive at this instance's last heartbeat",
            m.cluster_instances.clone(),
        );
        Self { registry, ..m }
    }

    /// Creates, at 0, every series the configuration makes possible (the
    /// handles `get_or_create` returns are dropped at once): per
    /// route, the submissions of each of its tenants by result; per adapter
    /// instance, its attempts by outcome, retries, dead letters, inbound
    /// results and anomalies by class. An alert rule on, say, dead letters
    /// then has a series from the start instead of none until something
    /// fails. Labels come from the configuration only, so the sets stay
    /// bounded by it.
    pub fn declare(&self, config: &crate::config::Config) {
        for route in &config.routes {
            for tenant in &route.tenants {
                for result in ["accepted", "duplicate", "invalid", "conflict", "error"] {
                    drop(self.submissions.get_or_create(&SubmissionLabels {
                        tenant: tenant.clone(),
                        service: route.service.clone(),
                        mode: route.mode.as_str().to_string(),
                        result: result.to_string(),
                    }));
                }
            }
        }
        for adapter in config.adapters.keys() {
            let labels = AdapterLabels {
                adapter: adapter.clone(),
            };
            let outcome = |outcome: &str| OutcomeLabels {
                adapter: adapter.clone(),
                outcome: outcome.to_string(),
            };
            for o in ATTEMPT_OUTCOMES {
                drop(self.delivery_attempts.get_or_create(&outcome(o)));
            }
            for o in INBOUND_OUTCOMES {
                drop(self.inbound_results.get_or_create(&outcome(o)));
            }
            for class in ["late", "contradictory"] {
                drop(self.anomalies.get_or_create(&AnomalyLabels {
                    adapter: adapter.clone(),
                    class: class.to_string(),
                }));
            }
            drop(self.retries_scheduled.get_or_create(&labels));
            drop(self.dead_lettered.get_or_create(&labels));
            drop(self.deliveries_in_flight.get_or_create(&labels));
        }
        *self.declared_adapters.lock().expect("metrics lock") =
            config.adapters.keys().cloned().collect();
        self.fill_declared_adapters();
    }

    /// The store-derived gauges of every declared adapter, at 0 where the
    /// snapshot has nothing for it.
    fn fill_declared_adapters(&self) {
        for adapter in self.declared_adapters.lock().expect("metrics lock").iter() {
            let labels = AdapterLabels {
                adapter: adapter.clone(),
            };
            drop(self.jobs_due.get_or_create(&labels));
            drop(self.jobs_scheduled.get_or_create(&labels));
            drop(self.dead_letters.get_or_create(&labels));
            drop(self.oldest_due_seconds.get_or_create(&labels));
        }
    }

    /// Counts anomalies the store recorded (results that waited for their
    /// attempt and were judged when it ended).
    pub fn count_anomalies(&self, recorded: &[crate::store::RecordedAnomaly]) {
        for a in recorded {
            self.anomalies
                .get_or_create(&AnomalyLabels {
                    adapter: a.adapter.clone(),
                    class: a.class.as_str().to_string(),
                })
                .inc();
        }
    }

    /// Whether the store-derived gauges are older than [`SNAPSHOT_TTL`]; if
    /// so, the caller refreshes them (and this records that it will).
    pub fn snapshot_due(&self) -> bool {
        let mut at = self.snapshot_at.lock().expect("metrics lock");
        match *at {
            Some(t) if t.elapsed() < SNAPSHOT_TTL => false,
            _ => {
                *at = Some(Instant::now());
                true
            }
        }
    }

    /// Empties the store-derived gauges: another instance reports them.
    /// The next [`snapshot_due`](Self::snapshot_due) is at once, for when
    /// this instance reports them again.
    pub fn withhold_snapshot(&self) {
        // Empty, not zero: this instance does not speak for the store.
        self.clear_store_gauges();
        self.store_size_bytes.set(0);
        *self.snapshot_at.lock().expect("metrics lock") = None;
    }

    /// Removes every series of the store-derived gauges.
    fn clear_store_gauges(&self) {
        for family in [&self.jobs_due, &self.jobs_scheduled, &self.dead_letters] {
            family.clear();
        }
        self.oldest_due_seconds.clear();
        self.practices.clear();
        self.practices_past_deadline.clear();
    }

    /// Replaces the store-derived gauges (label sets that vanished go too).
    pub fn apply_snapshot(&self, snapshot: &OpsSnapshot) {
        self.clear_store_gauges();
        for a in &snapshot.adapters {
            let labels = AdapterLabels {
                adapter: a.adapter.clone(),
            };
            self.jobs_due.get_or_create(&labels).set(a.due);
            self.jobs_scheduled.get_or_create(&labels).set(a.scheduled);
            self.dead_letters.get_or_create(&labels).set(a.dead);
            self.oldest_due_seconds
                .get_or_create(&labels)
                .set(a.oldest_due_age.map_or(0.0, |d| d.as_secs_f64()));
        }
        self.fill_declared_adapters();
        for p in &snapshot.practices {
            self.practices
                .get_or_create(&PracticeLabels {
                    tenant: p.tenant.clone(),
                    service: p.service.clone(),
                    status: p.status.clone(),
                })
                .set(p.count);
        }
        for p in &snapshot.past_deadline {
            self.practices_past_deadline
                .get_or_create(&TenantServiceLabels {
                    tenant: p.tenant.clone(),
                    service: p.service.clone(),
                })
                .set(p.count);
        }
        self.store_size_bytes.set(snapshot.store_bytes);
    }

    /// Records an adapter instance's current health.
    pub fn set_adapter_state(&self, adapter: &str, kind: &str, state: &str) {
        for s in ["up", "degraded", "down"] {
            self.adapter_state
                .get_or_create(&AdapterStateLabels {
                    adapter: adapter.to_string(),
                    kind: kind.to_string(),
                    state: s.to_string(),
                })
                .set(i64::from(s == state));
        }
    }

    /// Time since the hub started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The text exposition (OpenMetrics 1.0, which Prometheus reads).
    pub fn encode(&self) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The counter of one delivery outcome.
    pub fn attempt(&self, adapter: &str, outcome: &str) -> Counter {
        self.delivery_attempts
            .get_or_create(&OutcomeLabels {
                adapter: adapter.to_string(),
                outcome: outcome.to_string(),
            })
            .clone()
    }
}

/// The metrics the store's writer thread updates.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    pub transaction_duration: Histogram,
    pub commit_batch: Histogram,
}

impl Metrics {
    /// Handles for the store's writer thread.
    pub fn store(self: &Arc<Self>) -> StoreMetrics {
        StoreMetrics {
            transaction_duration: self.store_transaction_duration.clone(),
            commit_batch: self.store_commit_batch.clone(),
        }
    }
}
