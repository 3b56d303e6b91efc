//! The operator's work queue, as in kube-runtime's controller: a job is never reconciled twice at
//! once, repeated triggers collapse into one, and a job whose reconcile failed waits an
//! exponentially growing, jittered delay that resets on success. Time is passed in, so the queue
//! is plain data and tested without clocks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// Per-job error backoff: `base` doubling per consecutive failure, capped at `cap`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (>= 1), before jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.base.saturating_mul(1 << exp).min(self.cap)
    }
}

/// What a reconcile asked for when it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded; look again after this long (or never).
    Requeue(Option<Duration>),
    /// Failed; back off.
    Failed,
}

/// The queue of jobs to reconcile.
#[derive(Debug, Default)]
pub struct Queue {
    backoff: Backoff,
    /// When each waiting job becomes due.
    due: HashMap<String, Instant>,
    /// Jobs being reconciled now.
    active: HashSet<String>,
    /// Jobs triggered while active: re-run as soon as they finish.
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
    /// Triggers that queued a job not already waiting (collapsed triggers do not count).
    adds: u64,
    /// Reconciles that failed and were queued again after a backoff.
    retries: u64,
}

/// What the queue exports as metrics (controller-runtime's workqueue set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Jobs due now and not being reconciled.
    pub depth: usize,
    /// Reconciles under way.
    pub active: usize,
    /// Counters since the queue was made (a new term makes a new queue).
    pub adds: u64,
    pub retries: u64,
}

impl Queue {
    pub fn new(backoff: Backoff) -> Queue {
        Queue {
            backoff,
            ..Queue::default()
        }
    }

    /// Asks for `job` to be reconciled at `at` (or earlier, if it is already due earlier). A job
    /// that is being reconciled is marked to run again when it finishes.
    pub fn trigger(&mut self, job: &str, at: Instant) {
        if self.active.contains(job) {
            self.dirty.insert(job.to_string());
            return;
        }
        let when = self.due.entry(job.to_string()).or_insert_with(|| {
            self.adds += 1;
            at
        });
        *when = (*when).min(at);
    }

    /// A periodic resync's trigger: like [`Queue::trigger`], but a job waiting out an error
    /// backoff keeps waiting (resyncs must not defeat the backoff).
    pub fn resync(&mut self, job: &str, at: Instant) {
        if self.failures(job) > 0 && self.due.contains_key(job) {
            return;
        }
        self.trigger(job, at);
    }

    /// Takes the most overdue job that is due at `now` and not active, marking it active.
    pub fn pop(&mut self, now: Instant) -> Option<String> {
        self.pop_waited(now).map(|(job, _)| job)
    }

    /// As [`Queue::pop`], with how long the job waited past its due time.
    pub fn pop_waited(&mut self, now: Instant) -> Option<(String, Duration)> {
        let (job, due) = self
            .due
            .iter()
            .filter(|(j, t)| **t <= now && !self.active.contains(*j))
            .min_by_key(|(j, t)| (**t, (*j).clone()))
            .map(|(j, t)| (j.clone(), *t))?;
        self.due.remove(&job);
        self.active.insert(job.clone());
        Some((job, now.saturating_duration_since(due)))
    }

    /// The queue's metrics at `now`.
    pub fn stats(&self, now: Instant) -> Stats {
        Stats {
            depth: self
                .due
                .iter()
                .filter(|(j, t)| **t <= now && !self.active.contains(*j))
                .count(),
            active: self.active.len(),
            adds: self.adds,
            retries: self.retries,
        }
    }

