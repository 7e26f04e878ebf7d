use std::time::{Duration, Instant};

use crate::error::LoadError;
use crate::testing::{PRELUDE, runtime};

/// A proxy-wasm module with enough code to take far longer than a millisecond to compile.
/// Tests share one runtime, and with it the set of abandoned compiles: each test passes its
/// own `tag` so that its module is one no other test abandoned.
fn slow_module(tag: &str) -> Vec<u8> {
    let mut wat = format!(
        r#"(module {PRELUDE}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "{tag}"))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)"#
    );
    for i in 0..3000 {
        wat.push_str(&format!(
            "\n  (func $f{i} (param i32) (result i32) (local i32)
    (loop $l (local.set 1 (i32.add (local.get 1) (i32.mul (local.get 0) (i32.const {i}))))
      (br_if $l (i32.lt_u (local.get 1) (i32.const 1000000))))
    (local.get 1))"
        ));
    }
    wat.push(')');
    wat.into_bytes()
}

#[test]
fn a_compile_past_its_deadline_is_refused_and_not_started_twice() {
    let (rt, _) = runtime();
    let wasm = slow_module("refused_and_not_started_twice");
    let started = Instant::now();
    let first = rt.compile_cached_within(&wasm, None, Duration::from_millis(1));
    assert!(
        matches!(
            first,
            Err(LoadError::CompileTimeout {
                still_running: false,
                ..
            })
        ),
        "{first:?}"
    );
    // The caller did not wait for the compile to finish.
    let waited = started.elapsed();
    // While the abandoned compile runs, the same module is refused at once.
    let again = rt.compile_cached_within(&wasm, None, Duration::from_secs(60));
    assert!(
        matches!(
            again,
            Err(LoadError::CompileTimeout {
                still_running: true,
                ..
            })
        ),
        "{again:?} (the first attempt returned after {waited:?})"
    );
    // Once it has finished, the module compiles with a deadline it can meet.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match rt.compile_cached_within(&wasm, None, Duration::from_secs(60)) {
            Ok(_) => break,
            Err(LoadError::CompileTimeout {
                still_running: true,
                ..
            }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn other_modules_compile_while_an_abandoned_one_runs() {
    let (rt, _) = runtime();
    let slow = slow_module("other_modules_compile");
    assert!(
        rt.compile_cached_within(&slow, None, Duration::from_millis(1))
            .is_err()
    );
    let small = format!(
        r#"(module {PRELUDE}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1))"#
    );
    rt.compile(small.as_bytes()).expect("compiles");
}
