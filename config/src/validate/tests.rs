//! Semantic checks: each error at its key, all errors together, and the values a valid file yields.

use std::path::{Path, PathBuf};

use crate::testing::{error, errors, ok, opts};
use crate::{WasmSource, load, parse};

const HEAD: &str = "\
listen: 127.0.0.1:8080
upstreams:
  backend:
    endpoints: [\"127.0.0.1:9000\"]
";

fn with_routes(filters: &str, routes: &str) -> String {
    format!("{HEAD}filters:\n{filters}routes:\n{routes}")
}

const ADD_HEADER: &str = "  - name: add-header\n    wasm: builtin:add-header\n";

#[test]
fn unknown_upstream_is_placed_at_its_key() {
    let text = format!(
        "{HEAD}\
filters: []
routes:
  - match: {{path_prefix: /api}}
    upstream: backend
  - match:
      host: example.com
    filters: []
    upstream: bakend
"
    );
    assert_eq!(
        error(&text),
        r#"wasmgate.yaml:12:5: routes[1].upstream: unknown upstream "bakend" (known: backend)"#
    );
}

#[test]
fn semantic_errors_are_reported_together_in_file_order() {
    let text = "\
listen: [127.0.0.1:80, localhost:80]
admin: nope
threads: 0
upstreams:
  backend:
    endpoints: [\"127.0.0.1:0\"]
  bad/name:
    endpoints: []
  backend:
    endpoints: [\"b:1\"]
filters:
  - name: a
    wasm: builtin:nope
  - name: a
    wasm: missing.wasm
routes:
  - match: {path_prefix: api, host: \"*.*.com\"}
    upstream: bakend
    filters: [a, b, a]
";
    let all = errors(text);
    let expected = [
        r#"wasmgate.yaml:1:24: listen[1]: invalid socket address "localhost:80": expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"#,
        r#"wasmgate.yaml:2:1: admin: invalid socket address "nope": expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080"#,
        "wasmgate.yaml:3:1: threads: threads must be between 1 and 1024, got 0",
        r#"wasmgate.yaml:6:17: upstreams.backend.endpoints[0]: invalid endpoint "127.0.0.1:0": port must be a number from 1 to 65535"#,
        r#"wasmgate.yaml:7:3: upstreams.bad/name: invalid upstream name "bad/name": use only letters, digits, '_', '.' and '-'"#,
        "wasmgate.yaml:8:5: upstreams.bad/name.endpoints: an upstream needs at least one endpoint",
        r#"wasmgate.yaml:9:3: upstreams.backend: duplicate upstream "backend" (first declared at line 5)"#,
        r#"wasmgate.yaml:13:5: filters[0].wasm: unknown builtin filter "nope" (known: add-header)"#,
        r#"wasmgate.yaml:14:5: filters[1].name: duplicate filter name "a" (first declared at line 12)"#,
        "wasmgate.yaml:15:5: filters[1].wasm: wasm file not found: missing.wasm",
        r#"wasmgate.yaml:17:13: routes[0].match.path_prefix: path_prefix must start with "/", got "api""#,
        r#"wasmgate.yaml:17:31: routes[0].match.host: invalid host "*.*.com": a wildcard is allowed only as a leading "*.""#,
        r#"wasmgate.yaml:18:5: routes[0].upstream: unknown upstream "bakend" (known: backend, bad/name)"#,
        r#"wasmgate.yaml:19:18: routes[0].filters[1]: unknown filter "b" (known: a)"#,
        r#"wasmgate.yaml:19:21: routes[0].filters[2]: filter "a" is listed more than once in this route"#,
    ];
    assert_eq!(all, expected);
}

#[test]
fn empty_sections_are_errors() {
    let text = "listen: []\nupstreams: {}\nroutes: []\n";
    assert_eq!(
        errors(text),
        [
            "wasmgate.yaml:1:1: listen: at least one listen address is required",
            "wasmgate.yaml:2:1: upstreams: at least one upstream is required",
            "wasmgate.yaml:3:1: routes: at least one route is required",
        ]
    );
}

#[test]
fn threads_out_of_range_are_errors() {
    for value in ["-1", "1025"] {
        let text = format!("{HEAD}threads: {value}\nroutes: [{{upstream: backend}}]\n");
        assert_eq!(
            error(&text),
            format!("wasmgate.yaml:5:1: threads: threads must be between 1 and 1024, got {value}")
        );
    }
    let text =
        format!("{HEAD}threads: 1024\nadmin: \"[::1]:9901\"\nroutes: [{{upstream: backend}}]\n");
    let c = ok(&text);
    assert_eq!(c.threads, Some(1024));
    assert_eq!(c.admin, Some("[::1]:9901".parse().expect("literal")));
}

#[test]
fn unknown_builtin_with_no_builtins_says_none() {
    let text = with_routes(ADD_HEADER, "  - upstream: backend\n");
    let e = parse(&text, Path::new("w.yaml"), &crate::ParseOptions::default())
        .expect_err("no builtins");
    assert_eq!(
        e.to_string(),
        r#"w.yaml:7:5: filters[0].wasm: unknown builtin filter "add-header" (known: none)"#
    );
}

#[test]
fn relative_wasm_resolves_against_the_config_directory() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("filters"))?;
    std::fs::write(dir.path().join("filters/a.wasm"), b"\0asm")?;
    let absolute = dir.path().join("filters/a.wasm");
    let text = with_routes(
        &format!(
            "  - name: rel\n    wasm: filters/a.wasm\n  - name: abs\n    wasm: {}\n",
            absolute.display()
        ),
        "  - upstream: backend\n",
    );
    let path = dir.path().join("wasmgate.yaml");
    std::fs::write(&path, &text)?;
    let c = load(&path, &opts()).map_err(std::io::Error::other)?;
    assert_eq!(c.source, path);
    assert_eq!(c.filters[0].wasm, WasmSource::File(absolute.clone()));
    assert_eq!(c.filters[1].wasm, WasmSource::File(absolute));
    // Parsed from elsewhere, the same text looks next to that file instead.
    let elsewhere = parse(&text, Path::new("/nonexistent/wasmgate.yaml"), &opts())
        .expect_err("no such file there");
    assert_eq!(
        elsewhere.to_string(),
        "/nonexistent/wasmgate.yaml:7:5: filters[0].wasm: wasm file not found: /nonexistent/filters/a.wasm"
    );
    Ok(())
}

#[test]
fn wasm_directory_or_empty_is_an_error() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("a.wasm"))?;
    let text = with_routes(
        "  - name: d\n    wasm: a.wasm\n  - name: e\n    wasm: \"\"\n",
        "  - upstream: backend\n",
    );
    let source = dir.path().join("wasmgate.yaml");
    let e = parse(&text, &source, &opts()).expect_err("a directory");
    let lines: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}:7:5: filters[0].wasm: wasm path is a directory, not a file: {}",
                source.display(),
                dir.path().join("a.wasm").display()
            ),
            format!(
                "{}:9:5: filters[1].wasm: wasm source is empty: give a file path or builtin:NAME",
                source.display()
            ),
        ]
    );
    Ok(())
}

