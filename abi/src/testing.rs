//! Test support: a shared runtime, a log that records lines, and tiny WAT modules that call
//! one host function with whatever arguments a test gives.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime::Val;

use crate::fault::Fault;
use crate::guest_log::LogSink;
use crate::plugin::{Plugin, PluginConfig, PluginInfo};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::stream::HttpStream;
use crate::types::LogLevel;
use crate::vm::Vm;

/// Records every guest log line as `level: message`.
#[derive(Debug, Default)]
pub(crate) struct CaptureLog {
    pub lines: Mutex<Vec<String>>,
}

impl LogSink for CaptureLog {
    fn log(&self, _plugin: &PluginInfo, level: LogLevel, message: &str) {
        self.lines
            .lock()
            .push(format!("{}: {message}", level.as_str()));
    }

    fn level(&self) -> LogLevel {
        LogLevel::Trace
    }
}

/// A runtime with a log that records lines, shared by the tests of one binary.
pub(crate) fn runtime() -> (&'static Runtime, &'static Arc<CaptureLog>) {
    static RT: OnceLock<(Runtime, Arc<CaptureLog>)> = OnceLock::new();
    let (rt, log) = RT.get_or_init(|| {
        let log = Arc::new(CaptureLog::default());
        let config = RuntimeConfig {
            max_vms: 64,
            log: log.clone(),
            ..Default::default()
        };
        (Runtime::new(config).expect("runtime"), log)
    });
    (rt, log)
}

/// A fresh runtime with its own log, for tests that assert on log lines.
pub(crate) fn runtime_with_log() -> (Runtime, Arc<CaptureLog>) {
    let log = Arc::new(CaptureLog::default());
    let config = RuntimeConfig {
        max_vms: 16,
        log: log.clone(),
        ..Default::default()
    };
    (Runtime::new(config).expect("runtime"), log)
}

/// The exports every test module needs: memory, a bump allocator from 64 KiB up, the marker.
pub(crate) const PRELUDE: &str = r#"
  (memory (export "memory") 4)
  (global $heap (mut i32) (i32.const 65536))
  (func (export "malloc") (param $n i32) (result i32)
    (local $p i32)
    global.get $heap
    local.set $p
    global.get $heap
    local.get $n
    i32.add
    global.set $heap
    local.get $p)
"#;

pub(crate) fn plugin_from_wat(rt: &Runtime, wat: &str, config: PluginConfig) -> Plugin {
    let module = rt.compile(wat.as_bytes()).expect("test module compiles");
    Plugin::new(module, config)
}

pub(crate) fn config(name: &str) -> PluginConfig {
    PluginConfig {
        name: name.into(),
        root_id: "root".into(),
        vm_id: "vm".into(),
        configuration: Bytes::from_static(b"plugin-config"),
        vm_configuration: Bytes::from_static(b"vm-config"),
        ..Default::default()
    }
}

/// A module importing `module.name` with `arity` i32 parameters and an i32 result, exported as
/// `call` taking the same parameters; `extra` adds more items.
pub(crate) fn caller_wat(abi: &str, module: &str, name: &str, params: &str, extra: &str) -> String {
    let n = params.split_whitespace().count();
    let gets: String = (0..n).map(|i| format!("local.get {i} ")).collect();
    format!(
        r#"(module
  (import "{module}" "{name}" (func $f (param {params}) (result i32)))
  {PRELUDE}
  (func (export "proxy_abi_version_{abi}"))
  (func (export "call") (param {params}) (result i32) {gets} call $f)
  {extra}
)"#
    )
}

/// A started VM of a module that calls one host function.
pub(crate) fn vm_calling(name: &str, params: &str) -> Vm {
    let (rt, _) = runtime();
    let wat = caller_wat("0_2_1", "env", name, params, "");
    Vm::start(&plugin_from_wat(rt, &wat, config("test"))).expect("vm starts")
}

impl Vm {
    /// Calls export `name` with i32 arguments, with `stream` lent for context `ctx`.
    pub(crate) fn test_call(
        &mut self,
        stream: &mut Option<Box<HttpStream>>,
        name: &str,
        args: &[u32],
    ) -> Result<u32, Fault> {
        // A call with a stream runs as that stream's context; without one, as the root
        // context (a tick or a callout response).
        let root = self.root_context_id();
        let ctx = if stream.is_some() { root + 1 } else { root };
        self.test_with_stream(ctx, stream, |store, instance| {
            let f = instance
                .get_func(&mut *store, name)
                .expect("test export exists");
            let params: Vec<Val> = args.iter().map(|a| Val::I32(*a as i32)).collect();
            let mut results = vec![Val::I32(0); f.ty(&*store).results().len()];
            store.data_mut().start_call();
            store.set_epoch_deadline(1);
            f.call(&mut *store, &params, &mut results)
                .map_err(|e| Fault::from_wasmtime("test", e))?;
            Ok(results.first().and_then(Val::i32).unwrap_or(0) as u32)
        })
    }

    /// A copy of `len` bytes of guest memory at `addr`.
    pub(crate) fn test_read(&mut self, addr: u32, len: u32) -> Vec<u8> {
        let mem = self.test_memory();
        mem[addr as usize..(addr + len) as usize].to_vec()
    }

    /// Writes `bytes` into guest memory at `addr`.
    pub(crate) fn test_write(&mut self, addr: u32, bytes: &[u8]) {
        let mem = self.test_memory();
        mem[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
    }

    /// Reads the (ptr, size) pair the host wrote at `ret_ptr`/`ret_size`, then those bytes.
    pub(crate) fn test_returned(&mut self, ret_ptr: u32, ret_size: u32) -> Vec<u8> {
        let p = u32::from_le_bytes(self.test_read(ret_ptr, 4).try_into().unwrap());
        let n = u32::from_le_bytes(self.test_read(ret_size, 4).try_into().unwrap());
        if p == 0 {
            assert_eq!(n, 0, "a null pointer comes with size 0");
            return Vec::new();
        }
        self.test_read(p, n)
    }

    pub(crate) fn test_u32(&mut self, addr: u32) -> u32 {
        u32::from_le_bytes(self.test_read(addr, 4).try_into().unwrap())
    }

    pub(crate) fn test_u64(&mut self, addr: u32) -> u64 {
        u64::from_le_bytes(self.test_read(addr, 8).try_into().unwrap())
    }
}
