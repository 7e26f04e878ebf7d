//! Line and column of every key and list item, by YAML path, so errors found after serde's
//! typed parse (which keeps no spans) can still point into the file.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column, like `serde_yaml::Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) column: usize,
    /// Character offset, to order marks.
    index: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 but columns from 0 (its docs say
        // both are 1-indexed; the scanner starts `col` at 0).
        Pos {
            line: m.line(),
            column: m.col() + 1,
            index: m.index(),
        }
    }
}

/// Paths are written as serde_yaml writes them in its errors: `routes[1].upstream`,
/// `upstreams.backend.endpoints[0]`; the document itself is `""`. A mapping entry
/// is placed at its key, a list item at the item.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    /// Every occurrence, in file order: a repeated key has several.
    by_path: HashMap<String, Vec<Pos>>,
}

impl Positions {
    /// Indexes `text`. Never fails: a document yaml-rust2 cannot read keeps
    /// whatever was indexed before the error, and lookups fall back to parents.
    pub(crate) fn index(text: &str) -> Positions {
        let mut builder = Builder::default();
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        builder.positions
    }

    /// The first occurrence of `path`.
    pub(crate) fn get(&self, path: &str) -> Option<Pos> {
        self.nth(path, 0)
    }

    /// The `n`th (0-based) occurrence of `path`, for repeated keys.
    pub(crate) fn nth(&self, path: &str, n: usize) -> Option<Pos> {
        self.by_path.get(path).and_then(|v| v.get(n)).copied()
    }

    /// Whether `path` occurs in the document.
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// `path`, or failing that its nearest indexed ancestor (paths that go
    /// through aliases or merges are not indexed).
    pub(crate) fn nearest(&self, path: &str) -> Option<Pos> {
        let mut path = path;
        loop {
            if let Some(pos) = self.get(path) {
                return Some(pos);
            }
            if path.is_empty() {
                return None;
            }
            path = parent(path);
        }
    }
}

/// `a.b[2]` -> `a.b` -> `a` -> `""`.
pub(crate) fn parent(path: &str) -> &str {
    if path.ends_with(']')
        && let Some(i) = path.rfind('[')
    {
        return &path[..i];
    }
    path.rfind('.').map_or("", |i| &path[..i])
}

/// `parent` + `key`, as serde_yaml joins them.
pub(crate) fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

enum Frame {
    Seq {
        path: String,
        next: usize,
    },
    Map {
        path: String,
        /// The key whose value comes next; `None` while a key is expected.
        key: Option<String>,
        /// Whether this mapping's own position still waits for its first key.
        fix_at_first_key: bool,
    },
}

#[derive(Default)]
struct Builder {
    positions: Positions,
    stack: Vec<Frame>,
}

/// What a node is to its parent.
enum Role {
    /// A list item or the document root: indexed at its own start.
    Item(String),
    /// A mapping key, already handled.
    Key,
    /// A mapping value: its path is indexed at the key.
    Value(String),
}

impl Builder {
    fn record(&mut self, path: String, pos: Pos) {
        self.positions.by_path.entry(path).or_default().push(pos);
    }

    /// Places a node that starts at `mark`; `key_text` is its text when it
    /// is a scalar, so it can name a mapping entry.
    fn place(&mut self, mark: Marker, key_text: Option<&str>) -> Role {
        let pos = Pos::from(mark);
        let role = match self.stack.last_mut() {
            None => Role::Item(String::new()),
            Some(Frame::Seq { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                Role::Item(item)
            }
            Some(Frame::Map { path, key, .. }) => match key.take() {
                Some(k) => Role::Value(child(path, &k)),
                None => {
                    // Keys that are not scalars get serde_yaml's `?`.
                    let k = key_text.unwrap_or("?").to_owned();
                    let full = child(path, &k);
                    *key = Some(k);
                    self.key_placed(full, pos);
                    return Role::Key;
                }
            },
        };
        if let Role::Item(path) = &role {
            self.record(path.clone(), pos);
        }
        role
    }

    fn key_placed(&mut self, full: String, pos: Pos) {
        // A block mapping's start event is marked after its first value, not
        // at its first key, so a mapping placed as an item moves to that key.
        let mut fix = None;
        if let Some(Frame::Map {
            path,
            fix_at_first_key,
            ..
        }) = self.stack.last_mut()
            && std::mem::take(fix_at_first_key)
        {
            fix = Some(path.clone());
        }
        if let Some(own) = fix
            .and_then(|p| self.positions.by_path.get_mut(&p))
            .and_then(|v| v.last_mut())
            && pos.index < own.index
        {
            *own = pos;
        }
        self.record(full, pos);
    }

    fn open(&mut self, mark: Marker, map: bool) {
        let (path, fix) = match self.place(mark, None) {
            Role::Item(p) => (p, true),
            Role::Value(p) => (p, false),
            Role::Key => {
                // A complex key: index nothing inside it, under `?`.
                let parent = match self.stack.last() {
                    Some(Frame::Map { path, .. }) => path.clone(),
                    _ => String::new(),
                };
                (child(&parent, "?"), false)
            }
        };
        self.stack.push(if map {
            Frame::Map {
                path,
                key: None,
                fix_at_first_key: fix,
            }
        } else {
            Frame::Seq { path, next: 0 }
        });
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(text, ..) => {
                self.place(mark, Some(&text));
            }
            Event::Alias(_) => {
                self.place(mark, None);
            }
            Event::MappingStart(..) => self.open(mark, true),
            Event::SequenceStart(..) => self.open(mark, false),
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests;
