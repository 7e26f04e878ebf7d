//! Entry points: read, parse with serde, then validate; serde's own errors become [`Error`]s here.

use std::path::Path;

use crate::positions::{Positions, child};
use crate::problem::Problem;
use crate::report::Report;
use crate::schema::RawConfig;
use crate::validate::validate;
use crate::{Config, Error, Errors, Location, ParseOptions};

/// Reads and parses the configuration file at `path`.
///
/// # Errors
///
/// An unreadable file gives one error without a location whose message names
/// `path`; otherwise as [`parse`].
pub fn load(path: &Path, opts: &ParseOptions) -> Result<Config, Errors> {
    let text = std::fs::read_to_string(path).map_err(|source| Error {
        location: None,
        key: String::new(),
        message: Problem::Read {
            path: path.to_path_buf(),
            source,
        }
        .to_string(),
    })?;
    parse(&text, path, opts)
}

/// Parses configuration `text`. `source` names the file in errors, and its
/// directory is the base for relative `wasm:` paths (which must exist).
///
/// # Errors
///
/// A YAML syntax error or a wrong type or key stops parsing and is reported
/// alone; otherwise every semantic problem is reported, in file order. An
/// empty document (blank, only comments, or `null`) is an error, so a file
/// caught mid-write never loads as an empty configuration.
///
/// `${NAME}` and `${NAME:-default}` are replaced by environment variables first (see the
/// README); errors still point into `text` as written.
pub fn parse(text: &str, source: &Path, opts: &ParseOptions) -> Result<Config, Errors> {
    let lookup = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    parse_with_env(text, source, opts, &lookup)
}

/// [`parse`], with environment variables read through `lookup`.
pub(crate) fn parse_with_env(
    text: &str,
    source: &Path,
    opts: &ParseOptions,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Errors> {
    let substituted = crate::env::substitute(text, source, lookup)?;
    match parse_substituted(&substituted.text, source, opts) {
        Ok(mut config) => {
            let items = config.filters.iter_mut().map(|f| &mut f.location);
            for location in items.chain(config.routes.iter_mut().map(|r| &mut r.location)) {
                substituted.restore(location);
            }
            Ok(config)
        }
        Err(mut errors) => {
            substituted.restore_errors(&mut errors);
            Err(errors)
        }
    }
}

fn parse_substituted(text: &str, source: &Path, opts: &ParseOptions) -> Result<Config, Errors> {
    let positions = Positions::index(text);
    let report = Report::new(source, &positions);
    let raw = match serde_yaml::from_str::<Option<RawConfig>>(text) {
        Ok(Some(raw)) => raw,
        Ok(None) => {
            return Err(Error {
                location: Some(report.location(None)),
                key: String::new(),
                message: Problem::Empty.to_string(),
            }
            .into());
        }
        Err(e) => return Err(from_serde(&e, &report).into()),
    };
    validate(raw, source, opts, report)
}

/// serde_yaml writes `PATH: MESSAGE at line L column C`; split that into our
/// key, message and location.
fn from_serde(e: &serde_yaml::Error, report: &Report<'_>) -> Error {
    let mut message = e.to_string();
    let mut location = e.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
        ..report.location(None)
    });
    if let Some(l) = &location {
        let mark = format!(" at line {} column {}", l.line, l.column);
        if let Some(at) = message.find(&mark) {
            message.replace_range(at..at + mark.len(), "");
        }
    }
    let positions = report.positions();
    let mut key = String::new();
    // The longest prefix that is a path in this file, or at least looks like
    // one: a message at the root ("invalid type: ...") has spaces before ": ".
    let split = message
        .match_indices(": ")
        .map(|(i, _)| i)
        .filter(|&i| {
            let prefix = &message[..i];
            positions.contains(prefix) || !prefix.contains(char::is_whitespace)
        })
        .last();
    if let Some(i) = split {
        key = message[..i].to_owned();
        message.replace_range(..i + 2, "");
    }
    // Name the key itself, not the mapping that holds it.
    for (prefix, repeated) in [("unknown field `", false), ("duplicate field `", true)] {
        let Some(field) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| field)
        else {
            continue;
        };
        key = child(&key, field);
        if repeated && let Some(second) = positions.nth(&key, 1) {
            location = Some(report.location(Some(second)));
        }
    }
    Error {
        location: Some(location.unwrap_or_else(|| report.location_of(&key))),
        key,
        message,
    }
}

#[cfg(test)]
mod tests;
