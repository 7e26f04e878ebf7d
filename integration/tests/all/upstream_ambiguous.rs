//! C-6: ambiguous upstream framing (response smuggling): conflicting or invalid
//! content-length, content-length with transfer-encoding, bytes after the body (at once or a
//! little later). Each gets 502 or a response that does not include the extra bytes, and the
//! extra bytes never reach the next client, whose request gets its own answer.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::upstream_support::{
    Scripted, assert_alive, get_once, ok_response, read_head, recorder, start_proxy,
};

/// A whole second response hidden after the first.
const SMUGGLED: &str = "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsmuggle";

/// What the client of the ambiguous response may get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    BadGateway,
    /// 200 with exactly this body.
    Body(&'static str),
    /// 502, or a 200 whose body is the rest of the connection (a close-delimited body holds
    /// the extra bytes as its own, which is what the upstream said).
    CloseDelimited,
}

/// (name, the upstream's head and body, bytes sent 100 ms later, expected).
const CASES: [(&str, &str, &str, Expect); 10] = [
    (
        "duplicate-cl",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 45\r\n\r\nok",
        "",
        Expect::BadGateway,
    ),
    (
        "cl-list",
        "HTTP/1.1 200 OK\r\ncontent-length: 2, 45\r\n\r\nok",
        "",
        Expect::BadGateway,
    ),
    (
        "cl-then-te",
        "HTTP/1.1 200 OK\r\ncontent-length: 45\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "",
        Expect::Body("ok"),
    ),
    (
        "te-then-cl",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 45\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "",
        Expect::Body("ok"),
    ),
    (
        "cl-not-a-number",
        "HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\nok",
        "",
        Expect::BadGateway,
    ),
    (
        "cl-negative",
        "HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok",
        "",
        Expect::BadGateway,
    ),
    (
        "cl-plus",
        "HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
        "",
        Expect::BadGateway,
    ),
    (
        "extra-bytes",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        "",
        Expect::Body("ok"),
    ),
    (
        "extra-bytes-later",
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        SMUGGLED,
        Expect::Body("ok"),
    ),
    (
        "te-not-chunked",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ncontent-length: 2\r\n\r\nok",
        "",
        Expect::CloseDelimited,
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_responses_never_reach_the_next_client() {
    // Every connection serves requests until the proxy closes it: `/next` gets `fresh`, a case
    // gets its bytes, then the smuggled response (at once, or 100 ms later for the `later`
    // case). A proxy that reused such a connection would read the smuggled response as the
    // answer to the next request.
    let up = Scripted::start(|_, mut s| async move {
        while let Some(head) = read_head(&mut s).await {
            let target = head.split(' ').nth(1).unwrap_or("").to_string();
            let name = target.rsplit('/').next().unwrap_or("");
            let Some(&(_, wire, later, _)) = CASES.iter().find(|c| c.0 == name) else {
                let _ = s.write_all(ok_response("fresh").as_bytes()).await;
                continue;
            };
            if later.is_empty() {
                let _ = s.write_all(format!("{wire}{SMUGGLED}").as_bytes()).await;
            } else {
                let _ = s.write_all(wire.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = s.write_all(later.as_bytes()).await;
            }
        }
    })
    .await;
    let rec = recorder(false);
    let (mut proxy, _dir) = start_proxy(
        &up.endpoint(),
        &[("read_timeout_ms", 1000)],
        "",
        &[("rec", &rec)],
    );
    for (name, _, later, expect) in CASES {
        for prefix in ["", "/rec"] {
            let path = format!("{prefix}/{name}");
            let got = get_once(&proxy, &path).await;
            let text = got.text();
            match expect {
                Expect::BadGateway => assert_eq!(got.status(), 502, "{path}: {text}"),
                Expect::Body(body) => {
                    assert_eq!(got.status(), 200, "{path}: {text}");
                    let decoded = got.decoded_body();
                    assert_eq!(decoded.as_deref(), Some(body.as_bytes()), "{path}: {text}");
                }
                Expect::CloseDelimited => {
                    assert!(matches!(got.status(), 200 | 502), "{path}: {text}");
                }
            }
            if expect != Expect::CloseDelimited {
                assert!(!text.contains("smuggle"), "{path}: {text}");
            }
            if !later.is_empty() {
                // The late bytes are on the connection by now.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            // The next clients: their own answers.
            for _ in 0..2 {
                let next = get_once(&proxy, "/next").await;
                assert_eq!(next.status(), 200, "after {path}: {}", next.text());
                assert_eq!(next.body(), b"fresh", "after {path}: {}", next.text());
            }
        }
    }
    assert_alive(&mut proxy);
}
