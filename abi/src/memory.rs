//! Guest memory: every pointer and length a guest passes is checked here, and nowhere else.
//!
//! Out-of-range or wrapping ranges give `InvalidMemoryAccess`, never a host panic. Values the
//! host returns are copied into memory the guest allocates for them (the ABI's convention), with
//! host calls restricted while the guest allocator runs.

use wasmtime::{AsContextMut, Caller};

use crate::fault::Fault;
use crate::state::{HostState, Restriction};
use crate::types::{HostResult, Status};

/// The bytes `[ptr, ptr + len)` of `mem`.
pub(crate) fn slice(mem: &[u8], ptr: u32, len: u32) -> HostResult<&[u8]> {
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    mem.get(start..end).ok_or(Status::InvalidMemoryAccess)
}

/// The bytes `[ptr, ptr + len)` of `mem`, writable.
pub(crate) fn slice_mut(mem: &mut [u8], ptr: u32, len: u32) -> HostResult<&mut [u8]> {
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    mem.get_mut(start..end).ok_or(Status::InvalidMemoryAccess)
}

/// Reads a little-endian u32 at `ptr`.
pub(crate) fn read_u32(mem: &[u8], ptr: u32) -> HostResult<u32> {
    let b = slice(mem, ptr, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes a little-endian u32 at `ptr` (no alignment required, as in wasm itself).
pub(crate) fn write_u32(mem: &mut [u8], ptr: u32, value: u32) -> HostResult {
    slice_mut(mem, ptr, 4)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Writes a little-endian u64 at `ptr`.
pub(crate) fn write_u64(mem: &mut [u8], ptr: u32, value: u64) -> HostResult {
    slice_mut(mem, ptr, 8)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// The guest's linear memory and the host state, borrowed together so that a host call can read
/// its arguments in place while it changes host state (no copy of the arguments).
pub(crate) fn split<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> (&'a mut [u8], &'a mut HostState) {
    match caller.data().memory {
        Some(memory) => memory.data_and_store_mut(caller),
        // Checked at load: a module without an exported memory is refused. Keep the host safe
        // anyway: an empty memory turns every access into InvalidMemoryAccess.
        None => (&mut [], caller.data_mut()),
    }
}

/// Returns `len` bytes to the guest through the out-pointers `ret_ptr`/`ret_size`: the guest
/// allocator provides the memory, `fill` writes the bytes into it.
///
/// An empty value is returned as ptr=0,size=0 without allocating, as cpp-host does (the Rust
/// SDK reads a null pointer as "no value" and panics on a 1-byte empty map).
///
/// Guest mistakes (bad out-pointers, an allocator returning 0 or an out-of-range block) give
/// `Ok(Err(status))`; a trap inside the allocator, or a host call it makes that is not allowed
/// there, gives `Err` and fails the VM.
pub(crate) fn return_with(
    caller: &mut Caller<'_, HostState>,
    len: usize,
    ret_ptr: u32,
    ret_size: u32,
    fill: impl FnOnce(&mut [u8]),
) -> Result<HostResult, Fault> {
    // Check the out-pointers before allocating, so a bad pointer costs the guest nothing.
    let mem_len = memory_len(caller);
    if !fits(mem_len, ret_ptr, 4) || !fits(mem_len, ret_size, 4) {
        return Ok(Err(Status::InvalidMemoryAccess));
    }
    let Ok(len32) = u32::try_from(len) else {
        return Ok(Err(Status::InvalidMemoryAccess));
    };
    let addr = if len32 == 0 {
        0
    } else {
        match guest_alloc(caller, len32)? {
            Some(addr) => addr,
            None => return Ok(Err(Status::InvalidMemoryAccess)),
        }
    };
    let (mem, _) = split(caller);
    if len32 != 0 {
        match slice_mut(mem, addr, len32) {
            Ok(dst) => fill(dst),
            Err(status) => return Ok(Err(status)),
        }
    }
    Ok(write_u32(mem, ret_ptr, addr).and_then(|()| write_u32(mem, ret_size, len32)))
}

/// The guest memory's current length.
fn memory_len(caller: &Caller<'_, HostState>) -> usize {
    caller.data().memory.map_or(0, |m| m.data_size(caller))
}

/// Whether `[ptr, ptr + len)` lies within a memory of `mem_len` bytes.
fn fits(mem_len: usize, ptr: u32, len: u32) -> bool {
    (ptr as usize)
        .checked_add(len as usize)
        .is_some_and(|end| end <= mem_len)
}

/// Returns a copy of `data` to the guest; see [`return_with`].
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    ret_ptr: u32,
    ret_size: u32,
) -> Result<HostResult, Fault> {
    return_with(caller, data.len(), ret_ptr, ret_size, |dst| {
        dst.copy_from_slice(data)
    })
}

/// Calls the guest allocator for `len` bytes. `None` when it returns 0 (out of memory) or a
/// block that does not fit in memory.
fn guest_alloc(caller: &mut Caller<'_, HostState>, len: u32) -> Result<Option<u32>, Fault> {
    // Taken out for the call rather than cloned (a clone costs a type clone); the allocator
    // cannot reach it meanwhile: host calls that return values are refused inside it.
    let Some(alloc) = caller.data_mut().alloc.take() else {
        return Ok(None);
    };
    let previous = std::mem::replace(&mut caller.data_mut().restriction, Restriction::Allocating);
    let result = alloc.call(caller.as_context_mut(), len);
    let state = caller.data_mut();
    state.restriction = previous;
    state.alloc = Some(alloc);
    let addr = result.map_err(|e| Fault::from_wasmtime("guest allocator", e))?;
    if addr == 0 || !fits(memory_len(caller), addr, len) {
        return Ok(None);
    }
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_checks_bounds_and_wrapping() {
        let mem = [0u8; 16];
        assert_eq!(slice(&mem, 0, 16).unwrap().len(), 16);
        assert_eq!(slice(&mem, 16, 0).unwrap().len(), 0);
        assert_eq!(slice(&mem, 15, 2), Err(Status::InvalidMemoryAccess));
        assert_eq!(slice(&mem, 17, 0), Err(Status::InvalidMemoryAccess));
        assert_eq!(slice(&mem, u32::MAX, 2), Err(Status::InvalidMemoryAccess));
        assert_eq!(slice(&mem, 8, u32::MAX), Err(Status::InvalidMemoryAccess));
    }

    #[test]
    fn integers_are_little_endian_and_unaligned() {
        let mut mem = [0u8; 16];
        write_u32(&mut mem, 1, 0x0403_0201).unwrap();
        assert_eq!(&mem[1..5], &[1, 2, 3, 4]);
        assert_eq!(read_u32(&mem, 1).unwrap(), 0x0403_0201);
        write_u64(&mut mem, 7, 0x0807_0605_0403_0201).unwrap();
        assert_eq!(&mem[7..15], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(write_u64(&mut mem, 9, 0), Err(Status::InvalidMemoryAccess));
        assert_eq!(write_u32(&mut mem, 13, 0), Err(Status::InvalidMemoryAccess));
    }
}
