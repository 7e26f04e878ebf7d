//! Reloads when the configuration file or a module it names changes (the `notify` crate).
//!
//! The watcher watches the directories holding those files, not the files themselves, so that
//! a file replaced by a rename (the safe way to update one) or a symlink swap is still seen.
//! It never loads a file caught mid-write: a file opened for writing is waited for until it is
//! closed ([`Debounce`]), and a reload still refuses a file that changes while it is read.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use notify::RecursiveMode;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::reload::{Reloader, Trigger};

/// After a file is completely written (closed, or renamed into place): reload as soon as the
/// events already queued are read (they are read first), so one burst gives one reload.
const SETTLE: Duration = Duration::ZERO;
/// After a file is removed or moved away: wait this long for its replacement.
const QUIET: Duration = Duration::from_millis(100);
/// A file opened for writing and never closed (a close event can be missed, e.g. on network
/// file systems): reload anyway after this long without any event.
const STALLED: Duration = Duration::from_secs(5);

/// What an event means for the reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A file is being written: wait until it is closed.
    Writing(PathBuf),
    /// A file is complete: closed after writing, or renamed into place.
    Complete(PathBuf),
    /// A file was removed or moved away: wait a little for its replacement.
    Gone(PathBuf),
    /// Nothing to do with us (including our own reads).
    Ignored,
}

/// Decides when to reload from a stream of changes.
#[derive(Debug, Default)]
pub struct Debounce {
    pending: bool,
    /// Files written to and not closed yet.
    open: HashSet<PathBuf>,
    /// Something was removed: wait for [`QUIET`].
    removed: bool,
    last: Option<Instant>,
}

impl Debounce {
    pub fn observe(&mut self, change: Change, now: Instant) {
        match change {
            Change::Ignored => return,
            Change::Writing(path) => {
                self.open.insert(path);
            }
            Change::Complete(path) => {
                self.open.remove(&path);
            }
            Change::Gone(path) => {
                self.open.remove(&path);
                self.removed = true;
            }
        }
        self.pending = true;
        self.last = Some(now);
    }

    /// When to reload if nothing else happens; `None` when there is nothing to reload.
    pub fn due(&self) -> Option<Instant> {
        let last = self.last.filter(|_| self.pending)?;
        let wait = if !self.open.is_empty() {
            STALLED
        } else if self.removed {
            QUIET
        } else {
            SETTLE
        };
        Some(last + wait)
    }

    /// Starts over, after a reload.
    pub fn reset(&mut self) {
        if !self.open.is_empty() {
            tracing::warn!(
                files = ?self.open,
                "reloading although these files were not closed after writing"
            );
        }
        *self = Debounce::default();
    }
}

/// The watched files and the directories watched for them.
#[derive(Debug, Default)]
struct Watched {
    /// Each file as its watched directory's canonical path plus its name: event paths look
    /// like that.
    files: HashSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl Watched {
    /// Watches the directories of `files` (and stops watching those no longer needed).
    fn update(&mut self, watcher: &mut impl notify::Watcher, files: &[PathBuf]) {
        let mut wanted_files = HashSet::new();
        let mut wanted_dirs = BTreeSet::new();
        // A file that is a symlink is also watched where it points: editing the target in
        // place changes nothing in the link's directory.
        let targets = files
            .iter()
            .filter_map(|f| f.canonicalize().ok().filter(|t| t != f));
        let all: Vec<PathBuf> = files.iter().cloned().chain(targets).collect();
        for file in &all {
            let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
                continue;
            };
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            match dir.canonicalize() {
                Ok(dir) => {
                    wanted_files.insert(dir.join(name));
                    wanted_dirs.insert(dir);
                }
                Err(e) => tracing::warn!(
                    file = %file.display(),
                    "cannot watch this file's directory: {e}"
                ),
            }
        }
        for gone in self.dirs.difference(&wanted_dirs) {
            let _ = watcher.unwatch(gone);
        }
        let mut dirs = BTreeSet::new();
        for dir in wanted_dirs {
            if self.dirs.contains(&dir) {
                dirs.insert(dir);
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching");
                    dirs.insert(dir);
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch: {e}"),
            }
        }
        self.files = wanted_files;
        self.dirs = dirs;
    }

    /// Whether a path can matter: a watched file, a module or configuration file that the
    /// next configuration may name, or a symlink (a symlink swap replaces a whole directory
    /// of files at once).
    fn relevant(&self, path: &Path) -> bool {
        if self.files.contains(path) {
            return true;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        matches!(ext, "wasm" | "wat" | "yaml" | "yml")
            || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
    }

    fn classify(&self, event: &notify::Event) -> Vec<Change> {
        if event.need_rescan() {
            // Events were lost: check everything.
            return self.files.iter().cloned().map(Change::Complete).collect();
        }
        let each = |f: fn(PathBuf) -> Change| -> Vec<Change> {
            event
                .paths
                .iter()
                .filter(|p| self.relevant(p))
                .cloned()
                .map(f)
                .collect()
        };
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => each(Change::Complete),
            EventKind::Create(_) => {
                // A new file is written next and then closed; a new symlink is complete.
                each(|p| {
                    let symlink =
                        std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink());
                    if symlink {
                        Change::Complete(p)
                    } else {
                        Change::Writing(p)
                    }
                })
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => event
                .paths
                .iter()
                .filter(|p| self.files.contains(*p))
                .cloned()
                .map(Change::Gone)
                .collect(),
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => {
                each(Change::Complete)
            }
            EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
                each(Change::Writing)
            }
            // Our own reads (open, read, close), metadata, and the paired rename event.
            _ => Vec::new(),
        }
    }
}

/// Watches the configuration file and its modules and reloads when they change.
#[derive(Debug)]
pub struct WatchService {
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for WatchService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = match notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        }) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(
                    "cannot watch the configuration files, reload with SIGHUP or POST /reload: {e}"
                );
                return;
            }
        };
        let mut watched = Watched::default();
        watched.update(&mut watcher, &self.reloader.watched_files());
        tracing::info!(
            dirs = ?watched.dirs,
            "watching the configuration file and its modules for changes"
        );
        let mut debounce = Debounce::default();
        loop {
            let due = debounce.due();
            let wake = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // Events first: a reload waits until every event already queued is seen.
                biased;
                _ = shutdown.changed() => return,
                event = rx.recv() => match event {
                    Some(Ok(event)) => {
                        for change in watched.classify(&event) {
                            tracing::trace!(?change, "file change");
                            debounce.observe(change, Instant::now());
                        }
                    }
                    Some(Err(e)) => tracing::warn!("file watcher error: {e}"),
                    None => return,
                },
                () = wake => {
                    debounce.reset();
                    self.reloader.reload(Trigger::Watch).await;
                    watched.update(&mut watcher, &self.reloader.watched_files());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
