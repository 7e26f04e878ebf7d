//! Hostile filters against the wire (reliability catalogue ):
//! header and request-line injection, framing edits, removed pseudo-headers, header floods,
//! huge reads and writes, callout fan-out and abuse, and non-UTF-8 bytes. The capture upstream
//! records the exact bytes that leave the proxy.

use std::time::{Duration, Instant};

use crate::hostile_support::{
    Env, FilterSpec, RET_LEN, RET_PTR, Str, TOKEN, Wat, route, seen_header, status_lines,
};

/// `(call $rec (call $FN (i32.const MAP) KEY VALUE))` for each of `attempts`.
fn attempts(w: &mut Wat, map: u32, attempts: &[(&str, &[u8], &[u8])]) -> String {
    let mut out = String::new();
    for (call, key, value) in attempts {
        let key = w.data(key);
        let value = w.data(value);
        out.push_str(&format!(
            "(call $rec (call ${call} (i32.const {map}) {key} {value}))\n"
        ));
    }
    out
}

const CRLF_VALUE: &[u8] = b"a\r\nx-injected: 1";

/// CR, LF and NUL in header values (add, replace, set-all; request and response) are
/// refused with BadArgument; neither the upstream nor the client ever sees the injected
/// header, and a refused set-all changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn crlf_and_nul_in_header_values_never_reach_the_wire() {
    let list: [(&str, &[u8], &[u8]); 5] = [
        ("add", b"x-evil", CRLF_VALUE),
        ("add", b"x-evil", b"a\nx-injected: 1"),
        ("add", b"x-evil", b"a\0b"),
        ("add", b"x-evil", b"a\rb"),
        ("replace", b"x-evil", CRLF_VALUE),
    ];
    let mut w = Wat::new();
    let set_all = w.pairs(&[("x-ok", b"1"), ("x-evil", CRLF_VALUE)]);
    let out = w.data(b"x-statuses");
    let request = attempts(&mut w, 0, &list);
    let response = attempts(&mut w, 2, &list);
    let filter = w
        .on(
            "request_headers",
            &format!(
                "(call $rec_reset) {request}
                 (call $rec (call $set_pairs (i32.const 0) {set_all}))
                 (call $emit (i32.const 0) {out}) (i32.const 0)"
            ),
        )
        .on(
            "response_headers",
            &format!(
                "(call $rec_reset) {response}
                 (call $rec (call $set_pairs (i32.const 2) {set_all}))
                 (call $emit (i32.const 2) {out}) (i32.const 0)"
            ),
        );
    let mut env = Env::start(
        2,
        &[FilterSpec::new("inject", &filter)],
        &[route("/h/", "capture", &["inject"])],
    )
    .await;
    let resp = env.get("/h/1").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-statuses").unwrap(),
        "2,2,2,2,2,2",
        "response side"
    );
    assert!(resp.headers().get("x-injected").is_none());
    assert!(resp.headers().get("x-evil").is_none());
    assert!(
        resp.headers().get("x-ok").is_none(),
        "a refused set-all changes nothing"
    );
    assert_eq!(
        seen_header(&env.capture, "/h/1", "x-statuses").as_deref(),
        Some("2,2,2,2,2,2")
    );
    assert!(seen_header(&env.capture, "/h/1", "x-ok").is_none());
    let raw = env.capture.raw(0);
    assert!(
        !raw.windows(10)
            .any(|w| w.eq_ignore_ascii_case(b"x-injected"))
    );
    env.assert_healthy().await;
}

