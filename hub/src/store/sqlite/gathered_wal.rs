//! A VFS shim that hands a commit's write-ahead-log frames to the kernel in
//! one write.
//!
//! SQLite writes each WAL frame as two `pwrite` calls, its 24-byte header
//! and its 4 KiB page, so a frame straddles two pages of the file and every
//! page of the file is looked up, prepared and marked dirty three times per
//! frame. With about 58 frames per group commit, writing the log was a
//! quarter of the writer thread's time (13 % of the hub's samples under the
//! `sync` benchmark), most of it per-call overhead rather than copying.
//!
//! This shim wraps the platform VFS. Files other than write-ahead logs are
//! the platform's own, opened in place. A log's contiguous writes are
//! gathered in memory and written in one call when SQLite syncs the log,
//! reads it, asks its size, truncates or closes it, when a write is not
//! contiguous, or past [`MAX_GATHERED`] bytes.
//!
//! Why this is safe *only* with `synchronous = FULL`: other connections
//! read frames once the writer publishes them in the shared-memory index.
//! In `FULL` mode SQLite syncs the log after the frames of a commit and
//! before publishing them, and the sync writes what was gathered. In
//! `NORMAL` mode there is no sync at commit, so frames could be published
//! while still in memory here. [`NAME`] is therefore used only for the
//! writer connection of a store opened with `synchronous = full`.
//!
//! Durability is unchanged: SQLite counts a commit as durable only once the
//! sync returns, and a crash before that loses the same frames it would
//! lose from the kernel's page cache.

use rusqlite::ffi;
use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;
#[cfg(test)]
use std::sync::atomic::{AtomicUsize, Ordering};

/// Gathered writes made so far (tests check the shim is in the path).
#[cfg(test)]
static GATHERED_WRITES: AtomicUsize = AtomicUsize::new(0);

/// The name the shim is registered under (for `open_with_flags_and_vfs`).
pub const NAME: &CStr = c"raccordo-gathered-wal";

/// Bytes gathered at most before they are written anyway (a group commit
/// of hundreds of practices, or a transaction spilling its cache).
const MAX_GATHERED: usize = 8 << 20;

/// The most the Unix VFS writes in one call: it masks each write's length
/// with `0x1ffff`, so a write of exactly 128 KiB writes nothing and fails
/// as a full disk. 31 pages, below that.
const PLATFORM_MAX_WRITE: usize = 31 * 4096;

/// A log file of the shim: SQLite's file header, then the state, with the
/// platform's file right after it in the same allocation.
#[repr(C)]
struct GatheredFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Offset in the file of `pending[0]`.
    start: i64,
    pending: Vec<u8>,
}

/// Registers the shim (once; later calls return the first result).
pub fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find with NULL returns the default VFS,
            // which lives as long as the process. The VFS handed to SQLite
            // is leaked on purpose: registered VFSes must outlive every
            // connection.
            unsafe {
                let platform = ffi::sqlite3_vfs_find(std::ptr::null());
                if platform.is_null() {
                    return Err("SQLite has no default VFS".into());
                }
                let mut vfs = *platform;
                vfs.szOsFile =
                    (std::mem::size_of::<GatheredFile>() as c_int) + (*platform).szOsFile;
                vfs.zName = NAME.as_ptr();
                vfs.pAppData = platform.cast();
                vfs.pNext = std::ptr::null_mut();
                vfs.xOpen = Some(open);
                let vfs = Box::leak(Box::new(vfs));
                match ffi::sqlite3_vfs_register(vfs, 0) {
                    ffi::SQLITE_OK => Ok(()),
                    rc => Err(format!("cannot register the WAL VFS shim (code {rc})")),
                }
            }
        })
        .clone()
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY (whole function): SQLite passes our VFS, whose pAppData is
    // the platform VFS, and `file` points at szOsFile bytes (ours), zeroed.
    unsafe {
        let platform = (*vfs).pAppData as *mut ffi::sqlite3_vfs;
        let platform_open = (*platform).xOpen.expect("the platform VFS opens files");
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Not a log: the platform's file, in place (ours is larger).
            return platform_open(platform, name, file, flags, out_flags);
        }
        let gathered = file as *mut GatheredFile;
        let inner = gathered.add(1) as *mut ffi::sqlite3_file;
        let rc = platform_open(platform, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            (*gathered).base.pMethods = std::ptr::null();
            return rc;
        }
        if (*(*inner).pMethods).iVersion < METHODS.iVersion {
            // A platform without every method ours passes on: its own file.
            (*(*inner).pMethods)
                .xClose
                .expect("the platform VFS closes files")(inner);
            return platform_open(platform, name, file, flags, out_flags);
        }
        std::ptr::addr_of_mut!((*gathered).inner).write(inner);
        std::ptr::addr_of_mut!((*gathered).start).write(0);
        std::ptr::addr_of_mut!((*gathered).pending).write(Vec::new());
        (*gathered).base.pMethods = &METHODS;
        ffi::SQLITE_OK
    }
}

