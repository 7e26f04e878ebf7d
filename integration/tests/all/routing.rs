//! Routing through the real proxy: every match kind and their combination (first match wins),
//! rewrites seen by the upstream, redirects, direct responses (with and without filters), a
//! weighted split, a route's timeout, and environment variables in the file.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::{Proxy, binary};

use crate::reload::post_reload;
use crate::support::{add_header, testkit};

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// A config with upstreams `a` and `b`, these `filters:` items and these `routes:` items.
fn config(a: &Origin, b: &Origin, filters: &str, routes: &str) -> String {
    format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
threads: 2
upstreams:
  a:
    endpoints: ["{}"]
  b:
    endpoints: ["{}"]
filters:
{filters}
routes:
{routes}"#,
        a.endpoint(),
        b.endpoint()
    )
}

const MATCH_ROUTES: &str = r#"  - name: exact
    match: {path: /exact}
    respond: {body: exact}
  - name: regex
    match: {path_regex: "^/v[0-9]+/"}
    respond: {body: regex}
  - name: methods
    match: {path_prefix: /m/, methods: [POST, PUT]}
    respond: {body: methods}
  - name: header-exact
    match: {path_prefix: /h/, headers: {x-canary: "1"}}
    respond: {body: header-exact}
  - name: header-regex
    match: {path_prefix: /h/, headers: {user-agent: {regex: "^probe/[0-9]"}}}
    respond: {body: header-regex}
  - name: header-present
    match: {path_prefix: /h/, headers: {x-debug: {present: true}}}
    respond: {body: header-present}
  - name: query
    match: {path_prefix: /q/, query: {debug: "on 1"}}
    respond: {body: query}
  - name: all
    match:
      host: "*.example.com"
      path_prefix: /all/
      methods: [POST]
      headers: {x-canary: "1"}
      query: {v: "2"}
    respond: {body: all}
  - name: host
    match: {host: "*.example.com"}
    respond: {body: host}
  - name: fallback
    upstream: a
"#;

/// A request (method, path, headers, Host) and the body of the route it must take.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
    &'a str,
);

