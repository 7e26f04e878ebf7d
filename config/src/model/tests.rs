use super::*;

fn route(host: Option<&str>, prefix: &str) -> Route {
    Route {
        name: format!("{host:?}{prefix}"),
        matcher: RouteMatch {
            host: host.map(str::to_owned),
            path: PathMatch::Prefix(prefix.to_owned()),
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
    let headers = http::HeaderMap::new();
    let head = |host, path| RequestHead {
        method: "GET",
        host,
        path,
        query: None,
        headers: &headers,
    };
    let index = |host, path| config.route_for(&head(host, path)).map(|(i, _)| i);
    assert_eq!(index(Some("api.example.com"), "/static/x"), Some(0));
    assert_eq!(index(Some("example.com"), "/static/x"), Some(1));
    assert_eq!(index(None, "/other"), Some(2));
    let only_api = Config {
        routes: vec![route(Some("api.example.com"), "/")],
        ..config.clone()
    };
    assert!(only_api.route_for(&head(None, "/")).is_none());
}
