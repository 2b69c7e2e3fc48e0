//! Where a request's heavy work runs: never on the async workers that
//! answer `/health` and every other request.
//!
//! - [`blocking`]: redb reads and regex scans on tokio's blocking pool,
//!   at most one per core at a time (the rest queue), so a burst of
//!   expensive filters cannot take every thread ([`store`] for a bare
//!   storage call);
//! - [`query`]: DataFusion planning and execution and Parquet encoding on
//!   a runtime of their own (`kanade-query` threads);
//! - [`budgeted_scan`]: a blocking scan with a time budget, past which it
//!   gives up with a 503 naming what to narrow.

use std::future::Future;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::error::ApiError;

fn parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

static HEAVY: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(parallelism()));

static QUERY_RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(parallelism())
        .thread_name("kanade-query")
        .enable_all()
        .build()
        .expect("start the query runtime's threads")
});

/// Runs `f` (redb, regex, sorting) on the blocking pool, one per core at
/// a time.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = HEAVY
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(format!("blocking pool closed: {e}")))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("blocking task: {e}")))?
}

/// [`blocking`] for a storage call: its error answered as the store's
/// errors are.
pub async fn store<T: Send + 'static>(
    f: impl FnOnce() -> kanade_storage::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(move || Ok(f()?)).await
}

/// Runs a perf query on the query runtime.
pub async fn query<T: Send + 'static>(
    fut: impl Future<Output = Result<T, kanade_queries::Error>> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(QUERY_RUNTIME
        .spawn(fut)
        .await
        .map_err(|e| ApiError::Internal(format!("query task: {e}")))??)
}

/// Spawns a long-running piece of a response (an export's Parquet
/// encoding) on the query runtime.
pub fn spawn_query_task(fut: impl Future<Output = ()> + Send + 'static) {
    QUERY_RUNTIME.spawn(fut);
}

/// Runs a filtered scan on the blocking pool within `allowed` (counted
/// from now, queueing included): `scan` asks its `in_time` before each
/// row and stops when it says no; the scan then answers 503 with
/// `narrow`, which says how to ask for less.
pub async fn budgeted_scan<T: Send + 'static>(
    allowed: Duration,
    narrow: &'static str,
    scan: impl FnOnce(&mut dyn FnMut() -> bool) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let budget = Budget::new(allowed);
    blocking(move || {
        let mut timed_out = false;
        let out = scan(&mut || {
            timed_out |= budget.expired();
            !timed_out
        })?;
        if timed_out {
            return Err(budget.exceeded(narrow));
        }
        Ok(out)
    })
    .await
}

/// The time a scan may take (`[server] scan_budget_secs`).
#[derive(Debug, Clone, Copy)]
struct Budget {
    deadline: Instant,
    allowed: Duration,
}

impl Budget {
    fn new(allowed: Duration) -> Self {
        Self {
            deadline: Instant::now() + allowed,
            allowed,
        }
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The 503 of a scan that ran out of time; `narrow` says how to ask
    /// for less.
    fn exceeded(&self, narrow: &str) -> ApiError {
        ApiError::Unavailable(format!(
            "the scan ran past its {} s budget (`[server] scan_budget_secs`); {narrow}",
            self.allowed.as_secs_f64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn heavy_work_runs_off_the_caller() {
        let caller = std::thread::current().id();
        let ran_on = blocking(|| Ok(std::thread::current().id())).await.unwrap();
        assert_ne!(ran_on, caller);
        let name = query(async { Ok(std::thread::current().name().map(String::from)) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("kanade-query"));
        let e = blocking::<()>(|| Err(ApiError::bad_param("x", "y")))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("`x`"));
    }

    #[test]
    fn a_spent_budget_names_the_setting() {
        let b = Budget::new(Duration::ZERO);
        assert!(b.expired());
        let e = b.exceeded("add `since`").to_string();
        assert!(
            e.contains("scan_budget_secs") && e.contains("add `since`"),
            "{e}"
        );
        assert!(!Budget::new(Duration::from_secs(60)).expired());
    }
}
