//! Durable, contained file operations (blocking; callers use
//! `spawn_blocking`).
//!
//! Every file appears under its final name in one step: written under a
//! hidden temporary name in the same folder, `fsync`ed, renamed, and the
//! folder `fsync`ed, so a reader never sees a partial file and a crash never
//! leaves a half-written one under a real name. Names are one plain path
//! component and resolved against the canonical folder; existing symlinks
//! are never followed or replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// An I/O failure with what was being done, for operators.
#[derive(Debug)]
pub struct FsError {
    pub what: String,
    pub source: io::Error,
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, describe(&self.source))
    }
}

/// A readable description of an I/O error (full disk, permissions, …).
pub fn describe(e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::NotFound => "not found",
        io::ErrorKind::PermissionDenied => "permission denied",
        io::ErrorKind::StorageFull => "no space left on the device",
        io::ErrorKind::QuotaExceeded => "disk quota exceeded",
        io::ErrorKind::ReadOnlyFilesystem => "read-only file system",
        _ => return e.to_string(),
    };
    format!("{hint} ({e})")
}

fn err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FsError {
    let what = what.into();
    move |source| FsError { what, source }
}

/// The folder, canonical (a symlinked folder configured by the operator is
/// resolved once here; entries inside it are never followed).
pub fn open_folder(folder: &Path, role: &str) -> Result<PathBuf, FsError> {
    let canon =
        fs::canonicalize(folder).map_err(err(format!("{role} folder {}", folder.display())))?;
    let meta = fs::metadata(&canon).map_err(err(format!("{role} folder {}", canon.display())))?;
    if !meta.is_dir() {
        return Err(FsError {
            what: format!("{role} folder {}", canon.display()),
            source: io::Error::other("is not a directory"),
        });
    }
    Ok(canon)
}

/// `folder/name`, checked to be a direct child of `folder` after resolution.
pub fn child(folder: &Path, name: &str) -> Result<PathBuf, FsError> {
    let mut parts = Path::new(name).components();
    let plain = matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none();
    let path = folder.join(name);
    if !plain || path.parent() != Some(folder) {
        return Err(FsError {
            what: format!("file name '{name}'"),
            source: io::Error::other("does not stay inside the folder"),
        });
    }
    Ok(path)
}

/// Writes `bytes` as `folder/name` atomically (without the folder fsync:
/// call [`sync_dir`] once after a group of files).
pub fn write_atomic(folder: &Path, name: &str, bytes: &[u8]) -> Result<(), FsError> {
    let target = child(folder, name)?;
    match fs::symlink_metadata(&target) {
        Ok(m) if !m.file_type().is_file() => {
            return Err(FsError {
                what: format!("{}", target.display()),
                source: io::Error::other(
                    "exists and is not a regular file (a symlink or a folder): refusing to replace it",
                ),
            });
        }
        _ => {}
    }
    let temp_name = format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let temp = child(folder, &temp_name)?;
    let write = || -> Result<(), FsError> {
        let what = format!("writing a temporary file in {}", folder.display());
        // create_new: never opens (or follows) anything already there.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(err(&what))?;
        f.write_all(bytes).map_err(err(&what))?;
        f.sync_all()
            .map_err(err(format!("fsync of {}", temp.display())))?;
        drop(f);
        fs::rename(&temp, &target).map_err(err(format!("renaming into place {}", target.display())))
    };
    let result = write();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Makes renames and creations in `folder` durable.
pub fn sync_dir(folder: &Path) -> Result<(), FsError> {
    File::open(folder)
        .and_then(|d| d.sync_all())
        .map_err(err(format!("fsync of folder {}", folder.display())))
}

/// Creates `dir` if needed and checks it is a real folder: a symlink put
/// in its place must not redirect processed or rejected files elsewhere.
pub fn ensure_dir(dir: &Path) -> Result<(), FsError> {
    fs::create_dir_all(dir).map_err(err(format!("creating {}", dir.display())))?;
    let meta = fs::symlink_metadata(dir).map_err(err(format!("{}", dir.display())))?;
    if !meta.file_type().is_dir() {
        return Err(FsError {
            what: format!("{}", dir.display()),
            source: io::Error::other("is not a folder (a symlink?): refusing to write into it"),
        });
    }
    Ok(())
}

/// Moves `from` into `to_folder` under `name` (same file system), durably.
/// `Ok(false)` if `from` is already gone (another instance moved it).
pub fn move_into(from: &Path, to_folder: &Path, name: &str) -> Result<bool, FsError> {
    ensure_dir(to_folder)?;
    let mut target = child(to_folder, name)?;
    let mut n = 1;
    while fs::symlink_metadata(&target).is_ok() {
        n += 1;
        target = child(to_folder, &format!("{n}-{name}"))?;
    }
    match fs::rename(from, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(FsError {
                what: format!("moving {} to {}", from.display(), target.display()),
                source: e,
            });
        }
    }
    sync_dir(to_folder)?;
    if let Some(parent) = from.parent() {
        sync_dir(parent)?;
    }
    Ok(true)
}

/// A UTC timestamp for processed and rejected names (sorts by time).
pub fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_atomically_and_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        let folder = open_folder(dir.path(), "inbox").unwrap();
        write_atomic(&folder, "a.json", b"{}").unwrap();
        sync_dir(&folder).unwrap();
        assert_eq!(fs::read(folder.join("a.json")).unwrap(), b"{}");
        // Replacing the same name (a retried delivery) is fine.
        write_atomic(&folder, "a.json", b"{ }").unwrap();
        let names: Vec<_> = fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        assert!(write_atomic(&folder, "../x", b"").is_err());
        assert!(write_atomic(&folder, "/etc/x", b"").is_err());
    }

    #[test]
    fn symlinks_in_the_folder_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let folder = open_folder(dir.path(), "inbox").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), folder.join("a.json")).unwrap();
        let e = write_atomic(&folder, "a.json", b"x").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(!outside.path().join("victim").exists());
    }
}
