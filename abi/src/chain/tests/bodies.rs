//! Body callbacks through the chain: streaming, buffering by the filter that pauses, rewrites,
//! limits, local replies, and resuming a paused stream from another callback.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::Runtime;
use crate::chain::{Chain, ChainStream, Verdict};
use crate::limits::Limits;
use crate::plugin::PluginConfig;
use crate::pool::FilterPool;
use crate::testing::{PRELUDE, config, plugin_from_wat, runtime_with_log};

/// A body filter. `mode`:
/// - `buffer`: Pause until end of stream, then replace the body with "REWRITTEN";
/// - `hold`: Pause until end of stream, then Continue unchanged;
/// - `prepend`: prepend "<" to every chunk, Continue;
/// - `reply`: send a local reply from the body callback;
/// - `pause_eos`: Pause at end of stream too (to be resumed from elsewhere);
/// - `pass`: Continue.
///
/// Every call logs `<name>:<size>:<eos>`.
fn body_filter(name: &str, mode: &str) -> String {
    let on_eos = match mode {
        "buffer" => {
            "(drop (call $set (local.get $buf) (i32.const 0) (i32.const 1000000) (i32.const 200) (i32.const 9))) (return (i32.const 0))"
        }
        "pause_eos" => "(return (i32.const 1))",
        _ => "",
    };
    let not_eos = match mode {
        "buffer" | "hold" | "pause_eos" => "(return (i32.const 1))",
        _ => "",
    };
    let always = match mode {
        "prepend" => {
            "(drop (call $set (local.get $buf) (i32.const 0) (i32.const 0) (i32.const 210) (i32.const 1)))"
        }
        "reply" => {
            "(drop (call $reply (i32.const 418) (i32.const 0) (i32.const 0) (i32.const 220) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const -1)))"
        }
        _ => "",
    };
    format!(
        r#"(module
  (import "env" "proxy_set_buffer_bytes" (func $set (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  {PRELUDE}
  (data (i32.const 200) "REWRITTEN")
  (data (i32.const 210) "<")
  (data (i32.const 220) "teapot")
  (data (i32.const 300) "{name}:")
  (func $note (param $size i32) (param $eos i32)
    ;; "<name>:<size>:<eos>" built at 300; size printed in decimal (up to 5 digits).
    (local $p i32) (local $d i32) (local $div i32) (local $started i32)
    (local.set $p (i32.const {after_name}))
    (local.set $div (i32.const 10000))
    (block $done (loop $digits
      (local.set $d (i32.rem_u (i32.div_u (local.get $size) (local.get $div)) (i32.const 10)))
      (if (i32.or (i32.or (local.get $started) (local.get $d)) (i32.eq (local.get $div) (i32.const 1)))
        (then
          (i32.store8 (local.get $p) (i32.add (i32.const 48) (local.get $d)))
          (local.set $p (i32.add (local.get $p) (i32.const 1)))
          (local.set $started (i32.const 1))))
      (br_if $done (i32.eq (local.get $div) (i32.const 1)))
      (local.set $div (i32.div_u (local.get $div) (i32.const 10)))
      (br $digits)))
    (i32.store8 (local.get $p) (i32.const 58))
    (i32.store8 (i32.add (local.get $p) (i32.const 1)) (i32.add (i32.const 48) (local.get $eos)))
    (drop (call $log (i32.const 2) (i32.const 300) (i32.sub (i32.add (local.get $p) (i32.const 2)) (i32.const 300)))))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $body (i32.const 0) (local.get $size) (local.get $eos)))
  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $body (i32.const 1) (local.get $size) (local.get $eos)))
  (func $body (param $buf i32) (param $size i32) (param $eos i32) (result i32)
    (call $note (local.get $size) (local.get $eos))
    {always}
    (if (local.get $eos) (then {on_eos}) (else {not_eos}))
    i32.const 0)
  ;; What a callout response or a tick does in Envoy: pick a paused stream and resume it.
  (func (export "resume") (param $ctx i32) (result i32)
    (drop (call $effective (local.get $ctx)))
    (call $continue (i32.const 0)))
)"#,
        after_name = 300 + name.len() + 1,
    )
}

fn pool(rt: &Runtime, name: &str, mode: &str, max_body: Option<usize>) -> Arc<FilterPool> {
    let mut cfg: PluginConfig = config(name);
    if let Some(max) = max_body {
        cfg.limits = Limits {
            max_body_bytes: max,
            ..Default::default()
        };
    }
    FilterPool::new(plugin_from_wat(rt, &body_filter(name, mode), cfg), 1).unwrap()
}

fn stream() -> crate::HttpStream {
    crate::HttpStream::default()
}

