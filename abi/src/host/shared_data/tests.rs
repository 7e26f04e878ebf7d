//! `proxy_get_shared_data` / `proxy_set_shared_data` through guests: every status, CAS
//! semantics under concurrency, namespaces (reliability F-1) and caps (F-3).

use crate::shared::SharedLimits;
use crate::shared::testing::guest_vm;
use crate::testing::{runtime, runtime_with_log};
use crate::vm::Vm;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const OOB: u32 = 6;
const CAS_MISMATCH: u32 = 8;
const INTERNAL: u32 = 10;
const RP: u32 = 1000;
const RS: u32 = 1004;
const RC: u32 = 1008;
const KEY: u32 = 100;
const VALUE: u32 = 200;

const IMPORTS: &[(&str, &str)] = &[
    ("proxy_get_shared_data", "i32 i32 i32 i32 i32"),
    ("proxy_set_shared_data", "i32 i32 i32 i32 i32"),
];

fn vm(rt: &crate::Runtime, name: &str, vm_id: &str) -> Vm {
    guest_vm(rt, IMPORTS, name, vm_id)
}

fn set(vm: &mut Vm, key: &[u8], value: &[u8], cas: u32) -> u32 {
    vm.test_write(KEY, key);
    vm.test_write(VALUE, value);
    let args = [KEY, key.len() as u32, VALUE, value.len() as u32, cas];
    vm.test_call(&mut None, "set_shared_data", &args).unwrap()
}

/// The status, and on Ok the value and CAS.
fn get(vm: &mut Vm, key: &[u8]) -> Result<(Vec<u8>, u32), u32> {
    vm.test_write(KEY, key);
    let args = [KEY, key.len() as u32, RP, RS, RC];
    match vm.test_call(&mut None, "get_shared_data", &args).unwrap() {
        OK => Ok((vm.test_returned(RP, RS), vm.test_u32(RC))),
        status => Err(status),
    }
}

#[test]
fn get_and_set_follow_envoy_cas_rules() {
    let (rt, _) = runtime();
    let mut vm = vm(rt, "data", "data-cas");
    assert_eq!(get(&mut vm, b"k"), Err(NOT_FOUND));
    assert_eq!(
        set(&mut vm, b"k", b"v1", 777),
        OK,
        "a new key ignores the CAS"
    );
    let (value, cas1) = get(&mut vm, b"k").unwrap();
    assert_eq!((value.as_slice(), cas1 != 0), (&b"v1"[..], true));
    assert_eq!(
        set(&mut vm, b"k", b"v2", cas1.wrapping_add(1)),
        CAS_MISMATCH
    );
    assert_eq!(get(&mut vm, b"k").unwrap().0, b"v1", "unchanged");
    assert_eq!(set(&mut vm, b"k", b"v2", cas1), OK);
    let (value, cas2) = get(&mut vm, b"k").unwrap();
    assert_eq!(value, b"v2");
    assert!(cas2 != cas1 && cas2 != 0);
    assert_eq!(set(&mut vm, b"k", b"v3", cas1), CAS_MISMATCH, "stale CAS");
    assert_eq!(set(&mut vm, b"k", b"v3", 0), OK, "CAS 0 is unconditional");
    // An empty value is kept as a key, and returned as ptr=0, size=0.
    assert_eq!(set(&mut vm, b"k", b"", 0), OK);
    assert_eq!(get(&mut vm, b"k").unwrap().0, b"");
}

#[test]
fn bad_ranges_are_invalid_memory_access() {
    let (rt, _) = runtime();
    let mut vm = vm(rt, "data", "data-oob");
    let mut none = None;
    assert_eq!(set(&mut vm, b"k", b"v", 0), OK);
    let get = |vm: &mut Vm, none: &mut _, args: [u32; 5]| {
        vm.test_call(none, "get_shared_data", &args).unwrap()
    };
    assert_eq!(get(&mut vm, &mut none, [u32::MAX, 4, RP, RS, RC]), OOB);
    assert_eq!(
        get(&mut vm, &mut none, [KEY, 1, RP, RS, u32::MAX]),
        OOB,
        "bad CAS pointer"
    );
    assert_eq!(get(&mut vm, &mut none, [KEY, 1, u32::MAX, RS, RC]), OOB);
    let set_args = [KEY, 1, 0xffff_fff0, 100, 0];
    assert_eq!(
        vm.test_call(&mut none, "set_shared_data", &set_args)
            .unwrap(),
        OOB
    );
    let set_args = [0xffff_fff0, 100, VALUE, 1, 0];
    assert_eq!(
        vm.test_call(&mut none, "set_shared_data", &set_args)
            .unwrap(),
        OOB
    );
}

