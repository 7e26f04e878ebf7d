use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderName, HeaderValue};

use crate::chain::{Chain, ChainStream, Verdict};
use crate::header_map::Pseudo;
use crate::plugin::PluginConfig;
use crate::pool::FilterPool;
use crate::stream::{HttpStream, StreamInfo};
use crate::testing::{PRELUDE, config, plugin_from_wat, runtime, runtime_with_log};

mod bodies;

/// A filter that appends `x-order: <name>` to the request and the response headers, and, as
/// `behaviour` says, replies locally, traps or pauses in its request callback.
fn filter(name: &str, behaviour: &str) -> String {
    let request_extra = match behaviour {
        "reply" => {
            "(drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 48) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const -1)))"
        }
        "trap" => "unreachable",
        _ => "",
    };
    let request_result = if behaviour == "pause" { 1 } else { 0 };
    let response_extra = if behaviour == "trap_response" {
        "unreachable"
    } else {
        ""
    };
    format!(
        r#"(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  {PRELUDE}
  (data (i32.const 0) "x-order")
  (data (i32.const 16) "{name}")
  (data (i32.const 48) "denied")
  (data (i32.const 64) "finish:{name}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 0) (i32.const 7) (i32.const 16) (i32.const {len})))
    {request_extra}
    i32.const {request_result})
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    {response_extra}
    (drop (call $add (i32.const 2) (i32.const 0) (i32.const 7) (i32.const 16) (i32.const {len})))
    i32.const 0)
  (func (export "proxy_on_delete") (param i32)
    (drop (call $log (i32.const 2) (i32.const 64) (i32.const {finish_len}))))
)"#,
        len = name.len(),
        finish_len = name.len() + 7,
    )
}

fn pool(rt: &crate::Runtime, name: &str, behaviour: &str, fail_open: bool) -> Arc<FilterPool> {
    let cfg = PluginConfig {
        fail_open,
        ..config(name)
    };
    FilterPool::new(plugin_from_wat(rt, &filter(name, behaviour), cfg), 1).unwrap()
}

fn request() -> HttpStream {
    let mut s = HttpStream::new(StreamInfo::default());
    let h = &mut s.request_headers;
    h.push_pseudo(Pseudo::Path, HeaderValue::from_static("/"));
    h.push_pseudo(Pseudo::Method, HeaderValue::from_static("GET"));
    s
}

fn upstream_response(s: &mut HttpStream) {
    s.response_headers
        .push_pseudo(Pseudo::Status, HeaderValue::from_static("200"));
    s.response_headers.push(
        HeaderName::from_static("server"),
        HeaderValue::from_static("up"),
    );
}

fn tags(map: &crate::HeaderMap) -> Vec<String> {
    map.pairs()
        .filter(|(k, _)| *k == b"x-order")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn rt() -> &'static crate::Runtime {
    runtime().0
}

#[tokio::test]
async fn request_in_order_response_in_reverse() {
    let chain = Chain::new(vec![pool(rt(), "a", "", false), pool(rt(), "b", "", false)]);
    let mut cs = ChainStream::new(chain, request());
    assert_eq!(cs.on_request_headers(true), Verdict::Continue);
    assert_eq!(tags(&cs.stream().request_headers), ["a", "b"]);
    upstream_response(cs.stream_mut());
    assert_eq!(cs.on_response_headers(false), Verdict::Continue);
    assert_eq!(tags(&cs.stream().response_headers), ["b", "a"]);
    assert_eq!(cs.stream().request_headers.edits().len(), 2);
    cs.finish();
}

#[tokio::test]
async fn a_local_reply_stops_the_request_and_is_seen_by_the_response_callbacks() {
    let chain = Chain::new(vec![
        pool(rt(), "a", "", false),
        pool(rt(), "b", "reply", false),
        pool(rt(), "c", "", false),
    ]);
    let mut cs = ChainStream::new(chain, request());
    let Verdict::LocalReply(reply) = cs.on_request_headers(true) else {
        panic!("expected a local reply");
    };
    assert_eq!((reply.status, &reply.body[..]), (403, &b"denied"[..]));
    assert_eq!(
        tags(&cs.stream().request_headers),
        ["a", "b"],
        "c never saw the request"
    );
    assert_eq!(cs.on_response_headers(false), Verdict::Continue);
    let response = &cs.stream().response_headers;
    assert_eq!(response.pseudo(Pseudo::Status).unwrap(), "403");
    assert_eq!(response.get(b"content-type").unwrap(), "text/plain");
    assert_eq!(
        tags(response),
        ["c", "b", "a"],
        "every filter sees the reply, as in Envoy"
    );
    cs.finish();
}