/// CR, LF, spaces and NUL in header names, `:path`, `:method` and `:authority` are
/// refused; the upstream's request line is the client's. A `:path` with bytes over 0x7f is
/// accepted and reaches the upstream as those bytes, with no space or line break.
#[tokio::test(flavor = "multi_thread")]
async fn injection_through_names_and_pseudo_headers_is_refused() {
    let list: [(&str, &[u8], &[u8]); 10] = [
        ("add", b"x-evil\r\nx-injected", b"1"),
        ("add", b"x evil", b"1"),
        ("add", b"x-evil\0", b"1"),
        (
            "replace",
            b":path",
            b"/a HTTP/1.1\r\nHost: evil\r\n\r\nGET /b",
        ),
        ("replace", b":path", b"/a b"),
        ("replace", b":method", b"GE T"),
        ("replace", b":method", b"GET\r\nx-injected: 1"),
        ("replace", b":authority", b"a\r\nx-injected: 1"),
        ("replace", b":authority", b"a b"),
        ("replace", b":scheme", b"javascript"),
    ];
    let mut w = Wat::new();
    let out = w.data(b"x-statuses");
    let body = attempts(&mut w, 0, &list);
    let names = w.on(
        "request_headers",
        &format!("(call $rec_reset) {body} (call $emit (i32.const 0) {out}) (i32.const 0)"),
    );
    let mut w = Wat::new();
    let out = w.data(b"x-statuses");
    let body = attempts(
        &mut w,
        0,
        &[("replace", b":path", b"/raw/caf\xc3\xa9\xff?q=\x80")],
    );
    let raw_path = w.on(
        "request_headers",
        &format!("(call $rec_reset) {body} (call $emit (i32.const 0) {out}) (i32.const 0)"),
    );
    let filters = [
        FilterSpec::new("names", &names),
        FilterSpec::new("rawpath", &raw_path),
    ];
    let routes = [
        route("/n/", "capture", &["names"]),
        route("/r/", "capture", &["rawpath"]),
    ];
    let mut env = Env::start(1, &filters, &routes).await;
    let resp = env.get("/n/1").await.unwrap();
    assert_eq!(resp.status(), 200);
    let req = env.capture.requests().pop().unwrap();
    assert_eq!(req.line, "GET /n/1 HTTP/1.1");
    assert_eq!(req.header("x-statuses"), Some("2,2,2,2,2,2,2,2,2,2"));

    let resp = env.get("/r/1").await.unwrap();
    assert_eq!(resp.status(), 200);
    let req = env.capture.requests().pop().unwrap();
    assert_eq!(req.header("x-statuses"), Some("0"));
    let target = req.line.split(' ').nth(1).unwrap().to_string();
    env.allow(&target);
    let raw = env.capture.raw(req.conn);
    let line_end = raw.windows(2).rposition(|w| w == b"\r\n").unwrap();
    let lines: Vec<&[u8]> = raw[..line_end].split(|&b| b == b'\n').collect();
    let sent = lines
        .iter()
        .find(|l| l.starts_with(b"GET /raw/"))
        .expect("the rewritten request line");
    eprintln!(
        "MEASURE A-11: a :path with bytes over 0x7f reaches the upstream as {:?}",
        String::from_utf8_lossy(sent)
    );
    assert_eq!(sent.iter().filter(|&&b| b == b' ').count(), 2, "{sent:?}");
    env.assert_healthy().await;
}

