//! A VM: one instance of a plugin's module with its root context, reused across requests.
//!
//! Every call into the guest goes through [`call`], which arms the callback deadline and turns
//! any failure into a [`Fault`]. A VM that faulted must be dropped, never called again: its
//! heap may be half-updated (wasmtime's advice after GHSA-2hw9-mc66-jc2q).

use wasmtime::{Store, TypedFunc, UpdateDeadline, WasmParams, WasmResults};

use crate::error::LoadError;
use crate::exports::{Exports, HeadersFn};
use crate::fault::{Fault, FaultKind};
use crate::home::VmHome;
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
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("plugin", &self.plugin.info().name)
            .field("next_context_id", &self.next_context_id)
            .finish_non_exhaustive()
    }
}

/// Counts the epoch ticks since the call started against its budget: the deadline, as wall
/// time. Ticks are counted from the runtime's clock, not from these callbacks: a thread that
/// was descheduled for several ticks sees one callback for all of them.
fn on_epoch_tick(
    mut cx: wasmtime::StoreContextMut<'_, HostState>,
) -> wasmtime::Result<UpdateDeadline> {
    let state = cx.data_mut();
    let elapsed = state.runtime.epoch().saturating_sub(state.call_epoch);
    state.ticks_used = u32::try_from(elapsed)
        .unwrap_or(u32::MAX)
        .max(state.ticks_used.saturating_add(1));
    if state.ticks_used >= state.tick_budget {
        let deadline = state.plugin.limits.callback_deadline;
        return Err(wasmtime::Error::new(Fault::new(
            FaultKind::Deadline,
            "deadline",
            format!("callback ran past its deadline of {deadline:?}"),
        )));
    }
    // A long call lets the worker's other tasks run elsewhere meanwhile.
    state.hand_over.on_tick(state.ticks_used);
    Ok(UpdateDeadline::Continue(1))
}

/// Calls into the guest with a fresh deadline.
fn call<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    during: &'static str,
    f: &TypedFunc<P, R>,
    params: P,
) -> Result<R, Fault> {
    store.data_mut().start_call();
    store.set_epoch_deadline(1);
    f.call(&mut *store, params)
        .map_err(|e| Fault::from_wasmtime(during, e))
}

/// Lends `stream` to the store as the current stream of context `ctx`.
fn lend(store: &mut Store<HostState>, ctx: u32, stream: &mut Option<Box<HttpStream>>) {
    let state = store.data_mut();
    state.lent = stream.take();
    state.lent_context = ctx;
    state.context_id = ctx;
}

/// Takes the lent stream back after a call.
fn give_back(store: &mut Store<HostState>, stream: &mut Option<Box<HttpStream>>) {
    let state = store.data_mut();
    *stream = state.lent.take();
    state.lent_context = 0;
    state.context_id = state.root_context_id;
}

impl Vm {
    /// Instantiates the plugin's module and runs its start sequence: `_initialize` (or
    /// `_start`), the root `proxy_on_context_create`, `proxy_on_vm_start` and
    /// `proxy_on_configure`, each under the callback deadline.
    pub fn start(plugin: &Plugin) -> Result<Vm, LoadError> {
        Self::start_at(plugin, None)
    }

