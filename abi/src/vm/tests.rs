use crate::error::LoadError;
use crate::fault::FaultKind;
use crate::limits::Limits;
use crate::plugin::PluginConfig;
use crate::stream::{HttpStream, MapState};
use crate::testing::{PRELUDE, config, plugin_from_wat, runtime, runtime_with_log};
use crate::types::{Action, MapType};
use crate::vm::{HttpEvent, Vm};

/// A module whose callbacks log their name and arguments.
fn tracer(extra: &str) -> String {
    format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  {PRELUDE}
  (data (i32.const 0) "init")
  (data (i32.const 16) "create")
  (data (i32.const 32) "vm_start")
  (data (i32.const 48) "configure")
  (data (i32.const 64) "request_headers")
  (data (i32.const 80) "log")
  (data (i32.const 96) "done")
  (data (i32.const 112) "delete")
  (func $say (param i32 i32) (drop (call $log (i32.const 2) (local.get 0) (local.get 1))))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize") (call $say (i32.const 0) (i32.const 4)))
  (func (export "proxy_on_context_create") (param i32 i32) (call $say (i32.const 16) (i32.const 6)))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (call $say (i32.const 32) (i32.const 8)) i32.const 1)
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (call $say (i32.const 48) (i32.const 9)) i32.const 1)
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $say (i32.const 64) (i32.const 15)) i32.const 0)
  (func (export "proxy_on_log") (param i32) (call $say (i32.const 80) (i32.const 3)))
  (func (export "proxy_on_done") (param i32) (result i32) (call $say (i32.const 96) (i32.const 4)) i32.const 1)
  (func (export "proxy_on_delete") (param i32) (call $say (i32.const 112) (i32.const 6)))
  {extra}
)"#
    )
}

#[test]
fn start_and_stream_callbacks_run_in_envoy_order() {
    let (rt, log) = runtime_with_log();
    let mut vm = Vm::start(&plugin_from_wat(&rt, &tracer(""), config("t"))).unwrap();
    assert_eq!(vm.root_context_id(), 1);
    let mut stream = Some(Box::new(HttpStream::default()));
    let ctx = vm.create_http_context(&mut stream).unwrap();
    assert_eq!(ctx, 2);
    let action = vm
        .on_http(
            ctx,
            &mut stream,
            HttpEvent::RequestHeaders {
                end_of_stream: true,
            },
        )
        .unwrap();
    assert_eq!(action, Action::Continue);
    // A callback the module does not export takes its default.
    let action = vm
        .on_http(
            ctx,
            &mut stream,
            HttpEvent::ResponseHeaders {
                end_of_stream: true,
            },
        )
        .unwrap();
    assert_eq!(action, Action::Continue);
    vm.finish_http(ctx, &mut stream).unwrap();
    assert!(
        stream.is_some(),
        "the stream is given back after every call"
    );
    let lines: Vec<String> = log
        .lines
        .lock()
        .iter()
        .map(|l| l.replace("info: ", ""))
        .collect();
    assert_eq!(
        lines,
        [
            "init",
            "create",
            "vm_start",
            "configure",
            "create",
            "request_headers",
            "log",
            "done",
            "delete"
        ]
    );
}

#[test]
fn on_vm_start_or_on_configure_returning_false_fails_the_load() {
    let (rt, _) = runtime();
    let vm_start_false = tracer("").replace(
        "(call $say (i32.const 32) (i32.const 8)) i32.const 1",
        "(call $say (i32.const 32) (i32.const 8)) i32.const 0",
    );
    let err = Vm::start(&plugin_from_wat(rt, &vm_start_false, config("t"))).unwrap_err();
    assert!(matches!(err, LoadError::VmStartFailed));
    let configure_false = tracer("").replace(
        "(call $say (i32.const 48) (i32.const 9)) i32.const 1",
        "(call $say (i32.const 48) (i32.const 9)) i32.const 0",
    );
    let err = Vm::start(&plugin_from_wat(rt, &configure_false, config("t"))).unwrap_err();
    assert!(matches!(err, LoadError::ConfigureFailed));
}

#[test]
fn host_calls_during_initialize_other_than_logging_fail_the_start() {
    let (rt, _) = runtime();
    let wat = format!(
        r#"(module
  (import "env" "proxy_continue_stream" (func $c (param i32) (result i32)))
  {PRELUDE}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "_initialize") (drop (call $c (i32.const 0))))
)"#
    );
    let err = Vm::start(&plugin_from_wat(rt, &wat, config("t"))).unwrap_err();
    assert!(
        matches!(&err, LoadError::Start(f) if f.kind == FaultKind::Restricted),
        "{err}"
    );
}

fn with_limits(limits: Limits) -> PluginConfig {
    PluginConfig {
        limits,
        ..config("limited")
    }
}

