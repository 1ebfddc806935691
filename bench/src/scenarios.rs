//! The scenarios and the suite that alternates them.

use crate::Options;
use crate::hub::{self, Hub, TENANT, fiscal_code, submission};
use crate::load;
use crate::procfs;
use crate::report::{Row, table};
use crate::vendor::Vendor;
use raccordo::config::{Mode, Synchronous};
use raccordo::domain::practice::{NewPractice, PracticeContent};
use raccordo::store::Store;
use raccordo::store::sqlite::SqliteStore;
use raccordo_adapters::model::{Applicant, ChannelInfo, Person, Subject};
use raccordo_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The applicant whose folder holds 100 practices in the read scenario.
const FOLDER_OWNER: u64 = 7;

/// Runs every selected scenario `runs` times, alternating, and renders the medians.
pub async fn run_suite(o: &Options) -> anyhow::Result<String> {
    let vendor = Vendor::start().await?;
    let bin = hub_binary(o)?;
    let mut results: Vec<(String, Vec<Row>)> = o
        .scenarios
        .iter()
        .map(|s| (s.clone(), Vec::new()))
        .collect();
    let seeded = if o.scenarios.iter().any(|s| s == "reads") {
        Some(seed(o.store_size).await?)
    } else {
        None
    };
    let mut footprint = Vec::new();
    for run in 1..=o.runs {
        for (name, rows) in results.iter_mut() {
            eprintln!("run {run}/{}: {name}", o.runs);
            let row = match name.as_str() {
                "ceiling" => ceiling(o, &vendor).await?,
                "sync" => submit(o, &vendor, bin.as_deref(), "SYNC", &mut footprint).await?,
                "deferred" => {
                    submit(o, &vendor, bin.as_deref(), "DEFERRED", &mut footprint).await?
                }
                "reads" => {
                    reads(o, &vendor, bin.as_deref(), seeded.as_ref().expect("seeded")).await?
                }
                other => {
                    anyhow::bail!("unknown scenario '{other}' (ceiling, sync, deferred, reads)")
                }
            };
            rows.push(row);
        }
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut header = format!(
        "Raccordo benchmark — {cpus} CPUs, {} in flight, {} runs of {:?} after {:?} warm-up, medians; hub {}",
        o.in_flight,
        o.runs,
        o.duration,
        o.warmup,
        if bin.is_some() {
            "as a separate process"
        } else {
            "in-process (CPU and RSS not separated)"
        }
    );
    if !footprint.is_empty() {
        let healthy = crate::report::median(footprint.iter().map(|f: &(f64, f64)| f.0).collect());
        let idle = crate::report::median(footprint.iter().map(|f| f.1).collect());
        header.push_str(&format!(
            "\n\nEmpty store: healthy {healthy:.0} ms after start; idle RSS {idle:.1} MiB."
        ));
    }
    if let Some(s) = &seeded {
        header.push_str(&format!(
            "\nRead store: {} practices, {:.0} bytes per practice on disk, seeded in {:.1} s.",
            s.ids.len(),
            s.bytes_per_practice,
            s.seed_seconds
        ));
    }
    Ok(table(&results, &header))
}

fn hub_binary(o: &Options) -> anyhow::Result<Option<PathBuf>> {
    if o.in_process {
        return Ok(None);
    }
    let bin = match &o.hub {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("raccordo"),
    };
    anyhow::ensure!(
        bin.is_file(),
        "no hub binary at {} (build it with `cargo build --release`, pass --hub, or use --in-process)",
        bin.display()
    );
    Ok(Some(bin))
}

/// The vendor called directly: the ceiling any hop can reach on this machine.
async fn ceiling(o: &Options, vendor: &Vendor) -> anyhow::Result<Row> {
    let client = reqwest::Client::new();
    let url = format!("http://{}/pratiche", vendor.addr);
    let body =
        serde_json::to_vec(&serde_json::json!({"practice_id": "x", "data": {"uso": "ESENTE"}}))?;
    let w = load::run(o.in_flight, o.warmup, o.duration, move |_| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            let r = client
                .post(url)
                .body(body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
        }
    })
    .await;
    Ok(Row {
        rate: w.rate(),
        p50_ms: w.ms(0.5),
        p99_ms: w.ms(0.99),
        errors: w.errors,
        ..Row::default()
    })
}

