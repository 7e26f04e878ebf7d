//! Forwarding headers through the real proxy: X-Forwarded-For, -Proto and -Host with and
//! without trusted proxies, `Via`, and the request id (generated, kept, echoed, seen by a
//! filter as a header and as `request.id`).

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::Proxy;

use crate::support::testkit;

/// A config with one upstream, the given `forwarding:` block (YAML at column 0, may be empty)
/// and `filters:` items.
pub(crate) fn with_forwarding(origin: &Origin, forwarding: &str, filters: &str) -> String {
    format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
threads: 2
upstreams:
  origin:
    endpoints: ["{}"]
{forwarding}
filters:
{filters}
routes:
  - upstream: origin
"#,
        origin.endpoint()
    )
}

/// Sends a GET claiming to have been forwarded for 192.0.2.1 over https for `evil.example`.
async fn spoofed(proxy: &Proxy) -> reqwest::Response {
    client::http()
        .get(proxy.url("/fwd"))
        .header("x-forwarded-for", "192.0.2.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_client_cannot_choose_its_forwarded_headers() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&with_forwarding(&origin, "", "  []"));
    let resp = spoofed(&proxy).await;
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    assert_eq!(
        seen.header_all("x-forwarded-host"),
        [proxy.addr.to_string().as_str()]
    );
    assert_eq!(seen.header("via"), None, "via is off by default");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_s_headers_are_kept_and_its_address_appended() {
    let origin = Origin::start().await;
    let fwd = "forwarding:\n  trusted_proxies: [127.0.0.0/8]\n";
    let proxy = Proxy::start(&with_forwarding(&origin, fwd, "  []"));
    spoofed(&proxy).await;
    let seen = origin.last();
    assert_eq!(seen.header_all("x-forwarded-for"), ["192.0.2.1, 127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["evil.example"]);

    // Several lines are one list; a request with none gets the peer alone.
    let resp = client::http()
        .get(proxy.url("/two"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-forwarded-for", "192.0.2.1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = origin.last();
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        ["198.51.100.7, 192.0.2.1, 127.0.0.1"]
    );
    client::http().get(proxy.url("/none")).send().await.unwrap();
    assert_eq!(origin.last().header_all("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_ignores_even_trusted_proxies_and_off_forwards_as_sent() {
    let origin = Origin::start().await;
    let fwd = "forwarding:\n  x_forwarded: replace\n  trusted_proxies: [127.0.0.1]\n";
    let proxy = Proxy::start(&with_forwarding(&origin, fwd, "  []"));
    spoofed(&proxy).await;
    let seen = origin.last();
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["http"]);
    drop(proxy);

    let proxy = Proxy::start(&with_forwarding(
        &origin,
        "forwarding: {x_forwarded: off}",
        "  []",
    ));
    spoofed(&proxy).await;
    let seen = origin.last();
    assert_eq!(seen.header_all("x-forwarded-for"), ["192.0.2.1"]);
    assert_eq!(seen.header_all("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.header_all("x-forwarded-host"), ["evil.example"]);
    client::http()
        .get(proxy.url("/plain"))
        .send()
        .await
        .unwrap();
    let seen = origin.last();
    assert_eq!(seen.header("x-forwarded-for"), None, "off adds nothing");
    assert_eq!(seen.header("x-forwarded-proto"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn via_marks_the_request_and_the_response() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&with_forwarding(&origin, "forwarding: {via: true}", "  []"));
    let resp = client::http()
        .get(proxy.url("/"))
        .header("via", "1.0 other")
        .send()
        .await
        .unwrap();
    assert_eq!(client::header_all(&resp, "via"), ["1.1 wasmgate"]);
    assert_eq!(
        origin.last().header_all("via"),
        ["1.0 other", "1.1 wasmgate"]
    );
}

/// A testkit filter that copies what it sees of the request id into headers for the
/// upstream, and answers 418 itself when asked to.
fn id_probe(header: &str) -> String {
    testkit(
        "probe",
        json!({
            "on_request_headers": [
                {"op": "property", "path": ["request", "id"], "to": "x-seen-property"},
                {"op": "get", "map": "request", "key": header, "to": "x-seen-header"},
                {"op": "local_reply", "status": 418, "body": "no\n",
                 "when": {"request_header": "x-refuse"}}
            ]
        }),
        "",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_id_is_generated_passed_on_echoed_and_seen_by_filters() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&with_forwarding(&origin, "", &id_probe("x-request-id")));
    let http = client::http();

    let resp = http.get(proxy.url("/")).send().await.unwrap();
    let echoed = client::header_all(&resp, "x-request-id");
    assert_eq!(echoed.len(), 1, "{echoed:?}");
    let id = &echoed[0];
    // A UUID v4: 8-4-4-4-12 hex digits, version nibble 4, variant 8..b.
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id}"
    );
    assert!(
        parts[2].starts_with('4') && "89ab".contains(&parts[3][..1]),
        "{id}"
    );
    let seen = origin.last();
    assert_eq!(seen.header_all("x-request-id"), [id.as_str()]);
    assert_eq!(seen.header("x-seen-property"), Some(id.as_str()));
    assert_eq!(seen.header("x-seen-header"), Some(id.as_str()));

    let resp = http.get(proxy.url("/")).send().await.unwrap();
    assert_ne!(
        &client::header_all(&resp, "x-request-id")[0],
        id,
        "a new id per request"
    );

    // The client's own id is kept, and echoed on a filter's local reply too.
    let resp = http
        .get(proxy.url("/"))
        .header("x-request-id", "client-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(client::header_all(&resp, "x-request-id"), ["client-id-1"]);
    assert_eq!(origin.last().header("x-seen-property"), Some("client-id-1"));
    let resp = http
        .get(proxy.url("/"))
        .header("x-request-id", "client-id-2")
        .header("x-refuse", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 418);
    assert_eq!(client::header_all(&resp, "x-request-id"), ["client-id-2"]);

    // An id that could break a log line is replaced.
    let resp = http
        .get(proxy.url("/"))
        .header("x-request-id", "has space")
        .send()
        .await
        .unwrap();
    let replaced = &client::header_all(&resp, "x-request-id")[0];
    assert_ne!(replaced, "has space");
    assert_eq!(replaced.len(), 36);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_request_id_header_is_configurable_and_echo_and_generate_can_be_off() {
    let origin = Origin::start().await;
    let fwd = "forwarding:\n  request_id: {header: X-Trace, echo: false}\n";
    let proxy = Proxy::start(&with_forwarding(&origin, fwd, &id_probe("x-trace")));
    let http = client::http();
    let resp = http
        .get(proxy.url("/"))
        .header("x-trace", "t-1")
        .send()
        .await
        .unwrap();
    assert!(client::header_all(&resp, "x-trace").is_empty(), "no echo");
    assert!(client::header_all(&resp, "x-request-id").is_empty());
    let seen = origin.last();
    assert_eq!(seen.header("x-trace"), Some("t-1"));
    assert_eq!(seen.header("x-request-id"), None);
    assert_eq!(seen.header("x-seen-property"), Some("t-1"));
    drop(proxy);

    let fwd = "forwarding:\n  request_id: {generate: false}\n";
    let proxy = Proxy::start(&with_forwarding(&origin, fwd, &id_probe("x-request-id")));
    let resp = http.get(proxy.url("/")).send().await.unwrap();
    assert!(client::header_all(&resp, "x-request-id").is_empty());
    let seen = origin.last();
    assert_eq!(seen.header("x-request-id"), None);
    assert_eq!(seen.header("x-seen-property"), Some("<none>"));
}
