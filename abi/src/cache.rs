//! A disk cache of compiled modules, so that restarts and repeated reloads skip compilation.
//!
//! An entry is the wasmtime serialization of a module, wrapped in a header that wasmgate writes:
//! a magic string, the SHA-256 of the wasm it was compiled from, a hash of the engine's
//! compilation settings, and the SHA-256 and length of the artifact. Entries are named after the
//! first two, so a changed module or engine never finds a stale entry.
//!
//! Deserializing machine code is only safe for artifacts wasmgate produced itself. An entry is
//! used only if every header field matches and the artifact's digest checks out (which catches
//! truncated, torn or bit-flipped files and any file not written by wasmgate, such as a
//! `wasmtime compile` output), and, on Unix, only if neither the entry nor the directory can be
//! written by users other than the owner, and the owner is this process's user or root.
//! Anything else is logged and ignored: the module is compiled from its source and the entry
//! rewritten. The cache never makes a load fail.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Module;

use crate::error::LoadError;
use crate::module::CompiledModule;
use crate::runtime::Runtime;

/// Starts every entry; the last byte is the format version.
const MAGIC: &[u8; 16] = b"wasmgate-cache\x00\x01";
/// Magic, wasm SHA-256, engine hash, artifact SHA-256, artifact length (u64 LE).
const HEADER_LEN: usize = 16 + 32 + 32 + 32 + 8;
/// File name extension of entries.
const EXTENSION: &str = "cwasm";

/// Where a module came from in [`Runtime::compile_cached`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// No cache directory was given: compiled.
    Off,
    /// Loaded from the cache: nothing was compiled.
    Hit,
    /// Not in the cache: compiled, and stored for next time.
    Stored,
    /// An entry existed but was not trusted (corrupt, foreign, from another engine, or with
    /// unsafe permissions): compiled, and the entry replaced.
    Rejected,
    /// The cache directory could not be used (or the entry not written): compiled.
    Unavailable,
}

impl CacheStatus {
    /// A short name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Off => "off",
            CacheStatus::Hit => "hit",
            CacheStatus::Stored => "stored",
            CacheStatus::Rejected => "rejected",
            CacheStatus::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Runtime {
    /// Like [`Runtime::compile`], but first looks for the module's compiled form in
    /// `cache_dir`, and stores it there after compiling. The directory is created (mode 0700)
    /// if missing. With `cache_dir` `None` this is `compile`.
    ///
    /// The source is checked exactly as `compile` checks it (size, and wasm or WAT only)
    /// before the cache is consulted, so a precompiled artifact given as a module is still
    /// refused. Problems with the cache itself are logged and never fail the load.
    ///
    /// # Errors
    ///
    /// As [`Runtime::compile`].
    pub fn compile_cached(
        &self,
        bytes: &[u8],
        cache_dir: Option<&Path>,
    ) -> Result<(Arc<CompiledModule>, CacheStatus), LoadError> {
        self.compile_cached_within(bytes, cache_dir, self.config().compile_timeout)
    }

    /// [`Runtime::compile_cached`] with a compile deadline of its own instead of the
    /// runtime's [`RuntimeConfig::compile_timeout`](crate::RuntimeConfig).
    ///
    /// # Errors
    ///
    /// As [`Runtime::compile`].
    pub fn compile_cached_within(
        &self,
        bytes: &[u8],
        cache_dir: Option<&Path>,
        timeout: std::time::Duration,
    ) -> Result<(Arc<CompiledModule>, CacheStatus), LoadError> {
        self.check_source(bytes)?;
        let sha256: [u8; 32] = Sha256::digest(bytes).into();
        let Some(dir) = cache_dir else {
            let module = self.compile_module(bytes, sha256, timeout)?;
            return Ok((self.link(module, sha256, bytes.len())?, CacheStatus::Off));
        };
        let engine = self.engine_hash();
        let path = dir.join(entry_name(&sha256, &engine));
        let mut rejected = false;
        match prepare_dir(dir) {
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), "module cache unavailable: {reason}");
                let module = self.compile_module(bytes, sha256, timeout)?;
                return Ok((
                    self.link(module, sha256, bytes.len())?,
                    CacheStatus::Unavailable,
                ));
            }
            Ok(()) => match read_entry(&path, &sha256, &engine) {
                Ok(Some(artifact)) => match self.deserialize(&artifact) {
                    Ok(module) => {
                        let compiled = self.link(module, sha256, bytes.len())?;
                        return Ok((compiled, CacheStatus::Hit));
                    }
                    Err(reason) => {
                        tracing::warn!(entry = %path.display(), "ignoring cached module: {reason}");
                        rejected = true;
                    }
                },
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(entry = %path.display(), "ignoring cached module: {reason}");
                    rejected = true;
                }
            },
        }
        let module = self.compile_module(bytes, sha256, timeout)?;
        let compiled = self.link(module.clone(), sha256, bytes.len())?;
        let status = match write_entry(dir, &path, &module, &sha256, &engine) {
            Ok(()) if rejected => CacheStatus::Rejected,
            Ok(()) => CacheStatus::Stored,
            Err(reason) => {
                tracing::warn!(entry = %path.display(), "cannot store compiled module: {reason}");
                CacheStatus::Unavailable
            }
        };
        Ok((compiled, status))
    }

    /// The file name a module with this SHA-256 has in a cache directory of this runtime.
    pub fn cache_entry_name(&self, sha256: &[u8; 32]) -> String {
        entry_name(sha256, &self.engine_hash())
    }

    /// What compiled code depends on: wasmtime's own compatibility hash (its version, target,
    /// compiler flags, tunables and features) and this cache's format.
    fn engine_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256Hasher(Sha256::new());
        MAGIC.hash(&mut hasher);
        self.engine()
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        hasher.0.finalize().into()
    }

    fn deserialize(&self, artifact: &[u8]) -> Result<Module, String> {
        // SAFETY: wasmtime requires that deserialized bytes come from `Module::serialize` of a
        // compatible engine and were not tampered with. `read_entry` only returns an artifact
        // whose header wasmgate wrote, for this wasm's hash and this engine's hash, whose
        // SHA-256 matches the digest recorded when it was serialized, and whose file and
        // directory only their owner (this user or root) can write; wasmtime itself checks
        // the version and compatibility header again.
        #[allow(unsafe_code)]
        let module = unsafe { Module::deserialize(self.engine(), artifact) };
        module.map_err(|e| format!("wasmtime refused it: {e:#}"))
    }
}

