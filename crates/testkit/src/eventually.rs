//! Polling assertions: wait for a condition with a deadline, never a bare sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`
/// with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that an async boolean expression becomes true within a timeout
/// (default 10 s), polling it every 50 ms.
///
/// ```ignore
/// assert_eventually!(zk.exists("/function").await.unwrap());
/// assert_eventually!(ready(), timeout = Duration::from_secs(30));
/// ```
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr) => {
        $crate::assert_eventually!($cond, timeout = ::std::time::Duration::from_secs(10))
    };
    ($cond:expr, timeout = $timeout:expr) => {
        $crate::eventually(stringify!($cond), $timeout, || async {
            if $cond {
                Some(())
            } else {
                None
            }
        })
        .await
    };
}
