//! `ferry worker`: the program a Fargate task runs for one run of a CopyJob. Plans listing
//! partitions (or takes one per data file of the job's S3 Inventory report), lists them into
//! chunks, claims chunks with leases, merge-joins source and
//! destination listings and copies what differs. Meets the operator only through `store`.
//!
//! Environment (set by the operator as RunTask overrides; the same works outside ECS):
//!
//! | variable | meaning |
//! |---|---|
//! | `FERRY_JOB` | job name (required) |
//! | `FERRY_RUN` | run id (required) |
//! | `FERRY_TASK` | this task's id (default: random) |
//! | `FERRY_TABLE` | the job store table (default `ferry`) |
//! | `FERRY_LEASE_SECONDS` | chunk/partition lease length (default 60) |
//! | `FERRY_SESSION_SECONDS` | assumed-role session length (default 3600) |
//! | `FERRY_COPY_CONCURRENCY` | objects copied at once per task (default 64) |
//! | `FERRY_SHUTDOWN_GRACE_SECONDS` | after SIGTERM, time to finish in-flight chunks (default 25) |
//! | `FERRY_S3_FORCE_PATH_STYLE` | `true` for S3 emulators |
//! | `FERRY_ASSUME_DESTINATION_ROLE` | `false` to copy with the task's own credentials (a task role that already is the destination role's equal; local benchmarks) |
//! | `FERRY_WATCHDOG_SECONDS` | while the task holds work, no answer from S3 for this long means it is hung: it releases its work and exits 5 (default 600) |
//! | `FERRY_TEST_HANG_TASK` | tests only: the task with this id hangs in its first copy unit (to prove the watchdog) |
//!
//! Exit codes: 0 the run is complete, or the task stopped cleanly on SIGTERM/SIGINT with its
//! work checkpointed or released; 1 an unexpected error; 2 bad configuration (environment) or
//! bad input (an S3 Inventory report that does not fit the job, see [`inventory`]);
//! 3 the job or run does not exist; 4 AWS refused a call that cannot succeed on retry (e.g.
//! AccessDenied on the table or the role); 5 the watchdog found the task hung (its work is
//! released).

pub mod budget;
pub mod copy;
pub mod credentials;
pub mod inventory;
pub mod inventory_read;
pub mod plan;
pub mod queue;
pub mod split;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use self::budget::RateLimiter;
use self::copy::{Copied, Copier, CopyError, ObjectFailure, Side};
use self::inventory_read::{Inventory, InventoryError};
use self::plan::{Action, Filter, Range};
use crate::aws::ErrorKind;
use crate::model::CopyJob;
use crate::store::runs::{CLAIM_SHARDS, Chunk, ChunkCounts, Claim, NewChunk, TaskProgress, now_ms};
use crate::store::{Store, StoreError, spec_document};

/// Keys per chunk (one ListObjectsV2 page).
const CHUNK_KEYS: usize = 1000;
/// Concurrent work units (listing or copying) per task.
const SLOTS: usize = 8;
/// Chunks a task's listers keep for it beyond those it is copying: enough that a freed slot
/// never waits for a claim, few enough that the other tasks of the run get their share.
const MAX_READY: usize = 2;
/// Of those, at most this many list partitions, so copying starts as soon as the first chunk
/// exists instead of after the whole bucket is listed.
const MAX_LISTERS: usize = 4;
/// Claim index entries read per query: a few, so that tasks claiming at once find different
/// chunks, and reading them costs half a read unit.
const CLAIM_BATCH: i32 = 8;
/// Empty claim index shards a claim reads before the task idles.
const EMPTY_SHARDS_BEFORE_IDLE: u32 = 3;
/// First failures kept in the store per task.
const MAX_STORED_FAILURES: usize = 100;

/// Worker settings read from the environment.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub job: String,
    pub run: String,
    pub task: String,
    pub lease: Duration,
    pub session: Duration,
    pub copy_concurrency: usize,
    pub grace: Duration,
    pub force_path_style: bool,
    /// Assume `spec.destination.roleArn` (default) or use the base credentials as they are.
    pub assume_role: bool,
    /// No S3 answer for this long while holding work: hung.
    pub watchdog: Duration,
    /// Tests only: hang in the first copy unit ([`WATCHDOG_EXIT`] must follow).
    pub hang: bool,
}

/// The exit code of a task the watchdog ended.
pub const WATCHDOG_EXIT: i32 = 5;

/// Errors of the worker layer.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("cannot assume the destination role {role}: {message}")]
    AssumeRole { role: String, message: String },
}

impl WorkerError {
    /// Whether retrying the same work can help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            WorkerError::Config(_) => ErrorKind::Invalid,
            WorkerError::NotFound(_) => ErrorKind::NotFound,
            WorkerError::AssumeRole { .. } => ErrorKind::AccessDenied,
            WorkerError::Store(e) => e.kind(),
            WorkerError::Copy(CopyError::S3 { kind, .. })
            | WorkerError::Inventory(InventoryError::S3(CopyError::S3 { kind, .. })) => *kind,
            WorkerError::Copy(CopyError::Cancelled)
            | WorkerError::Inventory(InventoryError::S3(CopyError::Cancelled)) => {
                ErrorKind::Retryable
            }
            WorkerError::Inventory(InventoryError::Invalid { .. }) => ErrorKind::Invalid,
        }
    }

    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> i32 {
        match self {
            WorkerError::Config(_) | WorkerError::Inventory(InventoryError::Invalid { .. }) => 2,
            WorkerError::NotFound(_) => 3,
            WorkerError::AssumeRole { .. } => 4,
            WorkerError::Store(e) if e.kind().fails_again() => 4,
            WorkerError::Copy(CopyError::S3 { kind, .. })
            | WorkerError::Inventory(InventoryError::S3(CopyError::S3 { kind, .. }))
                if kind.fails_again() =>
            {
                4
            }
            _ => 1,
        }
    }
}

