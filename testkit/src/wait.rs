//! Condition waits: poll until a condition holds, with one generous deadline
//! (a loaded machine is slow, and the tests never assert on timing).

use std::future::Future;
use std::time::{Duration, Instant};

/// How long any condition may take on a loaded machine before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every 20 ms until it holds; panics with `what` after [`DEADLINE`].
///
/// ```no_run
/// # async fn f(done: std::sync::atomic::AtomicBool) {
/// use std::sync::atomic::Ordering;
/// testkit::wait_until("the handler ran", || done.load(Ordering::SeqCst)).await;
/// # }
/// ```
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    wait_until_async(what, || std::future::ready(cond())).await;
}

/// Like [`wait_until`] for a condition that needs to `.await` (e.g. reads the DLQ).
pub async fn wait_until_async<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        eventually(DEADLINE, cond).await,
        "timed out after {DEADLINE:?} waiting until {what}"
    );
}

/// Polls `f` every 20 ms until it is true, up to `timeout`; false if it never was.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for the servers' own start and stop, which block: polls
/// `f` every `every` until it is true, up to `timeout`; false if it never was.
pub(crate) fn blocking(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
