//! The execution model: how guest calls share the embedder's worker threads with every other
//! request, so that one filter running long does not stall its neighbours.
//!
//! # The model
//!
//! Guest calls are synchronous: a callback runs to its end (or its fault) on the thread that
//! called into the chain, inside the request's task. No guest call ever spans an `.await`, so
//! a request future dropped by the embedder (a client that went away) can never cancel a call
//! halfway: the VM is always left between two callbacks, consistent.
//!
//! On a multi-thread tokio runtime (Pingora's, with `work_stealing`, its default), a worker
//! thread owns a scheduler *core*: its queue of runnable tasks. A thread busy in a guest call
//! holds its core, and the tasks queued on it (other requests, the listener's accepts) wait,
//! whatever other workers exist: this is how one looping filter used to stall the whole proxy.
//! So a call that runs past [`HAND_OVER_AFTER_TICKS`] epoch ticks gives its core away from the
//! epoch callback, with [`tokio::task::block_in_place`]: the core goes to another thread (from
//! tokio's blocking pool), which goes on running the queued tasks, while this thread finishes
//! the guest call and then the rest of the request's poll, and leaves the worker pool. Calls
//! shorter than a tick or two (nearly all) pay nothing for this.
//!
//! `block_in_place` takes the core back when its closure returns if no thread took it yet, so
//! the hand-over waits (at most [`TAKE_OVER_WAIT`]) until a probe task queued on this core has
//! run on another thread; if it has not, the next tick tries again, up to [`MAX_ATTEMPTS`]
//! times. The callback deadline keeps counting epoch ticks of the guest's run: the hand-over
//! pauses the guest for at most the wait, once.
//!
//! VM slots are mutexes ([`crate::FilterPool`]). A request never blocks its worker on one: a
//! new stream takes any free VM of the filter (`try_lock`), and a stream whose context lives in
//! a busy VM (or a tick, a callout response) waits for it through [`blocking`], which gives the
//! core away first when the wait is not momentary.
//!
//! ```text
//!  time ──────────────────────────────────────────────────────────────────────────────▶
//!  worker core A   [thread 1: poll req 1 ─ guest call ─┐                               ]
//!                  [                                   └─ core A → thread 3: req 2, 3 …]
//!  thread 1        req 1 ── guest call (VM x, slot locked) ─────────── call ends ─ rest
//!                                          tick 2: hand-over           of req 1's poll,
//!                                                                      then leaves
//!  VM x            owned by req 1's call ─────────────────────────────┘ free: any stream
//!  stream 2 on x   waits in `blocking` (its core handed over) ─────────▶ gets x
//! ```
//!
//! Limits: on a current-thread runtime (Pingora with `work_stealing: false`) there is no core
//! to hand over, and a long call holds its thread as before; the callback deadline bounds it.
//! Each long call in flight occupies one thread of the blocking pool (tokio's default: 512).
//!
//! # Why not wasmtime's async support
//!
//! Async calls (`call_async` with `epoch_deadline_async_yield_and_update`) would let a long
//! call yield its worker at every tick without an extra thread, but every call, host
//! function and guest allocation would become async: wasmtime 48 refuses a synchronous call
//! into the guest from a fiber, and host functions call the guest's allocator. Each call would
//! also switch fibers. Keeping calls synchronous keeps today's per-call cost (criterion's G3
//! and G7 figures) and the chain's synchronous API, which Pingora's synchronous
//! `response_body_filter` needs anyway.

use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};

/// Epoch ticks a guest call runs before it hands its worker's core over: past the first
/// tick, which may come right after the call starts.
pub(crate) const HAND_OVER_AFTER_TICKS: u32 = 2;
/// Longest a hand-over waits for another thread to take the core.
pub(crate) const TAKE_OVER_WAIT: Duration = Duration::from_millis(20);
/// Hand-overs tried per call before giving up (the runtime may be shutting down).
pub(crate) const MAX_ATTEMPTS: u8 = 3;
/// A lock wait shorter than this spins on the worker; a longer one gives the core away.
const MOMENTARY: Duration = Duration::from_micros(50);

/// Where the current guest call stands with its worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum HandOver {
    /// The call has not run long enough, or the worker was not handed over yet after
    /// `attempts` tries.
    #[default]
    Pending,
    Tried {
        attempts: u8,
    },
    /// Nothing more to do for this call: the core went to another thread, or there is none.
    Done,
}

impl HandOver {
    /// Called at every epoch tick of a call (`ticks` so far): hands the worker over once the
    /// call has run long enough.
    pub(crate) fn on_tick(&mut self, ticks: u32) {
        if ticks < HAND_OVER_AFTER_TICKS {
            return;
        }
        let attempts = match *self {
            HandOver::Done => return,
            HandOver::Pending => 0,
            HandOver::Tried { attempts } => attempts,
        };
        *self = if hand_over_worker() || attempts + 1 >= MAX_ATTEMPTS {
            HandOver::Done
        } else {
            HandOver::Tried {
                attempts: attempts + 1,
            }
        };
    }
}

/// Whether this thread runs inside a multi-thread tokio runtime, where `block_in_place` is
/// allowed.
fn on_multi_thread_runtime() -> Option<Handle> {
    Handle::try_current()
        .ok()
        .filter(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// Gives this worker's core to another thread, for the rest of a long guest call. `true`
/// once another thread serves the core's queue (or there is no core to give).
fn hand_over_worker() -> bool {
    let Some(handle) = on_multi_thread_runtime() else {
        return true;
    };
    let (ran, probe) = mpsc::sync_channel::<()>(1);
    // Spawned from a worker, the probe goes on this worker's own queue: it runs when another
    // thread serves that queue.
    drop(handle.spawn(async move {
        let _ = ran.try_send(());
    }));
    let taken = tokio::task::block_in_place(|| probe.recv_timeout(TAKE_OVER_WAIT).is_ok());
    tracing::debug!(taken, "a guest call runs long: its worker was handed over");
    taken
}

/// Runs `wait`, which may block for long (a VM another thread is calling), without holding a
/// worker's core: on a multi-thread runtime the core goes to another thread meanwhile.
pub(crate) fn blocking<R>(wait: impl FnOnce() -> R) -> R {
    match on_multi_thread_runtime() {
        Some(_) => tokio::task::block_in_place(wait),
        None => wait(),
    }
}

/// Locks `mutex`: at once if it is free, after a short spin if it frees up quickly, else in
/// [`blocking`].
pub(crate) fn lock<T>(mutex: &parking_lot::Mutex<T>) -> parking_lot::MutexGuard<'_, T> {
    if let Some(guard) = mutex.try_lock() {
        return guard;
    }
    if let Some(guard) = mutex.try_lock_for(MOMENTARY) {
        return guard;
    }
    blocking(|| mutex.lock())
}
