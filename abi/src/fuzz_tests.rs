//! Fuzz-style tests on stable Rust: property tests (proptest) for the codecs and the header
//! map, random arguments into every host function, and random modules (wasm-smith) through
//! compilation and VM start. Case counts are bounded so the whole file runs in seconds.

use std::cell::RefCell;
use std::time::Duration;

use arbitrary::Unstructured;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use wasmtime::{ExternType, ValType};

use crate::body::Body;
use crate::fault::FaultKind;
use crate::header_map::{FieldName, HeaderMap, MapCaps, Pseudo};
use crate::host::properties::split_path;
use crate::host::{ENV_FUNCTIONS, WASI_FUNCTIONS};
use crate::limits::Limits;
use crate::pairs;
use crate::plugin::{Plugin, PluginConfig};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::stream::{HttpStream, MapState};
use crate::testing::{PRELUDE, config, plugin_from_wat, runtime};
use crate::types::{MapType, Status};
use crate::vm::{HttpEvent, Vm};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- The pairs codec ----------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(2000))]

    /// Whatever bytes a guest passes as a pairs buffer, decoding answers (never panics), and
    /// what it returns lies within the buffer and within the limits.
    #[test]
    fn pairs_decode_never_panics(
        buf in prop::collection::vec(any::<u8>(), 0..256),
        max_pairs in 0usize..64,
        max_bytes in 0usize..512,
    ) {
        if let Ok(decoded) = pairs::decode(&buf, max_pairs, max_bytes) {
            prop_assert!(decoded.len() <= max_pairs || buf.is_empty());
            prop_assert!(buf.len() <= max_bytes || buf.is_empty());
            let total: usize = decoded.iter().map(|(k, v)| k.len() + v.len()).sum();
            prop_assert!(total <= buf.len());
        }
    }

    /// Encoding then decoding gives the same pairs, NUL bytes inside keys and values included.
    #[test]
    fn pairs_round_trip(
        entries in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..12), prop::collection::vec(any::<u8>(), 0..12)),
            0..12,
        ),
    ) {
        let refs: Vec<(&[u8], &[u8])> =
            entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        let encoded = pairs::encode(refs.iter().copied());
        prop_assert_eq!(encoded.len(), pairs::encoded_len(refs.iter().copied()));
        let decoded = pairs::decode(&encoded, 1024, 1 << 20).unwrap();
        prop_assert_eq!(decoded, refs);
    }

    /// A valid encoding with one byte changed or cut short still never panics the decoder.
    #[test]
    fn pairs_decode_survives_mutated_encodings(
        entries in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..8), prop::collection::vec(any::<u8>(), 0..8)),
            1..6,
        ),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<bool>(),
    ) {
        let refs: Vec<(&[u8], &[u8])> =
            entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        let mut encoded = pairs::encode(refs.iter().copied());
        let i = at.index(encoded.len());
        if cut {
            encoded.truncate(i);
        } else {
            encoded[i] = byte;
        }
        let _ = pairs::decode(&encoded, 1024, 1 << 20);
    }
}

// ---- Property paths ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(2000))]

    /// Splitting a property path never panics, and joining the segments back with NUL gives
    /// the path without its one tolerated trailing NUL.
    #[test]
    fn property_paths_split_and_join_back(path in prop::collection::vec(
        prop_oneof![Just(0u8), Just(b'a'), Just(b'.'), any::<u8>()], 0..64)
    ) {
        let segments = split_path(&path);
        prop_assert!(!segments.is_empty());
        let joined = segments.join(&0u8);
        let expected = path.strip_suffix(&[0]).unwrap_or(&path);
        prop_assert_eq!(joined.as_slice(), expected);
        prop_assert!(segments.iter().all(|s| !s.contains(&0)));
    }
}

// ---- The header map against a model ------------------------------------------------------------

/// Names a guest might write: valid, upper-case (lower-cased by the map), invalid, pseudo.
const NAMES: &[&[u8]] = &[
    b"x-a",
    b"X-A",
    b"x-b",
    b"content-length",
    b":path",
    b":bogus",
    b"bad name",
    b"",
    b"x\r\nx-injected",
];

/// Values: valid for a header, valid for `:path` too, and invalid (control bytes).
const VALUES: &[&[u8]] = &[
    b"/p",
    b"v",
    b"",
    b"a b",
    b"x\r\nx-injected: 1",
    b"\0",
    b"/\xff",
    b"\xff",
];

const MODEL_CAPS: MapCaps = MapCaps {
    max_entries: 6,
    max_bytes: 40,
};

