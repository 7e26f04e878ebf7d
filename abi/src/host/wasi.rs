//! WASI preview 1: the small surface proxy-wasm guests need (logging through stdout/stderr,
//! clocks, randomness, empty args and environment) and nothing else: no filesystem, no host
//! environment, no sockets. Behaviour follows cpp-host's stubs.

use std::sync::OnceLock;
use std::time::Instant;

use wasmtime::{Caller, Linker};

use crate::fault::{Fault, FaultKind};
use crate::host::timers::unix_nanos;
use crate::limits::{MAX_FD_WRITE_BYTES, MAX_RANDOM_BYTES};
use crate::memory::{read_u32, slice, slice_mut, split, write_u32, write_u64};
use crate::state::HostState;
use crate::types::LogLevel;

/// WASI errno values used here.
mod errno {
    pub const SUCCESS: u32 = 0;
    pub const BADF: u32 = 8;
    pub const FAULT: u32 = 21;
    pub const INVAL: u32 = 28;
    pub const IO: u32 = 29;
    pub const NOENT: u32 = 44;
    pub const NOSYS: u32 = 52;
    pub const NOTDIR: u32 = 54;
    pub const NOTSUP: u32 = 58;
    pub const SPIPE: u32 = 70;
}

/// Every function defined here; a module importing anything else from WASI does not load.
pub(crate) const NAMES: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

type C<'a> = Caller<'a, HostState>;

fn is_stdio(fd: u32) -> bool {
    fd == 1 || fd == 2
}

/// Defines a function answering a fixed errno, with the right signature.
macro_rules! fixed {
    ($linker:expr, $module:expr, $name:literal, $errno:expr, ($($arg:ty),*)) => {
        $linker.func_wrap($module, $name, |_: C<'_>, $(_: $arg),*| -> u32 { $errno })?
    };
}

/// Defines a function that succeeds for stdout/stderr and answers BADF otherwise.
macro_rules! stdio_ok {
    ($linker:expr, $module:expr, $name:literal, ($($arg:ty),*)) => {
        $linker.func_wrap($module, $name, |_: C<'_>, fd: u32, $(_: $arg),*| -> u32 {
            if is_stdio(fd) { errno::SUCCESS } else { errno::BADF }
        })?
    };
}

