//! Context lifecycle and foreign functions: `proxy_set_effective_context`, `proxy_done`,
//! `proxy_call_foreign_function`.

use wasmtime::{Caller, Linker};

use crate::host::{check_allowed, code};
use crate::memory::{return_bytes, slice, split, write_u32};
use crate::state::HostState;
use crate::types::{HostResult, Status};

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap("env", "proxy_set_effective_context", set_effective_context)?;
    linker.func_wrap("env", "proxy_done", done)?;
    linker.func_wrap("env", "proxy_call_foreign_function", call_foreign_function)?;
    Ok(())
}

/// Makes later host calls of this callback act on context `context_id`: the root, or a stream
/// context of this VM that has not ended (a paused stream can then be read, changed and
/// resumed from a callout response or a tick).
///
/// ABI: `proxy_set_effective_context`. BadArgument for an unknown or ended context.
fn set_effective_context(
    mut caller: Caller<'_, HostState>,
    context_id: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_set_effective_context")?;
    let state = caller.data_mut();
    let known = context_id == state.root_context_id
        || context_id == state.lent_context && state.lent.is_some()
        || state.live_contexts.contains(&context_id);
    if !known {
        return Ok(Status::BadArgument.code());
    }
    state.context_id = context_id;
    Ok(Status::Ok.code())
}

/// Completes the root context after its `proxy_on_done` answered false (it had work to
/// drain). Only the root can be pending, and only once the embedder has asked it to finish
/// (see [`crate::shared::RootDone`]).
///
/// ABI: `proxy_done`. NotFound when the effective context is not the root, or the root is not
/// pending (cpp-host `WasmBase::done`).
fn done(caller: Caller<'_, HostState>) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_done")?;
    let state = caller.data();
    if state.context_id != state.root_context_id || !state.shared.root_done.complete() {
        return Ok(Status::NotFound.code());
    }
    Ok(Status::Ok.code())
}

/// Calls a host function by name with a byte-string argument; the result comes back through
/// `ret_ptr`/`ret_size`. Either may be 0: a 0 `ret_ptr` discards the result (its size is still
/// written to a non-zero `ret_size`), as in cpp-host. The functions are listed in
/// [`foreign::FUNCTIONS`].
///
/// ABI: `proxy_call_foreign_function`. NotFound for an unknown name; InvalidMemoryAccess for a
/// bad range or out-pointer; otherwise the function's own status.
fn call_foreign_function(
    mut caller: Caller<'_, HostState>,
    name_ptr: u32,
    name_size: u32,
    args_ptr: u32,
    args_size: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> wasmtime::Result<u32> {
    check_allowed(&caller, "proxy_call_foreign_function")?;
    let output = {
        let (mem, _) = split(&mut caller);
        let called = slice(mem, name_ptr, name_size).and_then(|name| {
            let args = slice(mem, args_ptr, args_size)?;
            let function = foreign::find(name).ok_or(Status::NotFound)?;
            function(args)
        });
        match called {
            Ok(output) => output,
            Err(status) => return Ok(status.code()),
        }
    };
    if ret_ptr != 0 && ret_size != 0 {
        return Ok(code(return_bytes(&mut caller, &output, ret_ptr, ret_size)?));
    }
    let (mem, _) = split(&mut caller);
    let size = u32::try_from(output.len()).unwrap_or(u32::MAX);
    let written = (|| -> HostResult {
        if ret_ptr != 0 {
            // A result pointer without a size: nothing is allocated, the pointer is null.
            write_u32(mem, ret_ptr, 0)?;
        }
        if ret_size != 0 {
            write_u32(mem, ret_size, size)?;
        }
        Ok(())
    })();
    Ok(code(written))
}

/// The foreign functions: Envoy's `compress` and `uncompress` (zlib format, as Envoy's
/// `foreign.cc`). Host time is not bounded by the callback deadline, so sizes are capped.
pub(crate) mod foreign {
    use std::io::Write as _;

    use flate2::{Compression, Decompress, FlushDecompress, write::ZlibEncoder};

    use crate::types::{HostResult, Status};

    /// Largest argument accepted; past it InternalFailure.
    pub(crate) const MAX_INPUT: usize = 4 << 20;
    /// Largest result produced (`uncompress` of a small bomb); past it InternalFailure.
    pub(crate) const MAX_OUTPUT: usize = 16 << 20;

    type Function = fn(&[u8]) -> HostResult<Vec<u8>>;

    /// Every foreign function, by name.
    pub(crate) const FUNCTIONS: &[(&str, Function)] =
        &[("compress", compress), ("uncompress", uncompress)];

    pub(crate) fn find(name: &[u8]) -> Option<Function> {
        FUNCTIONS
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|&(_, f)| f)
    }

    /// zlib-compresses the argument (zlib's `compress`: default level, zlib header).
    fn compress(input: &[u8]) -> HostResult<Vec<u8>> {
        if input.len() > MAX_INPUT {
            return Err(Status::InternalFailure);
        }
        let mut encoder = ZlibEncoder::new(
            Vec::with_capacity(input.len() / 2 + 64),
            Compression::default(),
        );
        encoder
            .write_all(input)
            .and_then(|()| encoder.finish())
            .map_err(|_| Status::SerializationFailure)
    }

    /// Inflates a zlib stream (zlib's `uncompress`). SerializationFailure if it is invalid or
    /// truncated.
    fn uncompress(input: &[u8]) -> HostResult<Vec<u8>> {
        if input.len() > MAX_INPUT {
            return Err(Status::InternalFailure);
        }
        let mut inflater = Decompress::new(true);
        // Envoy's first guess, then doubling up to the cap.
        let mut out = Vec::with_capacity((input.len() * 2 + 2).min(MAX_OUTPUT));
        // Each round either consumes input, fills the output or fails; bound it anyway.
        for _ in 0..100_000 {
            if out.len() == out.capacity() {
                if out.len() >= MAX_OUTPUT {
                    return Err(Status::InternalFailure);
                }
                let grow = out.len().max(4096).min(MAX_OUTPUT - out.len());
                out.reserve_exact(grow);
            }
            let consumed = usize::try_from(inflater.total_in()).unwrap_or(input.len());
            let rest = input.get(consumed..).unwrap_or_default();
            let status = inflater
                .decompress_vec(rest, &mut out, FlushDecompress::Finish)
                .map_err(|_| Status::SerializationFailure)?;
            match status {
                flate2::Status::StreamEnd if out.len() > MAX_OUTPUT => {
                    return Err(Status::InternalFailure);
                }
                flate2::Status::StreamEnd => return Ok(out),
                flate2::Status::Ok | flate2::Status::BufError => {
                    let all_read = usize::try_from(inflater.total_in()).ok() == Some(input.len());
                    if all_read && out.len() < out.capacity() {
                        // No more input, room for output, and no end: a truncated stream.
                        return Err(Status::SerializationFailure);
                    }
                }
            }
        }
        Err(Status::SerializationFailure)
    }
}

#[cfg(test)]
mod tests;
