//! Pacing requests towards one vendor: a token bucket (`rate_limit`) and
//! the pauses the vendor asks for (`Retry-After` on 429/503,
//! `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`). Concurrency is
//! bounded separately, by the hub's worker slots.

use super::config::RateLimitConfig;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    /// May go negative: each caller reserves its token and waits its turn.
    tokens: f64,
    refilled: Instant,
}

#[derive(Debug, Default)]
struct State {
    bucket: Option<Bucket>,
    paused_until: Option<Instant>,
}

/// The pacing state of one adapter instance.
#[derive(Debug, Clone)]
pub struct Limiter {
    rate: Option<RateLimitConfig>,
    max_wait: Duration,
    state: Arc<Mutex<State>>,
}

impl Limiter {
    /// `rate` = none means only the vendor's own pauses apply. A request
    /// never waits here longer than `max_wait`: beyond that the delivery
    /// fails (transient, not sent) and the hub schedules it for later.
    pub fn new(rate: Option<RateLimitConfig>, max_wait: Duration) -> Self {
        let bucket = rate.as_ref().map(|r| Bucket {
            tokens: f64::from(r.burst.max(1)),
            refilled: Instant::now(),
        });
        Self {
            rate,
            max_wait,
            state: Arc::new(Mutex::new(State {
                bucket,
                paused_until: None,
            })),
        }
    }

    /// Waits until a request may leave. `Err(d)`: it would have to wait `d`,
    /// longer than allowed; nothing is reserved.
    pub async fn acquire(&self) -> Result<(), Duration> {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let pause = state
                .paused_until
                .map_or(Duration::ZERO, |u| u.saturating_duration_since(now));
            let mut token_wait = Duration::ZERO;
            if let (Some(rate), Some(bucket)) = (&self.rate, state.bucket.as_mut()) {
                let per_sec = rate.per_second;
                let burst = f64::from(rate.burst.max(1));
                let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
                bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
                bucket.refilled = now;
                if bucket.tokens < 1.0 {
                    token_wait = Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec);
                }
            }
            let wait = pause.max(token_wait);
            if wait > self.max_wait {
                return Err(wait);
            }
            if let Some(bucket) = state.bucket.as_mut() {
                bucket.tokens -= 1.0;
            }
            wait
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// No request leaves before `d` from now (the vendor asked for it).
    pub fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.paused_until.is_none_or(|u| u < until) {
            state.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bucket_spaces_requests_after_the_burst() {
        let l = Limiter::new(
            Some(RateLimitConfig {
                per_second: 20.0,
                burst: 2,
            }),
            Duration::from_secs(10),
        );
        let start = Instant::now();
        for _ in 0..4 {
            l.acquire().await.unwrap();
        }
        // Two from the burst, then one every 50 ms.
        assert!(start.elapsed() >= Duration::from_millis(95));
    }

    #[tokio::test]
    async fn pauses_beyond_max_wait_are_refused() {
        let l = Limiter::new(None, Duration::from_secs(1));
        l.pause(Duration::from_secs(30));
        let d = l.acquire().await.unwrap_err();
        assert!(d > Duration::from_secs(29));
    }
}
