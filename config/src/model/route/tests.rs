use std::path::PathBuf;

use super::*;

fn route(host: Option<&str>, path: PathMatch) -> Route {
    Route {
        name: "r".to_owned(),
        matcher: RouteMatch {
            host: host.map(str::to_owned),
            path,
            ..RouteMatch::default()
        },
        action: RouteAction::Upstream("backend".to_owned()),
        rewrite: Rewrite::default(),
        timeout: None,
        filters: Vec::new(),
        location: Location {
            file: PathBuf::from("t.yaml"),
            line: 1,
            column: 1,
        },
    }
}

fn prefix(p: &str) -> PathMatch {
    PathMatch::Prefix(p.to_owned())
}

fn regex(r: &str) -> PathMatch {
    PathMatch::Regex(Regex::new(r).expect("a valid regex"))
}

/// Whether `r` takes `METHOD host path?query` with `headers`.
fn takes(
    r: &Route,
    method: &str,
    host: Option<&str>,
    target: &str,
    headers: &[(&str, &str)],
) -> bool {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    r.matches(&RequestHead {
        method,
        host,
        path,
        query,
        headers: &map,
    })
}

fn get(r: &Route, host: Option<&str>, target: &str) -> bool {
    takes(r, "GET", host, target, &[])
}

#[test]
fn matches_any_host_without_host_pattern() {
    let r = route(None, prefix("/"));
    assert!(get(&r, None, "/"));
    assert!(get(&r, Some("anything:1"), "/x"));
}

#[test]
fn matches_host_ignoring_case_and_port() {
    let r = route(Some("example.com"), prefix("/"));
    assert!(get(&r, Some("example.com"), "/"));
    assert!(get(&r, Some("EXAMPLE.com:8080"), "/"));
    assert!(!get(&r, Some("example.org"), "/"));
    assert!(!get(&r, Some("www.example.com"), "/"));
    assert!(!get(&r, None, "/"));
}

#[test]
fn matches_wildcard_subdomains_only() {
    let r = route(Some("*.example.com"), prefix("/"));
    assert!(get(&r, Some("a.example.com"), "/"));
    assert!(get(&r, Some("a.b.Example.COM:443"), "/"));
    assert!(!get(&r, Some("example.com"), "/"));
    assert!(!get(&r, Some(".example.com"), "/"));
    assert!(!get(&r, Some("badexample.com"), "/"));
}

#[test]
fn matches_ipv6_hosts_with_and_without_port() {
    let r = route(Some("[::1]"), prefix("/"));
    assert!(get(&r, Some("[::1]:8080"), "/"));
    assert!(get(&r, Some("[::1]"), "/"));
    assert_eq!(strip_port("::1"), "::1");
}

#[test]
fn matches_path_prefix_as_plain_byte_prefix() {
    let r = route(None, prefix("/api"));
    assert!(get(&r, None, "/api"));
    assert!(get(&r, None, "/api/v1"));
    assert!(get(&r, None, "/apis"));
    assert!(!get(&r, None, "/ap"));
    assert!(!get(&r, None, "/API"));
}

#[test]
fn matches_exact_path_only_and_ignores_the_query() {
    let r = route(None, PathMatch::Exact("/health".to_owned()));
    assert!(get(&r, None, "/health"));
    assert!(get(&r, None, "/health?verbose=1"));
    assert!(!get(&r, None, "/health/"));
    assert!(!get(&r, None, "/healthz"));
    assert!(!get(&r, None, "/"));
}

#[test]
fn matches_path_regex_anywhere_unless_anchored() {
    let r = route(None, regex("^/v[0-9]+/"));
    assert!(get(&r, None, "/v1/users"));
    assert!(get(&r, None, "/v22/"));
    assert!(!get(&r, None, "/api/v1/users"));
    assert!(!get(&r, None, "/v/"));
    let unanchored = route(None, regex(r"\.php$"));
    assert!(get(&unanchored, None, "/a/b/index.php"));
    assert!(!get(&unanchored, None, "/index.php/x"));
    assert!(!get(&unanchored, None, "/index.html?x=.php"));
}

#[test]
fn matches_methods_exactly() {
    let mut r = route(None, prefix("/"));
    r.matcher.methods = vec!["GET".to_owned(), "POST".to_owned()];
    assert!(takes(&r, "GET", None, "/", &[]));
    assert!(takes(&r, "POST", None, "/", &[]));
    assert!(!takes(&r, "PUT", None, "/", &[]));
    assert!(!takes(&r, "HEAD", None, "/", &[]));
}

