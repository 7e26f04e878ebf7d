//! The guest's exports: the callbacks the host calls, with the signature each must have.
//!
//! Every callback is optional (a missing one takes its default, as in cpp-host); one with the
//! wrong signature makes the module fail to load.

use wasmtime::{
    AsContextMut, Extern, Func, FuncType, Instance, Memory, Module, ModuleExport, Store,
    StoreContextMut, TypedFunc, ValType, WasmParams, WasmResults,
};

use crate::fault::{Fault, FaultKind};
use crate::state::HostState;

use crate::types::AbiVersion;

/// How a callback looks in the ABI: its name and signature, as `i` (i32) / `I` (i64) strings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallbackSig {
    pub name: &'static str,
    pub params: &'static str,
    pub results: &'static str,
}

const fn sig(name: &'static str, params: &'static str, results: &'static str) -> CallbackSig {
    CallbackSig {
        name,
        params,
        results,
    }
}

/// Callbacks whose signature is the same in every ABI version.
pub(crate) const CALLBACKS: &[CallbackSig] = &[
    sig("_initialize", "", ""),
    sig("_start", "", ""),
    sig("malloc", "i", "i"),
    sig("proxy_on_memory_allocate", "i", "i"),
    sig("proxy_on_context_create", "ii", ""),
    sig("proxy_on_vm_start", "ii", "i"),
    sig("proxy_on_configure", "ii", "i"),
    sig("proxy_on_request_body", "iii", "i"),
    sig("proxy_on_request_trailers", "ii", "i"),
    sig("proxy_on_response_body", "iii", "i"),
    sig("proxy_on_response_trailers", "ii", "i"),
    sig("proxy_on_done", "i", "i"),
    sig("proxy_on_log", "i", ""),
    sig("proxy_on_delete", "i", ""),
    sig("proxy_on_tick", "i", ""),
    sig("proxy_on_http_call_response", "iiiii", ""),
    sig("proxy_on_queue_ready", "ii", ""),
    sig("proxy_on_foreign_function", "iii", ""),
    sig("proxy_on_grpc_receive_initial_metadata", "iii", ""),
    sig("proxy_on_grpc_receive", "iii", ""),
    sig("proxy_on_grpc_receive_trailing_metadata", "iii", ""),
    sig("proxy_on_grpc_close", "iii", ""),
    sig("proxy_on_new_connection", "i", "i"),
    sig("proxy_on_downstream_data", "iii", "i"),
    sig("proxy_on_upstream_data", "iii", "i"),
    sig("proxy_on_downstream_connection_close", "ii", ""),
    sig("proxy_on_upstream_connection_close", "ii", ""),
];

/// The headers callbacks, whose signature changed in 0.2.0 (an `end_of_stream` was added).
pub(crate) fn headers_sig(abi: AbiVersion, name: &'static str) -> CallbackSig {
    match abi {
        AbiVersion::V0_1_0 => sig(name, "ii", "i"),
        _ => sig(name, "iii", "i"),
    }
}

/// The signature of a function type in the `i`/`I` notation; other types show as `?`.
pub(crate) fn describe(ty: &FuncType) -> (String, String) {
    fn code(v: ValType) -> char {
        match v {
            ValType::I32 => 'i',
            ValType::I64 => 'I',
            _ => '?',
        }
    }
    (
        ty.params().map(code).collect(),
        ty.results().map(code).collect(),
    )
}

