//! Every file in `config/examples/` loads.

use std::path::{Path, PathBuf};

use wasmgate_config::{Config, Errors, ParseOptions, RequestHead, WasmSource, load};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn opts() -> ParseOptions {
    ParseOptions {
        builtin_filters: vec!["add-header".into()],
    }
}

fn load_ok(path: &Path) -> Config {
    match load(path, &opts()) {
        Ok(c) => c,
        Err(e) => panic!("{} should load:\n{e}", path.display()),
    }
}

#[test]
fn minimal_example_loads() {
    let c = load_ok(&example("minimal.yaml"));
    assert_eq!(c.listen, ["127.0.0.1:8080".parse().expect("literal")]);
    assert_eq!(c.upstreams.len(), 1);
    assert!(c.filters.is_empty());
    assert_eq!(c.routes.len(), 1);
    assert!(c.routes[0].filters.is_empty());
}

#[test]
fn full_example_loads_next_to_its_wasm_file() -> Result<(), Box<dyn std::error::Error>> {
    // The example names `filters/audit.wasm` beside itself; give it one.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("full.yaml");
    std::fs::copy(example("full.yaml"), &path)?;
    std::fs::create_dir(dir.path().join("filters"))?;
    std::fs::write(dir.path().join("filters/audit.wasm"), b"\0asm\x01\0\0\0")?;
    let c = load_ok(&path);

    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.admin, Some("127.0.0.1:9901".parse()?));
    assert_eq!(c.threads, Some(2));
    assert_eq!(c.cache_dir, Some(PathBuf::from("/var/cache/wasmgate")));
    assert_eq!(
        c.upgrade_sock,
        Some(PathBuf::from("/run/wasmgate/upgrade.sock"))
    );
    let upstreams: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(upstreams, ["backend", "static"]);
    assert_eq!(c.filters[0].wasm, WasmSource::Builtin("add-header".into()));
    assert_eq!(
        c.filters[0].configuration,
        br#"{"response":{"set":{"x-served-by":"wasmgate"}}}"#
    );
    assert_eq!(
        c.filters[1].wasm,
        WasmSource::File(dir.path().join("filters/audit.wasm"))
    );
    assert_eq!(c.filters[1].configuration, br#"{"level": "info"}"#);
    assert!(c.filters[1].fail_open);

    let chains: Vec<&[String]> = c.routes.iter().map(|r| r.filters.as_slice()).collect();
    assert!(chains[0].is_empty());
    assert_eq!(chains[1], ["audit", "add-header"]);
    assert_eq!(chains[4], ["add-header", "audit"]);
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["static", "api", "route-2", "route-3", "route-4"]);
    let mut headers = http::HeaderMap::new();
    let route = |method, host, path, query, headers: &http::HeaderMap| {
        let head = RequestHead {
            method,
            host,
            path,
            query,
            headers,
        };
        c.route_for(&head).map(|(i, _)| i)
    };
    let none = http::HeaderMap::new();
    assert_eq!(
        route(
            "GET",
            Some("cdn.example.com:8080"),
            "/static/a.css",
            None,
            &none
        ),
        Some(0)
    );
    assert_eq!(
        route("GET", Some("example.com"), "/static/a.css", None, &none),
        Some(4)
    );
    assert_eq!(
        route("GET", None, "/api/v1/x", Some("beta=1"), &none),
        Some(4)
    );
    headers.insert("x-canary", "1".parse()?);
    headers.insert("user-agent", "Mozilla/5.0".parse()?);
    headers.insert("x-request-id", "abc".parse()?);
    assert_eq!(
        route("GET", None, "/api/v1/x", Some("beta=1"), &headers),
        Some(1)
    );
    assert_eq!(
        route("PUT", None, "/api/v1/x", Some("beta=1"), &headers),
        Some(4)
    );
    assert_eq!(route("GET", None, "/health", None, &none), Some(2));
    assert_eq!(route("GET", None, "/old/x", None, &none), Some(3));
    assert_eq!(c.routes[1].upstreams(), [("backend", 90), ("static", 10)]);
    Ok(())
}

#[test]
fn full_example_in_place_lacks_only_its_wasm_file() {
    let path = example("full.yaml");
    let errors: Errors = load(&path, &opts()).expect_err("no filters/audit.wasm in examples/");
    let missing = example("filters/audit.wasm");
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].key, "filters[1].wasm");
    assert_eq!(
        errors.0[0].message,
        format!("wasm file not found: {}", missing.display())
    );
}

#[test]
fn tls_upstream_example_loads_next_to_its_certificates() -> Result<(), Box<dyn std::error::Error>> {
    // The configuration checks that the files exist; the proxy reads them when it builds.
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("upstreams-tls.yaml");
    std::fs::copy(example("upstreams-tls.yaml"), &path)?;
    std::fs::create_dir(dir.path().join("certs"))?;
    for f in ["ca.pem", "client.pem", "client.key"] {
        std::fs::write(dir.path().join("certs").join(f), b"-")?;
    }
    let c = load_ok(&path);
    let api = &c.upstreams[0];
    assert_eq!(api.endpoints[1].weight, 2);
    let tls = api.tls.as_ref().expect("tls");
    assert_eq!(tls.sni.as_deref(), Some("api.internal"));
    assert_eq!(tls.ca, Some(dir.path().join("certs/ca.pem")));
    assert!(tls.client_cert.is_some());
    let hc = api.health_check.as_ref().expect("health_check");
    assert_eq!(hc.path, "/healthz");
    assert!(hc.expects(204) && !hc.expects(503));
    assert_eq!(api.retries.attempts, 1);
    assert!(api.retries.connect_failure && api.retries.reset_before_response);
    assert_eq!(api.retries.statuses, [503]);

    // In place, only the certificates are missing.
    let errors = load(&example("upstreams-tls.yaml"), &opts()).expect_err("no certs/");
    let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "upstreams.api.tls.ca",
            "upstreams.api.tls.client_cert",
            "upstreams.api.tls.client_key"
        ]
    );
    Ok(())
}
