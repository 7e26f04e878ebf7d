//! The subset of `libz-ng-sys` that flate2's `zlib-ng` backend (`flate2/src/ffi/c.rs` and
//! `mem.rs`) uses, implemented by calling `libz-rs-sys` (zlib-rs, a zlib in Rust with zlib's
//! API and stream layout). Pingora asks flate2 for `zlib-ng`, whose real `libz-ng-sys` runs
//! cmake; this crate replaces it (root `Cargo.toml`, `[patch.crates-io]`) so that building
//! needs only rustc and a C linker.
//!
//! `z_stream` keeps libz-ng-sys's shape (plain function pointers for the allocator, which
//! flate2 fills in) and has zlib's layout, which is also zlib-rs's: each function casts the
//! pointer and calls zlib-rs. The layout is checked at compile time below.

#![allow(non_camel_case_types, non_snake_case)]

use std::mem::{offset_of, size_of};
use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_void};

use libz_rs_sys as rs;

pub type alloc_func = unsafe extern "C" fn(voidpf, uInt, uInt) -> voidpf;
pub type free_func = unsafe extern "C" fn(voidpf, voidpf);
pub type Bytef = u8;
pub type uInt = c_uint;
pub type uLong = c_ulong;
pub type uLongf = c_ulong;
pub type voidp = *mut c_void;
pub type voidpc = *const c_void;
pub type voidpf = *mut c_void;
pub enum internal_state {}

/// zlib's stream, as libz-ng-sys declares it in zlib (non-`zng`) mode.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct z_stream {
    pub next_in: *mut Bytef,
    pub avail_in: uInt,
    pub total_in: uLong,
    pub next_out: *mut Bytef,
    pub avail_out: uInt,
    pub total_out: uLong,
    pub msg: *mut c_char,
    pub state: *mut internal_state,
    pub zalloc: alloc_func,
    pub zfree: free_func,
    pub opaque: voidpf,
    pub data_type: c_int,
    pub adler: uLong,
    pub reserved: uLong,
}
pub type z_streamp = *mut z_stream;

// The casts below are sound only if both streams have the same layout.
macro_rules! same_offset {
    ($($field:ident),*) => {
        $(const _: () = assert!(offset_of!(z_stream, $field) == offset_of!(rs::z_stream, $field));)*
    };
}
const _: () = assert!(size_of::<z_stream>() == size_of::<rs::z_stream>());
same_offset!(
    next_in, avail_in, total_in, next_out, avail_out, total_out, msg, state, zalloc, zfree, opaque,
    data_type, adler, reserved
);

fn rs_stream(strm: z_streamp) -> *mut rs::z_stream {
    strm.cast()
}

pub const Z_NO_FLUSH: c_int = 0;
pub const Z_PARTIAL_FLUSH: c_int = 1;
pub const Z_SYNC_FLUSH: c_int = 2;
pub const Z_FULL_FLUSH: c_int = 3;
pub const Z_FINISH: c_int = 4;
pub const Z_BLOCK: c_int = 5;
pub const Z_TREES: c_int = 6;

pub const Z_OK: c_int = 0;
pub const Z_STREAM_END: c_int = 1;
pub const Z_NEED_DICT: c_int = 2;
pub const Z_ERRNO: c_int = -1;
pub const Z_STREAM_ERROR: c_int = -2;
pub const Z_DATA_ERROR: c_int = -3;
pub const Z_MEM_ERROR: c_int = -4;
pub const Z_BUF_ERROR: c_int = -5;
pub const Z_VERSION_ERROR: c_int = -6;

pub const Z_NO_COMPRESSION: c_int = 0;
pub const Z_BEST_SPEED: c_int = 1;
pub const Z_BEST_COMPRESSION: c_int = 9;
pub const Z_DEFAULT_COMPRESSION: c_int = -1;

pub const Z_FILTERED: c_int = 1;
pub const Z_HUFFMAN_ONLY: c_int = 2;
pub const Z_RLE: c_int = 3;
pub const Z_FIXED: c_int = 4;
pub const Z_DEFAULT_STRATEGY: c_int = 0;

