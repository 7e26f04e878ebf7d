//! Why a module or a plugin could not be loaded or started.

use crate::fault::Fault;

/// A module that cannot be used, or a plugin whose VM would not start. The message says what
/// is wrong in the user's terms; the running configuration is never affected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("module is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "not a WebAssembly module: expected the \\0asm magic or WAT text (precompiled artifacts are never loaded)"
    )]
    NotWasm,
    #[error("invalid WebAssembly: {0}")]
    Compile(String),
    #[error(
        "compiling took longer than {timeout:?} (limits.compile_timeout_ms){}",
        if *still_running { "; an earlier compile of this module is still running" } else { "" }
    )]
    CompileTimeout {
        timeout: std::time::Duration,
        still_running: bool,
    },
    #[error(
        "not a proxy-wasm module: it exports none of proxy_abi_version_0_2_1, proxy_abi_version_0_2_0, proxy_abi_version_0_1_0"
    )]
    NotProxyWasm,
    #[error("missing export: {0}")]
    MissingExport(&'static str),
    #[error("export {name} has signature {found}, expected {expected}")]
    BadSignature {
        name: String,
        found: String,
        expected: String,
    },
    #[error("imports {module}.{name}, which wasmgate does not provide")]
    UnknownImport { module: String, name: String },
    #[error("cannot link: {0}")]
    Link(String),
    #[error("cannot create a VM: {0}")]
    Instantiate(String),
    #[error("VM failed while starting: {0}")]
    Start(Fault),
    #[error("proxy_on_vm_start returned false")]
    VmStartFailed,
    #[error("proxy_on_configure returned false (the filter rejected its configuration)")]
    ConfigureFailed,
}
