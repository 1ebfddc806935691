//! The `raccordo` command line: the server, the configuration check, and
//! small clients for engineers (practices, dead letters).

mod client;
pub mod connection;
mod output;
mod render;
mod soap;
mod store;

use crate::telemetry::LogFormat;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Raccordo integration hub.
#[derive(Debug, Parser)]
#[command(
    name = "raccordo",
    version = crate::VERSION,
    about,
    propagate_version = true
)]
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
    /// Submit, read, list and watch practices on a running hub (see
    /// docs/cli.md for the connection and credential options).
    Practice {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: PracticeCommand,
    },
    /// A running hub's state: readiness, adapter instances, their queues,
    /// dead letters and the oldest pending delivery. Exits non-zero when
    /// the hub is not ready (its store does not answer, or it is stopping);
    /// an adapter instance that is down is shown, and does not change the
    /// exit status. Needs an admin client's credentials.
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
    /// export a tenant's records. Reads the configured store directly (the
    /// SQLite file on the hub's machine, or PostgreSQL), also while the hub
    /// runs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Remove concluded practices older than their tenant's
    /// `retention_days`, with their documents. The audit trail is kept and
    /// records each purge. Works on the configured store in short
    /// transactions, also while the hub runs.
    Purge {
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
        /// Only count what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Apply the configured store's pending schema migrations (the hub
    /// also applies them at start). On SQLite, applying is refused while a
    /// hub runs on the file; on PostgreSQL, one instance migrates at a time.
    Migrate {
        /// Configuration file (TOML): locates the store.
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
        /// Only list the migrations that would run; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run, print each migration's SQL too.
        #[arg(long, requires = "dry_run")]
        sql: bool,
    },
    /// Back up the store, or copy it from SQLite to PostgreSQL.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Dead-lettered deliveries on a running hub (needs an admin client).
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

/// Where the hub is, how to prove who we are, and how to print.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Print JSON instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub connection: connection::ConnectionArgs,
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
    /// Recompute every record's hash and report the first broken link of
    /// each tenant's chain; compare each practice's stored status,
    /// applicant, tenant, outcome and references with what its records
    /// say, and name each practice and field that differ. Exits non-zero
    /// if anything does not verify.
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

/// `raccordo store …`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a stopped hub's SQLite store into PostgreSQL, in one
    /// transaction: every practice, event, delivery, document and audit
    /// record, with cursors, sequences and audit links as they were. Then
    /// counts every table on both sides and verifies the audit trail on
    /// the target.
    Copy {
        /// `sqlite:PATH` (the database file) or `config:FILE` (a
        /// configuration whose store is SQLite). Refused while a hub runs
        /// on it.
        #[arg(long)]
        from: String,
        /// `config:FILE` (a configuration whose store is PostgreSQL: its
        /// url_env or url_file, tls and ca_file), `postgres:env:VAR` or
        /// `postgres:file:PATH` (the URL in an environment variable or a
        /// file; no TLS). Never a URL on the command line.
        #[arg(long)]
        to: String,
        /// Delete whatever the target's tables hold before copying
        /// (otherwise a target that is not empty is refused).
        #[arg(long)]
        replace: bool,
    },
    /// Write a consistent copy of the SQLite store to a new file, also
    /// while the hub runs (SQLite's `VACUUM INTO`). For PostgreSQL, use
    /// pg_dump or pg_basebackup (docs/deployment.md).
    Backup {
        /// Configuration file (TOML): locates the database.
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
        /// The backup file to create (never overwritten).
        #[arg(long)]
        to: PathBuf,
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
        Command::Purge { config, dry_run } => purge(&config, dry_run).await,
        Command::Migrate {
            config,
            dry_run,
            sql,
        } => store::migrate(&config, dry_run, sql).await,
        Command::Store {
            command: StoreCommand::Copy { from, to, replace },
        } => store::copy(&from, &to, replace).await,
        Command::Store {
            command: StoreCommand::Backup { config, to },
        } => store::backup(&config, &to),
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

async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    use crate::store::sqlite::SqliteStore;
    match command {
        AuditCommand::Verify { config, tenant } => {
            let cfg = crate::config::load(&config)?;
            let report = match cfg.store.kind {
                crate::config::StoreKind::Sqlite => {
                    SqliteStore::verify_audit(&cfg.database_path(), tenant.as_deref())?
                }
                crate::config::StoreKind::Postgres => {
                    store::connect_pg(&cfg)
                        .await?
                        .verify_audit(tenant.as_deref())
                        .await?
                }
            };
            print_audit_report(&report);
            if report.is_intact() {
                return Ok(());
            }
            let mut failed = Vec::new();
            if !report.breaks.is_empty() {
                failed.push(format!("{} audit chain(s) broken", report.breaks.len()));
            }
            if !report.differences.is_empty() {
                failed.push(format!(
                    "{} stored field(s) differ from the audit trail",
                    report.differences.len()
                ));
            }
            anyhow::bail!("{}", failed.join("; "))
        }
        AuditCommand::Export {
            config,
            tenant,
            from,
            to,
        } => {
            let cfg = crate::config::load(&config)?;
            let from = from
                .as_deref()
                .map(parse_instant)
                .transpose()
                .context("--from")?
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
            let to = to
                .as_deref()
                .map(parse_instant)
                .transpose()
                .context("--to")?
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
            let records = match cfg.store.kind {
                crate::config::StoreKind::Sqlite => {
                    SqliteStore::export_audit(&cfg.database_path(), &tenant, from, to)?
                }
                crate::config::StoreKind::Postgres => {
                    store::connect_pg(&cfg)
                        .await?
                        .export_audit(&tenant, from, to)
                        .await?
                }
            };
            for r in records {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(())
        }
    }
}

/// What `raccordo audit verify` prints: one line per broken chain and per
/// practice field that differs from its records, or that all is intact.
fn print_audit_report(report: &crate::store::AuditReport) {
    for b in &report.breaks {
        println!(
            "tenant {}: chain broken at record {}: {}",
            b.tenant_id, b.seq, b.reason
        );
    }
    for d in &report.differences {
        println!(
            "tenant {}: practice {}: {} differs from its audit trail: {}",
            d.tenant_id, d.practice_id, d.field, d.reason
        );
    }
    if report.is_intact() {
        let not_compared = match report.not_compared {
            0 => String::new(),
            n => format!(
                " ({n} not compared: stored before the trail covered their events, \
                 or their newest records are not linked yet)"
            ),
        };
        println!(
            "audit trail intact: {} record(s) verified, {} practice(s) as recorded{not_compared}",
            report.records, report.practices
        );
    }
}

async fn purge(config: &std::path::Path, dry_run: bool) -> anyhow::Result<()> {
    let cfg = crate::config::load(config)?;
    let pg = match cfg.store.kind {
        crate::config::StoreKind::Sqlite => None,
        crate::config::StoreKind::Postgres => Some(store::connect_pg(&cfg).await?),
    };
    let db = cfg.database_path();
    let mut any = false;
    for (tenant, t) in &cfg.tenants {
        let Some(days) = t.retention_days else {
            continue;
        };
        any = true;
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        let n = match &pg {
            Some(pg) => pg.purge_concluded(tenant, before, dry_run).await?,
            None => {
                crate::store::sqlite::SqliteStore::purge_concluded(&db, tenant, before, dry_run)?
            }
        };
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

/// `raccordo check`: every problem of the file in one run, each with its
/// line and column (or the environment variable that set the key), sorted
/// as the file reads; warnings too. Fails if there is any problem.
fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let (cfg, mut problems) = crate::config::load_lenient(path, std::env::vars())?;
    problems.extend(
        crate::config::check(&cfg)
            .into_iter()
            .map(|i| cfg.locate(i)),
    );
    problems.sort_by(|a, b| a.place.cmp(&b.place));
    let mut warnings: Vec<_> = crate::config::warnings(&cfg)
        .into_iter()
        .map(|i| cfg.locate(i))
        .collect();
    warnings.sort_by(|a, b| a.place.cmp(&b.place));
    for warning in &warnings {
        eprintln!("{}: warning: {}", warning.place_in(path), warning.issue);
    }
    if problems.is_empty() {
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
    for problem in &problems {
        eprintln!("{}", problem.display(path));
    }
    let counted = if problems.iter().any(|p| p.issue.key.contains('[')) {
        " (indexes count from 0 in the order of the file: routes[0] is its first [[routes]])"
    } else {
        ""
    };
    anyhow::bail!(
        "{} problem(s) in {}{counted}",
        problems.len(),
        path.display()
    )
}

fn print_banner(hub: &crate::server::RunningHub) {
    println!("Raccordo is running.");
    println!(
        "  gRPC API     http://{}  (reflection and grpc.health.v1 on)",
        hub.grpc_addr
    );
    println!(
        "  health       http://{}/healthz   readiness http://{}/readyz   adapters http://{}/adapters",
        hub.http_addr, hub.http_addr, hub.http_addr
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
