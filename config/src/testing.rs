//! Helpers shared by this crate's unit tests.

use std::path::Path;

use crate::{Config, Errors, ParseOptions};

/// The file name every test config pretends to come from.
pub(crate) const FILE: &str = "wasmgate.yaml";

/// Options with one builtin, `add-header`.
pub(crate) fn opts() -> ParseOptions {
    ParseOptions {
        builtin_filters: vec!["add-header".into()],
    }
}

/// Parses `text` as `wasmgate.yaml` in the working directory.
pub(crate) fn parse(text: &str) -> Result<Config, Errors> {
    crate::parse(text, Path::new(FILE), &opts())
}

/// Parses `text`, expecting success.
pub(crate) fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Parses `text`, expecting failure; each error as displayed.
pub(crate) fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Parses `text`, expecting exactly one error, as displayed.
pub(crate) fn error(text: &str) -> String {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.remove(0)
}