/// a filter's edits of framing and hop-by-hop headers (a wrong content-length,
/// transfer-encoding, connection, upgrade, te, keep-alive, proxy-connection) never reach the
/// wire: the upstream gets one consistent message, and a second request on the same upstream
/// connection is parsed right; the client gets a response framed by the proxy. A filter that
/// removes content-length gets its body re-framed (chunked), also on a reused connection.
#[tokio::test(flavor = "multi_thread")]
async fn framing_and_hop_by_hop_edits_never_desynchronise_a_connection() {
    let edits: [(&str, &[u8], &[u8]); 7] = [
        ("replace", b"content-length", b"5"),
        ("add", b"transfer-encoding", b"chunked"),
        ("replace", b"connection", b"keep-alive, close"),
        ("add", b"upgrade", b"websocket"),
        ("add", b"te", b"trailers"),
        ("add", b"keep-alive", b"timeout=1"),
        ("add", b"proxy-connection", b"close"),
    ];
    let mut w = Wat::new();
    let request = attempts(&mut w, 0, &edits);
    let response = attempts(&mut w, 2, &edits);
    let framing = w
        .on("request_headers", &format!("{request} (i32.const 0)"))
        .on("response_headers", &format!("{response} (i32.const 0)"));
    let mut w = Wat::new();
    let cl = w.data(b"content-length");
    let dropcl = w.on(
        "request_headers",
        &format!("(drop (call $remove (i32.const 0) {cl})) (i32.const 0)"),
    );
    let filters = [
        FilterSpec::new("framing", &framing),
        FilterSpec::new("dropcl", &dropcl),
    ];
    let routes = [
        route("/f/", "capture", &["framing"]),
        route("/d/", "capture", &["dropcl"]),
    ];
    // One worker, so both requests of a route share its upstream connection.
    let mut env = Env::start(1, &filters, &routes).await;
    let body = b"0123456789".to_vec();
    for path in ["/f/1", "/f/2", "/d/1", "/d/2"] {
        let resp = env.post(path, body.clone()).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers().get("content-length").unwrap(), "2");
        assert!(resp.headers().get("transfer-encoding").is_none());
        assert!(resp.headers().get("upgrade").is_none());
        assert_eq!(resp.text().await.unwrap(), "ok");
    }
    let requests = env.capture.requests();
    assert_eq!(requests.len(), 4);
    for r in &requests {
        assert_eq!(r.body, body, "{}", r.line);
        for name in ["upgrade", "te", "keep-alive", "proxy-connection"] {
            assert!(r.header(name).is_none(), "{name} in {:?}", r.headers);
        }
        assert!(!r.header("connection").unwrap_or("").contains("close"));
        if r.line.contains("/f/") {
            assert_eq!(r.header("content-length"), Some("10"));
            assert!(!r.chunked);
        } else {
            assert!(r.chunked && r.header("content-length").is_none());
        }
    }
    assert_eq!(
        requests[0].conn, requests[1].conn,
        "the connection was reused"
    );
    assert_eq!(
        requests[2].conn, requests[3].conn,
        "the connection was reused"
    );
    // The client's view through a raw connection: one response, framed by the proxy.
    let raw = env
        .raw(
            "/f/3",
            b"GET /f/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(status_lines(&raw), 1);
    assert!(
        raw.ends_with(b"\r\n\r\nok"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    env.assert_healthy().await;
}

/// pseudo-headers cannot be removed (BadArgument); a set-all without them keeps them;
/// the request still goes out with its request line and Host, and the response keeps its
/// status.
#[tokio::test(flavor = "multi_thread")]
async fn pseudo_headers_cannot_be_removed() {
    let mut w = Wat::new();
    let out = w.data(b"x-statuses");
    let only = w.pairs(&[("x-only", b"1")]);
    let mut removals = String::new();
    for name in [":path", ":method", ":authority", ":scheme"] {
        let name = w.data(name.as_bytes());
        removals.push_str(&format!(
            "(call $rec (call $remove (i32.const 0) {name}))\n"
        ));
    }
    let status = w.data(b":status");
    let filter = w
        .on(
            "request_headers",
            &format!(
                "(call $rec_reset) {removals}
                 (call $rec (call $set_pairs (i32.const 0) {only}))
                 (call $emit (i32.const 0) {out}) (i32.const 0)"
            ),
        )
        .on(
            "response_headers",
            &format!(
                "(call $rec_reset) (call $rec (call $remove (i32.const 2) {status}))
                 (call $emit (i32.const 2) {out}) (i32.const 0)"
            ),
        );
    let mut env = Env::start(
        2,
        &[FilterSpec::new("pseudo", &filter)],
        &[route("/p/", "capture", &["pseudo"])],
    )
    .await;
    let resp = env.get_with("/p/1", "x-gone", "1").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("x-statuses").unwrap(), "2");
    let req = env.capture.requests().pop().unwrap();
    assert_eq!(req.line, "GET /p/1 HTTP/1.1");
    assert!(req.header("host").is_some());
    assert_eq!(req.header("x-only"), Some("1"));
    assert_eq!(req.header("x-statuses"), Some("2,2,2,2,0"));
    assert!(req.header("x-gone").is_none());
    env.assert_healthy().await;
}

/// A filter adding `count` values of `name` (each `value_len` bytes of `a`) one at a time;
/// it logs `<tag>=OK_COUNT,FIRST_REFUSAL_STATUS`.
fn flooder(tag: &str, count: u32, value_len: u32) -> Wat {
    let mut w = Wat::new().pages(20);
    let name = w.data(b"x-flood");
    let tag = w.data(tag.as_bytes());
    w.on(
        "request_headers",
        &format!(
            "(local $i i32) (local $ok i32) (local $status i32) (local $refused i32)
             (memory.fill (i32.const 0x40000) (i32.const 97) (i32.const {value_len}))
             (loop $more
               (local.set $status (call $add (i32.const 0) {name} (i32.const 0x40000) (i32.const {value_len})))
               (if (i32.eqz (local.get $status))
                 (then (local.set $ok (i32.add (local.get $ok) (i32.const 1))))
                 (else (if (i32.eqz (local.get $refused)) (then (local.set $refused (local.get $status))))))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $more (i32.lt_u (local.get $i) (i32.const {count}))))
             (call $rec_reset) (call $rec (local.get $ok)) (call $rec (local.get $refused))
             (call $emit_log {tag})
             (i32.const 0)"
        ),
    )
}

