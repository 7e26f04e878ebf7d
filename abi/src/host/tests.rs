//! Host-call tests: each drives one host function from a WAT module and checks the status,
//! what was written to guest memory, and the effect on the host.

use http::{HeaderName, HeaderValue};

use crate::fault::FaultKind;
use crate::header_map::Pseudo;
use crate::pairs;
use crate::stream::{HttpStream, MapState, StreamInfo};
use crate::testing::{caller_wat, config, plugin_from_wat, runtime, runtime_with_log, vm_calling};
use crate::types::MapType;
use crate::vm::Vm;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD: u32 = 2;
const OOB: u32 = 6;
const UNIMPL: u32 = 12;
/// Out-pointers used by the tests.
const RP: u32 = 1000;
const RS: u32 = 1004;

fn request_stream() -> Option<Box<HttpStream>> {
    let mut s = HttpStream::new(StreamInfo {
        id: 7,
        source: Some("10.1.2.3:4567".parse().unwrap()),
        destination: Some("127.0.0.1:8080".parse().unwrap()),
        ..Default::default()
    });
    let h = &mut s.request_headers;
    h.push_pseudo(Pseudo::Authority, HeaderValue::from_static("example.com"));
    h.push_pseudo(Pseudo::Path, HeaderValue::from_static("/p?q=1"));
    h.push_pseudo(Pseudo::Method, HeaderValue::from_static("GET"));
    h.push_pseudo(Pseudo::Scheme, HeaderValue::from_static("http"));
    h.push(
        HeaderName::from_static("user-agent"),
        HeaderValue::from_static("ua/1"),
    );
    h.push(
        HeaderName::from_static("x-dup"),
        HeaderValue::from_static("a"),
    );
    h.push(
        HeaderName::from_static("x-dup"),
        HeaderValue::from_static("b"),
    );
    s.set_map_state(MapType::RequestHeaders, MapState::Writable);
    Some(Box::new(s))
}

// ---- logging -------------------------------------------------------------------------------

#[test]
fn log_records_message_and_checks_level_and_memory() {
    let (rt, log) = runtime_with_log();
    let wat = caller_wat("0_2_1", "env", "proxy_log", "i32 i32 i32", "");
    let mut vm = Vm::start(&plugin_from_wat(&rt, &wat, config("log"))).unwrap();
    vm.test_write(10, b"hello");
    let mut none = None;
    assert_eq!(vm.test_call(&mut none, "call", &[2, 10, 5]).unwrap(), OK);
    assert_eq!(vm.test_call(&mut none, "call", &[6, 10, 5]).unwrap(), BAD);
    assert_eq!(
        vm.test_call(&mut none, "call", &[2, 0xffff_fff0, 32])
            .unwrap(),
        OOB
    );
    assert_eq!(log.lines.lock().as_slice(), ["info: hello"]);
}

#[test]
fn get_log_level_writes_the_sink_level() {
    let mut vm = vm_calling("proxy_get_log_level", "i32");
    let mut none = None;
    assert_eq!(vm.test_call(&mut none, "call", &[RP]).unwrap(), OK);
    assert_eq!(vm.test_u32(RP), 0, "the capture log records trace");
    assert_eq!(vm.test_call(&mut none, "call", &[u32::MAX]).unwrap(), OOB);
}

#[test]
fn current_time_is_wall_clock_nanoseconds() {
    let mut vm = vm_calling("proxy_get_current_time_nanoseconds", "i32");
    let mut none = None;
    assert_eq!(vm.test_call(&mut none, "call", &[RP]).unwrap(), OK);
    let t = vm.test_u64(RP);
    let now = crate::host::timers::unix_nanos();
    assert!(t <= now && now - t < 60_000_000_000, "{t} vs {now}");
}

// ---- buffers -------------------------------------------------------------------------------

