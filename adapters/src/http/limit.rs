//! Pacing requests towards one vendor: a token bucket (`rate_limit`) and
//! the pauses the vendor asks for (`Retry-After` on 429/503,
//! `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`). Concurrency is
//! bounded separately, by the hub's worker slots.
//!
//! The configured rate is the vendor's, for every hub instance sending to
//! it: with `n` instances alive ([`Limiter::share`]) each paces at `1/n` of
//! the rate and of the burst (at least one request, else none could ever
//! leave).

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

#[derive(Debug)]
struct State {
    bucket: Option<Bucket>,
    paused_until: Option<Instant>,
    /// Hub instances sharing the rate (this one included).
    instances: u32,
}

impl State {
    /// This instance's (rate per second, bucket size) of `rate`.
    fn share_of(&self, rate: &RateLimitConfig) -> (f64, f64) {
        let n = f64::from(self.instances.max(1));
        let burst = (f64::from(rate.burst.max(1)) / n).max(1.0);
        (rate.per_second / n, burst)
    }
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
                instances: 1,
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
            let share = self.rate.as_ref().map(|r| state.share_of(r));
            if let (Some((per_sec, burst)), Some(bucket)) = (share, state.bucket.as_mut()) {
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

    /// Paces at `1 / instances` of the rate and the burst from now on (the
    /// hub instances alive, this one included). Tokens beyond the new
    /// bucket size are dropped at once.
    pub fn share(&self, instances: u32) {
        let Some(rate) = &self.rate else { return };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Refilled at the old share up to now, the new one from now on.
        let (per_sec, cap) = state.share_of(rate);
        let now = Instant::now();
        if let Some(bucket) = state.bucket.as_mut() {
            let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * per_sec).min(cap);
            bucket.refilled = now;
        }
        state.instances = instances.max(1);
        let (_, cap) = state.share_of(rate);
        if let Some(bucket) = state.bucket.as_mut() {
            bucket.tokens = bucket.tokens.min(cap);
        }
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

    /// Requests that may leave at once (nothing waits: `max_wait` is zero),
    /// and the wait the next one would need.
    async fn immediate(l: &Limiter) -> (usize, Duration) {
        let mut n = 0;
        loop {
            match l.acquire().await {
                Ok(()) => n += 1,
                Err(wait) => return (n, wait),
            }
        }
    }

    #[tokio::test]
    async fn instances_share_the_rate_and_the_burst() {
        let rate = RateLimitConfig {
            per_second: 10.0,
            burst: 4,
        };
        let alone = Limiter::new(Some(rate.clone()), Duration::ZERO);
        let (sent, wait) = immediate(&alone).await;
        assert_eq!(sent, 4, "the whole burst");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");

        let one_of_two = Limiter::new(Some(rate.clone()), Duration::ZERO);
        one_of_two.share(2);
        let (sent, wait) = immediate(&one_of_two).await;
        assert_eq!(sent, 2, "half the burst");
        // Half the rate: a token every 200 ms.
        assert!(wait > Duration::from_millis(150), "{wait:?}");

        // More instances than the burst: one request each, not none.
        let one_of_six = Limiter::new(Some(rate), Duration::ZERO);
        one_of_six.share(6);
        assert_eq!(immediate(&one_of_six).await.0, 1);
        // Alone again: the full rate from now on.
        one_of_six.share(1);
        let (_, wait) = immediate(&one_of_six).await;
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
    }

    #[tokio::test]
    async fn pauses_beyond_max_wait_are_refused() {
        let l = Limiter::new(None, Duration::from_secs(1));
        l.pause(Duration::from_secs(30));
        let d = l.acquire().await.unwrap_err();
        assert!(d > Duration::from_secs(29));
    }
}