/// 10,000 headers added one at a time stop at the map's entry cap (1024), 60 KiB values
/// stop at its byte cap (1 MiB), and a 1 MiB value is refused outright (64 KiB per header);
/// the upstream never gets more than the caps, and memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn header_floods_stop_at_the_caps() {
    let filters = [
        FilterSpec::new("many", &flooder("many", 10_000, 1)),
        FilterSpec::new("fat", &flooder("fat", 40, 60 << 10)),
        FilterSpec::new("huge", &flooder("huge", 1, 1 << 20)),
    ];
    let routes = [
        route("/many/", "capture", &["many"]),
        route("/fat/", "capture", &["fat"]),
        route("/huge/", "capture", &["huge"]),
    ];
    let mut env = Env::start(2, &filters, &routes).await;
    assert_eq!(env.get("/benign/warm").await.unwrap().status(), 200);
    let baseline = env.proxy.rss_kib();
    for path in ["/many/1", "/fat/1", "/huge/1"] {
        let resp = env.get(path).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let log = env.proxy.log();
    let value = |tag: &str| -> (u64, u64) {
        let line = log
            .lines()
            .find_map(|l| l.split_once(&format!("{tag}=")).map(|(_, v)| v.to_string()))
            .unwrap_or_else(|| panic!("{tag} not logged:\n{log}"));
        let mut parts = line.split(',').map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .unwrap()
        });
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let (many, many_status) = value("many");
    let (fat, fat_status) = value("fat");
    let (huge, huge_status) = value("huge");
    eprintln!(
        "MEASURE A-14: one-at-a-time adds accepted: {many} of 10000 small, {fat} of 40 x 60 KiB, {huge} of one 1 MiB"
    );
    assert!((1000..1024).contains(&many), "{many}");
    assert_eq!(many_status, 2);
    assert!((10..=17).contains(&fat), "{fat}");
    assert_eq!(fat_status, 2);
    assert_eq!((huge, huge_status), (0, 2));
    let requests = env.capture.requests();
    for r in &requests {
        let bytes: usize = r.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(r.headers.len() <= 1024 + 8, "{} headers", r.headers.len());
        assert!(bytes <= (1 << 20) + 4096, "{bytes} bytes of headers");
    }
    env.assert_rss_within(baseline, 64);
    env.assert_healthy().await;
}

/// a read of `u32::MAX` bytes of the body is clamped to the body; a 2 MiB body
/// write and a 2 MiB local reply are refused (BadArgument, over the 1 MiB caps); a same-size
/// write goes through; a read of every header of a request with 200 headers works.
#[tokio::test(flavor = "multi_thread")]
async fn huge_reads_are_clamped_and_huge_writes_refused() {
    let mut w = Wat::new().pages(40);
    let tag = w.data(b"body-ops");
    let pairs_tag = w.data(b"pairs-read");
    let small = w.data(b"abcdefghij");
    let filter = w
        .on(
            "request_headers",
            &format!(
                "(call $rec_reset)
                 (call $rec (call $get_pairs (i32.const 0) (i32.const {RET_PTR}) (i32.const {RET_LEN})))
                 (call $rec (i32.gt_u (i32.load (i32.const {RET_LEN})) (i32.const 2000)))
                 (call $emit_log {pairs_tag}) (i32.const 0)"
            ),
        )
        .on(
            "request_body",
            &format!(
                "(if (i32.eqz (local.get $eos)) (then (return (i32.const 1))))
                 (call $rec_reset)
                 (call $rec (call $get_buffer (i32.const 0) (i32.const 0) (i32.const 0xFFFFFFFF)
                   (i32.const {RET_PTR}) (i32.const {RET_LEN})))
                 (call $rec (i32.load (i32.const {RET_LEN})))
                 (call $rec (call $set_buffer (i32.const 0) (i32.const 0) (i32.const 0xFFFFFFFF)
                   (i32.const 0x10000) (i32.const 2097152)))
                 (call $rec (call $local (i32.const 200) (i32.const 0) (i32.const 0)
                   (i32.const 0x10000) (i32.const 2097152) (i32.const 0) (i32.const 0) (i32.const -1)))
                 (call $rec (call $set_buffer (i32.const 0) (i32.const 0) (i32.const 0xFFFFFFFF) {small}))
                 (call $emit_log {tag})
                 (i32.const 0)"
            ),
        );
    let mut env = Env::start(
        2,
        &[FilterSpec::new("sizes", &filter)],
        &[route("/s/", "capture", &["sizes"])],
    )
    .await;
    env.count("/s/1");
    let mut req = env.http.post(env.proxy.url("/s/1")).body("0123456789");
    for i in 0..200 {
        req = req.header(format!("x-h{i}"), "0123456789");
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(env.wait_log("body-ops="));
    let log = env.proxy.log();
    assert!(log.contains("pairs-read=0,1"), "{log}");
    assert!(log.contains("body-ops=0,10,2,2,0"), "{log}");
    let req = env.capture.requests().pop().unwrap();
    assert_eq!(req.body, b"abcdefghij");
    env.assert_healthy().await;
}

/// `proxy_http_call` to `upstream` with `headers`; records its status.
fn call(w: &mut Wat, upstream: &str, headers: &[(&str, &[u8])], timeout_ms: u32) -> String {
    let upstream: Str = w.data(upstream.as_bytes());
    let headers = w.pairs(headers);
    format!(
        "(call $rec (call $http_call {upstream} {headers} (i32.const 0) (i32.const 0)
           (i32.const 0) (i32.const 0) (i32.const {timeout_ms}) (i32.const {TOKEN})))\n"
    )
}

