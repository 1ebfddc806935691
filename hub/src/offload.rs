//! CPU work on large documents away from the async workers.
//!
//! Hashing or base64-encoding a 10 MiB attachment takes milliseconds of one
//! core: done on an async worker it stalls every call and stream that
//! worker serves meanwhile. Small documents (the common case) stay inline,
//! where a hand-off to another thread would cost more than the work.

/// Bytes of document content from which the work moves to a blocking
/// thread: below it, hashing and encoding take less than the tens of
/// microseconds a hand-off costs.
pub const BLOCKING_FROM_BYTES: usize = 64 * 1024;

/// Runs `work`, which handles `bytes` bytes of document content, inline
/// when they are few and on a blocking thread otherwise. A panic in `work`
/// is resumed here, as if it had run inline.
pub async fn cpu<R, F>(bytes: usize, work: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    if bytes < BLOCKING_FROM_BYTES {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a blocking task.
        Err(e) => panic!("blocking work cancelled: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn small_work_runs_inline_and_large_work_on_a_blocking_thread() {
        let here = std::thread::current().id();
        let small = cpu(BLOCKING_FROM_BYTES - 1, || std::thread::current().id()).await;
        assert_eq!(small, here);
        let large = cpu(BLOCKING_FROM_BYTES, || std::thread::current().id()).await;
        assert_ne!(large, here);
    }
}