impl WorkerConfig {
    /// Reads the configuration from `FERRY_*` variables.
    pub fn from_env() -> Result<WorkerConfig, WorkerError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let required =
            |k: &str| var(k).ok_or_else(|| WorkerError::Config(format!("{k} is not set")));
        let secs = |k: &str, default: u64| -> Result<Duration, WorkerError> {
            match var(k) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Duration::from_secs)
                    .ok_or_else(|| {
                        WorkerError::Config(format!(
                            "{k}={v}: expected a positive number of seconds"
                        ))
                    }),
            }
        };
        let copy_concurrency = match var("FERRY_COPY_CONCURRENCY") {
            None => 64,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| {
                    WorkerError::Config(format!("FERRY_COPY_CONCURRENCY={v}: expected 1 to 1024"))
                })?,
        };
        Ok(WorkerConfig {
            job: required("FERRY_JOB")?,
            run: required("FERRY_RUN")?,
            task: var("FERRY_TASK").unwrap_or_else(|| format!("{:016x}", rand::random::<u64>())),
            lease: secs("FERRY_LEASE_SECONDS", 60)?,
            session: secs("FERRY_SESSION_SECONDS", 3600)?,
            copy_concurrency,
            grace: secs("FERRY_SHUTDOWN_GRACE_SECONDS", 25)?,
            force_path_style: var("FERRY_S3_FORCE_PATH_STYLE")
                .is_some_and(|v| v == "true" || v == "1"),
            assume_role: !var("FERRY_ASSUME_DESTINATION_ROLE")
                .is_some_and(|v| v == "false" || v == "0"),
            watchdog: secs("FERRY_WATCHDOG_SECONDS", 600)?,
            hang: var("FERRY_TEST_HANG_TASK").is_some_and(|t| Some(t) == var("FERRY_TASK")),
        })
    }
}

/// Live counters of this task, written to the store every few seconds.
#[derive(Debug, Default)]
struct Live {
    copied: AtomicU64,
    copied_bytes: AtomicU64,
    stored_failures: AtomicU64,
    /// When S3 last answered one of this task's requests, or it last started a unit (epoch ms):
    /// the watchdog's sign of life.
    alive_ms: Arc<AtomicU64>,
}

/// Shared state of one worker task.
struct Worker {
    cfg: WorkerConfig,
    store: Store,
    copier: Copier,
    filter: Filter,
    /// The run's object list when the job reads an S3 Inventory report: ranges are then
    /// positions in it (see [`inventory`]), read instead of listed.
    inventory: Option<Arc<Inventory>>,
    ranges: Vec<Range>,
    /// Everything this task knows about its work: leases held (renewed by the heartbeat at
    /// half life), chunks its listers kept for it (at most [`MAX_READY`], each with the source
    /// listing its lister just read; they need no claim, and their copier lists only the
    /// destination), partitions listed or held, units copying, the idle backoff, stopping.
    /// Never locked across an await.
    sched: std::sync::Mutex<queue::Scheduler<(Chunk, Option<Vec<plan::Entry>>)>>,
    /// Signalled when a chunk is kept.
    wake: Notify,
    live: Live,
    refreshes: Arc<AtomicU64>,
    copies: Arc<Semaphore>,
    /// Set when the grace period is over: abandon in-flight work and release it.
    abandon: AtomicBool,
}

