//! Where a VM lives: its pool and slot. Work that reaches a VM later (a tick, a callout
//! response, a queue notification) goes through its home, and finds nothing if the VM has been
//! replaced or its pool dropped in the meantime.

use std::sync::Weak;

use crate::pool::FilterPool;
use crate::vm::Vm;

/// A weak reference to one VM: pool, slot and incarnation.
#[derive(Debug, Clone)]
pub struct VmHome {
    pub(crate) pool: Weak<FilterPool>,
    pub(crate) slot: usize,
    pub(crate) incarnation: u64,
}

impl VmHome {
    /// Runs `f` on the VM if it still lives, holding its slot for the call. If the VM faults
    /// during `f` (reported by `f` returning `Err`), it is thrown away like any faulted VM.
    pub(crate) fn with_vm<R>(
        &self,
        f: impl FnOnce(&mut Vm) -> Result<R, crate::Fault>,
    ) -> Option<R> {
        let pool = self.pool.upgrade()?;
        let mut guard = pool.lock(self.slot);
        let vm = guard.vm_if(self.incarnation)?;
        match f(vm) {
            Ok(r) => Some(r),
            Err(fault) => {
                tracing::error!(
                    filter = %pool.plugin().info().name,
                    kind = fault.kind.as_str(),
                    "filter failed outside a request: {fault}"
                );
                guard.fail(&fault);
                None
            }
        }
    }
}
