//! The `raccordo` command line: the server, the configuration check, and
//! small clients for engineers (practices, dead letters).

mod client;
mod output;
mod soap;

use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Raccordo integration hub.
#[derive(Debug, Parser)]
#[command(name = "raccordo", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format (logs go to stderr).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "RACCORDO_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the hub.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration without starting anything.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
    },
    /// Submit, read, list and watch practices on a running hub.
    Practice {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: PracticeCommand,
    },
    /// Dead-lettered deliveries on a running hub.
    Dlq {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Tools for SOAP back offices.
    Soap {
        #[command(subcommand)]
        command: SoapCommand,
    },
}

/// `raccordo soap …`
#[derive(Debug, Subcommand)]
pub enum SoapCommand {
    /// List a WSDL's services, ports, operations, SOAP versions and
    /// actions; with --operation, print a starting request template.
    Inspect {
        /// A WSDL file or an http(s):// URL.
        wsdl: String,
        /// The operation to write a request template for.
        #[arg(long)]
        operation: Option<String>,
    },
}

/// Where the hub is.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The hub's gRPC address.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:50051",
        env = "RACCORDO_SERVER"
    )]
    pub server: String,
    /// Print JSON instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `raccordo practice …`
#[derive(Debug, Subcommand)]
pub enum PracticeCommand {
    /// Submit a practice described by a JSON file (`-` for stdin); see
    /// config/examples/ for the format.
    Submit {
        /// The JSON file.
        file: PathBuf,
    },
    /// Show one practice with its events.
    Get {
        #[arg(long, short)]
        tenant: String,
        /// Practice id.
        id: String,
    },
    /// List practices, newest first.
    List {
        #[arg(long, short)]
        tenant: String,
        /// Fiscal code or VAT number (the citizen folder).
        #[arg(long)]
        applicant: Option<String>,
        #[arg(long)]
        service: Option<String>,
        /// SUBMITTED, REGISTERED, IN_PROGRESS, APPROVED, …
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// From a previous listing's "next page" line.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Follow a practice's events until it concludes.
    Watch {
        #[arg(long, short)]
        tenant: String,
        /// Practice id.
        id: String,
        /// Replay from this sequence number.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
    /// Withdraw a practice for the applicant (or an operator).
    Withdraw {
        #[arg(long, short)]
        tenant: String,
        /// Practice id.
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        operator: Option<String>,
    },
}

/// `raccordo dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered deliveries.
    List {
        /// Only this tenant.
        #[arg(long, short)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Send a dead-lettered delivery again (same operation id).
    Replay {
        /// Operation id (from `dlq list`).
        operation_id: String,
        /// Who is replaying (recorded in the practice's events).
        #[arg(long, default_value = "")]
        operator: String,
    },
}

/// Runs a command; the process exit code is derived from the result.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = crate::config::load(&config)?;
            let hub = crate::server::start(cfg).await?;
            print_banner(&hub);
            hub.run_until_signal().await
        }
        Command::Check { config } => check(&config),
        Command::Practice { server, command } => client::practice(&server, command).await,
        Command::Dlq { server, command } => client::dlq(&server, command).await,
        Command::Soap {
            command: SoapCommand::Inspect { wsdl, operation },
        } => soap::inspect(&wsdl, operation.as_deref()).await,
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = crate::config::load(path)?;
    let issues = crate::config::check(&cfg);
    if issues.is_empty() {
        println!(
            "{}: ok ({} tenants, {} services, {} routes, {} adapters)",
            path.display(),
            cfg.tenants.len(),
            cfg.services.len(),
            cfg.routes.len(),
            cfg.adapters.len()
        );
        return Ok(());
    }
    for issue in &issues {
        eprintln!("{}: {issue}", path.display());
    }
    anyhow::bail!("{} problem(s) in {}", issues.len(), path.display())
}

fn print_banner(hub: &crate::server::RunningHub) {
    println!("Raccordo is running.");
    println!(
        "  gRPC API     http://{}  (reflection and grpc.health.v1 on)",
        hub.grpc_addr
    );
    println!(
        "  health       http://{}/healthz   readiness http://{}/readyz",
        hub.http_addr, hub.http_addr
    );
    let mut sims: Vec<_> = hub.simulators.iter().collect();
    sims.sort();
    for (name, addr) in sims {
        println!("  simulated back office {name} on http://{addr}");
    }
    println!("Try, in another terminal:");
    println!(
        "  cargo run --release -- practice submit --server http://{} config/examples/residence-certificate.json",
        hub.grpc_addr
    );
    println!("Stop with Ctrl-C.");
}
