//! Bad client framing and header syntax (reliability catalogue B-1 to B-6, B-9, B-10): each
//! case goes to its own capture upstream, whose exact bytes are compared; a request smuggled
//! in a body (`/smuggled`) must never reach any upstream.

use std::time::Duration;

use crate::client_support::{ClientEnv, exchange, has_header, statuses};

/// What a case must lead to.
#[derive(Debug)]
enum Expect {
    /// Refused with this status before a byte went upstream; the connection closes.
    Refused(u16),
    /// One `200`, and exactly these bytes at the upstream (`{p}` is the case's path); with
    /// `close`, keep-alive is off (`Connection: close`).
    Forwarded(&'static str, bool),
    /// A bad body after a good header: the header may have gone upstream, but the client gets
    /// `400` or a dropped connection, and the upstream never gets a whole request.
    BodyRefused,
}

use Expect::{BodyRefused, Forwarded, Refused};

/// `(catalogue id and variant, request with `{p}` for the path, expectation)`.
const CASES: &[(&str, &str, Expect)] = &[
    // B-1: CL and TE together: chunked wins, CL goes, keep-alive off; what follows the chunked
    // body is never parsed.
    (
        "B-1 CL.TE",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        Forwarded(
            "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
        ),
    ),
    (
        "B-1 TE.CL",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        Forwarded(
            "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
        ),
    ),
    // B-2: duplicate Content-Length, equal or not, in two fields or one list.
    (
        "B-2 equal",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        Refused(400),
    ),
    (
        "B-2 different",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        Refused(400),
    ),
    (
        "B-2 list",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
        Refused(400),
    ),
    // B-3: Content-Length values that are not plain decimal.
    (
        "B-3 +5",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello",
        Refused(400),
    ),
    (
        "B-3 0x10",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 0x10\r\n\r\nhellohellohello!",
        Refused(400),
    ),
    (
        "B-3 -1",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\nhello",
        Refused(400),
    ),
    (
        "B-3 5 5",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 5 5\r\n\r\nhello",
        Refused(400),
    ),
    (
        "B-3 huge",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\nhello",
        Refused(400),
    ),
    (
        "B-3 empty",
        "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Length: \r\n\r\nhello",
        Refused(400),
    ),
    // B-4: Transfer-Encoding obfuscation.
    (
        "B-4 chunked, identity",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "B-4 identity",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
        Refused(400),
    ),
    (
        "B-4 xchunked",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "B-4 trailing space",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked \r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Forwarded(
            "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
    ),
    (
        "B-4 space before colon",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "B-4 leading tab",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Forwarded(
            "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
    ),
    (
        "B-4 split over two fields",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Refused(400),
    ),
    (
        "B-4 obs-fold",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Refused(400),
    ),
    // B-5: HTTP/1.0 has no chunked coding.
    (
        "B-5 HTTP/1.0 + TE",
        "POST {p} HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        Refused(400),
    ),
    // B-6: an HTTP/1.0 body without a length is no body; the bytes after are not forwarded.
    (
        "B-6 HTTP/1.0 POST without CL",
        "POST {p} HTTP/1.0\r\nHost: t\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
        Forwarded("POST {p} HTTP/1.1\r\nHost: t\r\n\r\n", true),
    ),
    // B-9: bad chunk framing.
    (
        "B-9 size Z",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nZ\r\nhello\r\n0\r\n\r\n",
        BodyRefused,
    ),
    (
        "B-9 over-long size",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n100000000000000005\r\nhello\r\n0\r\n\r\n",
        BodyRefused,
    ),
    (
        "B-9 CR in chunk-ext",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n0\r\n\r\n",
        BodyRefused,
    ),
    // Pingora takes a bare LF inside a chunk extension as part of the extension (not as the
    // end of the size line) and re-frames the body: the upstream gets the one reading the
    // proxy made, without the extension.
    (
        "B-9 LF in chunk-ext",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
        Forwarded(
            "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
    ),
    (
        "B-9 no CRLF after data",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        BodyRefused,
    ),
    (
        "B-9 trailer injection",
        "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Injected: 1\r\n\r\n",
        Forwarded(
            "POST {p} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
    ),
    // B-10: line endings and header syntax.
    (
        "B-10 bare LF",
        "GET {p} HTTP/1.1\nHost: t\nX-A: 1\n\n",
        Forwarded("GET {p} HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\r\n", false),
    ),
    (
        "B-10 CR CR LF",
        "GET {p} HTTP/1.1\r\nHost: t\r\r\n\r\n",
        Refused(400),
    ),
    (
        "B-10 space before colon",
        "GET {p} HTTP/1.1\r\nHost: t\r\nX-A : 1\r\n\r\n",
        Refused(400),
    ),
    (
        "B-10 whitespace before the first header",
        "GET {p} HTTP/1.1\r\n X-A: 1\r\nHost: t\r\n\r\n",
        Refused(400),
    ),
    (
        "B-10 NUL in a value",
        "GET {p} HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n",
        Refused(400),
    ),
    (
        "B-10 CR in a value",
        "GET {p} HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n",
        Refused(400),
    ),
    (
        "B-10 DEL in a value",
        "GET {p} HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n",
        Refused(400),
    ),
    (
        "B-10 byte over 0x7f in a name",
        "GET {p} HTTP/1.1\r\nHost: t\r\nX-\u{e9}: 1\r\n\r\n",
        Refused(400),
    ),
];

/// B-1 to B-6, B-9, B-10: every case, each against its own upstream. Mismatches are gathered
/// and reported together.
#[tokio::test(flavor = "multi_thread")]
async fn bad_framing_is_refused_or_normalised_and_never_smuggles() {
    let mut env = ClientEnv::start(CASES.len(), "", None).await;
    let mut wrong = Vec::new();
    for (i, (id, request, expect)) in CASES.iter().enumerate() {
        let path = format!("/c{i}/x");
        let request = request.replace("{p}", &path);
        let (raw, closed) = exchange(env.addr(), request.as_bytes(), Duration::from_secs(3)).await;
        // The upstream's side of an exchange may lag the client's by a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = statuses(&raw);
        let upstream = env.upstream_bytes(i);
        let requests = env.captures[i].requests();
        let problem = match expect {
            Refused(code) => {
                if got != [*code] || !closed || !upstream.is_empty() {
                    Some(format!(
                        "want {code} + close and nothing upstream; got {got:?}, closed {closed}"
                    ))
                } else {
                    None
                }
            }
            Forwarded(want, close) => {
                let want = want.replace("{p}", &path);
                let close_ok = !close || (closed && has_header(&raw, "connection", "close"));
                if got != [200] || upstream != want.as_bytes() || !close_ok {
                    Some(format!(
                        "want 200 (close {close}) and upstream {want:?}; got {got:?}, closed {closed}"
                    ))
                } else {
                    None
                }
            }
            BodyRefused => {
                let status_ok = got.is_empty() || got == [400];
                if !status_ok || !requests.is_empty() || !closed {
                    Some(format!(
                        "want 400 or a dropped connection, and no whole request upstream; got {got:?}, closed {closed}, {} requests",
                        requests.len()
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(problem) = problem {
            wrong.push(format!(
                "{id}: {problem}\n  client got {:?}\n  upstream got {:?}",
                String::from_utf8_lossy(&raw),
                String::from_utf8_lossy(&upstream)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    env.assert_healthy().await;
}