fn entry_name(sha256: &[u8; 32], engine: &[u8; 32]) -> String {
    format!(
        "{}-{}.{EXTENSION}",
        hex::encode(sha256),
        &hex::encode(engine)[..16]
    )
}

/// Feeds whatever is hashed into SHA-256, for a hash that is stable across processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Creates the directory if needed and checks that others cannot write into it.
fn prepare_dir(dir: &Path) -> Result<(), String> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    check_owner_only(&meta, "the directory")
}

/// On Unix: writable only by its owner, and owned by this user or root.
fn check_owner_only(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "{what} is writable by other users (mode {:o})",
                meta.mode() & 0o7777
            ));
        }
        if let Some(me) = current_uid()
            && meta.uid() != me
            && meta.uid() != 0
        {
            return Err(format!(
                "{what} belongs to user {}, not to this user ({me}) or root",
                meta.uid()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (meta, what);
    Ok(())
}

/// This process's effective user, from the owner of `/proc/self` (Linux); `None` elsewhere,
/// in which case only the permission bits are checked.
#[cfg(unix)]
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The artifact of a trusted entry; `None` if there is no entry.
fn read_entry(
    path: &Path,
    sha256: &[u8; 32],
    engine: &[u8; 32],
) -> Result<Option<Vec<u8>>, String> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    // Checked on the open file, so the checks and the read are of the same file.
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    check_owner_only(&meta, "the entry")?;
    let len = usize::try_from(meta.len()).map_err(|_| "too large".to_string())?;
    let mut bytes = Vec::with_capacity(len);
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    check_entry(&bytes, sha256, engine)?;
    bytes.drain(..HEADER_LEN);
    Ok(Some(bytes))
}

/// Checks an entry's header against what the caller looks for, and its artifact's digest.
fn check_entry(bytes: &[u8], sha256: &[u8; 32], engine: &[u8; 32]) -> Result<(), String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!("truncated ({} bytes)", bytes.len()));
    }
    let (header, artifact) = bytes.split_at(HEADER_LEN);
    let field = |at: usize, n: usize| header.get(at..at + n).unwrap_or_default();
    if field(0, 16) != MAGIC {
        return Err("not written by this version of wasmgate".into());
    }
    if field(16, 32) != sha256 {
        return Err("compiled from a different module".into());
    }
    if field(48, 32) != engine {
        return Err("compiled with different engine settings".into());
    }
    let declared = <[u8; 8]>::try_from(field(112, 8)).map_err(|_| "truncated header")?;
    if u64::from_le_bytes(declared) != artifact.len() as u64 {
        return Err("truncated or extended after it was written".into());
    }
    if Sha256::digest(artifact).as_slice() != field(80, 32) {
        return Err("corrupt: its digest does not match".into());
    }
    Ok(())
}

/// Writes an entry atomically: a private temporary file in the same directory, then a rename.
fn write_entry(
    dir: &Path,
    path: &Path,
    module: &Module,
    sha256: &[u8; 32],
    engine: &[u8; 32],
) -> Result<(), String> {
    let artifact = module
        .serialize()
        .map_err(|e| format!("cannot serialize it: {e:#}"))?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(sha256);
    header.extend_from_slice(engine);
    header.extend_from_slice(&Sha256::digest(&artifact));
    header.extend_from_slice(&(artifact.len() as u64).to_le_bytes());
    let temp = temp_path(dir, path);
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(&header)?;
        file.write_all(&artifact)?;
        drop(file);
        std::fs::rename(&temp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        e.to_string()
    })
}

/// A name no other writer uses: process id plus a per-process counter.
fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

#[cfg(test)]
mod tests;
