//! The scenarios and the suite that alternates them.

use crate::Options;
use crate::deploy::{Client, Deployment};
use crate::fanout::fanout;
use crate::hub::{self, Hub, TENANT, fiscal_code, submission};
use crate::load;
use crate::procfs;
use crate::report::{Footprint, Row, StoreLine, stores_table, table, thousands};
use crate::seed::{FOLDER_OWNER, Seeded, seed};
use crate::vendor::Vendor;
use raccordo_proto::v1 as pb;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every scenario `--scenarios` accepts.
pub const SCENARIOS: [&str; 9] = [
    "ceiling",
    "bare-echo",
    "bare-pass-through",
    "sync",
    "overload",
    "deferred",
    "reads",
    "fanout",
    "growth",
];

/// The scenarios that run on `--store postgres` (the others watch one
/// embedded store). `reads` seeds an SQLite store and copies it into the
/// run's schema, as `raccordo store copy` does.
const ON_POSTGRES: [&str; 6] = [
    "ceiling",
    "bare-echo",
    "bare-pass-through",
    "sync",
    "deferred",
    "reads",
];

/// The scenarios `growth` runs on each store size.
const GROWTH: [&str; 3] = ["sync", "deferred", "reads"];

/// Runs every selected scenario `runs` times, alternating, and renders the medians.
pub async fn run_suite(o: &Options) -> anyhow::Result<String> {
    if let Some(unknown) = o
        .scenarios
        .iter()
        .find(|s| !SCENARIOS.contains(&s.as_str()))
    {
        anyhow::bail!("unknown scenario '{unknown}' ({})", SCENARIOS.join(", "));
    }
    if o.store == "postgres" {
        if let Some(other) = o
            .scenarios
            .iter()
            .find(|s| !ON_POSTGRES.contains(&s.as_str()))
        {
            anyhow::bail!(
                "--store postgres runs {}; '{other}' runs on SQLite only",
                ON_POSTGRES.join(", ")
            );
        }
    } else {
        anyhow::ensure!(
            o.instances == 1,
            "--instances {} needs --store postgres (an SQLite file has one hub)",
            o.instances
        );
    }
    let selected = |name: &str| o.scenarios.iter().any(|s| s == name);
    let vendor = Vendor::start().await?;
    let bin = hub_binary(o)?;

    // Seed every store first: seeding is not measured by the scenarios,
    // and the templates are copied for each run.
    let mut sizes = Vec::new();
    if selected("reads") {
        sizes.push(o.store_size);
    }
    if selected("growth") {
        sizes.extend(&o.store_sizes);
    }
    sizes.sort_unstable();
    sizes.dedup();
    let mut stores = BTreeMap::new();
    for size in sizes {
        eprintln!("seeding a store of {} practices", thousands(size));
        let seeded = seed(size, o.seed_dir.as_deref()).await?;
        eprintln!(
            "  {} practices in {:.1} s, {:.0} bytes per practice",
            thousands(size),
            seeded.seed_seconds,
            seeded.bytes_per_practice
        );
        stores.insert(size, seeded);
    }

    let mut results: Vec<(String, Vec<Row>)> = Vec::new();
    let mut footprint = Footprint::default();
    for run in 1..=o.runs {
        for name in &o.scenarios {
            eprintln!("run {run}/{}: {name}", o.runs);
            match name.as_str() {
                "ceiling" => record(&mut results, name, ceiling(o, &vendor).await?),
                "bare-echo" => record(&mut results, name, bare(o, &vendor, "echo").await?),
                "bare-pass-through" => {
                    let row = bare(o, &vendor, "pass-through").await?;
                    record(&mut results, name, row);
                }
                "sync" | "deferred" => {
                    let row =
                        submit(o, &vendor, bin.as_deref(), name, None, &mut footprint).await?;
                    record(&mut results, name, row);
                }
                "overload" => {
                    let row = crate::overload::overload(o, &vendor, bin.as_deref()).await?;
                    record(&mut results, name, row);
                }
                "reads" => {
                    let store = &stores[&o.store_size];
                    let row = reads(o, &vendor, bin.as_deref(), store, &mut footprint).await?;
                    record(&mut results, name, row);
                }
                "fanout" => {
                    let row = fanout(o, &vendor, bin.as_deref(), &mut footprint).await?;
                    record(&mut results, name, row);
                }
                "growth" => {
                    for size in &o.store_sizes {
                        let store = &stores[size];
                        for kind in GROWTH {
                            eprintln!("  {kind} on {} practices", thousands(*size));
                            let row = match kind {
                                "reads" => {
                                    reads(o, &vendor, bin.as_deref(), store, &mut footprint).await?
                                }
                                _ => {
                                    submit(
                                        o,
                                        &vendor,
                                        bin.as_deref(),
                                        kind,
                                        Some(store),
                                        &mut footprint,
                                    )
                                    .await?
                                }
                            };
                            record(
                                &mut results,
                                &format!("{kind} on {}", thousands(*size)),
                                row,
                            );
                        }
                    }
                }
                _ => unreachable!("scenario names are checked above"),
            }
        }
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut out = format!(
        "Raccordo benchmark — {cpus} CPUs, {} in flight, {} runs of {:?} after {:?} warm-up, medians; store {}; hub {}\n\n",
        o.in_flight,
        o.runs,
        o.duration,
        o.warmup,
        match (o.store.as_str(), o.instances) {
            ("postgres", 1) => "PostgreSQL, one hub".to_string(),
            ("postgres", n) => format!("PostgreSQL, {n} hubs sharing it, load in turn"),
            _ => "SQLite".to_string(),
        },
        if bin.is_some() {
            "as a separate process"
        } else {
            "in-process (CPU and RSS not separated)"
        }
    );
    out.push_str(&table(&results));
    if selected("overload") {
        out.push_str(&format!(
            "\n`overload`: `SubmitPractice` on the `sync` route at a fixed arrival rate of {} × \
             what the hub sustained closed-loop just before (`sustainable/s`); ops/s, p50 and \
             p99 are the admitted requests' (from their scheduled start), hub CPU per answered \
             request, RSS sampled at the start, middle and end of the window.\n",
            o.overload_factor
        ));
    }
    if selected("fanout") {
        out.push_str(&format!(
            "\n`fanout`: {} `WatchPractices` subscribers (tenant-wide, live) on {} connections \
             while deferred practices change state; ops/s are events received by all \
             subscribers per second, p50/p99 the delay from the event's `recorded_at` \
             (stamped when the hub prepares the write, so it includes the group commit) \
             to its arrival, hub CPU per event received.\n",
            o.subscribers, o.connections
        ));
    }
    if !stores.is_empty() {
        let lines: Vec<StoreLine> = stores
            .iter()
            .map(|(size, s)| StoreLine {
                practices: *size,
                bytes_per_practice: s.bytes_per_practice,
                seed_seconds: s.seed_seconds,
            })
            .collect();
        out.push('\n');
        out.push_str(&stores_table(&lines, &footprint));
    }
    let footprint_table = footprint.table();
    if !footprint_table.is_empty() {
        out.push('\n');
        out.push_str(&footprint_table);
    }
    Ok(out)
}

/// Adds `row` to the runs of `label`, keeping the order of first appearance.
fn record(results: &mut Vec<(String, Vec<Row>)>, label: &str, row: Row) {
    match results.iter_mut().find(|(l, _)| l == label) {
        Some((_, rows)) => rows.push(row),
        None => results.push((label.to_string(), vec![row])),
    }
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
        "no hub binary at {} (build it with `cargo build --profile production -p raccordo`, pass --hub, or use --in-process)",
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

/// SubmitPractice on the `sync` or `deferred` route of a fresh hub, on an
/// empty store or on a fresh copy of a seeded one.
async fn submit(
    o: &Options,
    vendor: &Vendor,
    bin: Option<&Path>,
    scenario: &str,
    store: Option<&Seeded>,
    footprint: &mut Footprint,
) -> anyhow::Result<Row> {
    let service: &'static str = if scenario == "sync" {
        "SYNC"
    } else {
        "DEFERRED"
    };
    let dir = match store {
        Some(s) => s.fresh_copy()?,
        None => tempfile::tempdir()?,
    };
    let seeded = store
        .filter(|_| o.store == "postgres")
        .map(|_| crate::seed::db_path(dir.path()));
    let hubs = Deployment::start(o, vendor, bin, dir.path(), seeded.as_deref()).await?;
    match store {
        Some(s) => footprint.seeded_store_started(hubs.first(), s.len()),
        None => footprint.empty_store_started(hubs.first()).await,
    }
    let served_before = vendor.served();
    let cpu_before = hubs.hub_cpu_seconds();
    let db_cpu_before = hubs.database_cpu_seconds();
    // The harness (gRPC client and vendor) shares the machine: its CPU per
    // practice says how much of the machine was left for the hub.
    let own_cpu_before = procfs::cpu_seconds(std::process::id());
    let acked = Arc::new(AtomicU64::new(0));
    let clients = hubs.clients();
    let acked_in = Arc::clone(&acked);
    let load_started = Instant::now();
    // Several instances: each request goes to the next one in turn, as a
    // round-robin load balancer would send it.
    let w = load::run(o.in_flight, o.warmup, o.duration, move |i| {
        let client = clients[i as usize % clients.len()].clone();
        submit_one(client, service, i, Arc::clone(&acked_in))
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
    if store.is_some() {
        notes.push((
            "healthy ms".into(),
            hubs.first().time_to_healthy.as_secs_f64() * 1000.0,
        ));
    }
    let cpu_after = hubs.hub_cpu_seconds();
    let db_cpu_after = hubs.database_cpu_seconds();
    let own_cpu_after = procfs::cpu_seconds(std::process::id());
    let peak = hubs.peak_rss_mib();
    let separate_process = cpu_after.is_some();
    if service == "DEFERRED"
        && store.is_none()
        && let Some(pid) = hubs.first().pid
    {
        // What the hub keeps once the backlog is gone and it is quiet
        // (after the CPU figures: the pause is not the hub's work).
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some((rss, _)) = procfs::rss_mib(pid) {
            footprint.drained_rss_mib.push(rss);
        }
    }
    hubs.stop().await;
    let acked_total = acked.load(Ordering::Relaxed).max(1) as f64;
    if let (Some(a), Some(b)) = (db_cpu_before, db_cpu_after) {
        notes.push(("database CPU µs/op".into(), (b - a) * 1e6 / acked_total));
    }
    if let (Some(a), Some(b), true) = (own_cpu_before, own_cpu_after, separate_process) {
        notes.push(("harness CPU µs/op".into(), (b - a) * 1e6 / acked_total));
    }
    if service == "DEFERRED"
        && store.is_none()
        && let Some(peak) = peak
    {
        footprint.deferred_peak_mib.push(peak);
    }
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

/// One `SubmitPractice` to `service`, counted in `acked` once answered; a
/// `SYNC` reply must carry the vendor's approval.
pub(crate) async fn submit_one(
    mut client: Client,
    service: &'static str,
    i: u64,
    acked: Arc<AtomicU64>,
) -> Result<(), String> {
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

/// The `sync` load against the bare hop (`hop.rs`) instead of the hub: the
/// floor under the hub's numbers, measured the same way.
async fn bare(o: &Options, vendor: &Vendor, kind: &str) -> anyhow::Result<Row> {
    let (grpc, _) = hub::listen_addrs();
    let hop = Hub::start_hop(kind, vendor.addr, grpc).await?;
    let served_before = vendor.served();
    let cpu_before = hop.pid.and_then(procfs::cpu_seconds);
    let own_cpu_before = procfs::cpu_seconds(std::process::id());
    let acked = Arc::new(AtomicU64::new(0));
    let client = pb::practice_service_client::PracticeServiceClient::new(hop.channel.clone());
    let acked_in = Arc::clone(&acked);
    let w = load::run(o.in_flight, o.warmup, o.duration, move |i| {
        submit_one(client.clone(), "SYNC", i, Arc::clone(&acked_in))
    })
    .await;
    let cpu_after = hop.pid.and_then(procfs::cpu_seconds);
    let own_cpu_after = procfs::cpu_seconds(std::process::id());
    let peak = hop.pid.and_then(procfs::rss_mib).map(|r| r.1);
    hop.stop().await;
    if let Some(e) = &w.first_error {
        eprintln!("  first error: {e}");
    }
    let ops = acked.load(Ordering::Relaxed).max(1) as f64;
    let calls = (vendor.served() - served_before) as f64;
    let mut notes = vec![("vendor calls/op".into(), calls / ops)];
    if let Some((a, b)) = own_cpu_before.zip(own_cpu_after) {
        notes.push(("harness CPU µs/op".into(), (b - a) * 1e6 / ops));
    }
    Ok(Row {
        rate: w.rate(),
        p50_ms: w.ms(0.5),
        p99_ms: w.ms(0.99),
        errors: w.errors,
        cpu_us_per_op: cpu_before.zip(cpu_after).map(|(a, b)| (b - a) * 1e6 / ops),
        peak_rss_mib: peak,
        notes,
    })
}

/// One page of the seeded folder: its 100 practices, newest first.
async fn list_folder(
    mut client: pb::practice_service_client::PracticeServiceClient<tonic::transport::Channel>,
    owner: String,
) -> Result<(), String> {
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
    if r.practices.len() < 100 {
        return Err(format!(
            "the folder shows {} practices, not 100",
            r.practices.len()
        ));
    }
    Ok(())
}

/// GetPractice by random id and ListPractices of one folder of 100 (at the
/// configured concurrency, then alone), one after the other, on a fresh copy
/// of a seeded store.
async fn reads(
    o: &Options,
    vendor: &Vendor,
    bin: Option<&Path>,
    store: &Seeded,
    footprint: &mut Footprint,
) -> anyhow::Result<Row> {
    let dir = store.fresh_copy()?;
    // On PostgreSQL the same seeded rows, copied into the run's schema.
    let seeded = (o.store == "postgres").then(|| crate::seed::db_path(dir.path()));
    let hubs = Deployment::start(o, vendor, bin, dir.path(), seeded.as_deref()).await?;
    footprint.seeded_store_started(hubs.first(), store.len());
    // Several instances: each request goes to the next one in turn.
    let clients = hubs.clients();
    let ids = Arc::clone(&store.ids);
    let cpu_before = hubs.hub_cpu_seconds();
    let db_cpu_before = hubs.database_cpu_seconds();
    let get_clients = clients.clone();
    let get = load::run(o.in_flight, o.warmup / 2, o.duration / 2, move |i| {
        let mut client = get_clients[i as usize % get_clients.len()].clone();
        let id = ids[(i.wrapping_mul(2_654_435_761) % ids.len() as u64) as usize].to_string();
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
    let list_clients = clients.clone();
    let list_owner = owner.clone();
    let list = load::run(o.in_flight, o.warmup / 2, o.duration / 2, move |i| {
        list_folder(
            list_clients[i as usize % list_clients.len()].clone(),
            list_owner.clone(),
        )
    })
    .await;
    // The latency one desk operator sees: the same listing, one at a time.
    let client = clients[0].clone();
    let list_alone = load::run(1, o.warmup / 4, o.duration / 4, move |_| {
        list_folder(client.clone(), owner.clone())
    })
    .await;
    let cpu_after = hubs.hub_cpu_seconds();
    let db_cpu_after = hubs.database_cpu_seconds();
    let peak = hubs.peak_rss_mib();
    let healthy_ms = hubs.first().time_to_healthy.as_secs_f64() * 1000.0;
    for w in [&get, &list, &list_alone] {
        if let Some(e) = &w.first_error {
            eprintln!("  first error: {e}");
        }
    }
    hubs.stop().await;
    let ops = (get.ok + list.ok + list_alone.ok).max(1) as f64;
    Ok(Row {
        rate: get.rate(),
        p50_ms: get.ms(0.5),
        p99_ms: get.ms(0.99),
        errors: get.errors + list.errors + list_alone.errors,
        cpu_us_per_op: cpu_before.zip(cpu_after).map(|(a, b)| (b - a) * 1e6 / ops),
        peak_rss_mib: peak,
        notes: vec![
            ("list/s".into(), list.rate()),
            ("list p50 ms".into(), list.ms(0.5)),
            ("list p99 ms".into(), list.ms(0.99)),
            ("list alone p50 ms".into(), list_alone.ms(0.5)),
            ("list alone p99 ms".into(), list_alone.ms(0.99)),
            ("healthy ms".into(), healthy_ms),
        ]
        .into_iter()
        .chain(
            db_cpu_before
                .zip(db_cpu_after)
                .map(|(a, b)| ("database CPU µs/op".into(), (b - a) * 1e6 / ops)),
        )
        .collect(),
    })
}
