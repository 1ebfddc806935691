//! SQLite's page cache, without a scan of the whole cache at commits that
//! follow a B-tree rebalance.
//!
//! At the end of every transaction SQLite asks its page cache to drop the
//! pages past the end of the database. The default cache does that cheaply
//! when no page was ever cached past the end, judged by the largest page
//! number it has seen. But a rebalance that reorders sibling pages swaps
//! their numbers through the lock page (number 262,145 with 4 KiB pages, a
//! page no database ever uses), and from then on the cache believes a page
//! may sit past the end and walks its whole hash table, every page of the
//! writer's 16 MiB cache, at every commit. In the `sync` benchmark that walk
//! was 2.7 % of the hub's samples, about 6 % of the writer thread's time.
//!
//! This wraps the default cache and keeps its own bound on the page numbers
//! held, which does not count a page passing through the lock page while it
//! is moved. A truncation with nothing to drop is skipped; any other goes
//! to the default cache. The wrapper changes no page, only which calls the
//! default cache sees.

use rusqlite::ffi;
use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

/// SQLite's `PENDING_BYTE`: the lock page holds this byte of the file.
const PENDING_BYTE: u32 = 0x4000_0000;

/// Which page numbers a cache may hold, to know when a truncation would
/// drop nothing.
#[derive(Debug, Clone, Copy)]
struct KeyBound {
    /// No page held has a larger number, except pages moved to `lock_page`.
    max_key: u32,
    /// The lock page's number for this cache's page size.
    lock_page: u32,
    /// Pages moved to the lock page and not moved away yet.
    at_lock_page: u32,
}

impl KeyBound {
    fn new(page_size: u32) -> Self {
        Self {
            max_key: 0,
            lock_page: PENDING_BYTE / page_size.max(1) + 1,
            at_lock_page: 0,
        }
    }

    fn fetched(&mut self, key: u32) {
        self.max_key = self.max_key.max(key);
    }

    fn rekeyed(&mut self, old: u32, new: u32) {
        if old == self.lock_page {
            self.at_lock_page = self.at_lock_page.saturating_sub(1);
        }
        if new == self.lock_page {
            self.at_lock_page += 1;
        } else {
            self.max_key = self.max_key.max(new);
        }
    }

    /// Whether dropping pages numbered `limit` and above may drop any.
    fn must_truncate(&self, limit: u32) -> bool {
        self.at_lock_page > 0 || limit <= self.max_key
    }

    fn truncated(&mut self, limit: u32) {
        self.max_key = self.max_key.min(limit.saturating_sub(1));
        if limit <= self.lock_page {
            self.at_lock_page = 0;
        }
    }
}

/// One cache: the default cache's, and the bound kept beside it.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    bound: KeyBound,
}

/// The default cache's methods, as SQLite had them.
struct Default(ffi::sqlite3_pcache_methods2);

// SAFETY: plain function pointers and SQLite's own (null) argument.
unsafe impl Send for Default {}
// SAFETY: as above; never written after it is set.
unsafe impl Sync for Default {}

static DEFAULT: OnceLock<Default> = OnceLock::new();

fn default() -> &'static ffi::sqlite3_pcache_methods2 {
    &DEFAULT.get().expect("installed before use").0
}

/// Installs the wrapper. Only possible before SQLite initializes (before
/// the process's first connection); later, it changes nothing and the
/// default cache stays in place.
pub fn install() {
    // SAFETY: sqlite3_config before sqlite3_initialize, with the argument
    // types these options take; after it, both calls return SQLITE_MISUSE
    // and change nothing.
    unsafe {
        let mut methods: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
        if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut methods) != ffi::SQLITE_OK
            || DEFAULT.set(Default(methods)).is_err()
        {
            return;
        }
        let wrapper = ffi::sqlite3_pcache_methods2 {
            iVersion: 1,
            pArg: std::ptr::null_mut(),
            xInit: Some(init),
            xShutdown: Some(shutdown),
            xCreate: Some(create),
            xCachesize: Some(cache_size),
            xPagecount: Some(page_count),
            xFetch: Some(fetch),
            xUnpin: Some(unpin),
            xRekey: Some(rekey),
            xTruncate: Some(truncate),
            xDestroy: Some(destroy),
            xShrink: Some(shrink),
        };
        // SQLite copies the structure.
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &wrapper);
    }
}

