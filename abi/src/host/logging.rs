//! Logging: proxy-wasm ABI v0.2.1 §Logging (`proxy_log`, `proxy_get_log_level`).

use wasmtime::{Caller, Linker};

use crate::host::code;
use crate::memory::{slice, split, write_u32};
use crate::state::HostState;
use crate::types::{HostResult, LogLevel, Status};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_log", log)?;
    linker.func_wrap("env", "proxy_get_log_level", get_log_level)?;
    Ok(())
}

/// Logs `message` at `level`. Allowed everywhere, even inside the guest allocator.
///
/// ABI: `proxy_log`. BadArgument for a level above Critical; InvalidMemoryAccess for a bad
/// message range. Over-long messages are cut to the plugin's `max_log_bytes`.
fn log(mut caller: Caller<'_, HostState>, level: u32, ptr: u32, len: u32) -> u32 {
    let (mem, state) = split(&mut caller);
    code(write_log(mem, state, level, ptr, len))
}

fn write_log(mem: &[u8], state: &HostState, level: u32, ptr: u32, len: u32) -> HostResult {
    let level = LogLevel::from_u32(level).ok_or(Status::BadArgument)?;
    let message = slice(mem, ptr, len)?;
    let plugin = &state.plugin;
    if level < plugin.log.level() {
        return Ok(());
    }
    let message = &message[..message.len().min(plugin.limits.max_log_bytes)];
    plugin
        .log
        .log(plugin, level, &String::from_utf8_lossy(message));
    Ok(())
}

/// Writes the most verbose level the host records, so guests skip formatting the rest.
///
/// ABI: `proxy_get_log_level` (0.2.1). InvalidMemoryAccess for a bad out-pointer.
fn get_log_level(mut caller: Caller<'_, HostState>, ret_level: u32) -> u32 {
    let (mem, state) = split(&mut caller);
    let level = state.plugin.log.level() as u32;
    code(write_u32(mem, ret_level, level))
}
