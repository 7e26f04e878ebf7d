//! Tenant isolation through the real proxy (reliability catalogue, section F). F-1 (shared
//! data) and F-2 (another namespace's queue) are in `shared.rs`
//! (`shared_data_and_queues_are_isolated_between_vm_ids`); here: a tenant filling shared data
//! to the cap (F-3), sensitive properties and WASI from a filter (F-4), and a noisy neighbour
//! (F-5).

use std::time::{Duration, Instant};

use crate::hostile_support::{
    Env, FilterSpec, RET_LEN, RET_PTR, SCRATCH, Wat, percentiles, route, seen_header,
};

/// F-3: a tenant that writes 1 KiB values under new keys until the host refuses gets
/// InternalFailure at its namespace's cap (16 MiB); another tenant's key survives and it can
/// still write; the proxy's memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_filling_shared_data_hits_its_cap_and_others_are_unaffected() {
    let mut w = Wat::new();
    let out = w.data(b"x-fill");
    let filler = w.raw("  (global $n (mut i32) (i32.const 0))").on(
        "request_headers",
        &format!(
            "(local $i i32) (local $status i32) (local $ok i32) (local $len i32)
                 (memory.fill (i32.const 0x20000) (i32.const 118) (i32.const 1024))
                 (block $stop (loop $more
                   (i32.store8 (i32.const {SCRATCH}) (i32.const 107))
                   (local.set $len (i32.add (i32.const 1)
                     (call $itoa (global.get $n) (i32.const {key_digits}))))
                   (local.set $status (call $set_shared (i32.const {SCRATCH}) (local.get $len)
                     (i32.const 0x20000) (i32.const 1024) (i32.const 0)))
                   (br_if $stop (local.get $status))
                   (global.set $n (i32.add (global.get $n) (i32.const 1)))
                   (local.set $ok (i32.add (local.get $ok) (i32.const 1)))
                   (local.set $i (i32.add (local.get $i) (i32.const 1)))
                   (br_if $more (i32.lt_u (local.get $i) (i32.const 2000)))))
                 (call $rec_reset) (call $rec (local.get $ok)) (call $rec (local.get $status))
                 (call $emit (i32.const 0) {out})
                 (i32.const 0)",
            key_digits = SCRATCH + 1
        ),
    );
    let mut w = Wat::new();
    let key = w.data(b"mine");
    let value = w.data(b"b-data");
    let fresh = w.data(b"fresh");
    let seen = w.data(b"x-mine");
    let wrote = w.data(b"x-wrote");
    let keeper = w
        .on(
            "configure",
            &format!("(drop (call $set_shared {key} {value} (i32.const 0))) (i32.const 1)"),
        )
        .on(
            "request_headers",
            &format!(
                "(if (i32.eqz (call $get_shared {key} (i32.const {RET_PTR}) (i32.const {RET_LEN}) (i32.const 0xB008)))
                   (then (drop (call $replace (i32.const 0) {seen}
                     (i32.load (i32.const {RET_PTR})) (i32.load (i32.const {RET_LEN}))))))
                 (call $rec_reset) (call $rec (call $set_shared {fresh} {value} (i32.const 0)))
                 (call $emit (i32.const 0) {wrote})
                 (i32.const 0)"
            ),
        );
    let filters = [
        FilterSpec::new("filler", &filler).vm_id("tenant-a"),
        FilterSpec::new("keeper", &keeper).vm_id("tenant-b"),
    ];
    let routes = [
        route("/a/", "capture", &["filler"]),
        route("/b/", "capture", &["keeper"]),
    ];
    let mut env = Env::start(1, &filters, &routes).await;
    assert_eq!(env.get("/b/before").await.unwrap().status(), 200);
    let baseline = env.proxy.rss_kib();
    let mut stored = 0u64;
    let mut full = false;
    for i in 0..40 {
        let path = format!("/a/{i}");
        assert_eq!(env.get(&path).await.unwrap().status(), 200);
        let report = seen_header(&env.capture, &path, "x-fill").expect("x-fill");
        let (ok, status) = report.split_once(',').unwrap();
        stored += ok.parse::<u64>().unwrap();
        if status != "0" {
            assert_eq!(status, "10", "InternalFailure at the cap");
            full = true;
            break;
        }
    }
    assert!(full, "the cap was reached");
    // 16 MiB of keys plus values, 1 KiB values.
    assert!((15_000..16_400).contains(&stored), "{stored} keys stored");
    let resp = env.get("/b/after").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        seen_header(&env.capture, "/b/after", "x-mine").as_deref(),
        Some("b-data")
    );
    assert_eq!(
        seen_header(&env.capture, "/b/after", "x-wrote").as_deref(),
        Some("0")
    );
    let rss = env.assert_rss_within(baseline, 64);
    eprintln!(
        "MEASURE F-3: {stored} keys of 1 KiB stored before the cap; RSS {} MiB -> {} MiB",
        baseline / 1024,
        rss / 1024
    );
    env.assert_healthy().await;
}

