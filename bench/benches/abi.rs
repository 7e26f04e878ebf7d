//! Microbenchmarks of the ABI host alone, through its public API (no proxy, no network).
//!
//! - `abi/callback_entry`: `Vm::on_http` on a warm VM whose `proxy_on_request_headers` returns
//!   at once: the whole cost of entering a callback (lending the stream, arming the deadline,
//!   the wasmtime call).
//! - `abi/header_get_32B_x100` / `abi/header_replace_32B_x100`: the same callback making 100
//!   `proxy_get_header_map_value` (32-byte value, returned through the guest allocator) or 100
//!   `proxy_replace_header_map_value` calls. Per call: (this − callback_entry) ÷ 100.
//! - `abi/on_request_headers_sdk_realistic`: a whole `on_request_headers` of the Rust SDK tenant
//!   filter (2 gets, a map lookup, 1 add); `..._sdk_noop` the SDK's bare dispatch.
//! - `abi/context_create_delete_*`: `proxy_on_context_create`, then `proxy_on_log`,
//!   `proxy_on_done` and `proxy_on_delete`, on a warm VM.
//! - `abi/vm_start_*`: a fresh VM (pooling allocator): instantiate, `_initialize`, root context,
//!   `proxy_on_vm_start`, `proxy_on_configure`. `abi/vm_recycle_sdk_noop` adds dropping it
//!   (the pooling slot's reset), as when a faulted VM is replaced.
//! - `abi/module_load_disk_cache`: `Runtime::compile_cached` hitting the on-disk cache;
//!   `abi/module_compile` the Cranelift compile it saves.
//! - `chain/request_*`: one request's whole trip through a `ChainStream` (request headers,
//!   response headers, finish) with 0, 1 or 3 no-op filters or 3 realistic filters.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderName, HeaderValue};
use wasmgate_abi::{
    Chain, ChainStream, FilterPool, HeaderMap, HttpEvent, HttpStream, MapState, MapType, Plugin,
    PluginConfig, Pseudo, Runtime, RuntimeConfig, StreamInfo, Vm,
};

/// A guest made for measuring: its `proxy_on_request_headers` runs `body` (WAT instructions)
/// `reps` times. A bump allocator, reset at each callback, serves returned values.
fn guest(body: &str, reps: u32) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "env" "proxy_get_header_map_value"
    (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value"
    (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 8192))
  ;; the key "x-bench-value" (13 bytes) at 16, a 32-byte value at 64, out-params at 128/132
  (data (i32.const 16) "x-bench-value")
  (data (i32.const 64) "0123456789abcdef0123456789abcdef")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (local.get $p) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $i i32)
    (global.set $bump (i32.const 8192))
    (local.set $i (i32.const {reps}))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $i)))
        {body}
        (local.set $i (i32.sub (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 0)))"#
    );
    wat::parse_str(text).expect("valid WAT")
}

const GET: &str = "(drop (call $get (i32.const 0) (i32.const 16) (i32.const 13) (i32.const 128) (i32.const 132)))";
const REPLACE: &str = "(drop (call $replace (i32.const 0) (i32.const 16) (i32.const 13) (i32.const 64) (i32.const 32)))";

