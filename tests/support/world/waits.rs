//! Waiting for an asynchronous outcome: [`eventually`] polls a check until
//! it holds, with one generous limit, [`WAIT`], for every wait of every test.
//! A wait is never a timing assertion, and a test never sleeps to let
//! something happen: it waits for the signal that it did.

use std::time::{Duration, Instant};

/// Longest wait for any asynchronous outcome. Generous: outcomes come in
/// well under a second on an idle machine, but tests run many provisioners
/// at once on two cores; only a failing test ever waits this long.
pub const WAIT: Duration = Duration::from_secs(90);

/// How often a wait checks again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` every 50 ms until it returns `Some`, failing the test with
/// `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}
