//! The few proxy-wasm host calls the helpers make, declared here so that every status comes
//! back as a value. (The proxy-wasm crate's wrappers panic on statuses they do not expect, and
//! a panic in a filter is a trap that fails the request.)
//!
//! This is the crate's only unsafe code: raw imports, and taking ownership of the buffers the
//! host returns. The imports are declared on every target, as the proxy-wasm crate declares
//! its own, so that a filter crate builds natively for its tests; natively they are never
//! resolved, and calling them is a link error.

#![allow(
    unsafe_code,
    reason = "raw proxy-wasm imports; each block states why it is sound"
)]

use std::ptr::null_mut;

use crate::Status;

pub(crate) const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

// The same imports the proxy-wasm crate declares, with plain integer types so that no status
// or enum value can be unrepresentable. Sizes are `usize`, which is 32 bits on wasm32.
#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
}

/// Calls a host function that returns a buffer through two out-pointers, and takes ownership
/// of that buffer.
fn returned(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Vec<u8>, Status> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    Status::check(call(&mut data, &mut size))?;
    if data.is_null() || size == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: by the ABI's convention the host obtained this block from the module's allocator
    // export (the proxy-wasm crate's `proxy_on_memory_allocate`, which allocates `size` bytes
    // with alignment 1 from the global allocator), filled all `size` bytes, and handed it to the
    // guest. The proxy-wasm crate takes these buffers over the same way.
    Ok(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub(crate) fn log(level: u32, message: &str) -> Result<(), Status> {
    // SAFETY: the pointer and length describe a live `&str` for the duration of the call; the
    // host only reads it.
    Status::check(unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

pub(crate) fn get_buffer(buffer_type: u32) -> Result<Vec<u8>, Status> {
    returned(|data, size| {
        // SAFETY: the out-pointers point at live locals of `returned`; the host writes one
        // pointer and one size through them.
        unsafe { proxy_get_buffer_bytes(buffer_type, 0, usize::MAX, data, size) }
    })
}

pub(crate) fn get_map_pairs(map: u32) -> Result<Vec<u8>, Status> {
    // SAFETY: as in `get_buffer`.
    returned(|data, size| unsafe { proxy_get_header_map_pairs(map, data, size) })
}

pub(crate) fn get_map_value(map: u32, name: &str) -> Result<Vec<u8>, Status> {
    returned(|data, size| {
        // SAFETY: `name` is live and only read; the out-pointers are as in `get_buffer`.
        unsafe { proxy_get_header_map_value(map, name.as_ptr(), name.len(), data, size) }
    })
}

pub(crate) fn add_map_value(map: u32, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are live for the call and only read by the host.
    Status::check(unsafe {
        proxy_add_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub(crate) fn replace_map_value(map: u32, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: both slices are live for the call and only read by the host.
    Status::check(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

pub(crate) fn remove_map_value(map: u32, name: &str) -> Result<(), Status> {
    // SAFETY: `name` is live for the call and only read by the host.
    Status::check(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

pub(crate) fn get_property(path: &[&str]) -> Result<Vec<u8>, Status> {
    // The ABI's path encoding: segments joined by NUL.
    let encoded = path.join("\0");
    returned(|data, size| {
        // SAFETY: `encoded` is live and only read; the out-pointers are as in `get_buffer`.
        unsafe { proxy_get_property(encoded.as_ptr(), encoded.len(), data, size) }
    })
}
