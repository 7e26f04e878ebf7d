//! The host state of one VM: what host functions reach through `Caller<HostState>`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use crate::fault::{Fault, FaultKind};
use crate::home::VmHome;
use crate::plugin::PluginInfo;
use crate::runtime::Runtime;
use crate::stream::HttpStream;
use crate::types::AbiVersion;

/// Where the guest is, for the host calls it may make there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restriction {
    /// A normal callback: every host call is allowed.
    None,
    /// Inside `_initialize`/`_start`: only logging, WASI and clocks (cpp-host's restricted
    /// start), because no context exists yet.
    Initializing,
    /// Inside the guest allocator, called by the host to return a value: only logging and
    /// clocks. A malloc that changed host state could leave the host writing through stale
    /// pointers (cpp-host's "restricted_callback").
    Allocating,
}

/// Which root-context callback is running, for the buffers only readable there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RootPhase {
    Other,
    VmStart,
    Configure,
}

/// Per-VM state owned by the wasmtime `Store`.
pub struct HostState {
    pub(crate) plugin: Arc<PluginInfo>,
    pub(crate) runtime: Runtime,
    /// Where this VM lives, for work that reaches it later (ticks, callouts, queues). `None`
    /// for a VM outside any pool (tests, `wasmgate check`).
    pub(crate) home: Option<VmHome>,
    pub(crate) abi: AbiVersion,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<u32, u32>>,
    pub(crate) restriction: Restriction,
    pub(crate) root_phase: RootPhase,
    /// The effective context: the callback's own, or the one `proxy_set_effective_context`
    /// chose. Host calls act on this context's stream.
    pub(crate) context_id: u32,
    pub(crate) root_context_id: u32,
    /// The stream lent by the caller for the current callback, and its context.
    pub(crate) lent: Option<Box<HttpStream>>,
    pub(crate) lent_context: u32,
    /// Paused streams, parked here so that any callback of this VM (a callout response, a
    /// tick) can read, change and resume them through `proxy_set_effective_context`.
    pub(crate) parked: HashMap<u32, Box<HttpStream>>,
    /// Stream contexts created and not yet deleted.
    pub(crate) live_contexts: HashSet<u32>,
    /// Callouts in flight: token -> (issuing context, task).
    pub(crate) callouts: HashMap<u32, (u32, tokio::task::AbortHandle)>,
    pub(crate) next_token: u32,
    /// The callout response being delivered (`proxy_on_http_call_response`), for map types 6
    /// and 7 and buffer type 4, and the status `proxy_get_status` reports.
    pub(crate) call_response: Option<crate::callout::CalloutResponse>,
    pub(crate) call_status: (u32, String),
    /// The root context's tick task (`proxy_set_tick_period_milliseconds`).
    pub(crate) ticker: Option<tokio::task::AbortHandle>,
    /// Epoch ticks the current call has used, against `tick_budget`.
    pub(crate) ticks_used: u32,
    pub(crate) tick_budget: u32,
    /// The runtime's epoch when the current call started.
    pub(crate) call_epoch: u64,
    /// Whether the current call gave its worker away (it ran long): see [`crate::preempt`].
    pub(crate) hand_over: crate::preempt::HandOver,
    pub(crate) limiter: Limiter,
    /// This VM's handles on the shared stores, and its root context's `proxy_done` state.
    pub(crate) shared: crate::shared::VmShared,
    /// gRPC streams not yet closed on both sides: token -> what the stream needs besides its
    /// entry in `callouts` (which holds gRPC calls and streams in flight too, with their task).
    pub(crate) grpc_streams: HashMap<u32, crate::host::grpc::GrpcStream>,
    /// The sequence number of the last gRPC token handed out.
    pub(crate) grpc_seq: u32,
    /// What a gRPC callback may read while it runs: initial metadata (map type 4), trailing
    /// metadata (map type 5), a message (buffer type 5).
    pub(crate) grpc_initial_metadata: Option<crate::header_map::HeaderMap>,
    pub(crate) grpc_trailing_metadata: Option<crate::header_map::HeaderMap>,
    pub(crate) grpc_message: Option<bytes::Bytes>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("plugin", &self.plugin.name)
            .field("context_id", &self.context_id)
            .finish_non_exhaustive()
    }
}

