//! Closed-loop load: a fixed number of requests in flight, a warm-up, then
//! a measured window recorded in an HDR histogram.

use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What one measured window produced.
#[derive(Debug, Clone)]
pub struct Window {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    pub first_error: Option<String>,
}

impl Window {
    /// Successful operations per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency percentile in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Where a load run is: warming up, measuring, or stopped. Shared with
/// observers (stream subscribers) so they measure the same window.
#[derive(Debug, Default)]
pub struct Phase {
    recording: AtomicBool,
    stop: AtomicBool,
}

impl Phase {
    /// True inside the measured window.
    pub fn measuring(&self) -> bool {
        self.recording.load(Ordering::Relaxed) && !self.stop.load(Ordering::Relaxed)
    }
}

/// Runs `op(i)` from `in_flight` tasks: `warmup` unrecorded, then `duration`
/// recorded. `i` is a counter unique across tasks.
pub async fn run<F, Fut>(in_flight: usize, warmup: Duration, duration: Duration, op: F) -> Window
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    run_in(Arc::default(), in_flight, warmup, duration, op).await
}

/// [`run`], moving `phase` along so others can follow the window.
pub async fn run_in<F, Fut>(
    phase: Arc<Phase>,
    in_flight: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> Window
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let (op, counter, phase) = (Arc::clone(&op), Arc::clone(&counter), Arc::clone(&phase));
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            while !phase.stop.load(Ordering::Relaxed) {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let start = Instant::now();
                let result = op(i).await;
                if !phase.recording.load(Ordering::Relaxed) {
                    continue;
                }
                match result {
                    Ok(()) => {
                        ok += 1;
                        let _ = hist.record(start.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (hist, ok, errors, first_error)
        }));
    }
    tokio::time::sleep(warmup).await;
    phase.recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    phase.stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut window = Window {
        ok: 0,
        errors: 0,
        elapsed,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        first_error: None,
    };
    for t in tasks {
        let (hist, ok, errors, first_error) = t.await.expect("load task");
        window.ok += ok;
        window.errors += errors;
        window.latency.add(hist).expect("same bounds");
        if window.first_error.is_none() {
            window.first_error = first_error;
        }
    }
    window
}
