//! Hot reload: filters, configurations, chains and routes swap under load with no failed
//! request; failed reloads keep the running generation; graceful binary upgrade.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmgate_integration::client;
use wasmgate_integration::filter;
use wasmgate_integration::load::{Load, LoadOptions, LoadReport};
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::{Proxy, replace_file};

/// A proxy-wasm module that sets `x-version: VERSION` on the request and on the response.
/// `vm_start` and `configure` are the bodies of those callbacks (an i32 result).
pub(crate) fn version_module(version: &str, vm_start: &str, configure: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
  (import "env" "proxy_replace_header_map_value"
    (func $replace (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    global.get $heap
    local.set $p
    global.get $heap
    local.get $n
    i32.add
    global.set $heap
    local.get $p)
  (data (i32.const 1024) "x-version")
  (data (i32.const 1040) "{version}")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) {vm_start})
  (func (export "proxy_on_configure") (param i32 i32) (result i32) {configure})
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $replace (i32.const 0) (i32.const 1024) (i32.const 9)
      (i32.const 1040) (i32.const {len})))
    i32.const 0)
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $replace (i32.const 2) (i32.const 1024) (i32.const 9)
      (i32.const 1040) (i32.const {len})))
    i32.const 0))"#,
        len = version.len()
    );
    wat::parse_str(wat).expect("valid WAT")
}

pub(crate) fn module(version: &str) -> Vec<u8> {
    version_module(version, "i32.const 1", "i32.const 1")
}

/// One upstream per origin (`a`, `b`, ...), the given `filters:` items, and one route to
/// `upstream` with the default chain.
pub(crate) fn config(origins: &[&Origin], filters: &str, upstream: &str, extra: &str) -> String {
    let upstreams: String = origins
        .iter()
        .zip(["a", "b", "c"])
        .map(|(o, name)| format!("  {name}:\n    endpoints: [\"{}\"]\n", o.endpoint()))
        .collect();
    format!(
        r#"listen: "{{listen}}"
admin: "{{admin}}"
threads: 2
{extra}upstreams:
{upstreams}filters:
{filters}
routes:
  - upstream: {upstream}
"#
    )
}

/// A `filters:` item running the module at `path`.
pub(crate) fn wasm_filter(name: &str, path: &Path) -> String {
    format!("  - name: {name}\n    wasm: {}\n", path.display())
}

/// A `filters:` item: add-header setting `x-version: VERSION` on request and response.
pub(crate) fn add_header_version(version: &str) -> String {
    let conf = json!({
        "request": {"set": {"x-version": version}},
        "response": {"set": {"x-version": version}},
    });
    format!(
        "  - name: version\n    wasm: {}\n    configuration: '{conf}'\n",
        filter("add_header")
    )
}

/// Sends requests until one answers with `x-version: version` (and `check` holds), up to
/// 15 s; panics with the proxy's log otherwise.
pub(crate) async fn wait_for(
    proxy: &Proxy,
    version: &str,
    check: impl Fn(&reqwest::Response) -> bool,
) {
    let http = client::http();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(resp) = http.get(proxy.url("/")).send().await
            && client::header_all(&resp, "x-version") == [version]
            && check(&resp)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{version} never answered; log:\n{}", proxy.log());
}

pub(crate) async fn get_json(url: String) -> Value {
    let resp = client::http().get(url).send().await.expect("admin request");
    resp.json().await.expect("JSON")
}

pub(crate) async fn post_reload(proxy: &Proxy) -> (u16, Value) {
    let resp = client::http()
        .post(proxy.admin_url("/reload"))
        .send()
        .await
        .expect("POST /reload");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON"))
}

