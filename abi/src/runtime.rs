//! The process-wide wasm runtime: one wasmtime `Engine`, the linker with every host function,
//! and the epoch ticker that bounds how long any guest call runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig,
};

use crate::background::Background;
use crate::compile::Abandoned;
use crate::guest_log::{LogSink, TracingLog};
use crate::shared::SharedStores;
use crate::state::HostState;

/// How the runtime is set up. The defaults suit a proxy with tens of filters.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Most VMs alive at once (pooling slots), across filters, workers and reload generations.
    pub max_vms: u32,
    /// Use wasmtime's pooling allocator: instantiation in microseconds instead of tens.
    pub pooling: bool,
    /// The epoch period: the granularity of callback deadlines.
    pub epoch_tick: Duration,
    /// Compile guest code with epoch checks, which is what enforces callback deadlines. Off
    /// only to measure what the checks cost: a looping guest is then never interrupted.
    pub epoch_interruption: bool,
    /// Largest module accepted, in bytes: compilation cost grows with size.
    pub max_module_bytes: usize,
    /// Longest a module may take to compile before it is refused (a compile bomb).
    pub compile_timeout: Duration,
    /// Where guest logs go.
    pub log: Arc<dyn LogSink>,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("max_vms", &self.max_vms)
            .field("pooling", &self.pooling)
            .field("epoch_tick", &self.epoch_tick)
            .field("epoch_interruption", &self.epoch_interruption)
            .field("max_module_bytes", &self.max_module_bytes)
            .field("compile_timeout", &self.compile_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_vms: 256,
            pooling: true,
            epoch_tick: Duration::from_millis(2),
            epoch_interruption: true,
            max_module_bytes: 64 << 20,
            compile_timeout: Duration::from_secs(60),
            log: Arc::new(TracingLog),
        }
    }
}

/// The engine, linker and epoch ticker. Cheap to clone; the ticker stops when the last clone
/// is dropped.
#[derive(Clone, Debug)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    config: RuntimeConfig,
    stop: Arc<AtomicBool>,
    /// Epoch ticks since the runtime started, as the engine counts them.
    epoch: Arc<AtomicU64>,
    background: Background,
    shared: Arc<SharedStores>,
    abandoned: Arc<Abandoned>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Creates the engine and starts the epoch ticker thread.
    ///
    /// If the pooling allocator cannot reserve its address space (a `ulimit -v`, say), the
    /// runtime falls back to on-demand allocation and logs a warning.
    pub fn new(config: RuntimeConfig) -> wasmtime::Result<Runtime> {
        let engine = match Engine::new(&engine_config(&config, config.pooling)) {
            Ok(engine) => engine,
            Err(err) if config.pooling => {
                tracing::warn!(
                    "pooling allocator unavailable ({err}); VMs will be created on demand"
                );
                Engine::new(&engine_config(&config, false))?
            }
            Err(err) => return Err(err),
        };
        let mut linker = Linker::new(&engine);
        crate::host::add_to_linker(&mut linker)?;
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicU64::new(0));
        start_ticker(
            engine.clone(),
            config.epoch_tick,
            stop.clone(),
            epoch.clone(),
        )?;
        let background = Background::new()
            .map_err(|e| wasmtime::format_err!("cannot start the host executor: {e}"))?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                stop,
                epoch,
                background,
                shared: Arc::new(SharedStores::default()),
                abandoned: Arc::default(),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Epoch ticks since the runtime started: the clock callback deadlines count.
    pub(crate) fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Relaxed)
    }

    pub(crate) fn abandoned_compiles(&self) -> &Arc<Abandoned> {
        &self.inner.abandoned
    }

    pub(crate) fn background(&self) -> &Background {
        &self.inner.background
    }

    /// The process-wide stores filters share: key-value data, queues and metrics.
    pub fn shared(&self) -> &Arc<SharedStores> {
        &self.inner.shared
    }

    /// Epoch ticks a callback may use for a deadline: one more than the deadline needs,
    /// because the first tick of a call may come right after it starts.
    pub(crate) fn tick_budget(&self, deadline: Duration) -> u32 {
        let tick = self.inner.config.epoch_tick.as_nanos().max(1);
        let ticks = deadline.as_nanos().div_ceil(tick);
        u32::try_from(ticks.saturating_add(1)).unwrap_or(u32::MAX)
    }
}

/// Memory a pooling slot may keep resident between tenants: an SDK filter's stack top, data
/// and early heap (the Rust SDK puts a 1 MiB stack below its data) fit, a memory hog does not.
const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
/// Table bytes kept likewise (a filter's table is a few hundred 8-byte entries).
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

fn engine_config(config: &RuntimeConfig, pooling: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(config.epoch_interruption);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.max_vms)
            .total_memories(config.max_vms)
            .total_tables(config.max_vms)
            .total_stacks(config.max_vms);
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            // A VM's slot keeps the pages its guest touched, and its next tenant starts from
            // them reset in place (only the dirty ones, found with PAGEMAP_SCAN) instead of
            // from an madvise'd slot: a fresh VM then takes no page faults, and dropping one
            // sends no TLB-shootdown IPI to every proxy thread. Without PAGEMAP_SCAN the reset
            // would memset the whole kept region, so it stays at wasmtime's default (none).
            pool.pagemap_scan(Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
                .table_keep_resident(KEEP_RESIDENT_TABLE);
        }
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// Advances the engine's epoch every `tick`; guest code checks it at loop heads and function
/// entries, which is how a callback's deadline interrupts even an endless loop.
fn start_ticker(
    engine: Engine,
    tick: Duration,
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
) -> wasmtime::Result<()> {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                // Ours first: a guest that sees the engine's new epoch finds it counted.
                epoch.fetch_add(1, Ordering::Relaxed);
                engine.increment_epoch();
            }
        })
        .map_err(|e| wasmtime::format_err!("cannot start the epoch thread: {e}"))?;
    Ok(())
}
