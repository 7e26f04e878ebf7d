//! `proxy_done` and `proxy_call_foreign_function`.

use std::io::{Read as _, Write as _};

use super::foreign::{MAX_INPUT, MAX_OUTPUT};
use crate::shared::testing::guest_vm;
use crate::stream::{HttpStream, StreamInfo};
use crate::testing::runtime;
use crate::vm::Vm;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const SERIALIZATION: u32 = 3;
const OOB: u32 = 6;
const INTERNAL: u32 = 10;
const RP: u32 = 1000;
const RS: u32 = 1004;
const NAME: u32 = 100;
const ARGS: u32 = 4096;

const IMPORTS: &[(&str, &str)] = &[
    ("proxy_done", ""),
    ("proxy_call_foreign_function", "i32 i32 i32 i32 i32 i32"),
];

fn vm(name: &str) -> Vm {
    let (rt, _) = runtime();
    guest_vm(rt, IMPORTS, name, "")
}

fn root_done(vm: &mut Vm) -> std::sync::Arc<crate::shared::RootDone> {
    vm.test_with_stream(vm.root_context_id(), &mut None, |store, _| {
        store.data().shared.root_done.clone()
    })
}

#[test]
fn proxy_done_completes_only_a_pending_root() {
    let mut vm = vm("done");
    let mut none = None;
    assert_eq!(
        vm.test_call(&mut none, "done", &[]).unwrap(),
        NOT_FOUND,
        "not pending"
    );
    let done = root_done(&mut vm);
    // What the embedder does when the root's proxy_on_done answers false.
    done.set_pending();
    let mut stream = Some(Box::new(HttpStream::new(StreamInfo::default())));
    assert_eq!(
        vm.test_call(&mut stream, "done", &[]).unwrap(),
        NOT_FOUND,
        "a stream context is never pending"
    );
    assert!(done.is_pending());
    assert_eq!(vm.test_call(&mut none, "done", &[]).unwrap(), OK);
    assert!(done.is_done());
    assert_eq!(
        vm.test_call(&mut none, "done", &[]).unwrap(),
        NOT_FOUND,
        "once"
    );
}