#[derive(Debug, Clone)]
enum Op {
    Add(usize, usize),
    Replace(usize, usize),
    Remove(usize),
    SetAll(Vec<(usize, usize)>),
    Get(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    let value = 0..VALUES.len();
    prop_oneof![
        3 => (name.clone(), value.clone()).prop_map(|(n, v)| Op::Add(n, v)),
        2 => (name.clone(), value.clone()).prop_map(|(n, v)| Op::Replace(n, v)),
        1 => name.clone().prop_map(Op::Remove),
        1 => prop::collection::vec((name.clone(), value), 0..4).prop_map(Op::SetAll),
        1 => name.prop_map(Op::Get),
    ]
}

/// The model: `(name, value)` in order, names lower-case, pseudo-headers first.
#[derive(Debug, Default)]
struct Model {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The model's own reading of the rules: a pseudo-header must be `:path` with a value that
/// starts with `/` and has no control bytes or spaces; a header name must be a token; a
/// value must have no control bytes other than tab.
fn model_field(name: &[u8], value: &[u8]) -> Option<Vec<u8>> {
    let value_ok = value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    if !value_ok {
        return None;
    }
    if name.first() == Some(&b':') {
        let path_ok = name == b":path"
            && value.first() == Some(&b'/')
            && value.iter().all(|&b| b > 0x20 && b != 0x7f);
        return path_ok.then(|| name.to_vec());
    }
    let token = !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b));
    token.then(|| name.to_ascii_lowercase())
}

impl Model {
    fn len_bytes(&self) -> (usize, usize) {
        let bytes = self.entries.iter().map(|(k, v)| k.len() + v.len()).sum();
        (self.entries.len(), bytes)
    }

    fn set_pseudo(&mut self, name: Vec<u8>, value: Vec<u8>) {
        if let Some(e) = self.entries.iter_mut().find(|(k, _)| *k == name) {
            e.1 = value;
            return;
        }
        let at = self
            .entries
            .iter()
            .position(|(k, _)| k.first() != Some(&b':'))
            .unwrap_or(self.entries.len());
        self.entries.insert(at, (name, value));
    }

    /// Whether an edit leaving `after` (entries, bytes) is within the caps or no growth.
    fn fits(&self, after: (usize, usize)) -> bool {
        let before = self.len_bytes();
        let grows = after.0 > before.0 || after.1 > before.1;
        !grows || (after.0 <= MODEL_CAPS.max_entries && after.1 <= MODEL_CAPS.max_bytes)
    }

    fn write(&mut self, name: &[u8], value: &[u8], replace: bool) -> Result<(), Status> {
        let key = model_field(name, value).ok_or(Status::BadArgument)?;
        let pseudo = key.first() == Some(&b':');
        let (mut n, mut b) = self.len_bytes();
        if replace || pseudo {
            for (k, v) in &self.entries {
                if *k == key {
                    n -= 1;
                    b -= k.len() + v.len();
                }
            }
        }
        if !self.fits((n + 1, b + key.len() + value.len())) {
            return Err(Status::BadArgument);
        }
        if pseudo {
            self.set_pseudo(key, value.to_vec());
        } else if replace {
            let mut seen = false;
            self.entries.retain_mut(|(k, v)| {
                if *k != key {
                    return true;
                }
                if seen {
                    return false;
                }
                seen = true;
                *v = value.to_vec();
                true
            });
            if !seen {
                self.entries.push((key, value.to_vec()));
            }
        } else {
            self.entries.push((key, value.to_vec()));
        }
        Ok(())
    }

    fn remove(&mut self, name: &[u8]) -> Result<(), Status> {
        if name.first() == Some(&b':') {
            return Err(Status::BadArgument);
        }
        if let Some(key) = model_field(name, b"") {
            self.entries.retain(|(k, _)| *k != key);
        }
        Ok(())
    }

    fn set_all(&mut self, pairs: &[(&[u8], &[u8])]) -> Result<(), Status> {
        let mut parsed = Vec::new();
        for (k, v) in pairs {
            parsed.push((model_field(k, v).ok_or(Status::BadArgument)?, v.to_vec()));
        }
        self.entries.retain(|(k, _)| k.first() == Some(&b':'));
        for (k, v) in parsed {
            if k.first() == Some(&b':') {
                self.set_pseudo(k, v);
            } else {
                self.entries.push((k, v));
            }
        }
        Ok(())
    }

    fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

proptest! {
    #![proptest_config(cases(1500))]

    /// Every sequence of guest edits leaves the map exactly as the model says, with the same
    /// statuses, and keeps it within the caps.
    #[test]
    fn header_map_matches_a_model(ops in prop::collection::vec(op(), 1..24)) {
        let mut map = HeaderMap::default();
        map.push_pseudo(Pseudo::Path, HeaderValue::from_static("/"));
        map.push(HeaderName::from_static("x-a"), HeaderValue::from_static("0"));
        let mut model = Model {
            entries: vec![(b":path".to_vec(), b"/".to_vec()), (b"x-a".to_vec(), b"0".to_vec())],
        };
        for op in ops {
            match op {
                Op::Add(n, v) => prop_assert_eq!(
                    map.add_capped(NAMES[n], VALUES[v], 1 << 16, MODEL_CAPS),
                    model.write(NAMES[n], VALUES[v], false)
                ),
                Op::Replace(n, v) => prop_assert_eq!(
                    map.replace_capped(NAMES[n], VALUES[v], 1 << 16, MODEL_CAPS),
                    model.write(NAMES[n], VALUES[v], true)
                ),
                Op::Remove(n) => prop_assert_eq!(map.remove(NAMES[n]), model.remove(NAMES[n])),
                Op::SetAll(list) => {
                    let pairs: Vec<(&[u8], &[u8])> =
                        list.iter().map(|&(n, v)| (NAMES[n], VALUES[v])).collect();
                    prop_assert_eq!(
                        map.set_all(pairs.iter().copied(), 1 << 16),
                        model.set_all(&pairs)
                    );
                }
                Op::Get(n) => prop_assert_eq!(
                    map.get(NAMES[n]).map(HeaderValue::as_bytes),
                    model.get(NAMES[n])
                ),
            }
            let seen: Vec<(Vec<u8>, Vec<u8>)> =
                map.pairs().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(&seen, &model.entries);
            prop_assert_eq!(map.byte_size(), model.len_bytes().1);
            // Pseudo-headers always come first, and `:path` is never lost.
            let first_header = map.iter().position(|(k, _)| matches!(k, FieldName::Header(_)));
            let last_pseudo = map
                .iter()
                .enumerate()
                .filter(|(_, (k, _))| matches!(k, FieldName::Pseudo(_)))
                .map(|(i, _)| i)
                .last();
            if let (Some(h), Some(p)) = (first_header, last_pseudo) {
                prop_assert!(p < h);
            }
            prop_assert!(map.pseudo(Pseudo::Path).is_some());
        }
    }
}

// ---- Host functions with arbitrary arguments ------------------------------------------------

fn wat_type(t: &ValType) -> &'static str {
    match t {
        ValType::I64 => "i64",
        ValType::F32 => "f32",
        ValType::F64 => "f64",
        _ => "i32",
    }
}

/// A caller of one host function, with its parameter types.
struct Target {
    name: String,
    plugin: Plugin,
    vm: Vm,
    params: Vec<ValType>,
}

fn targets(rt: &Runtime) -> Vec<Target> {
    let probe_plugin = plugin_from_wat(
        rt,
        &format!("(module {PRELUDE} (func (export \"proxy_abi_version_0_2_1\")))"),
        config("probe"),
    );
    let mut probe = wasmtime::Store::new(
        rt.engine(),
        crate::state::HostState::new(
            std::sync::Arc::new(probe_plugin.info().clone_for_test()),
            rt.clone(),
            None,
            crate::types::AbiVersion::V0_2_1,
            10,
        ),
    );
    let names = ENV_FUNCTIONS.iter().map(|n| ("env", *n)).chain(
        WASI_FUNCTIONS
            .iter()
            .map(|n| ("wasi_snapshot_preview1", *n)),
    );
    let mut out = Vec::new();
    for (module, name) in names {
        if name == "abort" || name == "proc_exit" {
            continue; // They end the VM by design.
        }
        let Ok(ExternType::Func(ty)) = rt
            .linker()
            .get(&mut probe, module, name)
            .map(|e| e.ty(&probe))
        else {
            continue;
        };
        let params: Vec<ValType> = ty.params().collect();
        let list: Vec<&str> = params.iter().map(wat_type).collect();
        let results: Vec<&str> = ty.results().map(|t| wat_type(&t)).collect();
        let result_decl = if results.is_empty() {
            String::new()
        } else {
            format!("(result {})", results.join(" "))
        };
        let gets: String = (0..params.len())
            .map(|i| format!("local.get {i} "))
            .collect();
        let drop_result = if results.is_empty() { "" } else { "drop" };
        let param_list = list.join(" ");
        let wat = format!(
            r#"(module
  (import "{module}" "{name}" (func $f (param {param_list}) {result_decl}))
  {PRELUDE}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "call") (param {param_list}) {gets} call $f {drop_result})
)"#
        );
        let plugin = plugin_from_wat(rt, &wat, config("fuzz"));
        let vm = Vm::start(&plugin).expect("starts");
        out.push(Target {
            name: format!("{module}.{name}"),
            plugin,
            vm,
            params,
        });
    }
    out
}

