use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmgate_abi::{Runtime, RuntimeConfig};
use wasmgate_config::ParseOptions;

use super::{ReloadResult, Reloader, Snapshot, Trigger};
use crate::service::State;

fn options() -> ParseOptions {
    ParseOptions {
        builtin_filters: crate::builtin::names(),
    }
}

/// A configuration with two add-header filters: `a` sets `x-a: {a}`, `b` never changes.
fn config(listen: &str, a: &str) -> String {
    format!(
        r#"listen: {listen}
threads: 2
upstreams:
  origin:
    endpoints: ["127.0.0.1:9"]
filters:
  - name: a
    wasm: builtin:add-header
    configuration: {{response: {{set: {{x-a: "{a}"}}}}}}
  - name: b
    wasm: builtin:add-header
    configuration: {{response: {{set: {{x-b: "1"}}}}}}
routes:
  - upstream: origin
"#
    )
}

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    state: Arc<State>,
    reloader: Arc<Reloader>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wasmgate.yaml");
    std::fs::write(&path, config("127.0.0.1:1", "1")).unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        max_vms: 32,
        ..Default::default()
    })
    .unwrap();
    let snapshot = Snapshot::read(&path, &options()).unwrap();
    let first = snapshot.build(1, &runtime, 2, None, &[]).unwrap();
    let state = State::new(first);
    let reloader = Reloader::new(state.clone(), runtime, Some(path.clone()), options(), 2);
    Setup {
        _dir: dir,
        path,
        state,
        reloader,
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn nothing_changed_builds_nothing() {
    let s = setup();
    let outcome = s.reloader.reload_blocking(Trigger::Admin);
    assert_eq!(outcome.result, ReloadResult::Unchanged, "{outcome:?}");
    assert_eq!((outcome.generation, outcome.previous_generation), (1, 1));
    assert_eq!(s.state.current.load().id, 1);
    assert_eq!(outcome.to_json()["result"], "unchanged");
}

#[test]
fn a_changed_filter_gets_new_vms_and_an_unchanged_one_keeps_its_own() {
    let s = setup();
    let before = s.state.current.load_full();
    write(&s.path, &config("127.0.0.1:1", "2"));
    let outcome = s.reloader.reload_blocking(Trigger::Watch);
    assert_eq!(outcome.result, ReloadResult::Ok, "{outcome:?}");
    assert_eq!((outcome.generation, outcome.previous_generation), (2, 1));
    let after = s.state.current.load_full();
    assert_eq!(after.id, 2);
    let status: Vec<(&str, &str)> = outcome
        .filters
        .iter()
        .map(|f| (f.name.as_str(), f.status))
        .collect();
    assert_eq!(status, [("a", "reused"), ("b", "kept")]);
    // `a`: the same compiled module, new VMs; `b`: the very same VMs.
    assert!(Arc::ptr_eq(
        before.filters[0].module(),
        after.filters[0].module()
    ));
    assert!(!Arc::ptr_eq(
        &before.filters[0].pool,
        &after.filters[0].pool
    ));
    assert!(Arc::ptr_eq(&before.filters[1].pool, &after.filters[1].pool));
    assert!(outcome.warnings.is_empty());
    let json = outcome.to_json();
    assert_eq!(json["generation"], 2);
    assert_eq!(json["filters"][1]["vms"], 2);
}

#[test]
fn a_failed_reload_keeps_the_running_generation_and_says_where() {
    let s = setup();
    let cases = [
        ("", "wasmgate.yaml:1:1: empty configuration file"),
        ("listen: [\n", "wasmgate.yaml:2:1: "),
        (
            &config("127.0.0.1:1", "1").replace("threads: 2", "threads: 2\nthreds: 3"),
            "wasmgate.yaml:3:1: threds: unknown field `threds`",
        ),
        (
            &config("127.0.0.1:1", "1").replace("x-a", "bad header"),
            "wasmgate.yaml:7:5: filter a: proxy_on_configure returned false",
        ),
    ];
    for (text, expected) in cases {
        write(&s.path, text);
        let outcome = s.reloader.reload_blocking(Trigger::Admin);
        assert_eq!(outcome.result, ReloadResult::Error, "{text}");
        let error = outcome.error.clone().unwrap_or_default();
        assert!(error.contains(expected), "{error}\nexpected: {expected}");
        assert_eq!(outcome.generation, 1);
        assert_eq!(s.state.current.load().id, 1);
    }
    // The last case names the filter at fault.
    let last = s.reloader.last_outcome().unwrap();
    let status: Vec<&str> = last.filters.iter().map(|f| f.status).collect();
    assert_eq!(status, ["failed", "not_loaded"]);
    // Fixed, the next reload goes through.
    write(&s.path, &config("127.0.0.1:1", "3"));
    let outcome = s.reloader.reload_blocking(Trigger::Admin);
    assert_eq!(outcome.result, ReloadResult::Ok, "{outcome:?}");
}

#[test]
fn new_listen_addresses_are_reported_not_applied() {
    let s = setup();
    write(&s.path, &config("127.0.0.1:2", "2"));
    let outcome = s.reloader.reload_blocking(Trigger::Signal);
    assert_eq!(outcome.result, ReloadResult::Ok);
    assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
    assert!(outcome.warnings[0].contains("still serving on [127.0.0.1:1]"));
}

#[test]
fn a_replaced_generation_is_freed_once_no_request_holds_it() {
    let s = setup();
    let in_flight = s.state.current.load_full();
    write(&s.path, &config("127.0.0.1:1", "2"));
    assert_eq!(
        s.reloader.reload_blocking(Trigger::Admin).result,
        ReloadResult::Ok
    );
    assert_eq!(s.reloader.draining(), 1);
    let old = Arc::downgrade(&in_flight);
    assert_eq!(s.reloader.reap(), 1, "a request still holds generation 1");
    drop(in_flight);
    assert_eq!(s.reloader.reap(), 0);
    assert!(old.upgrade().is_none(), "generation 1 is freed");
}

#[test]
fn watched_files_follow_the_last_configuration_read() {
    let s = setup();
    assert_eq!(s.reloader.watched_files(), std::slice::from_ref(&s.path));
    let dir = s.path.parent().unwrap();
    std::fs::copy(
        Path::new(env!("WASMGATE_FILTERS_DIR")).join("add_header.wasm"),
        dir.join("f.wasm"),
    )
    .unwrap();
    write(
        &s.path,
        &config("127.0.0.1:1", "1").replace("builtin:add-header", "f.wasm"),
    );
    let outcome = s.reloader.reload_blocking(Trigger::Watch);
    assert_eq!(outcome.result, ReloadResult::Ok, "{outcome:?}");
    assert_eq!(
        s.reloader.watched_files(),
        [s.path.clone(), dir.join("f.wasm")]
    );
}

/// `module` with a custom section appended: the same code, another SHA-256.
fn tagged(module: &[u8], tag: u8) -> Vec<u8> {
    let mut out = module.to_vec();
    out.extend([0x00, 0x03, 0x01, b't', tag]);
    out
}

#[test]
fn swapping_back_to_a_recent_module_does_not_compile_it_again() {
    let s = setup();
    let dir = s.path.parent().unwrap().to_path_buf();
    let original =
        std::fs::read(Path::new(env!("WASMGATE_FILTERS_DIR")).join("add_header.wasm")).unwrap();
    let module = dir.join("f.wasm");
    let text = config("127.0.0.1:1", "1").replace("builtin:add-header", "f.wasm");
    let mut statuses = Vec::new();
    for tag in [b'1', b'2', b'1', b'2'] {
        std::fs::write(&module, tagged(&original, tag)).unwrap();
        write(&s.path, &text);
        let outcome = s.reloader.reload_blocking(Trigger::Admin);
        assert_eq!(outcome.result, ReloadResult::Ok, "{outcome:?}");
        statuses.push(outcome.filters[0].status);
    }
    assert_eq!(statuses, ["compiled", "compiled", "reused", "reused"]);
}
