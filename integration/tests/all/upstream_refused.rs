//! C-1: the upstream refuses the connection. The client gets 502 at once; the filters never see
//! a response that did not come (no `proxy_on_response_headers` with a made-up one), and the
//! stream still ends (`proxy_on_log`).

use std::time::Duration;

use wasmgate_integration::proxy::free_port;

use crate::upstream_support::{
    Scripted, assert_alive, get, get_once, ok_response, read_head, recorder, start_proxy,
    wait_logged,
};

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_gives_502_quickly_and_no_response_callbacks() {
    // Nothing listens on a port that was just free: connecting is refused.
    let dead = format!("127.0.0.1:{}", free_port());
    let rec = recorder(false);
    let (mut proxy, _dir) =
        start_proxy(&dead, &[("connect_timeout_ms", 2000)], "", &[("rec", &rec)]);
    for path in ["/plain", "/rec/filtered"] {
        let got = get(&proxy, path, Duration::from_secs(5)).await;
        assert_eq!(got.status(), 502, "{path}: {}", got.text());
        assert!(got.text().contains("502 Bad Gateway"), "{}", got.text());
        assert!(
            got.elapsed < Duration::from_secs(2),
            "{path}: a refusal took {:?}",
            got.elapsed
        );
        assert!(got.closed, "an error reply closes the client connection");
    }
    let lines = wait_logged(&proxy, 1).await;
    assert_eq!(lines, ["log"], "the filter saw only the end of its stream");
    assert_alive(&mut proxy);

    // The same proxy recovers once something listens there.
    let listener = tokio::net::TcpListener::bind(&dead).await.expect("rebind");
    let _up = Scripted::serve(listener, |_, mut s| async move {
        use tokio::io::AsyncWriteExt;
        while read_head(&mut s).await.is_some() {
            let _ = s.write_all(ok_response("back").as_bytes()).await;
        }
    });
    let got = get_once(&proxy, "/plain").await;
    assert_eq!(got.status(), 200, "{}", got.text());
    assert_eq!(got.body(), b"back");
}