#[test]
fn load_reports_unreadable_file_by_path() {
    let path = PathBuf::from("/nonexistent/wasmgate.yaml");
    let e = load(&path, &opts()).expect_err("missing");
    assert_eq!(e.0.len(), 1);
    assert!(e.0[0].location.is_none());
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/wasmgate.yaml: "),
        "{e}"
    );
}

#[test]
fn configuration_string_is_bytes_mapping_is_json_absent_is_empty() {
    let filters = "  - name: s
    wasm: builtin:add-header
    configuration: \"{not: json}\"
    vm_configuration: |
      two
      lines
  - name: m
    wasm: builtin:add-header
    configuration: {b: [1, true, null], a: x}
    vm_configuration: [1, 2]
  - name: scalars
    wasm: builtin:add-header
    configuration: 42
    vm_configuration: true
  - name: none
    wasm: builtin:add-header
    configuration: null
";
    let c = ok(&with_routes(filters, "  - upstream: backend\n"));
    let bufs: Vec<(&[u8], &[u8])> = c
        .filters
        .iter()
        .map(|f| (f.configuration.as_slice(), f.vm_configuration.as_slice()))
        .collect();
    assert_eq!(
        bufs,
        [
            (&b"{not: json}"[..], &b"two\nlines\n"[..]),
            (&br#"{"b":[1,true,null],"a":"x"}"#[..], &b"[1,2]"[..]),
            (&b"42"[..], &b"true"[..]),
            (&b""[..], &b""[..]),
        ]
    );
}

#[test]
fn filter_defaults_and_explicit_values() {
    let filters = "  - name: plain
    wasm: builtin:add-header
  - name: set
    wasm: builtin:add-header
    root_id: r
    vm_id: v
    fail_open: true
";
    let c = ok(&with_routes(filters, "  - upstream: backend\n"));
    let (plain, set) = (&c.filters[0], &c.filters[1]);
    assert_eq!(
        (
            plain.root_id.as_str(),
            plain.vm_id.as_str(),
            plain.fail_open
        ),
        ("", "", false)
    );
    assert_eq!(
        (set.root_id.as_str(), set.vm_id.as_str(), set.fail_open),
        ("r", "v", true)
    );
    assert_eq!((plain.location.line, plain.location.column), (6, 5));
    assert_eq!((set.location.line, set.location.column), (8, 5));
}

#[test]
fn listen_accepts_one_address_or_a_list() {
    let one = ok(&format!("{HEAD}routes: [{{upstream: backend}}]\n"));
    assert_eq!(one.listen, ["127.0.0.1:8080".parse().expect("literal")]);
    let text = format!("{HEAD}routes: [{{upstream: backend}}]\n").replace(
        "listen: 127.0.0.1:8080",
        "listen:\n  - 127.0.0.1:8080\n  - \"[::1]:8081\"",
    );
    let many = ok(&text);
    assert_eq!(
        many.listen,
        [
            "127.0.0.1:8080".parse().expect("literal"),
            "[::1]:8081".parse().expect("literal")
        ]
    );
    let bad = format!("{HEAD}routes: [{{upstream: backend}}]\n").replace("8080", "80800");
    assert!(error(&bad).starts_with("wasmgate.yaml:1:1: listen: invalid socket address"));
}

#[test]
fn route_filters_absent_is_default_chain_empty_is_none_list_is_that_order() {
    let filters = format!("{ADD_HEADER}  - name: second\n    wasm: builtin:add-header\n");
    let routes = "  - upstream: backend
    match: {path_prefix: /default}
  - upstream: backend
    filters: []
  - upstream: backend
    filters: [second, add-header]
";
    let c = ok(&with_routes(&filters, routes));
    let chains: Vec<&[String]> = c.routes.iter().map(|r| r.filters.as_slice()).collect();
    assert_eq!(chains[0], ["add-header", "second"]);
    assert!(chains[1].is_empty());
    assert_eq!(chains[2], ["second", "add-header"]);
}

#[test]
fn route_match_defaults_and_host_is_lowercased() {
    let routes = "  - upstream: backend
  - upstream: backend
    match: {host: API.Example.com}
";
    let c = ok(&with_routes("", routes).replace("filters:\n", ""));
    assert!(matches!(&c.routes[0].matcher.path, crate::PathMatch::Prefix(p) if p == "/"));
    assert_eq!(c.routes[0].matcher.host, None);
    assert_eq!(c.routes[1].matcher.host.as_deref(), Some("api.example.com"));
    assert_eq!(
        (c.routes[1].location.line, c.routes[1].location.column),
        (7, 5)
    );
    let headers = http::HeaderMap::new();
    let head = crate::RequestHead {
        method: "GET",
        host: Some("api.example.com:443"),
        path: "/x",
        query: None,
        headers: &headers,
    };
    assert_eq!(c.route_for(&head).map(|(i, _)| i), Some(0));
}

#[test]
fn upstreams_keep_file_order() {
    let text = "\
listen: 127.0.0.1:1
upstreams:
  zeta: {endpoints: [\"z:1\"]}
  alpha: {endpoints: [\"a:1\", \"[::1]:2\"]}
routes: [{upstream: alpha}]
";
    let c = ok(text);
    let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha"]);
    let endpoints: Vec<&str> = c.upstreams[1]
        .endpoints
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(endpoints, ["a:1", "[::1]:2"]);
}

#[test]
fn cache_dir_and_upgrade_sock_resolve_against_the_config_directory() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("wasmgate.yaml");
    let text = format!(
        "{HEAD}routes: [{{upstream: backend}}]\ncache_dir: cache\nupgrade_sock: /run/wg.sock\n"
    );
    let c = parse(&text, &source, &opts()).map_err(std::io::Error::other)?;
    // The cache directory need not exist yet: the proxy creates it.
    assert_eq!(c.cache_dir, Some(dir.path().join("cache")));
    assert_eq!(c.upgrade_sock, Some(PathBuf::from("/run/wg.sock")));
    let c = ok(&format!("{HEAD}routes: [{{upstream: backend}}]\n"));
    assert_eq!((c.cache_dir, c.upgrade_sock), (None, None));
    Ok(())
}

#[test]
fn bad_cache_dir_and_upgrade_sock_are_errors_at_their_keys() -> std::io::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("file"), b"")?;
    let source = dir.path().join("wasmgate.yaml");
    let long = "s".repeat(120);
    let text =
        format!("{HEAD}routes: [{{upstream: backend}}]\ncache_dir: file\nupgrade_sock: /{long}\n");
    let e = parse(&text, &source, &opts()).expect_err("both are wrong");
    let lines: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}:6:1: cache_dir: cache_dir exists and is not a directory: {}",
                source.display(),
                dir.path().join("file").display()
            ),
            format!(
                "{}:7:1: upgrade_sock: upgrade_sock path is 121 bytes long, over the 107 bytes a Unix socket allows: /{long}",
                source.display()
            ),
        ]
    );
    let empty = errors(&format!(
        "{HEAD}routes: [{{upstream: backend}}]\ncache_dir: \"\"\nupgrade_sock: \"\"\n"
    ));
    assert_eq!(
        empty,
        [
            "wasmgate.yaml:6:1: cache_dir: cache_dir is empty: give a path or leave the key out",
            "wasmgate.yaml:7:1: upgrade_sock: upgrade_sock is empty: give a path or leave the key out",
        ]
    );
    Ok(())
}

