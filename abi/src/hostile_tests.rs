//! Hostile guests (reliability catalogue, section A): garbage arguments to every host function,
//! long bulk operations, huge table growth, and data left behind for the next instance.

use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use wasmtime::{ExternType, ValType};

use crate::fault::FaultKind;
use crate::header_map::Pseudo;
use crate::host::{ENV_FUNCTIONS, WASI_FUNCTIONS};
use crate::limits::Limits;
use crate::plugin::PluginConfig;
use crate::stream::{HttpStream, MapState};
use crate::testing::{PRELUDE, config, plugin_from_wat, runtime};
use crate::types::MapType;
use crate::vm::Vm;

/// A small deterministic generator: the same garbage every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Mostly values that hit edges: 0, small, near the memory end, near 2^32, random.
    fn arg(&mut self) -> u64 {
        match self.next() % 8 {
            0 => 0,
            1 => self.next() % 64,
            2 => 4 * 65536 - self.next() % 16,
            3 => u64::from(u32::MAX - (self.next() % 16) as u32),
            4 => 65536 + self.next() % 4096,
            5 => self.next() % (4 * 65536),
            _ => self.next(),
        }
    }
}

fn stream() -> Option<Box<HttpStream>> {
    let mut s = HttpStream::default();
    s.request_headers
        .push_pseudo(Pseudo::Path, HeaderValue::from_static("/"));
    s.request_headers
        .push(HeaderName::from_static("a"), HeaderValue::from_static("b"));
    s.set_map_state(MapType::RequestHeaders, MapState::Writable);
    Some(Box::new(s))
}

fn wat_type(t: &ValType) -> &'static str {
    match t {
        ValType::I64 => "i64",
        ValType::F32 => "f32",
        ValType::F64 => "f64",
        _ => "i32",
    }
}

/// A-7, A-9, A-15: every host function, called with garbage pointers, lengths and enums,
/// answers a status or fails its VM cleanly; the host never panics or touches memory outside
/// the guest's.
#[test]
fn every_host_function_survives_garbage_arguments() {
    let (rt, _) = runtime();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let names = ENV_FUNCTIONS.iter().map(|n| ("env", *n)).chain(
        WASI_FUNCTIONS
            .iter()
            .map(|n| ("wasi_snapshot_preview1", *n)),
    );
    let mut calls = 0;
    for (module, name) in names {
        if name == "abort" || name == "proc_exit" {
            continue; // They end the VM by design.
        }
        let linker_ty = {
            // The signature as the host defines it.
            let mut probe = wasmtime::Store::new(
                rt.engine(),
                crate::state::HostState::new(
                    std::sync::Arc::new(
                        plugin_from_wat(
                            rt,
                            &format!(
                                "(module {PRELUDE} (func (export \"proxy_abi_version_0_2_1\")))"
                            ),
                            config("p"),
                        )
                        .info()
                        .clone_for_test(),
                    ),
                    rt.clone(),
                    None,
                    crate::types::AbiVersion::V0_2_1,
                    10,
                ),
            );
            let ext = rt.linker().get(&mut probe, module, name).expect("defined");
            ext.ty(&probe)
        };
        let ExternType::Func(ty) = linker_ty else {
            continue;
        };
        let params: Vec<&str> = ty.params().map(|t| wat_type(&t)).collect();
        let results: Vec<&str> = ty.results().map(|t| wat_type(&t)).collect();
        let param_list = params.join(" ");
        let result_decl = if results.is_empty() {
            String::new()
        } else {
            format!("(result {})", results.join(" "))
        };
        let gets: String = (0..params.len())
            .map(|i| format!("local.get {i} "))
            .collect();
        let drop_result = if results.is_empty() { "" } else { "drop" };
        let wat = format!(
            r#"(module
  (import "{module}" "{name}" (func $f (param {param_list}) {result_decl}))
  {PRELUDE}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "call") (param {param_list}) {gets} call $f {drop_result})
)"#
        );
        let plugin = plugin_from_wat(rt, &wat, config("garbage"));
        let mut vm = Vm::start(&plugin).expect("starts");
        for _ in 0..60 {
            let mut s = if rng.next().is_multiple_of(2) {
                stream()
            } else {
                None
            };
            let args: Vec<wasmtime::Val> = ty
                .params()
                .map(|t| match t {
                    ValType::I64 => wasmtime::Val::I64(rng.arg() as i64),
                    ValType::F64 => wasmtime::Val::F64(rng.next()),
                    _ => wasmtime::Val::I32(rng.arg() as u32 as i32),
                })
                .collect();
            let outcome = vm.test_with_stream(2, &mut s, |store, instance| {
                let f = instance.get_func(&mut *store, "call").expect("call");
                store.data_mut().start_call();
                store.set_epoch_deadline(1);
                f.call(&mut *store, &args, &mut [])
                    .map_err(|e| crate::Fault::from_wasmtime("garbage", e))
            });
            calls += 1;
            if let Err(fault) = outcome {
                assert!(
                    matches!(
                        fault.kind,
                        FaultKind::Trap | FaultKind::Restricted | FaultKind::MemoryLimit
                    ),
                    "{module}.{name}: {fault}"
                );
                // A faulted VM is never reused.
                vm = Vm::start(&plugin).expect("starts");
            }
        }
    }
    assert!(calls > 3000, "{calls}");
}

