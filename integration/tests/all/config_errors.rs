//! `wasmgate check` and `wasmgate run` on good and broken configurations.

use wasmgate_integration::filter;
use wasmgate_integration::proxy::run_command;

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("wasmgate.yaml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn check_prints_one_line_per_filter_with_abi_size_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        &format!(
            r#"listen: 127.0.0.1:1
upstreams:
  u:
    endpoints: ["127.0.0.1:2"]
filters:
  - name: kit
    wasm: {}
  - name: hdr
    wasm: builtin:add-header
    configuration: {{request: {{add: {{x-a: b}}}}}}
routes:
  - upstream: u
"#,
            filter("testkit")
        ),
    );
    let out = run_command(&["check", "-c", &path]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ok  kit  abi 0.2.1  "),
        "{}",
        out.stdout
    );
    assert!(lines[0].contains(" bytes  sha256 "));
    assert!(
        lines[1].starts_with("ok  hdr  abi 0.2.1  "),
        "{}",
        out.stdout
    );
    assert!(lines[2].ends_with("2 filter(s), 1 route(s), 1 upstream(s): OK"));
}

#[test]
fn check_reports_config_errors_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        r#"listen: 127.0.0.1:1
upstreams:
  backend:
    endpoints: ["127.0.0.1:2"]
filters:
  - name: a
    wasm: builtin:add-header
  - name: a
    wasm: missing.wasm
routes:
  - upstream: bakend
    filters: [a, nope]
"#,
    );
    let out = run_command(&["check", "-c", &path]);
    assert_eq!(out.status.code(), Some(1));
    let err = &out.stderr;
    assert!(
        err.contains(&format!("{path}:8:5: filters[1].name")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path}:9:5: filters[1].wasm")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path}:11:5: routes[0].upstream")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{path}:12:18: routes[0].filters[1]: unknown filter \"nope\""
        )),
        "{err}"
    );
    assert!(
        err.contains("unknown upstream \"bakend\" (known: backend)"),
        "{err}"
    );
}

#[test]
fn check_reports_a_yaml_syntax_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "listen: 127.0.0.1:1\nupstreams: [\n");
    let out = run_command(&["check", "-c", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains(&format!("{path}:")), "{}", out.stderr);
}

#[test]
fn check_reports_a_filter_that_rejects_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        r#"listen: 127.0.0.1:1
upstreams:
  u:
    endpoints: ["127.0.0.1:2"]
filters:
  - name: hdr
    wasm: builtin:add-header
    configuration: "this is not json"
routes:
  - upstream: u
"#,
    );
    let out = run_command(&["check", "-c", &path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains(":6:"),
        "points at the filter: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("proxy_on_configure returned false"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_refuses_a_file_that_is_not_proxy_wasm() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("plain.wasm");
    std::fs::write(
        &wasm,
        wat::parse_str("(module (memory (export \"memory\") 1))").unwrap(),
    )
    .unwrap();
    let elf = dir.path().join("elf.wasm");
    std::fs::write(&elf, b"\x7fELF\x02\x01\x01\0").unwrap();
    for (file, expected) in [
        (&wasm, "not a proxy-wasm module"),
        (&elf, "not a WebAssembly module"),
    ] {
        let path = write(
            &dir,
            &format!(
                "listen: 127.0.0.1:1\nupstreams:\n  u:\n    endpoints: [\"127.0.0.1:2\"]\nfilters:\n  - name: f\n    wasm: {}\nroutes:\n  - upstream: u\n",
                file.display()
            ),
        );
        let out = run_command(&["check", "-c", &path]);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stderr.contains(expected), "{}", out.stderr);
    }
}

#[test]
fn run_without_a_config_file_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let out = run_command(&["run", "-c", &missing.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("no configuration file at"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("wasmgate demo"), "{}", out.stderr);
}
