//! Collects problems, placing each at its key's position in the file.

use std::path::Path;

use crate::positions::{Pos, Positions};
use crate::problem::Problem;
use crate::{Error, Errors, Location};

/// Errors found so far in one file.
pub(crate) struct Report<'a> {
    file: &'a Path,
    positions: &'a Positions,
    errors: Vec<Error>,
}

impl<'a> Report<'a> {
    pub(crate) fn new(file: &'a Path, positions: &'a Positions) -> Self {
        Report {
            file,
            positions,
            errors: Vec::new(),
        }
    }

    /// The YAML paths of this file, for callers that refine a key.
    pub(crate) fn positions(&self) -> &'a Positions {
        self.positions
    }

    /// A [`Location`] for `pos`, or the file's start when unknown (an empty
    /// document, or a path yaml-rust2 could not index at all).
    pub(crate) fn location(&self, pos: Option<Pos>) -> Location {
        let (line, column) = pos.map_or((1, 1), |p| (p.line, p.column));
        Location {
            file: self.file.to_path_buf(),
            line,
            column,
        }
    }

    /// Where `key` is, or its nearest indexed parent.
    pub(crate) fn location_of(&self, key: &str) -> Location {
        self.location(self.positions.nearest(key))
    }

    /// Records `problem` at `key`.
    pub(crate) fn add(&mut self, key: &str, problem: Problem) {
        let location = self.location_of(key);
        self.add_at(key, location, problem.to_string());
    }

    /// Records `message` at an explicit `location`.
    pub(crate) fn add_at(&mut self, key: &str, location: Location, message: String) {
        self.errors.push(Error {
            location: Some(location),
            key: key.to_owned(),
            message,
        });
    }

    /// `Ok` when nothing was recorded.
    pub(crate) fn finish(mut self) -> Result<(), Errors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        // Checks run section by section; readers expect file order.
        self.errors
            .sort_by_key(|e| e.location.as_ref().map(|l| (l.line, l.column)));
        Err(Errors(self.errors))
    }
}
