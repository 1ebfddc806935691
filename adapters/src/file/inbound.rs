//! Result files: watch the vendor's outbox, pick up complete files, apply
//! every row, then move the file.
//!
//! Order of work, and why it is safe:
//!
//! 1. A file is taken only once complete (marker, rename-into-place or a
//!    quiet period, per instance); temporary names are never taken.
//! 2. Each row is applied through the hub in its own transaction, with the
//!    receipt `SHA256-of-file:row`. The same content seen again (re-sent,
//!    restored from a backup, read by a second hub, re-read after a crash)
//!    is recognised by the hub and changes nothing.
//! 3. Only after every row is committed does the file move (to `processed/`,
//!    or `rejected/` with an `.error.txt`). A crash before the move leaves
//!    the file in place: the next scan re-reads it harmlessly.
//!
//! If the hub cannot store a row right now the file stays where it is and is
//! retried at the next scan.
//!
//! Several hub instances sharing one database see the same folder: only the
//! holder of the singleton `file-scan:<instance>` scans it (the hub says
//! which, [`ResultSink::holds`]); the others watch and ask again at each
//! wake-up, and one of them takes over when the holder stops. Reading a
//! file twice would still be harmless (step 2); this spares the vendor's
//! share the double work and the races on moving files.

use super::config::{InboundCompletion, InboundConfig};
use super::fsio::{self, FsError};
use super::mapping::map_row;
use super::parse::{self, Row, RowError};
use crate::adapter::{AdapterHealth, InboundError, InboundResult, ResultSink};
use crate::model::sha256_hex;
use notify::Watcher;
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

/// Environment variable for crash tests: `file_after_commit` aborts the
/// process after a file's rows are committed and before it is moved.
pub const FAILPOINT_ENV: &str = "RACCORDO_FAILPOINT";

/// Retry delay when the hub or the folder is unavailable.
const RETRY: Duration = Duration::from_secs(1);

/// The inbound side of one instance.
pub struct Inbound {
    pub name: String,
    pub config: InboundConfig,
    pub sink: Arc<dyn ResultSink>,
    pub health: Arc<Mutex<Option<String>>>,
}

/// What happened to one file, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileReport {
    pub applied: usize,
    pub duplicates: usize,
    pub bad: Vec<(String, String)>,
}

enum Outcome {
    Done,
    /// Not now (hub unavailable, folder trouble): leave the file, retry.
    Later(String),
}

struct Candidate {
    path: PathBuf,
    name: String,
    size: u64,
    mtime: SystemTime,
}

