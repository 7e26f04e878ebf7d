//! Compiling under a deadline: a module that takes too long to compile (a compile bomb) is
//! refused instead of holding up a reload.
//!
//! Cranelift cannot be interrupted, so the compile runs on a thread of its own and the caller
//! stops waiting at the deadline. The abandoned compile finishes in the background (its cost is
//! bounded by the module size cap); until it does, the same module is refused at once rather
//! than compiled again, so a reload loop cannot pile up compiler threads.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;
use wasmtime::Module;

use crate::error::LoadError;
use crate::runtime::Runtime;

/// SHA-256 of modules whose compile ran past its deadline and is still running.
#[derive(Debug, Default)]
pub(crate) struct Abandoned(Mutex<HashSet<[u8; 32]>>);

impl Runtime {
    /// Compiles (and validates) source that passed [`Runtime::check_source`], waiting at most
    /// `timeout`. `sha256` is the digest of `bytes`.
    pub(crate) fn compile_module(
        &self,
        bytes: &[u8],
        sha256: [u8; 32],
        timeout: Duration,
    ) -> Result<Module, LoadError> {
        let abandoned = self.abandoned_compiles().clone();
        if abandoned.0.lock().contains(&sha256) {
            return Err(LoadError::CompileTimeout {
                timeout,
                still_running: true,
            });
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let engine = self.engine().clone();
        let source = bytes.to_vec();
        let worker = Arc::clone(&abandoned);
        std::thread::Builder::new()
            .name("wasm-compile".into())
            .spawn(move || {
                let result = Module::new(&engine, &source);
                // Sent before the entry is removed: see the waiting side.
                let _ = tx.send(result);
                worker.0.lock().remove(&sha256);
            })
            .map_err(|e| LoadError::Compile(format!("cannot start a compiler thread: {e}")))?;
        let result = match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Under the lock, either the result arrived meanwhile or the thread has yet to
                // remove the entry this inserts: it never outlives the compile.
                let mut running = abandoned.0.lock();
                match rx.try_recv() {
                    Ok(result) => result,
                    Err(_) => {
                        running.insert(sha256);
                        tracing::warn!(
                            ?timeout,
                            "module compile ran past its deadline; refused, left to finish"
                        );
                        return Err(LoadError::CompileTimeout {
                            timeout,
                            still_running: false,
                        });
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(LoadError::Compile("the compiler thread failed".into()));
            }
        };
        result.map_err(|e| LoadError::Compile(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests;