/// An object key as logs show it: control characters (a newline, an escape sequence) written as
/// `\u{..}`, so a key cannot forge log lines or drive a terminal. S3 keys may hold any UTF-8.
pub fn shown_key(key: &str) -> std::borrow::Cow<'_, str> {
    if !key.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        if c.is_control() {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Validates a job read from the table as the CLI validates files: an item written around
/// `ferry apply` is bad input like any other, and the worker copies nothing for it.
fn check_spec(what: &str, job: &CopyJob) -> Result<(), WorkerError> {
    let problems = crate::model::validate::validate(job);
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Err(WorkerError::Config(format!(
        "{what} of copyjob/{} is invalid; copying nothing: {}",
        job.metadata.name,
        list.join("; ")
    )))
}

/// Runs a worker task to completion (or until a signal stops it).
pub async fn run(cfg: WorkerConfig, base: &SdkConfig, table: &str) -> Result<(), WorkerError> {
    let store = Store::from_config(base, table);
    let stored = store.get_job(&cfg.job).await?.ok_or_else(|| {
        WorkerError::NotFound(format!("copyjob/{} not found in table {table}", cfg.job))
    })?;
    check_spec("the job", &stored.job)?;
    if stored.job.status.as_ref().map(|s| s.phase) == Some(crate::model::Phase::Blocked) {
        return Err(WorkerError::Config(format!(
            "copyjob/{} is Blocked by the operator's policy; copying nothing",
            cfg.job
        )));
    }
    let meta = store
        .ensure_run(
            &cfg.job,
            &cfg.run,
            stored.generation,
            &spec_document(&stored.job),
        )
        .await?;
    let job: CopyJob = serde_json::from_str(&meta.document).map_err(|e| {
        WorkerError::NotFound(format!(
            "run {}/{} has an unreadable document: {e}",
            cfg.job, cfg.run
        ))
    })?;
    check_spec(&format!("run {}", cfg.run), &job)?;
    let (provider, refreshes) = if cfg.assume_role {
        credentials::destination_provider(base, &job, &cfg).await
    } else {
        let own = base
            .credentials_provider()
            .ok_or_else(|| WorkerError::Config("no credentials in the environment".into()))?;
        (own, Arc::new(AtomicU64::new(0)))
    };
    let spec = Arc::new(job.spec);
    let alive_ms = Arc::new(AtomicU64::new(now_ms()));
    let alive = Arc::clone(&alive_ms);
    let on_answer = crate::aws::OnAnswer(Arc::new(move || {
        alive.fetch_max(now_ms(), Ordering::Relaxed);
    }));
    // The task's share of the job's request budget, cut on SlowDown (see `budget`); it paces
    // every S3 request, so the clients keep the standard retry mode rather than the SDK's
    // adaptive one (a second rate controller).
    let limiter = Arc::new(RateLimiter::new(budget::share(
        spec.run.max_requests_per_second,
        spec.run.parallelism,
    )));
    let pace = crate::aws::PaceThrottled(Arc::clone(&limiter) as Arc<dyn crate::aws::Pace>);
    let client = |region: &str| {
        let conf = aws_sdk_s3::config::Builder::from(base)
            .credentials_provider(provider.clone())
            .region(aws_config::Region::new(region.to_string()))
            .timeout_config(crate::aws::s3_data_timeouts())
            .force_path_style(cfg.force_path_style)
            .interceptor(on_answer.clone())
            .interceptor(pace.clone())
            .retry_classifier(pace.clone())
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    };
    let mut copier = Copier {
        src: client(&spec.source.region),
        dst: client(&spec.destination.region),
        report: client(&spec.destination.region),
        limiter: Some(Arc::clone(&limiter)),
        part_concurrency: 8,
        etags_diverge: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        spec: Arc::clone(&spec),
    };
    let report_bucket = spec
        .copy
        .report_uri
        .as_deref()
        .and_then(|u| crate::model::validate::parse_s3_uri(u).ok())
        .map(|(bucket, _)| bucket.to_string());
    if let Some(bucket) = report_bucket
        && let Some(region) = copier.bucket_region(&bucket).await
    {
        copier.report = client(&region);
    }
    // With an inventory, its manifest is the object list: read and checked once per task
    // (one GET); no task lists the source.
    let inventory = Inventory::load(copier.src.clone(), &spec)
        .await?
        .map(Arc::new);
    if let Some(inv) = &inventory {
        tracing::info!(manifest = %inv.uri, files = inv.manifest.files.len(), "reading the object list from an S3 Inventory report");
    }
    let boundaries = match meta.boundaries {
        Some(b) => b,
        None => {
            plan_partitions(
                &store,
                &copier,
                inventory.as_deref(),
                &cfg,
                spec.run.parallelism,
            )
            .await?
        }
    };
    let ranges = plan::ranges_from(&boundaries);
    tracing::info!(job = %cfg.job, run = %cfg.run, task = %cfg.task, partitions = ranges.len(), "worker started");
    let worker = Arc::new(Worker {
        filter: Filter::new(&spec.copy),
        copies: Arc::new(Semaphore::new(cfg.copy_concurrency)),
        cfg,
        store,
        copier,
        inventory,
        ranges,
        sched: std::sync::Mutex::new(queue::Scheduler::new(MAX_READY, MAX_LISTERS)),
        wake: Notify::new(),
        live: Live {
            alive_ms,
            ..Live::default()
        },
        refreshes,
        abandon: AtomicBool::new(false),
    });
    let heartbeat = tokio::spawn(Arc::clone(&worker).heartbeat());
    let signals = tokio::spawn(Arc::clone(&worker).on_signal());
    let result = Arc::clone(&worker).schedule().await;
    heartbeat.abort();
    signals.abort();
    let stopping = worker.sched().stopping();
    let state = match (&result, stopping) {
        (Err(_), _) => "failed",
        (Ok(()), true) => "stopped",
        (Ok(()), false) => "done",
    };
    if state == "done" {
        // The run is complete: no copy of it is in flight, so any upload its workers left
        // (a killed task cannot abort its own) is abandoned.
        match worker.copier.sweep_uploads(&worker.cfg.job).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                aborted = n,
                "aborted incomplete multipart uploads the run left"
            ),
            Err(e) => tracing::warn!(error = %e, "could not sweep incomplete multipart uploads"),
        }
    }
    worker.write_progress(state).await;
    let (slowdowns, rate_cuts) = limiter.summary();
    tracing::info!(
        state,
        copied = worker.live.copied.load(Ordering::Relaxed),
        capacity = %worker.store.meter().reading().to_json(),
        slowdowns,
        rate_cuts,
        "worker finished"
    );
    result
}

