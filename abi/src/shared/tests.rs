//! The stores on their own: CAS rules, caps, namespaces, metric rules and names.

use std::sync::Arc;

use super::*;
use crate::types::Status;

fn small() -> SharedLimits {
    SharedLimits {
        data_bytes: 100,
        data_keys: 3,
        queues: 2,
        queue_items: 3,
        queue_bytes: 20,
        metrics: 2,
        metric_name_bytes: 8,
    }
}

#[test]
fn set_assigns_a_new_nonzero_cas_and_checks_it() {
    let space = DataSpace::new(&SharedLimits::default());
    assert_eq!(space.get(b"k"), None);
    // A first set ignores the CAS, whatever it is.
    space.set(b"k", b"1", 12345).unwrap();
    let (v, cas1) = space.get(b"k").unwrap();
    assert_eq!((&v[..], cas1 != 0), (&b"1"[..], true));
    assert_eq!(space.set(b"k", b"2", cas1 + 1), Err(Status::CasMismatch));
    space.set(b"k", b"2", cas1).unwrap();
    let (v, cas2) = space.get(b"k").unwrap();
    assert_eq!(&v[..], b"2");
    assert_ne!(cas2, cas1);
    assert_eq!(
        space.set(b"k", b"3", cas1),
        Err(Status::CasMismatch),
        "stale"
    );
    // CAS 0 is unconditional; an empty value is still a key.
    space.set(b"k", b"", 0).unwrap();
    let (v, cas3) = space.get(b"k").unwrap();
    assert!(v.is_empty());
    assert!(cas3 != cas2 && cas3 != 0);
}

#[test]
fn the_cas_counter_skips_zero_when_it_wraps() {
    let space = DataSpace::new(&SharedLimits::default());
    space.set_next_cas(u32::MAX);
    space.set(b"a", b"", 0).unwrap();
    space.set(b"b", b"", 0).unwrap();
    assert_eq!(space.get(b"a").unwrap().1, u32::MAX);
    assert_eq!(space.get(b"b").unwrap().1, 1, "0 is never a CAS");
}

#[test]
fn data_caps_refuse_without_changing_anything() {
    let space = DataSpace::new(&small());
    space.set(b"a", &[0; 40], 0).unwrap();
    space.set(b"b", &[0; 40], 0).unwrap();
    assert_eq!((space.bytes(), space.keys()), (82, 2));
    assert_eq!(space.set(b"c", &[0; 40], 0), Err(Status::InternalFailure));
    assert_eq!(space.get(b"c"), None);
    // Growing a value past the cap fails too; shrinking makes room.
    assert_eq!(space.set(b"a", &[0; 60], 0), Err(Status::InternalFailure));
    assert_eq!(space.get(b"a").unwrap().0.len(), 40);
    space.set(b"a", &[0; 1], 0).unwrap();
    space.set(b"c", &[0; 40], 0).unwrap();
    assert_eq!((space.bytes(), space.keys()), (84, 3));
    assert_eq!(
        space.set(b"d", b"", 0),
        Err(Status::InternalFailure),
        "key cap"
    );
    assert_eq!(space.keys(), 3);
}