impl Inbound {
    /// Runs forever: file events wake it, the periodic scan catches what
    /// events miss (network shares deliver none).
    pub async fn run(self) {
        let wake = Arc::new(Notify::new());
        let mut watcher = None;
        let mut quiet: HashMap<PathBuf, (u64, SystemTime, Instant)> = HashMap::new();
        let turn = format!("file-scan:{}", self.name);
        loop {
            if watcher.is_none() {
                watcher = watch(&self.config.folder, Arc::clone(&wake));
            }
            // Another hub instance scans: look again at the next wake-up.
            let recheck = if self.sink.holds(&turn).await {
                self.scan(&mut quiet).await
            } else {
                quiet.clear();
                None
            };
            let wait = recheck.map_or(self.config.scan_interval, |r| {
                r.min(self.config.scan_interval)
            });
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn set_health(&self, problem: Option<String>) {
        if let Ok(mut h) = self.health.lock() {
            *h = problem;
        }
    }

    /// One pass over the folder; returns when to look again, if sooner than
    /// the scan interval (files in their quiet period, retries).
    async fn scan(
        &self,
        quiet: &mut HashMap<PathBuf, (u64, SystemTime, Instant)>,
    ) -> Option<Duration> {
        let folder = self.config.folder.clone();
        let cfg = self.config.clone();
        let listed = tokio::task::spawn_blocking(move || list(&folder, &cfg)).await;
        let candidates = match listed {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(adapter = %self.name, "cannot read the outbox: {e}");
                self.set_health(Some(format!("outbox: {e}")));
                return Some(RETRY * 5);
            }
            Err(e) => {
                self.set_health(Some(format!("outbox scan failed: {e}")));
                return Some(RETRY * 5);
            }
        };
        let mut recheck: Option<Duration> = None;
        let mut soon = |d: Duration| recheck = Some(recheck.map_or(d, |r: Duration| r.min(d)));
        let seen: std::collections::HashSet<PathBuf> =
            candidates.iter().map(|c| c.path.clone()).collect();
        quiet.retain(|p, _| seen.contains(p));
        let mut problem = None;
        for c in candidates {
            if self.config.completion == InboundCompletion::QuietPeriod {
                let now = Instant::now();
                let entry = quiet
                    .entry(c.path.clone())
                    .or_insert((c.size, c.mtime, now));
                if entry.0 != c.size || entry.1 != c.mtime {
                    *entry = (c.size, c.mtime, now);
                }
                let stable_for = now.duration_since(entry.2);
                let age = SystemTime::now()
                    .duration_since(c.mtime)
                    .unwrap_or(Duration::ZERO);
                let period = self.config.quiet_period;
                if stable_for < period || age < period {
                    soon(period.saturating_sub(stable_for.min(age)) + Duration::from_millis(50));
                    continue;
                }
                quiet.remove(&c.path);
            }
            match self.process(&c).await {
                Outcome::Done => {}
                Outcome::Later(reason) => {
                    problem = Some(reason);
                    soon(RETRY);
                }
            }
        }
        self.set_health(problem);
        recheck
    }

    /// Reads, applies and moves one complete file.
    async fn process(&self, c: &Candidate) -> Outcome {
        let path = c.path.clone();
        let max = self.config.max_file_bytes;
        let read = tokio::task::spawn_blocking(move || read_bounded(&path, max)).await;
        let bytes = match read {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => {
                let reason = format!(
                    "the file is larger than max_file_bytes ({max}): not read, nothing applied"
                );
                return self
                    .finish(c, None, &FileReport::default(), Some(reason))
                    .await;
            }
            Ok(Err(e)) if e.source.kind() == std::io::ErrorKind::NotFound => return Outcome::Done,
            Ok(Err(e)) => return Outcome::Later(e.to_string()),
            Err(e) => return Outcome::Later(format!("reading {}: {e}", c.name)),
        };
        let sha = sha256_hex(&bytes);
        let parsed = parse::decode(&bytes, self.config.encoding)
            .and_then(|text| parse::rows(&text, &self.config));
        drop(bytes);
        let rows = match parsed {
            Ok(rows) => rows,
            Err(e) => {
                return self
                    .finish(c, Some(&sha), &FileReport::default(), Some(e.0))
                    .await;
            }
        };
        let mut report = FileReport::default();
        for row in rows {
            match self.apply(row, &sha).await {
                Ok(true) => report.applied += 1,
                Ok(false) => report.duplicates += 1,
                Err(RowFailure::Bad(at, reason)) => report.bad.push((at, reason)),
                Err(RowFailure::Later(reason)) => {
                    tracing::warn!(adapter = %self.name, file = %c.name,
                        "the hub cannot store results now; the file is retried: {reason}");
                    return Outcome::Later(format!("{}: {reason}", c.name));
                }
            }
        }
        if std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == "file_after_commit") {
            tracing::error!("failpoint file_after_commit: aborting before the move");
            std::process::abort();
        }
        self.finish(c, Some(&sha), &report, None).await
    }

