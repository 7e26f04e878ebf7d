//! Shared queues through guests: every status, notifications to the registering VM's root
//! context, namespaces (reliability F-2) and caps (F-3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pool::FilterPool;
use crate::shared::SharedLimits;
use crate::shared::testing::{guest_vm, guest_wat, named};
use crate::testing::{plugin_from_wat, runtime, runtime_with_log};
use crate::vm::Vm;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const OOB: u32 = 6;
const EMPTY: u32 = 7;
const INTERNAL: u32 = 10;
const RP: u32 = 1000;
const RS: u32 = 1004;
const RQ: u32 = 1008;
const NAME: u32 = 100;
const VM_ID: u32 = 200;
const VALUE: u32 = 300;
/// Where the owner guest records the last notified queue id, and how many it got.
const SEEN_QID: u32 = 2000;
const SEEN_COUNT: u32 = 2004;

const IMPORTS: &[(&str, &str)] = &[
    ("proxy_register_shared_queue", "i32 i32 i32"),
    ("proxy_resolve_shared_queue", "i32 i32 i32 i32 i32"),
    ("proxy_enqueue_shared_queue", "i32 i32 i32"),
    ("proxy_dequeue_shared_queue", "i32 i32 i32"),
];

const ON_QUEUE_READY: &str = r#"
(func (export "proxy_on_queue_ready") (param i32 i32)
  (i32.store (i32.const 2000) (local.get 1))
  (i32.store (i32.const 2004) (i32.add (i32.load (i32.const 2004)) (i32.const 1))))
"#;

fn register(vm: &mut Vm, name: &[u8]) -> Result<u32, u32> {
    vm.test_write(NAME, name);
    let args = [NAME, name.len() as u32, RQ];
    match vm
        .test_call(&mut None, "register_shared_queue", &args)
        .unwrap()
    {
        OK => Ok(vm.test_u32(RQ)),
        status => Err(status),
    }
}

fn resolve(vm: &mut Vm, vm_id: &[u8], name: &[u8]) -> Result<u32, u32> {
    vm.test_write(VM_ID, vm_id);
    vm.test_write(NAME, name);
    let args = [VM_ID, vm_id.len() as u32, NAME, name.len() as u32, RQ];
    match vm
        .test_call(&mut None, "resolve_shared_queue", &args)
        .unwrap()
    {
        OK => Ok(vm.test_u32(RQ)),
        status => Err(status),
    }
}

fn enqueue(vm: &mut Vm, qid: u32, value: &[u8]) -> u32 {
    vm.test_write(VALUE, value);
    let args = [qid, VALUE, value.len() as u32];
    vm.test_call(&mut None, "enqueue_shared_queue", &args)
        .unwrap()
}

fn dequeue(vm: &mut Vm, qid: u32) -> Result<Vec<u8>, u32> {
    match vm
        .test_call(&mut None, "dequeue_shared_queue", &[qid, RP, RS])
        .unwrap()
    {
        OK => Ok(vm.test_returned(RP, RS)),
        status => Err(status),
    }
}

