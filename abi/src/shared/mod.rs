//! What filters share across VMs and requests, process-wide: key-value data (CAS), queues
//! and metrics. Each is namespaced so that unrelated filters never see each other's entries.
//!
//! ## Namespaces
//!
//! Shared data and queues belong to a [`Namespace`]: the plugin's `vm_id` when it has one
//! (Envoy's key: plugins that set the same `vm_id` share), else the filter's name, so that two
//! filters that set no `vm_id` never share. A guest cannot name another namespace: every host
//! call works in its own VM's namespace, and `proxy_resolve_shared_queue` answers NotFound for
//! any other `vm_id` (cpp-host resolves any; see reliability F-2).
//!
//! Metrics belong to the filter (its name), whatever its `vm_id`.
//!
//! ## Caps
//!
//! Envoy bounds none of these. Here each namespace has [`SharedLimits`]; a write past a cap
//! answers `InternalFailure` and changes nothing. The Rust SDK panics on that status (the VM
//! traps and is replaced): a filter that fills its namespace has exhausted a limit, like
//! memory. Go and C++ filters get an error they can handle.

mod data;
mod metrics;
mod queues;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use parking_lot::RwLock;

pub(crate) use self::data::DataSpace;
pub use self::metrics::{EXPORTED_PREFIX, exported_name};
pub(crate) use self::metrics::{MetricKind, MetricSpace};
pub(crate) use self::queues::{Queue, QueueRegistry, QueueSpace};

use crate::plugin::PluginInfo;

/// Caps on what one namespace (shared data, queues) or one filter (metrics) may hold. The
/// defaults suit filters that keep counters, buckets and small records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedLimits {
    /// Bytes of keys plus values in one namespace's shared data.
    pub data_bytes: usize,
    /// Keys in one namespace's shared data.
    pub data_keys: usize,
    /// Queues one namespace may register.
    pub queues: usize,
    /// Items waiting in one queue.
    pub queue_items: usize,
    /// Bytes of items waiting in all the queues of one namespace.
    pub queue_bytes: usize,
    /// Metrics one filter may define (counters, gauges and histograms together).
    pub metrics: usize,
    /// Longest metric name, in bytes; a longer one is BadArgument.
    pub metric_name_bytes: usize,
}

impl Default for SharedLimits {
    fn default() -> Self {
        SharedLimits {
            data_bytes: 16 << 20,
            data_keys: 100_000,
            queues: 256,
            queue_items: 10_000,
            queue_bytes: 16 << 20,
            metrics: 1_000,
            metric_name_bytes: 1024,
        }
    }
}

/// Where shared data and queues live: a `vm_id`, or a filter name when the `vm_id` is empty.
/// The two kinds never collide, even when a `vm_id` equals some filter's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Namespace {
    VmId(Arc<str>),
    Filter(Arc<str>),
}

impl Namespace {
    /// The namespace of a plugin's VMs.
    pub fn of(plugin: &PluginInfo) -> Namespace {
        if plugin.vm_id.is_empty() {
            Namespace::Filter(plugin.name.as_str().into())
        } else {
            Namespace::VmId(plugin.vm_id.as_str().into())
        }
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Namespace::VmId(id) => write!(f, "vm_id {id:?}"),
            Namespace::Filter(name) => write!(f, "filter {name:?}"),
        }
    }
}

/// The stores of one runtime.
#[derive(Debug, Default)]
pub struct SharedStores {
    limits: RwLock<SharedLimits>,
    data: RwLock<std::collections::HashMap<Namespace, Arc<DataSpace>>>,
    queues: QueueRegistry,
    metrics: RwLock<std::collections::HashMap<Arc<str>, Arc<MetricSpace>>>,
}

impl SharedStores {
    /// The caps applied to namespaces and filters from now on. Those already in use keep the
    /// caps they were created with, so set this before starting VMs.
    pub fn set_limits(&self, limits: SharedLimits) {
        *self.limits.write() = limits;
    }

    pub fn limits(&self) -> SharedLimits {
        self.limits.read().clone()
    }

    /// The shared data of `ns`, created on first use.
    pub(crate) fn data(&self, ns: &Namespace) -> Arc<DataSpace> {
        if let Some(space) = self.data.read().get(ns) {
            return space.clone();
        }
        let limits = self.limits();
        self.data
            .write()
            .entry(ns.clone())
            .or_insert_with(|| Arc::new(DataSpace::new(&limits)))
            .clone()
    }