#[tokio::test]
async fn a_trap_fails_the_stream_and_the_next_stream_gets_a_fresh_vm() {
    let trapper = pool(rt(), "t", "trap", false);
    let chain = Chain::new(vec![pool(rt(), "a", "", false), trapper.clone()]);
    let mut cs = ChainStream::new(chain.clone(), request());
    assert_eq!(
        cs.on_request_headers(true),
        Verdict::Failed { filter: "t".into() }
    );
    let failures = cs.take_failures();
    assert_eq!(failures.len(), 1);
    assert!(!failures[0].failed_open);
    assert!(failures[0].fault.is_some());
    cs.finish();
    assert_eq!(trapper.stats().faults.load(Ordering::Relaxed), 1);

    // The trapped VM was thrown away; the next stream runs on a new one (and traps again).
    let mut cs = ChainStream::new(chain, request());
    assert_eq!(
        cs.on_request_headers(true),
        Verdict::Failed { filter: "t".into() }
    );
    assert_eq!(trapper.stats().rebuilds.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn fail_open_skips_the_failed_filter() {
    let chain = Chain::new(vec![
        pool(rt(), "a", "", false),
        pool(rt(), "t", "trap", true),
        pool(rt(), "c", "", false),
    ]);
    let mut cs = ChainStream::new(chain, request());
    assert_eq!(cs.on_request_headers(true), Verdict::Continue);
    assert_eq!(
        tags(&cs.stream().request_headers),
        ["a", "t", "c"],
        "t's edit before the trap stays"
    );
    upstream_response(cs.stream_mut());
    assert_eq!(cs.on_response_headers(false), Verdict::Continue);
    assert_eq!(
        tags(&cs.stream().response_headers),
        ["c", "a"],
        "t is not called again"
    );
    assert!(cs.take_failures()[0].failed_open);
}

#[tokio::test]
async fn a_trap_in_the_response_phase_fails_the_stream() {
    let chain = Chain::new(vec![pool(rt(), "r", "trap_response", false)]);
    let mut cs = ChainStream::new(chain, request());
    assert_eq!(cs.on_request_headers(true), Verdict::Continue);
    upstream_response(cs.stream_mut());
    assert_eq!(
        cs.on_response_headers(false),
        Verdict::Failed { filter: "r".into() }
    );
}

#[tokio::test]
async fn a_pause_without_resume_waits_and_stays_paused() {
    let chain = Chain::new(vec![
        pool(rt(), "p", "pause", false),
        pool(rt(), "z", "", false),
    ]);
    let mut cs = ChainStream::new(chain, request());
    assert_eq!(cs.on_request_headers(true), Verdict::Paused { filter: 0 });
    assert!(cs.is_paused());
    assert!(
        !cs.wait(std::time::Duration::from_millis(20)).await,
        "nothing resumes it"
    );
    assert_eq!(cs.resume().0, Verdict::Paused { filter: 0 }, "still paused");
    cs.finish();
}

#[tokio::test]
async fn finish_ends_every_context_once() {
    let (rt, log) = runtime_with_log();
    let a = FilterPool::new(plugin_from_wat(&rt, &filter("a", ""), config("a")), 1).unwrap();
    let b = FilterPool::new(plugin_from_wat(&rt, &filter("b", ""), config("b")), 1).unwrap();
    let chain = Chain::new(vec![a, b]);
    let mut cs = ChainStream::new(chain.clone(), request());
    assert_eq!(cs.on_request_headers(true), Verdict::Continue);
    cs.finish();
    cs.finish();
    drop(cs);
    assert_eq!(
        log.lines.lock().as_slice(),
        ["info: finish:a", "info: finish:b"]
    );

    // Dropped without finish (a cancelled request): contexts still end.
    let mut cs = ChainStream::new(chain, request());
    assert_eq!(cs.on_request_headers(true), Verdict::Continue);
    drop(cs);
    assert_eq!(log.lines.lock().len(), 4);
}

#[tokio::test]
async fn a_filter_that_keeps_failing_backs_off() {
    let trapper = pool(rt(), "t", "trap", false);
    let chain = Chain::new(vec![trapper.clone()]);
    for _ in 0..8 {
        let mut cs = ChainStream::new(chain.clone(), request());
        assert!(matches!(
            cs.on_request_headers(true),
            Verdict::Failed { .. }
        ));
    }
    // Five faults in a row, then the slot waits instead of rebuilding for every request.
    assert_eq!(trapper.stats().faults.load(Ordering::Relaxed), 5);
    assert_eq!(trapper.stats().rebuilds.load(Ordering::Relaxed), 4);
}