#[test]
fn get_buffer_bytes_returns_configuration_buffers_clamped() {
    let mut vm = vm_calling("proxy_get_buffer_bytes", "i32 i32 i32 i32 i32");
    let mut none = None;
    assert_eq!(
        vm.test_call(&mut none, "call", &[7, 0, u32::MAX, RP, RS])
            .unwrap(),
        OK
    );
    assert_eq!(vm.test_returned(RP, RS), b"plugin-config");
    assert_eq!(
        vm.test_call(&mut none, "call", &[6, 3, 2, RP, RS]).unwrap(),
        OK
    );
    assert_eq!(vm.test_returned(RP, RS), b"co");
    assert_eq!(
        vm.test_call(&mut none, "call", &[6, 100, 5, RP, RS])
            .unwrap(),
        OK
    );
    assert_eq!(
        vm.test_returned(RP, RS),
        b"",
        "past the end is empty, ptr=0 size=0"
    );
    assert_eq!(
        vm.test_call(&mut none, "call", &[0, 0, 10, RP, RS])
            .unwrap(),
        NOT_FOUND
    );
    assert_eq!(
        vm.test_call(&mut none, "call", &[9, 0, 10, RP, RS])
            .unwrap(),
        BAD
    );
    assert_eq!(
        vm.test_call(&mut none, "call", &[7, 0, 10, u32::MAX - 2, RS])
            .unwrap(),
        OOB
    );
}

#[test]
fn configuration_buffers_are_immutable() {
    let mut vm = vm_calling("proxy_set_buffer_bytes", "i32 i32 i32 i32 i32");
    let mut none = None;
    assert_eq!(
        vm.test_call(&mut none, "call", &[7, 0, 0, 10, 1]).unwrap(),
        BAD
    );
    assert_eq!(
        vm.test_call(&mut none, "call", &[42, 0, 0, 10, 1]).unwrap(),
        BAD
    );
}

#[test]
fn get_buffer_status_reports_length_and_zero_flags() {
    let mut vm = vm_calling("proxy_get_buffer_status", "i32 i32 i32");
    let mut none = None;
    vm.test_write(RS, &[0xff; 4]);
    assert_eq!(vm.test_call(&mut none, "call", &[6, RP, RS]).unwrap(), OK);
    assert_eq!((vm.test_u32(RP), vm.test_u32(RS)), (9, 0));
    assert_eq!(
        vm.test_call(&mut none, "call", &[1, RP, RS]).unwrap(),
        NOT_FOUND
    );
}

// ---- header maps ---------------------------------------------------------------------------

#[test]
fn get_header_map_value_finds_first_value_ignoring_case() {
    let mut vm = vm_calling("proxy_get_header_map_value", "i32 i32 i32 i32 i32");
    let mut s = request_stream();
    vm.test_write(10, b"X-Dup");
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, 5, RP, RS]).unwrap(),
        OK
    );
    assert_eq!(vm.test_returned(RP, RS), b"a");
    vm.test_write(10, b":path");
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, 5, RP, RS]).unwrap(),
        OK
    );
    assert_eq!(vm.test_returned(RP, RS), b"/p?q=1");
    vm.test_write(10, b"nopex");
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, 5, RP, RS]).unwrap(),
        NOT_FOUND
    );
    // Response headers do not exist yet in the request phase.
    assert_eq!(
        vm.test_call(&mut s, "call", &[2, 10, 5, RP, RS]).unwrap(),
        NOT_FOUND
    );
    assert_eq!(
        vm.test_call(&mut s, "call", &[8, 10, 5, RP, RS]).unwrap(),
        BAD
    );
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, u32::MAX, 5, RP, RS])
            .unwrap(),
        OOB
    );
    // Outside a stream there are no maps.
    let mut none = None;
    assert_eq!(
        vm.test_call(&mut none, "call", &[0, 10, 5, RP, RS])
            .unwrap(),
        NOT_FOUND
    );
}

#[test]
fn abi_0_1_0_gets_empty_value_for_missing_header() {
    let (rt, _) = runtime();
    let wat = caller_wat(
        "0_1_0",
        "env",
        "proxy_get_header_map_value",
        "i32 i32 i32 i32 i32",
        "",
    );
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, config("old"))).unwrap();
    let mut s = request_stream();
    vm.test_write(10, b"missing");
    vm.test_write(RP, &[9; 8]);
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, 7, RP, RS]).unwrap(),
        OK
    );
    assert_eq!(vm.test_returned(RP, RS), b"");
}