pub(crate) async fn metrics(proxy: &Proxy) -> String {
    client::http()
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

pub(crate) fn assert_clean(report: &LoadReport, proxy: &Proxy) {
    assert_eq!(
        report.failures,
        0,
        "{:#?}\nlog:\n{}",
        report.failure_samples,
        proxy.log()
    );
    assert!(!report.hit_bound, "the load stopped on its own bound");
    assert!(report.requests >= 20, "too few requests: {report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn swapping_a_module_file_under_load_fails_no_request() {
    let origin = Origin::start().await;
    let files = tempfile::tempdir().unwrap();
    let wasm = files.path().join("version.wasm");
    std::fs::write(&wasm, module("v1")).unwrap();
    let proxy = Proxy::start(&config(&[&origin], &wasm_filter("version", &wasm), "a", ""));
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;
    for i in 0..6 {
        let version = if i % 2 == 0 { "v2" } else { "v1" };
        replace_file(&wasm, &module(version));
        wait_for(&proxy, version, |_| true).await;
    }
    let report = load.stop().await;
    assert_clean(&report, &proxy);
    assert_eq!(report.versions.keys().collect::<Vec<_>>(), ["v1", "v2"]);
    let config = get_json(proxy.admin_url("/config")).await;
    assert_eq!(config["generation"], 7, "{config:#}");
    assert_eq!(config["last_reload"]["result"], "ok");
    assert_eq!(config["last_reload"]["trigger"], "watch");
    assert_eq!(
        config["filters"][0]["sha256"].as_str().map(str::len),
        Some(64)
    );
    assert_eq!(config["filters"][0]["abi_version"], "0.2.1");
    assert_eq!(config["filters"][0]["vms"], 2);
    assert!(
        metrics(&proxy)
            .await
            .contains("wasmgate_reloads_total{result=\"ok\"} 6"),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_a_filter_configuration_under_load_fails_no_request() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&[&origin], &add_header_version("v1"), "a", ""));
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;
    for i in 0..10 {
        let version = if i % 2 == 0 { "v2" } else { "v1" };
        proxy.write_config(&config(&[&origin], &add_header_version(version), "a", ""));
        wait_for(&proxy, version, |_| true).await;
    }
    let report = load.stop().await;
    assert_clean(&report, &proxy);
    assert_eq!(report.versions.len(), 2);
    let config = get_json(proxy.admin_url("/config")).await;
    // The module did not change: it was not compiled again, only its VMs are new.
    assert_eq!(config["filters"][0]["load"], "reused", "{config:#}");
    assert_eq!(config["last_reload"]["filters"][0]["status"], "reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn adding_and_removing_filters_under_load_fails_no_request() {
    let origin = Origin::start().await;
    let base = add_header_version("v1");
    let extra = format!(
        "  - name: extra\n    wasm: {}\n    configuration: '{}'\n",
        filter("add_header"),
        json!({"response": {"set": {"x-extra": "yes"}}})
    );
    let proxy = Proxy::start(&config(&[&origin], &base, "a", ""));
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;
    let has_extra = |r: &reqwest::Response| client::header_all(r, "x-extra") == ["yes"];

    proxy.write_config(&config(&[&origin], &format!("{base}{extra}"), "a", ""));
    wait_for(&proxy, "v1", has_extra).await;
    let config_json = get_json(proxy.admin_url("/config")).await;
    let loads: Vec<&str> = config_json["filters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["load"].as_str())
        .collect();
    // `version` kept its VMs; `extra` runs the module `version` already loaded.
    assert_eq!(loads, ["kept", "reused"], "{config_json:#}");

    proxy.write_config(&config(&[&origin], &base, "a", ""));
    wait_for(&proxy, "v1", |r| !has_extra(r)).await;
    let report = load.stop().await;
    assert_clean(&report, &proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_a_route_upstream_under_load_fails_no_request() {
    let a = Origin::start_named("a").await;
    let b = Origin::start_named("b").await;
    let filters = add_header_version("v1");
    let proxy = Proxy::start(&config(&[&a, &b], &filters, "a", ""));
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    let from = |name: &'static str| {
        move |r: &reqwest::Response| client::header_all(r, "x-origin-name") == [name]
    };
    wait_for(&proxy, "v1", from("a")).await;
    proxy.write_config(&config(&[&a, &b], &filters, "b", ""));
    wait_for(&proxy, "v1", from("b")).await;
    // Requests that started before the swap may still reach `a`; none after.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let served_by_a = a.received().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = load.stop().await;
    assert_clean(&report, &proxy);
    assert_eq!(a.received().len(), served_by_a, "a gets no new request");
    assert!(!b.received().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_request_started_before_a_swap_finishes_on_the_old_chain() {
    let origin = Origin::start().await;
    let files = tempfile::tempdir().unwrap();
    let wasm = files.path().join("version.wasm");
    std::fs::write(&wasm, module("v1")).unwrap();
    let proxy = Proxy::start(&config(&[&origin], &wasm_filter("version", &wasm), "a", ""));
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;

    let slow = tokio::spawn({
        let url = proxy.url("/slow/2000");
        async move {
            let resp = client::http().get(url).send().await.expect("slow request");
            let version = client::header_all(&resp, "x-version");
            let body: Value = resp.json().await.expect("JSON");
            (version, body, Instant::now())
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !origin.received().iter().any(|r| r.path == "/slow/2000") {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replace_file(&wasm, &module("v2"));
    wait_for(&proxy, "v2", |_| true).await;
    let swapped = Instant::now();
    let config = get_json(proxy.admin_url("/config")).await;
    assert_eq!(
        config["generations_draining"], 1,
        "the slow request holds v1"
    );

    let (version, body, finished) = slow.await.unwrap();
    assert!(
        finished > swapped,
        "the slow request was still in flight after the swap"
    );
    assert_eq!(version, ["v1"], "its response phase ran on the old chain");
    let seen: Vec<&Value> = body["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == "x-version")
        .map(|pair| &pair[1])
        .collect();
    assert_eq!(seen, [&json!("v1")], "so did its request phase");

    // Once it ended, the old generation is freed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let config = get_json(proxy.admin_url("/config")).await;
        if config["generations_draining"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "generation 1 was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = load.stop().await;
    assert_clean(&report, &proxy);
}

/// A request held paused by a filter, waiting on an HTTP callout, when the swap happens: it
/// resumes and finishes on the chain it started on.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_paused_on_a_callout_during_a_swap_finishes_on_the_old_chain() {
    let origin = Origin::start().await;
    let auth = Origin::start_named("auth").await;
    let text = |version: &str| {
        let auth_filter = format!(
            "  - name: auth\n    wasm: {}\n    configuration: '{}'\n",
            filter("ext_auth"),
            json!({"upstream": "auth", "path": "/slow/1500", "timeout_ms": 10000})
        );
        format!(
            r#"listen: "{{listen}}"
admin: "{{admin}}"
threads: 2
upstreams:
  a:
    endpoints: ["{}"]
  auth:
    endpoints: ["{}"]
filters:
{}{auth_filter}routes:
  - match: {{path_prefix: /paused}}
    upstream: a
    filters: [auth, version]
  - upstream: a
    filters: [version]
"#,
            origin.endpoint(),
            auth.endpoint(),
            add_header_version(version)
        )
    };
    let proxy = Proxy::start(&text("v1"));
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;

    let paused = tokio::spawn({
        let url = proxy.url("/paused");
        async move {
            let resp = client::http()
                .get(url)
                .send()
                .await
                .expect("paused request");
            let status = resp.status().as_u16();
            let version = client::header_all(&resp, "x-version");
            (status, version, Instant::now())
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while auth.received().is_empty() {
        assert!(Instant::now() < deadline, "the callout never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.write_config(&text("v2"));
    wait_for(&proxy, "v2", |_| true).await;
    let swapped = Instant::now();
    let config = get_json(proxy.admin_url("/config")).await;
    assert_eq!(
        config["generations_draining"], 1,
        "the paused request holds v1"
    );

    let (status, version, finished) = paused.await.unwrap();
    assert_eq!(status, 200, "log:\n{}", proxy.log());
    assert!(finished > swapped, "it was still paused after the swap");
    assert_eq!(version, ["v1"], "it resumed on the old chain");
    let seen = origin
        .received()
        .into_iter()
        .find(|r| r.path == "/paused")
        .expect("the paused request reached the origin");
    assert_eq!(seen.header("x-version"), Some("v1"));
    let report = load.stop().await;
    assert_clean(&report, &proxy);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_reloads_keep_the_running_generation_and_report_why() {
    let origin = Origin::start().await;
    let files = tempfile::tempdir().unwrap();
    let wasm = files.path().join("version.wasm");
    let good_module = module("v1");
    std::fs::write(&wasm, &good_module).unwrap();
    let template = config(&[&origin], &wasm_filter("version", &wasm), "a", "");
    let proxy = Proxy::start_with(&template, &["--no-watch"]);
    let good = good_text(&proxy, &template);
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;
    let path = proxy.config_path().display().to_string();

    let bad_module = |vm_start: &str, configure: &str| version_module("v2", vm_start, configure);
    let truncated = module("v2")[..100].to_vec();
    let missing = files.path().join("missing.wasm");
    // (what, configuration, module, expected error text)
    let cases: Vec<(&str, String, Vec<u8>, String)> = vec![
        (
            "an empty file (caught mid-write)",
            String::new(),
            good_module.clone(),
            format!("{path}:1:1: empty configuration file"),
        ),
        (
            "a YAML syntax error",
            good.replace("routes:", "routes: [\n"),
            good_module.clone(),
            format!("{path}:13:3: did not find expected node content"),
        ),
        (
            "an unknown key",
            good.replace("threads: 2", "threads: 2\nthreds: 3"),
            good_module.clone(),
            format!("{path}:4:1: threds: unknown field `threds`"),
        ),
        (
            "a missing module",
            good.replace(&wasm.display().to_string(), &missing.display().to_string()),
            good_module.clone(),
            format!("wasm file not found: {}", missing.display()),
        ),
        (
            "a corrupt module",
            good.clone(),
            b"garbage, not wasm".to_vec(),
            "not a WebAssembly module".into(),
        ),
        (
            "a truncated module",
            good.clone(),
            truncated,
            "invalid WebAssembly".into(),
        ),
        (
            "a module that is not proxy-wasm",
            good.clone(),
            wat::parse_str("(module (memory (export \"memory\") 1))").unwrap(),
            "not a proxy-wasm module".into(),
        ),
        (
            "on_vm_start fails",
            good.clone(),
            bad_module("i32.const 0", "i32.const 1"),
            "proxy_on_vm_start returned false".into(),
        ),
        (
            "on_configure fails",
            good.clone(),
            bad_module("i32.const 1", "i32.const 0"),
            "proxy_on_configure returned false".into(),
        ),
        (
            "on_configure loops",
            good.clone(),
            bad_module("i32.const 1", "(loop $l (br $l)) i32.const 1"),
            "deadline".into(),
        ),
        (
            "on_vm_start blows its memory",
            good.clone(),
            bad_module(
                "(if (i32.eq (memory.grow (i32.const 4096)) (i32.const -1)) (then unreachable)) i32.const 1",
                "i32.const 1",
            ),
            "VM failed while starting".into(),
        ),
    ];
    let count = cases.len();
    for (what, text, module_bytes, expected) in cases {
        replace_file(&wasm, &module_bytes);
        replace_file(&proxy.config_path(), text.as_bytes());
        let (status, outcome) = post_reload(&proxy).await;
        assert_eq!(status, 422, "{what}: {outcome:#}");
        assert_eq!(outcome["result"], "error", "{what}");
        assert_eq!(outcome["generation"], 1, "{what}");
        let error = outcome["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&expected),
            "{what}: {error}\nexpected: {expected}"
        );
        // Still serving generation 1.
        let resp = client::http().get(proxy.url("/")).send().await.unwrap();
        assert_eq!(client::header_all(&resp, "x-version"), ["v1"], "{what}");
        assert!(proxy.log().contains(error), "{what}: logged");
    }
    // The filter at fault is named.
    let last = get_json(proxy.admin_url("/config")).await["last_reload"].clone();
    assert_eq!(last["filters"][0]["status"], "failed", "{last:#}");
    assert!(metrics(&proxy).await.contains(&format!(
        "wasmgate_reloads_total{{result=\"error\"}} {count}"
    )));

    // Put back, the files are what generation 1 was built from: nothing to do.
    replace_file(&wasm, &good_module);
    replace_file(&proxy.config_path(), good.as_bytes());
    let (status, outcome) = post_reload(&proxy).await;
    assert_eq!(
        (status, outcome["result"].clone()),
        (200, json!("unchanged"))
    );
    replace_file(&wasm, &module("v2"));
    let (status, outcome) = post_reload(&proxy).await;
    assert_eq!(status, 200, "{outcome:#}");
    assert_eq!(outcome["result"], "ok");
    assert_eq!(outcome["generation"], 2);
    assert_eq!(outcome["filters"][0]["status"], "compiled");
    wait_for(&proxy, "v2", |_| true).await;
    let report = load.stop().await;
    assert_clean(&report, &proxy);
}

/// `config` as the proxy wrote it: with its addresses.
pub(crate) fn good_text(proxy: &Proxy, config: &str) -> String {
    config
        .replace("{listen}", &proxy.addr.to_string())
        .replace("{admin}", &proxy.admin.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_written_in_pieces_is_loaded_only_once_complete() {
    use std::io::Write;
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&[&origin], &add_header_version("v1"), "a", ""));
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;
    // In place, in two writes with a pause: a reload between them would see half a file
    // (an error, or worse, fewer routes).
    let text = good_text(
        &proxy,
        &config(&[&origin], &add_header_version("v2"), "a", ""),
    );
    let (first, rest) = text.split_at(text.len() / 2);
    let mut file = std::fs::File::create(proxy.config_path()).unwrap();
    file.write_all(first.as_bytes()).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    file.write_all(rest.as_bytes()).unwrap();
    drop(file);
    wait_for(&proxy, "v2", |_| true).await;
    let report = load.stop().await;
    assert_clean(&report, &proxy);
    let metrics = metrics(&proxy).await;
    assert!(
        !metrics.contains("wasmgate_reloads_total{result=\"error\"}"),
        "{metrics}\n{}",
        proxy.log()
    );
    assert_eq!(get_json(proxy.admin_url("/config")).await["generation"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_new_listen_addresses_are_reported_not_applied() {
    let origin = Origin::start().await;
    let proxy = Proxy::start_with(
        &config(&[&origin], &add_header_version("v1"), "a", ""),
        &["--no-watch"],
    );
    wait_for(&proxy, "v1", |_| true).await;
    let moved = config(&[&origin], &add_header_version("v2"), "a", "")
        .replace("listen: \"{listen}\"", "listen: \"127.0.0.1:1\"");
    proxy.write_config(&moved);
    proxy.signal(libc::SIGHUP);
    wait_for(&proxy, "v2", |_| true).await;
    let last = get_json(proxy.admin_url("/config")).await["last_reload"].clone();
    assert_eq!(last["trigger"], "sighup", "{last:#}");
    let warning = last["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("still serving on"), "{last:#}");
    assert!(proxy.log().contains(warning));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_module_cache_lets_a_restart_skip_compiling() {
    let origin = Origin::start().await;
    let files = tempfile::tempdir().unwrap();
    let wasm = files.path().join("version.wasm");
    std::fs::write(&wasm, module("v1")).unwrap();
    let cache = files.path().join("cache");
    let text = config(
        &[&origin],
        &wasm_filter("version", &wasm),
        "a",
        &format!("cache_dir: {}\n", cache.display()),
    );
    let load_of = |config: &Value| config["filters"][0]["load"].as_str().map(str::to_owned);
    {
        let proxy = Proxy::start(&text);
        let config = get_json(proxy.admin_url("/config")).await;
        assert_eq!(load_of(&config).as_deref(), Some("compiled"));
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].extension().unwrap(), "cwasm");
    let proxy = Proxy::start(&text);
    let config = get_json(proxy.admin_url("/config")).await;
    assert_eq!(load_of(&config).as_deref(), Some("cached"), "{config:#}");
    wait_for(&proxy, "v1", |_| true).await;
    assert!(
        metrics(&proxy)
            .await
            .contains("wasmgate_module_cache_total{result=\"hit\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graceful_upgrade_hands_the_listeners_to_a_new_process() {
    let origin = Origin::start().await;
    let text = config(
        &[&origin],
        &add_header_version("v1"),
        "a",
        "upgrade_sock: upgrade.sock\n",
    );
    let mut old = Proxy::start_with(&text, &["--no-watch"]);
    // One connection per request: each goes to whichever process accepts it.
    let load = Load::start(
        old.url("/"),
        LoadOptions {
            keep_alive: false,
            pause: Duration::from_millis(5),
            ..Default::default()
        },
    );
    wait_for(&old, "v1", |_| true).await;
    // The new process runs v2 so that its answers can be told apart.
    old.write_config(&text.replace("v1", "v2"));
    let mut new = old.start_upgrade();
    let socket = old.dir.path().join("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(new.is_alive(), "{}", new.log());
        assert!(
            Instant::now() < deadline,
            "no upgrade socket:\n{}",
            new.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    old.signal(libc::SIGQUIT);
    assert!(
        new.wait_for_log("took over the listening sockets", Duration::from_secs(30)),
        "{}",
        new.log()
    );
    wait_for(&old, "v2", |_| true).await;
    assert!(
        old.wait_exit(Duration::from_secs(40)),
        "the old process drains and exits:\n{}",
        old.log()
    );
    // Only the new process is left, and it serves.
    wait_for(&old, "v2", |_| true).await;
    let report = load.stop().await;
    assert_clean(&report, &old);
    assert!(new.is_alive(), "{}", new.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_symlink_swap_of_the_configuration_directory_reloads() {
    use std::os::unix::fs::symlink;
    let origin = Origin::start().await;
    let template = config(&[&origin], &add_header_version("v1"), "a", "");
    let proxy = Proxy::start(&template);
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;
    // As Kubernetes mounts a ConfigMap: wasmgate.yaml -> ..data/wasmgate.yaml, ..data -> ..v1.
    let dir = proxy.dir.path();
    let version_dir = |v: &str, text: &str| {
        std::fs::create_dir(dir.join(format!("..{v}"))).unwrap();
        std::fs::write(dir.join(format!("..{v}/wasmgate.yaml")), text).unwrap();
    };
    version_dir("v1", &good_text(&proxy, &template));
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/wasmgate.yaml", dir.join("link.tmp")).unwrap();
    std::fs::rename(dir.join("link.tmp"), proxy.config_path()).unwrap();
    // The new version is published by swapping the `..data` link in one rename.
    let v2 = config(&[&origin], &add_header_version("v2"), "a", "");
    version_dir("v2", &good_text(&proxy, &v2));
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    wait_for(&proxy, "v2", |_| true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = load.stop().await;
    assert_clean(&report, &proxy);
}
