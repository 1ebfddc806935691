//! A per-instance circuit breaker: after `failure_threshold` consecutive
//! transient failures the vendor is left alone for `open_for`; then one
//! probe goes through (half-open) and its outcome closes or re-opens it.
//!
//! While open, deliveries are not sent at all: an old back office that is
//! struggling gets time to recover instead of a queue of retries.

use super::config::BreakerConfig;
use crate::adapter::AdapterHealth;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The open period is over; `probing` while the probe is in flight.
    HalfOpen {
        probing: bool,
    },
}

/// The breaker of one adapter instance.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: Arc<Mutex<State>>,
}

/// Leave to send one request; report its outcome with [`Admission::record`].
/// Dropped without a report (the delivery was cancelled), a probe frees its
/// slot so the next delivery probes instead.
#[derive(Debug)]
pub struct Admission {
    breaker: Breaker,
    probe: bool,
    recorded: bool,
}

/// What one request says about the vendor's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The vendor answered (any answer that is not a server fault).
    Healthy,
    /// Connection refused, timeout, 5xx.
    Faulty,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: Arc::new(Mutex::new(State::Closed { failures: 0 })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is still valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to send a request now. `Err` carries how long the breaker stays
    /// open (zero while another probe is in flight).
    pub fn admit(&self) -> Result<Admission, Duration> {
        if self.config.failure_threshold == 0 {
            return Ok(self.admission(false));
        }
        let mut state = self.lock();
        let now = Instant::now();
        match &mut *state {
            State::Closed { .. } => Ok(self.admission(false)),
            State::Open { until } if now < *until => Err(*until - now),
            State::Open { .. } => {
                *state = State::HalfOpen { probing: true };
                Ok(self.admission(true))
            }
            State::HalfOpen { probing: true } => Err(Duration::ZERO),
            State::HalfOpen { probing } => {
                *probing = true;
                Ok(self.admission(true))
            }
        }
    }

    fn admission(&self, probe: bool) -> Admission {
        Admission {
            breaker: self.clone(),
            probe,
            recorded: false,
        }
    }

    fn record(&self, probe: bool, outcome: Outcome) {
        if self.config.failure_threshold == 0 {
            return;
        }
        let mut state = self.lock();
        let open = State::Open {
            until: Instant::now() + self.config.open_for,
        };
        match (&mut *state, outcome) {
            (_, Outcome::Healthy) => *state = State::Closed { failures: 0 },
            (State::Closed { failures }, Outcome::Faulty) => {
                *failures += 1;
                if *failures >= self.config.failure_threshold {
                    tracing::warn!(
                        failures = *failures,
                        open_for = ?self.config.open_for,
                        "circuit breaker open: the vendor is left alone"
                    );
                    *state = open;
                }
            }
            (State::HalfOpen { .. }, Outcome::Faulty) if probe => *state = open,
            // A request admitted before the breaker opened: it changes nothing.
            (_, Outcome::Faulty) => {}
        }
    }

    fn release_probe(&self) {
        if let State::HalfOpen { probing } = &mut *self.lock() {
            *probing = false;
        }
    }

    /// Down while open, Degraded while half-open, Up when closed.
    pub fn health(&self) -> AdapterHealth {
        match &*self.lock() {
            State::Closed { .. } => AdapterHealth::Up,
            State::Open { until } => {
                let now = Instant::now();
                if now < *until {
                    AdapterHealth::Down(format!(
                        "circuit breaker open after {} consecutive failures; next probe in {}s",
                        self.config.failure_threshold,
                        (*until - now).as_secs() + 1
                    ))
                } else {
                    AdapterHealth::Degraded(
                        "circuit breaker half-open: the next delivery probes the vendor".into(),
                    )
                }
            }
            State::HalfOpen { .. } => {
                AdapterHealth::Degraded("circuit breaker half-open: probing the vendor".into())
            }
        }
    }
}

impl Admission {
    /// Reports how the request went.
    pub fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        self.breaker.record(self.probe, outcome);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.breaker.release_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 2,
            open_for,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_a_success_resets() {
        let b = breaker(Duration::from_secs(60));
        b.admit().unwrap().record(Outcome::Faulty);
        b.admit().unwrap().record(Outcome::Healthy);
        b.admit().unwrap().record(Outcome::Faulty);
        assert_eq!(b.health(), AdapterHealth::Up);
        b.admit().unwrap().record(Outcome::Faulty);
        assert_eq!(b.health().state(), "down");
        assert!(b.admit().is_err());
    }

    #[test]
    fn half_open_lets_one_probe_through() {
        let b = breaker(Duration::ZERO);
        b.admit().unwrap().record(Outcome::Faulty);
        b.admit().unwrap().record(Outcome::Faulty);
        assert_eq!(b.health().state(), "degraded");
        let probe = b.admit().unwrap();
        assert_eq!(
            b.admit().unwrap_err(),
            Duration::ZERO,
            "one probe at a time"
        );
        drop(probe);
        let probe = b.admit().expect("a dropped probe frees the slot");
        probe.record(Outcome::Faulty);
        assert!(matches!(*b.lock(), State::Open { .. }));
        b.admit().unwrap().record(Outcome::Healthy);
        assert_eq!(b.health(), AdapterHealth::Up);
    }
}