/// SubmitPractice on the SYNC or DEFERRED route of a fresh hub.
async fn submit(
    o: &Options,
    vendor: &Vendor,
    bin: Option<&Path>,
    service: &'static str,
    footprint: &mut Vec<(f64, f64)>,
) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let grpc = hub::free_addr();
    let config = hub::write_config(dir.path(), vendor.addr, grpc, hub::free_addr())?;
    let hub = Hub::start(&config, grpc, bin).await?;
    if let Some(pid) = hub.pid {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let idle = procfs::rss_mib(pid).map_or(f64::NAN, |r| r.0);
        footprint.push((hub.time_to_healthy.as_secs_f64() * 1000.0, idle));
    }
    let served_before = vendor.served();
    let cpu_before = hub.pid.and_then(procfs::cpu_seconds);
    let acked = Arc::new(AtomicU64::new(0));
    let client = pb::practice_service_client::PracticeServiceClient::new(hub.channel.clone())
        .max_decoding_message_size(64 << 20);
    let acked_in = Arc::clone(&acked);
    let load_started = Instant::now();
    let w = load::run(o.in_flight, o.warmup, o.duration, move |i| {
        let mut client = client.clone();
        let acked = Arc::clone(&acked_in);
        async move {
            let reply = client
                .submit_practice(submission(service, i, &fiscal_code(i)))
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            acked.fetch_add(1, Ordering::Relaxed);
            let practice = reply.practice.ok_or("no practice in the reply")?;
            if service == "SYNC" && practice.status != pb::AdministrativeStatus::Approved as i32 {
                return Err(format!(
                    "sync reply not APPROVED (status {})",
                    practice.status
                ));
            }
            Ok(())
        }
    })
    .await;
    let load_time = load_started.elapsed();
    if let Some(e) = &w.first_error {
        eprintln!("  first error: {e}");
    }
    let mut notes = Vec::new();
    if service == "DEFERRED" {
        // Deliveries drain after the acknowledgements: wait for the backlog.
        let total = acked.load(Ordering::Relaxed);
        let drain_started = Instant::now();
        while vendor.served() - served_before < total {
            anyhow::ensure!(
                drain_started.elapsed() < Duration::from_secs(600),
                "the backlog did not drain"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let drain = drain_started.elapsed();
        notes.push((
            "delivered/s".into(),
            total as f64 / (load_time + drain).as_secs_f64(),
        ));
        notes.push(("backlog drained s".into(), drain.as_secs_f64()));
    }
    let cpu_after = hub.pid.and_then(procfs::cpu_seconds);
    let peak = hub.pid.and_then(procfs::rss_mib).map(|r| r.1);
    hub.stop().await;
    let acked_total = acked.load(Ordering::Relaxed).max(1) as f64;
    Ok(Row {
        rate: w.rate(),
        p50_ms: w.ms(0.5),
        p99_ms: w.ms(0.99),
        errors: w.errors,
        cpu_us_per_op: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| (b - a) * 1e6 / acked_total),
        peak_rss_mib: peak,
        notes,
    })
}

/// A store seeded for the read scenario.
pub struct Seeded {
    dir: tempfile::TempDir,
    ids: Vec<String>,
    bytes_per_practice: f64,
    seed_seconds: f64,
}

