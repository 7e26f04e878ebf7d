//! A VM: one instance of a plugin's module with its root context, reused across requests.
//!
//! Every call into the guest goes through [`call`], which arms the callback deadline and turns
//! any failure into a [`Fault`]. A VM that faulted must be dropped, never called again: its
//! heap may be half-updated (wasmtime's advice after GHSA-2hw9-mc66-jc2q).

use wasmtime::{Store, TypedFunc, UpdateDeadline, WasmParams, WasmResults};

use crate::error::LoadError;
use crate::exports::{Exports, HeadersFn};
use crate::fault::{Fault, FaultKind};
use crate::plugin::Plugin;
use crate::state::{HostState, Restriction, RootPhase};
use crate::stream::HttpStream;
use crate::types::{AbiVersion, Action};

/// A stream event delivered to a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpEvent {
    RequestHeaders { end_of_stream: bool },
    RequestBody { size: u32, end_of_stream: bool },
    RequestTrailers,
    ResponseHeaders { end_of_stream: bool },
    ResponseBody { size: u32, end_of_stream: bool },
    ResponseTrailers,
}

/// One running instance of a plugin.
pub struct Vm {
    store: Store<HostState>,
    exports: Exports,
    plugin: Plugin,
    next_context_id: u32,
    #[cfg_attr(not(test), allow(dead_code))]
    instance: wasmtime::Instance,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("plugin", &self.plugin.info().name)
            .field("next_context_id", &self.next_context_id)
            .finish_non_exhaustive()
    }
}

/// Counts epoch ticks against the current call's budget: the deadline, as wall time.
fn on_epoch_tick(
    mut cx: wasmtime::StoreContextMut<'_, HostState>,
) -> wasmtime::Result<UpdateDeadline> {
    let state = cx.data_mut();
    state.ticks_used += 1;
    if state.ticks_used >= state.tick_budget {
        let deadline = state.plugin.limits.callback_deadline;
        return Err(wasmtime::Error::new(Fault::new(
            FaultKind::Deadline,
            "deadline",
            format!("callback ran past its deadline of {deadline:?}"),
        )));
    }
    Ok(UpdateDeadline::Continue(1))
}

/// Calls into the guest with a fresh deadline.
fn call<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    during: &'static str,
    f: &TypedFunc<P, R>,
    params: P,
) -> Result<R, Fault> {
    store.data_mut().ticks_used = 0;
    store.set_epoch_deadline(1);
    f.call(&mut *store, params)
        .map_err(|e| Fault::from_wasmtime(during, e))
}

impl Vm {
    /// Instantiates the plugin's module and runs its start sequence: `_initialize` (or
    /// `_start`), the root `proxy_on_context_create`, `proxy_on_vm_start` and
    /// `proxy_on_configure`, each under the callback deadline.
    pub fn start(plugin: &Plugin) -> Result<Vm, LoadError> {
        let module = plugin.module();
        let runtime = module.runtime();
        let budget = runtime.tick_budget(plugin.info().limits.callback_deadline);
        let state = HostState::new(plugin.info.clone(), module.abi(), budget);
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(on_epoch_tick);
        store.set_epoch_deadline(1);
        let instance = module
            .pre()
            .instantiate(&mut store)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let exports = Exports::resolve(&instance, &mut store, module.abi())
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let state = store.data_mut();
        state.memory = Some(exports.memory);
        state.alloc = Some(exports.alloc.clone());
        let mut vm = Vm {
            store,
            exports,
            plugin: plugin.clone(),
            next_context_id: 1,
            instance,
        };
        vm.initialize().map_err(LoadError::Start)?;
        vm.start_root()
    }

    /// The reactor or command entry point, with host calls restricted as in cpp-host.
    fn initialize(&mut self) -> Result<(), Fault> {
        self.store.data_mut().restriction = Restriction::Initializing;
        let result = if let Some(f) = self.exports.initialize.clone() {
            call(&mut self.store, "_initialize", &f, ()).and_then(|()| {
                match self.exports.main.clone() {
                    Some(main) => call(&mut self.store, "main", &main, (0, 0)).map(drop),
                    None => Ok(()),
                }
            })
        } else if let Some(f) = self.exports.start.clone() {
            match call(&mut self.store, "_start", &f, ()) {
                // A command's `_start` may end with `proc_exit(0)`: that is success.
                Err(fault) if fault.kind == FaultKind::Exit && fault.exit_code == Some(0) => Ok(()),
                other => other,
            }
        } else {
            Ok(())
        };
        self.store.data_mut().restriction = Restriction::None;
        result
    }