/// 2,000 callouts from one callback: the first 256 (the per-VM in-flight cap) are
/// accepted, the rest get InternalFailure; the request itself completes; the callouts are
/// cancelled with its context, and the proxy's file descriptors come back.
#[tokio::test(flavor = "multi_thread")]
async fn callout_fan_out_stops_at_the_in_flight_cap() {
    let mut w = Wat::new();
    let upstream = w.data(b"origin");
    let headers = w.pairs(&[
        (":method", b"GET"),
        (":path", b"/slow/3000"),
        (":authority", b"origin"),
    ]);
    let out = w.data(b"x-fanout");
    let filter = w.on(
        "request_headers",
        &format!(
            "(local $i i32) (local $ok i32) (local $refused i32) (local $status i32) (local $last i32)
             (loop $more
               (local.set $status (call $http_call {upstream} {headers} (i32.const 0) (i32.const 0)
                 (i32.const 0) (i32.const 0) (i32.const 5000) (i32.const {TOKEN})))
               (if (i32.eqz (local.get $status))
                 (then (local.set $ok (i32.add (local.get $ok) (i32.const 1))))
                 (else (local.set $refused (i32.add (local.get $refused) (i32.const 1)))
                       (local.set $last (local.get $status))))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $more (i32.lt_u (local.get $i) (i32.const 2000))))
             (call $rec_reset) (call $rec (local.get $ok)) (call $rec (local.get $refused))
             (call $rec (local.get $last))
             (call $emit (i32.const 0) {out})
             (i32.const 0)"
        ),
    );
    let mut env = Env::start(
        1,
        &[FilterSpec::new("fanout", &filter)],
        &[route("/fan/", "capture", &["fanout"])],
    )
    .await;
    assert_eq!(env.get("/benign/warm").await.unwrap().status(), 200);
    let fds_before = env.proxy.open_fds();
    let resp = env.get("/fan/1").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        seen_header(&env.capture, "/fan/1", "x-fanout").as_deref(),
        Some("256,1744,10")
    );
    let fds_peak = env.proxy.open_fds();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = fds_peak;
    while fds > fds_before + 16 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds = env.proxy.open_fds();
    }
    eprintln!(
        "MEASURE A-19: open fds before {fds_before}, right after the request {fds_peak}, settled {fds}"
    );
    assert!(fds <= fds_before + 16, "{fds} fds, {fds_before} before");
    env.assert_healthy().await;
}