#[test]
fn data_is_shared_by_vm_id_and_isolated_otherwise() {
    let (rt, _) = runtime();
    let mut a = vm(rt, "tenant-a", "iso-a");
    let mut a_other_filter = vm(rt, "tenant-a2", "iso-a");
    let mut b = vm(rt, "tenant-b", "iso-b");
    let mut named_like_a = vm(rt, "iso-a", "");
    let mut no_vm_id = vm(rt, "iso-c", "");
    let mut no_vm_id_other = vm(rt, "iso-d", "");
    assert_eq!(set(&mut a, b"k", b"secret", 0), OK);
    // F-1: another tenant does not see the key.
    assert_eq!(get(&mut b, b"k"), Err(NOT_FOUND));
    // A filter whose name equals the vm_id is another namespace.
    assert_eq!(get(&mut named_like_a, b"k"), Err(NOT_FOUND));
    // Filters that set the same vm_id share (Envoy's model).
    assert_eq!(get(&mut a_other_filter, b"k").unwrap().0, b"secret");
    // Without a vm_id, each filter has its own namespace.
    assert_eq!(set(&mut no_vm_id, b"k", b"c", 0), OK);
    assert_eq!(get(&mut no_vm_id_other, b"k"), Err(NOT_FOUND));
    // Writes in one namespace never touch another's keys.
    assert_eq!(set(&mut b, b"k", b"b's own", 0), OK);
    assert_eq!(get(&mut a, b"k").unwrap().0, b"secret");
}

#[test]
fn a_full_namespace_refuses_writes_and_others_are_unaffected() {
    let (rt, _) = runtime_with_log();
    rt.shared().set_limits(SharedLimits {
        data_bytes: 4096,
        data_keys: 20,
        ..SharedLimits::default()
    });
    let mut hog = vm(&rt, "hog", "cap-hog");
    let mut victim = vm(&rt, "victim", "cap-victim");
    assert_eq!(set(&mut victim, b"keep", b"me", 0), OK);
    // F-3: a filter filling its namespace (many keys) hits the key cap...
    let mut refused = None;
    for i in 0..100u32 {
        let status = set(&mut hog, format!("k{i}").as_bytes(), b"x", 0);
        if status != OK {
            refused = Some((i, status));
            break;
        }
    }
    assert_eq!(refused, Some((20, INTERNAL)));
    // ... and the byte cap, also when growing an existing key.
    assert_eq!(set(&mut hog, b"k0", &[b'x'; 4050], 0), INTERNAL);
    assert_eq!(get(&mut hog, b"k0").unwrap().0, b"x", "unchanged");
    // Other tenants keep their keys and can still write.
    assert_eq!(get(&mut victim, b"keep").unwrap().0, b"me");
    assert_eq!(set(&mut victim, b"more", &[b'y'; 2000], 0), OK);
}

#[test]
fn concurrent_cas_increments_from_many_vms_lose_nothing() {
    let (rt, _) = runtime();
    let threads = 4;
    let per_thread = 150;
    let mut first = vm(rt, "counter", "data-concurrent");
    assert_eq!(set(&mut first, b"n", b"0", 0), OK);
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            // Every VM is another filter with the same vm_id, as VMs on other workers are.
            let mut vm = vm(rt, &format!("counter-{i}"), "data-concurrent");
            std::thread::spawn(move || {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                for _ in 0..per_thread {
                    loop {
                        assert!(std::time::Instant::now() < deadline, "stuck");
                        let (value, cas) = get(&mut vm, b"n").unwrap();
                        let n: u64 = std::str::from_utf8(&value).unwrap().parse().unwrap();
                        match set(&mut vm, b"n", (n + 1).to_string().as_bytes(), cas) {
                            OK => break,
                            CAS_MISMATCH => continue,
                            other => panic!("status {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let total = (threads * per_thread).to_string();
    assert_eq!(get(&mut first, b"n").unwrap().0, total.as_bytes());
}
