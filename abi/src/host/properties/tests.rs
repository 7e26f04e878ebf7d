//! `proxy_set_property` (filter state) and the attributes beyond the basic ones.

use std::time::Duration;

use http::HeaderValue;

use crate::header_map::Pseudo;
use crate::pairs;
use crate::shared::testing::guest_vm;
use crate::stream::{HttpStream, MAX_FILTER_STATE_BYTES, MapState, StreamInfo};
use crate::testing::runtime;
use crate::types::MapType;
use crate::vm::Vm;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const OOB: u32 = 6;
const INTERNAL: u32 = 10;
const RP: u32 = 1000;
const RS: u32 = 1004;
const PATH: u32 = 100;
const VALUE: u32 = 4096;

const IMPORTS: &[(&str, &str)] = &[
    ("proxy_get_property", "i32 i32 i32 i32"),
    ("proxy_set_property", "i32 i32 i32 i32"),
];

fn vm(name: &str) -> Vm {
    let (rt, _) = runtime();
    guest_vm(rt, IMPORTS, name, "")
}

fn stream() -> Option<Box<HttpStream>> {
    let mut s = HttpStream::new(StreamInfo::default());
    let h = &mut s.request_headers;
    h.push_pseudo(Pseudo::Path, HeaderValue::from_static("/"));
    h.push_pseudo(Pseudo::Method, HeaderValue::from_static("POST"));
    s.set_map_state(MapType::RequestHeaders, MapState::Writable);
    Some(Box::new(s))
}

fn set(vm: &mut Vm, s: &mut Option<Box<HttpStream>>, path: &[u8], value: &[u8]) -> u32 {
    vm.test_write(PATH, path);
    vm.test_write(VALUE, value);
    let args = [PATH, path.len() as u32, VALUE, value.len() as u32];
    vm.test_call(s, "set_property", &args).unwrap()
}

fn get(vm: &mut Vm, s: &mut Option<Box<HttpStream>>, path: &[u8]) -> Option<Vec<u8>> {
    vm.test_write(PATH, path);
    let args = [PATH, path.len() as u32, RP, RS];
    match vm.test_call(s, "get_property", &args).unwrap() {
        OK => Some(vm.test_returned(RP, RS)),
        NOT_FOUND => None,
        other => panic!("status {other}"),
    }
}

fn int(v: i64) -> Option<Vec<u8>> {
    Some(v.to_le_bytes().to_vec())
}

#[test]
fn set_property_is_filter_state_that_later_filters_read() {
    let mut first = vm("props-first");
    let mut later = vm("props-later");
    let mut s = stream();
    assert_eq!(set(&mut first, &mut s, b"tenant", b"acme"), OK);
    assert_eq!(get(&mut first, &mut s, b"tenant").unwrap(), b"acme");
    // Another filter of the chain, on the same stream.
    assert_eq!(get(&mut later, &mut s, b"tenant").unwrap(), b"acme");
    assert_eq!(
        get(&mut later, &mut s, b"filter_state\0wasm.tenant").unwrap(),
        b"acme",
        "Envoy's key, through the filter_state attribute"
    );
    assert_eq!(get(&mut later, &mut s, b"filter_state\0tenant"), None);
    assert_eq!(
        get(&mut later, &mut s, b"tenant\0x"),
        None,
        "bytes have no fields"
    );
    // Replacing, a trailing NUL, an empty value.
    assert_eq!(set(&mut later, &mut s, b"tenant\0", b"other"), OK);
    assert_eq!(get(&mut first, &mut s, b"tenant").unwrap(), b"other");
    assert_eq!(set(&mut first, &mut s, b"flag", b""), OK);
    assert_eq!(get(&mut first, &mut s, b"flag").unwrap(), b"");
    let map = get(&mut first, &mut s, b"filter_state").unwrap();
    let entries = pairs::decode(&map, 10, 1 << 10).unwrap();
    assert_eq!(
        entries,
        [(&b"wasm.tenant"[..], &b"other"[..]), (b"wasm.flag", b"")]
    );
    assert_eq!(
        s.as_ref().unwrap().filter_state(b"tenant"),
        Some(&b"other"[..])
    );
    // Envoy's own attributes are not shadowed by filter state.
    assert_eq!(set(&mut first, &mut s, b"request", b"x"), OK);
    assert_eq!(get(&mut first, &mut s, b"request"), None);
    assert_eq!(
        get(&mut first, &mut s, b"request\0method").unwrap(),
        b"POST"
    );
    // Another stream has its own state.
    let mut other = stream();
    assert_eq!(get(&mut first, &mut other, b"tenant"), None);
}