/// callouts to an upstream that is not configured (SSRF), or with CR/LF in a header or
/// in `:path`, a bad header name, or no `:authority`, are refused (BadArgument) and send
/// nothing: the capture upstream, which the filter could name, receives no byte.
#[tokio::test(flavor = "multi_thread")]
async fn callout_abuse_is_refused_and_sends_nothing() {
    let mut w = Wat::new();
    let out = w.data(b"x-statuses");
    let good: [(&str, &[u8]); 3] = [(":method", b"GET"), (":path", b"/x"), (":authority", b"c")];
    let mut calls = String::new();
    calls += &call(&mut w, "internal-admin", &good, 1000);
    calls += &call(&mut w, "127.0.0.1:1", &good, 1000);
    calls += &call(
        &mut w,
        "capture",
        &[
            (":method", b"GET"),
            (":path", b"/x"),
            (":authority", b"c"),
            ("x-evil", CRLF_VALUE),
        ],
        1000,
    );
    calls += &call(
        &mut w,
        "capture",
        &[
            (":method", b"GET"),
            (":path", b"/x HTTP/1.1\r\nHost: evil\r\n\r\nGET /y"),
            (":authority", b"c"),
        ],
        1000,
    );
    calls += &call(
        &mut w,
        "capture",
        &[
            (":method", b"GET"),
            (":path", b"/x"),
            (":authority", b"c"),
            ("x evil", b"1"),
        ],
        1000,
    );
    calls += &call(
        &mut w,
        "capture",
        &[(":method", b"GET"), (":path", b"/x")],
        1000,
    );
    // A 0 ms timeout means "no timeout of the filter's own": accepted (to the origin).
    calls += &call(
        &mut w,
        "origin",
        &[
            (":method", b"GET"),
            (":path", b"/zero-timeout"),
            (":authority", b"o"),
        ],
        0,
    );
    let filter = w.on(
        "request_headers",
        &format!("(call $rec_reset) {calls} (call $emit (i32.const 0) {out}) (i32.const 0)"),
    );
    let mut env = Env::start(
        2,
        &[FilterSpec::new("ssrf", &filter)],
        &[route("/c/", "origin", &["ssrf"])],
    )
    .await;
    let resp = env.get("/c/1").await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = env.origin.received();
    let main = seen.iter().find(|r| r.path == "/c/1").expect("the request");
    assert_eq!(main.header("x-statuses"), Some("2,2,2,2,2,2,0"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        env.capture.requests().is_empty(),
        "{:?}",
        env.capture.requests()
    );
    assert!(
        env.capture.raw(0).is_empty(),
        "no connection to the capture upstream"
    );
    env.assert_healthy().await;
}

/// bytes that are not UTF-8, in a header value and in the path, read and echoed by a
/// filter: no host panic. Pingora refuses a request line that is not UTF-8 (400, before any
/// filter runs); a header value with bytes over 0x7f reaches the filter as those bytes.
#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_bytes_echoed_by_a_filter_do_not_panic_the_host() {
    let mut w = Wat::new();
    let raw_name = w.data(b"x-raw");
    let echo = w.data(b"x-echo");
    let path = w.data(b":path");
    let path_echo = w.data(b"x-path");
    let copy = |key: Str, to: Str| {
        format!(
            "(if (i32.eqz (call $get (i32.const 0) {key} (i32.const {RET_PTR}) (i32.const {RET_LEN})))
               (then (drop (call $add (i32.const 2) {to}
                 (i32.load (i32.const {RET_PTR})) (i32.load (i32.const {RET_LEN}))))))"
        )
    };
    let body = format!(
        "{} {} (i32.const 0)",
        copy(raw_name, echo),
        copy(path, path_echo)
    );
    let filter = w.on("response_headers", &body);
    let mut env = Env::start(
        2,
        &[FilterSpec::new("echo", &filter)],
        &[route("/e/", "capture", &["echo"])],
    )
    .await;

    // A header value with bytes over 0x7f: the filter reads and echoes them as they are.
    let request =
        b"GET /e/1 HTTP/1.1\r\nHost: x\r\nx-raw: \xff\xfe\x80abc\r\nConnection: close\r\n\r\n";
    let raw = env.raw("/e/1", request, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{text}");
    assert!(
        raw.windows(14).any(|w| w == b"x-echo: \xff\xfe\x80abc"),
        "{text}"
    );
    assert!(raw.windows(14).any(|w| w == b"x-path: /e/1\r\n"), "{text}");

    // A path that is not UTF-8: Pingora answers 400 before any filter (and before the
    // proxy's request accounting) runs.
    let request = b"GET /e/caf\xc3\xa9\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let raw =
        wasmgate_integration::client::raw(env.proxy.addr, request, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    eprintln!(
        "MEASURE A-23: a request line that is not UTF-8 gets {:?}",
        text.lines().next()
    );
    if raw.starts_with(b"HTTP/1.1 200") {
        env.count(&String::from_utf8_lossy(b"/e/caf\xc3\xa9\xff"));
        assert!(raw.windows(2).any(|w| w == b"\xc3\xa9"), "{text}");
    } else {
        assert!(raw.starts_with(b"HTTP/1.1 400"), "{text}");
    }
    env.assert_healthy().await;
}
