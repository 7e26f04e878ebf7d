use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{CacheStatus, HEADER_LEN};
use crate::error::LoadError;
use crate::plugin::Plugin;
use crate::testing::{PRELUDE, config, runtime};
use crate::vm::Vm;

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("wasmgate-cache-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A proxy-wasm module; `tag` changes its bytes (and so its hash).
fn module(tag: u32) -> Vec<u8> {
    format!(
        r#"(module {PRELUDE}
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) i32.const 1)
  (func (export "tag") (result i32) i32.const {tag}))"#
    )
    .into_bytes()
}

fn entry(dir: &TempDir, wasm: &[u8]) -> PathBuf {
    let (rt, _) = runtime();
    let sha: [u8; 32] = Sha256::digest(wasm).into();
    dir.path().join(rt.cache_entry_name(&sha))
}

fn load(dir: &TempDir, wasm: &[u8]) -> CacheStatus {
    let (rt, _) = runtime();
    let (compiled, status) = rt.compile_cached(wasm, Some(dir.path())).expect("loads");
    assert_eq!(compiled.sha256(), <[u8; 32]>::from(Sha256::digest(wasm)));
    // Whatever path it took, the module runs.
    Vm::start(&Plugin::new(compiled, config("cached"))).expect("a VM starts");
    status
}

#[test]
fn a_compiled_module_is_stored_then_loaded_without_compiling() {
    let dir = TempDir::new("hit");
    let wasm = module(1);
    assert_eq!(load(&dir, &wasm), CacheStatus::Stored);
    let path = entry(&dir, &wasm);
    assert!(path.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(dir.path()), 0o700);
    }
    assert_eq!(load(&dir, &wasm), CacheStatus::Hit);
    // Only the entry: no temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn without_a_directory_the_cache_is_off() {
    let (rt, _) = runtime();
    let (_, status) = rt.compile_cached(&module(2), None).unwrap();
    assert_eq!(status, CacheStatus::Off);
}

#[test]
fn corrupt_or_foreign_entries_are_rejected_recompiled_and_replaced() {
    let (rt, _) = runtime();
    let dir = TempDir::new("corrupt");
    let wasm = module(3);
    let other = module(4);
    assert_eq!(load(&dir, &wasm), CacheStatus::Stored);
    assert_eq!(load(&dir, &other), CacheStatus::Stored);
    let path = entry(&dir, &wasm);
    let good = std::fs::read(&path).unwrap();
    let raw = wasmtime::Module::new(rt.engine(), &wasm)
        .unwrap()
        .serialize()
        .expect("serializes");

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let mut in_header = good.clone();
    in_header[HEADER_LEN + 8] ^= 0x01;
    let mut extended = good.clone();
    extended.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a flipped bit in the code", flipped),
        ("a flipped bit in the artifact header", in_header),
        ("a truncated entry", good[..good.len() / 2].to_vec()),
        ("a header cut short", good[..HEADER_LEN - 10].to_vec()),
        ("one byte more", extended),
        ("an empty file", Vec::new()),
        ("a wasmtime artifact not written by wasmgate", raw),
        (
            "another module's entry",
            std::fs::read(entry(&dir, &other)).unwrap(),
        ),
        (
            "random bytes",
            (0..4096u32).map(|i| (i * 7919) as u8).collect(),
        ),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(&dir, &wasm), CacheStatus::Rejected, "{what}");
        assert_eq!(std::fs::read(&path).unwrap(), good, "{what}: rewritten");
        assert_eq!(load(&dir, &wasm), CacheStatus::Hit, "{what}: then used");
    }
}

#[cfg(unix)]
#[test]
fn entries_and_directories_others_can_write_are_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("perms");
    let wasm = module(5);
    assert_eq!(load(&dir, &wasm), CacheStatus::Stored);
    let path = entry(&dir, &wasm);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_eq!(load(&dir, &wasm), CacheStatus::Rejected);
    assert_eq!(
        load(&dir, &wasm),
        CacheStatus::Hit,
        "replaced by a private entry"
    );

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(load(&dir, &wasm), CacheStatus::Unavailable);
}

#[test]
fn an_unusable_directory_never_fails_the_load() {
    let dir = TempDir::new("file");
    std::fs::write(dir.path(), b"not a directory").unwrap();
    assert_eq!(load(&dir, &module(6)), CacheStatus::Unavailable);
    let _ = std::fs::remove_file(dir.path());
}

#[test]
fn sources_are_checked_before_the_cache_is_consulted() {
    let (rt, _) = runtime();
    let dir = TempDir::new("source");
    let wasm = module(7);
    let artifact = wasmtime::Module::new(rt.engine(), &wasm)
        .unwrap()
        .serialize()
        .unwrap();
    assert!(matches!(
        rt.compile_cached(&artifact, Some(dir.path())),
        Err(LoadError::NotWasm)
    ));
    let invalid = b"\0asm\x01\0\0\0\x01\xff";
    assert!(matches!(
        rt.compile_cached(invalid, Some(dir.path())),
        Err(LoadError::Compile(_))
    ));
    let not_proxy_wasm = format!("(module {PRELUDE})");
    assert!(matches!(
        rt.compile_cached(not_proxy_wasm.as_bytes(), Some(dir.path())),
        Err(LoadError::NotProxyWasm)
    ));
    let entries = std::fs::read_dir(dir.path()).map_or(0, Iterator::count);
    assert_eq!(entries, 0, "nothing is stored for a module that fails");
}

#[test]
fn entry_names_are_the_module_hash_and_the_engine_hash() {
    let (rt, _) = runtime();
    let sha = [0xab; 32];
    let name = rt.cache_entry_name(&sha);
    assert!(
        name.starts_with(&format!("{}-", hex::encode(sha))),
        "{name}"
    );
    assert!(name.ends_with(".cwasm"));
    assert_eq!(name, rt.cache_entry_name(&sha), "stable");
}