/// The platform file and its methods behind one of ours.
///
/// # Safety
/// `file` must be a log opened by [`open`].
unsafe fn parts(
    file: *mut ffi::sqlite3_file,
) -> (&'static mut GatheredFile, &'static ffi::sqlite3_io_methods) {
    // SAFETY: per the contract; SQLite uses a file from one thread at a time.
    unsafe {
        let gathered = &mut *(file as *mut GatheredFile);
        let methods = &*(*gathered.inner).pMethods;
        (gathered, methods)
    }
}

/// Writes what was gathered, in one call.
///
/// # Safety
/// `file` must be a log opened by [`open`].
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: per the contract.
    unsafe {
        let (g, m) = parts(file);
        if g.pending.is_empty() {
            return ffi::SQLITE_OK;
        }
        #[cfg(test)]
        GATHERED_WRITES.fetch_add(1, Ordering::Relaxed);
        let write = m.xWrite.expect("the platform VFS writes");
        let mut rc = ffi::SQLITE_OK;
        let mut offset = g.start;
        for chunk in g.pending.chunks(PLATFORM_MAX_WRITE) {
            rc = write(g.inner, chunk.as_ptr().cast(), chunk.len() as c_int, offset);
            if rc != ffi::SQLITE_OK {
                break;
            }
            offset += chunk.len() as i64;
        }
        g.pending.clear();
        if g.pending.capacity() > MAX_GATHERED {
            g.pending.shrink_to(MAX_GATHERED);
        }
        rc
    }
}

/// Flushes, then runs `then` on the platform file.
///
/// # Safety
/// `file` must be a log opened by [`open`].
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    then: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    // SAFETY: per the contract.
    unsafe {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let (g, m) = parts(file);
        then(g.inner, m)
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file it opened through `open`, once.
    unsafe {
        let flushed = flush(file);
        let (g, m) = parts(file);
        let closed = m.xClose.expect("the platform VFS closes files")(g.inner);
        std::ptr::drop_in_place(&mut g.pending);
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    unsafe {
        let (g, _) = parts(file);
        let contiguous = g.start + g.pending.len() as i64 == offset;
        if !g.pending.is_empty() && !contiguous {
            // An earlier frame rewritten, or a new log: in order.
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let (g, _) = parts(file);
        if g.pending.is_empty() {
            g.start = offset;
        }
        g.pending.extend_from_slice(std::slice::from_raw_parts(
            data.cast::<u8>(),
            amount as usize,
        ));
        if g.pending.len() >= MAX_GATHERED {
            return flush(file);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe { flushed(file, |f, m| m.xRead.expect("read")(f, buf, amount, offset)) }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe { flushed(file, |f, m| m.xTruncate.expect("truncate")(f, size)) }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe { flushed(file, |f, m| m.xSync.expect("sync")(f, flags)) }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe { flushed(file, |f, m| m.xFileSize.expect("size")(f, size)) }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        flushed(file, |f, m| {
            m.xFileControl.expect("file control")(f, op, arg)
        })
    }
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe { flushed(file, |f, m| m.xFetch.expect("fetch")(f, offset, amount, pp)) }
}

// The rest passes straight through to the platform file.

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xLock.expect("lock")(g.inner, level)
    }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xUnlock.expect("unlock")(g.inner, level)
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xCheckReservedLock.expect("check reserved lock")(g.inner, out)
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xSectorSize.expect("sector size")(g.inner)
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xDeviceCharacteristics.expect("device characteristics")(g.inner)
    }
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xShmMap.expect("shm map")(g.inner, region, size, extend, out)
    }
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xShmLock.expect("shm lock")(g.inner, offset, n, flags)
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xShmBarrier.expect("shm barrier")(g.inner)
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xShmUnmap.expect("shm unmap")(g.inner, delete)
    }
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, p: *mut c_void) -> c_int {
    // SAFETY: SQLite's arguments, passed on.
    unsafe {
        let (g, m) = parts(file);
        m.xUnfetch.expect("unfetch")(g.inner, offset, p)
    }
}