pub(crate) fn add_to_linker(linker: &mut Linker<HostState>, m: &str) -> wasmtime::Result<()> {
    // Arguments and environment: always empty. The host's environment is never exposed.
    linker.func_wrap(m, "args_sizes_get", sizes_zero)?;
    linker.func_wrap(m, "environ_sizes_get", sizes_zero)?;
    fixed!(linker, m, "args_get", errno::SUCCESS, (u32, u32));
    fixed!(linker, m, "environ_get", errno::SUCCESS, (u32, u32));

    linker.func_wrap(m, "clock_res_get", clock_res_get)?;
    linker.func_wrap(m, "clock_time_get", clock_time_get)?;
    linker.func_wrap(m, "random_get", random_get)?;
    linker.func_wrap(m, "fd_write", fd_write)?;
    linker.func_wrap(m, "fd_fdstat_get", fd_fdstat_get)?;
    linker.func_wrap(m, "poll_oneoff", poll_oneoff)?;
    linker.func_wrap(m, "proc_exit", proc_exit)?;
    fixed!(linker, m, "proc_raise", errno::NOTSUP, (u32));
    fixed!(linker, m, "sched_yield", errno::SUCCESS, ());

    // Descriptors: only stdout and stderr exist, and only for writing.
    stdio_ok!(linker, m, "fd_advise", (u64, u64, u32));
    stdio_ok!(linker, m, "fd_allocate", (u64, u64));
    stdio_ok!(linker, m, "fd_close", ());
    stdio_ok!(linker, m, "fd_datasync", ());
    stdio_ok!(linker, m, "fd_fdstat_set_flags", (u32));
    stdio_ok!(linker, m, "fd_fdstat_set_rights", (u64, u64));
    stdio_ok!(linker, m, "fd_filestat_set_size", (u64));
    stdio_ok!(linker, m, "fd_filestat_set_times", (u64, u64, u32));
    stdio_ok!(linker, m, "fd_sync", ());
    linker.func_wrap(m, "fd_tell", |mut c: C<'_>, fd: u32, ret: u32| -> u32 {
        if !is_stdio(fd) {
            return errno::BADF;
        }
        let (mem, _) = split(&mut c);
        write_u64(mem, ret, 0).map_or(errno::FAULT, |()| errno::SUCCESS)
    })?;
    linker.func_wrap(
        m,
        "fd_seek",
        |_: C<'_>, fd: u32, _: u64, _: u32, _: u32| -> u32 {
            if is_stdio(fd) {
                errno::SPIPE
            } else {
                errno::BADF
            }
        },
    )?;
    fixed!(linker, m, "fd_filestat_get", errno::BADF, (u32, u32));
    fixed!(linker, m, "fd_prestat_get", errno::BADF, (u32, u32));
    fixed!(
        linker,
        m,
        "fd_prestat_dir_name",
        errno::NOSYS,
        (u32, u32, u32)
    );
    fixed!(linker, m, "fd_read", errno::NOSYS, (u32, u32, u32, u32));
    fixed!(
        linker,
        m,
        "fd_pread",
        errno::NOSYS,
        (u32, u32, u32, u64, u32)
    );
    fixed!(
        linker,
        m,
        "fd_pwrite",
        errno::NOSYS,
        (u32, u32, u32, u64, u32)
    );
    fixed!(
        linker,
        m,
        "fd_readdir",
        errno::NOTDIR,
        (u32, u32, u32, u64, u32)
    );
    fixed!(linker, m, "fd_renumber", errno::NOTSUP, (u32, u32));

    // No filesystem.
    fixed!(
        linker,
        m,
        "path_open",
        errno::NOENT,
        (u32, u32, u32, u32, u32, u64, u64, u32, u32)
    );
    fixed!(
        linker,
        m,
        "path_create_directory",
        errno::NOTSUP,
        (u32, u32, u32)
    );
    fixed!(
        linker,
        m,
        "path_filestat_get",
        errno::NOTSUP,
        (u32, u32, u32, u32, u32)
    );
    fixed!(
        linker,
        m,
        "path_filestat_set_times",
        errno::NOTSUP,
        (u32, u32, u32, u32, u64, u64, u32)
    );
    fixed!(
        linker,
        m,
        "path_link",
        errno::NOTSUP,
        (u32, u32, u32, u32, u32, u32, u32)
    );
    fixed!(
        linker,
        m,
        "path_readlink",
        errno::NOTSUP,
        (u32, u32, u32, u32, u32, u32)
    );
    fixed!(
        linker,
        m,
        "path_remove_directory",
        errno::NOTSUP,
        (u32, u32, u32)
    );
    fixed!(
        linker,
        m,
        "path_rename",
        errno::NOTSUP,
        (u32, u32, u32, u32, u32, u32)
    );
    fixed!(
        linker,
        m,
        "path_symlink",
        errno::NOTSUP,
        (u32, u32, u32, u32, u32)
    );
    fixed!(
        linker,
        m,
        "path_unlink_file",
        errno::NOTSUP,
        (u32, u32, u32)
    );

    // No sockets.
    fixed!(linker, m, "sock_accept", errno::NOTSUP, (u32, u32, u32));
    fixed!(
        linker,
        m,
        "sock_recv",
        errno::NOTSUP,
        (u32, u32, u32, u32, u32, u32)
    );
    fixed!(
        linker,
        m,
        "sock_send",
        errno::NOTSUP,
        (u32, u32, u32, u32, u32)
    );
    fixed!(linker, m, "sock_shutdown", errno::NOTSUP, (u32, u32));
    Ok(())
}

fn sizes_zero(mut caller: C<'_>, count: u32, size: u32) -> u32 {
    let (mem, _) = split(&mut caller);
    match write_u32(mem, count, 0).and_then(|()| write_u32(mem, size, 0)) {
        Ok(()) => errno::SUCCESS,
        Err(_) => errno::FAULT,
    }
}

fn clock_res_get(mut caller: C<'_>, id: u32, ret: u32) -> u32 {
    if id > 1 {
        return errno::NOTSUP;
    }
    let (mem, _) = split(&mut caller);
    write_u64(mem, ret, 1).map_or(errno::FAULT, |()| errno::SUCCESS)
}

