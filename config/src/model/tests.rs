use super::*;

fn route(host: Option<&str>, prefix: &str) -> Route {
    Route {
        host: host.map(str::to_owned),
        path_prefix: prefix.to_owned(),
        upstream: "backend".to_owned(),
        filters: Vec::new(),
        location: Location {
            file: PathBuf::from("t.yaml"),
            line: 1,
            column: 1,
        },
    }
}

#[test]
fn matches_any_host_without_host_pattern() {
    let r = route(None, "/");
    assert!(r.matches(None, "/"));
    assert!(r.matches(Some("anything:1"), "/x"));
}

#[test]
fn matches_host_ignoring_case_and_port() {
    let r = route(Some("example.com"), "/");
    assert!(r.matches(Some("example.com"), "/"));
    assert!(r.matches(Some("EXAMPLE.com:8080"), "/"));
    assert!(!r.matches(Some("example.org"), "/"));
    assert!(!r.matches(Some("www.example.com"), "/"));
    assert!(!r.matches(None, "/"));
}

#[test]
fn matches_wildcard_subdomains_only() {
    let r = route(Some("*.example.com"), "/");
    assert!(r.matches(Some("a.example.com"), "/"));
    assert!(r.matches(Some("a.b.Example.COM:443"), "/"));
    assert!(!r.matches(Some("example.com"), "/"));
    assert!(!r.matches(Some(".example.com"), "/"));
    assert!(!r.matches(Some("badexample.com"), "/"));
}

#[test]
fn matches_ipv6_hosts_with_and_without_port() {
    let r = route(Some("[::1]"), "/");
    assert!(r.matches(Some("[::1]:8080"), "/"));
    assert!(r.matches(Some("[::1]"), "/"));
    assert_eq!(strip_port("::1"), "::1");
}

#[test]
fn matches_path_as_plain_byte_prefix() {
    let r = route(None, "/api");
    assert!(r.matches(None, "/api"));
    assert!(r.matches(None, "/api/v1"));
    assert!(r.matches(None, "/apis"));
    assert!(!r.matches(None, "/ap"));
    assert!(!r.matches(None, "/API"));
}

#[test]
fn route_for_returns_first_match_in_file_order() {
    let config = Config {
        source: PathBuf::from("t.yaml"),
        listen: Vec::new(),
        admin: None,
        threads: None,
        upstreams: Vec::new(),
        filters: Vec::new(),
        routes: vec![
            route(Some("api.example.com"), "/"),
            route(None, "/static"),
            route(None, "/"),
        ],
        cache_dir: None,
        upgrade_sock: None,
        listen_tls: Vec::new(),
        limits: Limits::default(),
        client: Default::default(),
        max_paused_streams: crate::DEFAULT_MAX_PAUSED_STREAMS,
        forwarding: Default::default(),
        access_log: None,
    };
    let index = |host, path| config.route_for(host, path).map(|(i, _)| i);
    assert_eq!(index(Some("api.example.com"), "/static/x"), Some(0));
    assert_eq!(index(Some("example.com"), "/static/x"), Some(1));
    assert_eq!(index(None, "/other"), Some(2));
    let only_api = Config {
        routes: vec![route(Some("api.example.com"), "/")],
        ..config.clone()
    };
    assert!(only_api.route_for(None, "/").is_none());
}
