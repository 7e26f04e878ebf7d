//! gRPC callouts: the statuses of the five host functions, and deliveries from a fake
//! embedder to a VM in a pool (order, unary outcomes, timeout, cancellation, a context's end).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{envoy_grpc_cluster, upstream_name};
use crate::callout::{
    CalloutFuture, CalloutHandler, CalloutRequest, GrpcEvent, GrpcFuture, GrpcOutbound,
    GrpcRequest, GrpcSend, grpc_status,
};
use crate::header_map::HeaderMap;
use crate::limits::Limits;
use crate::pairs;
use crate::plugin::PluginConfig;
use crate::pool::FilterPool;
use crate::stream::HttpStream;
use crate::testing::{PRELUDE, config, plugin_from_wat, runtime};
use crate::vm::Vm;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD: u32 = 2;
const PARSE: u32 = 4;
const OOB: u32 = 6;
const INTERNAL: u32 = 10;

/// Where the tests put arguments in guest memory.
const TOKEN: u32 = 1100;
const SVC: u32 = 1200;
const SERVICE: u32 = 1300;
const METHOD: u32 = 1400;
const MD: u32 = 1500;
const MSG: u32 = 1800;
/// The guest's record of callbacks: a count, then records of 7 u32s.
const RECORDS: u32 = 8000;

