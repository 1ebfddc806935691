//! The `raccordo` command line: the server, the configuration check, and
//! small clients for engineers (practices, dead letters).

mod client;
mod output;
mod render;
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
    /// A running hub's state: readiness, adapter instances, their queues,
    /// dead letters and the oldest pending delivery. Exits non-zero when
    /// the hub is not ready.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Routes of a configuration, offline.
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// The audit trail in the hub's database: verify its hash chains, or
    /// export a tenant's records. Reads the database file directly (on the
    /// hub's machine), also while the hub runs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Remove concluded practices older than their tenant's
    /// `retention_days`, with their documents. The audit trail is kept and
    /// records each purge. Works on the database file, also while the hub runs.
    Purge {
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
        /// Only count what would go.
        #[arg(long)]
        dry_run: bool,
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

/// `raccordo route …`
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Print the request the vendor would receive for a sample practice
    /// (method, URL, headers with secrets redacted, body); nothing is sent.
    Render {
        /// Configuration file (TOML).
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
        /// ISTAT code of the tenant.
        #[arg(long, short)]
        tenant: String,
        /// Service code.
        #[arg(long, short)]
        service: String,
        /// A practice as JSON (the format of `practice submit`).
        #[arg(long, short)]
        practice: PathBuf,
        /// `submit` or `withdraw`.
        #[arg(long, default_value = "submit")]
        operation: String,
    },
}

/// `raccordo audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute every record's hash; report the first broken link of each
    /// tenant's chain. Exits non-zero if any chain is broken.
    Verify {
        /// Configuration file (TOML): locates the database.
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
        /// Only this tenant's chain.
        #[arg(long, short)]
        tenant: Option<String>,
    },
    /// Print a tenant's records as JSON lines, oldest first.
    Export {
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
        #[arg(long, short)]
        tenant: String,
        /// From this date (YYYY-MM-DD) or instant (RFC 3339), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Until this date or instant, exclusive.
        #[arg(long)]
        to: Option<String>,
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
        Command::Status { server } => client::status(&server).await,
        Command::Audit { command } => audit(command).await,
        Command::Purge { config, dry_run } => purge(&config, dry_run),
        Command::Route {
            command:
                RouteCommand::Render {
                    config,
                    tenant,
                    service,
                    practice,
                    operation,
                },
        } => {
            let operation = operation.parse().map_err(anyhow::Error::msg)?;
            render::render(&config, &tenant, &service, &practice, operation)
        }
        Command::Soap {
            command: SoapCommand::Inspect { wsdl, operation },
        } => soap::inspect(&wsdl, operation.as_deref()).await,
    }
}

/// Refuses a command that works on the SQLite file when the store is
/// PostgreSQL, saying so.
fn sqlite_only(cfg: &crate::config::Config, command: &str) -> anyhow::Result<()> {
    if cfg.store.kind == crate::config::StoreKind::Postgres {
        anyhow::bail!(
            "{}: store.kind is postgres, and `raccordo {command}` works on the SQLite store only \
             for now",
            cfg.source.display()
        );
    }
    Ok(())
}

async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    use crate::store::sqlite::SqliteStore;
    match command {
        AuditCommand::Verify { config, tenant } => {
            let cfg = crate::config::load(&config)?;
            let (checked, breaks) = match cfg.store.kind {
                crate::config::StoreKind::Sqlite => {
                    SqliteStore::verify_audit(&cfg.database_path(), tenant.as_deref())?
                }
                crate::config::StoreKind::Postgres => {
                    use crate::store::postgres::{PgOptions, PgStore};
                    let pg = cfg.store.postgres();
                    let url = pg.connection_url(&cfg.base_dir).map_err(|(key, reason)| {
                        anyhow::anyhow!("{}: store.postgres.{key}: {reason}", cfg.source.display())
                    })?;
                    let opts = PgOptions::from_config(&pg, &cfg.base_dir);
                    PgStore::connect(&url, &opts, None, None)
                        .await?
                        .verify_audit(tenant.as_deref())
                        .await?
                }
            };
            if breaks.is_empty() {
                println!("audit trail intact: {checked} record(s) verified");
                return Ok(());
            }
            for b in &breaks {
                println!(
                    "tenant {}: chain broken at record {}: {}",
                    b.tenant_id, b.seq, b.reason
                );
            }
            anyhow::bail!("{} audit chain(s) broken", breaks.len())
        }
        AuditCommand::Export {
            config,
            tenant,
            from,
            to,
        } => {
            let cfg = crate::config::load(&config)?;
            sqlite_only(&cfg, "audit export")?;
            let from = from.as_deref().map(parse_instant).transpose()?;
            let to = to.as_deref().map(parse_instant).transpose()?;
            let records = SqliteStore::export_audit(
                &cfg.database_path(),
                &tenant,
                from.unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
                to.unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC),
            )?;
            for r in records {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(())
        }
    }
}

fn purge(config: &std::path::Path, dry_run: bool) -> anyhow::Result<()> {
    let cfg = crate::config::load(config)?;
    sqlite_only(&cfg, "purge")?;
    let db = cfg.database_path();
    let mut any = false;
    for (tenant, t) in &cfg.tenants {
        let Some(days) = t.retention_days else {
            continue;
        };
        any = true;
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        let n = crate::store::sqlite::SqliteStore::purge_concluded(&db, tenant, before, dry_run)?;
        let verb = if dry_run { "would remove" } else { "removed" };
        println!(
            "tenant {tenant}: {verb} {n} practice(s) concluded before {} ({days} days)",
            before.format("%Y-%m-%d")
        );
    }
    if !any {
        println!("no tenant sets retention_days: nothing to purge");
    }
    Ok(())
}

/// `2026-11-01` (midnight UTC) or an RFC 3339 instant.
fn parse_instant(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        anyhow::anyhow!("'{s}' is neither a date (YYYY-MM-DD) nor an RFC 3339 instant")
    })?;
    Ok(day.and_time(chrono::NaiveTime::MIN).and_utc())
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let cfg = crate::config::load(path)?;
    for warning in crate::config::warnings(&cfg) {
        eprintln!("{}: warning: {warning}", path.display());
    }
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
    println!("  metrics      http://{}/metrics", hub.http_addr);
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
