//! `--stats`: each stage's end, with the time since the start and the memory resident then and
//! at its peak so far, printed to stderr when the command is done (as Zeek's `-Q` prints its
//! execution time). Memory per stage was measured with scratch builds in every session of
//! issue 8; this makes the figures a run anyone can repeat (`benches/compare.sh` prints them).
//!
//! Resident memory is Linux's `VmRSS` and its high-water mark `VmHWM` (proc(5),
//! `/proc/self/status`), in the units `/usr/bin/time` reports as maximum resident set size.
//! Elsewhere the columns say `-`. Disabled, a stage's end costs an atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static START: OnceLock<Instant> = OnceLock::new();
static MARKS: Mutex<Vec<Mark>> = Mutex::new(Vec::new());

/// One stage's end.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    pub stage: String,
    /// Seconds since `enable`.
    pub elapsed_s: f64,
    /// Resident and peak resident KiB, where the system says.
    pub rss_kib: Option<u64>,
    pub peak_kib: Option<u64>,
}

/// Starts the clock and the record; called by the command line for `--stats`.
pub fn enable() {
    START.get_or_init(Instant::now);
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Records the end of `stage` (its name built only when enabled).
pub fn mark(stage: impl FnOnce() -> String) {
    if !enabled() {
        return;
    }
    let (rss_kib, peak_kib) = memory();
    let stage = stage();
    // A stage ended on a thread that panicked leaves the lock poisoned; its marks still count.
    let mut marks = MARKS.lock().unwrap_or_else(|e| e.into_inner());
    // The clock is read under the lock, so the record's order is the order of the times it
    // shows: captures read on threads of their own end in any order, and a time read before
    // the lock (or before the kernel's status file) could land after a later one.
    let elapsed_s = START.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
    marks.push(Mark {
        stage,
        elapsed_s,
        rss_kib,
        peak_kib,
    });
}

/// The stages recorded so far, in the order they ended.
pub fn marks() -> Vec<Mark> {
    MARKS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The table `--stats` prints: a header, then a stage a line.
pub fn table(marks: &[Mark]) -> String {
    let mib = |k: Option<u64>| k.map_or("-".to_string(), |k| format!("{:.1}", k as f64 / 1024.0));
    let width = marks
        .iter()
        .map(|m| m.stage.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let mut s = format!(
        "{:<width$}  {:>9}  {:>8}  {:>8}\n",
        "stage", "elapsed_s", "rss_mib", "peak_mib"
    );
    for m in marks {
        s.push_str(&format!(
            "{:<width$}  {:>9.3}  {:>8}  {:>8}\n",
            m.stage,
            m.elapsed_s,
            mib(m.rss_kib),
            mib(m.peak_kib)
        ));
    }
    s
}

/// Prints the table to stderr, if `--stats` asked for it.
pub fn print() {
    if enabled() {
        eprint!("vantage: stats\n{}", table(&marks()));
    }
}

/// (VmRSS, VmHWM) in KiB.
fn memory() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lines_up_and_says_what_the_system_did_not() {
        let marks = [
            Mark {
                stage: "read a".into(),
                elapsed_s: 0.5,
                rss_kib: Some(2048),
                peak_kib: Some(3072),
            },
            Mark {
                stage: "written".into(),
                elapsed_s: 1.25,
                rss_kib: None,
                peak_kib: None,
            },
        ];
        let t = table(&marks);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "stage    elapsed_s   rss_mib  peak_mib");
        assert_eq!(lines[1], "read a       0.500       2.0       3.0");
        assert_eq!(lines[2], "written      1.250         -         -");
    }

    /// Threads marking at once leave a record whose times go forward (the CI run of session 14
    /// caught one out of order: a time read before the lock, pushed after a later one).
    #[test]
    fn marks_from_threads_at_once_are_in_the_order_of_their_times() {
        enable();
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for i in 0..200 {
                        mark(|| format!("thread {t} stage {i}"));
                    }
                });
            }
        });
        let marks = marks();
        assert!(marks.len() >= 800);
        for w in marks.windows(2) {
            assert!(w[1].elapsed_s >= w[0].elapsed_s, "{w:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn memory_is_read_from_the_kernel() {
        let (rss, peak) = memory();
        let (rss, peak) = (rss.unwrap(), peak.unwrap());
        assert!(rss > 0 && peak >= rss, "{rss} {peak}");
    }
}
