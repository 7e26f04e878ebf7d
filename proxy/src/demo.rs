//! The demo origin: a tiny HTTP server that answers every request with what it received, so
//! that `wasmgate demo` shows a filter's edits with nothing else installed.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// Echoes the request line and headers as text.
#[derive(Debug, Clone, Copy)]
pub struct EchoOrigin;

#[async_trait]
impl ServeHttp for EchoOrigin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // Read (and drop) any request body so the connection stays usable.
        while let Ok(Some(_)) = session.read_request_body().await {}
        let req = session.req_header();
        let mut body = format!(
            "demo origin received:\n{} {} {:?}\n",
            req.method,
            String::from_utf8_lossy(req.raw_path()),
            req.version
        );
        for (name, value) in &req.headers {
            body.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body.into_bytes())
            .expect("static parts are valid")
    }
}
