//! Loading a module: compile once, check that it is a proxy-wasm module we can host, and link
//! it once (`InstancePre`), so that starting a VM later is only instantiation.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::{ExternType, InstancePre, Module};

use crate::error::LoadError;
use crate::exports::{CALLBACKS, ExportIndex, describe, headers_sig, render};
use crate::guest_log::LogSink;
use crate::host::{ENV_FUNCTIONS, WASI_FUNCTIONS, WASI_MODULES};
use crate::runtime::Runtime;
use crate::state::HostState;
use crate::types::AbiVersion;

/// A compiled, validated and linked module. Shared by every plugin and VM that uses it.
pub struct CompiledModule {
    runtime: Runtime,
    pre: InstancePre<HostState>,
    abi: AbiVersion,
    exports: ExportIndex,
    sha256: [u8; 32],
    size: usize,
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("abi", &self.abi)
            .field("sha256", &self.sha256_hex())
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl CompiledModule {
    /// The ABI version the module declares.
    pub fn abi(&self) -> AbiVersion {
        self.abi
    }

    /// SHA-256 of the module's bytes as loaded.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Size in bytes of the module as loaded.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub(crate) fn pre(&self) -> &InstancePre<HostState> {
        &self.pre
    }

    pub(crate) fn exports(&self) -> &ExportIndex {
        &self.exports
    }

    pub(crate) fn runtime_log(&self) -> Arc<dyn LogSink> {
        self.runtime.config().log.clone()
    }
}

impl Runtime {
    /// Compiles and validates a module (binary wasm, or WAT text).
    ///
    /// This is the expensive step (milliseconds to seconds): call it at startup or on reload,
    /// never on the request path. Precompiled artifacts are refused: only wasm or WAT is
    /// accepted, so nothing a user supplies is ever deserialized as machine code. To reuse
    /// compilations across restarts, see [`Runtime::compile_cached`].
    pub fn compile(&self, bytes: &[u8]) -> Result<Arc<CompiledModule>, LoadError> {
        self.check_source(bytes)?;
        let sha256 = Sha256::digest(bytes).into();
        let module = self.compile_module(bytes, sha256, self.config().compile_timeout)?;
        self.link(module, sha256, bytes.len())
    }

    /// Refuses what must never reach the compiler: oversized input, and anything that is
    /// neither binary wasm nor WAT text (such as a precompiled artifact).
    pub(crate) fn check_source(&self, bytes: &[u8]) -> Result<(), LoadError> {
        let limit = self.config().max_module_bytes;
        if bytes.len() > limit {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        let is_binary = bytes.starts_with(b"\0asm");
        let is_text =
            !is_binary && std::str::from_utf8(bytes).is_ok_and(|s| s.trim_start().starts_with('('));
        if !is_binary && !is_text {
            return Err(LoadError::NotWasm);
        }
        Ok(())
    }

    /// Checks that a compiled module is a proxy-wasm module this host can run, and links it.
    /// `sha256` and `size` describe the source it was compiled from.
    pub(crate) fn link(
        &self,
        module: Module,
        sha256: [u8; 32],
        size: usize,
    ) -> Result<Arc<CompiledModule>, LoadError> {
        let abi = abi_version(&module)?;
        check_exports(&module, abi)?;
        check_imports(&module)?;
        let exports = ExportIndex::new(&module, abi);
        let pre = self
            .linker()
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Ok(Arc::new(CompiledModule {
            runtime: self.clone(),
            pre,
            abi,
            exports,
            sha256,
            size,
        }))
    }
}

/// The newest ABI version the module declares.
fn abi_version(module: &Module) -> Result<AbiVersion, LoadError> {
    AbiVersion::ALL
        .into_iter()
        .find(|v| module.get_export(v.marker()).is_some())
        .ok_or(LoadError::NotProxyWasm)
}

/// Memory, an allocator, and the right signature for every callback the module exports.
fn check_exports(module: &Module, abi: AbiVersion) -> Result<(), LoadError> {
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return Err(LoadError::MissingExport("memory"));
    }
    let has_func = |name| matches!(module.get_export(name), Some(ExternType::Func(_)));
    if !has_func("malloc") && !has_func("proxy_on_memory_allocate") {
        return Err(LoadError::MissingExport(
            "malloc or proxy_on_memory_allocate (the guest allocator)",
        ));
    }
    let expected = CALLBACKS.iter().copied().chain([
        headers_sig(abi, "proxy_on_request_headers"),
        headers_sig(abi, "proxy_on_response_headers"),
    ]);
    for want in expected {
        let Some(ty) = module.get_export(want.name) else {
            continue;
        };
        let ExternType::Func(ty) = ty else {
            return Err(LoadError::BadSignature {
                name: want.name.into(),
                found: "a non-function export".into(),
                expected: render(want.params, want.results),
            });
        };
        let (params, results) = describe(&ty);
        if params != want.params || results != want.results {
            return Err(LoadError::BadSignature {
                name: want.name.into(),
                found: render(&params, &results),
                expected: render(want.params, want.results),
            });
        }
    }
    Ok(())
}

/// Every import must be a function wasmgate provides. Signatures are checked by the linker.
fn check_imports(module: &Module) -> Result<(), LoadError> {
    for import in module.imports() {
        let known = match import.module() {
            "env" => ENV_FUNCTIONS.contains(&import.name()),
            m if WASI_MODULES.contains(&m) => WASI_FUNCTIONS.contains(&import.name()),
            _ => false,
        };
        if !known || !matches!(import.ty(), ExternType::Func(_)) {
            return Err(LoadError::UnknownImport {
                module: import.module().into(),
                name: import.name().into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