#[test]
fn get_header_map_pairs_serializes_in_order() {
    let mut vm = vm_calling("proxy_get_header_map_pairs", "i32 i32 i32");
    let mut s = request_stream();
    assert_eq!(vm.test_call(&mut s, "call", &[0, RP, RS]).unwrap(), OK);
    let bytes = vm.test_returned(RP, RS);
    let decoded = pairs::decode(&bytes, 100, 1 << 20).unwrap();
    let keys: Vec<&[u8]> = decoded.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [
            &b":authority"[..],
            b":path",
            b":method",
            b":scheme",
            b"user-agent",
            b"x-dup",
            b"x-dup"
        ]
    );
    // An absent map is empty: ptr=0, size=0 (never the 1-byte form the Rust SDK panics on).
    assert_eq!(vm.test_call(&mut s, "call", &[3, RP, RS]).unwrap(), OK);
    assert_eq!(vm.test_returned(RP, RS), b"");
    assert_eq!(vm.test_call(&mut s, "call", &[99, RP, RS]).unwrap(), BAD);
}

#[test]
fn set_header_map_pairs_replaces_headers_and_rejects_bad_buffers() {
    let mut vm = vm_calling("proxy_set_header_map_pairs", "i32 i32 i32");
    let mut s = request_stream();
    let good = pairs::encode([(&b"a"[..], &b"1"[..]), (b":path", b"/new")]);
    vm.test_write(10, &good);
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, good.len() as u32])
            .unwrap(),
        OK
    );
    let h = &s.as_ref().unwrap().request_headers;
    assert_eq!(h.get(b"a").unwrap(), "1");
    assert!(h.get(b"user-agent").is_none());
    assert_eq!(h.pseudo(Pseudo::Path).unwrap(), "/new");
    assert_eq!(
        h.pseudo(Pseudo::Method).unwrap(),
        "GET",
        "missing pseudo-headers are kept"
    );

    let truncated = &good[..good.len() - 1];
    vm.test_write(10, truncated);
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, truncated.len() as u32])
            .unwrap(),
        BAD
    );
    let injected = pairs::encode([(&b"x"[..], &b"1\r\nx-injected: 1"[..])]);
    vm.test_write(10, &injected);
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, injected.len() as u32])
            .unwrap(),
        BAD
    );
    assert_eq!(
        s.as_ref().unwrap().request_headers.get(b"a").unwrap(),
        "1",
        "unchanged"
    );
}

#[test]
fn add_replace_remove_edit_the_map_and_validate() {
    let (rt, _) = runtime();
    let wat = format!(
        r#"(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $rep (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $rem (param i32 i32 i32) (result i32)))
  {}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "call") (param i32 i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 call $add)
  (func (export "replace") (param i32 i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 call $rep)
  (func (export "remove") (param i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 call $rem)
)"#,
        crate::testing::PRELUDE
    );
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, config("edit"))).unwrap();
    let mut s = request_stream();
    vm.test_write(10, b"X-New");
    vm.test_write(20, b"v1");
    vm.test_write(30, b"x-dup");
    vm.test_write(40, b"bad\r\nx-injected: 1");
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, 5, 20, 2]).unwrap(),
        OK
    );
    assert_eq!(
        vm.test_call(&mut s, "replace", &[0, 30, 5, 20, 2]).unwrap(),
        OK
    );
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, 5, 40, 18]).unwrap(),
        BAD
    );
    assert_eq!(
        vm.test_call(&mut s, "replace", &[0, 40, 18, 20, 2])
            .unwrap(),
        BAD
    );
    {
        let h = &s.as_ref().unwrap().request_headers;
        assert_eq!(h.get(b"x-new").unwrap(), "v1");
        assert_eq!(h.get(b"x-dup").unwrap(), "v1");
        assert_eq!(h.pairs().filter(|(k, _)| *k == b"x-dup").count(), 1);
    }
    assert_eq!(vm.test_call(&mut s, "remove", &[0, 30, 5]).unwrap(), OK);
    assert_eq!(
        vm.test_call(&mut s, "remove", &[0, 30, 5]).unwrap(),
        OK,
        "missing is Ok"
    );
    assert!(s.as_ref().unwrap().request_headers.get(b"x-dup").is_none());
    vm.test_write(50, b":path");
    assert_eq!(vm.test_call(&mut s, "remove", &[0, 50, 5]).unwrap(), BAD);

    // Once the request headers are sent on, they can be read but not changed.
    s.as_mut()
        .unwrap()
        .set_map_state(MapType::RequestHeaders, MapState::ReadOnly);
    assert_eq!(
        vm.test_call(&mut s, "call", &[0, 10, 5, 20, 2]).unwrap(),
        BAD
    );
    assert_eq!(vm.test_call(&mut s, "remove", &[0, 10, 5]).unwrap(), BAD);
    assert_eq!(
        vm.test_call(&mut s, "call", &[2, 10, 5, 20, 2]).unwrap(),
        BAD,
        "absent map"
    );
    let edits = s.as_ref().unwrap().request_headers.edits().len();
    assert_eq!(edits, 3, "add, replace, remove");
}