#[test]
fn same_settings_compares_everything_but_the_module_and_the_position() {
    let filters = "  - name: a
    wasm: builtin:add-header
    configuration: {x: 1}
  - name: a2
    wasm: builtin:add-header
    configuration: {x: 1}
";
    let c = ok(&with_routes(
        filters,
        "  - upstream: backend\n    filters: []\n",
    ));
    let a = &c.filters[0];
    assert!(a.same_settings(a));
    let moved = crate::Filter {
        wasm: WasmSource::Builtin("other".into()),
        location: c.filters[1].location.clone(),
        ..a.clone()
    };
    assert!(
        a.same_settings(&moved),
        "module and position are not settings"
    );
    assert!(!a.same_settings(&c.filters[1]), "the name differs");
    let changes: [fn(&mut crate::Filter); 5] = [
        |f| f.configuration.push(b' '),
        |f| f.vm_configuration = b"x".to_vec(),
        |f| f.root_id = "r".into(),
        |f| f.vm_id = "v".into(),
        |f| f.fail_open = true,
    ];
    for change in changes {
        let mut other = a.clone();
        change(&mut other);
        assert!(!a.same_settings(&other), "{other:?}");
    }
}

#[test]
fn tls_listeners_protocols_and_limits_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), "x").unwrap();
    let path = dir.path().join("wasmgate.yaml");
    let text = r#"listen: 127.0.0.1:8080