    fn start_root(mut self) -> Result<Vm, LoadError> {
        let root = self.next_id();
        let state = self.store.data_mut();
        state.root_context_id = root;
        state.context_id = root;
        if let Some(f) = self.exports.on_context_create.clone() {
            call(&mut self.store, "proxy_on_context_create", &f, (root, 0))
                .map_err(LoadError::Start)?;
        }
        let info = self.plugin.info.clone();
        if let Some(f) = self.exports.on_vm_start.clone() {
            self.store.data_mut().root_phase = RootPhase::VmStart;
            let ok = call(
                &mut self.store,
                "proxy_on_vm_start",
                &f,
                (root, info.vm_configuration.len() as u32),
            )
            .map_err(LoadError::Start)?;
            if ok == 0 {
                return Err(LoadError::VmStartFailed);
            }
        }
        if let Some(f) = self.exports.on_configure.clone() {
            self.store.data_mut().root_phase = RootPhase::Configure;
            let ok = call(
                &mut self.store,
                "proxy_on_configure",
                &f,
                (root, info.configuration.len() as u32),
            )
            .map_err(LoadError::Start)?;
            if ok == 0 {
                return Err(LoadError::ConfigureFailed);
            }
        }
        self.store.data_mut().root_phase = RootPhase::Other;
        Ok(self)
    }

    fn next_id(&mut self) -> u32 {
        let id = self.next_context_id;
        // Ids are never reused while the VM lives; 0 is reserved for "no parent".
        self.next_context_id = self.next_context_id.checked_add(1).unwrap_or(2);
        id
    }