/// F-4: a filter asks for sensitive properties (node and listener metadata, peer
/// certificates, the environment) and gets NotFound; its own plugin name is its own; WASI
/// gives it an empty environment (the proxy's own variables never show), no stdin and no
/// files.
#[tokio::test(flavor = "multi_thread")]
async fn sensitive_properties_and_the_host_environment_stay_hidden() {
    let mut w = Wat::new();
    let out = w.data(b"x-statuses");
    let name_out = w.data(b"x-plugin-name");
    let plugin_name = w.data(b"plugin_name");
    let file = w.data(b"/etc/passwd");
    let mut body = String::from("(call $rec_reset)\n");
    for path in [
        &b"node"[..],
        b"node\0metadata",
        b"listener_metadata",
        b"cluster_metadata",
        b"route_metadata",
        b"connection\0peer_certificate",
        b"connection\0uri_san_peer_certificate",
        b"xds\0node",
        b"environment",
    ] {
        let path = w.data(path);
        body += &format!(
            "(call $rec (call $property {path} (i32.const {RET_PTR}) (i32.const {RET_LEN})))\n"
        );
    }
    body += &format!(
        "(if (i32.eqz (call $property {plugin_name} (i32.const {RET_PTR}) (i32.const {RET_LEN})))
           (then (drop (call $replace (i32.const 0) {name_out}
             (i32.load (i32.const {RET_PTR})) (i32.load (i32.const {RET_LEN}))))))
         (call $rec (call $environ_sizes (i32.const {SCRATCH}) (i32.const {s4})))
         (call $rec (i32.load (i32.const {SCRATCH})))
         (call $rec (i32.load (i32.const {s4})))
         (call $rec (call $environ (i32.const {s8}) (i32.const {s16})))
         (i32.store (i32.const {s8}) (i32.const {s64}))
         (i32.store (i32.const {s12}) (i32.const 64))
         (call $rec (call $fd_read (i32.const 0) (i32.const {s8}) (i32.const 1) (i32.const {SCRATCH})))
         (call $rec (call $fd_read (i32.const 3) (i32.const {s8}) (i32.const 1) (i32.const {SCRATCH})))
         (call $rec (call $path_open (i32.const 3) (i32.const 0) {file} (i32.const 0)
           (i64.const 2) (i64.const 2) (i32.const 0) (i32.const {SCRATCH})))
         (call $emit (i32.const 0) {out})
         (i32.const 0)",
        s4 = SCRATCH + 4,
        s8 = SCRATCH + 8,
        s12 = SCRATCH + 12,
        s16 = SCRATCH + 16,
        s64 = SCRATCH + 64,
    );
    let filter = w.on("request_headers", &body);
    let mut env = Env::start(
        2,
        &[FilterSpec::new("snoop", &filter).vm_id("tenant-c")],
        &[route("/s/", "capture", &["snoop"])],
    )
    .await;
    assert_eq!(env.get("/s/1").await.unwrap().status(), 200);
    assert_eq!(
        seen_header(&env.capture, "/s/1", "x-plugin-name").as_deref(),
        Some("snoop")
    );
    // Nine properties NotFound; environ: ok, 0 variables, 0 bytes, ok; fd_read: ENOSYS
    // (52) on stdin and on any other descriptor; path_open: ENOENT (44).
    assert_eq!(
        seen_header(&env.capture, "/s/1", "x-statuses").as_deref(),
        Some("1,1,1,1,1,1,1,1,1,0,0,0,0,52,52,44")
    );
    env.assert_healthy().await;
}