/// Realtime (0) and monotonic (1) clocks; the CPU-time clocks are not offered.
fn clock_time_get(mut caller: C<'_>, id: u32, _precision: u64, ret: u32) -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    let now = match id {
        0 => unix_nanos(),
        1 => START.get_or_init(Instant::now).elapsed().as_nanos() as u64,
        _ => return errno::NOTSUP,
    };
    let (mem, _) = split(&mut caller);
    write_u64(mem, ret, now).map_or(errno::FAULT, |()| errno::SUCCESS)
}

/// Fills the buffer from the OS's CSPRNG. Over 64 KiB is EINVAL, as in cpp-host.
fn random_get(mut caller: C<'_>, ptr: u32, len: u32) -> u32 {
    if len as usize > MAX_RANDOM_BYTES {
        return errno::INVAL;
    }
    let (mem, _) = split(&mut caller);
    let Ok(buf) = slice_mut(mem, ptr, len) else {
        return errno::FAULT;
    };
    match getrandom::fill(buf) {
        Ok(()) => errno::SUCCESS,
        Err(_) => errno::IO,
    }
}

/// stdout goes to the log at info level, stderr at error level (one trailing newline dropped).
/// Allowed everywhere, as logging is.
fn fd_write(mut caller: C<'_>, fd: u32, iovs: u32, iovs_len: u32, ret_written: u32) -> u32 {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return errno::BADF,
    };
    let (mem, state) = split(&mut caller);
    let mut text = Vec::new();
    let mut total: u32 = 0;
    for i in 0..iovs_len {
        let Some(at) = i.checked_mul(8).and_then(|o| iovs.checked_add(o)) else {
            return errno::FAULT;
        };
        let (Ok(ptr), Ok(len)) = (read_u32(mem, at), read_u32(mem, at.wrapping_add(4))) else {
            return errno::FAULT;
        };
        let Ok(bytes) = slice(mem, ptr, len) else {
            return errno::FAULT;
        };
        let room = MAX_FD_WRITE_BYTES.saturating_sub(text.len());
        text.extend_from_slice(&bytes[..bytes.len().min(room)]);
        total = total.saturating_add(len);
    }
    if write_u32(mem, ret_written, total).is_err() {
        return errno::FAULT;
    }
    let text = text.strip_suffix(b"\n").unwrap_or(&text);
    let plugin = &state.plugin;
    if !text.is_empty() && level >= plugin.log.level() {
        plugin
            .log
            .log(plugin, level, &String::from_utf8_lossy(text));
    }
    errno::SUCCESS
}

/// Describes stdout and stderr as write-only character devices.
fn fd_fdstat_get(mut caller: C<'_>, fd: u32, ret: u32) -> u32 {
    if !is_stdio(fd) {
        return errno::BADF;
    }
    const CHARACTER_DEVICE: u8 = 2;
    const RIGHT_FD_WRITE: u64 = 1 << 6;
    let mut stat = [0u8; 24];
    stat[0] = CHARACTER_DEVICE;
    stat[8..16].copy_from_slice(&RIGHT_FD_WRITE.to_le_bytes());
    let (mem, _) = split(&mut caller);
    match slice_mut(mem, ret, 24) {
        Ok(dst) => {
            dst.copy_from_slice(&stat);
            errno::SUCCESS
        }
        Err(_) => errno::FAULT,
    }
}

/// Reports no events: guests cannot sleep in a callback (cpp-host does the same; Go's runtime
/// needs the call to succeed).
fn poll_oneoff(mut caller: C<'_>, _in: u32, _out: u32, _n: u32, ret_events: u32) -> u32 {
    let (mem, _) = split(&mut caller);
    write_u32(mem, ret_events, 0).map_or(errno::FAULT, |()| errno::SUCCESS)
}

/// The guest asked to exit: it cannot go on, so its VM ends here.
fn proc_exit(_: C<'_>, code: u32) -> wasmtime::Result<()> {
    let mut fault = Fault::new(
        FaultKind::Exit,
        "proc_exit",
        format!("guest called proc_exit({code})"),
    );
    fault.exit_code = Some(code as i32);
    Err(wasmtime::Error::new(fault))
}
