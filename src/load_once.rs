//! A value loaded from a remote source once per process, where a failed load is remembered for a
//! short pause (callers get the same error at once instead of all retrying a sick dependency)
//! and then tried again. Used for the OAuth client secret and the device CA.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

#[derive(Debug)]
pub struct LoadOnce<T, E> {
    value: OnceCell<T>,
    last_failure: Mutex<Option<(Instant, E)>>,
    retry_after: Duration,
}

impl<T, E: Clone> LoadOnce<T, E> {
    pub fn new(retry_after: Duration) -> Self {
        Self {
            value: OnceCell::new(),
            last_failure: Mutex::new(None),
            retry_after,
        }
    }

    /// The loaded value, loading it with `load` if no load succeeded yet and the last failure
    /// is older than the pause.
    pub async fn get<F, Fut>(&self, load: F) -> Result<&T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        if let Some(value) = self.value.get() {
            return Ok(value);
        }
        if let Some((at, error)) = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && at.elapsed() < self.retry_after
        {
            return Err(error.clone());
        }
        self.value.get_or_try_init(load).await.inspect_err(|error| {
            *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), error.clone()));
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn loads_once_and_pauses_after_a_failure() {
        let calls = AtomicUsize::new(0);
        let cell: LoadOnce<u32, String> = LoadOnce::new(Duration::from_millis(100));
        let fail = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<u32, _>("down".to_owned())
        };
        assert_eq!(cell.get(fail).await, Err("down".to_owned()));
        assert_eq!(cell.get(fail).await, Err("down".to_owned()));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the pause spares the dependency"
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        let ok = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, String>(7)
        };
        assert_eq!(cell.get(ok).await, Ok(&7));
        assert_eq!(cell.get(ok).await, Ok(&7));
        assert_eq!(calls.load(Ordering::SeqCst), 2, "loaded once, then cached");
    }
}
