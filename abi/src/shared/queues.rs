//! Shared queues (cpp-host `shared_queue.cc`): named FIFO queues of byte strings, keyed by
//! (namespace, name). The VM that registered a queue last is told of each enqueued item with
//! `proxy_on_queue_ready` on its root context.
//!
//! Queue ids are unique in the process and never 0, but a queue is only found from its own
//! namespace: an id from another namespace is NotFound, so guessing ids reaches nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};

use super::{Namespace, SharedLimits};
use crate::home::VmHome;
use crate::types::{HostResult, Status};

/// Every namespace's queues, and the id counter they share.
#[derive(Debug, Default)]
pub(crate) struct QueueRegistry {
    spaces: RwLock<HashMap<Namespace, Arc<QueueSpace>>>,
    next_id: Arc<AtomicU32>,
}

impl QueueRegistry {
    /// The queues of `ns`, created on first use with `limits`.
    pub(crate) fn space(&self, ns: &Namespace, limits: &SharedLimits) -> Arc<QueueSpace> {
        if let Some(space) = self.spaces.read().get(ns) {
            return space.clone();
        }
        self.spaces
            .write()
            .entry(ns.clone())
            .or_insert_with(|| {
                Arc::new(QueueSpace {
                    index: RwLock::new(Index::default()),
                    bytes: AtomicUsize::new(0),
                    next_id: self.next_id.clone(),
                    max_queues: limits.queues,
                    max_items: limits.queue_items,
                    max_bytes: limits.queue_bytes,
                })
            })
            .clone()
    }
}

#[derive(Debug, Default)]
struct Index {
    by_name: HashMap<Box<[u8]>, u32>,
    by_id: HashMap<u32, Arc<Queue>>,
}

/// The queues of one namespace.
#[derive(Debug)]
pub(crate) struct QueueSpace {
    index: RwLock<Index>,
    /// Bytes of queue names and waiting items, against `max_bytes`.
    bytes: AtomicUsize,
    next_id: Arc<AtomicU32>,
    max_queues: usize,
    max_items: usize,
    max_bytes: usize,
}

/// One queue: its items and who is told about them.
#[derive(Debug)]
pub(crate) struct Queue {
    id: u32,
    items: Mutex<VecDeque<Bytes>>,
    /// The VM notified of new items. Weak: a dead VM is not kept alive by its queue.
    owner: Mutex<Option<VmHome>>,
    /// Notifications spawned and not yet delivered, bounded by the item cap.
    pending: AtomicUsize,
}

fn reserve(counter: &AtomicUsize, n: usize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            current.checked_add(n).filter(|&total| total <= max)
        })
        .is_ok()
}

impl QueueSpace {
    /// Creates queue `name`, or re-opens it keeping its items; either way `owner` is the VM
    /// notified from now on. A VM outside any pool (`owner` None: a check, a test) cannot be
    /// notified, so its registration leaves the current owner in place. Returns the id.
    ///
    /// InternalFailure past the namespace's queue cap.
    pub(crate) fn register(&self, name: &[u8], owner: Option<VmHome>) -> HostResult<u32> {
        let mut index = self.index.write();
        if let Some(&id) = index.by_name.get(name) {
            if let (Some(queue), Some(owner)) = (index.by_id.get(&id), owner) {
                *queue.owner.lock() = Some(owner);
            }
            return Ok(id);
        }
        if index.by_name.len() >= self.max_queues
            || !reserve(&self.bytes, name.len(), self.max_bytes)
        {
            return Err(Status::InternalFailure);
        }
        let id = loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 && !index.by_id.contains_key(&id) {
                break id;
            }
        };
        index.by_name.insert(name.into(), id);
        index.by_id.insert(
            id,
            Arc::new(Queue {
                id,
                items: Mutex::new(VecDeque::new()),
                owner: Mutex::new(owner),
                pending: AtomicUsize::new(0),
            }),
        );
        Ok(id)
    }

    /// The id of queue `name` in this namespace.
    pub(crate) fn resolve(&self, name: &[u8]) -> Option<u32> {
        self.index.read().by_name.get(name).copied()
    }

    /// Queue `id`, if it belongs to this namespace.
    pub(crate) fn get(&self, id: u32) -> Option<Arc<Queue>> {
        self.index.read().by_id.get(&id).cloned()
    }

    /// Appends an item. InternalFailure past the item or byte cap (nothing is added).
    pub(crate) fn push(&self, queue: &Queue, value: &[u8]) -> HostResult {
        let value = Bytes::copy_from_slice(value);
        let mut items = queue.items.lock();
        if items.len() >= self.max_items || !reserve(&self.bytes, value.len(), self.max_bytes) {
            return Err(Status::InternalFailure);
        }
        items.push_back(value);
        Ok(())
    }

    /// Takes the oldest item.
    pub(crate) fn pop(&self, queue: &Queue) -> Option<Bytes> {
        let item = queue.items.lock().pop_front()?;
        self.bytes.fetch_sub(item.len(), Ordering::AcqRel);
        Some(item)
    }

    /// Puts back an item just taken, at the front, when it could not be handed to the guest.
    /// Its bytes were held until [`Self::pop`], so this never passes a cap for long.
    pub(crate) fn unpop(&self, queue: &Queue, item: Bytes) {
        self.bytes.fetch_add(item.len(), Ordering::AcqRel);
        queue.items.lock().push_front(item);
    }

    /// Bytes held now (names and items).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Most notifications in flight for one queue: one per item it may hold.
    pub(crate) fn max_pending(&self) -> usize {
        self.max_items
    }
}

impl Queue {
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// The VM to notify, if any.
    pub(crate) fn owner(&self) -> Option<VmHome> {
        self.owner.lock().clone()
    }

    /// Counts a notification about to be spawned; false when `max` are already in flight (the
    /// guest has at least as many notifications coming as there can be items).
    pub(crate) fn begin_notify(&self, max: usize) -> bool {
        reserve(&self.pending, 1, max)
    }

    /// A spawned notification is about to be delivered.
    pub(crate) fn end_notify(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Items waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.lock().len()
    }
}
