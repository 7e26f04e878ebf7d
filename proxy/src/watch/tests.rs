use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::event::{
    AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RemoveKind, RenameMode,
};

use super::{Change, Debounce, QUIET, SETTLE, STALLED, Watched};

fn path(p: &str) -> PathBuf {
    PathBuf::from(p)
}

#[test]
fn nothing_is_due_until_something_relevant_happens() {
    let mut d = Debounce::default();
    assert_eq!(d.due(), None);
    d.observe(Change::Ignored, Instant::now());
    assert_eq!(d.due(), None);
}

#[test]
fn a_file_being_written_is_waited_for_until_it_is_closed() {
    let t0 = Instant::now();
    let mut d = Debounce::default();
    d.observe(Change::Writing(path("/c/w.yaml")), t0);
    assert_eq!(d.due(), Some(t0 + STALLED), "no reload while it is open");
    let t1 = t0 + Duration::from_millis(30);
    d.observe(Change::Writing(path("/c/w.yaml")), t1);
    assert_eq!(d.due(), Some(t1 + STALLED));
    let t2 = t1 + Duration::from_millis(1);
    d.observe(Change::Complete(path("/c/w.yaml")), t2);
    assert_eq!(d.due(), Some(t2 + SETTLE), "closed: reload right away");
}

#[test]
fn every_open_file_must_be_closed() {
    let t0 = Instant::now();
    let mut d = Debounce::default();
    d.observe(Change::Writing(path("/c/a.wasm")), t0);
    d.observe(Change::Writing(path("/c/w.yaml")), t0);
    d.observe(Change::Complete(path("/c/w.yaml")), t0);
    assert_eq!(d.due(), Some(t0 + STALLED));
    d.observe(Change::Complete(path("/c/a.wasm")), t0);
    assert_eq!(d.due(), Some(t0 + SETTLE));
}

#[test]
fn a_removed_file_gets_time_to_come_back() {
    let t0 = Instant::now();
    let mut d = Debounce::default();
    d.observe(Change::Gone(path("/c/a.wasm")), t0);
    assert_eq!(d.due(), Some(t0 + QUIET));
    let t1 = t0 + Duration::from_millis(10);
    d.observe(Change::Complete(path("/c/a.wasm")), t1);
    assert_eq!(d.due(), Some(t1 + QUIET));
}

#[test]
fn reset_starts_over() {
    let mut d = Debounce::default();
    d.observe(Change::Writing(path("/c/a.wasm")), Instant::now());
    d.observe(Change::Gone(path("/c/b.wasm")), Instant::now());
    d.reset();
    assert_eq!(d.due(), None);
    let t = Instant::now();
    d.observe(Change::Complete(path("/c/w.yaml")), t);
    assert_eq!(d.due(), Some(t + SETTLE));
}

fn event(kind: EventKind, paths: &[&Path]) -> notify::Event {
    let mut e = notify::Event::new(kind);
    for p in paths {
        e = e.add_path(p.to_path_buf());
    }
    e
}

#[test]
fn events_are_classified_by_kind_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().canonicalize().unwrap();
    let config = d.join("wasmgate.yaml");
    let module = d.join("f.wasm");
    let other_module = d.join("next.wasm");
    let log = d.join("access.log");
    let link = d.join("..data");
    std::fs::write(&config, "").unwrap();
    std::fs::write(&log, "").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&config, &link).unwrap();
    let watched = Watched {
        files: [config.clone(), module.clone()].into_iter().collect(),
        dirs: [d.clone()].into_iter().collect(),
    };
    let cases: Vec<(EventKind, &Path, Vec<Change>)> = vec![
        (
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &config,
            vec![Change::Writing(config.clone())],
        ),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            &config,
            vec![Change::Complete(config.clone())],
        ),
        // Our own reads.
        (
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            &config,
            vec![],
        ),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            &module,
            vec![],
        ),
        (
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            &module,
            vec![Change::Complete(module.clone())],
        ),
        (
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            &module,
            vec![Change::Gone(module.clone())],
        ),
        (
            EventKind::Remove(RemoveKind::File),
            &config,
            vec![Change::Gone(config.clone())],
        ),
        // A module the next configuration may name counts; its removal does not.
        (
            EventKind::Create(CreateKind::File),
            &other_module,
            vec![Change::Writing(other_module.clone())],
        ),
        (
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            &other_module,
            vec![],
        ),
        // Unrelated files.
        (
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            &log,
            vec![],
        ),
        (
            EventKind::Modify(ModifyKind::Metadata(notify::event::MetadataKind::Any)),
            &config,
            vec![],
        ),
    ];
    for (kind, p, want) in cases {
        assert_eq!(watched.classify(&event(kind, &[p])), want, "{kind:?} {p:?}");
    }
    #[cfg(unix)]
    assert_eq!(
        watched.classify(&event(EventKind::Create(CreateKind::File), &[&link])),
        vec![Change::Complete(link.clone())],
        "a new symlink is complete at once"
    );
}

#[test]
fn watching_follows_the_files_of_the_configuration() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut watcher = notify::recommended_watcher(|_| {}).unwrap();
    let mut watched = Watched::default();
    let config = a.path().join("wasmgate.yaml");
    let module = b.path().join("f.wasm");
    watched.update(&mut watcher, &[config.clone(), module.clone()]);
    let canon = |p: &Path| p.canonicalize().unwrap();
    assert_eq!(
        watched.dirs,
        [canon(a.path()), canon(b.path())].into_iter().collect()
    );
    assert!(
        watched
            .files
            .contains(&canon(a.path()).join("wasmgate.yaml"))
    );
    assert!(watched.files.contains(&canon(b.path()).join("f.wasm")));
    watched.update(&mut watcher, &[config]);
    assert_eq!(watched.dirs, [canon(a.path())].into_iter().collect());
    assert_eq!(watched.files.len(), 1);
}
