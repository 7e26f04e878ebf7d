//! Shared key-value data of one namespace, with Envoy's CAS semantics (cpp-host
//! `shared_data.cc`): every write assigns a new CAS from a counter that skips 0; a set with a
//! non-zero CAS must match the current one; the first set of a new key ignores the CAS. There
//! is no delete: an empty value stays a key.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;

use super::SharedLimits;
use crate::types::{HostResult, Status};

/// Shards of the map: VMs on different workers rarely wait for each other, and a reader never
/// waits for a writer of another key's shard.
const SHARDS: usize = 16;

#[derive(Debug)]
struct Entry {
    value: Bytes,
    cas: u32,
}

type Shard = RwLock<HashMap<Box<[u8]>, Entry>>;

/// The data of one namespace.
#[derive(Debug)]
pub(crate) struct DataSpace {
    shards: Box<[Shard]>,
    hasher: RandomState,
    /// Bytes of keys plus values, and keys, against the caps.
    bytes: AtomicUsize,
    keys: AtomicUsize,
    next_cas: AtomicU32,
    max_bytes: usize,
    max_keys: usize,
}

/// Adds `n` to `counter` unless the sum would pass `max`.
fn reserve(counter: &AtomicUsize, n: usize, max: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            current.checked_add(n).filter(|&total| total <= max)
        })
        .is_ok()
}

impl DataSpace {
    pub(crate) fn new(limits: &SharedLimits) -> DataSpace {
        DataSpace {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            bytes: AtomicUsize::new(0),
            keys: AtomicUsize::new(0),
            next_cas: AtomicU32::new(1),
            max_bytes: limits.data_bytes,
            max_keys: limits.data_keys,
        }
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// A new CAS: never 0, wrapping after 2^32 - 1 writes (as cpp-host's).
    fn next_cas(&self) -> u32 {
        loop {
            let cas = self.next_cas.fetch_add(1, Ordering::Relaxed);
            if cas != 0 {
                return cas;
            }
        }
    }

    /// The value under `key` (a cheap reference-counted copy) and its CAS.
    pub(crate) fn get(&self, key: &[u8]) -> Option<(Bytes, u32)> {
        let shard = self.shard(key).read();
        shard.get(key).map(|e| (e.value.clone(), e.cas))
    }

    /// Stores `value` under `key`. `cas` 0 is unconditional; otherwise it must be the key's
    /// current CAS, unless the key is new.
    ///
    /// CasMismatch for a stale CAS; InternalFailure when the namespace's caps would be passed
    /// (nothing is changed).
    pub(crate) fn set(&self, key: &[u8], value: &[u8], cas: u32) -> HostResult {
        // Copy outside the lock: the critical section is only the map update.
        let value = Bytes::copy_from_slice(value);
        let mut shard = self.shard(key).write();
        if let Some(entry) = shard.get_mut(key) {
            if cas != 0 && cas != entry.cas {
                return Err(Status::CasMismatch);
            }
            let (old, new) = (entry.value.len(), value.len());
            if new > old {
                if !reserve(&self.bytes, new - old, self.max_bytes) {
                    return Err(Status::InternalFailure);
                }
            } else {
                self.bytes.fetch_sub(old - new, Ordering::AcqRel);
            }
            entry.value = value;
            entry.cas = self.next_cas();
            return Ok(());
        }
        if !reserve(&self.keys, 1, self.max_keys) {
            return Err(Status::InternalFailure);
        }
        if !reserve(&self.bytes, key.len() + value.len(), self.max_bytes) {
            self.keys.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::InternalFailure);
        }
        let cas = self.next_cas();
        shard.insert(key.into(), Entry { value, cas });
        Ok(())
    }

    /// Bytes of keys plus values held now.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Keys held now.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> usize {
        self.keys.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn set_next_cas(&self, cas: u32) {
        self.next_cas.store(cas, Ordering::Relaxed);
    }
}