impl HostState {
    /// Resets the deadline's count for a new call into the guest.
    pub(crate) fn start_call(&mut self) {
        self.ticks_used = 0;
        self.call_epoch = self.runtime.epoch();
        self.hand_over = crate::preempt::HandOver::default();
    }

    pub(crate) fn new(
        plugin: Arc<PluginInfo>,
        runtime: Runtime,
        home: Option<VmHome>,
        abi: AbiVersion,
        tick_budget: u32,
    ) -> Self {
        let limiter = Limiter {
            max_memory: plugin.limits.max_memory_bytes,
            max_table_elements: plugin.limits.max_table_elements,
        };
        HostState {
            plugin,
            runtime,
            home,
            abi,
            memory: None,
            alloc: None,
            restriction: Restriction::Initializing,
            root_phase: RootPhase::Other,
            context_id: 0,
            root_context_id: 0,
            lent: None,
            lent_context: 0,
            parked: HashMap::new(),
            live_contexts: HashSet::new(),
            callouts: HashMap::new(),
            next_token: 0,
            call_response: None,
            call_status: (0, String::new()),
            ticker: None,
            ticks_used: 0,
            tick_budget,
            call_epoch: 0,
            hand_over: crate::preempt::HandOver::default(),
            limiter,
            shared: crate::shared::VmShared::default(),
            grpc_streams: HashMap::new(),
            grpc_seq: 0,
            grpc_initial_metadata: None,
            grpc_trailing_metadata: None,
            grpc_message: None,
        }
    }

    /// The stream of the effective context: the lent one, or a parked one.
    pub(crate) fn stream(&self) -> Option<&HttpStream> {
        if self.context_id == self.lent_context {
            self.lent.as_deref()
        } else {
            self.parked.get(&self.context_id).map(|s| &**s)
        }
    }

    pub(crate) fn stream_mut(&mut self) -> Option<&mut HttpStream> {
        if self.context_id == self.lent_context {
            self.lent.as_deref_mut()
        } else {
            self.parked.get_mut(&self.context_id).map(|s| &mut **s)
        }
    }

    /// Takes the effective context's stream out of the state, for a host call that must run
    /// the guest allocator while it reads the stream; give it back with [`Self::put_stream`].
    pub(crate) fn take_stream(&mut self) -> Option<Box<HttpStream>> {
        if self.context_id == self.lent_context {
            self.lent.take()
        } else {
            self.parked.remove(&self.context_id)
        }
    }

    pub(crate) fn put_stream(&mut self, stream: Option<Box<HttpStream>>) {
        let Some(stream) = stream else { return };
        if self.context_id == self.lent_context {
            self.lent = Some(stream);
        } else {
            self.parked.insert(self.context_id, stream);
        }
    }
}

impl Drop for HostState {
    /// A VM going away wakes the tasks of streams still parked in it, so they fail promptly
    /// instead of waiting for their timeout.
    fn drop(&mut self) {
        for stream in self.parked.values() {
            stream.wake();
        }
        // Nothing may reach this VM any more: stop its timer and its callouts.
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        for (_, (_, task)) in self.callouts.drain() {
            task.abort();
        }
    }
}

/// Bounds guest memory and table growth. Growth past a limit traps with a [`Fault`] naming the
/// limit, rather than quietly failing `memory.grow`, so that the log says what happened.
#[derive(Debug)]
pub(crate) struct Limiter {
    max_memory: usize,
    max_table_elements: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(wasmtime::Error::new(Fault::new(
                FaultKind::MemoryLimit,
                "memory.grow",
                format!(
                    "linear memory would grow to {desired} bytes, over the limit of {} bytes",
                    self.max_memory
                ),
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_table_elements {
            return Err(wasmtime::Error::new(Fault::new(
                FaultKind::MemoryLimit,
                "table.grow",
                format!(
                    "table would grow to {desired} elements, over the limit of {}",
                    self.max_table_elements
                ),
            )));
        }
        Ok(true)
    }
}
