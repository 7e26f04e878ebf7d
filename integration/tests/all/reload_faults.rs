//! Reload faults from the reliability catalogue (D-1..D-12) not covered in `reload`: every bad
//! reload is refused whole while benign traffic runs, and the running generation keeps serving.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmgate_integration::client;
use wasmgate_integration::load::{Load, LoadOptions};
use wasmgate_integration::origin::Origin;
use wasmgate_integration::proxy::{Proxy, replace_file};

use crate::reload::{
    add_header_version, assert_clean, config, get_json, metrics, module, post_reload, wait_for,
    wasm_filter,
};
use crate::support::testkit;

/// A proxy-wasm module whose start function (`_start` or `_initialize`) runs `body`.
fn module_with_start(export: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (memory (export "memory") 1)
  (func (export "malloc") (param i32) (result i32) i32.const 1024)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "{export}") {body}))"#
    ))
    .expect("valid WAT")
}

/// A proxy-wasm module with `extra` added to an otherwise valid skeleton (which has no
/// allocator unless `extra` gives one).
fn skeleton(extra: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  {extra}
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_context_create") (param i32 i32)))"#
    ))
    .expect("valid WAT")
}

/// A valid module that takes the compiler seconds: `funcs` functions of dense arithmetic.
fn compile_bomb(funcs: usize) -> Vec<u8> {
    let mut wat = String::from("(module (memory (export \"memory\") 1)\n");
    for f in 0..funcs {
        wat.push_str(&format!(
            "(func (export \"f{f}\") (param i32) (result i32) (local"
        ));
        wat.push_str(&" i32".repeat(50));
        wat.push(')');
        for i in 0..4000 {
            let (a, b, c) = (i % 50, (i * 7 + 3) % 50, (i * 13 + 5) % 50);
            wat.push_str(&format!(
                " local.get {a} local.get {b} i32.mul local.get {c} i32.xor local.set {a}"
            ));
        }
        wat.push_str(" local.get 0)\n");
    }
    wat.push(')');
    wat::parse_str(wat).expect("valid WAT")
}

