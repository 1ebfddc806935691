//! `raccordo migrate` and `raccordo store …`: the store's schema, its
//! backup, and the move from SQLite to PostgreSQL.

use crate::config::{Config, StoreKind};
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::offline;
use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};

/// The PostgreSQL store of `cfg`, connected without migrating: commands
/// that only read, or that migrate on their own terms.
pub(super) async fn connect_pg(cfg: &Config) -> anyhow::Result<PgStore> {
    let pg = cfg.store.postgres();
    let url = pg.connection_url(&cfg.base_dir).map_err(|(key, reason)| {
        anyhow!("{}: store.postgres.{key}: {reason}", cfg.source.display())
    })?;
    let opts = PgOptions::from_config(&pg, &cfg.base_dir);
    Ok(PgStore::connect(&url, &opts, None).await?)
}

/// `raccordo migrate`.
pub(super) async fn migrate(config: &Path, dry_run: bool, sql: bool) -> anyhow::Result<()> {
    let cfg = crate::config::load(config)?;
    let (current, pending) = match cfg.store.kind {
        StoreKind::Sqlite => {
            let db = cfg.database_path();
            if db.exists() {
                offline::pending_migrations(&db)?
            } else {
                // A new file: every migration, as the first start would.
                (0, offline::every_migration())
            }
        }
        StoreKind::Postgres => connect_pg(&cfg).await?.pending_migrations().await?,
    };
    let store = store_name(&cfg);
    if pending.is_empty() {
        println!("{store}: at schema version {current}, nothing to apply");
        return Ok(());
    }
    if dry_run {
        println!(
            "{store}: at schema version {current}; {} migration(s) would run:",
            pending.len()
        );
        for m in &pending {
            println!("  {:>4}  {}", m.version, m.name);
            if sql {
                for line in m.sql.lines() {
                    println!("        {line}");
                }
            }
        }
        return Ok(());
    }
    let version = match cfg.store.kind {
        StoreKind::Sqlite => offline::migrate(&cfg.database_path())?,
        StoreKind::Postgres => connect_pg(&cfg).await?.migrate().await?,
    };
    for m in &pending {
        println!("applied {:>4}  {}", m.version, m.name);
    }
    println!("{store}: at schema version {version}");
    Ok(())
}

/// How a command names the configured store (never the PostgreSQL URL).
fn store_name(cfg: &Config) -> String {
    match cfg.store.kind {
        StoreKind::Sqlite => format!("SQLite {}", cfg.database_path().display()),
        StoreKind::Postgres => "PostgreSQL store".to_string(),
    }
}

/// `raccordo store backup`.
pub(super) fn backup(config: &Path, to: &Path) -> anyhow::Result<()> {
    let cfg = crate::config::load(config)?;
    if cfg.store.kind == StoreKind::Postgres {
        bail!(
            "{}: store.kind is postgres: back it up with pg_dump or pg_basebackup and WAL \
             archiving (docs/deployment.md), not with raccordo",
            cfg.source.display()
        );
    }
    let db = cfg.database_path();
    let b = offline::backup(&db, to).with_context(|| format!("--to {}", to.display()))?;
    println!(
        "backed up {} to {}: {} bytes, schema version {}, {} practice(s)",
        db.display(),
        to.display(),
        b.bytes,
        b.schema_version,
        b.practices
    );
    Ok(())
}

/// Where a copy reads from.
fn source(from: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = from.strip_prefix("sqlite:") {
        if path.is_empty() {
            bail!("--from: sqlite: names no file (sqlite:PATH)");
        }
        return Ok(PathBuf::from(path));
    }
    if let Some(file) = from.strip_prefix("config:") {
        let cfg = crate::config::load(Path::new(file)).context("--from")?;
        if cfg.store.kind != StoreKind::Sqlite {
            bail!(
                "--from: {}: store.kind is not sqlite: a copy reads a SQLite store",
                cfg.source.display()
            );
        }
        return Ok(cfg.database_path());
    }
    bail!("--from: '{from}' is neither sqlite:PATH nor config:FILE")
}

