//! Metrics through guests: every status of define, increment, record and get, per-filter
//! namespaces and the cap.

use crate::shared::SharedLimits;
use crate::shared::testing::guest_vm;
use crate::testing::{runtime, runtime_with_log};
use crate::vm::Vm;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const BAD: u32 = 2;
const OOB: u32 = 6;
const INTERNAL: u32 = 10;
const RID: u32 = 1000;
const RV: u32 = 1008;
const NAME: u32 = 100;

const IMPORTS: &[(&str, &str)] = &[
    ("proxy_define_metric", "i32 i32 i32 i32"),
    ("proxy_increment_metric", "i32 i64"),
    ("proxy_record_metric", "i32 i64"),
    ("proxy_get_metric", "i32 i32"),
];

fn define(vm: &mut Vm, kind: u32, name: &[u8]) -> Result<u32, u32> {
    vm.test_write(NAME, name);
    let args = [kind, NAME, name.len() as u32, RID];
    match vm.test_call(&mut None, "define_metric", &args).unwrap() {
        OK => Ok(vm.test_u32(RID)),
        status => Err(status),
    }
}

fn increment(vm: &mut Vm, id: u32, delta: i32) -> u32 {
    vm.test_call(&mut None, "increment_metric", &[id, delta as u32])
        .unwrap()
}

fn record(vm: &mut Vm, id: u32, value: i32) -> u32 {
    vm.test_call(&mut None, "record_metric", &[id, value as u32])
        .unwrap()
}

fn get(vm: &mut Vm, id: u32) -> Result<u64, u32> {
    match vm.test_call(&mut None, "get_metric", &[id, RV]).unwrap() {
        OK => Ok(vm.test_u64(RV)),
        status => Err(status),
    }
}

#[test]
fn define_gives_typed_ids_and_reuses_names() {
    let (rt, _) = runtime();
    let mut vm = guest_vm(rt, IMPORTS, "metrics-define", "");
    let c = define(&mut vm, 0, b"requests").unwrap();
    let g = define(&mut vm, 1, b"in_flight").unwrap();
    let h = define(&mut vm, 2, b"latency").unwrap();
    assert_eq!(
        (c & 3, g & 3, h & 3),
        (0, 1, 2),
        "the type is in the low 2 bits"
    );
    assert!(c != 0 && g != 0 && h != 0);
    assert_eq!(
        define(&mut vm, 0, b"requests"),
        Ok(c),
        "same name, same metric"
    );
    assert_eq!(
        define(&mut vm, 1, b"requests"),
        Err(BAD),
        "one name, one type"
    );
    assert_eq!(define(&mut vm, 3, b"x"), Err(BAD), "unknown type");
    let mut none = None;
    let bad_name = [0, u32::MAX, 4, RID];
    assert_eq!(
        vm.test_call(&mut none, "define_metric", &bad_name).unwrap(),
        OOB
    );
    let bad_ret = [0, NAME, 1, u32::MAX];
    assert_eq!(
        vm.test_call(&mut none, "define_metric", &bad_ret).unwrap(),
        OOB
    );
}

#[test]
fn increment_record_and_get_follow_envoy() {
    let (rt, _) = runtime();
    let mut vm = guest_vm(rt, IMPORTS, "metrics-ops", "");
    let c = define(&mut vm, 0, b"c").unwrap();
    let g = define(&mut vm, 1, b"g").unwrap();
    let h = define(&mut vm, 2, b"h").unwrap();
    // Counter: positive increments; record adds (Envoy's recordMetric).
    assert_eq!(increment(&mut vm, c, 3), OK);
    assert_eq!(increment(&mut vm, c, 0), BAD);
    assert_eq!(increment(&mut vm, c, -1), BAD);
    assert_eq!(record(&mut vm, c, 4), OK);
    assert_eq!(get(&mut vm, c), Ok(7));
    // Gauge: increments both ways; record sets.
    assert_eq!(increment(&mut vm, g, 5), OK);
    assert_eq!(increment(&mut vm, g, -2), OK);
    assert_eq!(get(&mut vm, g), Ok(3));
    assert_eq!(record(&mut vm, g, 40), OK);
    assert_eq!(get(&mut vm, g), Ok(40));
    // Histogram: record only; no value to read.
    assert_eq!(record(&mut vm, h, 12), OK);
    assert_eq!(increment(&mut vm, h, 1), BAD);
    assert_eq!(get(&mut vm, h), Err(BAD));
    // Unknown ids.
    let unknown_counter = c + 4 * 1000;
    assert_eq!(increment(&mut vm, unknown_counter, 1), NOT_FOUND);
    assert_eq!(record(&mut vm, unknown_counter, 1), NOT_FOUND);
    assert_eq!(get(&mut vm, unknown_counter), Err(NOT_FOUND));
    assert_eq!(get(&mut vm, g + 4 * 1000), Err(NOT_FOUND));
    assert_eq!(record(&mut vm, h + 4 * 1000, 1), NOT_FOUND);
    assert_eq!(increment(&mut vm, 3, 1), BAD, "type 3: no such type");
    assert_eq!(get(&mut vm, 3), Err(BAD));
    assert_eq!(record(&mut vm, 3, 1), NOT_FOUND);
    let mut none = None;
    assert_eq!(
        vm.test_call(&mut none, "get_metric", &[c, u32::MAX])
            .unwrap(),
        OOB
    );
    assert_eq!(rt.shared().metric_value("metrics-ops", "c"), Some(7));
}

#[test]
fn metrics_belong_to_the_filter() {
    let (rt, _) = runtime();
    // Two VMs of one filter share its metrics (VMs on two workers).
    let mut a1 = guest_vm(rt, IMPORTS, "metrics-a", "shared-vm");
    let mut a2 = guest_vm(rt, IMPORTS, "metrics-a", "shared-vm");
    // Another filter, even with the same vm_id, has its own.
    let mut b = guest_vm(rt, IMPORTS, "metrics-b", "shared-vm");
    let id = define(&mut a1, 0, b"hits").unwrap();
    assert_eq!(define(&mut a2, 0, b"hits"), Ok(id));
    assert_eq!(increment(&mut a1, id, 2), OK);
    assert_eq!(increment(&mut a2, id, 3), OK);
    assert_eq!(get(&mut a1, id), Ok(5));
    // B's ids do not reach A's metrics: B has defined nothing yet.
    assert_eq!(get(&mut b, id), Err(NOT_FOUND));
    assert_eq!(increment(&mut b, id, 1), NOT_FOUND);
    let idb = define(&mut b, 0, b"hits").unwrap();
    assert_eq!(get(&mut b, idb), Ok(0));
    assert_eq!(get(&mut a1, id), Ok(5));
}

#[test]
fn the_metric_cap_gives_internal_failure() {
    let (rt, _) = runtime_with_log();
    rt.shared().set_limits(SharedLimits {
        metrics: 3,
        metric_name_bytes: 16,
        ..SharedLimits::default()
    });
    let mut vm = guest_vm(&rt, IMPORTS, "metrics-cap", "");
    for name in [&b"a"[..], b"b", b"c"] {
        define(&mut vm, 0, name).unwrap();
    }
    assert_eq!(define(&mut vm, 1, b"d"), Err(INTERNAL));
    assert!(define(&mut vm, 0, b"a").is_ok(), "redefining is free");
    assert_eq!(define(&mut vm, 0, &[b'n'; 17]), Err(BAD), "name too long");
}
