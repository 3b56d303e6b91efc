//! The operator's Prometheus metrics. Names follow `ferry_<name>_<unit>` with `_total` for
//! counters; label values come from small fixed sets, except the job name (label `copyjob`:
//! `job` is the label Prometheus gives every scrape target). Job counters are
//! derived from the progress the store keeps (cumulative over runs), so they do not go
//! backwards when the operator restarts or leadership moves.
//!
//! The per-job families live in `jobs.rs`, outside the `prometheus` registry: at 10,000 jobs
//! the registry's per-series objects were the operator's largest memory cost.

mod jobs;

use std::sync::Mutex;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::controller::queue::Stats;
use crate::model::{CopyJobStatus, Phase, Progress};

/// Every phase, for the one-hot `ferry_job_phase` gauge.
pub const PHASES: [Phase; 8] = Phase::ALL;

/// The metric names ferry exports (the dashboard test checks against this list).
pub const NAMES: &[&str] = &[
    "ferry_copied_bytes_total",
    "ferry_copied_objects_total",
    "ferry_skipped_objects_total",
    "ferry_failed_objects_total",
    "ferry_listed_objects_total",
    "ferry_remaining_objects",
    "ferry_remaining_bytes",
    "ferry_job_phase",
    "ferry_running_tasks",
    "ferry_task_restarts_total",
    "ferry_placement_failures_total",
    "ferry_drift_corrections_total",
    "ferry_reconcile_duration_seconds",
    "ferry_reconcile_errors_total",
    "ferry_aws_requests_total",
    "ferry_leader",
    "ferry_build_info",
    "ferry_last_success_timestamp_seconds",
    "ferry_next_run_timestamp_seconds",
    "ferry_schedule_period_seconds",
    "ferry_workqueue_depth",
    "ferry_workqueue_adds_total",
    "ferry_workqueue_retries_total",
    "ferry_workqueue_queue_duration_seconds",
    "ferry_active_reconciles",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
];

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    corrections: IntCounterVec,
    reconcile_duration: HistogramVec,
    reconcile_errors: IntCounterVec,
    aws_requests: IntCounterVec,
    leader: IntGauge,
    queue_depth: IntGauge,
    queue_adds: IntCounter,
    queue_retries: IntCounter,
    queue_duration: Histogram,
    active_reconciles: IntGauge,
    /// The queue's adds and retries last exported (a new term starts a new queue from 0).
    seen_queue: Mutex<(u64, u64)>,
    /// Every per-job series (label `copyjob`), outside the registry.
    jobs: jobs::JobTable,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Registers a metric in `r` and hands it back.
fn registered<M: Collector + Clone + 'static>(
    r: &Registry,
    metric: Result<M, prometheus::Error>,
) -> Result<M, prometheus::Error> {
    let metric = metric?;
    r.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels))
}