// SAFETY (every function below): SQLite calls them as its page-cache
// methods, with caches created by `create`, one thread at a time per cache.

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    let d = default();
    unsafe { d.xInit.map_or(ffi::SQLITE_OK, |f| f(d.pArg)) }
}

unsafe extern "C" fn shutdown(_: *mut c_void) {
    let d = default();
    if let Some(f) = d.xShutdown {
        unsafe { f(d.pArg) }
    }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let inner = unsafe { default().xCreate.expect("create")(page_size, extra, purgeable) };
    if inner.is_null() {
        return std::ptr::null_mut();
    }
    let cache = Cache {
        inner,
        bound: KeyBound::new(page_size as u32),
    };
    Box::into_raw(Box::new(cache)).cast()
}

/// # Safety
/// `p` must come from `create`.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    unsafe { &mut *p.cast::<Cache>() }
}

unsafe extern "C" fn cache_size(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    unsafe { default().xCachesize.expect("cache size")(cache(p).inner, pages) }
}

unsafe extern "C" fn page_count(p: *mut ffi::sqlite3_pcache) -> c_int {
    unsafe { default().xPagecount.expect("page count")(cache(p).inner) }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let c = unsafe { cache(p) };
    let page = unsafe { default().xFetch.expect("fetch")(c.inner, key, create) };
    if !page.is_null() {
        c.bound.fetched(key);
    }
    page
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    unsafe { default().xUnpin.expect("unpin")(cache(p).inner, page, discard) }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let c = unsafe { cache(p) };
    unsafe { default().xRekey.expect("rekey")(c.inner, page, old, new) };
    c.bound.rekeyed(old, new);
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = unsafe { cache(p) };
    if c.bound.must_truncate(limit) {
        unsafe { default().xTruncate.expect("truncate")(c.inner, limit) };
        c.bound.truncated(limit);
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    let c = unsafe { Box::from_raw(p.cast::<Cache>()) };
    unsafe { default().xDestroy.expect("destroy")(c.inner) }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    unsafe { default().xShrink.expect("shrink")(cache(p).inner) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: u32 = PENDING_BYTE / 4096 + 1;

    #[test]
    fn the_lock_page_of_4_kib_pages_is_262145() {
        assert_eq!(KeyBound::new(4096).lock_page, 262_145);
    }

    #[test]
    fn pages_swapped_through_the_lock_page_need_no_truncation() {
        let mut b = KeyBound::new(4096);
        for key in 1..=100 {
            b.fetched(key);
        }
        // As a rebalance swaps pages 40 and 70.
        b.rekeyed(40, LOCK);
        assert!(b.must_truncate(101), "a page is at the lock page");
        b.rekeyed(70, 40);
        b.rekeyed(LOCK, 70);
        assert!(!b.must_truncate(101));
        assert!(b.must_truncate(100), "page 100 is past a limit of 100");
    }

    #[test]
    fn a_page_left_at_the_lock_page_is_truncated_with_the_rest() {
        let mut b = KeyBound::new(4096);
        b.fetched(10);
        b.rekeyed(10, LOCK);
        assert!(b.must_truncate(11), "a page is at the lock page");
        b.truncated(11);
        assert!(!b.must_truncate(11), "it was dropped with the rest");
    }

    #[test]
    fn a_truncation_lowers_the_bound() {
        let mut b = KeyBound::new(4096);
        b.fetched(500);
        assert!(b.must_truncate(300));
        b.truncated(300);
        assert!(!b.must_truncate(300));
        b.fetched(300);
        assert!(b.must_truncate(300));
    }

    #[test]
    fn a_fetch_of_the_lock_page_itself_counts() {
        // SQLite refuses the lock page as corrupt, but its cache entry
        // exists until dropped.
        let mut b = KeyBound::new(4096);
        b.fetched(LOCK);
        assert!(b.must_truncate(LOCK));
    }
}
