//! Writes `bench/SOAK.md`: the machine and the commit, a summary table, then one section per
//! case. A hand-written block between the notes markers is kept when the file is rewritten.

use std::fmt::Write as _;

use super::{Env, Section};
use crate::report::{keep_notes, sh, utc_now};

pub fn render(env: &Env, sections: &[Section], started: &str, load_before: &str) -> String {
    let o = &env.opts;
    let repo = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| ".".into());
    let commit = sh(&format!("git -C {repo} rev-parse --short HEAD"));
    let dirty = !sh(&format!(
        "git -C {repo} status --porcelain -- abi proxy config bench filters"
    ))
    .is_empty();
    let cpu = sh("lscpu | sed -n 's/^Model name: *//p' | head -1");
    let nproc = sh("nproc --all");
    let kernel = sh("uname -r");
    let mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo");
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Soak results\n\nWritten by `bench/soak` (`wgbench soak`, `bench/src/soak/`). Cases E-1, \
         E-2, E-3, E-5 and E-6 of the reliability catalogue (section 4 E); E-4 (backpressure) is \
         covered elsewhere. Every run is bounded; every server listens on 127.0.0.1.\n"
    );
    let _ = writeln!(
        t,
        "| | |\n|---|---|\n| Started | {started} |\n| Finished | {} |\n| Commit | `{commit}`{} |\n\
         | Machine | {cpu}, {nproc} CPUs, {mem}, Linux {kernel} |\n| Load average | {load_before} at the start, {} at the end (shared machine: other builds ran) |\n\
         | Placement | wasmgate on CPU {}; the harness, its load generators, wrk and the upstreams on CPU {} |",
        utc_now(),
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        crate::driver::loadavg(),
        o.proxy_cpu,
        o.client_cpu,
    );
    for n in &o.notes {
        let _ = writeln!(t, "| Note | {n} |");
    }
    let _ = writeln!(
        t,
        "\n## Summary\n\n| Case | What | Expected | Measured | Met |\n|---|---|---|---|---|"
    );
    for s in sections {
        let met = match s.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "undecided",
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {met} |",
            s.id, s.title, s.expected, s.summary
        );
    }
    let _ = writeln!(t, "\n## Analysis\n\n@@NOTES@@\n");
    for s in sections {
        let _ = writeln!(
            t,
            "## {} — {}\n\nExpected: {}.\n\n{}",
            s.id, s.title, s.expected, s.body
        );
    }
    keep_notes(&o.out, t)
}
