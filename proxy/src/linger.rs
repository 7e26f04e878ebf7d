//! Lingering close, as nginx's: after the proxy answered an HTTP/1.1 request whose body the
//! client is still sending (a filter's local reply, a refusal), the rest of the body is read
//! and thrown away for a bounded time and size before the connection closes. Closing a socket
//! with unread bytes makes the kernel send a reset, which can destroy the response in the
//! client's receive buffer before the client reads it: a client that writes its whole body
//! before reading would see a broken pipe instead of the answer.
//!
//! HTTP/2 is left as it was: a stream ends there without closing the connection, so a reset
//! of the connection is not what loses the response (not tested here).

use std::time::Duration;

use pingora::proxy::Session;

/// How long the rest of a body is read at most.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How many bytes of it are read at most.
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// Reads and discards what is left of the request body, within the bounds above. Called once
/// a response has been sent in place of the upstream's.
pub(crate) async fn discard_request_body(session: &mut Session) {
    if session.is_http2() || session.is_body_done() {
        return;
    }
    let mut left = LINGER_BYTES;
    let drain = async {
        while let Ok(Some(chunk)) = session.read_request_body().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}
