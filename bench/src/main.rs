//! `raccordo-bench`: measures the hub through its real gRPC API.
//!
//! It starts its own minimal vendor back office (REST), starts the hub (the
//! optimised binary next to this one, or in-process with `--in-process`), runs
//! each scenario for a warm-up and a measured duration with a fixed number
//! of requests in flight, alternates scenarios over several runs, and prints
//! the medians as a Markdown table. See `docs/performance.md`.

#![forbid(unsafe_code)]

mod deploy;
mod fanout;
mod hop;
mod hub;
mod load;
mod overload;
mod procfs;
mod report;
mod scenarios;
mod seed;
mod vendor;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

// The harness shares the machine with the hub: every microsecond it spends
// is one the hub does not get. With glibc's allocator, malloc and free were
// about a tenth of its samples (prost messages, HTTP/2 frames, the vendor's
// JSON); the hub's allocator halves that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load harness for the Raccordo hub.
#[derive(Debug, Parser)]
#[command(name = "raccordo-bench", version, about)]
pub struct Options {
    /// Measured time per scenario run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Runs of each scenario (alternating); the table reports medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Practices in the store for the `reads` scenario.
    #[arg(long, default_value_t = 100_000)]
    pub store_size: usize,
    /// Store sizes (practices, comma-separated) on which `growth` runs
    /// `sync`, `deferred` and `reads`.
    #[arg(long, default_value = "10000,100000,1000000", value_delimiter = ',')]
    pub store_sizes: Vec<usize>,
    /// Where seeded stores are written before each run copies them to the
    /// temporary directory; `/dev/shm` makes seeding faster (the largest
    /// store then takes its size in RAM).
    #[arg(long)]
    pub seed_dir: Option<PathBuf>,
    /// `WatchPractices` subscribers in the `fanout` scenario.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// HTTP/2 connections the `fanout` subscribers share.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// The `overload` scenario offers this many times the rate the hub
    /// sustains.
    #[arg(long, default_value_t = 4.0)]
    pub overload_factor: f64,
    /// Scenarios to run (comma-separated): ceiling, bare-echo,
    /// bare-pass-through, sync, overload, deferred, reads, fanout, growth.
    #[arg(
        long,
        default_value = "ceiling,bare-echo,bare-pass-through,sync,overload,deferred,reads,fanout,growth",
        value_delimiter = ','
    )]
    pub scenarios: Vec<String>,
    /// The hub binary; defaults to `raccordo` next to this executable.
    #[arg(long)]
    pub hub: Option<PathBuf>,
    /// Run the hub inside this process (no separate CPU/RSS figures).
    #[arg(long)]
    pub in_process: bool,
    /// The store the hubs use: `sqlite` (each hub its own embedded file) or
    /// `postgres` (one fresh schema per scenario run in `--database-url`,
    /// shared by `--instances` hubs).
    #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
    pub store: String,
    /// Hub instances sharing the store (PostgreSQL only); the load goes to
    /// them in turn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub instances: u16,
    /// Connections each hub keeps to PostgreSQL (`store.postgres.pool_size`;
    /// the hub's default when not given).
    #[arg(long)]
    pub pg_pool_size: Option<u32>,
    /// The PostgreSQL database for `--store postgres` (its user needs
    /// CREATE on it: each run works in a schema of its own, dropped after).
    #[arg(
        long,
        env = "RACCORDO_BENCH_DATABASE_URL",
        default_value = "postgres://raccordo_test:raccordo_test@127.0.0.1:5432/raccordo_test",
        hide_default_value = true
    )]
    pub database_url: String,
    /// Also write the Markdown table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The hub's log filter (`RUST_LOG`). `warn` keeps logging out of the
    /// measurement; `info` is what the hub logs by default in production.
    #[arg(long, default_value = "warn")]
    pub hub_log: String,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What else the executable can be.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the bare hop the `bare-*` scenarios measure (the harness
    /// starts it itself).
    #[command(hide = true)]
    Hop(hop::HopOptions),
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if let Some(Command::Hop(hop)) = options.command {
        // Served like the hub: tokio's default runtime, one worker per core.
        return tokio::runtime::Runtime::new()?.block_on(hop::serve(hop));
    }
    // Load generation gets the whole runtime; the hub is another process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let table = scenarios::run_suite(&options).await?;
        println!("{table}");
        if let Some(out) = &options.out {
            std::fs::write(out, &table)?;
        }
        Ok(())
    })
}