#[test]
fn get_header_map_size_is_names_plus_values() {
    let mut vm = vm_calling("proxy_get_header_map_size", "i32 i32");
    let mut s = request_stream();
    assert_eq!(vm.test_call(&mut s, "call", &[0, RP]).unwrap(), OK);
    let expected = s.as_ref().unwrap().request_headers.byte_size() as u32;
    assert_eq!(vm.test_u32(RP), expected);
    assert_eq!(vm.test_call(&mut s, "call", &[2, RP]).unwrap(), BAD);
}

// ---- stream control ------------------------------------------------------------------------

#[test]
fn send_local_response_is_recorded_once() {
    let mut vm = vm_calling(
        "proxy_send_local_response",
        "i32 i32 i32 i32 i32 i32 i32 i32",
    );
    let mut s = request_stream();
    let headers = pairs::encode([(&b"x-reason"[..], &b"denied"[..])]);
    vm.test_write(10, b"details");
    vm.test_write(20, b"go away");
    vm.test_write(100, &headers);
    let hl = headers.len() as u32;
    assert_eq!(
        vm.test_call(&mut s, "call", &[403, 10, 7, 20, 7, 100, hl, u32::MAX])
            .unwrap(),
        OK
    );
    assert_eq!(
        vm.test_call(&mut s, "call", &[500, 10, 7, 20, 2, 100, hl, 0])
            .unwrap(),
        OK
    );
    assert_eq!(
        vm.test_call(&mut s, "call", &[99, 10, 7, 20, 7, 100, hl, 0])
            .unwrap(),
        BAD
    );
    assert_eq!(
        vm.test_call(&mut s, "call", &[403, 10, 7, 20, 7, 100, hl - 1, 0])
            .unwrap(),
        BAD
    );
    let reply = s.as_mut().unwrap().take_local_reply().unwrap();
    assert_eq!(reply.status, 403, "the first reply wins");
    assert_eq!(reply.body, "go away");
    assert_eq!(reply.details, "details");
    assert_eq!(reply.grpc_status, None);
    assert_eq!(
        reply.headers,
        vec![(
            HeaderName::from_static("x-reason"),
            HeaderValue::from_static("denied")
        )]
    );
    let mut none = None;
    assert_eq!(
        vm.test_call(&mut none, "call", &[403, 10, 7, 20, 7, 100, hl, 0])
            .unwrap(),
        BAD
    );
}

#[test]
fn continue_and_close_stream_are_deferred_flags() {
    let (rt, _) = runtime();
    let extra = r#"(import "env" "proxy_close_stream" (func $close (param i32) (result i32)))"#;
    let wat = caller_wat("0_2_1", "env", "proxy_continue_stream", "i32", "")
        .replacen("(module", &format!("(module {extra}"), 1)
        .replacen(
            "(func (export \"call\")",
            "(func (export \"close\") (param i32) (result i32) local.get 0 call $close) (func (export \"call\")",
            1,
        );
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, config("cont"))).unwrap();
    let mut s = request_stream();
    assert_eq!(vm.test_call(&mut s, "call", &[0]).unwrap(), OK);
    assert_eq!(vm.test_call(&mut s, "call", &[1]).unwrap(), OK);
    assert_eq!(vm.test_call(&mut s, "call", &[3]).unwrap(), UNIMPL);
    assert_eq!(vm.test_call(&mut s, "call", &[4]).unwrap(), BAD);
    let stream = s.as_mut().unwrap();
    assert!(stream.take_continue_request());
    assert!(!stream.take_continue_request(), "taken once");
    assert!(stream.take_continue_response());
    assert!(!stream.close_requested());
    assert_eq!(vm.test_call(&mut s, "close", &[7]).unwrap(), BAD);
    assert_eq!(vm.test_call(&mut s, "close", &[0]).unwrap(), OK);
    assert!(s.as_ref().unwrap().close_requested());
}