/// A stream with every map and both bodies present.
fn full_stream() -> Box<HttpStream> {
    let mut s = HttpStream::default();
    s.request_headers
        .push_pseudo(Pseudo::Path, HeaderValue::from_static("/"));
    s.request_headers
        .push(HeaderName::from_static("a"), HeaderValue::from_static("b"));
    s.response_headers
        .push_pseudo(Pseudo::Status, HeaderValue::from_static("200"));
    s.set_map_state(MapType::RequestHeaders, MapState::Writable);
    s.set_map_state(MapType::ResponseHeaders, MapState::Writable);
    s.request_body = Some(Body::from_bytes(Bytes::from_static(b"request body")));
    s.response_body = Some(Body::from_bytes(Bytes::from_static(b"response body")));
    Box::new(s)
}

/// Argument values that hit the edges: 0, small, the end of a 4-page memory, near 2^32, any.
fn arg() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        0u64..64,
        (0u64..16).prop_map(|d| 4 * 65536 - d),
        (0u64..16).prop_map(|d| u64::from(u32::MAX) - d),
        65536u64..65536 + 4096,
        0u64..4 * 65536,
        any::<u64>(),
    ]
}

/// A-7, A-9, A-15 generalised: random pointers, lengths and enums into every host function,
/// with and without a stream. Every call answers a status or fails its VM with a trap, a
/// restricted call or a memory limit; the host never panics.
#[test]
fn host_functions_survive_arbitrary_arguments() {
    // A runtime of its own: this test keeps a VM per host function alive at once.
    let rt = Runtime::new(RuntimeConfig {
        max_vms: 256,
        log: std::sync::Arc::new(crate::testing::CaptureLog::default()),
        ..RuntimeConfig::default()
    })
    .expect("runtime");
    let targets = RefCell::new(targets(&rt));
    let count = targets.borrow().len();
    assert!(count > 80, "{count} host functions");
    let mut runner = TestRunner::new(cases(4000));
    let strategy = (
        0..count,
        prop::collection::vec(arg(), 12),
        any::<bool>(),
        any::<u64>(),
    );
    runner
        .run(&strategy, |(i, raw, with_stream, fill)| {
            let mut targets = targets.borrow_mut();
            let t = &mut targets[i];
            // Sometimes fill the guest's scratch memory, so the host reads varied bytes.
            if fill % 3 == 0 {
                let bytes = fill.to_le_bytes().repeat(32);
                t.vm.test_write((fill % 60_000) as u32, &bytes);
            }
            let args: Vec<wasmtime::Val> = t
                .params
                .iter()
                .zip(raw)
                .map(|(ty, a)| match ty {
                    ValType::I64 => wasmtime::Val::I64(a as i64),
                    ValType::F64 => wasmtime::Val::F64(a),
                    ValType::F32 => wasmtime::Val::F32(a as u32),
                    _ => wasmtime::Val::I32(a as u32 as i32),
                })
                .collect();
            let mut stream = with_stream.then(full_stream);
            let ctx = if with_stream { 2 } else { 1 };
            let outcome = t.vm.test_with_stream(ctx, &mut stream, |store, instance| {
                let f = instance.get_func(&mut *store, "call").expect("call");
                store.data_mut().start_call();
                store.set_epoch_deadline(1);
                f.call(&mut *store, &args, &mut [])
                    .map_err(|e| crate::Fault::from_wasmtime("fuzz", e))
            });
            if let Err(fault) = outcome {
                prop_assert!(
                    matches!(
                        fault.kind,
                        FaultKind::Trap | FaultKind::Restricted | FaultKind::MemoryLimit
                    ),
                    "{}: {}",
                    t.name,
                    fault
                );
                // A faulted VM is never reused.
                t.vm = Vm::start(&t.plugin).expect("restarts");
            }
            Ok(())
        })
        .unwrap();
}

// ---- Random modules ---------------------------------------------------------------------------

/// Deterministic bytes for `Unstructured`: the same modules every run.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Tight limits, so that a random module that loops or grows costs little.
fn fuzz_config(name: &str) -> PluginConfig {
    PluginConfig {
        limits: Limits {
            callback_deadline: Duration::from_millis(20),
            max_memory_bytes: 4 << 20,
            max_table_elements: 10_000,
            ..Limits::default()
        },
        ..config(name)
    }
}