/// Where a copy writes to: the connection URL and its options. The URL is
/// a secret: it is read from the environment or a file, never from the
/// command line (which every user of the machine sees), and never printed.
fn target(to: &str) -> anyhow::Result<(String, PgOptions)> {
    if let Some(file) = to.strip_prefix("config:") {
        let cfg = crate::config::load(Path::new(file)).context("--to")?;
        if cfg.store.kind != StoreKind::Postgres {
            bail!(
                "--to: {}: store.kind is not postgres: a copy writes to a PostgreSQL store",
                cfg.source.display()
            );
        }
        let pg = cfg.store.postgres();
        let url = pg.connection_url(&cfg.base_dir).map_err(|(key, reason)| {
            anyhow!(
                "--to: {}: store.postgres.{key}: {reason}",
                cfg.source.display()
            )
        })?;
        return Ok((url, PgOptions::from_config(&pg, &cfg.base_dir)));
    }
    if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        bail!(
            "--to: a connection URL on the command line is visible to every user of the machine: \
             put it in an environment variable (postgres:env:VAR) or a file (postgres:file:PATH)"
        );
    }
    let Some(rest) = to.strip_prefix("postgres:") else {
        bail!("--to: '{to}' is neither postgres:env:VAR, postgres:file:PATH nor config:FILE");
    };
    let url = if let Some(var) = rest.strip_prefix("env:") {
        match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => bail!("--to: the environment variable {var} is not set or empty"),
        }
    } else if let Some(file) = rest.strip_prefix("file:") {
        let text =
            std::fs::read_to_string(file).map_err(|e| anyhow!("--to: cannot read {file}: {e}"))?;
        let url = text.trim().to_string();
        if url.is_empty() {
            bail!("--to: {file} is empty");
        }
        url
    } else {
        bail!("--to: '{to}' is neither postgres:env:VAR, postgres:file:PATH nor config:FILE");
    };
    Ok((url, PgOptions::default()))
}

/// `raccordo store copy`.
pub(super) async fn copy(from: &str, to: &str, replace: bool) -> anyhow::Result<()> {
    let db = source(from)?;
    if !db.exists() {
        bail!("--from: {} does not exist", db.display());
    }
    let (url, opts) = target(to)?;
    // The source hub must be stopped: its lock is taken for the whole copy,
    // so no hub starts on the file meanwhile either.
    let held = offline::Offline::take(&db).context("--from")?;
    let (version, _) = offline::pending_migrations(&db).context("--from")?;
    let newest = offline::newest_schema();
    if version != newest {
        bail!(
            "--from: {} is at schema version {version}, this raccordo writes version {newest}: \
             run `raccordo migrate` on it first{}",
            db.display(),
            if version > newest {
                " with a newer raccordo"
            } else {
                ""
            }
        );
    }
    // A trail broken before the copy would fail the check after it.
    let source = crate::store::sqlite::SqliteStore::verify_audit(&db, None).context("--from")?;
    if let Some(problem) = first_problem(&source) {
        bail!(
            "--from: the audit trail of {} does not verify ({problem}): \
             `raccordo audit verify` lists every problem; nothing was copied",
            db.display(),
        );
    }
    let target = PgStore::open(&url, &opts, None, None)
        .await
        .map_err(|e| anyhow!("--to: {e}"))?;
    let report = target
        .import_sqlite(held, replace)
        .await
        .map_err(|e| anyhow!("copy from {} failed, nothing was copied: {e}", db.display()))?;
    println!("copied {} into PostgreSQL:", db.display());
    for (table, rows) in &report.rows {
        println!("  {table:<17} {rows:>9} rows (same in source and target)");
    }
    println!("  event cursor counter set to {}", report.event_cursor);
    let copied = target.verify_audit(None).await?;
    if let Some(problem) = first_problem(&copied) {
        bail!(
            "the copy is committed but its audit trail does not verify on PostgreSQL ({problem}); \
             {} record(s) verified on the source",
            source.records
        );
    }
    println!(
        "audit trail intact on the target: {} record(s) verified, {} practice(s) as recorded",
        copied.records, copied.practices
    );
    Ok(())
}

/// The first broken chain or differing practice of `report`, in words.
fn first_problem(report: &crate::store::AuditReport) -> Option<String> {
    if let Some(b) = report.breaks.first() {
        return Some(format!(
            "tenant {}, record {}: {}",
            b.tenant_id, b.seq, b.reason
        ));
    }
    report.differences.first().map(|d| {
        format!(
            "tenant {}, practice {}: {} differs from its audit trail: {}",
            d.tenant_id, d.practice_id, d.field, d.reason
        )
    })
}
