//! One hub per SQLite database. A second hub on the same file would run
//! its own start-up recovery over the first one's deliveries in flight and
//! break its live watches (events are published by the process that
//! commits them); several instances need the PostgreSQL store. The owner
//! holds an exclusive lock on `<database>.lock`, which the kernel releases
//! when the process ends, however it ends.

use crate::store::StoreError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock that makes this process the database's only hub; released
/// when dropped.
#[derive(Debug)]
pub(super) struct Ownership {
    _file: File,
}

/// The lock file of `database`.
pub(super) fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the database at `database` for this process, or says who has it.
pub(super) fn claim(database: &Path) -> Result<Ownership, StoreError> {
    let path = lock_path(database);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the message a second hub prints.
            let _ = file.set_len(0);
            let _ = write!(file, "{}", std::process::id());
            let _ = file.flush();
            Ok(Ownership { _file: file })
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.rewind();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("another process (pid {pid})"),
            };
            Err(StoreError::Conflict(format!(
                "{holder} is already running a hub on {}: one hub per SQLite database; \
                 stop it first, or use the PostgreSQL store for several instances",
                database.display()
            )))
        }
        Err(TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("raccordo.db");
        let first = claim(&db).unwrap();
        // A second open of the file is a separate lock: refused, as in a
        // second process.
        let refused = claim(&db).unwrap_err();
        let message = refused.to_string();
        assert!(matches!(refused, StoreError::Conflict(_)), "{refused:?}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("PostgreSQL"), "{message}");
        drop(first);
        claim(&db).expect("free again once the owner is gone");
    }
}