#[test]
fn an_endless_loop_is_interrupted_at_the_deadline() {
    let (rt, _) = runtime();
    let wat = tracer(
        r#"(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (loop (br 0)) i32.const 0)"#,
    );
    let limits = Limits {
        callback_deadline: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, with_limits(limits))).unwrap();
    let mut stream = Some(Box::new(HttpStream::default()));
    let ctx = vm.create_http_context(&mut stream).unwrap();
    let started = std::time::Instant::now();
    let fault = vm
        .on_http(
            ctx,
            &mut stream,
            HttpEvent::ResponseHeaders {
                end_of_stream: false,
            },
        )
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::Deadline, "{fault}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
    assert!(stream.is_some(), "the stream survives its filter's fault");
}

#[test]
fn a_loop_in_initialize_fails_the_start_at_the_deadline() {
    let (rt, _) = runtime();
    let wat = format!(
        "(module {PRELUDE} (func (export \"proxy_abi_version_0_2_1\")) (func (export \"_initialize\") (loop (br 0))))"
    );
    let limits = Limits {
        callback_deadline: std::time::Duration::from_millis(20),
        ..Default::default()
    };
    let err = Vm::start(&plugin_from_wat(rt, &wat, with_limits(limits))).unwrap_err();
    assert!(
        matches!(&err, LoadError::Start(f) if f.kind == FaultKind::Deadline),
        "{err}"
    );
}

#[test]
fn memory_growth_past_the_limit_is_a_fault() {
    let (rt, _) = runtime();
    let wat = tracer(
        r#"(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
             (drop (memory.grow (i32.const 1000))) i32.const 0)"#,
    );
    let limits = Limits {
        max_memory_bytes: 1 << 20,
        ..Default::default()
    };
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, with_limits(limits))).unwrap();
    let mut stream = Some(Box::new(HttpStream::default()));
    let ctx = vm.create_http_context(&mut stream).unwrap();
    let fault = vm
        .on_http(
            ctx,
            &mut stream,
            HttpEvent::ResponseHeaders {
                end_of_stream: false,
            },
        )
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::MemoryLimit, "{fault}");
}

#[test]
fn unbounded_recursion_is_a_trap_not_a_crash() {
    let (rt, _) = runtime();
    let wat = tracer(
        r#"(func $deep (param i32) (result i32) (call $deep (i32.add (local.get 0) (i32.const 1))))
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $deep (i32.const 0)))"#,
    );
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, config("deep"))).unwrap();
    let mut stream = Some(Box::new(HttpStream::default()));
    let ctx = vm.create_http_context(&mut stream).unwrap();
    let fault = vm
        .on_http(
            ctx,
            &mut stream,
            HttpEvent::ResponseHeaders {
                end_of_stream: false,
            },
        )
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(
        fault.message.contains("call stack exhausted"),
        "{}",
        fault.message
    );
    assert!(
        fault.message.lines().count() <= 23,
        "the backtrace is bounded: {}",
        fault.message
    );
}

#[test]
fn a_trap_carries_a_backtrace_with_function_names() {
    let (rt, _) = runtime();
    let wat = tracer(
        r#"(func $inner_helper unreachable)
           (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $inner_helper) i32.const 0)"#,
    );
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, config("bt"))).unwrap();
    let mut stream = Some(Box::new(HttpStream::default()));
    let ctx = vm.create_http_context(&mut stream).unwrap();
    let fault = vm
        .on_http(
            ctx,
            &mut stream,
            HttpEvent::ResponseHeaders {
                end_of_stream: false,
            },
        )
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::Trap);
    assert!(fault.message.contains("inner_helper"), "{}", fault.message);
    assert_eq!(fault.during, "proxy_on_response_headers");
}

#[test]
fn a_local_reply_forces_pause() {
    let (rt, _) = runtime();
    let wat = format!(
        r#"(module
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  {PRELUDE}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1)))
    i32.const 0)
)"#
    );
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, config("r"))).unwrap();
    let mut s = HttpStream::default();
    s.set_map_state(MapType::RequestHeaders, MapState::Writable);
    let mut stream = Some(Box::new(s));
    let ctx = vm.create_http_context(&mut stream).unwrap();
    let action = vm
        .on_http(
            ctx,
            &mut stream,
            HttpEvent::RequestHeaders {
                end_of_stream: true,
            },
        )
        .unwrap();
    assert_eq!(action, Action::Pause);
    assert_eq!(stream.unwrap().take_local_reply().unwrap().status, 403);
}