fn gauge(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

impl Metrics {
    /// Registers every metric. Fails only on a bad name or a name registered twice: a
    /// programming error, reported instead of panicking.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let r = Registry::new();
        let leader = registered(
            &r,
            IntGauge::new("ferry_leader", "1 if this replica holds the leader lease"),
        )?;
        let reconcile_duration = registered(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "ferry_reconcile_duration_seconds",
                    "Time one reconcile of one job took",
                )
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
                &["outcome"],
            ),
        )?;
        let build = gauge(
            &r,
            "ferry_build_info",
            "1, labelled with the version and git commit of this binary",
            &["version", "commit"],
        )?;
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("FERRY_GIT_COMMIT")])
            .set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let int_gauge = |name: &str, help: &str| registered(&r, IntGauge::new(name, help));
        let int_counter = |name: &str, help: &str| registered(&r, IntCounter::new(name, help));
        Ok(Metrics {
            queue_depth: int_gauge(
                "ferry_workqueue_depth",
                "Jobs due for a reconcile and waiting for a slot",
            )?,
            queue_adds: int_counter(
                "ferry_workqueue_adds_total",
                "Jobs added to the work queue (collapsed triggers not counted)",
            )?,
            queue_retries: int_counter(
                "ferry_workqueue_retries_total",
                "Reconciles that failed and were queued again after a backoff",
            )?,
            queue_duration: registered(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ferry_workqueue_queue_duration_seconds",
                        "How long a job waited past its due time for a reconcile slot",
                    )
                    .buckets(vec![0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0]),
                ),
            )?,
            active_reconciles: int_gauge("ferry_active_reconciles", "Reconciles under way")?,
            seen_queue: Mutex::new((0, 0)),
            jobs: jobs::JobTable::default(),
            corrections: counter(
                &r,
                "ferry_drift_corrections_total",
                "Drifted resources put back, by kind",
                &["kind"],
            )?,
            reconcile_errors: counter(
                &r,
                "ferry_reconcile_errors_total",
                "Failed reconciles, by error kind",
                &["kind"],
            )?,
            aws_requests: counter(
                &r,
                "ferry_aws_requests_total",
                "AWS requests the operator made, by service, operation and outcome",
                &["service", "operation", "outcome"],
            )?,
            reconcile_duration,
            leader,
            registry: r,
        })
    }

    /// The whole text exposition at once (tests and small tables; `/metrics` streams
    /// [`Metrics::pieces`]).
    pub fn render(&self) -> String {
        pieces(self).collect()
    }

    pub fn aws_request(&self, service: &str, operation: &str, outcome: &str) {
        self.aws_requests
            .with_label_values(&[service, operation, outcome])
            .inc();
    }

    pub fn reconciled(&self, seconds: f64, error_kind: Option<&str>) {
        self.reconcile_duration
            .with_label_values(&[if error_kind.is_some() { "error" } else { "ok" }])
            .observe(seconds);
        if let Some(kind) = error_kind {
            self.reconcile_errors.with_label_values(&[kind]).inc();
        }
    }

    pub fn corrected(&self, kind: &str) {
        self.corrections.with_label_values(&[kind]).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Exports the work queue's levels and counters.
    pub fn observe_queue(&self, stats: Stats) {
        self.queue_depth
            .set(i64::try_from(stats.depth).unwrap_or(i64::MAX));
        self.active_reconciles
            .set(i64::try_from(stats.active).unwrap_or(i64::MAX));
        let mut seen = self.seen_queue.lock().unwrap_or_else(|e| e.into_inner());
        if stats.adds < seen.0 || stats.retries < seen.1 {
            *seen = (0, 0); // a new queue
        }
        self.queue_adds.inc_by(stats.adds - seen.0);
        self.queue_retries.inc_by(stats.retries - seen.1);
        *seen = (stats.adds, stats.retries);
    }

    /// Exports a Sync job's schedule period (`None`: removes the series). Call it after
    /// `observe_job`: a job not yet observed has no series.
    pub fn observe_schedule(&self, job: &str, period_seconds: Option<u64>) {
        self.jobs.schedule(job, period_seconds);
    }

    /// Records how long a job waited past its due time.
    pub fn queued_for(&self, seconds: f64) {
        self.queue_duration.observe(seconds);
    }

    /// Steps down: drops every per-job series, so a `sum()` over replicas counts each job once
    /// (the new leader exports them; its counters start from the store's totals).
    pub fn step_down(&self) {
        self.jobs.clear();
        self.observe_queue(Stats::default());
        // Last: a scrape that sees `ferry_leader 0` sees no per-job series.
        self.set_leader(false);
    }

    /// Exports a job's status: cumulative counters, phase, remaining work, tasks and restarts.
    pub fn observe_job(&self, job: &str, status: &CopyJobStatus, running_tasks: usize) {
        self.jobs.observe(job, status, running_tasks);
    }

    /// Drops a deleted job's series.
    pub fn forget_job(&self, job: &str) {
        self.jobs.forget(job);
    }
}

/// The text exposition in pieces: first the registry's own metrics (a fixed, small set), then
/// the per-job families [`jobs::PIECE`] jobs at a time, so a scrape of 10,000 jobs never holds
/// its whole text.
pub fn pieces<M: std::ops::Deref<Target = Metrics>>(m: M) -> impl Iterator<Item = String> {
    let mut head = Vec::new();
    let _ = TextEncoder::new().encode(&m.registry.gather(), &mut head);
    let head = String::from_utf8(head).unwrap_or_default();
    let mut cursor = jobs::Cursor::default();
    std::iter::once(head).chain(std::iter::from_fn(move || {
        let mut piece = String::new();
        m.jobs.write_piece(&mut cursor, &mut piece).then_some(piece)
    }))
}