// ---- properties ----------------------------------------------------------------------------

#[test]
fn get_property_uses_envoy_names_and_encodings() {
    let mut vm = vm_calling("proxy_get_property", "i32 i32 i32 i32");
    let mut s = request_stream();
    let get = |vm: &mut Vm, s: &mut Option<Box<HttpStream>>, path: &[u8]| -> Option<Vec<u8>> {
        vm.test_write(10, path);
        match vm
            .test_call(s, "call", &[10, path.len() as u32, RP, RS])
            .unwrap()
        {
            OK => Some(vm.test_returned(RP, RS)),
            NOT_FOUND => None,
            other => panic!("status {other}"),
        }
    };
    assert_eq!(get(&mut vm, &mut s, b"plugin_name").unwrap(), b"test");
    assert_eq!(get(&mut vm, &mut s, b"plugin_root_id").unwrap(), b"root");
    assert_eq!(get(&mut vm, &mut s, b"plugin_vm_id").unwrap(), b"vm");
    assert_eq!(get(&mut vm, &mut s, b"request\0path").unwrap(), b"/p?q=1");
    assert_eq!(get(&mut vm, &mut s, b"request\0url_path").unwrap(), b"/p");
    assert_eq!(get(&mut vm, &mut s, b"request\0query").unwrap(), b"q=1");
    assert_eq!(get(&mut vm, &mut s, b"request\0method").unwrap(), b"GET");
    assert_eq!(
        get(&mut vm, &mut s, b"request\0host").unwrap(),
        b"example.com"
    );
    assert_eq!(get(&mut vm, &mut s, b"request\0scheme").unwrap(), b"http");
    assert_eq!(
        get(&mut vm, &mut s, b"request\0useragent").unwrap(),
        b"ua/1"
    );
    assert_eq!(
        get(&mut vm, &mut s, b"request\0headers\0x-dup").unwrap(),
        b"a,b"
    );
    assert_eq!(
        get(&mut vm, &mut s, b"request\0protocol").unwrap(),
        b"HTTP/1.1"
    );
    assert_eq!(
        get(&mut vm, &mut s, b"source\0address").unwrap(),
        b"10.1.2.3:4567"
    );
    assert_eq!(
        get(&mut vm, &mut s, b"source\0port").unwrap(),
        4567i64.to_le_bytes()
    );
    assert_eq!(
        get(&mut vm, &mut s, b"destination\0port").unwrap(),
        8080i64.to_le_bytes()
    );
    assert_eq!(get(&mut vm, &mut s, b"connection\0mtls").unwrap(), [0]);
    assert_eq!(
        get(&mut vm, &mut s, b"connection\0id").unwrap(),
        7i64.to_le_bytes()
    );
    assert_eq!(
        get(&mut vm, &mut s, b"request\0path\0").unwrap(),
        b"/p?q=1",
        "trailing NUL"
    );
    let map = get(&mut vm, &mut s, b"request\0headers").unwrap();
    let entries = pairs::decode(&map, 100, 1 << 20).unwrap();
    assert!(entries.contains(&(&b"x-dup"[..], &b"a,b"[..])));
    assert_eq!(
        get(&mut vm, &mut s, b"response\0code"),
        None,
        "no response yet"
    );
    assert_eq!(get(&mut vm, &mut s, b"nonsense"), None);

    let stream = s.as_mut().unwrap();
    stream
        .response_headers
        .push_pseudo(Pseudo::Status, HeaderValue::from_static("404"));
    stream.set_map_state(MapType::ResponseHeaders, MapState::ReadOnly);
    assert_eq!(
        get(&mut vm, &mut s, b"response\0code").unwrap(),
        404i64.to_le_bytes()
    );

    let mut none = None;
    assert_eq!(get(&mut vm, &mut none, b"plugin_name").unwrap(), b"test");
    assert_eq!(
        get(&mut vm, &mut none, b"request\0path"),
        None,
        "no stream, no request"
    );
}

