//! What the epoch checks that enforce callback deadlines cost: the same guest work on a runtime
//! compiled with them and on one without, measured in interleaved rounds (on, off, on, off...)
//! so that a noisy machine affects both alike. Prints min and median per variant and the
//! ratio of medians.
//!
//! - `compute`: a tight guest loop of arithmetic (an epoch check on every back edge): the worst
//!   case.
//! - `request_3realistic`: one request through 3 realistic Rust SDK filters (request and
//!   response headers), the case that decides req/s.
//!
//! Run: `cargo bench -p wasmgate-bench --bench epoch`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use wasmgate_abi::{
    Chain, ChainStream, FilterPool, HeaderMap, HttpEvent, HttpStream, MapState, MapType, Plugin,
    PluginConfig, Pseudo, Runtime, RuntimeConfig, StreamInfo, Vm,
};

const ROUNDS: usize = 15;
const ROUND_TIME: Duration = Duration::from_millis(300);

const COMPUTE_GUEST: &str = r#"(module
  (memory (export "memory") 1)
  (global $acc (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "malloc") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $i i32)
    (local.set $i (i32.const 10000))
    (loop $next
      (global.set $acc (i32.add (i32.mul (global.get $acc) (i32.const 31)) (local.get $i)))
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $next (local.get $i)))
    (i32.const 0)))"#;

const TENANTS: &str = r#"{"id": "1", "blocked_agent_prefix": "badbot", "tenants": {"acme": "gold", "globex": "silver", "initech": "bronze"}}"#;

fn runtime(epoch_interruption: bool) -> Runtime {
    Runtime::new(RuntimeConfig {
        max_vms: 16,
        epoch_interruption,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

fn plugin(rt: &Runtime, wasm: &[u8], configuration: &str) -> Plugin {
    Plugin::new(
        rt.compile(wasm).expect("compiles"),
        PluginConfig {
            name: "bench".into(),
            configuration: bytes::Bytes::copy_from_slice(configuration.as_bytes()),
            ..PluginConfig::default()
        },
    )
}

fn headers() -> HeaderMap {
    let mut m = HeaderMap::with_capacity(8);
    m.push_pseudo(Pseudo::Authority, HeaderValue::from_static("127.0.0.1"));
    m.push_pseudo(Pseudo::Path, HeaderValue::from_static("/api/items"));
    m.push_pseudo(Pseudo::Method, HeaderValue::from_static("GET"));
    m.push_pseudo(Pseudo::Scheme, HeaderValue::from_static("http"));
    for (k, v) in [("user-agent", "wasmgate-bench/1"), ("x-tenant", "acme")] {
        m.push(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    m
}

/// One variant's work, run once per call.
type Work = Box<dyn FnMut()>;
/// Builds a case's work on a runtime.
type Case = (&'static str, fn(&Runtime) -> Work);

fn compute(rt: &Runtime) -> Work {
    let wasm = wat::parse_str(COMPUTE_GUEST).expect("valid WAT");
    let mut vm = Vm::start(&plugin(rt, &wasm, "")).expect("starts");
    let mut stream = Some(Box::new(HttpStream::new(StreamInfo::default())));
    if let Some(s) = stream.as_deref_mut() {
        s.set_map_state(MapType::RequestHeaders, MapState::Writable);
    }
    let ctx = vm.create_http_context(&mut stream).expect("context");
    let event = HttpEvent::RequestHeaders {
        end_of_stream: true,
    };
    Box::new(move || {
        black_box(
            vm.on_http(ctx, &mut stream, event)
                .expect("the callback runs"),
        );
    })
}

fn request_3realistic(rt: &Runtime) -> Work {
    let path = PathBuf::from(env!("WASMGATE_FILTERS_DIR")).join("bench_realistic.wasm");
    let wasm = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let p = plugin(rt, &wasm, TENANTS);
    let chain: Arc<Chain> = Chain::new(
        (0..3)
            .map(|_| FilterPool::new(p.clone(), 1).expect("pool"))
            .collect(),
    );
    Box::new(move || {
        let mut stream = HttpStream::new(StreamInfo::default());
        stream.request_headers = headers();
        let mut cs = ChainStream::new(Arc::clone(&chain), stream);
        let v1 = cs.on_request_headers(true);
        cs.stream_mut().response_headers = headers();
        let v2 = cs.on_response_headers(true);
        cs.finish();
        black_box((v1, v2));
    })
}

/// Mean time per call over one round of about [`ROUND_TIME`].
fn round(work: &mut Work) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < ROUND_TIME {
        for _ in 0..64 {
            work();
        }
        calls += 64;
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` runs benches once with no arguments to
    // check they work: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 1 } else { ROUNDS };
    let on = runtime(true);
    let off = runtime(false);
    let cases: [Case; 2] = [
        ("compute", compute),
        ("request_3realistic", request_3realistic),
    ];
    println!("epoch checks: {rounds} interleaved rounds per variant, ns per call");
    for (name, make) in cases {
        let (mut with, mut without) = (make(&on), make(&off));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(round(&mut with));
            b.push(round(&mut without));
        }
        let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let (min_a, min_b) = (min(&a), min(&b));
        let (med_a, med_b) = (median(&mut a), median(&mut b));
        println!(
            "{name}: on min {min_a:.1} median {med_a:.1}; off min {min_b:.1} median {med_b:.1}; \
             on/off median {:.3}, min {:.3}",
            med_a / med_b,
            min_a / min_b
        );
    }
}
