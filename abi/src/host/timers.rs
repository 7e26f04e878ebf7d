//! Clocks and timers: proxy-wasm ABI v0.2.1 §Clocks and §Timers.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use std::time::Duration;

use crate::host::{check_allowed, code};
use crate::memory::{split, write_u64};
use crate::state::HostState;
use crate::types::Status;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", current_time)?;
    linker.func_wrap("env", "proxy_set_tick_period_milliseconds", set_tick_period)?;
    Ok(())
}

/// Calls `proxy_on_tick` on this VM's root context every `period_ms`; 0 stops it. One timer
/// per root context, also when set from a stream context. The timer dies with the VM.
///
/// ABI: `proxy_set_tick_period_milliseconds`. Always Ok (the SDKs accept nothing else).
fn set_tick_period(mut caller: Caller<'_, HostState>, period_ms: u32) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_set_tick_period_milliseconds")?;
    let state = caller.data_mut();
    if let Some(old) = state.ticker.take() {
        old.abort();
    }
    let Some(home) = state.home.clone() else {
        // A VM outside any pool (a check, a test) is never ticked.
        return Ok(Status::Ok.code());
    };
    if period_ms == 0 {
        return Ok(Status::Ok.code());
    }
    let period = Duration::from_millis(u64::from(period_ms));
    let task = state.runtime.background().spawn_here(async move {
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A VM busy past a period skips the missed ticks rather than bursting them.
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if home.with_vm(|vm| vm.on_tick()).is_none() {
                return;
            }
        }
    });
    caller.data_mut().ticker = Some(task.abort_handle());
    Ok(Status::Ok.code())
}

/// Nanoseconds since the Unix epoch, wall clock.
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Writes the wall-clock time in nanoseconds.
///
/// ABI: `proxy_get_current_time_nanoseconds` (deprecated in favour of WASI `clock_time_get`,
/// still imported by every SDK). InvalidMemoryAccess for a bad out-pointer.
/// Allowed everywhere, like logging: reading a clock cannot change host state.
fn current_time(mut caller: Caller<'_, HostState>, ret_time: u32) -> u32 {
    let (mem, _) = split(&mut caller);
    code(write_u64(mem, ret_time, unix_nanos()))
}
