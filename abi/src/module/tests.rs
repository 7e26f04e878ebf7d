use crate::error::LoadError;
use crate::testing::{PRELUDE, runtime};
use crate::types::AbiVersion;
use crate::{Runtime, RuntimeConfig};

fn compile(body: &str) -> Result<std::sync::Arc<crate::CompiledModule>, LoadError> {
    let (rt, _) = runtime();
    rt.compile(format!("(module {body})").as_bytes())
}

#[test]
fn abi_version_comes_from_the_marker_export_newest_first() {
    for (marker, abi) in [
        ("proxy_abi_version_0_1_0", AbiVersion::V0_1_0),
        ("proxy_abi_version_0_2_0", AbiVersion::V0_2_0),
        ("proxy_abi_version_0_2_1", AbiVersion::V0_2_1),
    ] {
        let m = compile(&format!("{PRELUDE} (func (export \"{marker}\"))")).unwrap();
        assert_eq!(m.abi(), abi);
    }
    let both = compile(&format!(
        "{PRELUDE} (func (export \"proxy_abi_version_0_2_0\")) (func (export \"proxy_abi_version_0_2_1\"))"
    ))
    .unwrap();
    assert_eq!(both.abi(), AbiVersion::V0_2_1);
}

#[test]
fn modules_that_are_not_proxy_wasm_are_refused_with_the_reason() {
    assert!(matches!(compile(PRELUDE), Err(LoadError::NotProxyWasm)));
    let no_memory = r#"(func (export "malloc") (param i32) (result i32) i32.const 0)
        (func (export "proxy_abi_version_0_2_1"))"#;
    assert!(matches!(
        compile(no_memory),
        Err(LoadError::MissingExport("memory"))
    ));
    let no_alloc = r#"(memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1"))"#;
    assert!(matches!(
        compile(no_alloc),
        Err(LoadError::MissingExport(_))
    ));
    let bad_sig = format!(
        "{PRELUDE} (func (export \"proxy_abi_version_0_2_1\")) (func (export \"proxy_on_vm_start\") (param i32) (result i32) i32.const 1)"
    );
    let err = compile(&bad_sig).unwrap_err();
    assert_eq!(
        err.to_string(),
        "export proxy_on_vm_start has signature (i32) -> i32, expected (i32, i32) -> i32"
    );
    let old_headers = format!(
        "{PRELUDE} (func (export \"proxy_abi_version_0_2_1\")) (func (export \"proxy_on_request_headers\") (param i32 i32) (result i32) i32.const 0)"
    );
    assert!(matches!(
        compile(&old_headers),
        Err(LoadError::BadSignature { .. })
    ));
}

#[test]
fn unknown_and_mistyped_imports_are_refused() {
    let unknown = format!(
        "(import \"env\" \"proxy_frobnicate\" (func)) {PRELUDE} (func (export \"proxy_abi_version_0_2_1\"))"
    );
    let err = compile(&unknown).unwrap_err();
    assert_eq!(
        err.to_string(),
        "imports env.proxy_frobnicate, which wasmgate does not provide"
    );
    let other_module = format!(
        "(import \"evil\" \"syscall\" (func)) {PRELUDE} (func (export \"proxy_abi_version_0_2_1\"))"
    );
    assert!(matches!(
        compile(&other_module),
        Err(LoadError::UnknownImport { .. })
    ));
    let mistyped = format!(
        "(import \"env\" \"proxy_log\" (func (param i32))) {PRELUDE} (func (export \"proxy_abi_version_0_2_1\"))"
    );
    assert!(matches!(compile(&mistyped), Err(LoadError::Link(_))));
}

#[test]
fn bytes_that_are_not_wasm_are_refused_before_compiling() {
    let (rt, _) = runtime();
    assert!(matches!(
        rt.compile(b"\x7fELF\x02\x01\x01"),
        Err(LoadError::NotWasm)
    ));
    assert!(matches!(rt.compile(b""), Err(LoadError::NotWasm)));
    assert!(matches!(
        rt.compile(b"\0asm\x01\0\0\0garbage"),
        Err(LoadError::Compile(_))
    ));
    assert!(matches!(
        rt.compile(b"(module (func"),
        Err(LoadError::Compile(_))
    ));
}

#[test]
fn oversized_modules_are_refused() {
    let rt = Runtime::new(RuntimeConfig {
        max_module_bytes: 10,
        max_vms: 4,
        ..Default::default()
    })
    .unwrap();
    assert!(matches!(
        rt.compile(b"\0asm\x01\0\0\0\0\0\0\0"),
        Err(LoadError::TooLarge {
            size: 12,
            limit: 10
        })
    ));
}

#[test]
fn compiled_module_reports_hash_and_size() {
    let text = format!("(module {PRELUDE} (func (export \"proxy_abi_version_0_2_1\")))");
    let (rt, _) = runtime();
    let m = rt.compile(text.as_bytes()).unwrap();
    assert_eq!(m.size(), text.len());
    assert_eq!(m.sha256_hex().len(), 64);
    assert_eq!(m.sha256(), rt.compile(text.as_bytes()).unwrap().sha256());
}