// ---- guest allocator -----------------------------------------------------------------------

fn vm_with_malloc(malloc_body: &str, extra_imports: &str) -> Vm {
    let (rt, _) = runtime();
    let wat = format!(
        r#"(module
  (import "env" "proxy_get_buffer_bytes" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  {extra_imports}
  (memory (export "memory") 1)
  (func (export "malloc") (param $n i32) (result i32) {malloc_body})
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "call") (param i32 i32 i32 i32 i32) (result i32)
    local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 call $get)
)"#
    );
    Vm::start(&plugin_from_wat(rt, &wat, config("malloc"))).unwrap()
}

#[test]
fn allocator_returning_null_or_out_of_bounds_gives_invalid_memory_access() {
    let mut none = None;
    let mut vm = vm_with_malloc("i32.const 0", "");
    assert_eq!(
        vm.test_call(&mut none, "call", &[7, 0, 100, RP, RS])
            .unwrap(),
        OOB
    );
    let mut vm = vm_with_malloc("i32.const 65530", "");
    assert_eq!(
        vm.test_call(&mut none, "call", &[7, 0, 100, RP, RS])
            .unwrap(),
        OOB
    );
}

#[test]
fn host_calls_from_inside_the_allocator_fail_the_vm() {
    let body = "(drop (call $cont (i32.const 0))) i32.const 2048";
    let imports = r#"(import "env" "proxy_continue_stream" (func $cont (param i32) (result i32)))"#;
    let mut vm = vm_with_malloc(body, imports);
    let mut none = None;
    let fault = vm
        .test_call(&mut none, "call", &[7, 0, 100, RP, RS])
        .unwrap_err();
    assert_eq!(fault.kind, FaultKind::Restricted, "{fault}");
}

#[test]
fn logging_from_inside_the_allocator_is_allowed() {
    let body = "(drop (call $log (i32.const 2) (i32.const 0) (i32.const 0))) i32.const 2048";
    let imports = r#"(import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))"#;
    let mut vm = vm_with_malloc(body, imports);
    let mut none = None;
    assert_eq!(
        vm.test_call(&mut none, "call", &[7, 0, 100, RP, RS])
            .unwrap(),
        OK
    );
    assert_eq!(vm.test_returned(RP, RS), b"plugin-config");
}

// ---- WASI ----------------------------------------------------------------------------------

#[test]
fn fd_write_logs_stdout_and_stderr() {
    let (rt, log) = runtime_with_log();
    let wat = caller_wat(
        "0_2_1",
        "wasi_snapshot_preview1",
        "fd_write",
        "i32 i32 i32 i32",
        "",
    );
    let mut vm = Vm::start(&plugin_from_wat(&rt, &wat, config("wasi"))).unwrap();
    vm.test_write(100, b"out\n");
    vm.test_write(200, b"line");
    // Two iovecs: "out\n" is one, "line" the other; stdout drops one trailing newline.
    vm.test_write(300, &[100, 0, 0, 0, 3, 0, 0, 0, 200, 0, 0, 0, 4, 0, 0, 0]);
    let mut none = None;
    assert_eq!(
        vm.test_call(&mut none, "call", &[1, 300, 2, RP]).unwrap(),
        0
    );
    assert_eq!(vm.test_u32(RP), 7);
    vm.test_write(300, &[100, 0, 0, 0, 4, 0, 0, 0]);
    assert_eq!(
        vm.test_call(&mut none, "call", &[2, 300, 1, RP]).unwrap(),
        0
    );
    assert_eq!(
        vm.test_call(&mut none, "call", &[3, 300, 1, RP]).unwrap(),
        8,
        "BADF"
    );
    vm.test_write(300, &[0xf0, 0xff, 0xff, 0xff, 100, 0, 0, 0]);
    assert_eq!(
        vm.test_call(&mut none, "call", &[1, 300, 1, RP]).unwrap(),
        21,
        "FAULT"
    );
    assert_eq!(log.lines.lock().as_slice(), ["info: outline", "error: out"]);
}