/// A-3: a bulk `memory.copy` in a loop is interrupted within the deadline plus one copy.
#[test]
fn bulk_memory_copies_in_a_loop_are_interrupted() {
    let (rt, _) = runtime();
    let wat = String::from(
        r#"(module
  (memory (export "memory") 256)
  (func (export "malloc") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (loop (memory.copy (i32.const 0) (i32.const 8388608) (i32.const 8388608)) (br 0))
    i32.const 0)
)"#,
    );
    let limits = Limits {
        callback_deadline: Duration::from_millis(50),
        max_memory_bytes: 16 << 20,
        ..Default::default()
    };
    let plugin = plugin_from_wat(
        rt,
        &wat,
        PluginConfig {
            limits,
            ..config("copy")
        },
    );
    let mut vm = Vm::start(&plugin).unwrap();
    let mut s = stream();
    let ctx = vm.create_http_context(&mut s).unwrap();
    let started = Instant::now();
    let fault = vm
        .on_http(
            ctx,
            &mut s,
            crate::vm::HttpEvent::RequestHeaders {
                end_of_stream: true,
            },
        )
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::Deadline);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A-5: a huge `table.grow` fails the VM instead of allocating host memory.
#[test]
fn huge_table_growth_is_refused() {
    let (rt, _) = runtime();
    let wat = format!(
        r#"(module
  {PRELUDE}
  (table 1 funcref)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (table.grow (ref.null func) (i32.const 100000000)))
    i32.const 0)
)"#
    );
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, config("table"))).unwrap();
    let mut s = stream();
    let ctx = vm.create_http_context(&mut s).unwrap();
    let fault = vm
        .on_http(
            ctx,
            &mut s,
            crate::vm::HttpEvent::RequestHeaders {
                end_of_stream: true,
            },
        )
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::MemoryLimit, "{fault}");
}

/// A-18: a VM that wrote a secret and faulted leaves nothing for the next instance, which
/// may reuse its pooled memory slot.
#[test]
fn a_new_instance_never_sees_the_previous_ones_memory() {
    let (rt, _) = runtime();
    let writer = String::from(
        r#"(module
  (memory (export "memory") 4)
  (func (export "malloc") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $i i32)
    (loop
      (i32.store (local.get $i) (i32.const 0x5ec12e7))
      (local.set $i (i32.add (local.get $i) (i32.const 4)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const 262144))))
    unreachable)
)"#,
    );
    let reader = r#"(module
  (memory (export "memory") 4)
  (func (export "malloc") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_abi_version_0_2_1"))
  ;; Returns the number of non-zero bytes in memory.
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $i i32) (local $n i32)
    (loop
      (if (i32.load8_u (local.get $i)) (then (local.set $n (i32.add (local.get $n) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if 0 (i32.lt_u (local.get $i) (i32.const 262144))))
    local.get $n)
)"#;
    for _ in 0..4 {
        let mut w = Vm::start(&plugin_from_wat(rt, &writer, config("tenant-a"))).unwrap();
        let mut s = stream();
        let ctx = w.create_http_context(&mut s).unwrap();
        let fault = w
            .on_http(
                ctx,
                &mut s,
                crate::vm::HttpEvent::RequestHeaders {
                    end_of_stream: true,
                },
            )
            .unwrap_err();
        assert_eq!(fault.kind, FaultKind::Trap);
        drop(w);
        let mut r = Vm::start(&plugin_from_wat(rt, reader, config("tenant-b"))).unwrap();
        let mut s = stream();
        let ctx = r.create_http_context(&mut s).unwrap();
        let nonzero = r.test_with_stream(ctx, &mut s, |store, instance| {
            let f = instance
                .get_typed_func::<(u32, u32, u32), u32>(&mut *store, "proxy_on_request_headers")
                .unwrap();
            store.set_epoch_deadline(1000);
            f.call(&mut *store, (ctx, 0, 1)).unwrap()
        });
        assert_eq!(
            nonzero, 0,
            "tenant B saw {nonzero} bytes of tenant A's memory"
        );
    }
}