fn chunk(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn lines(log: &crate::testing::CaptureLog) -> Vec<String> {
    log.lines
        .lock()
        .iter()
        .map(|l| l.replace("info: ", ""))
        .collect()
}

#[test]
fn chunks_stream_through_without_copies_when_nobody_pauses() {
    let (rt, log) = runtime_with_log();
    let chain = Chain::new(vec![
        pool(&rt, "a", "pass", None),
        pool(&rt, "b", "pass", None),
    ]);
    let mut cs = ChainStream::new(chain, stream());
    let data = chunk("hello");
    let (v, out) = cs.on_request_body(data.clone(), false);
    assert_eq!(v, Verdict::Continue);
    assert_eq!(
        out.as_ptr(),
        data.as_ptr(),
        "the very same bytes, not a copy"
    );
    let (_, out) = cs.on_request_body(chunk("!"), true);
    assert_eq!(out, "!");
    assert_eq!(lines(&log), ["a:5:0", "b:5:0", "a:1:1", "b:1:1"]);
}

#[test]
fn a_pausing_filter_buffers_and_sees_the_cumulative_size_then_rewrites() {
    let (rt, log) = runtime_with_log();
    let chain = Chain::new(vec![
        pool(&rt, "buf", "buffer", None),
        pool(&rt, "after", "pass", None),
    ]);
    let mut cs = ChainStream::new(chain, stream());
    assert_eq!(
        cs.on_request_body(chunk("aa"), false),
        (Verdict::Continue, Bytes::new())
    );
    assert_eq!(
        cs.on_request_body(chunk("bbb"), false),
        (Verdict::Continue, Bytes::new())
    );
    let (v, out) = cs.on_request_body(chunk("c"), true);
    assert_eq!((v, &out[..]), (Verdict::Continue, &b"REWRITTEN"[..]));
    assert_eq!(
        lines(&log),
        ["buf:2:0", "buf:5:0", "buf:6:1", "after:9:1"],
        "the later filter only sees the body once the buffering filter lets it go"
    );
}

#[test]
fn filters_before_the_buffering_one_see_each_chunk_alone() {
    let (rt, log) = runtime_with_log();
    let chain = Chain::new(vec![
        pool(&rt, "pre", "prepend", None),
        pool(&rt, "hold", "hold", None),
    ]);
    let mut cs = ChainStream::new(chain, stream());
    assert_eq!(cs.on_request_body(chunk("a"), false).1, "");
    let (_, out) = cs.on_request_body(chunk("b"), true);
    assert_eq!(out, "<a<b");
    assert_eq!(lines(&log), ["pre:1:0", "hold:2:0", "pre:1:1", "hold:4:1"]);
}

#[test]
fn the_response_body_flows_through_filters_in_reverse() {
    let (rt, log) = runtime_with_log();
    let chain = Chain::new(vec![
        pool(&rt, "first", "hold", None),
        pool(&rt, "second", "prepend", None),
    ]);
    let mut cs = ChainStream::new(chain, stream());
    assert_eq!(cs.on_response_body(chunk("x"), false).1, "");
    let (_, out) = cs.on_response_body(chunk("y"), true);
    assert_eq!(out, "<x<y");
    assert_eq!(
        lines(&log),
        ["second:1:0", "first:2:0", "second:1:1", "first:4:1"]
    );
}

#[test]
fn buffering_past_the_limit_is_too_large() {
    let (rt, _) = runtime_with_log();
    let chain = Chain::new(vec![pool(&rt, "small", "hold", Some(4))]);
    let mut cs = ChainStream::new(chain, stream());
    assert_eq!(cs.on_request_body(chunk("aaa"), false).0, Verdict::Continue);
    assert_eq!(
        cs.on_request_body(chunk("bbb"), false).0,
        Verdict::TooLarge {
            filter: "small".into()
        }
    );
}

#[test]
fn a_local_reply_from_a_body_callback() {
    let (rt, _) = runtime_with_log();
    let chain = Chain::new(vec![pool(&rt, "r", "reply", None)]);
    let mut cs = ChainStream::new(chain.clone(), stream());
    let (v, _) = cs.on_request_body(chunk("x"), false);
    let Verdict::LocalReply(reply) = v else {
        panic!("expected a local reply, got {v:?}");
    };
    assert_eq!((reply.status, &reply.body[..]), (418, &b"teapot"[..]));
    assert_eq!(cs.stream().response_status(), Some(418));

    // On the response side the headers are already sent: the stream is reset instead.
    let mut cs = ChainStream::new(chain, stream());
    assert_eq!(cs.on_response_body(chunk("x"), false).0, Verdict::Close);
}

#[tokio::test]
async fn a_stream_paused_at_the_end_of_its_body_resumes_from_another_callback() {
    let (rt, log) = runtime_with_log();
    let pauser = pool(&rt, "p", "pause_eos", None);
    let chain = Chain::new(vec![pauser.clone(), pool(&rt, "after", "pass", None)]);
    let mut cs = ChainStream::new(chain, stream());
    assert_eq!(cs.on_request_body(chunk("ab"), false).0, Verdict::Continue);
    assert_eq!(
        cs.on_request_body(chunk("c"), true).0,
        Verdict::Paused { filter: 0 }
    );
    assert!(!cs.wait(Duration::from_millis(10)).await);

    // Another callback of the same VM (as a callout response would) resumes the stream.
    {
        let mut guard = pauser.lock(0);
        let (vm, _) = guard.vm().unwrap();
        let ctx = vm.root_context_id() + 1;
        assert_eq!(vm.test_call(&mut None, "resume", &[ctx]).unwrap(), 0);
    }
    assert!(cs.wait(Duration::from_secs(5)).await, "the waker fired");
    let (v, out) = cs.resume();
    assert_eq!((v, &out[..]), (Verdict::Continue, &b"abc"[..]));
    assert_eq!(lines(&log), ["p:2:0", "p:3:1", "after:3:1"]);
    cs.finish();
}

#[tokio::test]
async fn a_paused_stream_whose_vm_fails_is_failed_not_lost() {
    let (rt, _) = runtime_with_log();
    let pauser = pool(&rt, "p", "pause_eos", None);
    let chain = Chain::new(vec![pauser.clone()]);
    let mut cs = ChainStream::new(chain, stream());
    assert_eq!(
        cs.on_request_body(chunk("x"), true).0,
        Verdict::Paused { filter: 0 }
    );
    pauser
        .lock(0)
        .fail(&crate::Fault::new(crate::FaultKind::Trap, "test", "boom"));
    assert!(
        cs.wait(Duration::from_secs(5)).await,
        "the dying VM woke the stream"
    );
    assert_eq!(cs.resume().0, Verdict::Failed { filter: "p".into() });
    assert!(
        cs.stream().request_body().is_some(),
        "the stream came back with its body"
    );
}