/// D-1, D-2, D-3, D-5, D-7, D-8: each bad reload is refused with a reason naming the fault,
/// counted, logged, and generation 1 keeps serving every benign request.
#[tokio::test(flavor = "multi_thread")]
async fn bad_modules_and_configs_are_refused_whole_while_traffic_runs() {
    let origin = Origin::start().await;
    let files = tempfile::tempdir().unwrap();
    let wasm = files.path().join("version.wasm");
    std::fs::write(&wasm, module("v1")).unwrap();
    let cache = files.path().join("cache");
    let extra = format!("cache_dir: {}\n", cache.display());
    let template = config(&[&origin], &wasm_filter("version", &wasm), "a", &extra);
    let proxy = Proxy::start_with(&template, &["--no-watch"]);
    let good = crate::reload::good_text(&proxy, &template);
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;

    // A precompiled artifact wasmgate itself wrote: still never loaded from the wasm slot.
    let artifact = std::fs::read_dir(&cache)
        .expect("the cache directory")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("a cached artifact");
    let entry = std::fs::read(artifact).unwrap();
    // The entry wraps wasmtime's artifact, an ELF object, in wasmgate's own header.
    let elf_at = entry
        .windows(4)
        .position(|w| w == b"\x7fELF")
        .expect("an ELF object in the cache entry");
    let elf = entry[elf_at..].to_vec();

    let mut header_then_garbage = b"\0asm\x01\0\0\0".to_vec();
    header_then_garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let directory = files.path().join("a-directory.wasm");
    std::fs::create_dir(&directory).unwrap();
    let unreadable = files.path().join("unreadable.wasm");
    std::fs::write(&unreadable, module("v2")).unwrap();
    std::fs::set_permissions(
        &unreadable,
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    let at = |path: &Path| good.replace(&wasm.display().to_string(), &path.display().to_string());
    let valid = module("v2");
    let dup = good.replace(
        "routes:",
        &format!("  - name: version\n    wasm: {}\nroutes:", wasm.display()),
    );

    // (case, configuration, module, expected error text)
    let mut cases: Vec<(&str, String, Vec<u8>, String)> = vec![
        (
            "D-1 a valid header then garbage",
            good.clone(),
            header_then_garbage,
            "invalid WebAssembly".into(),
        ),
        (
            "D-2 the wasm path is a directory",
            at(&directory),
            valid.clone(),
            format!(
                "wasm path is a directory, not a file: {}",
                directory.display()
            ),
        ),
        (
            "D-3 no allocator export",
            good.clone(),
            skeleton(""),
            "missing export: malloc or proxy_on_memory_allocate".into(),
        ),
        (
            "D-3 a callback with the wrong signature",
            good.clone(),
            skeleton(
                r#"(func (export "malloc") (param i32) (result i32) i32.const 0)
  (func (export "proxy_on_request_headers") (param i32) (result i32) i32.const 0)"#,
            ),
            "export proxy_on_request_headers has signature".into(),
        ),
        (
            "D-3 an unknown import",
            good.clone(),
            skeleton(
                r#"(import "env" "proxy_open_a_socket" (func (param i32) (result i32)))
  (func (export "malloc") (param i32) (result i32) i32.const 0)"#,
            ),
            "imports env.proxy_open_a_socket, which wasmgate does not provide".into(),
        ),
        (
            "D-3 a known import with the wrong signature",
            good.clone(),
            skeleton(
                r#"(import "env" "proxy_log" (func (param i32) (result i32)))
  (func (export "malloc") (param i32) (result i32) i32.const 0)"#,
            ),
            "cannot link".into(),
        ),
        (
            "D-5 _start loops",
            good.clone(),
            module_with_start("_start", "(loop $l (br $l))"),
            "deadline".into(),
        ),
        (
            "D-5 _initialize loops",
            good.clone(),
            module_with_start("_initialize", "(loop $l (br $l))"),
            "deadline".into(),
        ),
        (
            "D-5 _initialize exhausts memory",
            good.clone(),
            module_with_start(
                "_initialize",
                "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 256)) (i32.const -1)))) unreachable",
            ),
            "VM failed while starting".into(),
        ),
        (
            "D-7 a cache entry wasmgate wrote",
            good.clone(),
            entry,
            "precompiled artifacts are never loaded".into(),
        ),
        (
            "D-7 the wasmtime artifact (ELF) inside it",
            good.clone(),
            elf,
            "precompiled artifacts are never loaded".into(),
        ),
        (
            "D-8 a duplicate filter name",
            dup,
            valid.clone(),
            "duplicate filter name \"version\" (first declared at line 9)".into(),
        ),
        (
            "D-8 a negative limit",
            good.replace("threads: 2", "threads: 2\nlimits: {max_body_bytes: -1}"),
            valid.clone(),
            "max_body_bytes must be between".into(),
        ),
        (
            "D-8 a huge limit",
            good.replace(
                "threads: 2",
                "threads: 2\nlimits: {max_memory_bytes: 99999999999999}",
            ),
            valid.clone(),
            "max_memory_bytes must be between".into(),
        ),
        (
            "D-8 a route to a missing filter",
            good.replace("  - upstream: a", "  - upstream: a\n    filters: [nope]"),
            valid.clone(),
            "nope".into(),
        ),
    ];
    if std::fs::read(&unreadable).is_err() {
        // Root reads through any mode: the case only means something for other users.
        cases.push((
            "D-2 an unreadable file",
            at(&unreadable),
            valid.clone(),
            format!("cannot read {}", unreadable.display()),
        ));
    }
    let count = cases.len();
    for (what, text, module_bytes, expected) in cases {
        replace_file(&wasm, &module_bytes);
        replace_file(&proxy.config_path(), text.as_bytes());
        let (status, outcome) = post_reload(&proxy).await;
        assert_eq!(status, 422, "{what}: {outcome:#}");
        assert_eq!(outcome["generation"], 1, "{what}");
        let error = outcome["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&expected),
            "{what}: {error}\nexpected: {expected}"
        );
        let resp = client::http().get(proxy.url("/")).send().await.unwrap();
        assert_eq!(client::header_all(&resp, "x-version"), ["v1"], "{what}");
        assert!(proxy.log().contains(error), "{what}: logged");
    }
    assert!(
        metrics(&proxy).await.contains(&format!(
            "wasmgate_reloads_total{{result=\"error\"}} {count}"
        )),
        "every refusal is counted"
    );

    replace_file(&wasm, &module("v2"));
    replace_file(&proxy.config_path(), good.as_bytes());
    let (status, outcome) = post_reload(&proxy).await;
    assert_eq!((status, outcome["generation"].clone()), (200, json!(2)));
    wait_for(&proxy, "v2", |_| true).await;
    let report = load.stop().await;
    assert_clean(&report, &proxy);
}

/// D-6: a module that takes the compiler seconds is given up at `compile_timeout_ms`; the
/// compile runs off the request path, so benign traffic is not failed meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_compile_bomb_is_abandoned_at_the_compile_timeout() {
    let origin = Origin::start().await;
    let files = tempfile::tempdir().unwrap();
    let wasm = files.path().join("version.wasm");
    std::fs::write(&wasm, module("v1")).unwrap();
    let plain = config(&[&origin], &wasm_filter("version", &wasm), "a", "");
    let proxy = Proxy::start_with(&plain, &["--no-watch"]);
    let load = Load::start(proxy.url("/"), LoadOptions::default());
    wait_for(&proxy, "v1", |_| true).await;

    // The tight limit only for the reload that brings the bomb: on a loaded machine even a
    // small module may take a debug build's compiler longer than 200 ms.
    let limited = format!(
        "{}    limits: {{compile_timeout_ms: 200}}\n",
        wasm_filter("version", &wasm)
    );
    proxy.write_config(&config(&[&origin], &limited, "a", ""));
    replace_file(&wasm, &compile_bomb(8));
    let asked = Instant::now();
    let (status, outcome) = post_reload(&proxy).await;
    let answered = asked.elapsed();
    assert_eq!(status, 422, "{outcome:#}");
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("compiling took longer than 200ms (limits.compile_timeout_ms)"),
        "{error}"
    );
    // Generous: the point is that the reload does not wait for the whole compile.
    assert!(answered < Duration::from_secs(30), "{answered:?}");
    let resp = client::http().get(proxy.url("/")).send().await.unwrap();
    assert_eq!(client::header_all(&resp, "x-version"), ["v1"]);

    // The abandoned compile still occupies wasmtime's compile threads until it ends, so the
    // next module gets the default timeout rather than 200 ms.
    replace_file(&wasm, &module("v2"));
    proxy.write_config(&plain);
    let (status, outcome) = post_reload(&proxy).await;
    assert_eq!(status, 200, "{outcome:#}");
    wait_for(&proxy, "v2", |_| true).await;
    let report = load.stop().await;
    assert_clean(&report, &proxy);
}

