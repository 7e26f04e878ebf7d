//! E-4: more streams held by filters than `max_paused_streams` allows. Past the bound a
//! request a filter pauses gets a fast 503 instead of queueing without limit; requests that
//! no filter holds are served as usual.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::hostile_support::{Wat, sample};
use crate::upstream_support::{
    Scripted, assert_alive, get, get_once, ok_response, read_head, start_proxy,
};

#[tokio::test(flavor = "multi_thread")]
async fn streams_past_the_paused_bound_get_a_fast_503() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let heads = seen.clone();
    let up = Scripted::start(move |_, mut s| {
        let heads = heads.clone();
        async move {
            while let Some(head) = read_head(&mut s).await {
                heads.lock().unwrap().push(head);
                let _ = s.write_all(ok_response("ok").as_bytes()).await;
            }
        }
    })
    .await;
    // Pauses every request in its headers and never resumes it.
    let hold = Wat::new().on("request_headers", "(i32.const 1)");
    let (mut proxy, _dir) = start_proxy(
        &up.endpoint(),
        &[],
        "max_paused_streams: 2\n",
        &[("hold", &hold)],
    );
    let metrics = || crate::reload::metrics(&proxy);

    let addr = proxy.addr;
    let held: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(async move {
                let request = format!("GET /hold/{i} HTTP/1.1\r\nHost: x\r\n\r\n");
                crate::upstream_support::send(addr, request.as_bytes(), Duration::from_secs(20))
                    .await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&metrics().await, "wasmgate_paused_streams") < 2 {
        assert!(Instant::now() < deadline, "{}", metrics().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for i in 0..5 {
        let got = get_once(&proxy, &format!("/hold/over-{i}")).await;
        assert_eq!(got.status(), 503, "{}", got.text());
        assert!(
            got.text().contains("too many requests held by filters"),
            "{}",
            got.text()
        );
        assert!(
            got.elapsed < Duration::from_secs(2),
            "503 after {:?}",
            got.elapsed
        );
    }
    // Requests no filter holds are not affected.
    for _ in 0..3 {
        let got = get_once(&proxy, "/plain").await;
        assert_eq!(got.status(), 200, "{}", got.text());
    }
    let text = metrics().await;
    assert_eq!(sample(&text, "wasmgate_paused_streams"), 2, "{text}");
    assert_eq!(
        sample(&text, "wasmgate_paused_streams_rejected_total"),
        5,
        "{text}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter().all(|h| h.starts_with("GET /plain ")),
        "{seen:?}"
    );
    // Clients that leave give their places back.
    for task in held {
        task.abort();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(&metrics().await, "wasmgate_paused_streams") > 0 {
        assert!(
            Instant::now() < deadline,
            "places still held: {}",
            metrics().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // So a new request is held again rather than refused.
    let got = get(&proxy, "/hold/after", Duration::from_millis(500)).await;
    assert!(got.bytes.is_empty() && !got.closed, "{}", got.text());
    assert_alive(&mut proxy);
}