#[test]
fn matches_headers_exact_regex_and_present_with_any_value() {
    let mut r = route(None, prefix("/"));
    r.matcher.headers = vec![HeaderMatch {
        name: HeaderName::from_static("x-canary"),
        value: ValueMatch::Exact("1".to_owned()),
    }];
    assert!(takes(&r, "GET", None, "/", &[("x-canary", "1")]));
    assert!(takes(
        &r,
        "GET",
        None,
        "/",
        &[("X-Canary", "0"), ("x-canary", "1")]
    ));
    assert!(!takes(&r, "GET", None, "/", &[("x-canary", "10")]));
    assert!(!takes(&r, "GET", None, "/", &[]));

    r.matcher.headers[0].value = ValueMatch::Regex(Regex::new("^Mozilla/").expect("regex"));
    assert!(takes(&r, "GET", None, "/", &[("x-canary", "Mozilla/5.0")]));
    assert!(!takes(&r, "GET", None, "/", &[("x-canary", "curl/8")]));

    r.matcher.headers[0].value = ValueMatch::Present;
    assert!(takes(&r, "GET", None, "/", &[("x-canary", "")]));
    assert!(!takes(&r, "GET", None, "/", &[("x-other", "1")]));
}

#[test]
fn matches_query_on_the_first_parameter_of_that_name_decoded() {
    let mut r = route(None, prefix("/"));
    r.matcher.query = vec![QueryMatch {
        name: "debug mode".to_owned(),
        value: "on/1".to_owned(),
    }];
    assert!(get(&r, None, "/?debug+mode=on/1"));
    assert!(get(&r, None, "/?a=b&debug%20mode=on%2F1&c"));
    assert!(get(&r, None, "/?debug%20Mode=x&debug%20mode=on%2f1"));
    assert!(!get(&r, None, "/?debug+mode=off&debug+mode=on/1"));
    assert!(!get(&r, None, "/?debug+mode=on/12"));
    assert!(!get(&r, None, "/?debug+mode"));
    assert!(!get(&r, None, "/"));
    r.matcher.query[0].value = String::new();
    assert!(get(&r, None, "/?debug+mode"));
    assert!(get(&r, None, "/?debug+mode="));
}

#[test]
fn decoding_keeps_a_broken_escape_as_it_is() {
    assert!(decoded_eq("100%", "100%"));
    assert!(decoded_eq("%zz", "%zz"));
    assert!(decoded_eq("%4", "%4"));
    assert!(decoded_eq("%41", "A"));
    assert!(!decoded_eq("%41", "%41"));
}

#[test]
fn every_kind_must_match_together() {
    let mut r = route(Some("example.com"), prefix("/api/"));
    r.matcher.methods = vec!["POST".to_owned()];
    r.matcher.headers = vec![HeaderMatch {
        name: HeaderName::from_static("x-canary"),
        value: ValueMatch::Present,
    }];
    r.matcher.query = vec![QueryMatch {
        name: "v".to_owned(),
        value: "2".to_owned(),
    }];
    let canary = [("x-canary", "1")];
    assert!(takes(
        &r,
        "POST",
        Some("example.com"),
        "/api/x?v=2",
        &canary
    ));
    assert!(!takes(
        &r,
        "GET",
        Some("example.com"),
        "/api/x?v=2",
        &canary
    ));
    assert!(!takes(
        &r,
        "POST",
        Some("example.org"),
        "/api/x?v=2",
        &canary
    ));
    assert!(!takes(&r, "POST", Some("example.com"), "/x?v=2", &canary));
    assert!(!takes(
        &r,
        "POST",
        Some("example.com"),
        "/api/x?v=3",
        &canary
    ));
    assert!(!takes(&r, "POST", Some("example.com"), "/api/x?v=2", &[]));
}

#[test]
fn rewrite_replaces_what_the_route_matched() {
    let mut r = route(None, prefix("/api/"));
    assert_eq!(r.rewrite_path("/api/users"), None, "no rewrite configured");
    r.rewrite.path_prefix = Some("/".to_owned());
    assert_eq!(r.rewrite_path("/api/users").as_deref(), Some("/users"));
    assert_eq!(r.rewrite_path("/api/").as_deref(), Some("/"));
    assert_eq!(r.rewrite_path("/other"), None, "a filter changed the path");

    r.matcher.path = PathMatch::Exact("/old".to_owned());
    r.rewrite.path_prefix = Some("/new/place".to_owned());
    assert_eq!(r.rewrite_path("/old").as_deref(), Some("/new/place"));

    r.matcher.path = regex("/v[0-9]+/");
    r.rewrite.path_prefix = Some("/".to_owned());
    assert_eq!(
        r.rewrite_path("/api/v2/users").as_deref(),
        Some("/api/users")
    );
    assert_eq!(r.rewrite_path("/api/users"), None);
}
