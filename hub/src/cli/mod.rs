//! The `raccordo` command line: the server, the configuration check, and
//! small clients for engineers (practices, dead letters).

mod client;
pub mod connection;
mod output;
pub mod practice_json;
mod render;
#[cfg(feature = "soap")]
mod soap;
mod store;
pub mod style;

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
    /// Colour: `auto` on a terminal unless NO_COLOR is set, `always` (also
    /// into a file or a pipe), `never`. For the hub's log lines too.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        env = "RACCORDO_COLOR"
    )]
    pub color: style::ColorChoice,
    /// The time zone of the times shown to people (IANA name; JSON output
    /// is always in UTC).
    #[arg(
        long,
        global = true,
        default_value = style::DEFAULT_TIME_ZONE,
        env = "RACCORDO_TIME_ZONE",
        value_name = "ZONE"
    )]
    pub time_zone: String,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the hub.
    #[command(after_help = "Examples:
  raccordo serve --config /etc/raccordo/raccordo.toml
  RACCORDO__HUB__GRPC_LISTEN=0.0.0.0:50051 raccordo serve -c raccordo.toml
  raccordo --log-format json serve -c raccordo.toml 2>>/var/log/raccordo.log")]
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration without starting anything: every problem
    /// in one run, each with its line and column in the file (or the
    /// environment variable that set the key). Exits non-zero on any.
    #[command(after_help = "Examples:
  raccordo check --config raccordo.toml
  RACCORDO__HUB__GRPC_LISTEN=0.0.0.0:50051 raccordo check -c raccordo.toml")]
    Check {
        /// Configuration file (TOML).
        #[arg(long, short, env = "RACCORDO_CONFIG")]
        config: PathBuf,
    },
    /// Submit, read, list and watch practices on a running hub (see
    /// docs/cli.md for the connection and credential options).
    #[command(after_help = "Examples:
  raccordo practice submit config/examples/residence-certificate.json
  raccordo practice list --tenant 016024 --status SUBMITTED
  raccordo practice watch --tenant 016024 --until APPROVED --timeout 30s ID")]
    Practice {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: PracticeCommand,
    },
    #[command(after_help = "Examples:
  raccordo status --server hub-1.comune.local:50051 --api-key-file ~/.raccordo/ops.key
  raccordo status --profile production --json")]
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
    #[command(after_help = "Examples:
  raccordo route render -c raccordo.toml -t 016024 -s CERT_RESIDENZA -p config/examples/residence-certificate.json")]
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    #[command(after_help = "Examples:
  raccordo audit verify --config raccordo.toml
  raccordo audit export --config raccordo.toml --tenant 016024 --from 2026-01-01 > audit.jsonl")]
    /// The audit trail in the hub's database: verify its hash chains, or
    /// export a tenant's records. Reads the configured store directly (the
    /// SQLite file on the hub's machine, or PostgreSQL), also while the hub
    /// runs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    #[command(after_help = "Examples:
  raccordo purge --config raccordo.toml --dry-run
  raccordo purge --config raccordo.toml")]
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
    #[command(after_help = "Examples:
  raccordo migrate --config raccordo.toml --dry-run --sql
  raccordo migrate --config raccordo.toml")]
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
    #[command(after_help = "Examples:
  raccordo store backup --config raccordo.toml --to /backup/raccordo-2026-05-28.db
  raccordo store copy --from config:sqlite.toml --to config:postgres.toml")]
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Dead-lettered deliveries on a running hub (needs an admin client).
    #[command(after_help = "Examples:
  raccordo dlq list --tenant 028060
  raccordo dlq replay 019cadec-4139-7d10-9a4e-3f1c2b5d6e70 --operator op-017")]
    Dlq {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The services a municipality offers on a running hub, with their
    /// form fields.
    #[command(after_help = "Examples:
  raccordo catalog list --tenant 016024
  raccordo catalog list --tenant 016024 --json")]
    Catalog {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Tools for SOAP back offices.
    #[cfg(feature = "soap")]
    #[command(after_help = "Examples:
  raccordo soap inspect https://protocollo.example.it/ws?wsdl
  raccordo soap inspect servizio.wsdl --operation ProtocollaDocumento")]
    Soap {
        #[command(subcommand)]
        command: SoapCommand,
    },
}

/// `raccordo soap …`
#[cfg(feature = "soap")]
#[derive(Debug, Subcommand)]
pub enum SoapCommand {
    /// List a WSDL's services, ports, operations, SOAP versions and
    /// actions; with --operation, print a starting request template.
    #[command(after_help = "Examples:
  raccordo soap inspect servizio.wsdl
  raccordo soap inspect https://protocollo.example.it/ws?wsdl --operation ProtocollaDocumento")]
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
    /// Submit a practice described by a JSON file (`-` for stdin): a
    /// SubmitPracticeRequest in the API's JSON (docs/api.md), where
    /// `idempotency_key` may be left out (a fresh one is used) and an
    /// attachment may give `path` (relative to the file) for `content`.
    #[command(after_help = "Examples:
  raccordo practice submit config/examples/residence-certificate.json
  raccordo practice submit --json - < practice.json")]
    Submit {
        /// The JSON file.
        file: PathBuf,
    },
    /// Show one practice with its events.
    #[command(after_help = "Examples:
  raccordo practice get --tenant 016024 019cadec-4138-7c55-8f21-6a9e0d4c3b21
  raccordo practice get --tenant 016024 --json 019cadec-4138-7c55-8f21-6a9e0d4c3b21")]
    Get {
        #[arg(long, short)]
        tenant: String,
        /// Practice id.
        id: String,
    },
    /// List practices, newest first.
    #[command(after_help = "Examples:
  raccordo practice list --tenant 016024
  raccordo practice list --tenant 016024 --applicant RSSMRA45D25F205N --status APPROVED
  raccordo practice list --tenant 016024 --json --limit 500 > practices.json")]
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
    /// Follow a practice's events until it concludes, reaches the status
    /// given with --until, or --timeout passes (then it exits non-zero).
    #[command(after_help = "Examples:
  raccordo practice watch --tenant 016024 019cadec-4138-7c55-8f21-6a9e0d4c3b21
  raccordo practice watch --tenant 016024 --until APPROVED --timeout 30s 019cadec-4138-7c55-8f21-6a9e0d4c3b21")]
    Watch {
        #[arg(long, short)]
        tenant: String,
        /// Practice id.
        id: String,
        /// Replay from this sequence number.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Stop with success once the practice has this administrative
        /// status (APPROVED, REGISTERED, …); fail if it concludes otherwise.
        #[arg(long, value_name = "STATUS")]
        until: Option<String>,
        /// Give up after this long (30s, 2m), exiting non-zero.
        #[arg(long, value_name = "DURATION", value_parser = client::parse_timeout)]
        timeout: Option<std::time::Duration>,
    },
    /// Withdraw a practice for the applicant (or an operator).
    #[command(after_help = "Examples:
  raccordo practice withdraw --tenant 016024 --reason \"presentata per errore\" 019cadec-4138-7c55-8f21-6a9e0d4c3b21
  raccordo practice withdraw --tenant 028060 --operator op-017 019cadec-4138-7c55-8f21-6a9e0d4c3b21")]
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
    /// Download an outcome document (a certificate, a receipt), checking
    /// its SHA-256 against the one the hub recorded before writing it.
    #[command(after_help = "Examples:
  raccordo practice document --tenant 016024 019cadec-4138-7c55-8f21-6a9e0d4c3b21
  raccordo practice document --tenant 016024 019cadec-4138-7c55-8f21-6a9e0d4c3b21 certificato.pdf -o ~/Scaricati/
  raccordo practice document --tenant 016024 019cadec-4138-7c55-8f21-6a9e0d4c3b21 -o - | pdftotext - -")]
    Document {
        #[arg(long, short)]
        tenant: String,
        /// Practice id.
        id: String,
        /// The document's name; needed only when there are several.
        name: Option<String>,
        /// Where to write it: a file, a folder (the document's name inside
        /// it), or `-` for standard output [default: the document's name
        /// in the current folder].
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// `raccordo catalog …`
#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// The services a tenant offers: code, mode, legal term, regime,
    /// title and form fields.
    #[command(after_help = "Examples:
  raccordo catalog list --tenant 016024
  raccordo catalog list --tenant 016024 --json")]
    List {
        #[arg(long, short)]
        tenant: String,
    },
}

/// `raccordo route …`
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Print the request the vendor would receive for a sample practice
    /// (method, URL, headers with secrets redacted, body); nothing is sent.
    #[command(after_help = "Examples:
  raccordo route render -c raccordo.toml -t 016024 -s CERT_RESIDENZA -p config/examples/residence-certificate.json
  raccordo route render -c raccordo.toml -t 028060 -s TARI_DICHIARAZIONE -p tari.json --operation withdraw")]
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
    #[command(after_help = "Examples:
  raccordo audit verify --config raccordo.toml
  raccordo audit verify --config raccordo.toml --tenant 016024")]
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
    #[command(after_help = "Examples:
  raccordo audit export --config raccordo.toml --tenant 016024 > audit-016024.jsonl
  raccordo audit export --config raccordo.toml --tenant 016024 --from 2026-01-01 --to 2026-02-01")]
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
    #[command(after_help = "Examples:
  raccordo store copy --from config:sqlite.toml --to config:postgres.toml
  RACCORDO_DATABASE_URL=postgres://… raccordo store copy --from sqlite:data/raccordo.db --to postgres:env:RACCORDO_DATABASE_URL")]
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
    #[command(after_help = "Examples:
  raccordo store backup --config raccordo.toml --to /backup/raccordo-2026-05-28.db")]
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
    #[command(after_help = "Examples:
  raccordo dlq list
  raccordo dlq list --tenant 028060 --json")]
    List {
        /// Only this tenant.
        #[arg(long, short)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Send a dead-lettered delivery again (same operation id).
    #[command(after_help = "Examples:
  raccordo dlq replay 019cadec-4139-7d10-9a4e-3f1c2b5d6e70 --operator op-017")]
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
    let printer = |server: &ServerArgs| -> anyhow::Result<output::Printer> {
        Ok(output::Printer {
            json: server.json,
            style: style::Style::new(cli.color.for_stdout(), &cli.time_zone)?,
        })
    };
    match cli.command {
        Command::Serve { config } => {
            let cfg = crate::config::load(&config)?;
            let hub = crate::server::start(cfg).await?;
            print_banner(&hub);
            hub.run_until_signal().await
        }
        Command::Check { config } => check(&config),
        Command::Practice { server, command } => {
            client::practice(&server, &printer(&server)?, command).await
        }
        Command::Dlq { server, command } => client::dlq(&server, &printer(&server)?, command).await,
        Command::Status { server } => client::status(&server, &printer(&server)?).await,
        Command::Catalog { server, command } => {
            client::catalog(&server, &printer(&server)?, command).await
        }
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
        #[cfg(feature = "soap")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command's `--help` ends with examples to copy.
    #[test]
    fn every_command_has_examples_in_its_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                if !help.starts_with("Examples:\n  raccordo ") {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "raccordo", &mut missing);
        assert!(missing.is_empty(), "no examples in: {missing:?}");
        Cli::command().debug_assert();
    }
}