    /// Starts a VM that lives in a pool slot (`home`), so that ticks, callout responses and
    /// queue notifications can reach it later.
    pub(crate) fn start_at(plugin: &Plugin, home: Option<VmHome>) -> Result<Vm, LoadError> {
        let module = plugin.module();
        let runtime = module.runtime();
        let budget = runtime.tick_budget(plugin.info().limits.callback_deadline);
        let state = HostState::new(
            plugin.info.clone(),
            runtime.clone(),
            home,
            module.abi(),
            budget,
        );
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(on_epoch_tick);
        store.set_epoch_deadline(1);
        let instance = module
            .pre()
            .instantiate(&mut store)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let exports = Exports::resolve(&instance, &mut store, module.exports())
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        let state = store.data_mut();
        state.memory = Some(exports.memory);
        state.alloc = Some(exports.alloc.clone());
        let mut vm = Vm {
            store,
            exports,
            plugin: plugin.clone(),
            next_context_id: 1,
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

    /// A context id no live context has. Ids count up and wrap after 2^32 (a VM may serve
    /// that many streams); 0 means "no parent" and is never handed out, and neither is the
    /// root's id or the id of a stream context still alive (a long, paused stream).
    fn next_id(&mut self) -> u32 {
        let state = self.store.data();
        loop {
            let id = self.next_context_id;
            self.next_context_id = self.next_context_id.checked_add(1).unwrap_or(1);
            let taken = id == 0
                || (state.root_context_id != 0 && id == state.root_context_id)
                || state.live_contexts.contains(&id);
            if !taken {
                return id;
            }
        }
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
        lend(&mut self.store, ctx, stream);
        let result = f(self);
        give_back(&mut self.store, stream);
        result
    }

    /// Creates an HTTP context for a new stream: `proxy_on_context_create(id, root)`.
    pub fn create_http_context(
        &mut self,
        stream: &mut Option<Box<HttpStream>>,
    ) -> Result<u32, Fault> {
        let id = self.next_id();
        let root = self.root_context_id();
        self.store.data_mut().live_contexts.insert(id);
        let Vm { store, exports, .. } = self;
        let Some(f) = &exports.on_context_create else {
            return Ok(id);
        };
        lend(store, id, stream);
        let result = call(store, "proxy_on_context_create", f, (id, root));
        give_back(store, stream);
        result?;
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
        let count = |trailers: bool, request: bool| -> u32 {
            stream.as_deref().map_or(0, |s| match (request, trailers) {
                (true, false) => s.request_headers.len(),
                (true, true) => s.request_trailers.len(),
                (false, false) => s.response_headers.len(),
                (false, true) => s.response_trailers.len(),
            }) as u32
        };
        // Borrow the exports and the store separately: the callback is called through a
        // reference (cloning a TypedFunc costs a FuncType clone per call).
        let Vm { store, exports, .. } = self;
        enum Shape<'a> {
            Headers(&'a HeadersFn, u32, bool),
            Body(&'a TypedFunc<(u32, u32, u32), u32>, u32, bool),
            Trailers(&'a TypedFunc<(u32, u32), u32>, u32),
        }
        let (name, shape) = match event {
            HttpEvent::RequestHeaders { end_of_stream } => {
                let n = count(false, true);
                let f = exports.get(|e| &mut e.on_request_headers, store)?;
                let name = "proxy_on_request_headers";
                (name, f.map(|f| Shape::Headers(f, n, end_of_stream)))
            }
            HttpEvent::ResponseHeaders { end_of_stream } => {
                let n = count(false, false);
                let f = exports.get(|e| &mut e.on_response_headers, store)?;
                let name = "proxy_on_response_headers";
                (name, f.map(|f| Shape::Headers(f, n, end_of_stream)))
            }
            HttpEvent::RequestBody {
                size,
                end_of_stream,
            } => {
                let f = exports.get(|e| &mut e.on_request_body, store)?;
                let name = "proxy_on_request_body";
                (name, f.map(|f| Shape::Body(f, size, end_of_stream)))
            }
            HttpEvent::ResponseBody {
                size,
                end_of_stream,
            } => {
                let f = exports.get(|e| &mut e.on_response_body, store)?;
                let name = "proxy_on_response_body";
                (name, f.map(|f| Shape::Body(f, size, end_of_stream)))
            }
            HttpEvent::RequestTrailers => {
                let n = count(true, true);
                let f = exports.get(|e| &mut e.on_request_trailers, store)?;
                (
                    "proxy_on_request_trailers",
                    f.map(|f| Shape::Trailers(f, n)),
                )
            }
            HttpEvent::ResponseTrailers => {
                let n = count(true, false);
                let f = exports.get(|e| &mut e.on_response_trailers, store)?;
                let name = "proxy_on_response_trailers";
                (name, f.map(|f| Shape::Trailers(f, n)))
            }
        };
        let Some(shape) = shape else {
            return Ok(Action::Continue);
        };
        lend(store, ctx, stream);
        let raw = match shape {
            Shape::Headers(HeadersFn::V2(f), n, eos) => {
                call(store, name, f, (ctx, n, u32::from(eos)))
            }
            Shape::Headers(HeadersFn::V1(f), n, _) => call(store, name, f, (ctx, n)),
            Shape::Body(f, size, eos) => call(store, name, f, (ctx, size, u32::from(eos))),
            Shape::Trailers(f, n) => call(store, name, f, (ctx, n)),
        };
        give_back(store, stream);
        let raw = raw?;
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
        let Vm { store, exports, .. } = self;
        let state = store.data_mut();
        state.live_contexts.remove(&ctx);
        // As Envoy: a context that ends cancels the callouts it made. Its gRPC calls and
        // streams go after its last callback, as in Envoy's ~Context: `proxy_on_done` may
        // still cancel or close them itself.
        if !state.callouts.is_empty() {
            state.callouts.retain(|token, (owner, task)| {
                let cancel = *owner == ctx && !crate::host::grpc::is_grpc(*token);
                if cancel {
                    task.abort();
                }
                !cancel
            });
        }
        lend(store, ctx, stream);
        let result = (|| {
            if let Some(f) = exports.get(|e| &mut e.on_log, store)? {
                call(store, "proxy_on_log", f, ctx)?;
            }
            if let Some(f) = exports.get(|e| &mut e.on_done, store)? {
                // Only root contexts may finish later (`proxy_done`); a stream ends now.
                call(store, "proxy_on_done", f, ctx)?;
            }
            if let Some(f) = exports.get(|e| &mut e.on_delete, store)? {
                call(store, "proxy_on_delete", f, ctx)?;
            }
            Ok(())
        })();
        give_back(store, stream);
        crate::host::grpc::forget_context(self.store.data_mut(), ctx);
        result
    }

    /// Parks a paused stream in this VM under its context, where any callback of the VM can
    /// reach it (`proxy_set_effective_context`) and resume it; `waker` is notified when a
    /// filter asks for something on it.
    pub fn park(
        &mut self,
        ctx: u32,
        mut stream: Box<HttpStream>,
        waker: std::sync::Arc<tokio::sync::Notify>,
    ) {
        stream.waker = Some(waker);
        self.store.data_mut().parked.insert(ctx, stream);
    }

    /// Takes a parked stream back.
    pub fn unpark(&mut self, ctx: u32) -> Option<Box<HttpStream>> {
        let mut stream = self.store.data_mut().parked.remove(&ctx)?;
        stream.waker = None;
        Some(stream)
    }

    /// Takes every parked stream, waking their tasks: the VM is about to be thrown away.
    pub(crate) fn take_parked(&mut self) -> Vec<(u32, Box<HttpStream>)> {
        let parked: Vec<_> = self.store.data_mut().parked.drain().collect();
        for (_, stream) in &parked {
            stream.wake();
        }
        parked
    }

    /// Runs a root-context callback (no stream lent): a tick, a callout response, a queue
    /// notification. Host calls act on the root context unless the guest switches with
    /// `proxy_set_effective_context`.
    fn root_call<P: WasmParams, R: WasmResults>(
        &mut self,
        during: &'static str,
        f: &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, Fault> {
        let root = self.root_context_id();
        self.with_stream(root, &mut None, |vm| call(&mut vm.store, during, f, params))
    }

    /// Tells the root context the VM is retiring: `proxy_on_done(root)`. `Ok(true)` when it
    /// is done now; `Ok(false)` when it asked to finish later with `proxy_done` (see
    /// [`Vm::root_done`]). Follow with [`Vm::delete_root`] either way.
    pub fn shutdown_root(&mut self) -> Result<bool, Fault> {
        let Some(f) = self
            .exports
            .get(|e| &mut e.on_done, &mut self.store)?
            .cloned()
        else {
            return Ok(true);
        };
        let root = self.root_context_id();
        if self.root_call("proxy_on_done", &f, root)? != 0 {
            return Ok(true);
        }
        self.store.data().shared.root_done.set_pending();
        Ok(false)
    }

    /// Whether the root context finished after asking to finish later.
    pub fn root_done(&self) -> std::sync::Arc<crate::shared::RootDone> {
        self.store.data().shared.root_done.clone()
    }

    /// `proxy_on_delete(root)`: the last callback of the root context.
    pub fn delete_root(&mut self) -> Result<(), Fault> {
        let Some(f) = self
            .exports
            .get(|e| &mut e.on_delete, &mut self.store)?
            .cloned()
        else {
            return Ok(());
        };
        let root = self.root_context_id();
        self.root_call("proxy_on_delete", &f, root)
    }

    /// `proxy_on_tick` on the root context.
    pub fn on_tick(&mut self) -> Result<(), Fault> {
        let Some(f) = self
            .exports
            .get(|e| &mut e.on_tick, &mut self.store)?
            .cloned()
        else {
            return Ok(());
        };
        let root = self.root_context_id();
        self.root_call("proxy_on_tick", &f, root)
    }

    /// `proxy_on_queue_ready(root, queue_id)`: an item was enqueued on a queue this VM
    /// registered.
    pub(crate) fn on_queue_ready(&mut self, queue_id: u32) -> Result<(), Fault> {
        let Some(f) = self
            .exports
            .get(|e| &mut e.on_queue_ready, &mut self.store)?
            .cloned()
        else {
            return Ok(());
        };
        let root = self.root_context_id();
        self.root_call("proxy_on_queue_ready", &f, (root, queue_id))
    }

    /// Delivers the outcome of callout `token`: `proxy_on_http_call_response` on the root
    /// context, with the response readable (map types 6 and 7, buffer type 4) during the call.
    /// A callout cancelled in the meantime (its context ended) is not delivered.
    pub(crate) fn deliver_http_call(
        &mut self,
        token: u32,
        outcome: Result<crate::callout::CalloutResponse, crate::callout::CalloutError>,
    ) -> Result<(), Fault> {
        if !self.store.data().callouts.contains_key(&token) {
            return Ok(());
        }
        let response_fn = self
            .exports
            .get(|e| &mut e.on_http_call_response, &mut self.store)?
            .cloned();
        let state = self.store.data_mut();
        state.callouts.remove(&token);
        let (counts, status) = match &outcome {
            Ok(r) => (
                (
                    r.headers.len() as u32,
                    r.body.len() as u32,
                    r.trailers.len() as u32,
                ),
                (0, String::new()),
            ),
            Err(e) => (
                (0, 0, 0),
                (
                    crate::types::Status::BrokenConnection.code(),
                    e.message().to_string(),
                ),
            ),
        };
        state.call_response = outcome.ok();
        state.call_status = status;
        let result = match response_fn {
            Some(f) => {
                let root = self.root_context_id();
                self.root_call(
                    "proxy_on_http_call_response",
                    &f,
                    (root, token, counts.0, counts.1, counts.2),
                )
            }
            None => Ok(()),
        };
        let state = self.store.data_mut();
        state.call_response = None;
        state.call_status = (0, String::new());
        result
    }

    /// The ABI version of the module.
    pub fn abi(&self) -> AbiVersion {
        self.store.data().abi
    }

    /// Bytes of linear memory the guest uses now.
    pub fn memory_size(&self) -> usize {
        self.exports.memory.data_size(&self.store)
    }

    /// Delivers one event of gRPC call or stream `token` on the root context, with what it
    /// carries readable during the callback: initial metadata as map type 4, a message as
    /// buffer type 5, trailing metadata as map type 5, the close's message through
    /// `proxy_get_status`. A call gets only a message or a close (the host's task sorts that
    /// out); a call or stream cancelled in the meantime gets nothing.
    pub(crate) fn deliver_grpc(
        &mut self,
        token: u32,
        event: crate::callout::GrpcEvent,
    ) -> Result<(), Fault> {
        use crate::callout::GrpcEvent;
        let root = self.root_context_id();
        let state = self.store.data_mut();
        if !state.callouts.contains_key(&token) {
            return Ok(());
        }
        let call = crate::host::grpc::is_call(token);
        if call
            && matches!(
                event,
                GrpcEvent::InitialMetadata(_) | GrpcEvent::TrailingMetadata(_)
            )
        {
            return Ok(());
        }
        let (exports, store) = (&mut self.exports, &mut self.store);
        let f = match &event {
            GrpcEvent::InitialMetadata(_) => {
                exports.get(|e| &mut e.on_grpc_receive_initial_metadata, store)?
            }
            GrpcEvent::Message(_) => exports.get(|e| &mut e.on_grpc_receive, store)?,
            GrpcEvent::TrailingMetadata(_) => {
                exports.get(|e| &mut e.on_grpc_receive_trailing_metadata, store)?
            }
            GrpcEvent::Close { .. } => exports.get(|e| &mut e.on_grpc_close, store)?,
        }
        .cloned();
        let state = self.store.data_mut();
        let (name, arg, last) = match event {
            GrpcEvent::InitialMetadata(map) => {
                let n = map.len() as u32;
                state.grpc_initial_metadata = Some(map);
                ("proxy_on_grpc_receive_initial_metadata", n, false)
            }
            GrpcEvent::Message(message) => {
                let n = message.len() as u32;
                state.grpc_message = Some(message);
                ("proxy_on_grpc_receive", n, call)
            }
            GrpcEvent::TrailingMetadata(map) => {
                let n = map.len() as u32;
                state.grpc_trailing_metadata = Some(map);
                ("proxy_on_grpc_receive_trailing_metadata", n, false)
            }
            GrpcEvent::Close { status, message } => {
                state.call_status = (status, message);
                ("proxy_on_grpc_close", status, true)
            }
        };
        let result = match f {
            Some(f) => self.root_call(name, &f, (root, token, arg)),
            None => Ok(()),
        };
        let state = self.store.data_mut();
        state.grpc_initial_metadata = None;
        state.grpc_trailing_metadata = None;
        state.grpc_message = None;
        state.call_status = (0, String::new());
        if last {
            crate::host::grpc::finished(state, token);
        }
        result
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
        self.exports.instance()
    }

    pub(crate) fn test_memory(&mut self) -> &mut [u8] {
        self.exports.memory.data_mut(&mut self.store)
    }
}

#[cfg(test)]
mod tests;