/// D-10: the filter flips between two versions every 100 ms under load, with long requests in
/// flight across the flips; no request fails, and each response carries the version of one
/// generation in both phases (the load checks that the origin saw the same version).
#[tokio::test(flavor = "multi_thread")]
async fn flipping_versions_every_100ms_fails_no_request() {
    let origin = Origin::start().await;
    let proxy = Proxy::start(&config(&[&origin], &add_header_version("v1"), "a", ""));
    let load = Load::start(
        proxy.url("/"),
        LoadOptions {
            clients: 4,
            ..LoadOptions::default()
        },
    );
    wait_for(&proxy, "v1", |_| true).await;
    let mut long = Vec::new();
    for i in 0..30 {
        let version = if i % 2 == 0 { "v2" } else { "v1" };
        proxy.write_config(&config(&[&origin], &add_header_version(version), "a", ""));
        if i % 5 == 0 {
            let url = proxy.url("/slow/700");
            long.push(tokio::spawn(async move {
                let resp = client::http().get(url).send().await.expect("long request");
                let status = resp.status().as_u16();
                let response_version = client::header_all(&resp, "x-version");
                let body: serde_json::Value = resp.json().await.expect("JSON");
                let request_version: Vec<String> = body["headers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|pair| pair[0] == "x-version")
                    .filter_map(|pair| pair[1].as_str().map(str::to_string))
                    .collect();
                (status, response_version, request_version)
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in long {
        let (status, response_version, request_version) = task.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(response_version.len(), 1, "{response_version:?}");
        assert_eq!(
            response_version, request_version,
            "one generation ran both phases"
        );
    }
    let report = load.stop().await;
    assert_clean(&report, &proxy);
    assert_eq!(report.versions.len(), 2, "{report:?}");
    let config = get_json(proxy.admin_url("/config")).await;
    assert!(
        config["generation"].as_u64().unwrap_or(0) >= 2,
        "{config:#}"
    );
}

/// D-11: a hundred reloads, each building new VMs (alternating two module versions), leave
/// resident memory near where it was and no generation behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_reloads_leave_memory_near_its_baseline() {
    let origin = Origin::start().await;
    let files = tempfile::tempdir().unwrap();
    let wasm = files.path().join("version.wasm");
    std::fs::write(&wasm, module("v1")).unwrap();
    let mut proxy = Proxy::start_with(
        &config(&[&origin], &wasm_filter("version", &wasm), "a", ""),
        &["--no-watch"],
    );
    let http = client::http();
    let serve = |n: usize| {
        let http = http.clone();
        let url = proxy.url("/");
        async move {
            for _ in 0..n {
                let resp = http.get(&url).send().await.expect("request");
                assert_eq!(resp.status(), 200);
            }
        }
    };
    // Warm up: both versions compiled and cached, allocator pools filled.
    for version in ["v2", "v1", "v2", "v1"] {
        replace_file(&wasm, &module(version));
        assert_eq!(post_reload(&proxy).await.0, 200);
        serve(20).await;
    }
    let baseline = proxy.rss_kib();
    let fds = proxy.open_fds();
    for i in 0..100 {
        replace_file(&wasm, &module(if i % 2 == 0 { "v2" } else { "v1" }));
        let (status, outcome) = post_reload(&proxy).await;
        assert_eq!(status, 200, "{outcome:#}");
        serve(2).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let config = get_json(proxy.admin_url("/config")).await;
        if config["generations_draining"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old generations stay: {config:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = proxy.rss_kib();
    eprintln!(
        "RSS before 100 reloads {baseline} KiB, after {after} KiB; fds {fds} -> {}",
        proxy.open_fds()
    );
    // A leak of one generation's VMs per reload would be hundreds of MiB over 100 reloads.
    assert!(
        after <= baseline + 24 * 1024,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
    assert!(
        proxy.open_fds() <= fds + 8,
        "fds {fds} -> {}",
        proxy.open_fds()
    );
    assert!(proxy.is_alive());
}

/// D-12: a filter valid at load that traps on every request: each request fails closed (503),
/// the VM is replaced with a backoff, the proxy stays up. There is no automatic rollback
/// (documented): the next good reload fixes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_filter_that_traps_on_every_request_fails_closed_until_replaced() {
    let origin = Origin::start().await;
    let good = add_header_version("v1");
    let proxy = Proxy::start(&config(&[&origin], &good, "a", ""));
    wait_for(&proxy, "v1", |_| true).await;

    let trapper = testkit(
        "version",
        json!({"on_request_headers": [{"op": "panic"}]}),
        "",
    );
    proxy.write_config(&config(&[&origin], &trapper, "a", ""));
    let http = client::http();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut failed = 0;
    while failed < 20 {
        assert!(Instant::now() < deadline, "log:\n{}", proxy.log());
        let resp = http.get(proxy.url("/")).send().await.expect("a response");
        if resp.status() == 503 {
            failed += 1;
        } else {
            assert_eq!(client::header_all(&resp, "x-version"), ["v1"]);
        }
    }
    let text = metrics(&proxy).await;
    assert!(
        text.contains("wasmgate_vm_faults_total{filter=\"version\"}"),
        "{text}"
    );
    assert!(proxy.log().contains("filter failed, request failed"));

    proxy.write_config(&config(&[&origin], &add_header_version("v2"), "a", ""));
    wait_for(&proxy, "v2", |_| true).await;
    for _ in 0..5 {
        let resp = http.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
}