/// Calls foreign function `name` with `args`; the status and, on Ok, the result.
fn call(vm: &mut Vm, name: &[u8], args: &[u8]) -> Result<Vec<u8>, u32> {
    vm.test_write(NAME, name);
    vm.test_write(ARGS, args);
    let call = [NAME, name.len() as u32, ARGS, args.len() as u32, RP, RS];
    match vm
        .test_call(&mut None, "call_foreign_function", &call)
        .unwrap()
    {
        OK => Ok(vm.test_returned(RP, RS)),
        status => Err(status),
    }
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn compress_and_uncompress_speak_zlib() {
    let mut vm = vm("foreign");
    let text = b"hello hello hello hello hello hello hello".repeat(20);
    let compressed = call(&mut vm, b"compress", &text).unwrap();
    assert!(compressed.len() < text.len());
    // Any zlib reader inflates it...
    let mut inflated = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .read_to_end(&mut inflated)
        .unwrap();
    assert_eq!(inflated, text);
    // ... and uncompress inflates any zlib stream.
    assert_eq!(call(&mut vm, b"uncompress", &compressed).unwrap(), text);
    assert_eq!(call(&mut vm, b"uncompress", &zlib(b"abc")).unwrap(), b"abc");
    assert_eq!(call(&mut vm, b"uncompress", &zlib(b"")).unwrap(), b"");
    assert!(
        !call(&mut vm, b"compress", b"").unwrap().is_empty(),
        "a zlib header"
    );
}

/// Interoperability beyond flate2 itself (whose zlib is zlib-rs, through
/// patches/libz-ng-sys): a stream written by the C zlib inflates.
#[test]
fn uncompress_reads_what_c_zlib_wrote() {
    // CPython's zlib.compress(b"hello wasmgate"), which is the C zlib.
    let from_c_zlib = [
        0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x57, 0x28, 0x4f, 0x2c, 0xce, 0x4d, 0x4f, 0x2c,
        0x49, 0x05, 0x00, 0x29, 0x47, 0x05, 0x8e,
    ];
    let mut vm = vm("foreign-c-zlib");
    assert_eq!(
        call(&mut vm, b"uncompress", &from_c_zlib).unwrap(),
        b"hello wasmgate"
    );
    // A corrupt stream is an error, not a panic.
    let mut corrupt = from_c_zlib;
    corrupt[8] ^= 0xff;
    assert!(call(&mut vm, b"uncompress", &corrupt).is_err());
}

#[test]
fn foreign_function_errors() {
    let mut vm = vm("foreign-errors");
    assert_eq!(call(&mut vm, b"declare_property", b""), Err(NOT_FOUND));
    assert_eq!(call(&mut vm, b"", b""), Err(NOT_FOUND));
    assert_eq!(
        call(&mut vm, b"uncompress", b"not zlib"),
        Err(SERIALIZATION)
    );
    let stream = zlib(&[7; 1000]);
    assert_eq!(
        call(&mut vm, b"uncompress", &stream[..stream.len() - 4]),
        Err(SERIALIZATION),
        "truncated"
    );
    let mut none = None;
    let bad_name = [u32::MAX, 4, ARGS, 0, RP, RS];
    assert_eq!(
        vm.test_call(&mut none, "call_foreign_function", &bad_name)
            .unwrap(),
        OOB
    );
    let bad_args = [NAME, 8, 0xffff_fff0, 100, RP, RS];
    assert_eq!(
        vm.test_call(&mut none, "call_foreign_function", &bad_args)
            .unwrap(),
        OOB
    );
}

#[test]
fn foreign_function_sizes_are_capped() {
    // A small bomb: a few KiB that inflate past the output cap.
    let bomb = zlib(&vec![0; MAX_OUTPUT + 1]);
    assert!(bomb.len() < 64 << 10);
    let mut vm = vm("foreign-caps");
    assert_eq!(call(&mut vm, b"uncompress", &bomb), Err(INTERNAL));
    let fits = zlib(&vec![0; 100 << 10]);
    assert_eq!(
        call(&mut vm, b"uncompress", &fits).map(|v| v.len()),
        Ok(100 << 10)
    );
    // The input cap: checked without reading guest memory past what the guest has.
    let big = vec![1; MAX_INPUT + 1];
    let (rt, _) = runtime();
    let wat = crate::shared::testing::guest_wat(IMPORTS, "").replace(
        "(memory (export \"memory\") 4)",
        "(memory (export \"memory\") 80)",
    );
    let mut large = Vm::start(&crate::testing::plugin_from_wat(
        rt,
        &wat,
        crate::testing::config("foreign-large"),
    ))
    .unwrap();
    assert_eq!(call(&mut large, b"compress", &big), Err(INTERNAL));
}

#[test]
fn results_may_be_discarded() {
    let mut vm = vm("foreign-discard");
    vm.test_write(NAME, b"compress");
    vm.test_write(ARGS, b"abc");
    let mut none = None;
    vm.test_write(RS, &[0xff; 4]);
    let args = [NAME, 8, ARGS, 3, 0, RS];
    assert_eq!(
        vm.test_call(&mut none, "call_foreign_function", &args)
            .unwrap(),
        OK
    );
    assert_eq!(
        vm.test_u32(RS),
        zlib_default_len(b"abc"),
        "the size is still written"
    );
    let args = [NAME, 8, ARGS, 3, 0, 0];
    assert_eq!(
        vm.test_call(&mut none, "call_foreign_function", &args)
            .unwrap(),
        OK
    );
    vm.test_write(RP, &[0xff; 4]);
    let args = [NAME, 8, ARGS, 3, RP, 0];
    assert_eq!(
        vm.test_call(&mut none, "call_foreign_function", &args)
            .unwrap(),
        OK
    );
    assert_eq!(vm.test_u32(RP), 0, "no size, no allocation");
}

fn zlib_default_len(data: &[u8]) -> u32 {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap().len() as u32
}
