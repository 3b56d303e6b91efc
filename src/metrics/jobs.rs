//! Per-job series: one small record per job, written out in Prometheus' text exposition format
//! a few hundred jobs at a time.
//!
//! Why not the `prometheus` crate's vectors: each of their series is an object of its own (a
//! copy of the metric's description, its label pairs, a hash-map slot). With 22 series per job,
//! 10,000 jobs held 121 MiB, and a scrape gathered and encoded all of it into a further ~55 MiB
//! before sending a byte (measured in this crate's tests at the time of the change). Here a job
//! is one `Series` of about 200 bytes, and a scrape never holds more than [`PIECE`] jobs' text.
//!
//! Guarantees: counters never go backwards while a job is in the table (they are raised to the
//! store's cumulative totals, never lowered); a job's series of one family are written under one
//! lock, so a scrape never sees two phases at 1 for one job. Caveat: a scrape is not one
//! snapshot across jobs or families; a job observed mid-scrape may be in some families and not
//! others, as with any scrape racing an update.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::Bound;
use std::sync::Mutex;

use crate::model::{CopyJobStatus, Phase};

/// Jobs written per piece of a scrape: a piece is at most about 8 × 80 bytes per job.
pub const PIECE: usize = 256;

/// Indexes into `Series::restarts`.
const REASONS: [&str; 3] = ["failed", "platform", "interrupted"];

/// What one job exports.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    /// Copied bytes, copied, skipped, failed and listed objects, over all runs.
    totals: [u64; 5],
    /// Objects and bytes listed but not yet handled in the current run.
    remaining: [i64; 2],
    phase: Phase,
    running_tasks: i64,
    /// Failed, platform and interrupted restarts, then placement failures.
    restarts: [u64; 4],
    /// The run whose restart counts were last added, and those counts then.
    seen_run: Option<(Box<str>, [u32; 4])>,
    last_success: Option<i64>,
    next_run: Option<i64>,
    schedule_period: Option<i64>,
}

/// One family of per-job series.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// Writes the job's samples of this family (none when it has no value).
    write: fn(&mut String, &'static str, &str, &Series),
}