    /// When the next job becomes due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.due
            .iter()
            .filter(|(j, _)| !self.active.contains(*j))
            .map(|(_, t)| *t)
            .min()
    }

    /// Records the end of a reconcile. `jitter` in [0, 1) spreads retries of many jobs.
    pub fn finish(&mut self, job: &str, outcome: Outcome, now: Instant, jitter: f64) {
        self.active.remove(job);
        let again = self.dirty.remove(job);
        let next = match outcome {
            Outcome::Requeue(after) => {
                self.failures.remove(job);
                after.map(|d| now + d)
            }
            Outcome::Failed => {
                self.retries += 1;
                let n = self.failures.entry(job.to_string()).or_insert(0);
                *n += 1;
                let d = self.backoff.delay(*n);
                Some(now + d.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.5))
            }
        };
        // A trigger during a failed reconcile does not skip the backoff.
        let next = match (again, outcome) {
            (true, Outcome::Requeue(_)) => Some(now),
            _ => next,
        };
        if let Some(at) = next {
            self.trigger(job, at);
        }
    }

    /// Forgets a job (deleted).
    pub fn forget(&mut self, job: &str) {
        self.due.remove(job);
        self.dirty.remove(job);
        self.failures.remove(job);
    }

    /// Consecutive failures of a job.
    pub fn failures(&self, job: &str) -> u32 {
        self.failures.get(job).copied().unwrap_or(0)
    }

    /// Waiting jobs and when they are due, for tests and metrics.
    pub fn waiting(&self) -> BTreeMap<String, Instant> {
        self.due.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_job_is_never_handed_out_twice_at_once_and_triggers_collapse() {
        let t0 = Instant::now();
        let mut q = Queue::new(Backoff::default());
        q.trigger("a", t0);
        q.trigger("a", t0);
        q.trigger("b", t0 + secs(1));
        assert_eq!(q.pop(t0).as_deref(), Some("a"));
        assert_eq!(q.pop(t0), None, "b is not due and a is active");
        q.trigger("a", t0);
        assert_eq!(q.pop(t0 + secs(1)).as_deref(), Some("b"));
        assert_eq!(
            q.pop(t0 + secs(1)),
            None,
            "a triggered while active waits for it to finish"
        );
        q.finish("a", Outcome::Requeue(Some(secs(300))), t0 + secs(2), 0.0);
        assert_eq!(
            q.pop(t0 + secs(2)).as_deref(),
            Some("a"),
            "the collapsed trigger runs once, at once"
        );
        q.finish("a", Outcome::Requeue(None), t0 + secs(3), 0.0);
        assert_eq!(q.pop(t0 + secs(1000)), None);
    }

    #[test]
    fn failures_back_off_exponentially_and_success_resets() {
        let t0 = Instant::now();
        let mut q = Queue::new(Backoff {
            base: secs(1),
            cap: secs(8),
        });
        q.trigger("a", t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            let job = q.pop(now).expect("due");
            q.finish(&job, Outcome::Failed, now, 0.0);
            let due = q.waiting()["a"];
            delays.push((due - now).as_secs());
            assert_eq!(
                q.pop(due - Duration::from_millis(1)),
                None,
                "not before the backoff"
            );
            now = due;
        }
        assert_eq!(delays, [1, 2, 4, 8, 8]);
        assert_eq!(q.failures("a"), 5);
        let job = q.pop(now).unwrap();
        q.finish(&job, Outcome::Requeue(Some(secs(60))), now, 0.0);
        assert_eq!(q.failures("a"), 0, "success resets the backoff");
        q.trigger("a", now);
        let job = q.pop(now).unwrap();
        q.finish(&job, Outcome::Failed, now, 0.0);
        assert_eq!((q.waiting()["a"] - now).as_secs(), 1);
    }

    #[test]
    fn a_resync_does_not_cut_an_error_backoff_short_but_an_event_does() {
        let t0 = Instant::now();
        let mut q = Queue::new(Backoff {
            base: secs(60),
            cap: secs(600),
        });
        q.trigger("a", t0);
        q.pop(t0);
        q.finish("a", Outcome::Failed, t0, 0.0);
        q.resync("a", t0 + secs(10));
        assert_eq!(q.pop(t0 + secs(10)), None, "still backing off");
        q.trigger("a", t0 + secs(10));
        assert_eq!(
            q.pop(t0 + secs(10)).as_deref(),
            Some("a"),
            "a spec change is seen at once"
        );
    }

    #[test]
    fn stats_count_adds_retries_depth_and_active_reconciles() {
        let t0 = Instant::now();
        let mut q = Queue::new(Backoff::default());
        q.trigger("a", t0);
        q.trigger("a", t0);
        q.trigger("b", t0);
        q.trigger("c", t0 + secs(60));
        // (when, stats wanted)
        let s = q.stats(t0);
        assert_eq!(
            (s.depth, s.active, s.adds, s.retries),
            (2, 0, 3, 0),
            "a collapsed trigger is not an add; c is not due"
        );
        let (job, waited) = q.pop_waited(t0 + secs(2)).expect("due");
        assert_eq!(
            (job.as_str(), waited),
            ("a", secs(2)),
            "time in queue counts from the due time"
        );
        let s = q.stats(t0 + secs(2));
        assert_eq!((s.depth, s.active), (1, 1));
        q.finish("a", Outcome::Failed, t0 + secs(3), 0.0);
        let s = q.stats(t0 + secs(3));
        assert_eq!(
            (s.active, s.adds, s.retries),
            (0, 4, 1),
            "a retry re-adds the job"
        );
    }

    #[test]
    fn jitter_stretches_a_backoff_by_at_most_half() {
        let t0 = Instant::now();
        let mut q = Queue::new(Backoff {
            base: secs(10),
            cap: secs(100),
        });
        q.trigger("a", t0);
        q.pop(t0);
        q.finish("a", Outcome::Failed, t0, 0.999);
        let d = q.waiting()["a"] - t0;
        assert!(d >= secs(10) && d < secs(15), "{d:?}");
    }
}
