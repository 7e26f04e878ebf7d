//! `routes:`: every key read, its default, and each error at its key.

use std::time::Duration;

use crate::model::{PathMatch, RouteAction, ValueMatch};
use crate::testing::{errors, ok};

const HEAD: &str = "\
listen: 127.0.0.1:8080
upstreams:
  v1:
    endpoints: [\"127.0.0.1:9000\"]
  v2:
    endpoints: [\"127.0.0.1:9001\"]
routes:
";

fn routes(text: &str) -> String {
    format!("{HEAD}{text}")
}

#[test]
fn defaults_name_route_n_prefix_slash_and_nothing_rewritten() {
    let c = ok(&routes("  - upstream: v1\n  - upstream: v2\n"));
    assert_eq!(c.routes[0].name, "route-0");
    assert_eq!(c.routes[1].name, "route-1");
    let r = &c.routes[0];
    assert!(matches!(&r.matcher.path, PathMatch::Prefix(p) if p == "/"));
    assert!(r.matcher.methods.is_empty() && r.matcher.headers.is_empty());
    assert!(r.matcher.query.is_empty() && r.matcher.host.is_none());
    assert!(matches!(&r.action, RouteAction::Upstream(u) if u == "v1"));
    assert_eq!(r.rewrite, Default::default());
    assert_eq!(r.timeout, None);
}

#[test]
fn every_match_kind_and_action_is_read() {
    let c = ok(&routes(
        r#"  - name: api
    match:
      host: "*.Example.com"
      path_regex: "^/v[0-9]+/"
      methods: [GET, POST]
      headers:
        x-canary: "1"
        X-Version: 2
        user-agent: {regex: "^curl/"}
        x-present: {present: true}
      query: {debug: "1", n: 5}
    upstreams: [{name: v1, weight: 90}, {name: v2}]
    rewrite: {path_prefix: /, host: new.example.com:8080}
    timeout_ms: 1500
  - match: {path: /health}
    respond:
      status: 503
      body: "down\n"
      headers: {Content-Type: text/plain, x-a: b}
  - match: {path_prefix: /old/}
    redirect: {scheme: https, host: example.com, path: /new, status: 308}
  - redirect: {}
  - respond: {}
"#,
    ));
    let r = &c.routes[0];
    assert_eq!(r.name, "api");
    assert_eq!(r.matcher.host.as_deref(), Some("*.example.com"));
    assert!(matches!(&r.matcher.path, PathMatch::Regex(re) if re.as_str() == "^/v[0-9]+/"));
    assert_eq!(r.matcher.methods, ["GET", "POST"]);
    let headers: Vec<(&str, String)> = r
        .matcher
        .headers
        .iter()
        .map(|h| {
            let v = match &h.value {
                ValueMatch::Exact(v) => format!("= {v}"),
                ValueMatch::Regex(re) => format!("~ {}", re.as_str()),
                ValueMatch::Present => "present".to_owned(),
            };
            (h.name.as_str(), v)
        })
        .collect();
    assert_eq!(
        headers,
        [
            ("x-canary", "= 1".to_owned()),
            ("x-version", "= 2".to_owned()),
            ("user-agent", "~ ^curl/".to_owned()),
            ("x-present", "present".to_owned()),
        ]
    );
    let query: Vec<(&str, &str)> = r
        .matcher
        .query
        .iter()
        .map(|q| (q.name.as_str(), q.value.as_str()))
        .collect();
    assert_eq!(query, [("debug", "1"), ("n", "5")]);
    let RouteAction::Split(split) = &r.action else {
        panic!("a split: {:?}", r.action);
    };
    let split: Vec<(&str, u32)> = split.iter().map(|w| (w.name.as_str(), w.weight)).collect();
    assert_eq!(split, [("v1", 90), ("v2", 1)]);
    assert_eq!(r.upstreams(), [("v1", 90), ("v2", 1)]);
    assert_eq!(r.rewrite.path_prefix.as_deref(), Some("/"));
    assert_eq!(r.rewrite.host.as_deref(), Some("new.example.com:8080"));
    assert_eq!(r.timeout, Some(Duration::from_millis(1500)));

    assert!(matches!(&c.routes[1].matcher.path, PathMatch::Exact(p) if p == "/health"));
    let RouteAction::Respond(respond) = &c.routes[1].action else {
        panic!("a response");
    };
    assert_eq!(respond.status, 503);
    assert_eq!(respond.body, "down\n");
    let names: Vec<(&str, &[u8])> = respond
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    assert_eq!(
        names,
        [("content-type", &b"text/plain"[..]), ("x-a", &b"b"[..])]
    );
    assert!(c.routes[1].upstreams().is_empty());

    let RouteAction::Redirect(redirect) = &c.routes[2].action else {
        panic!("a redirect");
    };
    assert_eq!(redirect.scheme.as_deref(), Some("https"));
    assert_eq!(redirect.host.as_deref(), Some("example.com"));
    assert_eq!(redirect.path.as_deref(), Some("/new"));
    assert_eq!(redirect.status, 308);
    let RouteAction::Redirect(redirect) = &c.routes[3].action else {
        panic!("a redirect");
    };
    assert_eq!(
        (
            redirect.scheme.as_deref(),
            redirect.host.as_deref(),
            redirect.path.as_deref()
        ),
        (None, None, None)
    );
    assert_eq!(redirect.status, 301, "the default");
    let RouteAction::Respond(respond) = &c.routes[4].action else {
        panic!("a response");
    };
    assert_eq!((respond.status, respond.body.as_str()), (200, ""));
    assert!(respond.headers.is_empty());
}

#[test]
fn match_errors_are_placed_at_their_keys() {
    let all = errors(&routes(
        r#"  - match:
      path: /a
      path_regex: "^/v[0-9+/"
      methods: [get, "GE T"]
      headers:
        "bad name": "1"
        x-a: "a\x01b"
        x-b: {regex: "("}
        x-c: {present: false}
      query: {"": "1"}
    upstream: v1
  - match: {path: "/a?b", methods: []}
    upstream: v1
  - match: {path_prefix: /a, path: /b}
    upstream: v1
  - match: {path_regex: "x{2,1}"}
    upstream: v1
"#,
    ));
    let expected = [
        r#"wasmgate.yaml:10:7: routes[0].match.path_regex: give only one of path, path_prefix and path_regex"#,
        r#"wasmgate.yaml:10:7: routes[0].match.path_regex: invalid regex "^/v[0-9+/": unclosed character class"#,
        r#"wasmgate.yaml:11:17: routes[0].match.methods[0]: methods are case-sensitive: write "GET", not "get""#,
        r#"wasmgate.yaml:11:22: routes[0].match.methods[1]: invalid method "GE T": a method is a token such as GET"#,
        r#"wasmgate.yaml:13:9: routes[0].match.headers.bad name: invalid header name "bad name""#,
        r#"wasmgate.yaml:14:9: routes[0].match.headers.x-a: invalid header value "a\u{1}b""#,
        r#"wasmgate.yaml:15:15: routes[0].match.headers.x-b.regex: invalid regex "(": unclosed group"#,
        r#"wasmgate.yaml:16:15: routes[0].match.headers.x-c.present: present: false is not supported: use {present: true} or leave the header out"#,
        r#"wasmgate.yaml:17:7: routes[0].match.query: a query parameter name is empty"#,
        r##"wasmgate.yaml:19:13: routes[1].match.path: invalid path "/a?b": only a path, without "?", "#" or spaces"##,
        r#"wasmgate.yaml:19:27: routes[1].match.methods: methods is empty: leave the key out to match any method"#,
        r#"wasmgate.yaml:21:30: routes[2].match.path: give only one of path, path_prefix and path_regex"#,
        r#"wasmgate.yaml:23:13: routes[3].match.path_regex: invalid regex "x{2,1}": invalid repetition count range, the start must be <= the end"#,
    ];
    assert_eq!(all, expected, "{all:#?}");
}

#[test]
fn action_errors_are_placed_at_their_keys() {
    let all = errors(&routes(
        r#"  - name: a
    match: {path: /x}
  - name: a
    upstream: v1
    respond: {}
  - name: "b c"
    redirect: {scheme: ftp, host: "a b", path: x, status: 302}
    respond: {status: 100}
    rewrite: {path_prefix: /}
    timeout_ms: 0
  - upstreams: []
  - upstreams: [{name: v1, weight: 0}, {name: v3}, {name: v1, weight: 10001}]
  - upstreams: [{name: v1, weight: 0}]
  - redirect: {status: 200}
    timeout_ms: 5
  - respond:
      headers: {content-length: "5", "x y": a, x-ok: "\u0001"}
    upstream: v3
  - upstream: v1
    rewrite: {path_prefix: a/, host: "a/b"}
    timeout_ms: 86400001
"#,
    ));
    let expected = [
        r#"wasmgate.yaml:8:5: routes[0]: a route needs upstream, upstreams, redirect or respond"#,
        r#"wasmgate.yaml:10:5: routes[1].name: duplicate route name "a" (first declared at line 8)"#,
        r#"wasmgate.yaml:12:5: routes[1].respond: give upstream or respond, not both"#,
        r#"wasmgate.yaml:13:5: routes[2].name: invalid route name "b c": use only letters, digits, '_', '.' and '-'"#,
        r#"wasmgate.yaml:14:16: routes[2].redirect.scheme: unknown scheme "ftp" (known: http, https)"#,
        r#"wasmgate.yaml:14:29: routes[2].redirect.host: invalid host "a b": expected a host and an optional :port"#,
        r#"wasmgate.yaml:14:42: routes[2].redirect.path: path must start with "/", got "x""#,
        r#"wasmgate.yaml:15:5: routes[2].respond: give redirect or respond, not both"#,
        r#"wasmgate.yaml:15:15: routes[2].respond.status: status must be between 200 and 599, got 100"#,
        r#"wasmgate.yaml:16:5: routes[2].rewrite: rewrite applies only to a route with upstream or upstreams"#,
        r#"wasmgate.yaml:17:5: routes[2].timeout_ms: timeout_ms applies only to a route with upstream or upstreams"#,
        r#"wasmgate.yaml:18:5: routes[3].upstreams: upstreams is empty: give at least one {name: NAME, weight: N}"#,
        r#"wasmgate.yaml:19:41: routes[4].upstreams[1].name: unknown upstream "v3" (known: v1, v2)"#,
        r#"wasmgate.yaml:19:53: routes[4].upstreams[2].name: upstream "v1" is listed more than once in this split"#,
        r#"wasmgate.yaml:19:63: routes[4].upstreams[2].weight: weight must be between 0 and 10000, got 10001"#,
        r#"wasmgate.yaml:20:5: routes[5].upstreams: the weights add up to 0: give at least one upstream a weight over 0"#,
        r#"wasmgate.yaml:21:16: routes[6].redirect.status: redirect status must be 301, 302, 303, 307 or 308, got 200"#,
        r#"wasmgate.yaml:22:5: routes[6].timeout_ms: timeout_ms applies only to a route with upstream or upstreams"#,
        r#"wasmgate.yaml:24:17: routes[7].respond.headers.content-length: content-length is set by the proxy and cannot be configured"#,
        r#"wasmgate.yaml:24:38: routes[7].respond.headers.x y: invalid header name "x y""#,
        r#"wasmgate.yaml:24:48: routes[7].respond.headers.x-ok: invalid header value "\u{1}""#,
        r#"wasmgate.yaml:25:5: routes[7].upstream: give respond or upstream, not both"#,
        r#"wasmgate.yaml:25:5: routes[7].upstream: unknown upstream "v3" (known: v1, v2)"#,
        r#"wasmgate.yaml:27:15: routes[8].rewrite.path_prefix: path_prefix must start with "/", got "a/""#,
        r#"wasmgate.yaml:27:32: routes[8].rewrite.host: invalid host "a/b": expected a host and an optional :port"#,
        r#"wasmgate.yaml:28:5: routes[8].timeout_ms: timeout_ms must be between 1 and 86400000, got 86400001"#,
    ];
    assert_eq!(all, expected, "{all:#?}");
}

#[test]
fn a_respond_body_over_one_mib_is_an_error() {
    let body = "x".repeat((1 << 20) + 1);
    let all = errors(&routes(&format!("  - respond: {{body: {body}}}\n")));
    assert_eq!(
        all,
        [
            "wasmgate.yaml:8:15: routes[0].respond.body: body is 1048577 bytes, over the 1048576 a direct response may have"
        ]
    );
}

#[test]
fn unknown_keys_in_route_mappings_are_errors() {
    for (text, key) in [
        (
            "  - upstream: v1\n    match: {paths: /}\n",
            "routes[0].match.paths",
        ),
        (
            "  - upstream: v1\n    rewrite: {prefix: /}\n",
            "routes[0].rewrite.prefix",
        ),
        ("  - redirect: {code: 301}\n", "routes[0].redirect.code"),
        ("  - respond: {text: hi}\n", "routes[0].respond.text"),
        (
            "  - upstreams: [{name: v1, share: 1}]\n",
            "routes[0].upstreams[0].share",
        ),
        (
            "  - upstream: v1\n    match: {headers: {x: {regexp: a}}}\n",
            "routes[0].match.headers.x.regexp",
        ),
    ] {
        let all = errors(&routes(text));
        assert_eq!(all.len(), 1, "{all:#?}");
        assert!(
            all[0].contains(&format!(" {key}: unknown field")),
            "{key}: {all:#?}"
        );
    }
}