listen_tls:
  - {address: 127.0.0.1:8443, cert: cert.pem, key: missing.pem}
limits: {callback_deadline_ms: 0, max_body_bytes: 2048}
upstreams:
  a:
    endpoints: ["127.0.0.1:1"]
    protocol: http3
  b:
    endpoints: ["127.0.0.1:2"]
    protocol: http2
filters:
  - name: f
    wasm: builtin:add-header
    limits: {max_memory_bytes: 1000}
  - name: g
    wasm: builtin:add-header
    limits: {callback_deadline_ms: 20, compile_timeout_ms: 0}
routes:
  - upstream: a
"#;
    let opts = crate::ParseOptions {
        builtin_filters: vec!["add-header".into()],
    };
    let errors = crate::parse(text, &path, &opts).unwrap_err().to_string();
    assert!(errors.contains(":3:"), "{errors}");
    assert!(
        errors.contains("listen_tls[0].key: key file not found"),
        "{errors}"
    );
    assert!(
        errors.contains(
            "limits.callback_deadline_ms: callback_deadline_ms must be between 1 and 60000, got 0"
        ),
        "{errors}"
    );
    assert!(
        errors.contains("upstreams.a.protocol: unknown protocol \"http3\""),
        "{errors}"
    );
    assert!(
        errors.contains("filters[0].limits.max_memory_bytes"),
        "{errors}"
    );
    assert!(
        errors.contains("compile_timeout_ms must be between 1 and 600000, got 0"),
        "{errors}"
    );

    let good = text
        .replace("missing.pem", "cert.pem")
        .replace("callback_deadline_ms: 0", "callback_deadline_ms: 50")
        .replace("protocol: http3", "protocol: http1")
        .replace("max_memory_bytes: 1000", "max_memory_bytes: 16777216")
        .replace("compile_timeout_ms: 0", "compile_timeout_ms: 250");
    let config = crate::parse(&good, &path, &opts).unwrap();
    assert_eq!(config.listen_tls[0].cert, dir.path().join("cert.pem"));
    assert_eq!(config.upstreams[1].protocol, crate::Protocol::Http2);
    let f = &config.filters[0].limits;
    assert_eq!(
        (f.callback_deadline_ms, f.max_memory_bytes, f.max_body_bytes),
        (Some(50), Some(16 << 20), Some(2048)),
        "a filter's limits fall back to the top-level ones"
    );
    assert_eq!(config.filters[1].limits.callback_deadline_ms, Some(20));
    assert_eq!(config.filters[1].limits.compile_timeout_ms, Some(250));
}

