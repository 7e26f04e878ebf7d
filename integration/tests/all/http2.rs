//! HTTP/2 through the chain: h2c with prior knowledge and TLS with ALPN downstream, HTTP/2
//! upstream, and response trailers read and changed by a filter.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::support::testkit;

fn kit() -> String {
    testkit(
        "kit",
        json!({
            "on_request_headers": [
                {"op": "property", "path": ["request", "protocol"], "to": "x-protocol"},
                {"op": "property", "path": ["request", "scheme"], "to": "x-scheme"},
                {"op": "add", "map": "request", "key": "x-kit", "value": "1"}
            ],
            "on_response_headers": [
                {"op": "add", "map": "response", "key": "x-kit-response", "value": "1"}
            ],
            "on_response_trailers": [
                {"op": "get", "map": "response_trailers", "key": "x-trailer", "to": "x-kit-saw"},
                {"op": "replace", "map": "response_trailers", "key": "grpc-status", "value": "7"}
            ]
        }),
        "",
    )
}

/// A config with an HTTP/1.1 and an HTTP/2 route to the same origin, and optionally a TLS
/// listener.
fn config(origin: &Origin, tls: Option<(&std::path::Path, &std::path::Path, u16)>) -> String {
    let tls = tls.map_or(String::new(), |(cert, key, port)| {
        format!(
            "listen_tls:\n  - {{address: \"127.0.0.1:{port}\", cert: \"{}\", key: \"{}\"}}\n",
            cert.display(),
            key.display()
        )
    });
    format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
{tls}threads: 2
upstreams:
  h1:
    endpoints: ["{origin}"]
  h2:
    endpoints: ["{origin}"]
    protocol: http2
filters:
{kit}
routes:
  - match: {{path_prefix: /h2}}
    upstream: h2
  - upstream: h1
"#,
        origin = origin.endpoint(),
        kit = kit()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_downstream_and_h2_upstream_run_the_chain() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&origin, None));
    let http = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let resp = http.get(proxy.url("/h1/x")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_eq!(client::header_all(&resp, "x-kit-response"), ["1"]);
    let seen = origin.last();
    assert_eq!(seen.version, "HTTP/1.1");
    assert_eq!(seen.header("x-protocol"), Some("HTTP/2"));
    assert_eq!(seen.header("x-kit"), Some("1"));

    let resp = http.get(proxy.url("/h2/y")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.last().version, "HTTP/2.0", "the upstream got HTTP/2");
    assert_eq!(origin.last().path, "/h2/y");

    // A request body through both.
    let resp = http
        .post(proxy.url("/h2/post"))
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(origin.last().body, "abc");
}

/// Sends one HTTP/2 request over `io` and returns the response head, body and trailers.
async fn h2_get<T>(
    io: T,
    authority: &str,
    path: &str,
) -> (http::response::Parts, Bytes, Option<http::HeaderMap>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    tokio::spawn(conn);
    let request = http::Request::get(format!("http://{authority}{path}"))
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).expect("send");
    let response = response.await.expect("response");
    let (parts, mut body) = response.into_parts();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("body");
        data.extend_from_slice(&chunk);
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.expect("trailers");
    (parts, Bytes::from(data), trailers)
}

#[tokio::test(flavor = "multi_thread")]
async fn response_trailers_are_read_and_changed_on_http2() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&origin, None));
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (parts, body, trailers) = h2_get(tcp, &proxy.addr.to_string(), "/h2/trailers").await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, "body before trailers");
    let trailers = trailers.expect("trailers reached the client");
    assert_eq!(trailers["x-trailer"], "origin");
    assert_eq!(trailers["grpc-status"], "7", "the filter changed a trailer");
    assert_eq!(trailers["x-kit-saw"], "origin", "the filter read a trailer");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_listener_negotiates_http2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let tls_port = wasmgate_integration::proxy::free_port();
    let origin = Origin::start().await;
    let _proxy = Proxy::start(&config(&origin, Some((&cert_path, &key_path, tls_port))));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let mut attempts = 0;
    let tcp = loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", tls_port)).await {
            Ok(tcp) => break tcp,
            Err(_) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("TLS listener: {e}"),
        }
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (parts, _, _) = h2_get(stream, "localhost", "/tls").await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["x-kit-response"], "1");
    let seen = origin.last();
    assert_eq!(seen.header("x-protocol"), Some("HTTP/2"));
    assert_eq!(seen.header("x-scheme"), Some("https"));
}
