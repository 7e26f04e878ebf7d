//! A filter's writes of `:status` through the real proxy: a final status is sent, an
//! informational one (1xx, 101) is refused with BadArgument and the upstream's status stays.

use crate::hostile_support::{Env, FilterSpec, Wat, route};

/// A filter that sets the response's `:status` to the request's `x-status` in
/// `proxy_on_response_headers`, with each host call given `x-call` (replace, add or set
/// pairs), and reports the call's result in `x-result`.
fn status_writer() -> Wat {
    let mut w = Wat::new();
    let want = w.data(b"x-status");
    let call = w.data(b"x-call");
    let status = w.data(b":status");
    let result = w.data(b"x-result");
    // The pairs buffer for set_header_map_pairs: one pair, `:status` and a 3-byte value
    // copied in at 0xC000 + 24 (count, two sizes, ":status\0", then the value).
    w.raw(&format!(
        "(func $status_pairs (param $v i32) (result i32)
           (i32.store (i32.const 0xC000) (i32.const 1))
           (i32.store (i32.const 0xC004) (i32.const 7))
           (i32.store (i32.const 0xC008) (i32.const 3))
           (memory.copy (i32.const 0xC00C) (i32.const {sp}) (i32.const 7))
           (i32.store8 (i32.const 0xC013) (i32.const 0))
           (memory.copy (i32.const 0xC014) (local.get $v) (i32.const 3))
           (i32.store8 (i32.const 0xC017) (i32.const 0))
           (i32.const 0xC000))",
        sp = status.ptr
    ))
    .on(
        "response_headers",
        &format!(
            "(local $v i32) (local $kind i32) (local $r i32)
             (drop (call $get (i32.const 0) {want} (i32.const 0xB000) (i32.const 0xB004)))
             (local.set $v (i32.load (i32.const 0xB000)))
             (drop (call $get (i32.const 0) {call} (i32.const 0xB000) (i32.const 0xB004)))
             (local.set $kind (i32.load8_u (i32.load (i32.const 0xB000))))
             (if (i32.eq (local.get $kind) (i32.const 114)) ;; r
               (then (local.set $r (call $replace (i32.const 2) {status} (local.get $v) (i32.const 3)))))
             (if (i32.eq (local.get $kind) (i32.const 97)) ;; a
               (then (local.set $r (call $add (i32.const 2) {status} (local.get $v) (i32.const 3)))))
             (if (i32.eq (local.get $kind) (i32.const 115)) ;; s
               (then (local.set $r (call $set_pairs (i32.const 2)
                 (call $status_pairs (local.get $v)) (i32.const 24)))))
             (call $rec_reset) (call $rec (local.get $r))
             (call $emit (i32.const 2) {result})
             (i32.const 0)"
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filter_cannot_make_a_response_informational() {
    let filters = [FilterSpec::new("status", &status_writer())];
    let routes = [route("/s/", "capture", &["status"])];
    let mut env = Env::start(1, &filters, &routes).await;
    for call in ["replace", "add", "set"] {
        for (asked, status, result) in [
            ("101", 200, "2"),
            ("100", 200, "2"),
            ("199", 200, "2"),
            ("600", 200, "2"),
            ("418", 418, "0"),
            ("404", 404, "0"),
        ] {
            let path = format!("/s/{call}-{asked}");
            env.count(&path);
            let resp = env
                .http
                .get(env.proxy.url(&path))
                .header("x-status", asked)
                .header("x-call", call)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status, "{call} {asked}");
            let got = resp
                .headers()
                .get("x-result")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            assert_eq!(
                got.as_deref(),
                Some(result),
                "{call} {asked}: the call's status"
            );
        }
    }
    env.assert_healthy().await;
}