#[test]
fn client_limits_default_and_are_range_checked() {
    let base = format!("{HEAD}routes:\n  - upstream: backend\n");
    assert_eq!(ok(&base).client, crate::ClientLimits::default());
    let text = format!(
        "{HEAD}client:\n  header_timeout_ms: 50\n  max_header_bytes: 2000000\n  max_headers: 0\n  \
         body_timeout_ms: 1500\n  body_min_rate: -1\n  keepalive_timeout_ms: 0\nroutes:\n  - upstream: backend\n"
    );
    let all = errors(&text);
    assert_eq!(
        all,
        [
            "wasmgate.yaml:6:3: client.header_timeout_ms: header_timeout_ms must be between 100 and 600000, got 50",
            "wasmgate.yaml:7:3: client.max_header_bytes: max_header_bytes must be between 1024 and 524288, got 2000000",
            "wasmgate.yaml:8:3: client.max_headers: max_headers must be between 1 and 256, got 0",
            "wasmgate.yaml:10:3: client.body_min_rate: body_min_rate must be between 0 and 1000000000, got -1",
        ]
    );
    let good = text
        .replace("_ms: 50\n", "_ms: 1000\n")
        .replace("2000000", "8192")
        .replace("max_headers: 0", "max_headers: 20")
        .replace("-1", "0");
    let client = ok(&good).client;
    assert_eq!(
        client,
        crate::ClientLimits {
            header_timeout_ms: 1000,
            max_header_bytes: 8192,
            max_headers: 20,
            body_timeout_ms: 1500,
            body_min_rate: 0,
            keepalive_timeout_ms: 0,
        }
    );
    assert!(
        error(&format!(
            "{HEAD}client: {{header_timeout: 5}}\nroutes:\n  - upstream: backend\n"
        ))
        .contains("unknown field `header_timeout`"),
        "unknown keys are errors"
    );
}

#[test]
fn upstream_timeouts_default_and_are_read_in_milliseconds() {
    let text = "\
listen: 127.0.0.1:1
upstreams:
  plain: {endpoints: [\"a:1\"]}
  tuned:
    endpoints: [\"b:1\"]
    connect_timeout_ms: 300
    read_timeout_ms: 400
    write_timeout_ms: 500
    response_timeout_ms: 600
max_paused_streams: 7
routes: [{upstream: plain}]
";
    let c = ok(text);
    assert_eq!(c.upstreams[0].timeouts, crate::UpstreamTimeouts::default());
    let ms = std::time::Duration::from_millis;
    let tuned = c.upstreams[1].timeouts;
    assert_eq!(
        (tuned.connect, tuned.read, tuned.write, tuned.response),
        (ms(300), ms(400), ms(500), Some(ms(600)))
    );
    assert_eq!(c.max_paused_streams, 7);
    let defaults = ok(&text.replace("max_paused_streams: 7\n", ""));
    assert_eq!(
        defaults.max_paused_streams,
        crate::DEFAULT_MAX_PAUSED_STREAMS
    );
}

#[test]
fn upstream_timeouts_out_of_range_are_errors_at_their_keys() {
    let text = "\
listen: 127.0.0.1:1
upstreams:
  a:
    endpoints: [\"a:1\"]
    connect_timeout_ms: 0
    read_timeout_ms: -5
    write_timeout_ms: 86400001
    response_timeout_ms: 0
max_paused_streams: 0
routes: [{upstream: a}]
";
    assert_eq!(
        errors(text),
        [
            "wasmgate.yaml:5:5: upstreams.a.connect_timeout_ms: \
             connect_timeout_ms must be between 1 and 600000, got 0",
            "wasmgate.yaml:6:5: upstreams.a.read_timeout_ms: \
             read_timeout_ms must be between 1 and 86400000, got -5",
            "wasmgate.yaml:7:5: upstreams.a.write_timeout_ms: \
             write_timeout_ms must be between 1 and 86400000, got 86400001",
            "wasmgate.yaml:8:5: upstreams.a.response_timeout_ms: \
             response_timeout_ms must be between 1 and 86400000, got 0",
            "wasmgate.yaml:9:1: max_paused_streams: \
             max_paused_streams must be between 1 and 1000000, got 0",
        ]
    );
    let unknown = error(
        "\
listen: 127.0.0.1:1
upstreams:
  a: {endpoints: [\"a:1\"], response_timeout: 5}
routes: [{upstream: a}]
",
    );
    assert!(unknown.starts_with("wasmgate.yaml:3:"), "{unknown}");
    assert!(unknown.contains("response_timeout"), "{unknown}");
}