fn sample(out: &mut String, name: &str, job: &str, extra: Option<(&str, &str)>, value: i128) {
    out.push_str(name);
    out.push_str("{copyjob=\"");
    escape(out, job);
    out.push('"');
    if let Some((label, v)) = extra {
        let _ = write!(out, ",{label}=\"");
        escape(out, v);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

/// Escapes a label value as the text format requires (backslash, double quote, newline).
fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

macro_rules! family {
    ($name:literal, $kind:literal, $help:literal, |$out:ident, $n:ident, $job:ident, $s:ident| $body:expr) => {
        Family {
            name: $name,
            kind: $kind,
            help: $help,
            write: |$out: &mut String, $n: &'static str, $job: &str, $s: &Series| $body,
        }
    };
}

/// Every per-job family, in the order a scrape writes them.
const FAMILIES: &[Family] = &[
    family!(
        "ferry_copied_bytes_total",
        "counter",
        "Bytes copied, over all runs",
        |o, n, j, s| sample(o, n, j, None, s.totals[0].into())
    ),
    family!(
        "ferry_copied_objects_total",
        "counter",
        "Objects copied, over all runs",
        |o, n, j, s| sample(o, n, j, None, s.totals[1].into())
    ),
    family!(
        "ferry_skipped_objects_total",
        "counter",
        "Objects already identical at the destination, over all runs",
        |o, n, j, s| sample(o, n, j, None, s.totals[2].into())
    ),
    family!(
        "ferry_failed_objects_total",
        "counter",
        "Objects that failed (reported per object), over all runs",
        |o, n, j, s| sample(o, n, j, None, s.totals[3].into())
    ),
    family!(
        "ferry_listed_objects_total",
        "counter",
        "Source objects listed, over all runs",
        |o, n, j, s| sample(o, n, j, None, s.totals[4].into())
    ),
    family!(
        "ferry_remaining_objects",
        "gauge",
        "Objects listed but not yet handled in the current run",
        |o, n, j, s| sample(o, n, j, None, s.remaining[0].into())
    ),
    family!(
        "ferry_remaining_bytes",
        "gauge",
        "Bytes listed but not yet handled in the current run",
        |o, n, j, s| sample(o, n, j, None, s.remaining[1].into())
    ),
    family!(
        "ferry_job_phase",
        "gauge",
        "1 for the job's current phase, 0 for the others",
        |o, n, j, s| for ph in Phase::ALL {
            sample(
                o,
                n,
                j,
                Some(("phase", ph.as_str())),
                i128::from(ph == s.phase),
            );
        }
    ),
    family!(
        "ferry_running_tasks",
        "gauge",
        "Worker tasks of the job's current run that ECS reports running",
        |o, n, j, s| sample(o, n, j, None, s.running_tasks.into())
    ),
    family!(
        "ferry_task_restarts_total",
        "counter",
        "Worker tasks replaced, by reason (failed, platform, interrupted)",
        |o, n, j, s| for (i, reason) in REASONS.iter().enumerate() {
            sample(o, n, j, Some(("reason", reason)), s.restarts[i].into());
        }
    ),
    family!(
        "ferry_placement_failures_total",
        "counter",
        "RunTask calls that ECS could not place (no ENI, no capacity)",
        |o, n, j, s| sample(o, n, j, None, s.restarts[3].into())
    ),
    family!(
        "ferry_last_success_timestamp_seconds",
        "gauge",
        "When a run of the job last finished successfully (Unix time)",
        |o, n, j, s| if let Some(t) = s.last_success {
            sample(o, n, j, None, t.into())
        }
    ),
    family!(
        "ferry_next_run_timestamp_seconds",
        "gauge",
        "When the schedule starts the job's next run (Unix time; absent when none is due)",
        |o, n, j, s| if let Some(t) = s.next_run {
            sample(o, n, j, None, t.into())
        }
    ),
    family!(
        "ferry_schedule_period_seconds",
        "gauge",
        "The time between a Sync job's next two schedule ticks",
        |o, n, j, s| if let Some(t) = s.schedule_period {
            sample(o, n, j, None, t.into())
        }
    ),
];

/// The per-job families' names.
#[cfg(test)]
pub fn names() -> impl Iterator<Item = &'static str> {
    FAMILIES.iter().map(|f| f.name)
}

/// Where a scrape has got to: the family, the last job written of it, and whether the family's
/// `# HELP`/`# TYPE` lines are out (written before its first sample, so an empty family writes
/// nothing).
#[derive(Debug, Default, Clone)]
pub struct Cursor {
    family: usize,
    after: Option<String>,
    header: bool,
}

/// The per-job series of every job this replica exports.
#[derive(Debug, Default)]
pub struct JobTable {
    jobs: Mutex<BTreeMap<String, Series>>,
}

fn unix(t: Option<&str>) -> Option<i64> {
    t.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl JobTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Series>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Exports a job's status: cumulative counters, phase, remaining work, tasks and restarts.
    pub fn observe(&self, job: &str, status: &CopyJobStatus, running_tasks: usize) {
        let total = super::cumulative(status);
        let p = &status.progress;
        let finished = status.run.as_ref().is_some_and(|r| r.finished_at.is_some());
        let remaining = if finished {
            [0, 0]
        } else {
            let done = p.objects_copied + p.objects_skipped + p.objects_failed;
            [
                clamp(p.objects_listed.saturating_sub(done)),
                clamp(
                    p.bytes_listed
                        .saturating_sub(p.bytes_copied + p.bytes_skipped),
                ),
            ]
        };
        let mut jobs = self.lock();
        let s = match jobs.get_mut(job) {
            Some(s) => s,
            None => jobs.entry(job.to_string()).or_insert(Series {
                totals: [0; 5],
                remaining,
                phase: status.phase,
                running_tasks: 0,
                restarts: [0; 4],
                seen_run: None,
                last_success: None,
                next_run: None,
                schedule_period: None,
            }),
        };
        let now = [
            total.bytes_copied,
            total.objects_copied,
            total.objects_skipped,
            total.objects_failed,
            total.objects_listed,
        ];
        for (have, target) in s.totals.iter_mut().zip(now) {
            *have = (*have).max(target);
        }
        s.remaining = remaining;
        s.phase = status.phase;
        s.running_tasks = clamp(running_tasks as u64);
        s.last_success = unix(status.last_successful_time.as_deref());
        s.next_run = unix(status.next_run_time.as_deref());
        if let Some(run) = &status.run {
            let counts = [
                run.failures,
                run.platform_restarts,
                run.interruptions,
                run.placement_failures,
            ];
            let seen = match &mut s.seen_run {
                Some((id, seen)) if **id == *run.id => seen,
                other => &mut other.insert((run.id.as_str().into(), [0; 4])).1,
            };
            for i in 0..4 {
                if counts[i] > seen[i] {
                    s.restarts[i] += u64::from(counts[i] - seen[i]);
                    seen[i] = counts[i];
                }
            }
        }
    }

    /// Sets or clears (`None`) a Sync job's schedule period. A job not yet observed is left
    /// alone: its series start with its first status.
    pub fn schedule(&self, job: &str, period_seconds: Option<u64>) {
        if let Some(s) = self.lock().get_mut(job) {
            s.schedule_period = period_seconds.map(clamp);
        }
    }

    pub fn forget(&self, job: &str) {
        self.lock().remove(job);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Appends the next piece of a scrape to `out` (given empty): up to [`PIECE`] jobs of one
    /// family. Returns false once every family is written, and writes nothing then.
    pub fn write_piece(&self, cursor: &mut Cursor, out: &mut String) -> bool {
        let jobs = self.lock();
        while let Some(family) = FAMILIES.get(cursor.family) {
            let range = match &cursor.after {
                Some(a) => jobs.range::<str, _>((Bound::Excluded(a.as_str()), Bound::Unbounded)),
                None => jobs.range::<str, _>(..),
            };
            let mut written = 0;
            let mut last = None;
            for (job, s) in range.take(PIECE) {
                let before = out.len();
                (family.write)(out, family.name, job, s);
                if out.len() > before && !cursor.header {
                    let lines = format!(
                        "# HELP {n} {h}\n# TYPE {n} {k}\n",
                        n = family.name,
                        h = family.help,
                        k = family.kind
                    );
                    out.insert_str(before, &lines);
                    cursor.header = true;
                }
                written += 1;
                last = Some(job);
            }
            if written == PIECE {
                cursor.after = last.cloned();
            } else {
                *cursor = Cursor {
                    family: cursor.family + 1,
                    after: None,
                    header: false,
                };
            }
            if !out.is_empty() {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunStatus;

    fn scrape(t: &JobTable) -> String {
        let mut cursor = Cursor::default();
        let mut text = String::new();
        let mut piece = String::new();
        while t.write_piece(&mut cursor, &mut piece) {
            assert!(
                !piece.is_empty(),
                "a piece that is not the last is not empty"
            );
            text.push_str(&piece);
            piece.clear();
        }
        text
    }

    #[test]
    fn a_scrape_writes_each_family_once_whatever_the_number_of_pieces() {
        let t = JobTable::default();
        let status = CopyJobStatus::default();
        for i in 0..(PIECE * 2 + 7) {
            t.observe(&format!("j{i:05}"), &status, 0);
        }
        let text = scrape(&t);
        for name in ["ferry_copied_bytes_total", "ferry_job_phase"] {
            let heads = text.matches(&format!("# TYPE {name} ")).count();
            assert_eq!(heads, 1, "{name}: {heads} TYPE lines");
        }
        let phases = text.matches("ferry_job_phase{").count();
        assert_eq!(phases, (PIECE * 2 + 7) * Phase::ALL.len());
        assert!(text.contains("ferry_job_phase{copyjob=\"j00518\",phase=\"Pending\"} 1\n"));
        assert!(
            !text.contains("ferry_last_success_timestamp_seconds"),
            "an empty family writes nothing"
        );
    }

    #[test]
    fn counters_rise_to_the_store_totals_and_never_fall() {
        let t = JobTable::default();
        let mut status = CopyJobStatus::default();
        status.progress.bytes_copied = 100;
        t.observe("a", &status, 1);
        status.progress.bytes_copied = 50; // a new run started...
        status.totals.bytes_copied = 100; // ...and the old one was folded into the totals
        t.observe("a", &status, 1);
        assert!(scrape(&t).contains("ferry_copied_bytes_total{copyjob=\"a\"} 150\n"));
        status.totals.bytes_copied = 0; // a store that went backwards
        t.observe("a", &status, 1);
        assert!(scrape(&t).contains("ferry_copied_bytes_total{copyjob=\"a\"} 150\n"));
    }

    #[test]
    fn restarts_add_what_each_run_gained_and_a_new_run_starts_from_zero() {
        let t = JobTable::default();
        let at = |id: &str, failures| CopyJobStatus {
            run: Some(RunStatus {
                id: id.into(),
                failures,
                ..RunStatus::default()
            }),
            ..CopyJobStatus::default()
        };
        for (id, failures, want) in [("r1", 2, 2), ("r1", 2, 2), ("r1", 3, 3), ("r2", 1, 4)] {
            t.observe("a", &at(id, failures), 0);
            let line =
                format!("ferry_task_restarts_total{{copyjob=\"a\",reason=\"failed\"}} {want}\n");
            assert!(
                scrape(&t).contains(&line),
                "after {id}/{failures}: want {want}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let t = JobTable::default();
        t.observe("a\"b\\c\nd", &CopyJobStatus::default(), 0);
        assert!(scrape(&t).contains(r#"ferry_running_tasks{copyjob="a\"b\\c\nd"} 0"#));
    }

    #[test]
    fn a_schedule_for_a_job_not_yet_observed_waits_for_its_status() {
        let t = JobTable::default();
        t.schedule("a", Some(60));
        assert_eq!(t.len(), 0);
        t.observe("a", &CopyJobStatus::default(), 0);
        t.schedule("a", Some(60));
        assert!(scrape(&t).contains("ferry_schedule_period_seconds{copyjob=\"a\"} 60\n"));
        t.schedule("a", None);
        assert!(!scrape(&t).contains("ferry_schedule_period_seconds"));
    }
}
