//! Configuration errors as users read them: `FILE:LINE:COL: KEY: MESSAGE`.

use std::fmt;
use std::path::PathBuf;

/// A place in a configuration file. Line and column are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as given to [`load`](crate::load) or [`parse`](crate::parse).
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One problem with a configuration file.
#[derive(Debug, Clone)]
pub struct Error {
    /// Where the problem is; `None` only when the file could not be read,
    /// in which case `message` names the file.
    pub location: Option<Location>,
    /// The YAML path at fault, like `routes[1].upstream`; `""` for the whole file.
    pub key: String,
    /// What is wrong, without location or key.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Every problem found in one configuration file, in file order. Never empty.
#[derive(Debug, Clone)]
pub struct Errors(pub Vec<Error>);

impl Errors {
    /// The errors, in the order they were found.
    pub fn iter(&self) -> std::slice::Iter<'_, Error> {
        self.0.iter()
    }
}

impl From<Error> for Errors {
    fn from(e: Error) -> Self {
        Errors(vec![e])
    }
}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a Error;
    type IntoIter = std::slice::Iter<'a, Error>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc() -> Option<Location> {
        Some(Location {
            file: PathBuf::from("wasmgate.yaml"),
            line: 12,
            column: 5,
        })
    }

    #[test]
    fn display_has_file_line_column_key_and_message() {
        let e = Error {
            location: loc(),
            key: "routes[1].upstream".into(),
            message: "unknown upstream \"bakend\" (known: backend)".into(),
        };
        assert_eq!(
            e.to_string(),
            "wasmgate.yaml:12:5: routes[1].upstream: unknown upstream \"bakend\" (known: backend)"
        );
    }

    #[test]
    fn display_omits_missing_parts() {
        let whole_file = Error {
            location: loc(),
            key: String::new(),
            message: "empty configuration file".into(),
        };
        assert_eq!(
            whole_file.to_string(),
            "wasmgate.yaml:12:5: empty configuration file"
        );
        let unread = Error {
            location: None,
            key: String::new(),
            message: "cannot read x.yaml: denied".into(),
        };
        assert_eq!(unread.to_string(), "cannot read x.yaml: denied");
    }

    #[test]
    fn errors_display_one_per_line() {
        let one = |m: &str| Error {
            location: None,
            key: "k".into(),
            message: m.into(),
        };
        let all = Errors(vec![one("a"), one("b")]);
        assert_eq!(all.to_string(), "k: a\nk: b");
    }
}