/// Features wasmgate's engine may not have: off, so that more modules get past compilation.
fn smith_config() -> wasm_smith::Config {
    wasm_smith::Config {
        gc_enabled: false,
        reference_types_enabled: false,
        exceptions_enabled: false,
        threads_enabled: false,
        memory64_enabled: false,
        wide_arithmetic_enabled: false,
        relaxed_simd_enabled: false,
        custom_page_sizes_enabled: false,
        max_memory32_bytes: 8 << 20,
        max_table_elements: 20_000,
        max_instructions: 200,
        max_funcs: 20,
        ..wasm_smith::Config::default()
    }
}

/// What a random module got to, for the summary.
#[derive(Debug, Default)]
struct Reached {
    refused: usize,
    started: usize,
    failed_start: usize,
    ran: usize,
    faulted: usize,
    /// The first refusal, to see why.
    first_refusal: Option<String>,
}

/// Compiles a random module and, if it loads, starts a VM and sends it a request: never a host
/// panic, always a clean `LoadError`, a started VM, a callback result or a fault.
fn exercise(bytes: &[u8], reached: &mut Reached) {
    let (rt, _) = runtime();
    let module = match rt.compile(bytes) {
        Ok(m) => m,
        Err(e) => {
            reached.refused += 1;
            reached.first_refusal.get_or_insert_with(|| e.to_string());
            return;
        }
    };
    let plugin = Plugin::new(module, fuzz_config("smith"));
    let mut vm = match Vm::start(&plugin) {
        Ok(vm) => vm,
        Err(_) => {
            reached.failed_start += 1;
            return;
        }
    };
    reached.started += 1;
    let mut stream = Some(full_stream());
    let ctx = match vm.create_http_context(&mut stream) {
        Ok(ctx) => ctx,
        Err(_) => {
            reached.faulted += 1;
            return;
        }
    };
    let event = HttpEvent::RequestHeaders {
        end_of_stream: true,
    };
    match vm
        .on_http(ctx, &mut stream, event)
        .and_then(|_| vm.finish_http(ctx, &mut stream))
    {
        Ok(()) => reached.ran += 1,
        Err(_) => reached.faulted += 1,
    }
}

/// Random modules of any shape: almost all are refused (not proxy-wasm, unknown imports),
/// cleanly.
#[test]
fn random_modules_load_cleanly_or_are_refused() {
    let mut reached = Reached::default();
    for seed in 0..150u64 {
        let data = noise(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15), 2048);
        let mut u = Unstructured::new(&data);
        let Ok(module) = wasm_smith::Module::new(smith_config(), &mut u) else {
            continue;
        };
        exercise(&module.to_bytes(), &mut reached);
    }
    assert!(reached.refused > 0, "{reached:?}");
}

/// Random modules with the exports of a proxy-wasm filter and imports of real host
/// functions, so that random code runs through VM start and a request and calls the host with
/// random arguments.
#[test]
fn random_proxy_wasm_modules_start_or_fail_cleanly() {
    let shape = wat::parse_str(
        r#"(module
  (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response"
    (func (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func (param i32) (result i32)))
  (import "env" "proxy_done" (func (result i32)))
  (import "env" "proxy_set_effective_context" (func (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))
  (memory (export "memory") 1 64)
  (func (export "malloc") (param i32) (result i32) unreachable)
  (func (export "proxy_abi_version_0_2_1") unreachable)
  (func (export "proxy_on_context_create") (param i32 i32) unreachable)
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) unreachable)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) unreachable)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)
  (func (export "proxy_on_log") (param i32) unreachable)
  (func (export "proxy_on_done") (param i32) (result i32) unreachable)
)"#,
    )
    .expect("shape");
    let mut reached = Reached::default();
    for seed in 0..250u64 {
        let data = noise(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 7, 4096);
        let mut u = Unstructured::new(&data);
        let config = wasm_smith::Config {
            module_shape: Some(shape.clone()),
            ..smith_config()
        };
        let Ok(module) = wasm_smith::Module::new(config, &mut u) else {
            continue;
        };
        exercise(&module.to_bytes(), &mut reached);
    }
    // Most compile; random start callbacks mostly trap or refuse, but enough VMs start and
    // take a request for this to test the host calls, not only the loader.
    assert!(reached.started + reached.failed_start > 200, "{reached:?}");
    assert!(reached.started > 5, "{reached:?}");
    assert!(
        reached.ran + reached.faulted == reached.started,
        "{reached:?}"
    );
}