#[test]
fn abi_0_1_0_headers_callbacks_take_two_arguments() {
    let (rt, log) = runtime_with_log();
    let wat = format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  {PRELUDE}
  (data (i32.const 0) "v1 headers")
  (func (export "proxy_abi_version_0_1_0"))
  (func (export "proxy_on_request_headers") (param i32 i32) (result i32)
    (drop (call $log (i32.const 2) (i32.const 0) (i32.const 10))) i32.const 0)
)"#
    );
    let mut vm = Vm::start(&plugin_from_wat(&rt, &wat, config("v1"))).unwrap();
    let mut stream = Some(Box::new(HttpStream::default()));
    let ctx = vm.create_http_context(&mut stream).unwrap();
    vm.on_http(
        ctx,
        &mut stream,
        HttpEvent::RequestHeaders {
            end_of_stream: true,
        },
    )
    .unwrap();
    assert_eq!(log.lines.lock().as_slice(), ["info: v1 headers"]);
}

/// Context ids wrap after 2^32 without handing out the root's id, 0, or the id of a context
/// still alive.
#[test]
fn context_ids_wrap_around_live_contexts() {
    let (rt, _) = runtime_with_log();
    let mut vm = Vm::start(&plugin_from_wat(&rt, &tracer(""), config("t"))).unwrap();
    let root = vm.root_context_id();
    let mut stream = Some(Box::new(HttpStream::default()));
    let alive = vm.create_http_context(&mut stream).unwrap();
    let ended = vm.create_http_context(&mut stream).unwrap();
    vm.finish_http(ended, &mut stream).unwrap();
    vm.next_context_id = u32::MAX;
    let last = vm.create_http_context(&mut stream).unwrap();
    assert_eq!(last, u32::MAX);
    let wrapped = vm.create_http_context(&mut stream).unwrap();
    assert_eq!(
        (root, alive, ended),
        (1, 2, 3),
        "ids count up from 1 before the wrap"
    );
    assert_eq!(wrapped, ended, "the first free id after the wrap");
    let next = vm.create_http_context(&mut stream).unwrap();
    assert_eq!(next, 4);
    for id in [wrapped, next, last] {
        assert!(id != 0 && id != root && id != alive, "{id}");
    }
}

/// A guest call that runs long on a tokio worker gives the worker's other tasks to another
/// thread, and is still cut at its deadline; so is the next long call on the same thread.
#[test]
fn a_long_call_hands_its_worker_over_and_still_meets_its_deadline() {
    let workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (rt, _) = runtime();
    let wat = tracer(
        r#"(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (loop (br 0)) i32.const 0)"#,
    );
    let limits = Limits {
        callback_deadline: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let plugin = plugin_from_wat(rt, &wat, with_limits(limits));
    for round in 0..3 {
        let mut vm = Vm::start(&plugin).unwrap();
        let started = std::time::Instant::now();
        let looping = workers.spawn(async move {
            let mut stream = Some(Box::new(HttpStream::default()));
            let ctx = vm.create_http_context(&mut stream).unwrap();
            let event = HttpEvent::ResponseHeaders {
                end_of_stream: false,
            };
            vm.on_http(ctx, &mut stream, event).unwrap_err()
        });
        // Queued behind the loop on the only worker.
        let other = workers.spawn(async move { started.elapsed() });
        let other = workers.block_on(other).unwrap();
        let fault = workers.block_on(looping).unwrap();
        let took = started.elapsed();
        assert_eq!(fault.kind, FaultKind::Deadline, "round {round}: {fault}");
        assert!(
            other < std::time::Duration::from_millis(200),
            "round {round}: a task queued behind the loop ran after {other:?}"
        );
        assert!(
            took < std::time::Duration::from_secs(3),
            "round {round}: the loop was cut after {took:?}"
        );
    }
}

/// Two streams of one filter with one VM, on one worker: the second waits for the VM without
/// holding the worker, and both loops are cut at their deadline.
#[test]
fn a_stream_waiting_for_a_busy_vm_does_not_hold_the_worker() {
    use crate::chain::{Chain, ChainStream, Verdict};
    let workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (rt, _) = runtime();
    let wat = tracer(
        r#"(func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (loop (br 0)) i32.const 0)"#,
    );
    let limits = Limits {
        callback_deadline: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let plugin = plugin_from_wat(rt, &wat, with_limits(limits));
    let pool = crate::pool::FilterPool::new(plugin, 1).unwrap();
    let chain = Chain::new(vec![pool]);
    let started = std::time::Instant::now();
    let mut loops = Vec::new();
    for _ in 0..3 {
        let chain = chain.clone();
        loops.push(workers.spawn(async move {
            let mut cs = ChainStream::new(chain, HttpStream::default());
            cs.on_request_headers(true);
            let verdict = cs.on_response_headers(false);
            (verdict, started.elapsed())
        }));
    }
    let other = workers.spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        started.elapsed()
    });
    let other = workers.block_on(other).unwrap();
    for l in loops {
        let (verdict, took) = workers.block_on(l).unwrap();
        assert!(matches!(verdict, Verdict::Failed { .. }), "{verdict:?}");
        assert!(
            took < std::time::Duration::from_secs(5),
            "a loop took {took:?}"
        );
    }
    assert!(
        other < std::time::Duration::from_millis(250),
        "a task ran after {other:?}"
    );
}
