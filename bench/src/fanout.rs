//! Fan-out: many `WatchPractices` subscribers (tenant-wide, live from the
//! current cursor) spread over a few HTTP/2 connections, as dashboards
//! would be, while deferred submissions make practices change state.

use crate::Options;
use crate::hub::{self, Hub, TENANT, fiscal_code, submission};
use crate::load::{self, Phase};
use crate::procfs;
use crate::report::{Footprint, Row};
use crate::vendor::Vendor;
use hdrhistogram::Histogram;
use raccordo_proto::v1 as pb;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

/// Delays a subscriber keeps before adding them to the shared histogram:
/// one lock per batch instead of one per event.
const DELAY_BATCH: usize = 1024;

/// What every subscriber adds to.
struct Shared {
    /// `recorded_at`-to-arrival delay of events received in the window, µs.
    delay: Mutex<Histogram<u64>>,
    /// Conclusions (status APPROVED) seen, summed over subscribers.
    concluded: AtomicU64,
    /// Subscribers whose stream failed or ended.
    failed: AtomicU64,
}

/// One subscriber's account, returned when it stops.
#[derive(Debug, Default)]
struct Tally {
    events: u64,
    in_window: u64,
    concluded: u64,
    out_of_order: u64,
    error: Option<String>,
}

/// Runs the fan-out scenario on a fresh hub with an empty store.
///
/// Every subscriber must receive the conclusion of every acknowledged
/// practice (the harness waits for it after the load stops); a subscriber
/// that fails, receives nothing in the window, sees cursors go backwards or
/// misses a conclusion counts as an error.
pub async fn fanout(
    o: &Options,
    vendor: &Vendor,
    bin: Option<&Path>,
    footprint: &mut Footprint,
) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let (grpc, http) = hub::listen_addrs();
    let config = hub::write_config(dir.path(), vendor.addr, grpc, http)?;
    let hub = Hub::start(&config, grpc, bin, &o.hub_log).await?;
    footprint.empty_store_started(&hub).await;

    // One HTTP/2 connection per channel; subscribers share them round-robin.
    let mut channels = Vec::with_capacity(o.connections.max(1));
    for _ in 0..o.connections.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{grpc}"))?
                .connect()
                .await?,
        );
    }
    let phase = Arc::new(Phase::default());
    let shared = Arc::new(Shared {
        delay: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        concluded: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(o.subscribers.max(1));
    let subscribers: Vec<_> = (0..o.subscribers)
        .map(|n| {
            tokio::spawn(subscribe(
                channels[n % channels.len()].clone(),
                Arc::clone(&phase),
                Arc::clone(&shared),
                ready_tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    // A subscription is registered once its response headers arrived: only
    // then does the load start, so every subscriber sees every practice.
    let subscribing = Instant::now();
    for _ in 0..o.subscribers {
        let ready = tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await;
        match ready {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => anyhow::bail!("a subscription failed: {e}"),
            Ok(None) => anyhow::bail!("a subscriber stopped before subscribing"),
            Err(_) => anyhow::bail!("subscribing took longer than 120 s"),
        }
    }
    let subscribe_seconds = subscribing.elapsed().as_secs_f64();

    let cpu_before = hub.pid.and_then(procfs::cpu_seconds);
    let own_cpu_before = procfs::cpu_seconds(std::process::id());
    let load_started = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    let client = pb::practice_service_client::PracticeServiceClient::new(hub.channel.clone());
    let acked_in = Arc::clone(&acked);
    let w = load::run_in(
        Arc::clone(&phase),
        o.in_flight,
        o.warmup,
        o.duration,
        move |i| {
            let mut client = client.clone();
            let acked = Arc::clone(&acked_in);
            async move {
                client
                    .submit_practice(submission("DEFERRED", i, &fiscal_code(i)))
                    .await
                    .map_err(|e| e.to_string())?;
                acked.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        },
    )
    .await;

    // Every subscriber must see every acknowledged practice concluded.
    let expected = acked.load(Ordering::Relaxed) * o.subscribers as u64;
    let catching_up = Instant::now();
    let deadline = catching_up + Duration::from_secs(300);
    while shared.concluded.load(Ordering::Relaxed) < expected
        && shared.failed.load(Ordering::Relaxed) == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let caught_up = catching_up.elapsed();
    let cpu_after = hub.pid.and_then(procfs::cpu_seconds);
    let own_cpu_after = procfs::cpu_seconds(std::process::id());
    let wall = load_started.elapsed().as_secs_f64();
    let peak = hub.pid.and_then(procfs::rss_mib).map(|r| r.1);

    let _ = stop_tx.send(true);
    let mut tallies = Vec::with_capacity(subscribers.len());
    for s in subscribers {
        tallies.push(s.await?);
    }
    hub.stop().await;

    let practices = acked.load(Ordering::Relaxed);
    let received: u64 = tallies.iter().map(|t| t.events).sum();
    let in_window: u64 = tallies.iter().map(|t| t.in_window).sum();
    let mut errors = w.errors;
    let mut first_error = w.first_error.clone();
    let mut note = |count: u64, what: String| {
        if count > 0 {
            errors += count;
            first_error.get_or_insert(what);
        }
    };
    let failed: Vec<&String> = tallies.iter().filter_map(|t| t.error.as_ref()).collect();
    note(
        failed.len() as u64,
        format!(
            "{} subscriber streams failed, first: {}",
            failed.len(),
            failed.first().map_or("", |e| e.as_str())
        ),
    );
    let silent = tallies.iter().filter(|t| t.in_window == 0).count() as u64;
    note(
        silent,
        format!("{silent} subscribers received nothing in the window"),
    );
    let short = tallies.iter().filter(|t| t.concluded < practices).count() as u64;
    note(
        short,
        format!(
            "{short} subscribers missed conclusions ({practices} practices acknowledged, waited {:.1} s)",
            caught_up.as_secs_f64()
        ),
    );
    let backwards: u64 = tallies.iter().map(|t| t.out_of_order).sum();
    note(
        backwards,
        format!("{backwards} events arrived with a cursor going backwards"),
    );
    if let Some(e) = &first_error {
        eprintln!("  first error: {e}");
    }

    let delay = shared.delay.lock().expect("delay histogram").clone();
    let ms = |q: f64| delay.value_at_quantile(q) as f64 / 1000.0;
    let mut row = Row {
        rate: in_window as f64 / w.elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        errors,
        cpu_us_per_op: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| (b - a) * 1e6 / received.max(1) as f64),
        peak_rss_mib: peak,
        notes: vec![
            ("subscribed in s".into(), subscribe_seconds),
            ("submitted/s".into(), w.rate()),
            ("submit p50 ms".into(), w.ms(0.5)),
            ("submit p99 ms".into(), w.ms(0.99)),
            (
                "events/practice".into(),
                received as f64 / (practices * o.subscribers as u64).max(1) as f64,
            ),
            ("caught up s".into(), caught_up.as_secs_f64()),
        ],
    };
    // Who used the CPU: the hub, or the harness decoding every stream.
    if let Some((a, b)) = cpu_before.zip(cpu_after) {
        row.notes.push(("hub cores".into(), (b - a) / wall));
    }
    if let Some((a, b)) = own_cpu_before.zip(own_cpu_after) {
        row.notes.push(("harness cores".into(), (b - a) / wall));
    }
    Ok(row)
}

/// One dashboard: subscribes tenant-wide from the current cursor, reports
/// when subscribed, then counts what arrives until told to stop.
async fn subscribe(
    channel: Channel,
    phase: Arc<Phase>,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut client = pb::practice_service_client::PracticeServiceClient::new(channel);
    let request = pb::WatchPracticesRequest {
        tenant_id: TENANT.into(),
        after_cursor: 0,
        ..Default::default()
    };
    let mut stream = match client.watch_practices(request).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            let _ = ready.send(Err(e.to_string())).await;
            tally.error = Some(e.to_string());
            return tally;
        }
    };
    let _ = ready.send(Ok(())).await;
    drop(ready);
    let mut delays = Vec::with_capacity(DELAY_BATCH);
    let mut last_cursor = 0;
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            _ = stop.wait_for(|s| *s) => break,
        };
        let event = match message {
            Ok(Some(e)) => e,
            Ok(None) => {
                tally.error = Some("the stream ended".into());
                break;
            }
            Err(status) => {
                tally.error = Some(status.to_string());
                break;
            }
        };
        let received = SystemTime::now();
        tally.events += 1;
        if event.cursor <= last_cursor {
            tally.out_of_order += 1;
        }
        last_cursor = event.cursor;
        if event.kind == pb::EventKind::StatusChanged as i32
            && event.to_status == pb::AdministrativeStatus::Approved as i32
        {
            tally.concluded += 1;
            shared.concluded.fetch_add(1, Ordering::Relaxed);
        }
        if phase.measuring() {
            tally.in_window += 1;
            // The hub stamps recorded_at when it prepares the write (before
            // the writer's queue and the group commit) and stores it in
            // milliseconds: the delay is an upper bound of commit to
            // arrival, up to 1 ms long from the truncation alone.
            if let Some(recorded) = event.recorded_at.and_then(|t| SystemTime::try_from(t).ok()) {
                let delay = received.duration_since(recorded).unwrap_or_default();
                delays.push((delay.as_micros() as u64).max(1));
            }
            if delays.len() == DELAY_BATCH {
                flush(&shared, &mut delays);
            }
        }
    }
    flush(&shared, &mut delays);
    if tally.error.is_some() {
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

fn flush(shared: &Shared, delays: &mut Vec<u64>) {
    if delays.is_empty() {
        return;
    }
    let mut h = shared.delay.lock().expect("delay histogram");
    for d in delays.drain(..) {
        let _ = h.record(d);
    }
}
