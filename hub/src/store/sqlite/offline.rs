//! What operators do to a database file besides running the hub on it:
//! apply migrations, take a backup, hand it over to a copy.

use super::ownership;
use super::readers::open_read_only;
use crate::store::schema;
use crate::store::{Migration, StoreError};
use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// The database at `path`, held for an offline tool: no hub can start on
/// it until this is dropped (the same lock a running hub holds).
#[derive(Debug)]
pub struct Offline {
    _ownership: ownership::Ownership,
    path: PathBuf,
}

impl Offline {
    /// Takes the database at `path`, refusing while a hub runs on it.
    pub fn take(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Internal(format!(
                "{} does not exist",
                path.display()
            )));
        }
        Ok(Self {
            _ownership: ownership::claim(path)?,
            path: path.to_path_buf(),
        })
    }

    /// A read-only connection to the database.
    pub fn read(&self) -> Result<Connection, StoreError> {
        open_read_only(&self.path)
    }
}

/// The schema version of the database at `path` and the migrations a start
/// would apply; reads only, also while the hub runs.
pub fn pending_migrations(path: &Path) -> Result<(i64, Vec<Migration>), StoreError> {
    schema::pending(&open_read_only(path)?)
}

/// Every migration this binary carries: what a new file gets.
pub fn every_migration() -> Vec<Migration> {
    schema::after_version(0)
}

/// The newest schema version this binary knows.
pub fn newest_schema() -> i64 {
    schema::newest()
}

/// Applies pending migrations to the database at `path`, creating it if
/// missing; refused while a hub runs on it (the hub migrates at start, and
/// a newer binary must not change the schema under an older hub that
/// holds the file). Returns the schema version.
pub fn migrate(path: &Path) -> Result<i64, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Internal(format!("cannot create {}: {e}", dir.display())))?;
    }
    let _held = ownership::claim(path)?;
    let mut conn = Connection::open(path)
        .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    schema::migrate(&mut conn)
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct Backup {
    pub bytes: u64,
    pub schema_version: i64,
    pub practices: i64,
}

/// Writes a consistent copy of the database at `path` to `to` with
/// `VACUUM INTO`, also while the hub runs: one read transaction (in WAL
/// mode it never blocks the hub's writer, and the hub's writes never make
/// it start over, as they make the online backup API's steps), into a
/// compact file that needs no WAL beside it. Written to `to.partial`,
/// synced, checked, then renamed: `to` is either the whole backup or absent.
pub fn backup(path: &Path, to: &Path) -> Result<Backup, StoreError> {
    if to.exists() {
        return Err(StoreError::Conflict(format!(
            "{} exists: a backup never overwrites a file",
            to.display()
        )));
    }
    let mut partial = to.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    // A partial file is what an interrupted backup left: never a backup.
    let _ = std::fs::remove_file(&partial);
    let conn = open_read_only(path)?;
    let target = partial
        .to_str()
        .ok_or_else(|| StoreError::Internal(format!("{} is not UTF-8", partial.display())))?;
    let written = conn
        .execute("VACUUM INTO ?1", [target])
        .map_err(StoreError::from)
        .and_then(|_| check_backup(&partial));
    let backup = match written {
        Ok(backup) => backup,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(&format!("backup to {}", to.display())));
        }
    };
    let io = |e: std::io::Error| StoreError::Internal(format!("{}: {e}", to.display()));
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&partial, to).map_err(io)?;
    // The rename itself survives a crash once the directory is synced.
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(backup)
}

/// Opens a fresh backup and checks it is a sound database.
fn check_backup(path: &Path) -> Result<Backup, StoreError> {
    let conn = open_read_only(path)?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(StoreError::Corrupt(format!(
            "the backup fails its check: {check}"
        )));
    }
    let (schema_version, _) = schema::pending(&conn)?;
    let practices = conn.query_row("SELECT COUNT(*) FROM practices", [], |r| r.get(0))?;
    let bytes = std::fs::metadata(path)
        .map_err(|e| StoreError::Internal(format!("{}: {e}", path.display())))?
        .len();
    Ok(Backup {
        bytes,
        schema_version,
        practices,
    })
}