fn filters_dir() -> PathBuf {
    PathBuf::from(env!("WASMGATE_FILTERS_DIR"))
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        max_vms: 64,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

fn plugin(rt: &Runtime, wasm: &[u8], name: &str, configuration: &str) -> Plugin {
    let module = rt.compile(wasm).expect("compiles");
    Plugin::new(
        module,
        PluginConfig {
            name: name.into(),
            configuration: bytes::Bytes::copy_from_slice(configuration.as_bytes()),
            ..PluginConfig::default()
        },
    )
}

fn sdk_plugin(rt: &Runtime, file: &str, configuration: &str) -> Plugin {
    let path = filters_dir().join(file);
    let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    plugin(rt, &wasm, file, configuration)
}

const TENANTS: &str = r#"{"id": "1", "blocked_agent_prefix": "badbot", "tenants": {"acme": "gold", "globex": "silver", "initech": "bronze"}}"#;

/// A typical small request as the proxy captures it; `x-bench-value` (32 bytes) comes last, so
/// a lookup walks the whole map.
fn request_headers() -> HeaderMap {
    let mut m = HeaderMap::with_capacity(12);
    m.push_pseudo(
        Pseudo::Authority,
        HeaderValue::from_static("127.0.0.1:8080"),
    );
    m.push_pseudo(
        Pseudo::Path,
        HeaderValue::from_static("/api/v1/items?page=2"),
    );
    m.push_pseudo(Pseudo::Method, HeaderValue::from_static("GET"));
    m.push_pseudo(Pseudo::Scheme, HeaderValue::from_static("http"));
    for (k, v) in [
        ("user-agent", "wasmgate-bench/1"),
        ("accept", "*/*"),
        ("x-tenant", "acme"),
        ("x-request-id", "7f3c2a9e-4b1d-4c8e-9a0f-2d6b5e8c1a47"),
        ("x-bench-value", "0123456789abcdef0123456789abcdef"),
    ] {
        m.push(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    m
}

fn response_headers() -> HeaderMap {
    let mut m = HeaderMap::with_capacity(4);
    m.push_pseudo(Pseudo::Status, HeaderValue::from_static("200"));
    m.push(
        HeaderName::from_static("content-type"),
        HeaderValue::from_static("text/plain"),
    );
    m.push(
        HeaderName::from_static("content-length"),
        HeaderValue::from_static("128"),
    );
    m
}

fn request_stream() -> Option<Box<HttpStream>> {
    let mut s = HttpStream::new(StreamInfo::default());
    s.request_headers = request_headers();
    s.set_map_state(MapType::RequestHeaders, MapState::Writable);
    Some(Box::new(s))
}

const REQUEST_HEADERS: HttpEvent = HttpEvent::RequestHeaders {
    end_of_stream: true,
};

/// Callback entry and per-hostcall cost, on WAT guests.
fn hostcalls(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("abi");
    for (name, body, reps) in [
        ("callback_entry", "", 0),
        ("header_get_32B_x100", GET, 100),
        ("header_replace_32B_x100", REPLACE, 100),
    ] {
        let p = plugin(&rt, &guest(body, reps), name, "");
        let mut vm = Vm::start(&p).expect("starts");
        let mut stream = request_stream();
        let ctx = vm.create_http_context(&mut stream).expect("context");
        g.bench_function(name, |b| {
            b.iter(|| {
                let action = vm.on_http(ctx, &mut stream, REQUEST_HEADERS);
                if let Some(s) = stream.as_deref_mut() {
                    // A request starts with an empty edit log: keep it so.
                    black_box(s.request_headers.take_edits());
                }
                black_box(action)
            })
        });
    }
    g.finish();
}

/// Whole callbacks and context lifecycles of the real (Rust SDK) benchmark filters.
fn sdk_filters(c: &mut Criterion) {
    let rt = runtime();
    let noop = sdk_plugin(&rt, "bench_noop.wasm", "");
    let realistic = sdk_plugin(&rt, "bench_realistic.wasm", TENANTS);
    let wat = plugin(&rt, &guest("", 0), "wat", "");
    let mut g = c.benchmark_group("abi");

    for (name, p) in [
        ("on_request_headers_sdk_noop", &noop),
        ("on_request_headers_sdk_realistic", &realistic),
    ] {
        let mut vm = Vm::start(p).expect("starts");
        let mut stream = request_stream();
        let ctx = vm.create_http_context(&mut stream).expect("context");
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                request_stream,
                |s| {
                    let action = vm.on_http(ctx, s, REQUEST_HEADERS).expect("runs");
                    black_box(action)
                },
                BatchSize::SmallInput,
            )
        });
    }

    for (name, p) in [
        ("context_create_delete_wat", &wat),
        ("context_create_delete_sdk_noop", &noop),
        ("context_create_delete_sdk_realistic", &realistic),
    ] {
        let mut vm = Vm::start(p).expect("starts");
        let mut stream = request_stream();
        g.bench_function(name, |b| {
            b.iter(|| {
                let ctx = vm.create_http_context(&mut stream).expect("context");
                vm.finish_http(ctx, &mut stream).expect("finishes");
                black_box(ctx)
            })
        });
    }

    // A fresh VM, ready for requests: the VMs are dropped outside the timed region, in
    // batches small enough for the pool's slots.
    for (name, p) in [("vm_start_wat", &wat), ("vm_start_sdk_noop", &noop)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| Vm::start(p).expect("starts"),
                BatchSize::NumIterations(16),
            )
        });
    }
    // What replacing a faulted VM costs: the old one's drop (its slot's reset) and a start.
    g.bench_function("vm_recycle_sdk_noop", |b| {
        b.iter(|| black_box(Vm::start(&noop).expect("starts")))
    });
    g.finish();
}

/// Loading a module: from the disk cache, and the compile that the cache saves.
fn modules(c: &mut Criterion) {
    let rt = runtime();
    let wasm = std::fs::read(filters_dir().join("bench_noop.wasm")).expect("bench_noop.wasm");
    let dir = std::env::temp_dir().join(format!("wasmgate-bench-cache-{}", std::process::id()));
    rt.compile_cached(&wasm, Some(&dir))
        .expect("fills the cache");
    let mut g = c.benchmark_group("abi");
    g.bench_function("module_load_disk_cache", |b| {
        b.iter(|| black_box(rt.compile_cached(&wasm, Some(&dir)).expect("loads")))
    });
    g.sample_size(10);
    g.bench_function("module_compile", |b| {
        b.iter(|| black_box(rt.compile(&wasm).expect("compiles")))
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One request through a chain: the ABI host's whole per-request work.
fn chains(c: &mut Criterion) {
    let rt = runtime();
    let noop = sdk_plugin(&rt, "bench_noop.wasm", "");
    let realistic = sdk_plugin(&rt, "bench_realistic.wasm", TENANTS);
    let pool = |p: &Plugin| FilterPool::new(p.clone(), 1).expect("pool");
    let chain_of = |p: &Plugin, n: usize| Chain::new((0..n).map(|_| pool(p)).collect());
    let mut g = c.benchmark_group("chain");
    for (name, chain) in [
        ("request_0", chain_of(&noop, 0)),
        ("request_1noop", chain_of(&noop, 1)),
        ("request_3noop", chain_of(&noop, 3)),
        ("request_3realistic", chain_of(&realistic, 3)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut stream = HttpStream::new(StreamInfo::default());
                stream.request_headers = request_headers();
                let mut cs = ChainStream::new(Arc::clone(&chain), stream);
                let v1 = cs.on_request_headers(true);
                cs.stream_mut().response_headers = response_headers();
                let v2 = cs.on_response_headers(true);
                cs.finish();
                black_box((v1, v2))
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = hostcalls, sdk_filters, modules, chains
}
criterion_main!(benches);