/// A guest that passes the five gRPC calls through (`call`, `stream`, `send`, `cancel`,
/// `close`) and records every gRPC callback with what it could read there:
/// (kind, token, arg, ptr, len, extra, extra2), kind 1 initial metadata (ptr/len: map 4
/// pairs), 2 message (buffer 5; extra2: map 4's size status), 3 trailing metadata (map 5
/// pairs), 4 close (ptr/len: the status message; extra: the code `proxy_get_status` gives;
/// extra2: `proxy_grpc_close`'s status in mode 2). Mode 1 cancels a stream at its initial
/// metadata; mode 2 closes it in its close callback.
fn guest() -> String {
    format!(
        r#"(module
  (import "env" "proxy_grpc_call" (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_cancel" (func $cancel (param i32) (result i32)))
  (import "env" "proxy_grpc_close" (func $close (param i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $size (param i32 i32) (result i32)))
  (import "env" "proxy_get_status" (func $status (param i32 i32 i32) (result i32)))
  {PRELUDE}
  (global $mode (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "set_mode") (param i32) (result i32) (global.set $mode (local.get 0)) (i32.const 0))
  (func (export "call") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (call $call (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4) (local.get 5)
      (local.get 6) (local.get 7) (local.get 8) (local.get 9) (local.get 10) (local.get 11)))
  (func (export "stream") (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (call $stream (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4) (local.get 5)
      (local.get 6) (local.get 7) (local.get 8)))
  (func (export "send") (param i32 i32 i32 i32) (result i32)
    (call $send (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "cancel") (param i32) (result i32) (call $cancel (local.get 0)))
  (func (export "close") (param i32) (result i32) (call $close (local.get 0)))
  (func $record (param $kind i32) (param $token i32) (param $arg i32) (param $ptr i32) (param $len i32)
    (param $extra i32) (param $extra2 i32)
    (local $at i32)
    (local.set $at (i32.add (i32.const {records4}) (i32.mul (i32.load (i32.const {RECORDS})) (i32.const 28))))
    (i32.store (local.get $at) (local.get $kind))
    (i32.store offset=4 (local.get $at) (local.get $token))
    (i32.store offset=8 (local.get $at) (local.get $arg))
    (i32.store offset=12 (local.get $at) (local.get $ptr))
    (i32.store offset=16 (local.get $at) (local.get $len))
    (i32.store offset=20 (local.get $at) (local.get $extra))
    (i32.store offset=24 (local.get $at) (local.get $extra2))
    (i32.store (i32.const {RECORDS}) (i32.add (i32.load (i32.const {RECORDS})) (i32.const 1))))
  (func (export "proxy_on_grpc_receive_initial_metadata") (param $root i32) (param $token i32) (param $n i32)
    (local $st i32)
    (local.set $st (call $pairs (i32.const 4) (i32.const 1000) (i32.const 1004)))
    (call $record (i32.const 1) (local.get $token) (local.get $n)
      (i32.load (i32.const 1000)) (i32.load (i32.const 1004)) (local.get $st) (i32.const 0))
    (if (i32.eq (global.get $mode) (i32.const 1)) (then (drop (call $cancel (local.get $token))))))
  (func (export "proxy_on_grpc_receive") (param $root i32) (param $token i32) (param $n i32)
    (local $st i32)
    (local.set $st (call $buffer (i32.const 5) (i32.const 0) (local.get $n) (i32.const 1000) (i32.const 1004)))
    (call $record (i32.const 2) (local.get $token) (local.get $n)
      (i32.load (i32.const 1000)) (i32.load (i32.const 1004)) (local.get $st)
      (call $size (i32.const 4) (i32.const 1012))))
  (func (export "proxy_on_grpc_receive_trailing_metadata") (param $root i32) (param $token i32) (param $n i32)
    (local $st i32)
    (local.set $st (call $pairs (i32.const 5) (i32.const 1000) (i32.const 1004)))
    (call $record (i32.const 3) (local.get $token) (local.get $n)
      (i32.load (i32.const 1000)) (i32.load (i32.const 1004)) (local.get $st) (i32.const 0)))
  (func (export "proxy_on_grpc_close") (param $root i32) (param $token i32) (param $code i32)
    (local $closed i32)
    (drop (call $status (i32.const 1008) (i32.const 1000) (i32.const 1004)))
    (if (i32.eq (global.get $mode) (i32.const 2))
      (then (local.set $closed (call $close (local.get $token)))))
    (call $record (i32.const 4) (local.get $token) (local.get $code)
      (i32.load (i32.const 1000)) (i32.load (i32.const 1004)) (i32.load (i32.const 1008))
      (local.get $closed)))
)"#,
        records4 = RECORDS + 4,
    )
}

/// One callback the guest saw, with the bytes it read there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    kind: u32,
    token: u32,
    arg: u32,
    data: Vec<u8>,
    extra: u32,
    extra2: u32,
}

const INITIAL: u32 = 1;
const MESSAGE: u32 = 2;
const TRAILING: u32 = 3;
const CLOSE: u32 = 4;

fn records(vm: &mut Vm) -> Vec<Record> {
    let n = vm.test_u32(RECORDS);
    (0..n)
        .map(|i| {
            let at = RECORDS + 4 + i * 28;
            let f = |vm: &mut Vm, k: u32| vm.test_u32(at + 4 * k);
            let (ptr, len) = (f(vm, 3), f(vm, 4));
            let data = if ptr == 0 {
                Vec::new()
            } else {
                vm.test_read(ptr, len)
            };
            Record {
                kind: f(vm, 0),
                token: f(vm, 1),
                arg: f(vm, 2),
                data,
                extra: f(vm, 5),
                extra2: f(vm, 6),
            }
        })
        .collect()
}

/// What the fake embedder was asked and sent, per call or stream.
#[derive(Debug)]
struct Seen {
    request: GrpcRequest,
    sent: Arc<Mutex<Vec<GrpcSend>>>,
}

/// An embedder whose only upstream is `up`; the method says how the upstream behaves:
/// - `Echo`: initial metadata `x-md: a`, each message back as `echo:<m>`, and after the
///   half-close trailing metadata `x-tr: b` and status OK;
/// - `Fail`: initial metadata, then status 7 "denied";
/// - `Hang`: reads what comes and never answers;
/// - `Twice`: two messages, then OK; `Empty`: OK alone; `Vanish`: ends without a status.
#[derive(Debug, Default)]
struct Fake {
    seen: Mutex<Vec<Seen>>,
    /// Work futures dropped before they ended: calls the host cancelled (reset).
    cancelled: Arc<AtomicUsize>,
}

/// Counts a drop that happens before `done` is set.
struct DropCount {
    counter: Arc<AtomicUsize>,
    done: bool,
}

impl Drop for DropCount {
    fn drop(&mut self) {
        if !self.done {
            self.counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn map(name: &'static str, value: &'static str) -> HeaderMap {
    let mut m = HeaderMap::default();
    m.push(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    );
    m
}

impl CalloutHandler for Fake {
    fn has_upstream(&self, name: &str) -> bool {
        name == "up"
    }

    fn call(&self, _request: CalloutRequest) -> CalloutFuture {
        unreachable!("no HTTP callouts here")
    }

    fn grpc(
        &self,
        request: GrpcRequest,
        mut outbound: GrpcOutbound,
        events: mpsc::Sender<GrpcEvent>,
    ) -> GrpcFuture {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let method = request.method.clone();
        self.seen.lock().push(Seen {
            request,
            sent: sent.clone(),
        });
        let guard = DropCount {
            counter: self.cancelled.clone(),
            done: false,
        };
        Box::pin(async move {
            // The whole guard lives in the future (not just its field), so dropping the future
            // is what counts.
            let mut guard = guard;
            let ev = |e| events.send(e);
            match method.as_str() {
                "Echo" => {
                    let _ = ev(GrpcEvent::InitialMetadata(map("x-md", "a"))).await;
                    while let Some(item) = outbound.recv().await {
                        sent.lock().push(item.clone());
                        match item {
                            GrpcSend::Message(m) => {
                                let back = [&b"echo:"[..], &m].concat();
                                let _ = ev(GrpcEvent::Message(Bytes::from(back))).await;
                            }
                            GrpcSend::HalfClose => break,
                        }
                    }
                    let _ = ev(GrpcEvent::TrailingMetadata(map("x-tr", "b"))).await;
                    let _ = ev(GrpcEvent::close(grpc_status::OK, "")).await;
                }
                "Fail" => {
                    let _ = ev(GrpcEvent::InitialMetadata(map("x-md", "a"))).await;
                    let _ = ev(GrpcEvent::close(7, "denied")).await;
                }
                "Hang" => {
                    while let Some(item) = outbound.recv().await {
                        sent.lock().push(item);
                    }
                    std::future::pending::<()>().await;
                }
                "Twice" => {
                    let _ = ev(GrpcEvent::Message(Bytes::from_static(b"1"))).await;
                    let _ = ev(GrpcEvent::Message(Bytes::from_static(b"2"))).await;
                    let _ = ev(GrpcEvent::close(grpc_status::OK, "")).await;
                }
                "Empty" => {
                    let _ = ev(GrpcEvent::close(grpc_status::OK, "")).await;
                }
                _ => {}
            }
            guard.done = true;
        })
    }
}

/// An embedder that keeps the trait's default gRPC (none).
#[derive(Debug)]
struct HttpOnly;

impl CalloutHandler for HttpOnly {
    fn has_upstream(&self, name: &str) -> bool {
        name == "up"
    }

    fn call(&self, _request: CalloutRequest) -> CalloutFuture {
        unreachable!("no HTTP callouts here")
    }
}

fn plugin_config(handler: Option<Arc<dyn CalloutHandler>>, limits: Limits) -> PluginConfig {
    PluginConfig {
        callouts: handler,
        limits,
        ..config("grpc")
    }
}

/// A VM outside any pool (it can check arguments, never be called back).
fn lone_vm(handler: Option<Arc<dyn CalloutHandler>>, limits: Limits) -> Vm {
    let (rt, _) = runtime();
    Vm::start(&plugin_from_wat(
        rt,
        &guest(),
        plugin_config(handler, limits),
    ))
    .unwrap()
}

fn pool_with(handler: Arc<dyn CalloutHandler>) -> Arc<FilterPool> {
    let (rt, _) = runtime();
    let plugin = plugin_from_wat(
        rt,
        &guest(),
        plugin_config(Some(handler), Limits::default()),
    );
    FilterPool::new(plugin, 1).unwrap()
}

/// Writes the usual arguments: upstream `up`, service `pkg.Echo`, `method`, metadata
/// `x-req: 1`, message `msg`.
fn write_args(vm: &mut Vm, method: &str, msg: &[u8]) -> Args {
    let md = pairs::encode([(&b"x-req"[..], &b"1"[..])]);
    vm.test_write(SVC, b"up");
    vm.test_write(SERVICE, b"pkg.Echo");
    vm.test_write(METHOD, method.as_bytes());
    vm.test_write(MD, &md);
    vm.test_write(MSG, msg);
    Args {
        svc: (SVC, 2),
        service: (SERVICE, 8),
        method: (METHOD, method.len() as u32),
        md: (MD, md.len() as u32),
        msg: (MSG, msg.len() as u32),
        timeout: 0,
        ret: TOKEN,
    }
}

#[derive(Debug, Clone, Copy)]
struct Args {
    svc: (u32, u32),
    service: (u32, u32),
    method: (u32, u32),
    md: (u32, u32),
    msg: (u32, u32),
    timeout: u32,
    ret: u32,
}

impl Args {
    fn call(self) -> Vec<u32> {
        vec![
            self.svc.0,
            self.svc.1,
            self.service.0,
            self.service.1,
            self.method.0,
            self.method.1,
            self.md.0,
            self.md.1,
            self.msg.0,
            self.msg.1,
            self.timeout,
            self.ret,
        ]
    }

    fn stream(self) -> Vec<u32> {
        vec![
            self.svc.0,
            self.svc.1,
            self.service.0,
            self.service.1,
            self.method.0,
            self.method.1,
            self.md.0,
            self.md.1,
            self.ret,
        ]
    }
}

fn call(vm: &mut Vm, export: &str, args: &[u32]) -> u32 {
    vm.test_call(&mut None, export, args).unwrap()
}

/// Opens a call (`msg` Some) or a stream on the pool's VM; (status, token).
fn open(pool: &FilterPool, method: &str, msg: Option<&[u8]>, timeout: u32) -> (u32, u32) {
    let mut guard = pool.lock(0);
    let (vm, _) = guard.vm().unwrap();
    let mut args = write_args(vm, method, msg.unwrap_or_default());
    args.timeout = timeout;
    let status = match msg {
        Some(_) => call(vm, "call", &args.call()),
        None => call(vm, "stream", &args.stream()),
    };
    (status, vm.test_u32(TOKEN))
}

/// Runs `export` on the pool's VM (as the root context).
fn run(pool: &FilterPool, export: &str, args: &[u32]) -> u32 {
    let mut guard = pool.lock(0);
    let (vm, _) = guard.vm().unwrap();
    call(vm, export, args)
}

fn send(pool: &FilterPool, token: u32, msg: &[u8], end: bool) -> u32 {
    let mut guard = pool.lock(0);
    let (vm, _) = guard.vm().unwrap();
    vm.test_write(MSG, msg);
    call(vm, "send", &[token, MSG, msg.len() as u32, u32::from(end)])
}

fn pool_records(pool: &FilterPool) -> Vec<Record> {
    let mut guard = pool.lock(0);
    let (vm, _) = guard.vm().unwrap();
    records(vm)
}

/// Waits until the guest recorded `n` callbacks (or 5 s passed), then a little more to catch
/// any callback that should not come, and returns them all.
async fn wait_records(pool: &FilterPool, n: usize) -> Vec<Record> {
    for _ in 0..500 {
        if pool_records(pool).len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    pool_records(pool)
}

async fn wait_for(what: impl Fn() -> bool) {
    for _ in 0..500 {
        if what() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out");
}

fn in_flight(pool: &FilterPool) -> usize {
    let mut guard = pool.lock(0);
    let (vm, _) = guard.vm().unwrap();
    vm.test_with_stream(0, &mut None, |store, _| store.data().callouts.len())
}

fn close_record(token: u32, status: u32, message: &str) -> Record {
    Record {
        kind: CLOSE,
        token,
        arg: status,
        data: message.as_bytes().to_vec(),
        extra: status,
        extra2: 0,
    }
}

fn message_record(token: u32, message: &[u8]) -> Record {
    Record {
        kind: MESSAGE,
        token,
        arg: message.len() as u32,
        data: message.to_vec(),
        extra: OK,
        // Map 4 does not exist during a message.
        extra2: BAD,
    }
}

fn metadata_record(kind: u32, token: u32, name: &[u8], value: &[u8]) -> Record {
    Record {
        kind,
        token,
        arg: 1,
        data: pairs::encode([(name, value)]),
        extra: OK,
        extra2: 0,
    }
}

// ---- arguments -----------------------------------------------------------------------------

#[test]
fn the_service_argument_is_an_upstream_name_or_a_grpc_service_proto() {
    assert_eq!(upstream_name(b"up").as_deref(), Some("up"));
    assert_eq!(upstream_name(b""), None);
    assert_eq!(upstream_name(b"\xff"), None);
    // GrpcService { envoy_grpc { cluster_name: "up", authority: "x" }, timeout (field 3) }
    let proto = [
        0x0a, 0x07, 0x0a, 0x02, b'u', b'p', 0x12, 0x01, b'x', 0x1a, 0x02, 0x08, 0x01,
    ];
    assert_eq!(upstream_name(&proto).as_deref(), Some("up"));
    assert_eq!(envoy_grpc_cluster(&proto[..5]), None, "truncated");
    // google_grpc (field 2) only: no cluster.
    assert_eq!(upstream_name(&[0x12, 0x00]), None);
    assert_eq!(upstream_name(&[0x0a, 0x02, 0x08, 0x01]), None);
    // A varint that never ends, and an unknown wire type.
    assert_eq!(envoy_grpc_cluster(&[0x0a, 0xff, 0xff]), None);
    assert_eq!(envoy_grpc_cluster(&[0x0f]), None);
}

#[test]
fn bad_arguments_get_statuses_and_send_nothing() {
    let fake = Arc::new(Fake::default());
    let limits = Limits {
        max_body_bytes: 8,
        ..Default::default()
    };
    let mut vm = lone_vm(Some(fake.clone()), limits);
    let good = write_args(&mut vm, "Echo", b"hi");
    let check = |vm: &mut Vm, args: Args, want: u32, what: &str| {
        assert_eq!(call(vm, "call", &args.call()), want, "call: {what}");
        assert_eq!(call(vm, "stream", &args.stream()), want, "stream: {what}");
    };
    check(
        &mut vm,
        Args {
            ret: u32::MAX,
            ..good
        },
        OOB,
        "token address",
    );
    check(
        &mut vm,
        Args {
            svc: (u32::MAX, 2),
            ..good
        },
        OOB,
        "upstream range",
    );
    check(
        &mut vm,
        Args {
            md: (MD, u32::MAX),
            ..good
        },
        OOB,
        "metadata range",
    );
    assert_eq!(
        call(
            &mut vm,
            "call",
            &Args {
                msg: (u32::MAX, 4),
                ..good
            }
            .call()
        ),
        OOB
    );
    vm.test_write(1600, b"nope");
    check(
        &mut vm,
        Args {
            svc: (1600, 4),
            ..good
        },
        PARSE,
        "unknown upstream",
    );
    check(
        &mut vm,
        Args {
            svc: (1600, 0),
            ..good
        },
        PARSE,
        "empty upstream",
    );
    check(
        &mut vm,
        Args {
            service: (SERVICE, 0),
            ..good
        },
        BAD,
        "empty service",
    );
    vm.test_write(1620, b"a/b");
    check(
        &mut vm,
        Args {
            method: (1620, 3),
            ..good
        },
        BAD,
        "a slash in the method",
    );
    vm.test_write(1640, b"\x05\x00\x00");
    check(
        &mut vm,
        Args {
            md: (1640, 3),
            ..good
        },
        BAD,
        "malformed metadata",
    );
    let pseudo = pairs::encode([(&b":path"[..], &b"/x"[..])]);
    vm.test_write(1660, &pseudo);
    check(
        &mut vm,
        Args {
            md: (1660, pseudo.len() as u32),
            ..good
        },
        BAD,
        "pseudo-header metadata",
    );
    let crlf = pairs::encode([(&b"x-a"[..], &b"1\r\n"[..])]);
    vm.test_write(1700, &crlf);
    check(
        &mut vm,
        Args {
            md: (1700, crlf.len() as u32),
            ..good
        },
        BAD,
        "CR LF in metadata",
    );
    assert_eq!(
        call(
            &mut vm,
            "call",
            &Args {
                msg: (MSG, 9),
                ..good
            }
            .call()
        ),
        BAD,
        "a message over the body limit"
    );
    // Valid, but a VM outside a pool could never be called back.
    check(&mut vm, good, INTERNAL, "no home");
    // The serialized GrpcService form names the same upstream.
    let proto = [0x0a, 0x04, 0x0a, 0x02, b'u', b'p'];
    vm.test_write(1750, &proto);
    check(
        &mut vm,
        Args {
            svc: (1750, 6),
            ..good
        },
        INTERNAL,
        "proto upstream",
    );
    assert_eq!(vm.test_u32(TOKEN), 0, "no token after a failure");
    assert!(fake.seen.lock().is_empty(), "nothing was sent");

    // Without a callout handler no upstream is known.
    let mut vm = lone_vm(None, Limits::default());
    let good = write_args(&mut vm, "Echo", b"hi");
    check(&mut vm, good, PARSE, "no handler");
}

#[test]
fn send_cancel_and_close_check_the_token() {
    let mut vm = lone_vm(Some(Arc::new(Fake::default())), Limits::default());
    for token in [0, 3, 4, 8, 7] {
        assert_eq!(
            call(&mut vm, "send", &[token, MSG, 1, 0]),
            BAD,
            "send {token}"
        );
        assert_eq!(call(&mut vm, "cancel", &[token]), BAD, "cancel {token}");
        assert_eq!(call(&mut vm, "close", &[token]), BAD, "close {token}");
    }
    // A call's token is no stream: nothing may be sent on it.
    assert_eq!(call(&mut vm, "send", &[1, MSG, 1, 0]), BAD);
    for token in [1, 2, 5, 6, 0xffff_fffd] {
        assert_eq!(
            call(&mut vm, "cancel", &[token]),
            NOT_FOUND,
            "cancel {token}"
        );
        assert_eq!(call(&mut vm, "close", &[token]), NOT_FOUND, "close {token}");
    }
    assert_eq!(call(&mut vm, "send", &[2, MSG, 1, 0]), NOT_FOUND);
    assert_eq!(call(&mut vm, "send", &[6, u32::MAX, 8, 1]), NOT_FOUND);
}

#[test]
fn grpc_buffers_and_maps_exist_only_in_their_callbacks() {
    let (rt, _) = runtime();
    let wat = format!(
        r#"(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $size (param i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  {PRELUDE}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "get") (param i32) (result i32)
    (call $get (local.get 0) (i32.const 0) (i32.const 10) (i32.const 1000) (i32.const 1004)))
  (func (export "set") (param i32) (result i32)
    (call $set (local.get 0) (i32.const 0) (i32.const 0) (i32.const 1200) (i32.const 1)))
  (func (export "pairs") (param i32) (result i32)
    (call $pairs (local.get 0) (i32.const 1000) (i32.const 1004)))
  (func (export "value") (param i32) (result i32)
    (call $value (local.get 0) (i32.const 1200) (i32.const 1) (i32.const 1000) (i32.const 1004)))
  (func (export "size") (param i32) (result i32) (call $size (local.get 0) (i32.const 1000)))
  (func (export "add") (param i32) (result i32)
    (call $add (local.get 0) (i32.const 1200) (i32.const 1) (i32.const 1200) (i32.const 1)))
)"#
    );
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, config("maps"))).unwrap();
    vm.test_write(1200, b"x");
    let mut none = None;
    let mut c = |name: &str, args: &[u32]| vm.test_call(&mut none, name, args).unwrap();
    assert_eq!(c("get", &[5]), NOT_FOUND, "no message outside");
    assert_eq!(c("set", &[5]), BAD, "a gRPC message is immutable");
    for map in [4, 5] {
        assert_eq!(c("pairs", &[map]), OK, "absent map {map} reads as empty");
        assert_eq!(c("value", &[map]), NOT_FOUND);
        assert_eq!(c("size", &[map]), BAD);
        assert_eq!(c("add", &[map]), BAD, "metadata is read-only");
    }
}

// ---- delivery ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_delivers_one_message_on_success() {
    let fake = Arc::new(Fake::default());
    let pool = pool_with(fake.clone());
    let (status, token) = open(&pool, "Echo", Some(b"hi"), 1000);
    assert_eq!(status, OK);
    assert_eq!(token % 4, 1, "call tokens are 1 modulo 4");
    let got = wait_records(&pool, 1).await;
    assert_eq!(
        got,
        [message_record(token, b"echo:hi")],
        "no metadata, no close"
    );
    {
        let seen = fake.seen.lock();
        let request = &seen[0].request;
        assert!(request.unary);
        assert_eq!(
            (
                request.upstream.as_str(),
                request.service.as_str(),
                request.method.as_str()
            ),
            ("up", "pkg.Echo", "Echo")
        );
        assert_eq!(request.timeout, Some(Duration::from_secs(1)));
        let md: Vec<_> = request.metadata.pairs().collect();
        assert_eq!(md, [(&b"x-req"[..], &b"1"[..])]);
        assert_eq!(
            *seen[0].sent.lock(),
            [
                GrpcSend::Message(Bytes::from_static(b"hi")),
                GrpcSend::HalfClose
            ]
        );
    }
    assert_eq!(in_flight(&pool), 0);
    assert_eq!(
        run(&pool, "cancel", &[token]),
        NOT_FOUND,
        "a finished call is gone"
    );
    // The next call gets another token.
    let (_, next) = open(&pool, "Echo", Some(b"x"), 0);
    assert!(next != token && next % 4 == 1);
    assert_eq!(fake.seen.lock()[1].request.timeout, None, "0 is no timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_delivers_one_close_on_failure() {
    let fake = Arc::new(Fake::default());
    let pool = pool_with(fake.clone());
    let (_, failing) = open(&pool, "Fail", Some(b"x"), 0);
    assert_eq!(
        wait_records(&pool, 1).await,
        [close_record(failing, 7, "denied")]
    );

    let (_, twice) = open(&pool, "Twice", Some(b"x"), 0);
    let (_, empty) = open(&pool, "Empty", Some(b"x"), 0);
    let (_, vanish) = open(&pool, "Vanish", Some(b"x"), 0);
    let mut got = wait_records(&pool, 4).await;
    got.remove(0);
    got.sort_by_key(|r| r.token);
    let mut want = vec![
        close_record(
            twice,
            grpc_status::INTERNAL,
            "a unary call got more than one response message",
        ),
        close_record(
            empty,
            grpc_status::INTERNAL,
            "a unary call ended without a response message",
        ),
        close_record(
            vanish,
            grpc_status::UNKNOWN,
            "the call ended without a status",
        ),
    ];
    want.sort_by_key(|r| r.token);
    assert_eq!(got, want);
    assert_eq!(in_flight(&pool), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_past_its_timeout_closes_with_deadline_exceeded() {
    let fake = Arc::new(Fake::default());
    let pool = pool_with(fake.clone());
    let started = std::time::Instant::now();
    let (_, token) = open(&pool, "Hang", Some(b"x"), 50);
    let got = wait_records(&pool, 1).await;
    assert_eq!(got, [close_record(token, 4, "deadline exceeded")]);
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_for(|| fake.cancelled.load(Ordering::SeqCst) == 1).await;
    assert_eq!(in_flight(&pool), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_delivers_metadata_messages_trailers_then_close_in_order() {
    let fake = Arc::new(Fake::default());
    let pool = pool_with(fake.clone());
    let (status, token) = open(&pool, "Echo", None, 0);
    assert_eq!(status, OK);
    assert_eq!(token % 4, 2, "stream tokens are 2 modulo 4");
    assert_eq!(send(&pool, token, b"a", false), OK);
    assert_eq!(send(&pool, token, b"bc", true), OK);
    assert_eq!(
        send(&pool, token, b"d", false),
        BAD,
        "half-closed: nothing more to send"
    );
    let got = wait_records(&pool, 5).await;
    assert_eq!(
        got,
        [
            metadata_record(INITIAL, token, b"x-md", b"a"),
            message_record(token, b"echo:a"),
            message_record(token, b"echo:bc"),
            metadata_record(TRAILING, token, b"x-tr", b"b"),
            close_record(token, 0, ""),
        ]
    );
    assert!(!fake.seen.lock()[0].request.unary);
    assert_eq!(
        *fake.seen.lock()[0].sent.lock(),
        [
            GrpcSend::Message(Bytes::from_static(b"a")),
            GrpcSend::Message(Bytes::from_static(b"bc")),
            GrpcSend::HalfClose
        ]
    );
    // As Envoy: the stream stays known until the filter closes it too; sends are dropped.
    assert_eq!(in_flight(&pool), 0);
    assert_eq!(send(&pool, token, b"late", false), OK);
    assert_eq!(run(&pool, "close", &[token]), OK);
    assert_eq!(run(&pool, "close", &[token]), NOT_FOUND);
    assert_eq!(fake.cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_half_closes_a_stream_and_cancels_a_call() {
    let fake = Arc::new(Fake::default());
    let pool = pool_with(fake.clone());
    run(&pool, "set_mode", &[2]);
    let (_, token) = open(&pool, "Echo", None, 0);
    assert_eq!(send(&pool, token, b"a", false), OK);
    assert_eq!(run(&pool, "close", &[token]), OK);
    assert_eq!(
        run(&pool, "close", &[token]),
        OK,
        "a second half-close is harmless"
    );
    assert_eq!(send(&pool, token, b"b", false), BAD);
    let got = wait_records(&pool, 4).await;
    let kinds: Vec<_> = got.iter().map(|r| (r.kind, r.arg)).collect();
    assert_eq!(
        kinds,
        [(INITIAL, 1), (MESSAGE, 6), (TRAILING, 1), (CLOSE, 0)]
    );
    assert_eq!(got[3].extra2, OK, "closing in the close callback is Ok");
    assert_eq!(
        run(&pool, "close", &[token]),
        NOT_FOUND,
        "both sides closed: gone"
    );

    // On a call, close cancels.
    let (_, call) = open(&pool, "Hang", Some(b"x"), 0);
    wait_for(|| fake.seen.lock().len() == 2).await;
    assert_eq!(run(&pool, "close", &[call]), OK);
    wait_for(|| fake.cancelled.load(Ordering::SeqCst) == 1).await;
    assert_eq!(run(&pool, "cancel", &[call]), NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        pool_records(&pool).len(),
        4,
        "no callback for a cancelled call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_every_callback() {
    let fake = Arc::new(Fake::default());
    let pool = pool_with(fake.clone());
    // From outside any callback.
    let (_, hang) = open(&pool, "Hang", None, 0);
    assert_eq!(send(&pool, hang, b"a", false), OK);
    wait_for(|| {
        fake.seen
            .lock()
            .first()
            .is_some_and(|s| s.sent.lock().len() == 1)
    })
    .await;
    assert_eq!(run(&pool, "cancel", &[hang]), OK);
    wait_for(|| fake.cancelled.load(Ordering::SeqCst) == 1).await;
    assert_eq!(run(&pool, "cancel", &[hang]), NOT_FOUND);
    assert_eq!(send(&pool, hang, b"b", false), NOT_FOUND);

    // From the stream's own first callback: the messages already on their way are dropped.
    run(&pool, "set_mode", &[1]);
    let (_, echo) = open(&pool, "Echo", None, 0);
    assert_eq!(send(&pool, echo, b"a", false), OK);
    assert_eq!(send(&pool, echo, b"b", true), OK);
    let got = wait_records(&pool, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(got, [metadata_record(INITIAL, echo, b"x-md", b"a")]);
    assert_eq!(pool_records(&pool).len(), 1);
    assert_eq!(in_flight(&pool), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_context_cancels_its_calls_and_streams() {
    let fake = Arc::new(Fake::default());
    let pool = pool_with(fake.clone());
    let (_, root_stream) = open(&pool, "Hang", None, 0);
    {
        let mut guard = pool.lock(0);
        let (vm, _) = guard.vm().unwrap();
        let mut stream = Some(Box::new(HttpStream::default()));
        let ctx = vm.create_http_context(&mut stream).unwrap();
        assert_eq!(ctx, vm.root_context_id() + 1, "test_call's stream context");
        let args = write_args(vm, "Hang", b"x");
        assert_eq!(vm.test_call(&mut stream, "call", &args.call()).unwrap(), OK);
        assert_eq!(
            vm.test_call(&mut stream, "stream", &args.stream()).unwrap(),
            OK
        );
        let stream_token = vm.test_u32(TOKEN);
        vm.finish_http(ctx, &mut stream).unwrap();
        assert_eq!(call(vm, "send", &[stream_token, MSG, 1, 0]), NOT_FOUND);
    }
    wait_for(|| fake.cancelled.load(Ordering::SeqCst) == 2).await;
    assert_eq!(in_flight(&pool), 1, "the root context's stream lives on");
    assert_eq!(run(&pool, "cancel", &[root_stream]), OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_streams_share_the_in_flight_cap() {
    let fake = Arc::new(Fake::default());
    let pool = pool_with(fake.clone());
    let cap = super::MAX_CALLOUTS_IN_FLIGHT;
    let mut tokens = Vec::new();
    for i in 0..cap {
        let (status, token) = open(&pool, "Hang", (i % 2 == 0).then_some(&b"x"[..]), 0);
        assert_eq!(status, OK, "{i}");
        tokens.push(token);
    }
    assert_eq!(open(&pool, "Hang", None, 0).0, INTERNAL);
    assert_eq!(open(&pool, "Hang", Some(b"x"), 0).0, INTERNAL);
    let mut unique = tokens.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), cap);
    assert_eq!(run(&pool, "cancel", &[tokens[0]]), OK);
    assert_eq!(open(&pool, "Hang", None, 0).0, OK, "room again");
    for token in &tokens[1..] {
        assert_eq!(run(&pool, "cancel", &[*token]), OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedder_without_grpc_closes_with_unavailable() {
    let pool = pool_with(Arc::new(HttpOnly));
    let (status, token) = open(&pool, "Echo", None, 0);
    assert_eq!(status, OK);
    let got = wait_records(&pool, 1).await;
    assert_eq!(
        got,
        [close_record(
            token,
            grpc_status::UNAVAILABLE,
            "gRPC callouts are not supported here"
        )]
    );
}

#[test]
fn the_outbound_queue_is_bounded_in_bytes() {
    let (tx, mut rx) = GrpcOutbound::channel();
    assert!(tx.send(GrpcSend::Message(Bytes::from_static(b"12345")), 8));
    assert!(!tx.send(GrpcSend::Message(Bytes::from_static(b"6789")), 8));
    assert!(tx.send(GrpcSend::Message(Bytes::from_static(b"678")), 8));
    assert_eq!(tx.queued(), 8);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(
            rx.recv().await,
            Some(GrpcSend::Message(Bytes::from_static(b"12345")))
        );
    });
    assert_eq!(tx.queued(), 3);
    assert!(
        tx.send(GrpcSend::HalfClose, 0),
        "a half-close takes no room"
    );
    drop(rx);
    assert!(
        !tx.send(GrpcSend::HalfClose, usize::MAX),
        "nobody to send to"
    );
}
