//! Issue 11, upstream TLS: an HTTPS origin with a private CA (made here with rcgen) reached
//! with verification on, with a wrong SNI, with `verify: false`; mTLS; h2 by ALPN; the CA
//! file read relative to the config file and re-read on reload.

use std::time::Duration;

use serde_json::Value;
use wasmgate_integration::client;
use wasmgate_integration::proxy::Proxy;
use wasmgate_integration::tls_origin::{TestPki, TlsOrigin};

use crate::lb_support::{config, log_lines_with, metric, metrics, reload};

/// GET `path` through the proxy: status, and the origin's JSON body when it answered.
async fn get(proxy: &Proxy, path: &str) -> (u16, Value) {
    let resp = client::http()
        .get(proxy.url(path))
        .send()
        .await
        .expect("the proxy answers");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A route for `path_prefix` to upstream `upstream`, with no filters.
fn route(prefix: &str, upstream: &str) -> String {
    format!("  - match: {{path_prefix: {prefix}}}\n    upstream: {upstream}\n    filters: []\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_origin_with_a_private_ca_is_verified_and_reached() {
    let pki = TestPki::new("wasmgate test CA");
    let origin = TlsOrigin::start("secure", &pki.server(&["localhost", "127.0.0.1"]), None).await;
    let ca = pki.write_ca("ca.pem");
    let upstream = format!(
        "    endpoints: [\"{}\"]\n    tls:\n      ca: {}\n",
        origin.host_endpoint(),
        ca.display()
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let (status, body) = get(&proxy, "/hello").await;
    assert_eq!(status, 200, "{body}\n{}", proxy.log());
    assert_eq!(body["name"], "secure");
    assert_eq!(body["path"], "/hello");
    assert_eq!(body["version"], "HTTP/1.1", "protocol http1 by default");
    assert_eq!(
        body["sni"], "localhost",
        "the SNI defaults to the endpoint's host name"
    );
    let handshakes = origin.handshakes();
    assert!(
        handshakes.iter().all(Result::is_ok),
        "the origin saw failed handshakes: {handshakes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_sni_fails_verification_with_502_a_log_line_and_a_metric() {
    let pki = TestPki::new("wasmgate test CA");
    let origin = TlsOrigin::start("secure", &pki.server(&["localhost", "127.0.0.1"]), None).await;
    let ca = pki.write_ca("ca.pem");
    let endpoint = origin.host_endpoint();
    let upstream = format!(
        "    endpoints: [\"{endpoint}\"]\n    tls:\n      sni: wrong.example\n      verify: true\n      ca: {}\n",
        ca.display()
    );
    let mut proxy = Proxy::start(&config(&upstream, "", ""));
    for _ in 0..3 {
        let (status, _) = get(&proxy, "/x").await;
        assert_eq!(status, 502, "a name mismatch is 502:\n{}", proxy.log());
    }
    assert!(
        origin.seen().is_empty(),
        "no request reached the origin: {:?}",
        origin.seen()
    );
    // The log says which upstream, and why (rustls: "... certificate ... not valid for name").
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut lines = Vec::new();
    while lines.is_empty() && std::time::Instant::now() < deadline {
        lines = log_lines_with(&proxy, &["api"])
            .into_iter()
            .filter(|l| l.to_ascii_lowercase().contains("certificate"))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("TLS failure log: {lines:?}");
    assert!(
        !lines.is_empty(),
        "no log line names the upstream and the certificate problem:\n{}",
        proxy.log()
    );
    let text = metrics(&proxy).await;
    let failures = metric(
        &text,
        "wasmgate_upstream_tls_failures_total",
        &[("upstream", "api"), ("endpoint", &endpoint)],
    );
    assert!(
        failures.is_some_and(|n| n >= 1.0),
        "wasmgate_upstream_tls_failures_total: {failures:?}\n{}",
        text.lines()
            .filter(|l| l.contains("wasmgate_upstream"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(proxy.is_alive());
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_false_reaches_an_untrusted_origin_which_verification_refuses() {
    // Nobody trusts this CA: the system roots do not have it and no `ca:` is given.
    let pki = TestPki::new("untrusted CA");
    let origin =
        TlsOrigin::start("untrusted", &pki.server(&["localhost", "127.0.0.1"]), None).await;
    let endpoint = origin.host_endpoint();
    let upstream = format!("    endpoints: [\"{endpoint}\"]\n    tls:\n      verify: false\n");
    let strict = format!("  strict:\n    endpoints: [\"{endpoint}\"]\n    tls: {{}}\n");
    let proxy = Proxy::start(&config(&upstream, &strict, &route("/strict/", "strict")));
    let (status, body) = get(&proxy, "/loose").await;
    assert_eq!(status, 200, "verify: false: {body}\n{}", proxy.log());
    assert_eq!(body["name"], "untrusted");
    let (status, _) = get(&proxy, "/strict/x").await;
    assert_eq!(
        status, 502,
        "verification is on by default and the system roots do not trust a test CA"
    );
    assert_eq!(origin.seen().len(), 1, "{:?}", origin.seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ip_endpoint_with_verification_on_still_checks_the_chain() {
    // `127.0.0.1:PORT` sends no SNI by default; verification must not be skipped for it.
    let trusted = TestPki::new("trusted CA");
    let rogue = TestPki::new("rogue CA");
    let origin = TlsOrigin::start("rogue", &rogue.server(&["localhost", "127.0.0.1"]), None).await;
    let ca = trusted.write_ca("ca.pem");
    let upstream = format!(
        "    endpoints: [\"{}\"]\n    tls:\n      ca: {}\n",
        origin.ip_endpoint(),
        ca.display()
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let (status, body) = get(&proxy, "/x").await;
    assert_eq!(
        status, 502,
        "a certificate from a CA not in `ca:` must be refused, also for an IP endpoint: {body}"
    );
    assert!(origin.seen().is_empty(), "{:?}", origin.seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_sends_the_client_certificate_the_origin_requires() {
    let pki = TestPki::new("wasmgate test CA");
    let origin =
        TlsOrigin::start("mtls", &pki.server(&["localhost", "127.0.0.1"]), Some(&pki)).await;
    let ca = pki.write_ca("ca.pem");
    let (cert, key) = pki.write(&pki.client("wasmgate"), "client");
    let endpoint = origin.host_endpoint();
    let upstream = format!(
        "    endpoints: [\"{endpoint}\"]\n    tls:\n      ca: {}\n      client_cert: {}\n      client_key: {}\n",
        ca.display(),
        cert.display(),
        key.display()
    );
    let anonymous = format!(
        "  anonymous:\n    endpoints: [\"{endpoint}\"]\n    tls:\n      ca: {}\n",
        ca.display()
    );
    let proxy = Proxy::start(&config(
        &upstream,
        &anonymous,
        &route("/anonymous/", "anonymous"),
    ));
    let (status, body) = get(&proxy, "/with-cert").await;
    assert_eq!(status, 200, "{body}\n{}", proxy.log());
    assert_eq!(body["client_cert"], true);
    let (status, body) = get(&proxy, "/anonymous/x").await;
    assert_eq!(
        status, 502,
        "the origin requires a client certificate: {body}"
    );
    let paths: Vec<String> = origin.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/with-cert"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_over_tls_is_negotiated_by_alpn() {
    let pki = TestPki::new("wasmgate test CA");
    let origin = TlsOrigin::start("h2", &pki.server(&["localhost", "127.0.0.1"]), None).await;
    let ca = pki.write_ca("ca.pem");
    let endpoint = origin.host_endpoint();
    let upstream = format!(
        "    endpoints: [\"{endpoint}\"]\n    protocol: http2\n    tls:\n      ca: {}\n",
        ca.display()
    );
    let h1 = format!(
        "  h1:\n    endpoints: [\"{endpoint}\"]\n    protocol: http1\n    tls:\n      ca: {}\n",
        ca.display()
    );
    let proxy = Proxy::start(&config(&upstream, &h1, &route("/h1/", "h1")));
    for _ in 0..3 {
        let (status, body) = get(&proxy, "/two").await;
        assert_eq!(status, 200, "{body}\n{}", proxy.log());
        assert_eq!(body["version"], "HTTP/2.0", "{body}");
        assert_eq!(body["alpn"], "h2", "{body}");
    }
    let (status, body) = get(&proxy, "/h1/one").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "HTTP/1.1", "{body}");
    assert_ne!(body["alpn"], "h2", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ca_file_is_relative_to_the_config_and_reread_on_reload() {
    // Two CAs; the origin's certificate comes from the second. The proxy starts with the first
    // (502), then the file is replaced by the second and the proxy reloaded (200).
    let first = TestPki::new("first CA");
    let second = TestPki::new("second CA");
    let origin =
        TlsOrigin::start("secure", &second.server(&["localhost", "127.0.0.1"]), None).await;
    let upstream = format!(
        "    endpoints: [\"{}\"]\n    tls:\n      ca: certs/ca.pem\n",
        origin.host_endpoint()
    );
    let text = config(&upstream, "", "");
    // The proxy's directory exists only once it runs: start it with an absolute path first.
    let absolute = first.write_ca("ca.pem");
    let proxy = Proxy::start_with(
        &text.replace("certs/ca.pem", &absolute.display().to_string()),
        &["--no-watch"],
    );
    let certs = proxy.dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    std::fs::write(certs.join("ca.pem"), first.ca_pem()).expect("write CA");
    proxy.write_config(&text);
    let outcome = reload(&proxy).await;
    assert_eq!(outcome["result"], "ok", "{outcome}");
    let (status, _) = get(&proxy, "/x").await;
    assert_eq!(
        status, 502,
        "the first CA did not sign the origin's certificate"
    );

    std::fs::write(certs.join("ca.pem"), second.ca_pem()).expect("write CA");
    let outcome = reload(&proxy).await;
    assert!(
        outcome["result"] == "ok" || outcome["result"] == "unchanged",
        "{outcome}"
    );
    let (status, body) = get(&proxy, "/x").await;
    assert_eq!(
        status,
        200,
        "after the reload the new CA file is used: {body}\nreload: {outcome}\n{}",
        proxy.log()
    );
}

/// One HTTP/1.1 GET straight to a [`TlsOrigin`] (no proxy), trusting `pki`, with an optional
/// client certificate: the response text, or the error.
async fn direct_get(
    origin: &TlsOrigin,
    pki: &TestPki,
    client: Option<&wasmgate_integration::tls_origin::Issued>,
) -> Result<String, String> {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.cert_der.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_der.clone().into()),
            )
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(origin.addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /direct HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_test_tls_origin_itself_verifies_and_requires_client_certificates() {
    // A check of the harness, so that a failure above is the proxy's, not the origin's.
    let pki = TestPki::new("wasmgate test CA");
    let server = pki.server(&["localhost", "127.0.0.1"]);
    let open = TlsOrigin::start("open", &server, None).await;
    let text = direct_get(&open, &pki, None).await.expect("direct GET");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"sni\":\"localhost\""), "{text}");

    let strict = TlsOrigin::start("strict", &server, Some(&pki)).await;
    let text = direct_get(&strict, &pki, Some(&pki.client("me")))
        .await
        .expect("direct GET with a client certificate");
    assert!(text.contains("\"client_cert\":true"), "{text}");
    let without = direct_get(&strict, &pki, None).await;
    assert!(
        without.as_ref().map_or(true, |t| !t.contains("200")),
        "no client certificate, no answer: {without:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_sni_is_sent_and_verified() {
    // The certificate names only api.example.test; the endpoint is localhost.
    let pki = TestPki::new("wasmgate test CA");
    let origin = TlsOrigin::start("named", &pki.server(&["api.example.test"]), None).await;
    let ca = pki.write_ca("ca.pem");
    let upstream = format!(
        "    endpoints: [\"{}\"]\n    tls:\n      sni: api.example.test\n      ca: {}\n",
        origin.host_endpoint(),
        ca.display()
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    let (status, body) = get(&proxy, "/sni").await;
    assert_eq!(status, 200, "{body}\n{}", proxy.log());
    assert_eq!(body["sni"], "api.example.test", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_checks_of_a_tls_upstream_use_tls() {
    let pki = TestPki::new("wasmgate test CA");
    let origin = TlsOrigin::start("checked", &pki.server(&["localhost", "127.0.0.1"]), None).await;
    let ca = pki.write_ca("ca.pem");
    let upstream = format!(
        "    endpoints: [\"{}\"]\n    tls:\n      ca: {}\n    health_check:\n      path: /healthz\n      interval_ms: 100\n      unhealthy_threshold: 1\n      healthy_threshold: 1\n",
        origin.host_endpoint(),
        ca.display()
    );
    let proxy = Proxy::start(&config(&upstream, "", ""));
    // Checks over plain HTTP would fail at once (unhealthy_threshold 1).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !origin.seen().iter().any(|s| s.path == "/healthz")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let checks = origin
        .seen()
        .iter()
        .filter(|s| s.path == "/healthz")
        .count();
    assert!(checks >= 1, "no TLS health check reached the origin");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = crate::lb_support::upstreams(&proxy).await;
    let entry = crate::lb_support::endpoint(&all, "api", &origin.ip_endpoint())
        .unwrap_or_else(|| panic!("the endpoint in /upstreams: {all}"));
    assert_eq!(entry["healthy"], true, "{all}\n{}", proxy.log());
    let handshakes = origin.handshakes();
    assert!(
        handshakes.iter().all(Result::is_ok),
        "failed handshakes: {handshakes:?}"
    );
}
