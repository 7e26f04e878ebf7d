//! Caps on what a guest may make the host do, each with the reason it exists.

use std::time::Duration;

/// Per-filter resource limits. Every guest-controlled size the host acts on is bounded here,
/// so that a hostile filter costs at most these amounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall time one callback may run before its VM is interrupted and thrown away.
    /// Applied to `_initialize`, `proxy_on_vm_start` and `proxy_on_configure` too.
    pub callback_deadline: Duration,
    /// Linear memory one VM may grow to.
    pub max_memory_bytes: usize,
    /// Table elements one VM may grow its tables to; a huge `table.grow` fails instead of
    /// allocating host memory.
    pub max_table_elements: usize,
    /// Largest serialized header map the host decodes from a guest (cpp-host uses 1 MiB);
    /// also the most bytes (names plus values) a guest may grow a header map to by adding or
    /// replacing values one at a time.
    pub max_pairs_bytes: usize,
    /// Most entries in a header map a guest sets (cpp-host uses 1024); also the most entries a
    /// guest may grow a header map to one value at a time.
    pub max_pairs: usize,
    /// Largest single header name plus value a guest may write.
    pub max_header_bytes: usize,
    /// Largest body a filter may hold while it buffers (returns Pause from a body callback),
    /// and largest body it may write. Past it the request gets 413, or the response fails.
    pub max_body_bytes: usize,
    /// Largest body of a local reply.
    pub max_local_reply_body: usize,
    /// Largest log message kept; longer ones are cut (the guest still gets Ok).
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            callback_deadline: Duration::from_millis(100),
            max_memory_bytes: 64 << 20,
            max_table_elements: 100_000,
            max_pairs_bytes: 1 << 20,
            max_pairs: 1024,
            max_header_bytes: 64 << 10,
            max_body_bytes: 1 << 20,
            max_local_reply_body: 1 << 20,
            max_log_bytes: 16 << 10,
        }
    }
}

/// Largest `random_get` request, as in cpp-host: guests asking for more get EINVAL.
pub const MAX_RANDOM_BYTES: usize = 64 << 10;

/// Largest output of one `fd_write`, after which the rest is dropped (the guest is told all
/// was written): a filter printing in a loop must not fill the proxy's log without bound.
pub const MAX_FD_WRITE_BYTES: usize = 64 << 10;
