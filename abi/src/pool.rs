//! A filter's VMs: one slot per worker, each holding a VM that requests share, as Envoy keeps
//! one VM per plugin per worker thread. A slot whose VM faulted gets a fresh VM, with a backoff
//! when the filter keeps failing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

use crate::error::LoadError;
use crate::fault::Fault;
use crate::home::VmHome;
use crate::plugin::Plugin;
use crate::stream::HttpStream;
use crate::vm::Vm;

/// Faults in a row (with no successful callback between them) after which a slot waits before
/// building another VM: a filter that traps on every request is not rebuilt for every request.
const BACKOFF_AFTER: u32 = 5;
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
    /// Itself, for the homes of the VMs it builds later.
    this: Weak<FilterPool>,
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
    /// Streams that were parked in a VM when it faulted, by (incarnation, context), until their
    /// tasks take them back.
    orphans: Vec<(u64, u32, Box<HttpStream>)>,
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
        let mut error = None;
        let pool = Arc::new_cyclic(|this: &Weak<FilterPool>| {
            let mut built = Vec::with_capacity(slots.max(1));
            for slot in 0..slots.max(1) {
                let home = VmHome {
                    pool: this.clone(),
                    slot,
                    incarnation: 0,
                };
                match Vm::start_at(&plugin, Some(home)) {
                    Ok(vm) => built.push(Mutex::new(Slot {
                        vm: Some(vm),
                        incarnation: 0,
                        consecutive_faults: 0,
                        last_fault: None,
                        orphans: Vec::new(),
                    })),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            FilterPool {
                plugin: plugin.clone(),
                slots: built.into_boxed_slice(),
                stats: PoolStats::default(),
                this: this.clone(),
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(pool),
        }
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

    /// Retires the pool's VMs (its generation was replaced and drained): every root context
    /// gets `proxy_on_done`, and those that ask to finish later have until `grace` to call
    /// `proxy_done` (their timers, callouts and queues keep working meanwhile), then
    /// `proxy_on_delete`. Blocks: call it off the request path.
    pub fn retire(&self, grace: Duration) {
        let mut pending = Vec::new();
        for slot in 0..self.slots.len() {
            let mut guard = self.lock(slot);
            let Some(vm) = guard.existing() else {
                continue;
            };
            match vm.shutdown_root() {
                Ok(true) => {
                    if let Err(fault) = vm.delete_root() {
                        guard.fail(&fault);
                    }
                }
                Ok(false) => pending.push((slot, vm.root_done())),
                Err(fault) => guard.fail(&fault),
            }
        }
        let deadline = Instant::now() + grace;
        while !pending.iter().all(|(_, done)| done.is_done()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for (slot, done) in pending {
            if !done.is_done() {
                tracing::warn!(
                    filter = %self.plugin.info().name,
                    "root context did not call proxy_done within {grace:?}; deleting it"
                );
            }
            let mut guard = self.lock(slot);
            if let Some(vm) = guard.existing()
                && let Err(fault) = vm.delete_root()
            {
                guard.fail(&fault);
            }
        }
    }

    /// Exclusive use of a slot. Calls into one VM are serialized, like Envoy's per-worker VM.
    /// Guest calls are synchronous and bounded by the callback deadline, so the lock is held for
    /// microseconds (at worst the deadline); a wait that is not momentary gives the worker away
    /// first (see [`crate::preempt`]). Never hold the guard across an `.await`.
    pub fn lock(&self, slot: usize) -> SlotGuard<'_> {
        let index = slot % self.slots.len();
        SlotGuard {
            pool: self,
            index,
            slot: crate::preempt::lock(&self.slots[index]),
        }
    }

    /// A free slot for a new stream: the current thread's if it is free, else any free one,
    /// so that a stream never waits behind a VM busy in a long call while another is idle.
    /// When every VM is busy, the thread's own slot, waited for in [`crate::preempt::lock`].
    pub fn lock_free(&self) -> (usize, SlotGuard<'_>) {
        let n = self.slots.len();
        let first = self.slot_for_current_thread();
        for k in 0..n {
            let index = (first + k) % n;
            if let Some(slot) = self.slots[index].try_lock() {
                return (
                    index,
                    SlotGuard {
                        pool: self,
                        index,
                        slot,
                    },
                );
            }
        }
        (first, self.lock(first))
    }
}

/// Exclusive use of one slot.
#[derive(Debug)]
pub struct SlotGuard<'a> {
    pool: &'a FilterPool,
    index: usize,
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

    /// The slot's VM if it has one, without building a new one.
    pub fn existing(&mut self) -> Option<&mut Vm> {
        self.slot.vm.as_mut()
    }

    /// The VM if it is still the incarnation a stream's context was created in.
    pub fn vm_if(&mut self, incarnation: u64) -> Option<&mut Vm> {
        if self.slot.incarnation != incarnation {
            return None;
        }
        self.slot.vm.as_mut()
    }

    /// Throws the VM away after a fault; the next user gets a fresh one. Streams parked in it
    /// are kept for their tasks, which are woken.
    pub fn fail(&mut self, _fault: &Fault) {
        let slot = &mut *self.slot;
        if let Some(mut vm) = slot.vm.take() {
            let incarnation = slot.incarnation;
            for (ctx, stream) in vm.take_parked() {
                slot.orphans.push((incarnation, ctx, stream));
            }
        }
        slot.incarnation += 1;
        slot.consecutive_faults = slot.consecutive_faults.saturating_add(1);
        slot.last_fault = Some(Instant::now());
        self.pool.stats.faults.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes back a stream parked in incarnation `incarnation` under context `ctx`, and whether
    /// that VM is still alive (if not, the stream was rescued from a VM that faulted).
    pub fn unpark(&mut self, incarnation: u64, ctx: u32) -> Option<(Box<HttpStream>, bool)> {
        if let Some(vm) = self.vm_if(incarnation)
            && let Some(stream) = vm.unpark(ctx)
        {
            return Some((stream, true));
        }
        let orphans = &mut self.slot.orphans;
        let i = orphans
            .iter()
            .position(|(inc, c, _)| *inc == incarnation && *c == ctx)?;
        let (_, _, mut stream) = orphans.swap_remove(i);
        stream.waker = None;
        Some((stream, false))
    }

    /// Records that the VM served a callback: the filter is healthy again.
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
        let home = VmHome {
            pool: self.pool.this.clone(),
            slot: self.index,
            incarnation: slot.incarnation,
        };
        match Vm::start_at(&self.pool.plugin, Some(home)) {
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