pub const Z_BINARY: c_int = 0;
pub const Z_TEXT: c_int = 1;
pub const Z_ASCII: c_int = Z_TEXT;
pub const Z_UNKNOWN: c_int = 2;

pub const Z_DEFLATED: c_int = 8;

/// # Safety
/// As zlib's `deflate`: `strm` initialized by `deflateInit2_`, its buffers valid.
pub unsafe extern "C" fn deflate(strm: z_streamp, flush: c_int) -> c_int {
    unsafe { rs::deflate(rs_stream(strm), flush) }
}

/// # Safety
/// As zlib's `deflateEnd`.
pub unsafe extern "C" fn deflateEnd(strm: z_streamp) -> c_int {
    unsafe { rs::deflateEnd(rs_stream(strm)) }
}

/// # Safety
/// As zlib's `deflateReset`.
pub unsafe extern "C" fn deflateReset(strm: z_streamp) -> c_int {
    unsafe { rs::deflateReset(rs_stream(strm)) }
}

/// # Safety
/// As zlib's `deflateInit2_`: `strm` null or valid with `zalloc`, `zfree`, `opaque` set.
pub unsafe extern "C" fn deflateInit2_(
    strm: z_streamp,
    level: c_int,
    method: c_int,
    windowBits: c_int,
    memLevel: c_int,
    strategy: c_int,
    version: *const c_char,
    stream_size: c_int,
) -> c_int {
    unsafe {
        rs::deflateInit2_(
            rs_stream(strm),
            level,
            method,
            windowBits,
            memLevel,
            strategy,
            version,
            stream_size,
        )
    }
}

/// # Safety
/// As zlib's `deflateParams`.
pub unsafe extern "C" fn deflateParams(strm: z_streamp, level: c_int, strategy: c_int) -> c_int {
    unsafe { rs::deflateParams(rs_stream(strm), level, strategy) }
}

/// # Safety
/// As zlib's `deflateSetDictionary`: `dictionary` valid for `dictLength` bytes.
pub unsafe extern "C" fn deflateSetDictionary(
    strm: z_streamp,
    dictionary: *const Bytef,
    dictLength: uInt,
) -> c_int {
    unsafe { rs::deflateSetDictionary(rs_stream(strm), dictionary, dictLength) }
}

/// # Safety
/// As zlib's `inflate`: `strm` initialized by `inflateInit2_`, its buffers valid.
pub unsafe extern "C" fn inflate(strm: z_streamp, flush: c_int) -> c_int {
    unsafe { rs::inflate(rs_stream(strm), flush) }
}

/// # Safety
/// As zlib's `inflateEnd`.
pub unsafe extern "C" fn inflateEnd(strm: z_streamp) -> c_int {
    unsafe { rs::inflateEnd(rs_stream(strm)) }
}

/// # Safety
/// As zlib's `inflateInit2_`: `strm` null or valid with `zalloc`, `zfree`, `opaque` set.
pub unsafe extern "C" fn inflateInit2_(
    strm: z_streamp,
    windowBits: c_int,
    version: *const c_char,
    stream_size: c_int,
) -> c_int {
    unsafe { rs::inflateInit2_(rs_stream(strm), windowBits, version, stream_size) }
}

/// # Safety
/// As zlib's `inflateReset2`.
pub unsafe extern "C" fn inflateReset2(strm: z_streamp, windowBits: c_int) -> c_int {
    unsafe { rs::inflateReset2(rs_stream(strm), windowBits) }
}

/// # Safety
/// As zlib's `inflateSetDictionary`: `dictionary` valid for `dictLength` bytes.
pub unsafe extern "C" fn inflateSetDictionary(
    strm: z_streamp,
    dictionary: *const Bytef,
    dictLength: uInt,
) -> c_int {
    unsafe { rs::inflateSetDictionary(rs_stream(strm), dictionary, dictLength) }
}

/// zlib-rs's version string ("1.3.0-zlib-rs-…"): `*Init2_` check its first digit.
pub extern "C" fn zlibVersion() -> *const c_char {
    rs::zlibVersion()
}
