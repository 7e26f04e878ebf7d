//! Loop isolation through the real proxy (issue 14): a filter whose callback runs until its
//! deadline must not stall requests on other routes, whatever the number of workers, and a
//! client that leaves while its request is inside a long guest call leaves the VM usable.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::hostile_support::{Env, FilterSpec, Wat, route, sample};

/// The looping filter's callback deadline in these tests.
const DEADLINE: Duration = Duration::from_secs(2);
/// What a benign request may take while loops run: half the deadline, a wide margin over the
/// few milliseconds it takes alone, and far below what waiting for a loop would cost.
const BENIGN_LIMIT: Duration = Duration::from_secs(1);

/// A benign filter: it adds a request header.
fn calm() -> Wat {
    let mut w = Wat::new();
    let key = w.data(b"x-calm");
    let value = w.data(b"1");
    w.on(
        "request_headers",
        &format!("(drop (call $add (i32.const 0) {key} {value})) (i32.const 0)"),
    )
}

/// A filter that loops in `proxy_on_request_headers` until its deadline interrupts it.
fn looper() -> Wat {
    Wat::new().on(
        "request_headers",
        "(loop $forever (br $forever)) (i32.const 0)",
    )
}

fn deadline_limits() -> String {
    format!("{{callback_deadline_ms: {}}}", DEADLINE.as_millis())
}

/// One request on a new connection: its status (0 for a transport error) and duration.
async fn timed(url: String) -> (u16, Duration) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let started = Instant::now();
    let status = http
        .get(url)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16());
    (status, started.elapsed())
}

/// While `threads + 1` requests loop in one filter until its 2 s deadline (more loops than
/// workers, so with the old model every worker was held), benign requests on another route
/// are answered well within 1 s; the loops are still cut at the deadline (503).
async fn benign_requests_stay_fast_while_loops_run(threads: usize) {
    let filters = [
        FilterSpec::new("calm", &calm()),
        FilterSpec::new("loop", &looper()).limits(&deadline_limits()),
    ];
    let routes = [
        route("/calm/", "capture", &["calm"]),
        route("/loop/", "capture", &["loop"]),
    ];
    let mut env = Env::start(threads, &filters, &routes).await;
    env.count("/calm/warm");
    let (status, _) = timed(env.proxy.url("/calm/warm")).await;
    assert_eq!(status, 200);

    let started = Instant::now();
    let mut loops = Vec::new();
    for i in 0..=threads {
        let path = format!("/loop/{i}");
        env.count(&path);
        loops.push(tokio::spawn(timed(env.proxy.url(&path))));
    }
    // Let the loops get into their callbacks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut benign = Vec::new();
    for i in 0..5 {
        let path = format!("/calm/{i}");
        env.count(&path);
        let (status, took) = timed(env.proxy.url(&path)).await;
        assert_eq!(status, 200, "benign request {i} while loops ran");
        benign.push(took);
    }
    let benign_done = started.elapsed();
    let mut looped = Vec::new();
    for l in loops {
        let (status, took) = l.await.unwrap();
        if status != 503 {
            let log = env.proxy.log();
            let tail = &log[log.len().saturating_sub(6000)..];
            panic!("a loop answered {status} after {took:?}, not 503 at its deadline:\n{tail}");
        }
        looped.push(took);
    }
    eprintln!(
        "MEASURE isolation (threads {threads}): benign {benign:?} (all done {benign_done:?} \
         after the loops started); loops answered after {looped:?}"
    );
    for took in &benign {
        assert!(
            *took < BENIGN_LIMIT,
            "a benign request took {took:?} while a filter looped (threads {threads}): {benign:?}"
        );
    }
    // The benign requests were answered while the first loops still ran.
    assert!(
        benign_done < DEADLINE,
        "benign requests done after {benign_done:?}"
    );
    let failures = sample(
        &env.metrics().await,
        "wasmgate_filter_failures_total{filter=\"loop\",kind=\"deadline\",policy=\"closed\"}",
    );
    assert_eq!(failures, threads as u64 + 1, "every loop hit its deadline");
    env.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_filter_does_not_stall_other_routes_on_one_worker() {
    benign_requests_stay_fast_while_loops_run(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_filter_does_not_stall_other_routes_on_two_workers() {
    benign_requests_stay_fast_while_loops_run(2).await;
}

/// A filter that, when the request has `x-linger`, busy-waits 800 ms in
/// `proxy_on_request_headers` before counting the request; every response carries the count
/// (`x-count`), which lives in the VM's memory.
fn lingerer() -> Wat {
    let mut w = Wat::new();
    let linger = w.data(b"x-linger");
    let count = w.data(b"x-count");
    w.raw("(global $served (mut i32) (i32.const 0))")
        .on(
            "request_headers",
            &format!(
                "(local $start i64)
                 (if (i32.eqz (call $get (i32.const 0) {linger} (i32.const 0xB000) (i32.const 0xB004)))
                   (then
                     (drop (call $now (i32.const 0xB010)))
                     (local.set $start (i64.load (i32.const 0xB010)))
                     (loop $wait
                       (drop (call $now (i32.const 0xB010)))
                       (br_if $wait (i64.lt_u
                         (i64.sub (i64.load (i32.const 0xB010)) (local.get $start))
                         (i64.const 800000000))))))
                 (global.set $served (i32.add (global.get $served) (i32.const 1)))
                 (i32.const 0)"
            ),
        )
        .on(
            "response_headers",
            &format!(
                "(call $rec_reset) (call $rec (global.get $served))
                 (call $emit (i32.const 2) {count})
                 (i32.const 0)"
            ),
        )
}

/// A client that leaves while its request is inside an 800 ms guest call: the call runs to
/// its end in the same VM (the next request sees the count it left), nothing faults, and the
/// VM serves the next request normally.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_leaves_during_a_long_call_leaves_the_vm_usable() {
    let filters = [FilterSpec::new("linger", &lingerer()).limits(&deadline_limits())];
    let routes = [route("/linger/", "capture", &["linger"])];
    let mut env = Env::start(1, &filters, &routes).await;

    env.count("/linger/gone");
    let mut stream = tokio::net::TcpStream::connect(env.proxy.addr)
        .await
        .unwrap();
    stream
        .write_all(b"GET /linger/gone HTTP/1.1\r\nHost: x\r\nx-linger: 1\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    // Past the end of the long call.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let resp = env.get("/linger/next").await.unwrap();
    assert_eq!(resp.status(), 200);
    let count = resp
        .headers()
        .get("x-count")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        count.as_deref(),
        Some("2"),
        "the next request runs in the same VM, after the first call completed"
    );
    let metrics = env.metrics().await;
    for kind in ["deadline", "trap"] {
        let series = format!(
            "wasmgate_filter_failures_total{{filter=\"linger\",kind=\"{kind}\",policy=\"closed\"}}"
        );
        assert_eq!(sample(&metrics, &series), 0, "{series}");
    }
    env.assert_healthy().await;
}
