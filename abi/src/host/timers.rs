//! Clocks and timers: proxy-wasm ABI v0.2.1 §Clocks and §Timers.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use crate::host::{code, unimplemented_fn};
use crate::memory::{split, write_u64};
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_get_current_time_nanoseconds", current_time)?;
    unimplemented_fn!(linker, "proxy_set_tick_period_milliseconds", (u32));
    Ok(())
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
