//! C-7: an upstream 5xx is a response like any other: it reaches the client and the filters
//! see it. A `101 Switching Protocols` the client never asked for gets 502: no tunnel opens,
//! no byte after it reaches the client, and no filter sees the 101.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::upstream_support::{
    Scripted, assert_alive, get_once, read_head, recorder, saw_body_end, start_proxy, wait_logged,
};

#[tokio::test(flavor = "multi_thread")]
async fn upstream_5xx_pass_through_to_the_client_and_the_filters() {
    let up = Scripted::start(|_, mut s| async move {
        while let Some(head) = read_head(&mut s).await {
            let code = head
                .split(' ')
                .nth(1)
                .and_then(|t| t.rsplit('/').next())
                .unwrap_or("500")
                .to_string();
            let body = format!("upstream says {code}");
            let wire = format!(
                "HTTP/1.1 {code} Whatever\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(wire.as_bytes()).await;
        }
    })
    .await;
    let rec = recorder(false);
    let (mut proxy, _dir) = start_proxy(&up.endpoint(), &[], "", &[("rec", &rec)]);
    let codes = [500u16, 502, 503, 504, 599];
    for code in codes {
        for prefix in ["", "/rec"] {
            let path = format!("{prefix}/{code}");
            let got = get_once(&proxy, &path).await;
            assert_eq!(got.status(), code, "{path}: {}", got.text());
            assert_eq!(
                got.body(),
                format!("upstream says {code}").as_bytes(),
                "{path}"
            );
        }
    }
    let lines = wait_logged(&proxy, codes.len()).await;
    let heads: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("rh="))
        .cloned()
        .collect();
    let expected: Vec<_> = codes.iter().map(|c| format!("rh={c}")).collect();
    assert_eq!(heads, expected, "{lines:?}");
    assert!(
        saw_body_end(&lines),
        "the filter saw the bodies end: {lines:?}"
    );
    assert_alive(&mut proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unrequested_101_gives_502() {
    let up = Scripted::start(|_, mut s| async move {
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        let wire: &[u8] = if head.contains("/bare") {
            b"HTTP/1.1 101 Switching Protocols\r\n\r\ntunnel bytes"
        } else {
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\ntunnel bytes"
        };
        let _ = s.write_all(wire).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    })
    .await;
    let rec = recorder(false);
    let (mut proxy, _dir) = start_proxy(&up.endpoint(), &[], "", &[("rec", &rec)]);
    for path in ["/upgrade", "/bare", "/rec/upgrade", "/rec/bare"] {
        let got = get_once(&proxy, path).await;
        assert_eq!(got.status(), 502, "{path}: {}", got.text());
        assert!(!got.text().contains("tunnel"), "{path}: {}", got.text());
        assert!(
            got.elapsed < Duration::from_secs(3),
            "{path}: {:?}",
            got.elapsed
        );
    }
    let lines = wait_logged(&proxy, 2).await;
    assert_eq!(lines, ["log", "log"], "no response callback for the 101");
    assert_alive(&mut proxy);
}
