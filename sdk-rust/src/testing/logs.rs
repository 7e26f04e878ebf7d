//! Captured guest log lines: each harness's runtime logs into its own capture.

use std::fmt;

use parking_lot::Mutex;
use wasmgate_abi::{LogLevel, LogSink, PluginInfo};

/// One line a filter logged (`proxy_log`, or its WASI stdout/stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The filter's name in the chain.
    pub filter: String,
    /// The line's level (WASI stdout is `Info`, stderr `Error`).
    pub level: LogLevel,
    /// The message, cut at the host's log line limit.
    pub message: String,
}

impl fmt::Display for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {}: {}",
            self.filter,
            self.level.as_str(),
            self.message
        )
    }
}

/// A snapshot of captured log lines, in the order they were logged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logs {
    lines: Vec<LogLine>,
}

impl Logs {
    pub(crate) fn new(lines: Vec<LogLine>) -> Logs {
        Logs { lines }
    }

    /// The lines.
    pub fn lines(&self) -> &[LogLine] {
        &self.lines
    }

    /// The lines in order.
    pub fn iter(&self) -> std::slice::Iter<'_, LogLine> {
        self.lines.iter()
    }

    /// Number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether nothing was logged.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The messages alone, in order.
    pub fn messages(&self) -> Vec<&str> {
        self.lines.iter().map(|l| l.message.as_str()).collect()
    }

    /// Whether some message contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.message.contains(needle))
    }

    /// The lines of the filter named `name`.
    pub fn of_filter(&self, name: &str) -> Logs {
        self.select(|l| l.filter == name)
    }

    /// The lines at `level` or more severe (`LogLevel::Warn` gives warnings, errors and
    /// critical lines).
    pub fn at_least(&self, level: LogLevel) -> Logs {
        self.select(|l| l.level >= level)
    }

    fn select(&self, keep: impl Fn(&LogLine) -> bool) -> Logs {
        Logs::new(self.lines.iter().filter(|l| keep(l)).cloned().collect())
    }
}

impl fmt::Display for Logs {
    /// One line per log line; `(no log lines)` when empty, so that assertion messages read well.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines.is_empty() {
            return f.write_str("(no log lines)");
        }
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{line}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Logs {
    type Item = &'a LogLine;
    type IntoIter = std::slice::Iter<'a, LogLine>;

    fn into_iter(self) -> Self::IntoIter {
        self.lines.iter()
    }
}

impl IntoIterator for Logs {
    type Item = LogLine;
    type IntoIter = std::vec::IntoIter<LogLine>;

    fn into_iter(self) -> Self::IntoIter {
        self.lines.into_iter()
    }
}

/// The lines of one harness.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    lines: Mutex<Vec<LogLine>>,
    /// Also print each line, so that `cargo test` shows a failed test's filter log.
    pub(crate) echo: bool,
}

impl Capture {
    pub(crate) fn new(echo: bool) -> Capture {
        Capture {
            lines: Mutex::default(),
            echo,
        }
    }

    fn push(&self, line: LogLine) {
        if self.echo {
            // `eprintln!` goes through the test harness's output capture.
            eprintln!("{line}");
        }
        self.lines.lock().push(line);
    }

    pub(crate) fn snapshot(&self) -> Logs {
        Logs::new(self.lines.lock().clone())
    }

    pub(crate) fn clear(&self) {
        self.lines.lock().clear();
    }
}

impl LogSink for Capture {
    fn log(&self, plugin: &PluginInfo, level: LogLevel, message: &str) {
        self.push(LogLine {
            filter: plugin.name.clone(),
            level,
            message: message.to_owned(),
        });
    }

    /// Everything is recorded: tests filter afterwards.
    fn level(&self) -> LogLevel {
        LogLevel::Trace
    }
}