    async fn apply(&self, row: Result<Row, RowError>, sha: &str) -> Result<bool, RowFailure> {
        let row = row.map_err(|e| RowFailure::Bad(e.at, e.reason))?;
        let mapped = map_row(&row, &self.config.fields, &self.name)
            .map_err(|reason| RowFailure::Bad(row.at.clone(), reason))?;
        let result = InboundResult {
            adapter: self.name.clone(),
            tenant_id: mapped.tenant_id,
            correlation: mapped.correlation,
            reply: mapped.reply,
            receipt: Some(format!("{sha}:{}", row.ordinal)),
        };
        match self.sink.apply(result).await {
            // Pending: stored, applied when the delivery's attempt ends.
            Ok(
                crate::adapter::InboundOutcome::Applied | crate::adapter::InboundOutcome::Pending,
            ) => Ok(true),
            Ok(crate::adapter::InboundOutcome::Duplicate) => Ok(false),
            Err(InboundError::Unavailable(m)) => Err(RowFailure::Later(m)),
            Err(e @ InboundError::Uncorrelated(_)) => {
                Err(RowFailure::Bad(row.at, format!("{e} (no such practice)")))
            }
            Err(InboundError::Refused(m)) => Err(RowFailure::Bad(row.at, m)),
            // The anomaly's reason quotes the row: the report names only
            // its class; the practice's ANOMALY event says what arrived.
            Err(InboundError::Anomaly(a)) => Err(RowFailure::Bad(
                row.at,
                format!(
                    "recorded as an anomaly ({}) on its practice and not applied",
                    a.class
                ),
            )),
        }
    }

    /// Moves the file after its rows are committed. `fatal` = the file as a
    /// whole could not be used (it goes to `rejected/`).
    async fn finish(
        &self,
        c: &Candidate,
        sha: Option<&str>,
        report: &FileReport,
        fatal: Option<String>,
    ) -> Outcome {
        let good = report.applied + report.duplicates;
        let rejected = fatal.is_some() || (good == 0 && !report.bad.is_empty());
        let text = error_report(&c.name, sha, report, fatal.as_deref());
        if rejected {
            // Why is in the error report next to the file: it can quote rows.
            tracing::warn!(adapter = %self.name, file = %c.name, bad = report.bad.len(),
                unreadable = fatal.is_some(), "result file rejected");
        } else {
            tracing::info!(adapter = %self.name, file = %c.name, applied = report.applied,
                duplicates = report.duplicates, bad = report.bad.len(), "result file processed");
        }
        let cfg = self.config.clone();
        let (path, name) = (c.path.clone(), c.name.clone());
        let needs_report = rejected || !report.bad.is_empty();
        let moved = tokio::task::spawn_blocking(move || {
            dispose(&cfg, &path, &name, rejected, needs_report.then_some(text))
        })
        .await;
        match moved {
            Ok(Ok(())) => Outcome::Done,
            Ok(Err(e)) => {
                tracing::error!(adapter = %self.name, file = %c.name, "cannot move the result file: {e}");
                Outcome::Later(e.to_string())
            }
            Err(e) => Outcome::Later(format!("moving {}: {e}", c.name)),
        }
    }
}

enum RowFailure {
    Bad(String, String),
    Later(String),
}

/// The `.error.txt` text: which lines and why, never the rows' content.
fn error_report(name: &str, sha: Option<&str>, r: &FileReport, fatal: Option<&str>) -> String {
    let mut out = format!("file: {name}\n");
    if let Some(sha) = sha {
        out.push_str(&format!("sha256: {sha}\n"));
    }
    match fatal {
        Some(reason) => out.push_str(&format!("rejected: {reason}\n")),
        None => out.push_str(&format!(
            "applied: {}, already applied: {}, rejected rows: {}\n",
            r.applied,
            r.duplicates,
            r.bad.len()
        )),
    }
    for (at, reason) in &r.bad {
        out.push_str(&format!("{at}: {reason}\n"));
    }
    out
}

