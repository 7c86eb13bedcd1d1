//! A bounded pool for CPU-heavy blocking work (hashing, piece I/O): at most one job per core
//! runs at once, so hashing never starves the async reactor nor spawns hundreds of threads.

use std::sync::Arc;

use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct BlockingPool {
    permits: Arc<Semaphore>,
}

impl BlockingPool {
    pub fn new(size: usize) -> Self {
        BlockingPool {
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Run `f` on tokio's blocking threads once a slot is free.
    pub async fn run<T, F>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("pool semaphore never closes");
        match tokio::task::spawn_blocking(f).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
