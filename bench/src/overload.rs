//! `overload`: `SubmitPractice` on the `sync` route at a fixed arrival rate
//! of `--overload-factor` (4) times what the hub sustains.
//!
//! Open loop: requests leave on a schedule whether or not earlier ones were
//! answered, as when many front offices call at once, so the hub must shed
//! what it cannot serve. The sustainable rate is measured first on the same
//! hub (closed loop, `--in-flight`, half of `--duration`). Then, after
//! `--warmup` at the offered rate, the measured window records the latency
//! of the admitted requests from their scheduled start (a queue in the
//! harness counts against the hub, no coordinated omission), every refusal
//! by status code, and the hub's RSS at the start, middle and end.

use crate::Options;
use crate::hub::{self, Hub, fiscal_code, submission};
use crate::load;
use crate::procfs;
use crate::report::Row;
use crate::scenarios::submit_one;
use crate::vendor::Vendor;
use hdrhistogram::Histogram;
use raccordo_proto::v1 as pb;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;

/// Connections the open-loop requests are spread over, as many front
/// offices would be.
const CONNECTIONS: usize = 8;

/// Requests the harness keeps waiting at most: past it, arrivals are
/// skipped and counted, so a stalled hub cannot exhaust the harness.
const MAX_OUTSTANDING: u64 = 50_000;

/// Keys of the open-loop phase start here, apart from the calibration's.
const KEY_OFFSET: u64 = 1 << 40;

/// What the open-loop requests produced.
struct Outcomes {
    measuring: std::sync::atomic::AtomicBool,
    admitted: Mutex<Histogram<u64>>,
    refused: Mutex<Histogram<u64>>,
    unavailable: AtomicU64,
    exhausted: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    outstanding: AtomicU64,
}

impl Outcomes {
    fn new() -> Self {
        let hist = || Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
        Self {
            measuring: false.into(),
            admitted: Mutex::new(hist()),
            refused: Mutex::new(hist()),
            unavailable: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            outstanding: AtomicU64::new(0),
        }
    }

    fn record(&self, result: Result<(), tonic::Status>, since: Duration, measured: bool) {
        if !measured {
            return;
        }
        let micros = since.as_micros() as u64;
        let lock = |h: &Mutex<Histogram<u64>>| {
            let _ = h.lock().expect("histogram lock").record(micros.max(1));
        };
        match result {
            Ok(()) => lock(&self.admitted),
            Err(s) if matches!(s.code(), Code::Unavailable | Code::ResourceExhausted) => {
                lock(&self.refused);
                let counter = match s.code() {
                    Code::Unavailable => &self.unavailable,
                    _ => &self.exhausted,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Err(s) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .expect("error lock")
                    .get_or_insert_with(|| s.to_string());
            }
        }
    }
}

/// One open-loop submission; a `sync` reply must carry the approval.
async fn submit_open(
    mut client: pb::practice_service_client::PracticeServiceClient<Channel>,
    i: u64,
) -> Result<(), tonic::Status> {
    let reply = client
        .submit_practice(submission("SYNC", i, &fiscal_code(i)))
        .await?
        .into_inner();
    match reply.practice {
        Some(p) if p.status == pb::AdministrativeStatus::Approved as i32 => Ok(()),
        _ => Err(tonic::Status::unknown("sync reply not APPROVED")),
    }
}

/// Runs the scenario on a fresh hub with an empty store.
pub async fn overload(o: &Options, vendor: &Vendor, bin: Option<&Path>) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let (grpc, http) = hub::listen_addrs();
    let config = hub::write_config(dir.path(), vendor.addr, grpc, http)?;
    let hub = Hub::start(&config, grpc, bin, &o.hub_log).await?;