/// Totals over all runs: earlier runs' totals plus the current run's progress.
pub fn cumulative(status: &CopyJobStatus) -> Progress {
    status.totals.plus(&status.progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_has_a_series_of_the_phase_gauge() {
        // Exhaustive: a new phase does not compile until it is placed here and in PHASES.
        let listed = |p: Phase| match p {
            Phase::Pending
            | Phase::Provisioning
            | Phase::Running
            | Phase::Succeeded
            | Phase::Failed
            | Phase::Blocked
            | Phase::Suspended
            | Phase::Deleting => PHASES.contains(&p),
        };
        for p in PHASES {
            assert!(listed(p));
        }
        assert!(listed(Phase::Blocked));
        assert_eq!(PHASES.len(), 8);
    }

    #[test]
    fn every_per_job_family_is_a_documented_name() {
        for name in jobs::names() {
            assert!(NAMES.contains(&name), "{name} is not in NAMES");
        }
    }

    #[test]
    fn exported_names_are_the_documented_ones() {
        let m = Metrics::new().expect("metrics");
        let status = CopyJobStatus {
            last_successful_time: Some("2026-11-30T10:00:00Z".into()),
            next_run_time: Some("2026-11-30T11:00:00Z".into()),
            ..CopyJobStatus::default()
        };
        m.observe_job("a", &status, 0);
        m.observe_queue(Stats {
            depth: 1,
            active: 1,
            adds: 2,
            retries: 1,
        });
        m.queued_for(0.5);
        m.observe_schedule("a", Some(3600));
        m.aws_request("s3", "HeadBucket", "ok");
        m.reconciled(0.1, Some("aws"));
        m.corrected("task");
        let text = m.render();
        for name in NAMES {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn a_replica_stepping_down_drops_every_per_job_series_but_keeps_its_own() {
        let m = Metrics::new().expect("metrics");
        let status = CopyJobStatus {
            last_successful_time: Some("2026-11-30T10:00:00Z".into()),
            ..CopyJobStatus::default()
        };
        m.set_leader(true);
        m.observe_job("a", &status, 1);
        m.observe_job("b", &status, 0);
        let text = m.render();
        assert!(
            text.contains(r#"ferry_last_success_timestamp_seconds{copyjob="a"} 1796032800"#),
            "{text}"
        );
        m.step_down();
        let text = m.render();
        assert!(
            !text.contains("copyjob="),
            "per-job series left after stepping down:\n{text}"
        );
        assert!(text.contains("ferry_leader 0"), "{text}");
        assert!(text.contains("ferry_build_info{"), "{text}");
        // Leading again exports from the store's totals: counters come back whole.
        m.observe_job("a", &status, 1);
        assert!(
            m.render()
                .contains(r#"ferry_job_phase{copyjob="a",phase="Pending"} 1"#)
        );
    }

    #[test]
    fn queue_counters_carry_on_across_a_new_terms_queue() {
        let m = Metrics::new().expect("metrics");
        let at = |adds, retries| Stats {
            depth: 0,
            active: 0,
            adds,
            retries,
        };
        m.observe_queue(at(5, 1));
        m.observe_queue(at(7, 2));
        m.observe_queue(at(1, 0)); // a new term's queue starts from 0
        let text = m.render();
        assert!(text.contains("ferry_workqueue_adds_total 8"), "{text}");
        assert!(text.contains("ferry_workqueue_retries_total 2"), "{text}");
    }

    #[test]
    fn job_counters_follow_the_store_and_never_go_backwards() {
        let m = Metrics::new().expect("metrics");
        let mut status = CopyJobStatus::default();
        status.progress.bytes_copied = 100;
        m.observe_job("a", &status, 1);
        status.progress.bytes_copied = 50; // a new run started...
        status.totals.bytes_copied = 100; // ...and the old one was folded into the totals
        m.observe_job("a", &status, 1);
        assert!(
            m.render()
                .contains("ferry_copied_bytes_total{copyjob=\"a\"} 150")
        );
    }
}