/// Writes `n` practices straight into a store (not through the API: a
/// million submissions would take longer than the benchmark), 100 of them
/// in one citizen's folder. Their jobs name an adapter the hub does not
/// run, so nothing is delivered.
async fn seed(n: usize) -> anyhow::Result<Seeded> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("data").join("raccordo.db");
    let store = SqliteStore::open(&db, Synchronous::Normal, 1).await?;
    let mut ids = Vec::with_capacity(n);
    let folder_every = (n / 100).max(1);
    for i in 0..n {
        let owner = if i % folder_every == 0 {
            FOLDER_OWNER
        } else {
            1000 + i as u64
        };
        // Time-ordered ids like the hub's (UUIDv7), so the index is realistic.
        let id = uuid::Uuid::now_v7().to_string();
        let mut data = serde_json::Map::new();
        data.insert("uso".into(), "ESENTE".into());
        store
            .insert_practice(NewPractice {
                traceparent: None,
                id: id.clone(),
                tenant_id: TENANT.into(),
                service_code: "SYNC".into(),
                idempotency_key: format!("seed-{i}"),
                content_hash: format!("{i:064}"),
                content: PracticeContent {
                    applicant: Applicant {
                        subject: Subject::Person(Person {
                            fiscal_code: fiscal_code(owner),
                            given_name: "Mario".into(),
                            family_name: "Rossi".into(),
                        }),
                        contacts: Default::default(),
                    },
                    submitter: None,
                    channel: ChannelInfo::default(),
                    data,
                },
                attachments: Vec::new(),
                mode: Mode::Deferred,
                received_at: chrono::Utc::now(),
                legal_term_days: 30,
                adapter: "seeded-not-delivered".into(),
                max_attempts: 1,
            })
            .await?;
        ids.push(id);
        if i > 0 && i % 100_000 == 0 {
            eprintln!("  seeded {i} practices");
        }
    }
    drop(store);
    let bytes: u64 = std::fs::read_dir(db.parent().expect("data dir"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(Seeded {
        bytes_per_practice: bytes as f64 / n.max(1) as f64,
        seed_seconds: started.elapsed().as_secs_f64(),
        ids,
        dir,
    })
}

/// GetPractice by id and ListPractices of one folder, alternating, on the seeded store.
async fn reads(
    o: &Options,
    vendor: &Vendor,
    bin: Option<&Path>,
    seeded: &Seeded,
) -> anyhow::Result<Row> {
    let grpc = hub::free_addr();
    let config = hub::write_config(seeded.dir.path(), vendor.addr, grpc, hub::free_addr())?;
    let hub = Hub::start(&config, grpc, bin).await?;
    let client = pb::practice_service_client::PracticeServiceClient::new(hub.channel.clone());
    let ids = Arc::new(seeded.ids.clone());
    let cpu_before = hub.pid.and_then(procfs::cpu_seconds);
    let get_client = client.clone();
    let get = load::run(o.in_flight, o.warmup / 2, o.duration / 2, move |i| {
        let mut client = get_client.clone();
        let id = ids[(i.wrapping_mul(2_654_435_761) % ids.len() as u64) as usize].clone();
        async move {
            client
                .get_practice(pb::GetPracticeRequest {
                    tenant_id: TENANT.into(),
                    practice_id: id,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let owner = fiscal_code(FOLDER_OWNER);
    let list = load::run(o.in_flight, o.warmup / 2, o.duration / 2, move |_| {
        let mut client = client.clone();
        let owner = owner.clone();
        async move {
            let r = client
                .list_practices(pb::ListPracticesRequest {
                    tenant_id: TENANT.into(),
                    applicant_id: owner,
                    page_size: 100,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if r.practices.is_empty() {
                return Err("the folder is empty".into());
            }
            Ok(())
        }
    })
    .await;
    let cpu_after = hub.pid.and_then(procfs::cpu_seconds);
    let peak = hub.pid.and_then(procfs::rss_mib).map(|r| r.1);
    let healthy_ms = hub.time_to_healthy.as_secs_f64() * 1000.0;
    hub.stop().await;
    let ops = (get.ok + list.ok).max(1) as f64;
    Ok(Row {
        rate: get.rate(),
        p50_ms: get.ms(0.5),
        p99_ms: get.ms(0.99),
        errors: get.errors + list.errors,
        cpu_us_per_op: cpu_before.zip(cpu_after).map(|(a, b)| (b - a) * 1e6 / ops),
        peak_rss_mib: peak,
        notes: vec![
            ("list/s".into(), list.rate()),
            ("list p50 ms".into(), list.ms(0.5)),
            ("list p99 ms".into(), list.ms(0.99)),
            ("healthy ms".into(), healthy_ms),
        ],
    })
}