#[test]
fn set_property_statuses() {
    let mut vm = vm("props-status");
    let mut none = None;
    assert_eq!(set(&mut vm, &mut none, b"k", b"v"), NOT_FOUND, "no stream");
    let mut s = stream();
    let bad_path = [u32::MAX, 4, VALUE, 1];
    assert_eq!(
        vm.test_call(&mut s, "set_property", &bad_path).unwrap(),
        OOB
    );
    let bad_value = [PATH, 1, 0xffff_fff0, 100];
    assert_eq!(
        vm.test_call(&mut s, "set_property", &bad_value).unwrap(),
        OOB
    );
    // The per-stream cap.
    let big = vec![b'x'; MAX_FILTER_STATE_BYTES - 10];
    assert_eq!(set(&mut vm, &mut s, b"big", &big), OK);
    assert_eq!(set(&mut vm, &mut s, b"more", &[b'y'; 20]), INTERNAL);
    assert_eq!(get(&mut vm, &mut s, b"more"), None, "nothing stored");
    assert_eq!(
        set(&mut vm, &mut s, b"big", b"small"),
        OK,
        "replacing frees"
    );
    assert_eq!(set(&mut vm, &mut s, b"more", &[b'y'; 20]), OK);
    let mut s = stream();
    let mut refused = None;
    for i in 0..1000 {
        if set(&mut vm, &mut s, format!("k{i}").as_bytes(), b"") != OK {
            refused = Some(i);
            break;
        }
    }
    assert_eq!(refused, Some(crate::stream::MAX_FILTER_STATE_ENTRIES));
}

#[test]
fn sizes_durations_and_upstream_come_from_the_embedder() {
    let mut vm = vm("props-facts");
    let mut s = stream();
    for path in [
        &b"request\0size"[..],
        b"request\0total_size",
        b"request\0duration",
        b"upstream\0address",
        b"upstream\0port",
        b"xds\0cluster_name",
        b"response\0code_details",
    ] {
        assert_eq!(
            get(&mut vm, &mut s, path),
            None,
            "{}",
            String::from_utf8_lossy(path)
        );
    }
    let headers = s.as_ref().unwrap().request_headers.byte_size() as i64;
    assert_eq!(
        get(&mut vm, &mut s, b"request\0headers_bytes"),
        int(headers)
    );
    {
        let st = s.as_mut().unwrap();
        st.set_request_body_bytes(10);
        st.set_duration(Duration::from_millis(3));
        st.set_upstream_address("10.0.0.9:8443".parse().unwrap());
        st.set_cluster_name("backend");
    }
    assert_eq!(get(&mut vm, &mut s, b"request\0size"), int(10));
    assert_eq!(
        get(&mut vm, &mut s, b"request\0total_size"),
        int(10 + headers)
    );
    assert_eq!(get(&mut vm, &mut s, b"request\0duration"), int(3_000_000));
    assert_eq!(
        get(&mut vm, &mut s, b"upstream\0address").unwrap(),
        b"10.0.0.9:8443"
    );
    assert_eq!(get(&mut vm, &mut s, b"upstream\0port"), int(8443));
    assert_eq!(
        get(&mut vm, &mut s, b"xds\0cluster_name").unwrap(),
        b"backend"
    );
    // A content-length wins for request.size, as in Envoy.
    s.as_mut()
        .unwrap()
        .request_headers
        .push(http::header::CONTENT_LENGTH, HeaderValue::from_static("42"));
    assert_eq!(get(&mut vm, &mut s, b"request\0size"), int(42));
}

#[test]
fn response_attributes_read_the_response() {
    let mut vm = vm("props-response");
    let mut s = stream();
    {
        let st = s.as_mut().unwrap();
        st.response_headers
            .push_pseudo(Pseudo::Status, HeaderValue::from_static("200"));
        st.response_headers.push(
            http::HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/grpc"),
        );
        st.set_map_state(MapType::ResponseHeaders, MapState::ReadOnly);
    }
    assert_eq!(
        get(&mut vm, &mut s, b"response\0code_details").unwrap(),
        b"via_upstream"
    );
    assert_eq!(get(&mut vm, &mut s, b"response\0grpc_status"), None);
    assert_eq!(get(&mut vm, &mut s, b"response\0trailers"), None);
    assert_eq!(get(&mut vm, &mut s, b"response\0size"), None);
    let headers = s.as_ref().unwrap().response_headers.byte_size() as i64;
    assert_eq!(
        get(&mut vm, &mut s, b"response\0headers_bytes"),
        int(headers)
    );
    {
        let st = s.as_mut().unwrap();
        st.response_trailers.push(
            http::HeaderName::from_static("grpc-status"),
            HeaderValue::from_static("14"),
        );
        st.set_map_state(MapType::ResponseTrailers, MapState::ReadOnly);
        st.set_response_body_bytes(5);
        st.set_response_code_details("upstream_reset");
    }
    assert_eq!(get(&mut vm, &mut s, b"response\0grpc_status"), int(14));
    assert_eq!(
        get(&mut vm, &mut s, b"response\0trailers\0grpc-status").unwrap(),
        b"14"
    );
    let trailers = s.as_ref().unwrap().response_trailers.byte_size() as i64;
    assert_eq!(get(&mut vm, &mut s, b"response\0size"), int(5));
    assert_eq!(
        get(&mut vm, &mut s, b"response\0total_size"),
        int(5 + headers + trailers)
    );
    assert_eq!(
        get(&mut vm, &mut s, b"response\0code_details").unwrap(),
        b"upstream_reset"
    );
}
