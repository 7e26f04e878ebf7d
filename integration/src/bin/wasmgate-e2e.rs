//! The proxy under test: the `wasmgate` binary's entry point, built in this package so that
//! the end-to-end tests can find it (`CARGO_BIN_EXE_wasmgate-e2e`).

fn main() -> std::process::ExitCode {
    wasmgate::cli::main()
}
