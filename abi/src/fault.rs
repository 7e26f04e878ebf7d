//! Faults: a guest broke a host invariant or exhausted a limit, so its VM must be thrown away.

use std::fmt;

/// What kind of failure ended a guest call. The VM it happened in is never used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A wasm trap: `unreachable` (a Rust panic), out-of-bounds access, stack overflow, ...
    Trap,
    /// The callback ran past its wall-time deadline.
    Deadline,
    /// The guest tried to grow its memory or tables past the filter's limit.
    MemoryLimit,
    /// The guest made a host call that is not allowed where it was made (for instance from
    /// inside its allocator).
    Restricted,
    /// The guest called WASI `proc_exit`.
    Exit,
    /// The host could not serve the call (a broken host invariant).
    Host,
}

impl FaultKind {
    /// A short stable name, used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Deadline => "deadline",
            Self::MemoryLimit => "memory_limit",
            Self::Restricted => "restricted_call",
            Self::Exit => "exit",
            Self::Host => "host",
        }
    }
}

/// A failed guest call, with what the guest was doing and a wasm backtrace when there is one.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// The callback or host function in which it happened (e.g. `proxy_on_request_headers`).
    pub during: &'static str,
    pub message: String,
    /// The exit code, for [`FaultKind::Exit`].
    pub exit_code: Option<i32>,
}

impl Fault {
    pub fn new(kind: FaultKind, during: &'static str, message: impl Into<String>) -> Self {
        Fault {
            kind,
            during,
            message: message.into(),
            exit_code: None,
        }
    }

    /// Classifies an error returned by wasmtime for a call into the guest.
    pub(crate) fn from_wasmtime(during: &'static str, err: wasmtime::Error) -> Self {
        let trace = backtrace(&err);
        if let Some(fault) = err.downcast_ref::<Fault>() {
            let mut fault = fault.clone();
            if fault.kind != FaultKind::Exit && !trace.is_empty() && !fault.message.contains('\n') {
                fault.message = format!("{}{trace}", fault.message);
            }
            return fault;
        }
        let (kind, cause) = match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => (FaultKind::Deadline, "interrupted".to_string()),
            Some(trap) => (FaultKind::Trap, trap.to_string()),
            None => (FaultKind::Host, format!("{:#}", err)),
        };
        Fault::new(kind, during, format!("{cause}{trace}"))
    }
}

/// Frames of a wasm backtrace kept in a fault: enough to find the culprit, bounded so that a
/// deep recursion does not write megabytes of log (cpp-host keeps 20 too).
const MAX_FRAMES: usize = 20;

fn backtrace(err: &wasmtime::Error) -> String {
    let Some(trace) = err.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return String::new();
    };
    // wasmtime's rendering demangles Rust and C++ names; keep its first frames.
    let text = trace.to_string();
    let mut lines = text.lines();
    let mut out = String::new();
    for line in lines.by_ref().take(MAX_FRAMES + 1) {
        out.push('\n');
        out.push_str(line);
    }
    let rest = lines.count();
    if rest > 0 {
        out.push_str(&format!("\n    ... {rest} more frames"));
    }
    out
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {}: {}",
            self.kind.as_str(),
            self.during,
            self.message
        )
    }
}

impl std::error::Error for Fault {}