/// The run's partition boundaries: planned by this task if it gets the planner lease (probes
/// of the source, see [`split`]), else awaited from the task that has it. Waiting polls the
/// run's META item, backing off to the planner's lease expiry at most.
async fn plan_partitions(
    store: &Store,
    copier: &Copier,
    inventory: Option<&Inventory>,
    cfg: &WorkerConfig,
    parallelism: u32,
) -> Result<Vec<String>, WorkerError> {
    use crate::store::runs::Planning;
    let lease_ms = u64::try_from(cfg.lease.as_millis()).unwrap_or(60_000);
    let mut pause = Duration::from_millis(100);
    loop {
        match store
            .claim_planner(&cfg.job, &cfg.run, &cfg.task, lease_ms)
            .await?
        {
            Planning::Planned(b) => return Ok(b),
            Planning::Mine if inventory.is_some() => {
                // One partition per data file of the report: no probe of the source.
                let files = inventory.map_or(1, |i| i.manifest.files.len());
                return Ok(store
                    .set_boundaries(&cfg.job, &cfg.run, &inventory::boundaries(files))
                    .await?);
            }
            Planning::Mine => {
                let whole = Range {
                    after: None,
                    upto: None,
                };
                let target = plan::partition_limit(parallelism);
                let mut keys = copier;
                let s = split::split(&mut keys, &whole, target, split::PLAN_PROBES).await?;
                tracing::info!(
                    probes = s.probes,
                    partitions = s.boundaries.len() + 1,
                    "planned the run's listing partitions"
                );
                return Ok(store
                    .set_boundaries(&cfg.job, &cfg.run, &s.boundaries)
                    .await?);
            }
            Planning::Held { until } => {
                // Read (half a unit) until the plan is there; ask for the lease (a write)
                // again only once the planner's has run out.
                loop {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    if let Some(b) = store
                        .get_run(&cfg.job, &cfg.run)
                        .await?
                        .and_then(|m| m.boundaries)
                    {
                        return Ok(b);
                    }
                    if now_ms() > until {
                        break;
                    }
                }
            }
        }
    }
}

/// One unit of claimed work.
enum Work {
    List(crate::store::runs::Partition),
    /// A chunk, with its source listing when this task's lister kept it.
    Copy(crate::store::runs::Chunk, Option<Vec<plan::Entry>>),
}

