//! CPU time of processes, from `/proc/PID/stat` (utime + stime, all threads of the process).

use std::time::Duration;

/// Clock ticks per second for `/proc` times. Linux reports them in USER_HZ, which is 100 on
/// every architecture the kernel exports to user space.
const USER_HZ: u64 = 100;

/// utime + stime of `pid` (every thread), or `None` if the process is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime is field 14 of the line, i.e. index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// When `pid` started (clock ticks after boot): with the pid, it names one process for good,
/// so a recycled pid is never mistaken for a process the harness started.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // starttime is field 22 of the line, index 19 after the name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The parent pid of `pid`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and its direct children (nginx's master and its worker).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if child != pid && parent(child) == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// The summed CPU time of several processes; those that are gone count as zero.
pub fn total_cpu(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|&p| cpu_time(p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable_and_grows() {
        let pid = std::process::id();
        let before = cpu_time(pid).expect("own stat");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        assert!(cpu_time(pid).unwrap() >= before);
        assert!(with_children(pid).contains(&pid));
    }
}
