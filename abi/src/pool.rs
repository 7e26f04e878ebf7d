//! A filter's VMs: one slot per worker, each holding a VM that requests share, as Envoy keeps
//! one VM per plugin per worker thread. A slot whose VM faulted gets a fresh VM, with a backoff
//! when the filter keeps failing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

use crate::error::LoadError;
use crate::fault::Fault;
use crate::plugin::Plugin;
use crate::vm::Vm;

/// Faults in a row after which a slot waits before building another VM.
const BACKOFF_AFTER: u32 = 3;
/// The first wait; it doubles with every further fault, up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Counters a pool keeps for the embedder's metrics.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// VMs thrown away after a fault.
    pub faults: AtomicU64,
    /// VMs built to replace one that faulted.
    pub rebuilds: AtomicU64,
    /// Attempts to build a replacement that failed.
    pub rebuild_failures: AtomicU64,
}

/// The VMs of one filter.
#[derive(Debug)]
pub struct FilterPool {
    plugin: Plugin,
    slots: Box<[Mutex<Slot>]>,
    stats: PoolStats,
}

/// One VM and what is known of its history.
#[derive(Debug)]
struct Slot {
    vm: Option<Vm>,
    /// Changes whenever the VM is replaced: a stream whose context lives in an older
    /// incarnation has lost it.
    incarnation: u64,
    consecutive_faults: u32,
    last_fault: Option<Instant>,
}

/// Why a slot has no VM to offer.
#[derive(Debug, Clone)]
pub enum Unavailable {
    /// The filter keeps failing; the slot waits until this instant before trying again.
    BackingOff { until: Instant },
    /// Building a replacement VM failed.
    StartFailed(LoadError),
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BackingOff { until } => write!(
                f,
                "filter keeps failing; next VM in {:?}",
                until.saturating_duration_since(Instant::now())
            ),
            Self::StartFailed(e) => write!(f, "replacement VM failed to start: {e}"),
        }
    }
}

fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

impl FilterPool {
    /// Starts `slots` VMs of the plugin now, so that requests never wait for one. Fails if
    /// any VM fails to start.
    pub fn new(plugin: Plugin, slots: usize) -> Result<Arc<FilterPool>, LoadError> {
        let slots = (0..slots.max(1))
            .map(|_| {
                Ok(Mutex::new(Slot {
                    vm: Some(Vm::start(&plugin)?),
                    incarnation: 0,
                    consecutive_faults: 0,
                    last_fault: None,
                }))
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        Ok(Arc::new(FilterPool {
            plugin,
            slots: slots.into_boxed_slice(),
            stats: PoolStats::default(),
        }))
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// Number of VM slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot a new stream on this thread should use: streams of one worker share a VM,
    /// so workers rarely contend.
    pub fn slot_for_current_thread(&self) -> usize {
        thread_index() % self.slots.len()
    }

    /// Waits for exclusive use of a slot. Calls into one VM are serialized, like Envoy's
    /// per-worker VM; hold the guard only around guest calls, never across other awaits.
    pub async fn lock(&self, slot: usize) -> SlotGuard<'_> {
        SlotGuard {
            pool: self,
            slot: self.slots[slot % self.slots.len()].lock().await,
        }
    }

    /// Takes a slot without waiting, for synchronous phases.
    pub fn try_lock(&self, slot: usize) -> Option<SlotGuard<'_>> {
        Some(SlotGuard {
            pool: self,
            slot: self.slots[slot % self.slots.len()].try_lock().ok()?,
        })
    }
}

/// Exclusive use of one slot.
#[derive(Debug)]
pub struct SlotGuard<'a> {
    pool: &'a FilterPool,
    slot: MutexGuard<'a, Slot>,
}

impl SlotGuard<'_> {
    /// The slot's VM and its incarnation, building a new VM if the last one faulted.
    pub fn vm(&mut self) -> Result<(&mut Vm, u64), Unavailable> {
        if self.slot.vm.is_none() {
            self.rebuild()?;
        }
        let incarnation = self.slot.incarnation;
        match self.slot.vm.as_mut() {
            Some(vm) => Ok((vm, incarnation)),
            None => Err(Unavailable::BackingOff {
                until: Instant::now(),
            }),
        }
    }

    /// The VM if it is still the incarnation a stream's context was created in.
    pub fn vm_if(&mut self, incarnation: u64) -> Option<&mut Vm> {
        if self.slot.incarnation != incarnation {
            return None;
        }
        self.slot.vm.as_mut()
    }

    /// Throws the VM away after a fault; the next user gets a fresh one.
    pub fn fail(&mut self, _fault: &Fault) {
        let slot = &mut *self.slot;
        slot.vm = None;
        slot.incarnation += 1;
        slot.consecutive_faults = slot.consecutive_faults.saturating_add(1);
        slot.last_fault = Some(Instant::now());
        self.pool.stats.faults.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that the VM served a stream to its end: the filter is healthy again.
    pub fn succeeded(&mut self) {
        self.slot.consecutive_faults = 0;
    }

    fn rebuild(&mut self) -> Result<(), Unavailable> {
        let slot = &mut *self.slot;
        if slot.consecutive_faults >= BACKOFF_AFTER {
            let doublings = (slot.consecutive_faults - BACKOFF_AFTER).min(16);
            let wait = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX);
            let until = slot.last_fault.map_or_else(Instant::now, |t| t + wait);
            if Instant::now() < until {
                return Err(Unavailable::BackingOff { until });
            }
        }
        match Vm::start(&self.pool.plugin) {
            Ok(vm) => {
                slot.vm = Some(vm);
                self.pool.stats.rebuilds.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                slot.consecutive_faults = slot.consecutive_faults.saturating_add(1);
                slot.last_fault = Some(Instant::now());
                self.pool
                    .stats
                    .rebuild_failures
                    .fetch_add(1, Ordering::Relaxed);
                Err(Unavailable::StartFailed(err))
            }
        }
    }
}