impl Worker {
    /// The scheduler, locked (a poisoned lock still holds consistent plain data).
    fn sched(
        &self,
    ) -> std::sync::MutexGuard<'_, queue::Scheduler<(Chunk, Option<Vec<plan::Entry>>)>> {
        self.sched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.cfg.lease.as_millis()).unwrap_or(60_000)
    }

    /// Claims and runs work in up to [`SLOTS`] concurrent units until the run is complete or
    /// the task is told to stop; chunks leased but not started are then given back.
    async fn schedule(self: Arc<Self>) -> Result<(), WorkerError> {
        let result = Arc::clone(&self).schedule_units().await;
        let unstarted = self.sched().drain_kept();
        for (c, _) in unstarted {
            let _ = self
                .store
                .release_chunk(
                    &self.cfg.job,
                    &self.cfg.run,
                    &c.id,
                    &self.cfg.task,
                    now_ms(),
                )
                .await;
        }
        result
    }

    async fn schedule_units(self: Arc<Self>) -> Result<(), WorkerError> {
        let mut set: JoinSet<Result<(), WorkerError>> = JoinSet::new();
        let mut first_error = None;
        loop {
            let mut claimed_any = false;
            while set.len() < SLOTS && self.sched().claiming() && first_error.is_none() {
                match self.claim().await {
                    Ok(Some(work)) => {
                        claimed_any = true;
                        let this = Arc::clone(&self);
                        set.spawn(async move { this.perform(work).await });
                    }
                    Ok(None) => break,
                    // A throttled or failed store call is retried after a pause; it never
                    // ends the task.
                    Err(e) if !e.kind().fails_again() => {
                        tracing::warn!(error = %e, "could not claim work; trying again later");
                        self.idle_for_now();
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if set.is_empty() {
                if let Some(e) = first_error {
                    return Err(e);
                }
                if self.sched().stopping() {
                    return Ok(());
                }
                // Cheap reads first: the whole run is read once per task, at the end.
                match self.store.run_complete(&self.cfg.job, &self.cfg.run).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(e) if !e.kind().fails_again() => {
                        tracing::warn!(error = %e, "could not read the run's state; trying again later");
                    }
                    Err(e) => return Err(e.into()),
                }
                // Others hold the remaining leases; take over when they expire. The idle
                // backoff spaces these reads out.
                self.idle_for_now();
                tokio::time::sleep(self.idle_left()).await;
                continue;
            }
            // While copying, look again soon: the next chunk is claimed as soon as copy slots
            // free up, so copies go on without a gap between chunks.
            let wait = if claimed_any || self.sched().copying() > 0 {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(500)
            };
            let joined = tokio::select! {
                j = set.join_next() => j,
                _ = self.wake.notified(), if set.len() < SLOTS => None,
                _ = tokio::time::sleep(wait) => None,
            };
            if let Some(joined) = joined {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        if e.kind().fails_again() {
                            // Retrying cannot help (access denied, bad request): stop the task.
                            tracing::error!(error = %e, "work unit failed permanently; stopping");
                            first_error.get_or_insert(e);
                        } else {
                            tracing::warn!(error = %e, "work unit failed; its lease is released for a retry");
                        }
                    }
                    Err(join) => tracing::error!(error = %join, "work unit panicked"),
                }
            }
        }
    }

    /// Fills a free work slot: the steps [`queue::steps`] gives for what the task knows now,
    /// tried in order until one finds work.
    async fn claim(&self) -> Result<Option<Work>, WorkerError> {
        let slot = self.sched().slot(self.copies.available_permits(), now_ms());
        for step in queue::steps(&slot) {
            let found = match step {
                queue::Step::CopyKept => {
                    let kept = self.sched().take_kept(now_ms());
                    kept.map(|(c, listing)| Work::Copy(c, listing))
                }
                queue::Step::ClaimPartition => self.claim_partition().await?,
                queue::Step::ClaimChunk => self.claim_chunk().await?,
            };
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Claims a listing partition not known to be listed or held by another task.
    async fn claim_partition(&self) -> Result<Option<Work>, WorkerError> {
        let (job, run, me, lease) = (
            &self.cfg.job,
            &self.cfg.run,
            &self.cfg.task,
            self.lease_ms(),
        );
        let now = now_ms();
        let count = self.ranges.len() as u32;
        let start = rand::random_range(0..count.max(1));
        let candidates = self.sched().partition_candidates(count, start, now);
        for i in candidates {
            match self
                .store
                .claim_partition(job, run, i, &self.ranges[i as usize], me, lease)
                .await?
            {
                Claim::Claimed(p) => {
                    let sk = crate::store::runs::partition_sk(i);
                    self.sched().listing_started(i, sk, now + lease);
                    return Ok(Some(Work::List(p)));
                }
                // A listed partition is never claimable again.
                Claim::Done => self.sched().partition_done(i),
                // Not worth another conditional write until that lease could have expired.
                Claim::Held { until } => self.sched().partition_held_until(i, until),
            }
        }
        Ok(None)
    }

    /// Claims a chunk from the claim index; idles the task when it finds none.
    async fn claim_chunk(&self) -> Result<Option<Work>, WorkerError> {
        let (job, run, me, lease) = (
            &self.cfg.job,
            &self.cfg.run,
            &self.cfg.task,
            self.lease_ms(),
        );
        // Shards of the claim index in a random rotation: tasks start at different ones. Chunks
        // are spread over every shard, so a few empty ones mean little or no work: the task
        // then idles rather than read them all.
        let first = rand::random_range(0..CLAIM_SHARDS);
        let mut empty = 0;
        for k in 0..CLAIM_SHARDS {
            if empty == EMPTY_SHARDS_BEFORE_IDLE {
                break;
            }
            let shard = (first + k) % CLAIM_SHARDS;
            let mut ids = self.store.claimable(job, run, shard, CLAIM_BATCH).await?;
            if ids.is_empty() {
                empty += 1;
            }
            // Claimers reading the same entries try them in different orders.
            let offset = rand::random_range(0..ids.len().max(1));
            ids.rotate_left(offset);
            for id in ids {
                if self.sched().holds(&id) {
                    continue;
                }
                if let Some(claimed) = self.store.claim_chunk(job, run, &id, me, lease).await? {
                    self.sched()
                        .chunk_claimed(claimed.id.clone(), claimed.lease_expiry);
                    return Ok(Some(Work::Copy(claimed, None)));
                }
            }
        }
        self.idle_for_now();
        Ok(None)
    }

    /// Found no work: the next claim waits (see [`queue::Idle`]).
    fn idle_for_now(&self) {
        self.sched().found_nothing(now_ms());
    }

    fn idle_left(&self) -> Duration {
        Duration::from_millis(self.sched().idle_left(now_ms()))
    }

    async fn perform(self: Arc<Self>, work: Work) -> Result<(), WorkerError> {
        let (sk, attempts) = match &work {
            Work::List(p) => (crate::store::runs::partition_sk(p.index), None),
            Work::Copy(c, _) => (c.id.clone(), Some(c.attempts)),
        };
        let started = std::time::Instant::now();
        self.live.alive_ms.fetch_max(now_ms(), Ordering::Relaxed);
        let result = match work {
            Work::List(p) => {
                let index = p.index;
                let r = self.list_partition(p).await;
                self.sched().listing_ended(index, &sk, r.is_ok());
                r
            }
            Work::Copy(c, listing) => {
                self.sched().copy_started();
                let r = self.copy_chunk(&c, listing).await;
                if let Err(e) = &r
                    && queue::Failure::of(e.kind()) == queue::Failure::Throttled
                    && !self.abandon.load(Ordering::Relaxed)
                {
                    // A rate signal, not the chunk's fault: this task copies it again after a
                    // pause, with its lease (see `Scheduler::copy_throttled`).
                    let ready = queue::not_before(
                        now_ms(),
                        c.attempts,
                        queue::Failure::Throttled,
                        rand::random::<f64>(),
                    );
                    tracing::warn!(chunk = %sk, error = %e, "chunk copy throttled; this task copies it again after a pause");
                    self.sched().copy_throttled(sk, ready, (c, None));
                    self.wake.notify_one();
                    return Ok(());
                }
                self.sched().copy_ended(&sk);
                r
            }
        };
        tracing::debug!(unit = %sk, ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "work unit finished");
        if result.is_err() || self.abandon.load(Ordering::Relaxed) {
            // Give the work back rather than let its lease run out: at once on shutdown, after
            // a pause when it failed (see [`queue::not_before`]).
            let (job, run, me) = (&self.cfg.job, &self.cfg.run, &self.cfg.task);
            let _ = match &attempts {
                None => self.store.release_lease(job, run, &sk, me).await,
                Some(_) if result.is_ok() => {
                    self.store.release_chunk(job, run, &sk, me, now_ms()).await
                }
                Some(n) => {
                    let failure = result
                        .as_ref()
                        .err()
                        .map_or(queue::Failure::Other, |e| queue::Failure::of(e.kind()));
                    let at = queue::not_before(now_ms(), *n, failure, rand::random::<f64>());
                    self.store.release_chunk(job, run, &sk, me, at).await
                }
            };
        }
        match result {
            Err(WorkerError::Copy(CopyError::Cancelled)) => Ok(()),
            other => other,
        }
    }

    /// Lists a partition page by page, writing one chunk per page.
    async fn list_partition(&self, part: crate::store::runs::Partition) -> Result<(), WorkerError> {
        if let Some(inv) = &self.inventory {
            return self.read_partition(inv, part).await;
        }
        let mut part = part;
        loop {
            if self.abandon.load(Ordering::Relaxed) {
                return Err(CopyError::Cancelled.into());
            }
            let from = Range {
                after: part.cursor.clone().or(part.range.after.clone()),
                upto: part.range.upto.clone(),
            };
            let (entries, more) = self
                .copier
                .list(Side::Source, &from, Some(CHUNK_KEYS))
                .await?;
            // A page ending exactly at the partition's bound is its last one too.
            let last = !more || entries.last().map(|e| &e.rel) == from.upto.as_ref();
            let upto = if last {
                from.upto.clone()
            } else {
                entries.last().map(|e| e.rel.clone())
            };
            let chunk = Range {
                after: from.after.clone(),
                upto,
            };
            part = self.write_chunk(&part, &chunk, entries, last).await?;
            if last || part.cursor == part.range.upto {
                return Ok(());
            }
        }
    }

    /// Writes a listed page as a chunk of `part` (and advances its cursor), keeping the chunk
    /// with its entries for this task when it has a slot for it soon; else leaves it to all.
    async fn write_chunk(
        &self,
        part: &crate::store::runs::Partition,
        chunk: &Range,
        entries: Vec<plan::Entry>,
        last: bool,
    ) -> Result<crate::store::runs::Partition, WorkerError> {
        let keep = self.sched().may_keep();
        let new = NewChunk {
            range: chunk,
            objects: entries.len() as u64,
            bytes: entries.iter().map(|e| e.size).sum(),
            last,
            keep,
        };
        let (next, kept) = self
            .store
            .add_chunk(
                &self.cfg.job,
                &self.cfg.run,
                part,
                new,
                &self.cfg.task,
                self.lease_ms(),
            )
            .await?;
        if let Some(c) = kept {
            self.sched()
                .kept(c.id.clone(), c.lease_expiry, (c, Some(entries)));
            self.wake.notify_one();
        }
        Ok(next)
    }

    /// Reads a partition of an inventory run (one data file) from its cursor, writing one chunk
    /// per page of rows; the listing counterpart of [`Worker::list_partition`].
    async fn read_partition(
        &self,
        inv: &Arc<Inventory>,
        mut part: crate::store::runs::Partition,
    ) -> Result<(), WorkerError> {
        let from = Range {
            after: part.cursor.clone().or(part.range.after.clone()),
            upto: part.range.upto.clone(),
        };
        let file = inventory::file_of(&part.range);
        let (first, last) = inventory::rows(file, &from);
        let mut pages = inv.read(file, first, last);
        let mut after = from.after.clone();
        while let Some(page) = pages.recv().await {
            if self.abandon.load(Ordering::Relaxed) {
                return Err(CopyError::Cancelled.into());
            }
            let page = page?;
            let upto = match page.last_row {
                Some(r) if !page.end => Some(inventory::position(file, r)),
                _ => part.range.upto.clone(),
            };
            let chunk = Range {
                after: after.clone(),
                upto: upto.clone(),
            };
            let entries = inventory::sorted(page.entries);
            part = self.write_chunk(&part, &chunk, entries, page.end).await?;
            if page.end {
                return Ok(());
            }
            after = upto;
        }
        Err(CopyError::Cancelled.into())
    }

    /// A chunk's source entries, sorted by key: its rows of the inventory, or a listing.
    async fn source_entries(&self, range: &Range) -> Result<Vec<plan::Entry>, WorkerError> {
        match &self.inventory {
            Some(inv) => {
                let file = inventory::file_of(range);
                let (first, last) = inventory::rows(file, range);
                Ok(inventory::sorted(inv.entries(file, first, last).await?))
            }
            None => Ok(self.copier.list(Side::Source, range, None).await?.0),
        }
    }

    /// The destination entries to merge with a chunk's sorted source entries: its key range,
    /// or with an inventory the span of its keys (see [`inventory::destination_span`]).
    async fn destination_entries(
        &self,
        range: &Range,
        src: &[plan::Entry],
    ) -> Result<Vec<plan::Entry>, WorkerError> {
        let range = match &self.inventory {
            None => range.clone(),
            Some(_) => match inventory::destination_span(src) {
                Some(span) => span,
                None => return Ok(Vec::new()),
            },
        };
        Ok(self.copier.list(Side::Destination, &range, None).await?.0)
    }

    /// Copies one chunk: merge-join of the source and destination listings of its range, then
    /// the actions, bounded in concurrency. The source listing is the one this task's lister
    /// read moments ago when it kept the chunk, else (a claimed chunk: the store keeps no
    /// listing, see ARCHITECTURE.md) listed again here. Either way every copy is guarded by the
    /// listed ETag.
    async fn copy_chunk(
        self: &Arc<Self>,
        chunk: &Chunk,
        listing: Option<Vec<plan::Entry>>,
    ) -> Result<(), WorkerError> {
        if self.cfg.hang {
            tracing::warn!("FERRY_TEST_HANG_TASK: hanging in this copy unit");
            std::future::pending::<()>().await;
        }
        let (id, range) = (chunk.id.as_str(), &chunk.range);
        let (src, dst) = match listing {
            Some(src) => {
                let dst = self.destination_entries(range, &src).await?;
                (src, dst)
            }
            // The destination span of an inventory chunk depends on its rows.
            None if self.inventory.is_some() => {
                let src = self.source_entries(range).await?;
                let dst = self.destination_entries(range, &src).await?;
                (src, dst)
            }
            None => tokio::try_join!(
                self.source_entries(range),
                self.destination_entries(range, &[])
            )?,
        };
        let actions = plan::merge(&src, &dst, &self.copier.spec.copy, &self.filter);
        let mut counts = ChunkCounts::default();
        let mut failures: Vec<ObjectFailure> = Vec::new();
        let mut to_delete = Vec::new();
        let mut set: JoinSet<Result<(plan::Entry, Option<Copied>), CopyError>> = JoinSet::new();
        for action in actions {
            match action {
                Action::Skip { src } => {
                    counts.skipped += 1;
                    counts.skipped_bytes += src.size;
                }
                Action::Delete { dst } => to_delete.push(dst.rel),
                Action::Copy { src, .. } => self.spawn_copy(&mut set, src, false).await?,
                Action::Verify { src, .. } => self.spawn_copy(&mut set, src, true).await?,
            }
            while let Some(done) = set.try_join_next() {
                self.account(done, &mut counts, &mut failures)?;
            }
        }
        while let Some(done) = set.join_next().await {
            self.account(done, &mut counts, &mut failures)?;
        }
        if !to_delete.is_empty() {
            let (deleted, failed) = self.copier.delete(&to_delete).await?;
            counts.deleted += deleted;
            failures.extend(failed);
        }
        if !failures.is_empty() {
            self.record_failures(id, &failures).await?;
        }
        let ours = self
            .store
            .complete_chunk(&self.cfg.job, &self.cfg.run, id, &self.cfg.task, &counts)
            .await?;
        if !ours {
            tracing::warn!(
                chunk = id,
                "lease lost before completion; the chunk's new owner records it"
            );
        }
        Ok(())
    }

    /// Starts one object's copy once a copy slot is free. With `verify`, the destination's
    /// recorded source ETag is checked first and a match is a skip.
    async fn spawn_copy(
        self: &Arc<Self>,
        set: &mut JoinSet<Result<(plan::Entry, Option<Copied>), CopyError>>,
        src: plan::Entry,
        verify: bool,
    ) -> Result<(), WorkerError> {
        if self.abandon.load(Ordering::Relaxed) {
            return Err(CopyError::Cancelled.into());
        }
        let permit = Arc::clone(&self.copies)
            .acquire_owned()
            .await
            .map_err(|_| CopyError::Cancelled)?;
        let this = Arc::clone(self);
        set.spawn(async move {
            let _permit = permit;
            if verify {
                match this.copier.verify(&src).await? {
                    Ok(true) => return Ok((src, None)),
                    Ok(false) => {}
                    Err(refused) => return Ok((src, Some(Copied::Failed(refused)))),
                }
            }
            let (src, copied) = this.copier.copy_listed(src, &this.abandon).await?;
            Ok((src, Some(copied)))
        });
        Ok(())
    }

    fn account(
        &self,
        done: Result<Result<(plan::Entry, Option<Copied>), CopyError>, tokio::task::JoinError>,
        counts: &mut ChunkCounts,
        failures: &mut Vec<ObjectFailure>,
    ) -> Result<(), WorkerError> {
        let (src, copied) = match done {
            Ok(r) => r?,
            Err(e) => return Err(WorkerError::Config(format!("copy task failed: {e}"))),
        };
        match copied {
            None => {
                counts.skipped += 1;
                counts.skipped_bytes += src.size;
            }
            Some(Copied::Done { bytes } | Copied::Diverged { bytes }) => {
                counts.copied += 1;
                counts.copied_bytes += bytes;
                self.live.copied.fetch_add(1, Ordering::Relaxed);
                self.live.copied_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Some(Copied::DoneWithNote { bytes, note }) => {
                counts.copied += 1;
                counts.copied_bytes += bytes;
                self.live.copied.fetch_add(1, Ordering::Relaxed);
                self.live.copied_bytes.fetch_add(bytes, Ordering::Relaxed);
                failures.push(note);
            }
            Some(Copied::Failed(f)) => {
                counts.failed += 1;
                failures.push(f);
            }
        }
        Ok(())
    }

    /// Reports a chunk's per-object failures: the report object first (every failure), then the
    /// first `MAX_STORED_FAILURES` of the run as store records for `ferry describe`. A record
    /// that cannot be written is logged and skipped: it never fails the chunk.
    async fn record_failures(
        &self,
        chunk: &str,
        failures: &[ObjectFailure],
    ) -> Result<(), WorkerError> {
        self.copier
            .write_report(&self.cfg.job, &self.cfg.run, chunk, failures)
            .await?;
        for f in failures {
            tracing::warn!(key = %shown_key(&f.key), code = %f.code, reason = %f.reason, "object not copied");
            if self.live.stored_failures.fetch_add(1, Ordering::Relaxed)
                < MAX_STORED_FAILURES as u64
            {
                let reason = format!("{}: {}", f.code, f.reason);
                if let Err(e) = self
                    .store
                    .put_failure(&self.cfg.job, &self.cfg.run, &f.key, &reason)
                    .await
                {
                    tracing::warn!(key = %shown_key(&f.key), error = %e, "could not record the failure in the store");
                }
            }
        }
        Ok(())
    }

    /// Renews held leases and writes this task's progress, a few times per lease period.
    async fn heartbeat(self: Arc<Self>) {
        let period = (self.cfg.lease / 3).clamp(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            tokio::time::sleep(period).await;
            let at = now_ms();
            let due = self.sched().due(at, self.lease_ms());
            for sk in due {
                match self
                    .store
                    .renew_lease(
                        &self.cfg.job,
                        &self.cfg.run,
                        &sk,
                        &self.cfg.task,
                        self.lease_ms(),
                    )
                    .await
                {
                    Ok(true) => self.sched().renewed(&sk, at + self.lease_ms()),
                    // A unit that finished between the snapshot and the renewal is not a loss.
                    Ok(false) if !self.sched().holds(&sk) => {}
                    Ok(false) => tracing::warn!(lease = %sk, "lease lost to another task"),
                    Err(e) => tracing::warn!(lease = %sk, error = %e, "could not renew lease"),
                }
            }
            self.write_progress("running").await;
            self.watchdog().await;
        }
    }

    /// Ends a hung task: while it holds work, S3 answering none of its requests (and no unit
    /// starting) for `FERRY_WATCHDOG_SECONDS` means a unit is stuck where no timeout reaches
    /// (the heartbeat alone would keep renewing its leases forever). Its leases are released
    /// for the other tasks, its state is written as failed, and the process exits
    /// [`WATCHDOG_EXIT`]; the operator counts the task as failed and replaces it.
    async fn watchdog(&self) {
        let held: Vec<String> = self.sched().leases();
        let quiet = now_ms().saturating_sub(self.live.alive_ms.load(Ordering::Relaxed));
        if held.is_empty() || u128::from(quiet) < self.cfg.watchdog.as_millis() {
            return;
        }
        tracing::error!(
            quiet_s = quiet / 1000,
            units = held.len(),
            "watchdog: no progress while holding work; releasing it and exiting"
        );
        let (job, run, me) = (&self.cfg.job, &self.cfg.run, &self.cfg.task);
        for sk in held {
            let _ = if crate::store::runs::is_chunk(&sk) {
                self.store.release_chunk(job, run, &sk, me, now_ms()).await
            } else {
                self.store.release_lease(job, run, &sk, me).await
            };
        }
        self.write_progress("failed").await;
        std::process::exit(WATCHDOG_EXIT);
    }

    async fn write_progress(&self, state: &str) {
        let t = TaskProgress {
            task: self.cfg.task.clone(),
            heartbeat_ms: now_ms(),
            state: state.to_string(),
            copied: self.live.copied.load(Ordering::Relaxed),
            copied_bytes: self.live.copied_bytes.load(Ordering::Relaxed),
            credential_refreshes: self.refreshes.load(Ordering::Relaxed),
        };
        if let Err(e) = self.store.put_task(&self.cfg.job, &self.cfg.run, &t).await {
            tracing::warn!(error = %e, "could not write progress");
        }
    }

    /// SIGTERM/SIGINT: stop claiming; after the grace period abandon and release what is left.
    async fn on_signal(self: Arc<Self>) {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!(
            grace_s = self.cfg.grace.as_secs(),
            "stop requested: finishing in-flight work"
        );
        self.sched().stop();
        tokio::time::sleep(self.cfg.grace).await;
        tracing::warn!("grace period over: releasing unfinished work");
        self.abandon.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_control_characters_are_escaped_for_logs() {
        for (key, shown) in [
            ("plain/key.txt", "plain/key.txt"),
            ("a\nfake log line", "a\\u{a}fake log line"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("tab\there", "tab\\u{9}here"),
            ("ünïcødé/ok", "ünïcødé/ok"),
        ] {
            assert_eq!(shown_key(key), shown, "{key:?}");
        }
    }
}