/// Version 3, as the platform's (Unix) file methods.
static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    fn writer(path: &std::path::Path) -> Connection {
        register().unwrap();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags_and_vfs(path, flags, NAME).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        // A tiny cache: big transactions spill frames to the log before
        // their commit and read them back, through the shim.
        conn.pragma_update(None, "cache_size", 10).unwrap();
        conn
    }

    /// Inserts `n` rows of about 300 bytes, keyed `{prefix}-{i}`.
    fn insert_rows(w: &Connection, prefix: &str, n: i64) {
        for i in 0..n {
            w.execute(
                "INSERT INTO t (k, pad) VALUES (?1, randomblob(300))",
                [format!("{prefix}-{i}")],
            )
            .unwrap();
        }
    }

    fn count(conn: &Connection) -> i64 {
        conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn every_commit_is_readable_by_others_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let w = writer(&path);
        w.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, pad BLOB)")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        let before = GATHERED_WRITES.load(Ordering::Relaxed);
        let mut expected = 0;
        for batch in 0..40 {
            let rows = if batch % 10 == 9 { 2_000 } else { 20 };
            w.execute_batch("BEGIN").unwrap();
            insert_rows(&w, &batch.to_string(), rows);
            w.execute_batch("COMMIT").unwrap();
            expected += rows;
            assert_eq!(count(&reader), expected, "after commit {batch}");
        }
        // A commit gathering far more than the platform writes at once.
        w.pragma_update(None, "cache_size", -64_000).unwrap();
        w.execute_batch("BEGIN").unwrap();
        insert_rows(&w, "big", 5_000);
        w.execute_batch("COMMIT").unwrap();
        expected += 5_000;
        assert_eq!(count(&reader), expected);
        w.pragma_update(None, "cache_size", 10).unwrap();
        // A transaction that spilled and then rolled back leaves nothing.
        w.execute_batch("BEGIN").unwrap();
        insert_rows(&w, "x", 2_000);
        w.execute_batch("ROLLBACK").unwrap();
        w.execute("INSERT INTO t (k, pad) VALUES ('last', x'00')", [])
            .unwrap();
        expected += 1;
        assert_eq!(count(&reader), expected);
        // The log is restarted from its start once checkpointed.
        w.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
        w.execute("INSERT INTO t (k, pad) VALUES ('after restart', x'00')", [])
            .unwrap();
        expected += 1;
        assert_eq!(count(&reader), expected);
        assert!(
            GATHERED_WRITES.load(Ordering::Relaxed) > before,
            "the log's writes went through the shim"
        );
        drop(reader);
        drop(w);
        let again = Connection::open(&path).unwrap();
        assert_eq!(count(&again), expected);
        let check: String = again
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn files_other_than_the_log_are_the_platforms_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollback.db");
        register().unwrap();
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags_and_vfs(&path, flags, NAME).unwrap();
        conn.execute_batch("CREATE TABLE t (v); INSERT INTO t VALUES (1);")
            .unwrap();
        drop(conn);
        let conn = Connection::open(&path).unwrap();
        assert_eq!(
            conn.query_row("SELECT v FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            1
        );
    }
}