#[test]
fn register_resolve_enqueue_dequeue_statuses() {
    let (rt, _) = runtime();
    let mut vm = guest_vm(rt, IMPORTS, "queues", "q-status");
    let qid = register(&mut vm, b"jobs").unwrap();
    assert_ne!(qid, 0);
    assert_eq!(
        register(&mut vm, b"jobs"),
        Ok(qid),
        "re-register: same queue"
    );
    let other = register(&mut vm, b"other").unwrap();
    assert!(other != qid && other != 0);
    assert_eq!(resolve(&mut vm, b"", b"jobs"), Ok(qid), "empty vm_id: own");
    assert_eq!(resolve(&mut vm, b"q-status", b"jobs"), Ok(qid), "own vm_id");
    assert_eq!(resolve(&mut vm, b"", b"nope"), Err(NOT_FOUND));
    assert_eq!(dequeue(&mut vm, qid), Err(EMPTY));
    assert_eq!(enqueue(&mut vm, qid, b"one"), OK);
    assert_eq!(enqueue(&mut vm, qid, b""), OK);
    assert_eq!(enqueue(&mut vm, qid, b"three"), OK);
    assert_eq!(dequeue(&mut vm, qid), Ok(b"one".to_vec()));
    assert_eq!(dequeue(&mut vm, qid), Ok(Vec::new()), "an empty item");
    // A bad out-pointer is InvalidMemoryAccess and the item stays queued.
    let mut none = None;
    let bad = [qid, u32::MAX, RS];
    assert_eq!(
        vm.test_call(&mut none, "dequeue_shared_queue", &bad)
            .unwrap(),
        OOB
    );
    assert_eq!(dequeue(&mut vm, qid), Ok(b"three".to_vec()));
    assert_eq!(dequeue(&mut vm, qid), Err(EMPTY));
    for unknown in [0, 0x7fff_fff0] {
        assert_eq!(enqueue(&mut vm, unknown, b"x"), NOT_FOUND);
        assert_eq!(dequeue(&mut vm, unknown), Err(NOT_FOUND));
    }
    // Bad ranges.
    let calls: [(&str, &[u32]); 4] = [
        ("register_shared_queue", &[u32::MAX, 4, RQ]),
        ("register_shared_queue", &[NAME, 4, u32::MAX]),
        ("resolve_shared_queue", &[VM_ID, 0, u32::MAX, 4, RQ]),
        ("enqueue_shared_queue", &[qid, 0xffff_fff0, 100]),
    ];
    for (name, args) in calls {
        assert_eq!(vm.test_call(&mut none, name, args).unwrap(), OOB, "{name}");
    }
}

#[test]
fn another_namespace_never_reaches_a_queue() {
    let (rt, _) = runtime();
    let mut a = guest_vm(rt, IMPORTS, "queue-a", "q-iso-a");
    let mut b = guest_vm(rt, IMPORTS, "queue-b", "q-iso-b");
    let mut no_vm_id = guest_vm(rt, IMPORTS, "q-iso-a", "");
    let qa = register(&mut a, b"q").unwrap();
    assert_eq!(enqueue(&mut a, qa, b"secret"), OK);
    // F-2: a foreign vm_id is NotFound, and B's own namespace has no such queue.
    assert_eq!(resolve(&mut b, b"q-iso-a", b"q"), Err(NOT_FOUND));
    assert_eq!(resolve(&mut b, b"", b"q"), Err(NOT_FOUND));
    assert_eq!(resolve(&mut no_vm_id, b"", b"q"), Err(NOT_FOUND));
    // Guessing the id reaches nothing either.
    assert_eq!(dequeue(&mut b, qa), Err(NOT_FOUND));
    assert_eq!(enqueue(&mut b, qa, b"spam"), NOT_FOUND);
    assert_eq!(dequeue(&mut no_vm_id, qa), Err(NOT_FOUND));
    // B's queue of the same name is another queue.
    let qb = register(&mut b, b"q").unwrap();
    assert_ne!(qb, qa);
    assert_eq!(dequeue(&mut b, qb), Err(EMPTY));
    assert_eq!(dequeue(&mut a, qa), Ok(b"secret".to_vec()));
}

/// A pool of one VM of the owner guest, which records its notifications.
fn owner_pool(rt: &crate::Runtime, name: &str, vm_id: &str) -> Arc<FilterPool> {
    let wat = guest_wat(IMPORTS, ON_QUEUE_READY);
    FilterPool::new(plugin_from_wat(rt, &wat, named(name, vm_id)), 1).unwrap()
}

fn with_owner<R>(pool: &FilterPool, f: impl FnOnce(&mut Vm) -> R) -> R {
    let mut guard = pool.lock(0);
    let (vm, _) = guard.vm().unwrap();
    f(vm)
}

/// (last queue id notified, notifications) of an owner.
fn seen(pool: &FilterPool) -> (u32, u32) {
    with_owner(pool, |vm| (vm.test_u32(SEEN_QID), vm.test_u32(SEEN_COUNT)))
}