    // What the hub sustains here and now.
    let client = pb::practice_service_client::PracticeServiceClient::new(hub.channel.clone());
    let acked = Arc::new(AtomicU64::new(0));
    let calibration = load::run(o.in_flight, o.warmup, o.duration / 2, move |i| {
        submit_one(client.clone(), "SYNC", i, Arc::clone(&acked))
    })
    .await;
    let sustainable = calibration.rate();
    anyhow::ensure!(
        sustainable > 0.0,
        "the hub served nothing in the calibration: {:?}",
        calibration.first_error
    );
    let rate = sustainable * o.overload_factor;

    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let channel = Channel::from_shared(format!("http://{grpc}"))?
            .connect()
            .await?;
        clients.push(pb::practice_service_client::PracticeServiceClient::new(
            channel,
        ));
    }
    let outcomes = Arc::new(Outcomes::new());
    let rss = || hub.pid.and_then(procfs::rss_mib).map_or(f64::NAN, |r| r.0);

    let total = o.warmup + o.duration;
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut sent, mut skipped, mut measured_sent) = (0u64, 0u64, 0u64);
    let mut samples: Vec<f64> = Vec::new();
    let (mut cpu_window, mut own_cpu_window) = (None, None);
    loop {
        ticks.tick().await;
        let now = start.elapsed();
        if now >= total {
            break;
        }
        let measuring = now >= o.warmup;
        if measuring && !outcomes.measuring.swap(true, Ordering::Relaxed) {
            samples.push(rss());
            cpu_window = hub.pid.and_then(procfs::cpu_seconds);
            own_cpu_window = procfs::cpu_seconds(std::process::id());
        }
        if samples.len() == 1 && now >= o.warmup + o.duration / 2 {
            samples.push(rss());
        }
        // Every arrival due by now leaves now: a fixed rate, whatever the
        // hub answers.
        let due = (now.as_secs_f64() * rate) as u64;
        while sent < due {
            let scheduled = start + Duration::from_secs_f64(sent as f64 / rate);
            sent += 1;
            if outcomes.outstanding.load(Ordering::Relaxed) >= MAX_OUTSTANDING {
                skipped += 1;
                continue;
            }
            if measuring {
                measured_sent += 1;
            }
            outcomes.outstanding.fetch_add(1, Ordering::Relaxed);
            let client = clients[(sent % CONNECTIONS as u64) as usize].clone();
            let outcomes = Arc::clone(&outcomes);
            tokio::spawn(async move {
                let result = submit_open(client, KEY_OFFSET + sent).await;
                outcomes.record(result, scheduled.elapsed(), measuring);
                outcomes.outstanding.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    samples.push(rss());
    let window = start.elapsed().saturating_sub(o.warmup);
    let cpu_end = hub.pid.and_then(procfs::cpu_seconds);
    let own_cpu_end = procfs::cpu_seconds(std::process::id());
    // Let the requests still out come back (bounded by the route deadline).
    let drain = Instant::now();
    while outcomes.outstanding.load(Ordering::Relaxed) > 0
        && drain.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let peak = hub.pid.and_then(procfs::rss_mib).map(|r| r.1);
    hub.stop().await;

    if let Some(e) = outcomes.first_error.lock().expect("error lock").as_ref() {
        eprintln!("  first error: {e}");
    }
    let admitted = outcomes.admitted.lock().expect("histogram lock").clone();
    let refused = outcomes.refused.lock().expect("histogram lock").clone();
    let secs = window.as_secs_f64();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let per_s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / secs;
    let answered = (admitted.len() + refused.len()).max(1) as f64;
    let sample = |i: usize| samples.get(i).copied().unwrap_or(f64::NAN);
    let sent_all = sent.max(1) as f64;
    let mut notes = vec![
        ("offered/s".into(), measured_sent as f64 / secs),
        ("sustainable/s".into(), sustainable),
        ("refused %".into(), refused.len() as f64 * 100.0 / answered),
        ("UNAVAILABLE/s".into(), per_s(&outcomes.unavailable)),
        ("RESOURCE_EXHAUSTED/s".into(), per_s(&outcomes.exhausted)),
        ("refusal p99 ms".into(), ms(&refused, 0.99)),
        ("RSS start MiB".into(), sample(0)),
        ("RSS middle MiB".into(), sample(1)),
        ("RSS end MiB".into(), sample(2)),
        ("skipped %".into(), skipped as f64 * 100.0 / sent_all),
    ];
    if let (Some(a), Some(b)) = (cpu_window, cpu_end) {
        notes.push(("hub cores".into(), (b - a) / secs));
    }
    if let (Some(a), Some(b)) = (own_cpu_window, own_cpu_end) {
        notes.push(("harness cores".into(), (b - a) / secs));
    }
    Ok(Row {
        rate: admitted.len() as f64 / secs,
        p50_ms: ms(&admitted, 0.5),
        p99_ms: ms(&admitted, 0.99),
        errors: outcomes.errors.load(Ordering::Relaxed),
        // Per answered call (admitted or refused) of the window.
        cpu_us_per_op: cpu_window
            .zip(cpu_end)
            .map(|(a, b)| (b - a) * 1e6 / answered),
        peak_rss_mib: peak,
        notes,
    })
}