    /// The root context's id.
    pub fn root_context_id(&self) -> u32 {
        self.store.data().root_context_id
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Runs `f` with `stream` lent to the VM as the current stream of context `ctx`.
    fn with_stream<R>(
        &mut self,
        ctx: u32,
        stream: &mut Option<Box<HttpStream>>,
        f: impl FnOnce(&mut Self) -> R,
    ) -> R {
        let state = self.store.data_mut();
        state.stream = stream.take();
        state.context_id = ctx;
        let result = f(self);
        let state = self.store.data_mut();
        *stream = state.stream.take();
        state.context_id = state.root_context_id;
        result
    }

    /// Creates an HTTP context for a new stream: `proxy_on_context_create(id, root)`.
    pub fn create_http_context(
        &mut self,
        stream: &mut Option<Box<HttpStream>>,
    ) -> Result<u32, Fault> {
        let id = self.next_id();
        let root = self.root_context_id();
        let Some(f) = self.exports.on_context_create.clone() else {
            return Ok(id);
        };
        self.with_stream(id, stream, |vm| {
            call(&mut vm.store, "proxy_on_context_create", &f, (id, root))
        })?;
        Ok(id)
    }

    /// Delivers a stream event to context `ctx`. A local reply requested during the callback
    /// forces Pause, as in Envoy.
    pub fn on_http(
        &mut self,
        ctx: u32,
        stream: &mut Option<Box<HttpStream>>,
        event: HttpEvent,
    ) -> Result<Action, Fault> {
        let exports = &self.exports;
        let count = |s: &Option<Box<HttpStream>>, trailers: bool, request: bool| -> u32 {
            s.as_deref().map_or(0, |s| match (request, trailers) {
                (true, false) => s.request_headers.len(),
                (true, true) => s.request_trailers.len(),
                (false, false) => s.response_headers.len(),
                (false, true) => s.response_trailers.len(),
            }) as u32
        };
        enum Target {
            Headers(HeadersFn, u32, bool),
            Body(TypedFunc<(u32, u32, u32), u32>, u32, bool),
            Trailers(TypedFunc<(u32, u32), u32>, u32),
        }
        let (name, target) = match event {
            HttpEvent::RequestHeaders { end_of_stream } => (
                "proxy_on_request_headers",
                exports
                    .on_request_headers
                    .clone()
                    .map(|f| Target::Headers(f, count(stream, false, true), end_of_stream)),
            ),
            HttpEvent::ResponseHeaders { end_of_stream } => (
                "proxy_on_response_headers",
                exports
                    .on_response_headers
                    .clone()
                    .map(|f| Target::Headers(f, count(stream, false, false), end_of_stream)),
            ),
            HttpEvent::RequestBody {
                size,
                end_of_stream,
            } => (
                "proxy_on_request_body",
                exports
                    .on_request_body
                    .clone()
                    .map(|f| Target::Body(f, size, end_of_stream)),
            ),
            HttpEvent::ResponseBody {
                size,
                end_of_stream,
            } => (
                "proxy_on_response_body",
                exports
                    .on_response_body
                    .clone()
                    .map(|f| Target::Body(f, size, end_of_stream)),
            ),
            HttpEvent::RequestTrailers => (
                "proxy_on_request_trailers",
                exports
                    .on_request_trailers
                    .clone()
                    .map(|f| Target::Trailers(f, count(stream, true, true))),
            ),
            HttpEvent::ResponseTrailers => (
                "proxy_on_response_trailers",
                exports
                    .on_response_trailers
                    .clone()
                    .map(|f| Target::Trailers(f, count(stream, true, false))),
            ),
        };
        let Some(target) = target else {
            return Ok(Action::Continue);
        };
        let raw = self.with_stream(ctx, stream, |vm| match target {
            Target::Headers(HeadersFn::V2(f), n, eos) => {
                call(&mut vm.store, name, &f, (ctx, n, u32::from(eos)))
            }
            Target::Headers(HeadersFn::V1(f), n, _) => call(&mut vm.store, name, &f, (ctx, n)),
            Target::Body(f, size, eos) => {
                call(&mut vm.store, name, &f, (ctx, size, u32::from(eos)))
            }
            Target::Trailers(f, n) => call(&mut vm.store, name, &f, (ctx, n)),
        })?;
        let replied = stream.as_deref().is_some_and(HttpStream::has_local_reply);
        Ok(if replied {
            Action::Pause
        } else {
            Action::from_u32(raw)
        })
    }

    /// Ends context `ctx` in Envoy's order: `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`.
    pub fn finish_http(
        &mut self,
        ctx: u32,
        stream: &mut Option<Box<HttpStream>>,
    ) -> Result<(), Fault> {
        let log = self.exports.on_log.clone();
        let done = self.exports.on_done.clone();
        let delete = self.exports.on_delete.clone();
        self.with_stream(ctx, stream, |vm| {
            if let Some(f) = log {
                call(&mut vm.store, "proxy_on_log", &f, ctx)?;
            }
            if let Some(f) = done {
                // Only root contexts may finish later (`proxy_done`); a stream ends now.
                call(&mut vm.store, "proxy_on_done", &f, ctx)?;
            }
            if let Some(f) = delete {
                call(&mut vm.store, "proxy_on_delete", &f, ctx)?;
            }
            Ok(())
        })
    }

    /// The ABI version of the module.
    pub fn abi(&self) -> AbiVersion {
        self.store.data().abi
    }

    /// Bytes of linear memory the guest uses now.
    pub fn memory_size(&self) -> usize {
        self.exports.memory.data_size(&self.store)
    }
}

#[cfg(test)]
impl Vm {
    pub(crate) fn test_with_stream<R>(
        &mut self,
        ctx: u32,
        stream: &mut Option<Box<HttpStream>>,
        f: impl FnOnce(&mut Store<HostState>, &wasmtime::Instance) -> R,
    ) -> R {
        let instance = self.test_instance();
        self.with_stream(ctx, stream, |vm| f(&mut vm.store, &instance))
    }

    fn test_instance(&mut self) -> wasmtime::Instance {
        self.instance
    }

    pub(crate) fn test_memory(&mut self) -> &mut [u8] {
        self.exports.memory.data_mut(&mut self.store)
    }
}

#[cfg(test)]
mod tests;