fn wait_for_count(pool: &FilterPool, count: u32) -> (u32, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = seen(pool);
        if now.1 >= count || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn enqueue_notifies_the_registering_root_context() {
    let (rt, _) = runtime();
    let owner = owner_pool(rt, "queue-owner", "q-notify");
    let qid = with_owner(&owner, |vm| register(vm, b"jobs")).unwrap();
    // A producer: another VM of the namespace, outside any pool.
    let mut producer = guest_vm(rt, IMPORTS, "queue-producer", "q-notify");
    assert_eq!(resolve(&mut producer, b"", b"jobs"), Ok(qid));
    for item in [&b"a"[..], b"b", b"c"] {
        assert_eq!(enqueue(&mut producer, qid, item), OK);
    }
    assert_eq!(
        wait_for_count(&owner, 3),
        (qid, 3),
        "one notification per item"
    );
    // The owner only counted; the items are all there, in order.
    for item in [&b"a"[..], b"b", b"c"] {
        assert_eq!(dequeue(&mut producer, qid), Ok(item.to_vec()));
    }

    // A VM outside any pool cannot be notified: its registration keeps the owner.
    assert_eq!(register(&mut producer, b"jobs"), Ok(qid));
    assert_eq!(enqueue(&mut producer, qid, b"x"), OK);
    assert_eq!(wait_for_count(&owner, 4), (qid, 4));
    assert_eq!(dequeue(&mut producer, qid), Ok(b"x".to_vec()));

    // A re-register from another VM keeps the queue and re-points the notifications.
    let second = owner_pool(rt, "queue-owner-2", "q-notify");
    assert_eq!(with_owner(&second, |vm| register(vm, b"jobs")), Ok(qid));
    assert_eq!(enqueue(&mut producer, qid, b"d"), OK);
    assert_eq!(wait_for_count(&second, 1), (qid, 1));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(seen(&owner).1, 4, "the first owner is no longer notified");

    // An owner that is gone is not kept alive and not called; the queue still works.
    drop(second);
    assert_eq!(enqueue(&mut producer, qid, b"e"), OK);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(dequeue(&mut producer, qid), Ok(b"d".to_vec()));
    assert_eq!(dequeue(&mut producer, qid), Ok(b"e".to_vec()));
    assert_eq!(seen(&owner).1, 4);
}

#[test]
fn a_vm_can_notify_itself() {
    let (rt, _) = runtime();
    let owner = owner_pool(rt, "queue-self", "q-self");
    let qid = with_owner(&owner, |vm| {
        let qid = register(vm, b"loop").unwrap();
        // Enqueued from inside the owner: delivered after this call, not during it.
        assert_eq!(enqueue(vm, qid, b"x"), OK);
        assert_eq!(vm.test_u32(SEEN_COUNT), 0);
        qid
    });
    assert_eq!(wait_for_count(&owner, 1), (qid, 1));
}

#[test]
fn queue_caps_refuse_with_internal_failure() {
    let (rt, _) = runtime_with_log();
    rt.shared().set_limits(SharedLimits {
        queues: 2,
        queue_items: 3,
        queue_bytes: 64,
        ..SharedLimits::default()
    });
    let mut vm = guest_vm(&rt, IMPORTS, "queue-caps", "q-caps");
    let q1 = register(&mut vm, b"q1").unwrap();
    register(&mut vm, b"q2").unwrap();
    assert_eq!(register(&mut vm, b"q3"), Err(INTERNAL), "queue cap");
    assert_eq!(register(&mut vm, b"q1"), Ok(q1), "re-registering is free");
    for _ in 0..3 {
        assert_eq!(enqueue(&mut vm, q1, b"x"), OK);
    }
    assert_eq!(enqueue(&mut vm, q1, b"x"), INTERNAL, "item cap");
    assert_eq!(dequeue(&mut vm, q1), Ok(b"x".to_vec()));
    assert_eq!(enqueue(&mut vm, q1, &[0; 60]), INTERNAL, "byte cap");
    assert_eq!(enqueue(&mut vm, q1, &[0; 10]), OK);
    // Another namespace has its own budget.
    let mut other = guest_vm(&rt, IMPORTS, "queue-caps-2", "q-caps-2");
    let q = register(&mut other, b"q").unwrap();
    assert_eq!(enqueue(&mut other, q, &[0; 60]), OK);
}
