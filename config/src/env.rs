//! Environment variables in the configuration text: `${NAME}` and `${NAME:-default}` are
//! replaced before the YAML is parsed, and `$${` stands for a literal `${`.
//!
//! A value never spans lines (one with a line break is refused), so every line keeps its
//! number; columns move only on a line that had a substitution, and [`Substituted`] maps them
//! back so that errors point into the file as written. Lines whose first non-blank character
//! is `#` (comments) are left alone.

use std::borrow::Cow;
use std::path::Path;

use crate::{Error, Errors, Location};

/// The text with its variables replaced, and how to find the original columns.
#[derive(Debug)]
pub(crate) struct Substituted<'a> {
    pub(crate) text: Cow<'a, str>,
    /// Per changed line (1-based), its replacements in order.
    lines: Vec<(usize, Vec<Span>)>,
}

/// One replacement on a line, in 0-based character columns.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Where the replacement starts in the new line and where it ends.
    new: (usize, usize),
    /// Where `${...}` started in the written line and where it ended.
    old: (usize, usize),
}

/// Replaces the variables of `text` (read from `file`) using `lookup`.
///
/// # Errors
///
/// One error per unset variable without a default, malformed reference or multi-line value,
/// each at its line and column.
pub(crate) fn substitute<'a>(
    text: &'a str,
    file: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted<'a>, Errors> {
    if !text.contains("${") {
        return Ok(Substituted {
            text: Cow::Borrowed(text),
            lines: Vec::new(),
        });
    }
    let mut out = String::with_capacity(text.len());
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let number = n + 1;
        if !line.contains("${") || line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut spans = Vec::new();
        let mut fail = |column: usize, message: String| {
            errors.push(Error {
                location: Some(Location {
                    file: file.to_path_buf(),
                    line: number,
                    column: column + 1,
                }),
                key: String::new(),
                message,
            });
        };
        // Columns count characters, as serde_yaml's and yaml-rust2's do.
        let mut new_col = 0;
        let mut rest = line;
        let mut old_col = 0;
        while let Some(at) = rest.find('$') {
            let before = &rest[..at];
            out.push_str(before);
            let before_chars = before.chars().count();
            old_col += before_chars;
            new_col += before_chars;
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                // `$${` is a literal `${`.
                out.push_str("${");
                spans.push(Span {
                    new: (new_col, new_col + 2),
                    old: (old_col, old_col + 3),
                });
                old_col += 3;
                new_col += 2;
                rest = after;
                continue;
            }
            let Some(inner) = tail.strip_prefix("${") else {
                out.push('$');
                old_col += 1;
                new_col += 1;
                rest = &tail[1..];
                continue;
            };
            let Some(end) = inner.find('}') else {
                fail(old_col, "unclosed \"${\": write ${NAME} or ${NAME:-default}, or $${ for a literal \"${\"".to_owned());
                out.push_str(tail);
                rest = "";
                break;
            };
            let reference = &inner[..end];
            let written = 2 + reference.chars().count() + 1;
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            let value = if !is_variable_name(name) {
                fail(
                    old_col,
                    format!(
                        "invalid variable name {name:?} in \"${{{reference}}}\": use letters, digits and '_', not starting with a digit"
                    ),
                );
                String::new()
            } else {
                match (lookup(name), default) {
                    (Some(v), Some(d)) if v.is_empty() => d.to_owned(),
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_owned(),
                    (None, None) => {
                        fail(
                            old_col,
                            format!(
                                "environment variable {name} is not set and \"${{{name}}}\" has no default (write ${{{name}:-default}} for one)"
                            ),
                        );
                        String::new()
                    }
                }
            };
            if value.contains(['\n', '\r']) {
                fail(
                    old_col,
                    format!(
                        "environment variable {name} holds a line break: only one-line values can be substituted"
                    ),
                );
            }
            out.push_str(&value);
            let len = value.chars().count();
            spans.push(Span {
                new: (new_col, new_col + len),
                old: (old_col, old_col + written),
            });
            new_col += len;
            old_col += written;
            rest = &inner[end + 1..];
        }
        out.push_str(rest);
        if !spans.is_empty() {
            lines.push((number, spans));
        }
    }
    if !errors.is_empty() {
        return Err(Errors(errors));
    }
    Ok(Substituted {
        text: Cow::Owned(out),
        lines,
    })
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Substituted<'_> {
    /// Moves `location`, a place in the substituted text, to the same place in the file as
    /// written: a column inside a replaced value points at its `$`.
    pub(crate) fn restore(&self, location: &mut Location) {
        let Some((_, spans)) = self.lines.iter().find(|(line, _)| *line == location.line) else {
            return;
        };
        // 0-based from here.
        let column = location.column.saturating_sub(1);
        let mut restored = column;
        for span in spans {
            if column < span.new.0 {
                break;
            }
            if column < span.new.1 {
                restored = span.old.0;
                break;
            }
            restored = column - span.new.1 + span.old.1;
        }
        location.column = restored + 1;
    }

    /// [`restore`](Self::restore) on every error that has a location.
    pub(crate) fn restore_errors(&self, errors: &mut Errors) {
        for e in &mut errors.0 {
            if let Some(location) = &mut e.location {
                self.restore(location);
            }
        }
    }
}

#[cfg(test)]
mod tests;