    pub(crate) fn queues(&self) -> &QueueRegistry {
        &self.queues
    }

    /// The metrics of filter `name`, created on first use.
    pub(crate) fn metrics(&self, name: &str) -> Arc<MetricSpace> {
        if let Some(space) = self.metrics.read().get(name) {
            return space.clone();
        }
        let limits = self.limits();
        self.metrics
            .write()
            .entry(name.into())
            .or_insert_with(|| Arc::new(MetricSpace::new(name, &limits)))
            .clone()
    }

    /// The current value of filter `filter`'s counter or gauge `name` (gauges as their signed
    /// value's bits), for the embedder and tests. `None` if it is not defined.
    pub fn metric_value(&self, filter: &str, name: &str) -> Option<u64> {
        let space = self.metrics.read().get(filter)?.clone();
        space.value_by_name(name.as_bytes())
    }

    /// A copy of the value stored under `key` in namespace `ns`, and its CAS.
    pub fn data_value(&self, ns: &Namespace, key: &[u8]) -> Option<(bytes::Bytes, u32)> {
        let space = self.data.read().get(ns)?.clone();
        space.get(key)
    }
}

/// What one VM holds of the shared stores (its namespace's spaces, resolved once) and of its
/// root context's end (`proxy_done`).
#[derive(Debug, Default)]
pub(crate) struct VmShared {
    namespace: Option<Namespace>,
    data: Option<Arc<DataSpace>>,
    queues: Option<Arc<QueueSpace>>,
    metrics: Option<Arc<MetricSpace>>,
    pub(crate) root_done: Arc<RootDone>,
}

impl VmShared {
    pub(crate) fn namespace(&mut self, plugin: &PluginInfo) -> &Namespace {
        self.namespace.get_or_insert_with(|| Namespace::of(plugin))
    }

    pub(crate) fn data(&mut self, stores: &SharedStores, plugin: &PluginInfo) -> Arc<DataSpace> {
        if let Some(space) = &self.data {
            return space.clone();
        }
        let space = stores.data(self.namespace(plugin));
        self.data = Some(space.clone());
        space
    }

    pub(crate) fn queues(&mut self, stores: &SharedStores, plugin: &PluginInfo) -> Arc<QueueSpace> {
        if let Some(space) = &self.queues {
            return space.clone();
        }
        let ns = self.namespace(plugin).clone();
        let space = stores.queues().space(&ns, &stores.limits());
        self.queues = Some(space.clone());
        space
    }

    pub(crate) fn metrics(
        &mut self,
        stores: &SharedStores,
        plugin: &PluginInfo,
    ) -> Arc<MetricSpace> {
        if let Some(space) = &self.metrics {
            return space.clone();
        }
        let space = stores.metrics(&plugin.name);
        self.metrics = Some(space.clone());
        space
    }
}

/// The end of a root context that may finish later: `proxy_on_done` returned false, and the
/// guest calls `proxy_done` when it has drained (cpp-host's `pending_done_`).
///
/// The embedder, retiring a VM, calls its root `proxy_on_done`; if that answers false it marks
/// the root pending ([`RootDone::set_pending`]) and waits for [`RootDone::wait`] (with a timeout
/// of its choosing) before `proxy_on_delete`.
#[derive(Debug, Default)]
pub struct RootDone {
    state: AtomicU8,
    notify: tokio::sync::Notify,
}

const RUNNING: u8 = 0;
const PENDING: u8 = 1;
const DONE: u8 = 2;

impl RootDone {
    /// Marks the root context as waiting for `proxy_done`.
    pub fn set_pending(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, PENDING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether the root is waiting for `proxy_done`.
    pub fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }

    /// Whether the guest called `proxy_done` after a pending `proxy_on_done`.
    pub fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) == DONE
    }

    /// `proxy_done`: completes a pending root. False if it was not pending (NotFound).
    pub(crate) fn complete(&self) -> bool {
        let completed = self
            .state
            .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if completed {
            self.notify.notify_waiters();
            // Also leave a permit, for a waiter that has not started waiting yet.
            self.notify.notify_one();
        }
        completed
    }

    /// Resolves once the guest has called `proxy_done` (at once if it already has).
    pub async fn wait(&self) {
        loop {
            let mut notified = std::pin::pin!(self.notify.notified());
            notified.as_mut().enable();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
