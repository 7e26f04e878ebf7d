//! Imports that toolchains add to proxy-wasm modules: AssemblyScript's `abort` and `seed`,
//! Emscripten's memory-growth hook and `pthread_equal` (registered by cpp-host too).

use wasmtime::{Caller, Linker};

use crate::fault::{Fault, FaultKind};
use crate::memory::{slice, split};
use crate::state::HostState;

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "abort", abort)?;
    linker.func_wrap("env", "seed", |_: Caller<'_, HostState>| -> f64 {
        let mut bytes = [0u8; 8];
        // A failing OS RNG leaves the seed at 0: a worse seed, not a reason to fail the VM.
        let _ = getrandom::fill(&mut bytes);
        (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
    })?;
    linker.func_wrap(
        "env",
        "emscripten_notify_memory_growth",
        |_: Caller<'_, HostState>, _: u32| {},
    )?;
    linker.func_wrap(
        "env",
        "pthread_equal",
        |_: Caller<'_, HostState>, a: u32, b: u32| -> u32 { u32::from(a == b) },
    )?;
    Ok(())
}

/// AssemblyScript's `abort(message, file, line, column)`: the guest gave up, so the VM fails
/// with its message (AssemblyScript strings are UTF-16, with the byte length at `ptr - 4`).
fn abort(
    mut caller: Caller<'_, HostState>,
    message: u32,
    file: u32,
    line: u32,
    column: u32,
) -> wasmtime::Result<()> {
    let (mem, _) = split(&mut caller);
    let read = |ptr: u32| -> String {
        let Some(len_at) = ptr.checked_sub(4) else {
            return String::new();
        };
        let Ok(len) = crate::memory::read_u32(mem, len_at) else {
            return String::new();
        };
        let Ok(bytes) = slice(mem, ptr, len.min(4096)) else {
            return String::new();
        };
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    };
    let text = format!("abort: {} at {}:{line}:{column}", read(message), read(file));
    Err(wasmtime::Error::new(Fault::new(
        FaultKind::Trap,
        "abort",
        text,
    )))
}