#[test]
fn concurrent_cas_increments_lose_nothing() {
    let space = Arc::new(DataSpace::new(&SharedLimits::default()));
    space.set(b"n", b"0", 0).unwrap();
    let threads = 8;
    let per_thread = 500;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let space = space.clone();
            std::thread::spawn(move || {
                let mut retries = 0u64;
                for _ in 0..per_thread {
                    // Envoy-style: read, compute, write with the CAS, retry on mismatch.
                    let mut done = false;
                    for _ in 0..10_000 {
                        let (v, cas) = space.get(b"n").unwrap();
                        let n: u64 = std::str::from_utf8(&v).unwrap().parse().unwrap();
                        match space.set(b"n", (n + 1).to_string().as_bytes(), cas) {
                            Ok(()) => {
                                done = true;
                                break;
                            }
                            Err(Status::CasMismatch) => retries += 1,
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                    assert!(done, "an increment gave up");
                }
                retries
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (v, _) = space.get(b"n").unwrap();
    assert_eq!(&v[..], (threads * per_thread).to_string().as_bytes());
}

#[test]
fn namespaces_separate_vm_ids_from_filter_names() {
    let stores = SharedStores::default();
    let a = stores.data(&Namespace::VmId("x".into()));
    let b = stores.data(&Namespace::Filter("x".into()));
    assert!(!Arc::ptr_eq(&a, &b));
    assert!(Arc::ptr_eq(&a, &stores.data(&Namespace::VmId("x".into()))));
    a.set(b"k", b"secret", 0).unwrap();
    assert_eq!(b.get(b"k"), None);
}

#[test]
fn limits_apply_to_namespaces_created_afterwards() {
    let stores = SharedStores::default();
    let before = stores.data(&Namespace::VmId("before".into()));
    stores.set_limits(small());
    let after = stores.data(&Namespace::VmId("after".into()));
    before.set(b"big", &[0; 200], 0).unwrap();
    assert_eq!(
        after.set(b"big", &[0; 200], 0),
        Err(Status::InternalFailure)
    );
}

#[test]
fn queues_keep_items_in_order_and_are_found_only_in_their_namespace() {
    let registry = QueueRegistry::default();
    let limits = small();
    let a = registry.space(&Namespace::VmId("a".into()), &limits);
    let b = registry.space(&Namespace::VmId("b".into()), &limits);
    let qa = a.register(b"q", None).unwrap();
    let qb = b.register(b"q", None).unwrap();
    assert!(qa != 0 && qb != 0 && qa != qb);
    assert_eq!(
        a.register(b"q", None).unwrap(),
        qa,
        "re-register keeps the id"
    );
    assert_eq!(a.resolve(b"q"), Some(qa));
    assert_eq!(a.resolve(b"nope"), None);
    assert!(a.get(qb).is_none(), "another namespace's id is not found");
    let queue = a.get(qa).unwrap();
    a.push(&queue, b"1").unwrap();
    a.push(&queue, b"22").unwrap();
    assert_eq!(a.register(b"q", None).unwrap(), qa);
    assert_eq!(queue.len(), 2, "re-register keeps the items");
    assert_eq!(a.pop(&queue).unwrap(), "1");
    let item = a.pop(&queue).unwrap();
    assert_eq!(item, "22");
    a.unpop(&queue, item);
    assert_eq!(a.pop(&queue).unwrap(), "22");
    assert_eq!(a.pop(&queue), None);
}

#[test]
fn queue_caps_refuse_queues_items_and_bytes() {
    let registry = QueueRegistry::default();
    let space = registry.space(&Namespace::Filter("f".into()), &small());
    let q1 = space.register(b"q1", None).unwrap();
    space.register(b"q2", None).unwrap();
    assert_eq!(space.register(b"q3", None), Err(Status::InternalFailure));
    let queue = space.get(q1).unwrap();
    for _ in 0..3 {
        space.push(&queue, b"x").unwrap();
    }
    assert_eq!(
        space.push(&queue, b"x"),
        Err(Status::InternalFailure),
        "item cap"
    );
    assert_eq!(queue.len(), 3);
    space.pop(&queue).unwrap();
    // 4 bytes of names + 2 items; 20 bytes in all.
    assert_eq!(
        space.push(&queue, &[0; 15]),
        Err(Status::InternalFailure),
        "byte cap"
    );
    space.push(&queue, &[0; 14]).unwrap();
    assert_eq!(space.bytes(), 20);
}

#[test]
fn metric_ids_carry_their_type_and_names_are_reused() {
    let space = MetricSpace::new("f", &SharedLimits::default());
    let c = space.define(MetricKind::Counter, b"c").unwrap();
    let g = space.define(MetricKind::Gauge, b"g").unwrap();
    let h = space.define(MetricKind::Histogram, b"h").unwrap();
    assert_eq!((c & 3, g & 3, h & 3), (0, 1, 2));
    assert!(c != 0 && g != 0 && h != 0);
    assert_eq!(space.define(MetricKind::Counter, b"c").unwrap(), c);
    assert_eq!(
        space.define(MetricKind::Gauge, b"c"),
        Err(Status::BadArgument),
        "one name, one type"
    );
    assert_eq!(space.len(), 3);
}

#[test]
fn metric_operations_follow_envoy() {
    let space = MetricSpace::new("f", &SharedLimits::default());
    let c = space.define(MetricKind::Counter, b"c").unwrap();
    let g = space.define(MetricKind::Gauge, b"g").unwrap();
    let h = space.define(MetricKind::Histogram, b"h").unwrap();
    // Counters: increment by a positive delta, record adds.
    space.increment(c, 2).unwrap();
    assert_eq!(space.increment(c, 0), Err(Status::BadArgument));
    assert_eq!(space.increment(c, -1), Err(Status::BadArgument));
    space.record(c, 5).unwrap();
    assert_eq!(space.value(c), Ok(7));
    // Gauges: increments move both ways, record sets.
    space.increment(g, 10).unwrap();
    space.increment(g, -3).unwrap();
    assert_eq!(space.value(g), Ok(7));
    space.record(g, 42).unwrap();
    assert_eq!(space.value(g), Ok(42));
    space.increment(g, -50).unwrap();
    assert_eq!(space.value(g).map(|v| v as i64), Ok(-8));
    // Histograms: record only.
    space.record(h, 3).unwrap();
    assert_eq!(space.increment(h, 1), Err(Status::BadArgument));
    assert_eq!(space.value(h), Err(Status::BadArgument));
    // Unknown ids: NotFound, except where Envoy checks the type first.
    assert_eq!(space.increment(c + 4 * 100, 1), Err(Status::NotFound));
    assert_eq!(space.value(g + 4 * 100), Err(Status::NotFound));
    assert_eq!(space.record(h + 4 * 100, 1), Err(Status::NotFound));
    assert_eq!(space.record(3, 1), Err(Status::NotFound));
    assert_eq!(space.increment(3, 1), Err(Status::BadArgument));
    assert_eq!(space.value(0), Err(Status::NotFound));
    // An id with the wrong type bits is not the metric.
    assert_eq!(space.value(c | 1), Err(Status::NotFound));
    assert_eq!(space.value_by_name(b"c"), Some(7));
}

#[test]
fn metric_caps_refuse_names_and_counts() {
    let space = MetricSpace::new("f", &small());
    assert_eq!(
        space.define(MetricKind::Counter, b"123456789"),
        Err(Status::BadArgument)
    );
    space.define(MetricKind::Counter, b"a").unwrap();
    space.define(MetricKind::Counter, b"b").unwrap();
    assert_eq!(
        space.define(MetricKind::Counter, b"c"),
        Err(Status::InternalFailure)
    );
    assert!(
        space.define(MetricKind::Counter, b"a").is_ok(),
        "redefining is free"
    );
}

#[test]
fn exported_names_are_valid_prometheus_names() {
    assert_eq!(
        exported_name(b"proxy_wasm_go.request_counter"),
        "wasmgate_filter_proxy_wasm_go_request_counter"
    );
    assert_eq!(
        exported_name(b"custom_header_value_counts_value=foo_reporter=wasmgate"),
        "wasmgate_filter_custom_header_value_counts_value_foo_reporter_wasmgate"
    );
    assert_eq!(
        exported_name("a:b-c é".as_bytes()),
        "wasmgate_filter_a_b_c___"
    );
    assert_eq!(exported_name(b""), "wasmgate_filter_");
}

#[test]
fn metric_spaces_are_per_filter() {
    let stores = SharedStores::default();
    let a = stores.metrics("a");
    let b = stores.metrics("b");
    let ida = a.define(MetricKind::Counter, b"n").unwrap();
    b.define(MetricKind::Counter, b"n").unwrap();
    a.increment(ida, 3).unwrap();
    assert_eq!(stores.metric_value("a", "n"), Some(3));
    assert_eq!(stores.metric_value("b", "n"), Some(0));
    assert_eq!(stores.metric_value("c", "n"), None);
}

#[test]
fn root_done_completes_only_when_pending() {
    let done = RootDone::default();
    assert!(!done.complete(), "not pending");
    done.set_pending();
    assert!(done.is_pending());
    assert!(done.complete());
    assert!(done.is_done() && !done.is_pending());
    assert!(!done.complete(), "only once");
    done.set_pending();
    assert!(done.is_done(), "a done root stays done");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(5), done.wait())
            .await
            .expect("already done: wait returns at once");
    });
}

#[test]
fn root_done_wakes_a_waiter() {
    let done = Arc::new(RootDone::default());
    done.set_pending();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let waiter = {
        let done = done.clone();
        rt.spawn(async move { done.wait().await })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(done.complete());
    rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
    });
}
