//! The guest's exports: the callbacks the host calls, with the signature each must have.
//!
//! Every callback is optional (a missing one takes its default, as in cpp-host); one with the
//! wrong signature makes the module fail to load.

use wasmtime::{AsContextMut, FuncType, Instance, Memory, TypedFunc, ValType};

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
#[derive(Clone)]
pub(crate) enum HeadersFn {
    V1(TypedFunc<(u32, u32), u32>),
    V2(TypedFunc<(u32, u32, u32), u32>),
}

/// `proxy_on_http_call_response(root, token, headers, body_size, trailers)`.
pub(crate) type CallResponseArgs = (u32, u32, u32, u32, u32);

/// Typed handles to every callback a VM may call, looked up once per instance.
#[derive(Clone)]
pub(crate) struct Exports {
    pub memory: Memory,
    pub alloc: TypedFunc<u32, u32>,
    pub initialize: Option<TypedFunc<(), ()>>,
    pub start: Option<TypedFunc<(), ()>>,
    pub main: Option<TypedFunc<(u32, u32), u32>>,
    pub on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    pub on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    pub on_configure: Option<TypedFunc<(u32, u32), u32>>,
    pub on_request_headers: Option<HeadersFn>,
    pub on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub on_request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    pub on_response_headers: Option<HeadersFn>,
    pub on_response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    pub on_response_trailers: Option<TypedFunc<(u32, u32), u32>>,
    pub on_done: Option<TypedFunc<u32, u32>>,
    pub on_log: Option<TypedFunc<u32, ()>>,
    pub on_delete: Option<TypedFunc<u32, ()>>,
    pub on_tick: Option<TypedFunc<u32, ()>>,
    pub on_http_call_response: Option<TypedFunc<CallResponseArgs, ()>>,
    pub on_queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    pub on_grpc_receive_initial_metadata: Option<TypedFunc<(u32, u32, u32), ()>>,
    pub on_grpc_receive: Option<TypedFunc<(u32, u32, u32), ()>>,
    pub on_grpc_receive_trailing_metadata: Option<TypedFunc<(u32, u32, u32), ()>>,
    pub on_grpc_close: Option<TypedFunc<(u32, u32, u32), ()>>,
}

impl std::fmt::Debug for Exports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exports").finish_non_exhaustive()
    }
}

impl Exports {
    /// Looks up the exports of a freshly instantiated module. Signatures were checked when the
    /// module was loaded, so a failure here is a host bug and is reported as such.
    pub fn resolve(
        instance: &Instance,
        mut store: impl AsContextMut,
        abi: AbiVersion,
    ) -> wasmtime::Result<Exports> {
        let mut store = store.as_context_mut();
        macro_rules! opt {
            ($name:literal) => {
                match instance.get_func(&mut store, $name) {
                    Some(f) => Some(f.typed(&store)?),
                    None => None,
                }
            };
        }
        let headers = |store: &mut wasmtime::StoreContextMut<'_, _>, name: &str| {
            let Some(f) = instance.get_func(&mut *store, name) else {
                return Ok(None);
            };
            Ok::<_, wasmtime::Error>(Some(match abi {
                AbiVersion::V0_1_0 => HeadersFn::V1(f.typed(&*store)?),
                _ => HeadersFn::V2(f.typed(&*store)?),
            }))
        };
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| wasmtime::format_err!("module exports no memory"))?;
        let alloc = match instance.get_func(&mut store, "malloc") {
            Some(f) => f.typed(&store)?,
            None => instance
                .get_func(&mut store, "proxy_on_memory_allocate")
                .ok_or_else(|| wasmtime::format_err!("module exports no allocator"))?
                .typed(&store)?,
        };
        Ok(Exports {
            memory,
            alloc,
            initialize: opt!("_initialize"),
            start: opt!("_start"),
            main: match instance.get_func(&mut store, "main") {
                // `main` is only called when it has the (argc, argv) shape.
                Some(f) => f.typed(&store).ok(),
                None => None,
            },
            on_context_create: opt!("proxy_on_context_create"),
            on_vm_start: opt!("proxy_on_vm_start"),
            on_configure: opt!("proxy_on_configure"),
            on_request_headers: headers(&mut store, "proxy_on_request_headers")?,
            on_request_body: opt!("proxy_on_request_body"),
            on_request_trailers: opt!("proxy_on_request_trailers"),
            on_response_headers: headers(&mut store, "proxy_on_response_headers")?,
            on_response_body: opt!("proxy_on_response_body"),
            on_response_trailers: opt!("proxy_on_response_trailers"),
            on_done: opt!("proxy_on_done"),
            on_log: opt!("proxy_on_log"),
            on_delete: opt!("proxy_on_delete"),
            on_tick: opt!("proxy_on_tick"),
            on_http_call_response: opt!("proxy_on_http_call_response"),
            on_queue_ready: opt!("proxy_on_queue_ready"),
            on_grpc_receive_initial_metadata: opt!("proxy_on_grpc_receive_initial_metadata"),
            on_grpc_receive: opt!("proxy_on_grpc_receive"),
            on_grpc_receive_trailing_metadata: opt!("proxy_on_grpc_receive_trailing_metadata"),
            on_grpc_close: opt!("proxy_on_grpc_close"),
        })
    }
}
