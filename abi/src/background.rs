//! The host's own small executor, for work that belongs to no request: ticks, deliveries of
//! callout responses and queue notifications when no other runtime is at hand.

use std::future::Future;

use tokio::runtime::{Builder, Handle};

/// A one-thread tokio runtime, shut down (without waiting) when dropped.
#[derive(Debug)]
pub(crate) struct Background {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
}

impl Background {
    pub(crate) fn new() -> std::io::Result<Background> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wasm-host")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        Ok(Background {
            runtime: Some(runtime),
            handle,
        })
    }

    /// Runs `task` on the runtime of the caller if there is one (a request's worker), else on
    /// this one.
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match Handle::try_current() {
            Ok(current) => current.spawn(task),
            Err(_) => self.handle.spawn(task),
        }
    }

    /// Runs `task` on this runtime, whatever the caller's.
    pub(crate) fn spawn_here<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // Dropping a runtime blocks on its tasks, which panics inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
