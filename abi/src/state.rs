//! The host state of one VM: what host functions reach through `Caller<HostState>`.

use std::sync::Arc;

use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use crate::fault::{Fault, FaultKind};
use crate::plugin::PluginInfo;
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
    pub(crate) abi: AbiVersion,
    pub(crate) memory: Option<Memory>,
    pub(crate) alloc: Option<TypedFunc<u32, u32>>,
    pub(crate) restriction: Restriction,
    pub(crate) root_phase: RootPhase,
    /// The context the current callback runs for.
    pub(crate) context_id: u32,
    pub(crate) root_context_id: u32,
    /// The stream the current callback may read and change, lent by the caller for the call.
    pub(crate) stream: Option<Box<HttpStream>>,
    /// Epoch ticks the current call has used, against `tick_budget`.
    pub(crate) ticks_used: u32,
    pub(crate) tick_budget: u32,
    pub(crate) limiter: Limiter,
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
    pub(crate) fn new(plugin: Arc<PluginInfo>, abi: AbiVersion, tick_budget: u32) -> Self {
        let limiter = Limiter {
            max_memory: plugin.limits.max_memory_bytes,
            max_table_elements: plugin.limits.max_table_elements,
        };
        HostState {
            plugin,
            abi,
            memory: None,
            alloc: None,
            restriction: Restriction::Initializing,
            root_phase: RootPhase::Other,
            context_id: 0,
            root_context_id: 0,
            stream: None,
            ticks_used: 0,
            tick_budget,
            limiter,
        }
    }

    /// The stream of the current callback, if it is a stream callback.
    pub(crate) fn stream(&self) -> Option<&HttpStream> {
        self.stream.as_deref()
    }

    pub(crate) fn stream_mut(&mut self) -> Option<&mut HttpStream> {
        self.stream.as_deref_mut()
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