/// Lists complete-looking candidates (regular files, not temporary, not
/// markers, with a marker when the convention asks for one).
fn list(folder: &Path, cfg: &InboundConfig) -> Result<Vec<Candidate>, FsError> {
    let folder = fsio::open_folder(folder, "outbox")?;
    let entries = fs::read_dir(&folder).map_err(|source| FsError {
        what: format!("listing {}", folder.display()),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // symlink_metadata: a symlink is not a result file (never followed).
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if !meta.file_type().is_file()
            || cfg.temp_patterns.iter().any(|p| glob(p, &name))
            || name.ends_with(".error.txt")
        {
            continue;
        }
        if cfg.completion == InboundCompletion::Marker {
            if name.ends_with(&cfg.marker_suffix) {
                continue;
            }
            if !folder
                .join(format!("{name}{}", cfg.marker_suffix))
                .is_file()
            {
                continue;
            }
        }
        if !cfg.suffixes.is_empty() && !cfg.suffixes.iter().any(|s| name.ends_with(s.as_str())) {
            continue;
        }
        out.push(Candidate {
            path: entry.path(),
            name,
            size: meta.len(),
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    // Oldest first: results of one practice apply in the order written.
    out.sort_by(|a, b| a.mtime.cmp(&b.mtime).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Reads at most `max` bytes; `None` if the file is larger.
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, FsError> {
    let what = || format!("reading {}", path.display());
    let f = fs::File::open(path).map_err(|source| FsError {
        what: what(),
        source,
    })?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| FsError {
            what: what(),
            source,
        })?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

/// Report first, then the move: a crash in between re-processes the file
/// (its rows are duplicates by then) and writes the report again.
fn dispose(
    cfg: &InboundConfig,
    path: &Path,
    name: &str,
    rejected: bool,
    report: Option<String>,
) -> Result<(), FsError> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let stamped = format!("{}-{name}", fsio::stamp());
    let rejected_dir = folder.join(&cfg.rejected_folder);
    if let Some(text) = report {
        fsio::ensure_dir(&rejected_dir)?;
        fsio::write_atomic(
            &rejected_dir,
            &format!("{stamped}.error.txt"),
            text.as_bytes(),
        )?;
        fsio::sync_dir(&rejected_dir)?;
    }
    let marker = (cfg.completion == InboundCompletion::Marker)
        .then(|| folder.join(format!("{name}{}", cfg.marker_suffix)));
    if rejected {
        fsio::move_into(path, &rejected_dir, &stamped)?;
    } else if cfg.delete_processed {
        match fs::remove_file(path) {
            Ok(()) => fsio::sync_dir(folder)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(FsError {
                    what: format!("deleting {}", path.display()),
                    source,
                });
            }
        }
    } else {
        fsio::move_into(path, &folder.join(&cfg.processed_folder), &stamped)?;
    }
    // The vendor's marker follows its file (or goes, when files are deleted).
    if let Some(m) = marker {
        let target = if rejected {
            Some(rejected_dir)
        } else if cfg.delete_processed {
            None
        } else {
            Some(folder.join(&cfg.processed_folder))
        };
        match target {
            Some(dir) => {
                fsio::move_into(&m, &dir, &format!("{stamped}{}", cfg.marker_suffix))?;
            }
            None => {
                let _ = fs::remove_file(&m);
            }
        }
    }
    Ok(())
}

/// `*` matches any run of characters; everything else literally.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// A file-event watcher that wakes the scanner; `None` if the folder
/// cannot be watched now (the periodic scan carries on and retries).
fn watch(folder: &Path, wake: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
    let handler = move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            wake.notify_one();
        }
    };
    let mut w = notify::recommended_watcher(handler).ok()?;
    match w.watch(folder, notify::RecursiveMode::NonRecursive) {
        Ok(()) => Some(w),
        Err(e) => {
            tracing::debug!(folder = %folder.display(), "no file events, scanning only: {e}");
            None
        }
    }
}

/// The health an inbound problem gives the instance.
pub fn health_of(problem: &Option<String>) -> AdapterHealth {
    match problem {
        None => AdapterHealth::Up,
        Some(p) => AdapterHealth::Degraded(p.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*.tmp", "a.csv.tmp"));
        assert!(glob(".*", ".a.csv"));
        assert!(!glob(".*", "a.csv"));
        assert!(glob("~*", "~lock"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxc"));
        assert!(glob("x", "x") && !glob("x", "y"));
    }
}