#[test]
fn wasi_gives_no_environment_no_files_and_bounded_randomness() {
    let mut none = None;
    let mut env = {
        let (rt, _) = runtime();
        let wat = caller_wat(
            "0_2_1",
            "wasi_snapshot_preview1",
            "environ_sizes_get",
            "i32 i32",
            "",
        );
        Vm::start(&plugin_from_wat(rt, &wat, config("env"))).unwrap()
    };
    env.test_write(RP, &[9; 8]);
    assert_eq!(env.test_call(&mut none, "call", &[RP, RS]).unwrap(), 0);
    assert_eq!((env.test_u32(RP), env.test_u32(RS)), (0, 0));

    let (rt, _) = runtime();
    let wat = caller_wat("0_2_1", "wasi_unstable", "random_get", "i32 i32", "");
    let mut rnd = Vm::start(&plugin_from_wat(rt, &wat, config("rnd"))).unwrap();
    assert_eq!(rnd.test_call(&mut none, "call", &[100, 32]).unwrap(), 0);
    assert_ne!(rnd.test_read(100, 32), vec![0; 32]);
    assert_eq!(
        rnd.test_call(&mut none, "call", &[0, 65 * 1024]).unwrap(),
        28,
        "EINVAL"
    );

    let wat = caller_wat(
        "0_2_1",
        "wasi_snapshot_preview1",
        "fd_prestat_get",
        "i32 i32",
        "",
    );
    let mut pre = Vm::start(&plugin_from_wat(rt, &wat, config("pre"))).unwrap();
    assert_eq!(
        pre.test_call(&mut none, "call", &[3, RP]).unwrap(),
        8,
        "BADF: no preopens"
    );

    let wat = caller_wat(
        "0_2_1",
        "wasi_snapshot_preview1",
        "path_open",
        "i32 i32 i32 i32 i32 i64 i64 i32 i32",
        "",
    )
    .replace("(func (export \"call\") (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32) local.get 0 local.get 1 local.get 2 local.get 3 local.get 4 local.get 5 local.get 6 local.get 7 local.get 8  call $f)",
        "(func (export \"call\") (result i32) (call $f (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 100)))");
    let mut open = Vm::start(&plugin_from_wat(rt, &wat, config("open"))).unwrap();
    assert_eq!(
        open.test_call(&mut none, "call", &[]).unwrap(),
        44,
        "ENOENT"
    );
}

#[test]
fn proc_exit_ends_the_vm() {
    let (rt, _) = runtime();
    let wat = format!(
        r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  {}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "call") (result i32) (call $exit (i32.const 3)) i32.const 0)
)"#,
        crate::testing::PRELUDE
    );
    let mut vm = Vm::start(&plugin_from_wat(rt, &wat, config("exit"))).unwrap();
    let fault = vm.test_call(&mut None, "call", &[]).unwrap_err();
    assert_eq!((fault.kind, fault.exit_code), (FaultKind::Exit, Some(3)));
}

// ---- every import links --------------------------------------------------------------------

#[test]
fn every_known_import_name_is_defined() {
    let (rt, _) = runtime();
    let mut store = wasmtime::Store::new(
        rt.engine(),
        crate::state::HostState::new(
            std::sync::Arc::new(
                crate::plugin::Plugin::new(
                    rt.compile(
                        format!(
                            "(module {} (func (export \"proxy_abi_version_0_2_1\")))",
                            crate::testing::PRELUDE
                        )
                        .as_bytes(),
                    )
                    .unwrap(),
                    config("x"),
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
    for name in super::ENV_FUNCTIONS {
        assert!(
            rt.linker().get(&mut store, "env", name).is_ok(),
            "env.{name}"
        );
    }
    for module in super::WASI_MODULES {
        for name in super::WASI_FUNCTIONS {
            assert!(
                rt.linker().get(&mut store, module, name).is_ok(),
                "{module}.{name}"
            );
        }
    }
}