/// A noisy tenant: grows its memory by 8 MiB, then loops until the deadline.
fn noisy() -> Wat {
    Wat::new().on(
        "request_headers",
        "(drop (memory.grow (i32.const 128)))
         (memory.fill (i32.const 262144) (i32.const 1) (i32.const 8388608))
         (loop $forever (br $forever))
         (i32.const 0)",
    )
}

fn quiet() -> Wat {
    let mut w = Wat::new();
    let key = w.data(b"x-tenant");
    let value = w.data(b"b");
    w.on(
        "request_headers",
        &format!("(drop (call $add (i32.const 0) {key} {value})) (i32.const 0)"),
    )
}

/// Tenant B's bounded run: `clients` clients, `per_client` requests each, one after another
/// with a 5 ms pause. Returns every latency and the errors.
async fn tenant_b(
    env: &Env,
    clients: usize,
    per_client: usize,
    tag: &str,
) -> (Vec<Duration>, Vec<String>) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let base = env.proxy.url(&format!("/b/{tag}-{c}-"));
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut took = Vec::new();
            let mut errors = Vec::new();
            for i in 0..per_client {
                let started = Instant::now();
                match http.get(format!("{base}{i}")).send().await {
                    Ok(r) if r.status() == 200 => took.push(started.elapsed()),
                    Ok(r) => errors.push(format!("status {}", r.status())),
                    Err(e) => errors.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (took, errors)
        }));
    }
    let mut took = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let (d, e) = t.await.unwrap();
        took.extend(d);
        errors.extend(e);
    }
    for c in 0..clients {
        for i in 0..per_client {
            env.count(&format!("/b/{tag}-{c}-{i}"));
        }
    }
    (took, errors)
}

/// F-5: tenant A loops to the deadline and allocates on every request while tenant B serves a
/// bounded stream of requests: B gets no error. B's latency with and without A is measured
/// and reported (guest calls are synchronous on the worker threads, so a looping filter
/// delays requests that wait for the same worker), not asserted.
#[tokio::test(flavor = "multi_thread")]
async fn a_noisy_neighbour_causes_no_errors_for_another_tenant() {
    // Several copies of the noisy filter, taken in turn, so that none faults five times in a
    // row and backs off (which would quiet it: the crash-loop backoff).
    let copies = 10;
    let mut filters = vec![FilterSpec::new("quiet", &quiet()).vm_id("tenant-b")];
    let mut routes = vec![route("/b/", "capture", &["quiet"])];
    for k in 0..copies {
        let name = format!("noisy{k}");
        filters.push(FilterSpec::new(&name, &noisy()).vm_id("tenant-a"));
        routes.push(route(&format!("/a{k}/"), "capture", &[&name]));
    }
    let mut env = Env::start(2, &filters, &routes).await;
    let (clients, per_client) = (2, 150);

    let (alone, errors) = tenant_b(&env, clients, per_client, "alone").await;
    assert!(errors.is_empty(), "{errors:?}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        let base = env.proxy.url("/a");
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut sent = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent.len() < 4 * copies {
                let k = sent.len() % copies;
                let path = format!("/a{k}/{}", sent.len());
                let status = http
                    .get(format!("{base}{k}/{}", sent.len()))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                assert_eq!(status, 503, "the noisy tenant's own requests fail");
                sent.push(path);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (noisy_run, errors) = tenant_b(&env, clients, per_client, "noisy").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = noise.await.unwrap();
    for path in &sent {
        env.count(path);
    }
    assert!(errors.is_empty(), "tenant B saw errors: {errors:?}");
    let (p50_alone, p99_alone) = percentiles(alone);
    let (p50_noisy, p99_noisy) = percentiles(noisy_run);
    eprintln!(
        "MEASURE F-5: tenant B p50/p99 alone {p50_alone:?}/{p99_alone:?}; with a looping, allocating \
         tenant A ({} requests) {p50_noisy:?}/{p99_noisy:?}; p99 ratio {:.1}",
        sent.len(),
        p99_noisy.as_secs_f64() / p99_alone.as_secs_f64().max(1e-6)
    );
    env.assert_healthy().await;
}
