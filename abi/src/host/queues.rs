//! Shared queues: proxy-wasm ABI v0.2.1 §Shared Queues.
//!
//! Queues live in the VM's namespace (see [`crate::shared`]). The VM that registered a queue
//! last gets `proxy_on_queue_ready(root, queue_id)` for every item enqueued, delivered later on
//! the host's executor (Envoy posts it to the owner's thread), never inside the enqueuing call.

use std::sync::Arc;

use wasmtime::{Caller, Linker};

use crate::host::{check_allowed, code};
use crate::memory::{return_bytes, slice, split, write_u32};
use crate::shared::{Queue, QueueSpace};
use crate::state::HostState;
use crate::types::Status;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_register_shared_queue", register_shared_queue)?;
    linker.func_wrap("env", "proxy_resolve_shared_queue", resolve_shared_queue)?;
    linker.func_wrap("env", "proxy_enqueue_shared_queue", enqueue_shared_queue)?;
    linker.func_wrap("env", "proxy_dequeue_shared_queue", dequeue_shared_queue)?;
    Ok(())
}

/// Creates queue `name` in this VM's namespace, or re-opens it keeping its items, and makes
/// this VM's root context the one notified of new items (a VM outside any pool, which cannot
/// be notified, leaves the current owner). Writes its id (never 0).
///
/// ABI: `proxy_register_shared_queue`. InternalFailure past the namespace's queue cap (the Rust
/// SDK panics on it); InvalidMemoryAccess for a bad range or out-pointer.
fn register_shared_queue(
    mut caller: Caller<'_, HostState>,
    name_ptr: u32,
    name_size: u32,
    ret_qid: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_register_shared_queue")?;
    let (mem, state) = split(&mut caller);
    let result = slice(mem, ret_qid, 4).and_then(|_| {
        let name = slice(mem, name_ptr, name_size)?;
        let space = state.shared.queues(state.runtime.shared(), &state.plugin);
        space.register(name, state.home.clone())
    });
    Ok(code(result.and_then(|qid| write_u32(mem, ret_qid, qid))))
}

/// Finds queue `name` of namespace `vm_id`. Only this VM's own namespace can be named: an
/// empty `vm_id` or the plugin's own `vm_id`. Any other is NotFound, so that a filter never
/// reaches another tenant's queue (cpp-host resolves any `vm_id`).
///
/// ABI: `proxy_resolve_shared_queue`. NotFound for an unknown queue or a foreign `vm_id`;
/// InvalidMemoryAccess for a bad range or out-pointer.
fn resolve_shared_queue(
    mut caller: Caller<'_, HostState>,
    vm_id_ptr: u32,
    vm_id_size: u32,
    name_ptr: u32,
    name_size: u32,
    ret_qid: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_resolve_shared_queue")?;
    let (mem, state) = split(&mut caller);
    let result = slice(mem, ret_qid, 4).and_then(|_| {
        let vm_id = slice(mem, vm_id_ptr, vm_id_size)?;
        let name = slice(mem, name_ptr, name_size)?;
        if !vm_id.is_empty() && vm_id != state.plugin.vm_id.as_bytes() {
            return Err(Status::NotFound);
        }
        let space = state.shared.queues(state.runtime.shared(), &state.plugin);
        space.resolve(name).ok_or(Status::NotFound)
    });
    Ok(code(result.and_then(|qid| write_u32(mem, ret_qid, qid))))
}

/// Appends an item to a queue of this namespace, then has its owner notified.
///
/// ABI: `proxy_enqueue_shared_queue`. NotFound for an unknown id (or another namespace's);
/// InternalFailure when the queue's item cap or the namespace's byte cap would be passed (the
/// Rust SDK panics on it); InvalidMemoryAccess for a bad range.
fn enqueue_shared_queue(
    mut caller: Caller<'_, HostState>,
    qid: u32,
    value_ptr: u32,
    value_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_enqueue_shared_queue")?;
    let (mem, state) = split(&mut caller);
    let value = match slice(mem, value_ptr, value_size) {
        Ok(value) => value,
        Err(status) => return Ok(status.code()),
    };
    let space = state.shared.queues(state.runtime.shared(), &state.plugin);
    let Some(queue) = space.get(qid) else {
        return Ok(Status::NotFound.code());
    };
    if let Err(status) = space.push(&queue, value) {
        return Ok(status.code());
    }
    notify_owner(state, &space, queue);
    Ok(Status::Ok.code())
}

/// Posts `proxy_on_queue_ready` to the queue's owner, if it has one that may still be alive.
/// At most one notification per item the queue can hold is in flight.
fn notify_owner(state: &HostState, space: &QueueSpace, queue: Arc<Queue>) {
    let Some(home) = queue.owner() else {
        return;
    };
    if !queue.begin_notify(space.max_pending()) {
        return;
    }
    let qid = queue.id();
    state.runtime.background().spawn_here(async move {
        queue.end_notify();
        // A VM replaced or dropped in the meantime is not notified (its home is weak).
        home.with_vm(|vm| vm.on_queue_ready(qid));
    });
}

/// Takes the oldest item of a queue of this namespace.
///
/// ABI: `proxy_dequeue_shared_queue`. Empty when there is none; NotFound for an unknown id (or
/// another namespace's); InvalidMemoryAccess for a bad out-pointer (the item stays queued).
fn dequeue_shared_queue(
    mut caller: Caller<'_, HostState>,
    qid: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_dequeue_shared_queue")?;
    let (space, queue, item) = {
        let (mem, state) = split(&mut caller);
        if slice(mem, ret_ptr, 4).is_err() || slice(mem, ret_size, 4).is_err() {
            return Ok(Status::InvalidMemoryAccess.code());
        }
        let space = state.shared.queues(state.runtime.shared(), &state.plugin);
        let Some(queue) = space.get(qid) else {
            return Ok(Status::NotFound.code());
        };
        let Some(item) = space.pop(&queue) else {
            return Ok(Status::Empty.code());
        };
        (space, queue, item)
    };
    match return_bytes(&mut caller, &item, ret_ptr, ret_size)? {
        Ok(()) => Ok(Status::Ok.code()),
        Err(status) => {
            // The guest could not take it (its allocator failed): keep it for the next call.
            space.unpop(&queue, item);
            Ok(status.code())
        }
    }
}

#[cfg(test)]
mod tests;