/// Renders `ii`/`i` as `(i32, i32) -> i32` for error messages.
pub(crate) fn render(params: &str, results: &str) -> String {
    let list = |s: &str| {
        s.chars()
            .map(|c| match c {
                'i' => "i32",
                'I' => "i64",
                _ => "?",
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if results.is_empty() {
        format!("({})", list(params))
    } else {
        format!("({}) -> {}", list(params), list(results))
    }
}

/// The headers callbacks in their two shapes.
pub(crate) enum HeadersFn {
    V1(TypedFunc<(u32, u32), u32>),
    V2(TypedFunc<(u32, u32, u32), u32>),
}

/// `proxy_on_http_call_response(root, token, headers, body_size, trailers)`.
pub(crate) type CallResponseArgs = (u32, u32, u32, u32, u32);

/// Where a module's exports sit, found by name once per module: a VM then looks each up by
/// index, with no string hashing, and only when it first needs it.
#[derive(Clone)]
pub(crate) struct ExportIndex {
    abi: AbiVersion,
    memory: Option<ModuleExport>,
    alloc: Option<ModuleExport>,
    callbacks: Vec<(&'static str, ModuleExport)>,
}

impl std::fmt::Debug for ExportIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.callbacks.iter().map(|(name, _)| name).collect();
        f.debug_struct("ExportIndex")
            .field("abi", &self.abi)
            .field("callbacks", &names)
            .finish_non_exhaustive()
    }
}

impl ExportIndex {
    /// Indexes the exports of a module whose signatures were checked already.
    pub fn new(module: &Module, abi: AbiVersion) -> ExportIndex {
        let names = CALLBACKS.iter().map(|c| c.name).chain([
            "main",
            "proxy_on_request_headers",
            "proxy_on_response_headers",
        ]);
        ExportIndex {
            abi,
            memory: module.get_export_index("memory"),
            alloc: module
                .get_export_index("malloc")
                .or_else(|| module.get_export_index("proxy_on_memory_allocate")),
            callbacks: names
                .filter_map(|name| Some((name, module.get_export_index(name)?)))
                .collect(),
        }
    }

    fn find(&self, name: &str) -> Option<ModuleExport> {
        self.callbacks
            .iter()
            .find_map(|(n, at)| (*n == name).then_some(*at))
    }

    fn lazy<T>(&self, name: &'static str) -> Lazy<T> {
        Lazy {
            name,
            at: self.find(name),
            resolved: None,
        }
    }
}

/// A callback handle made from an exported function.
pub(crate) trait FromFunc: Sized {
    fn from_func(
        f: Func,
        store: StoreContextMut<'_, HostState>,
        abi: AbiVersion,
    ) -> wasmtime::Result<Self>;
}

impl<P: WasmParams, R: WasmResults> FromFunc for TypedFunc<P, R> {
    fn from_func(
        f: Func,
        store: StoreContextMut<'_, HostState>,
        _abi: AbiVersion,
    ) -> wasmtime::Result<Self> {
        f.typed(&store)
    }
}

impl FromFunc for HeadersFn {
    fn from_func(
        f: Func,
        store: StoreContextMut<'_, HostState>,
        abi: AbiVersion,
    ) -> wasmtime::Result<Self> {
        Ok(match abi {
            AbiVersion::V0_1_0 => HeadersFn::V1(f.typed(&store)?),
            _ => HeadersFn::V2(f.typed(&store)?),
        })
    }
}

/// A callback looked up on its first call: most VMs never get most callbacks (gRPC, queues,
/// ticks, trailers), and a lookup with its type check is most of what starting a VM costs.
pub(crate) struct Lazy<T> {
    name: &'static str,
    at: Option<ModuleExport>,
    resolved: Option<Option<T>>,
}

impl<T: FromFunc> Lazy<T> {
    fn resolve(
        &mut self,
        instance: &Instance,
        mut store: StoreContextMut<'_, HostState>,
        abi: AbiVersion,
    ) -> Result<Option<T>, Fault> {
        let Some(at) = &self.at else {
            return Ok(None);
        };
        // Signatures were checked when the module was loaded: a failure is a host bug.
        let host_bug = |message: String| Fault::new(FaultKind::Host, self.name, message);
        match instance.get_module_export(&mut store, at) {
            Some(Extern::Func(f)) => T::from_func(f, store, abi)
                .map(Some)
                .map_err(|e| host_bug(format!("export {} unusable: {e:#}", self.name))),
            _ => Err(host_bug(format!("export {} vanished", self.name))),
        }
    }
}

/// Typed handles to the callbacks of one instance: those of the start sequence at once, the
/// rest on first use.
pub(crate) struct Exports {
    instance: Instance,
    abi: AbiVersion,
    pub memory: Memory,
    pub alloc: TypedFunc<u32, u32>,
    pub initialize: Option<TypedFunc<(), ()>>,
    pub start: Option<TypedFunc<(), ()>>,
    pub main: Option<TypedFunc<(u32, u32), u32>>,
    pub on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    pub on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    pub on_configure: Option<TypedFunc<(u32, u32), u32>>,
    pub on_request_headers: Lazy<HeadersFn>,
    pub on_request_body: Lazy<TypedFunc<(u32, u32, u32), u32>>,
    pub on_request_trailers: Lazy<TypedFunc<(u32, u32), u32>>,
    pub on_response_headers: Lazy<HeadersFn>,
    pub on_response_body: Lazy<TypedFunc<(u32, u32, u32), u32>>,
    pub on_response_trailers: Lazy<TypedFunc<(u32, u32), u32>>,
    pub on_done: Lazy<TypedFunc<u32, u32>>,
    pub on_log: Lazy<TypedFunc<u32, ()>>,
    pub on_delete: Lazy<TypedFunc<u32, ()>>,
    pub on_tick: Lazy<TypedFunc<u32, ()>>,
    pub on_http_call_response: Lazy<TypedFunc<CallResponseArgs, ()>>,
    pub on_queue_ready: Lazy<TypedFunc<(u32, u32), ()>>,
    pub on_grpc_receive_initial_metadata: Lazy<TypedFunc<(u32, u32, u32), ()>>,
    pub on_grpc_receive: Lazy<TypedFunc<(u32, u32, u32), ()>>,
    pub on_grpc_receive_trailing_metadata: Lazy<TypedFunc<(u32, u32, u32), ()>>,
    pub on_grpc_close: Lazy<TypedFunc<(u32, u32, u32), ()>>,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports").finish_non_exhaustive()
    }
}

impl Exports {
    /// Looks up the start sequence's exports of a freshly instantiated module. Signatures
    /// were checked when the module was loaded, so a failure here is a host bug and is
    /// reported as such.
    pub fn resolve(
        instance: &Instance,
        store: &mut Store<HostState>,
        index: &ExportIndex,
    ) -> wasmtime::Result<Exports> {
        let abi = index.abi;
        let func = |store: &mut Store<HostState>, name: &str| match index.find(name) {
            Some(at) => match instance.get_module_export(store, &at) {
                Some(Extern::Func(f)) => Ok(Some(f)),
                _ => Err(wasmtime::format_err!("export {name} vanished")),
            },
            None => Ok(None),
        };
        macro_rules! eager {
            ($name:literal) => {
                match func(store, $name)? {
                    Some(f) => Some(f.typed(&*store)?),
                    None => None,
                }
            };
        }
        let initialize = eager!("_initialize");
        let start = eager!("_start");
        // `main` is only called when it has the (argc, argv) shape.
        let main = match func(store, "main")? {
            Some(f) => f.typed(&*store).ok(),
            None => None,
        };
        let on_context_create = eager!("proxy_on_context_create");
        let on_vm_start = eager!("proxy_on_vm_start");
        let on_configure = eager!("proxy_on_configure");
        let memory = match index
            .memory
            .and_then(|at| instance.get_module_export(&mut *store, &at))
        {
            Some(Extern::Memory(m)) => m,
            _ => wasmtime::bail!("module exports no memory"),
        };
        let alloc = match index
            .alloc
            .and_then(|at| instance.get_module_export(&mut *store, &at))
        {
            Some(Extern::Func(f)) => f.typed(&*store)?,
            _ => wasmtime::bail!("module exports no allocator"),
        };
        Ok(Exports {
            instance: *instance,
            abi,
            memory,
            alloc,
            initialize,
            start,
            main,
            on_context_create,
            on_vm_start,
            on_configure,
            on_request_headers: index.lazy("proxy_on_request_headers"),
            on_request_body: index.lazy("proxy_on_request_body"),
            on_request_trailers: index.lazy("proxy_on_request_trailers"),
            on_response_headers: index.lazy("proxy_on_response_headers"),
            on_response_body: index.lazy("proxy_on_response_body"),
            on_response_trailers: index.lazy("proxy_on_response_trailers"),
            on_done: index.lazy("proxy_on_done"),
            on_log: index.lazy("proxy_on_log"),
            on_delete: index.lazy("proxy_on_delete"),
            on_tick: index.lazy("proxy_on_tick"),
            on_http_call_response: index.lazy("proxy_on_http_call_response"),
            on_queue_ready: index.lazy("proxy_on_queue_ready"),
            on_grpc_receive_initial_metadata: index.lazy("proxy_on_grpc_receive_initial_metadata"),
            on_grpc_receive: index.lazy("proxy_on_grpc_receive"),
            on_grpc_receive_trailing_metadata: index
                .lazy("proxy_on_grpc_receive_trailing_metadata"),
            on_grpc_close: index.lazy("proxy_on_grpc_close"),
        })
    }
}

impl Exports {
    /// The instance these exports belong to.
    #[cfg(test)]
    pub fn instance(&self) -> Instance {
        self.instance
    }

    /// The callback `field` picks, looked up on its first use.
    pub fn get<'a, T: FromFunc>(
        &'a mut self,
        field: impl FnOnce(&mut Self) -> &mut Lazy<T>,
        store: &mut Store<HostState>,
    ) -> Result<Option<&'a T>, Fault> {
        let (instance, abi) = (self.instance, self.abi);
        let lazy = field(self);
        if lazy.resolved.is_none() {
            let resolved = lazy.resolve(&instance, store.as_context_mut(), abi)?;
            lazy.resolved = Some(resolved);
        }
        Ok(lazy.resolved.as_ref().and_then(Option::as_ref))
    }
}