#[tokio::test(flavor = "multi_thread")]
async fn every_match_kind_routes_and_the_first_match_wins() {
    let (a, b) = (
        Origin::start_named("a").await,
        Origin::start_named("b").await,
    );
    let proxy = Proxy::start(&config(&a, &b, "", MATCH_ROUTES));
    let http = client::http();
    // (method, path, headers, Host) -> the route's body, or "origin" for the fallback.
    let cases: &[Case] = &[
        ("GET", "/exact", &[], None, "exact"),
        ("GET", "/exact?x=1", &[], None, "exact"),
        ("GET", "/exact/", &[], None, "origin"),
        ("GET", "/exactly", &[], None, "origin"),
        ("GET", "/v2/items", &[], None, "regex"),
        ("GET", "/api/v2/items", &[], None, "origin"),
        ("POST", "/m/x", &[], None, "methods"),
        ("PUT", "/m/x", &[], None, "methods"),
        ("GET", "/m/x", &[], None, "origin"),
        ("GET", "/h/", &[("x-canary", "1")], None, "header-exact"),
        ("GET", "/h/", &[("x-canary", "2")], None, "origin"),
        (
            "GET",
            "/h/",
            &[("user-agent", "probe/1")],
            None,
            "header-regex",
        ),
        ("GET", "/h/", &[("user-agent", "curl/8")], None, "origin"),
        ("GET", "/h/", &[("x-debug", "")], None, "header-present"),
        // Several routes match: the first one in the file wins.
        (
            "GET",
            "/h/",
            &[("x-debug", "1"), ("x-canary", "1")],
            None,
            "header-exact",
        ),
        (
            "GET",
            "/h/",
            &[("x-debug", "1"), ("user-agent", "probe/2")],
            None,
            "header-regex",
        ),
        ("GET", "/q/?a=b&debug=on+1", &[], None, "query"),
        ("GET", "/q/?debug=on%201", &[], None, "query"),
        ("GET", "/q/?debug=on", &[], None, "origin"),
        ("GET", "/q/", &[], None, "origin"),
        (
            "POST",
            "/all/?v=2",
            &[("x-canary", "1")],
            Some("a.example.com"),
            "all",
        ),
        (
            "GET",
            "/all/?v=2",
            &[("x-canary", "1")],
            Some("a.example.com"),
            "host",
        ),
        (
            "POST",
            "/all/?v=3",
            &[("x-canary", "1")],
            Some("a.example.com"),
            "host",
        ),
        ("POST", "/all/?v=2", &[], Some("a.example.com"), "host"),
        (
            "POST",
            "/all/?v=2",
            &[("x-canary", "1")],
            Some("example.com"),
            "origin",
        ),
        ("POST", "/exact", &[], Some("b.example.com"), "exact"),
    ];
    for (method, path, headers, host, want) in cases {
        let mut req = http.request(method.parse().expect("method"), proxy.url(path));
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        if let Some(host) = host {
            req = req.header("host", *host);
        }
        let resp = req.send().await.expect("a response");
        assert_eq!(resp.status(), 200, "{method} {path} {headers:?}");
        let origin = client::header_all(&resp, "x-origin-name");
        let body = resp.text().await.expect("a body");
        let got = if origin == ["a"] {
            "origin"
        } else {
            body.as_str()
        };
        assert_eq!(got, *want, "{method} {path} {headers:?} {host:?}");
    }
    assert!(b.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrites_change_the_path_and_host_the_upstream_sees() {
    let (a, b) = (
        Origin::start_named("a").await,
        Origin::start_named("b").await,
    );
    let routes = r#"  - match: {path_prefix: /api/}
    upstream: a
    rewrite: {path_prefix: /, host: backend.internal}
  - match: {path_regex: "/v[0-9]+/"}
    upstream: b
    rewrite: {path_prefix: /}
  - match: {path: /old}
    upstream: b
    rewrite: {path_prefix: /new/place}
  - upstream: a
"#;
    let proxy = Proxy::start(&config(&a, &b, "", routes));
    let http = client::http();

    let resp = http
        .get(proxy.url("/api/users?id=7&x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = a.last();
    assert_eq!(seen.path, "/users?id=7&x");
    assert_eq!(seen.header_all("host"), ["backend.internal"]);

    http.get(proxy.url("/shop/v12/items?q=1"))
        .send()
        .await
        .unwrap();
    let seen = b.last();
    assert_eq!(seen.path, "/shop/items?q=1");
    assert_eq!(
        seen.header_all("host"),
        [proxy.addr.to_string()],
        "no host rewrite: the client's"
    );

    http.get(proxy.url("/old")).send().await.unwrap();
    assert_eq!(b.last().path, "/new/place");

    // Routes without a rewrite pass the request as it came.
    http.get(proxy.url("/other/api/x")).send().await.unwrap();
    assert_eq!(a.last().path, "/other/api/x");
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_answer_with_their_status_and_location() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    let routes = r#"  - match: {path_prefix: /old/}
    redirect: {path: /new, status: 308}
  - match: {path_prefix: /secure}
    redirect: {scheme: https}
  - match: {path_prefix: /elsewhere}
    redirect: {scheme: https, host: "example.org:8443", path: /landing, status: 302}
  - upstream: a
"#;
    let proxy = Proxy::start(&config(&a, &b, "", routes));
    let http = no_redirects();
    let host = proxy.addr.to_string();
    let cases = [
        ("/old/page?x=1", 308, format!("http://{host}/new?x=1")),
        (
            "/secure/a?b",
            301,
            "https://127.0.0.1/secure/a?b".to_owned(),
        ),
        (
            "/elsewhere",
            302,
            "https://example.org:8443/landing".to_owned(),
        ),
    ];
    for (path, status, location) in cases {
        let resp = http.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(client::header_all(&resp, "location"), [location], "{path}");
        assert_eq!(resp.text().await.unwrap(), "", "{path}");
    }
    assert!(a.received().is_empty() && b.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_responses_answer_without_the_upstream_and_filters_see_them() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    let tag = add_header(
        "tag",
        json!({"response": {"add": {"x-tagged": "1"}}, "request": {"add": {"x-seen": "1"}}}),
    );
    let deny = testkit(
        "deny",
        json!({
            "on_request_headers": [{
                "op": "local_reply", "status": 403, "body": "denied\n",
                "when": {"request_header": "x-deny"}
            }]
        }),
        "",
    );
    let routes = r#"  - match: {path: /health}
    respond:
      status: 503
      body: "down\n"
      headers: {x-why: maintenance}
    filters: []
  - match: {path: /teapot}
    respond: {status: 418, body: "{\"short\": true}", headers: {content-type: application/json}}
  - match: {path: /empty}
    respond: {status: 204}
  - upstream: a
"#;
    let proxy = Proxy::start(&config(&a, &b, &format!("{tag}{deny}"), routes));
    let http = client::http();

    // No filters.
    let resp = http.get(proxy.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(client::header_all(&resp, "x-why"), ["maintenance"]);
    assert_eq!(client::header_all(&resp, "content-type"), ["text/plain"]);
    assert!(client::header_all(&resp, "x-tagged").is_empty());
    assert_eq!(resp.text().await.unwrap(), "down\n");

    // The default chain: the response callbacks see the route's answer...
    let resp = http.get(proxy.url("/teapot")).send().await.unwrap();
    assert_eq!(resp.status(), 418);
    assert_eq!(
        client::header_all(&resp, "content-type"),
        ["application/json"]
    );
    assert_eq!(client::header_all(&resp, "x-tagged"), ["1"]);
    assert_eq!(client::header_all(&resp, "content-length"), ["15"]);
    assert_eq!(resp.text().await.unwrap(), r#"{"short": true}"#);
    // ...and a filter that answers first wins.
    let resp = http
        .get(proxy.url("/teapot"))
        .header("x-deny", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.text().await.unwrap(), "denied\n");

    let resp = http.head(proxy.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), "");
    let resp = http.get(proxy.url("/empty")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(client::header_all(&resp, "content-type").is_empty());

    assert!(a.received().is_empty(), "the upstream was never contacted");
    let resp = http.get(proxy.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(a.last().header_all("x-seen"), ["1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_weighted_split_sends_each_upstream_its_share() {
    let (a, b) = (
        Origin::start_named("a").await,
        Origin::start_named("b").await,
    );
    let routes = "  - upstreams: [{name: a, weight: 90}, {name: b, weight: 10}]\n";
    let proxy = Proxy::start(&config(&a, &b, "", routes));
    let http = client::http();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let started = Instant::now();
    for _ in 0..1000 {
        let resp = http.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let origin = client::header_all(&resp, "x-origin-name").join(",");
        *counts.entry(origin).or_default() += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bounded in time"
        );
    }
    let (to_a, to_b) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("b").copied().unwrap_or(0),
    );
    assert_eq!(to_a + to_b, 1000, "{counts:?}");
    // 90/10 within 5 points (the binomial's standard deviation is about 1 point).
    assert!((850..=950).contains(&to_a), "{counts:?}");
    assert_eq!((a.received().len(), b.received().len()), (to_a, to_b));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_timeout_overrides_the_upstream_response_timeout() {
    let (a, b) = (Origin::start().await, Origin::start().await);
    let routes =
        "  - match: {path_prefix: /slow/}\n    upstream: a\n    timeout_ms: 300\n  - upstream: a\n";
    let proxy = Proxy::start(&config(&a, &b, "", routes));
    let http = client::http();
    let started = Instant::now();
    let resp = http.get(proxy.url("/slow/3000")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // The upstream's own timeouts (none on the response) still apply elsewhere.
    let resp = http.get(proxy.url("/x/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_change_with_a_reload() {
    let (a, b) = (
        Origin::start_named("a").await,
        Origin::start_named("b").await,
    );
    let before = "  - match: {path: /r}\n    respond: {body: one}\n  - upstream: a\n";
    let proxy = Proxy::start_with(&config(&a, &b, "", before), &["--no-watch"]);
    let http = no_redirects();
    let resp = http.get(proxy.url("/r")).send().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "one");

    let after = "  - match: {path: /r}\n    redirect: {path: /s, status: 307}\n  - upstreams: [{name: a, weight: 0}, {name: b}]\n";
    proxy.write_config(&config(&a, &b, "", after));
    let (status, body) = post_reload(&proxy).await;
    assert_eq!(status, 200, "{body}");
    let resp = http.get(proxy.url("/r?q")).send().await.unwrap();
    assert_eq!(resp.status(), 307);
    assert_eq!(
        client::header_all(&resp, "location"),
        [format!("http://{}/s?q", proxy.addr)]
    );
    for _ in 0..20 {
        let resp = http.get(proxy.url("/x")).send().await.unwrap();
        assert_eq!(
            client::header_all(&resp, "x-origin-name"),
            ["b"],
            "weight 0 takes a out"
        );
    }
}

fn check_with_env(path: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(binary());
    cmd.args(["check", "-c"]).arg(path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("WASMGATE_ROUTING_UNSET");
    cmd.output().expect("run wasmgate check")
}

#[test]
fn environment_variables_are_substituted_and_an_unset_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasmgate.yaml");
    let text = r#"listen: "127.0.0.1:${WASMGATE_ROUTING_PORT}"
upstreams:
  app:
    endpoints: ["${WASMGATE_ROUTING_HOST:-127.0.0.1}:9000"]
routes:
  - match: {path: /literal}
    respond: {body: "$${not_a_variable}"}
  - upstream: app
"#;
    std::fs::write(&path, text).unwrap();
    let out = check_with_env(&path, &[("WASMGATE_ROUTING_PORT", "8088")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("2 route(s), 1 upstream(s): OK"), "{stdout}");

    // Unset, without a default: the file, line and column of the reference, and its name.
    let out = check_with_env(&path, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!(
        "{}:1:20: environment variable WASMGATE_ROUTING_PORT is not set",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");

    // A wrong value is reported where the reference is written.
    let out = check_with_env(&path, &[("WASMGATE_ROUTING_PORT", "eighty")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:1:1: listen: invalid socket address \"127.0.0.1:eighty\"",
            path.display()
        )),
        "{stderr}"
    );
}
