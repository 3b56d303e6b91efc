//! `ferry operator`: the reconciler of CopyJobs. `reconcile(job, ctx)` observes what exists
//! (`observe`), plans with a pure function (`plan`, built on `desired`, `policy`, `restart`) and
//! carries the plan out with idempotent steps (`apply`); `error_policy` decides what a failure
//! means. Around it: the work queue with per-job backoff (`queue`), stream events (`watch`),
//! periodic resyncs, the leader lease, and the HTTP endpoints (`/metrics`, `/healthz`,
//! `/readyz`).

pub mod admission;
pub mod apply;
pub mod desired;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod queue;
pub mod restart;
pub mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use tokio::sync::{Mutex, Notify, Semaphore};
use tracing::Instrument;

use self::desired::Settings;
use self::plan::{Problem, TaskState};
use self::queue::{Backoff, Outcome, Queue};
use crate::aws::assumed::AssumedRoles;
use crate::aws::{ErrorKind, describe, error_code, kind};
use crate::metrics::Metrics;
use crate::model::{CopyJobStatus, Phase};
use crate::store::{Store, StoreError, StoredJob};

/// Errors of the controller layer.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{service} {op} failed: {message}")]
    Aws {
        service: &'static str,
        op: &'static str,
        code: String,
        message: String,
        kind: ErrorKind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The job cannot progress until something changes (recorded as a condition).
    #[error("{}: {}", .0.reason, .0.message)]
    Blocked(Problem),
    #[error("cannot build a request: {0}")]
    Invalid(String),
}

impl ReconcileError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::Store(e) => e.kind(),
            ReconcileError::Aws { kind, .. } => *kind,
            ReconcileError::Blocked(p) if p.terminal => ErrorKind::Invalid,
            ReconcileError::Blocked(_) => ErrorKind::Retryable,
            ReconcileError::Invalid(_) => ErrorKind::Invalid,
        }
    }

    /// The label of `ferry_reconcile_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            ReconcileError::Store(StoreError::Conflict { .. }) => "conflict",
            ReconcileError::Store(_) => "store",
            ReconcileError::Aws { kind, .. } => match kind {
                ErrorKind::Throttled => "throttled",
                ErrorKind::Retryable => "aws_retryable",
                ErrorKind::Conflict => "conflict",
                ErrorKind::NotFound => "aws_not_found",
                ErrorKind::AlreadyExists => "aws_already_exists",
                ErrorKind::AccessDenied => "aws_access_denied",
                ErrorKind::Credentials => "aws_credentials",
                ErrorKind::Redirect => "aws_redirect",
                ErrorKind::Invalid => "aws_invalid",
            },
            ReconcileError::Blocked(_) => "blocked",
            ReconcileError::Invalid(_) => "invalid",
        }
    }
}

/// Wraps an SDK error with its service, operation and class.
pub fn aws_error<E>(
    service: &'static str,
    op: &'static str,
    e: SdkError<E, HttpResponse>,
) -> ReconcileError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    ReconcileError::Aws {
        service,
        op,
        code: error_code(&e),
        message: describe(&e),
        kind: kind(&e),
        source: Box::new(e),
    }
}

/// What reconcile asks for next, as in kube-runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action(pub Option<Duration>);

impl Action {
    pub fn requeue(after: Duration) -> Action {
        Action(Some(after))
    }
    pub fn await_change() -> Action {
        Action(None)
    }
}

/// Timing settings of the operator.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Full resync of every job.
    pub resync: Duration,
    /// How often the slow-changing resources of a job at rest are compared with the desired
    /// state.
    pub drift: Duration,
    /// How often an active run's tasks are checked besides stream events.
    pub task_poll: Duration,
    pub lease: Duration,
    /// Reconciles at once.
    pub concurrency: usize,
    pub stream_poll: Duration,
}

/// What every reconcile shares.
pub struct Context {
    pub store: Store,
    pub settings: Settings,
    /// What the operator may act on (its deployer's allow-lists).
    pub policy: admission::OperatorPolicy,
    pub ecs: aws_sdk_ecs::Client,
    pub iam: aws_sdk_iam::Client,
    pub roles: AssumedRoles,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    /// Counts every AWS request for `ferry_aws_requests_total`.
    counter: crate::aws::CountRequests,
    /// When each job's slow-changing resources were last compared.
    infra_checked: std::sync::Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Context {
    pub fn new(
        base: &SdkConfig,
        table: &str,
        settings: Settings,
        policy: admission::OperatorPolicy,
        timing: Timing,
        force_path_style: bool,
    ) -> Result<Context, prometheus::Error> {
        let metrics = Arc::new(Metrics::new()?);
        let m = Arc::clone(&metrics);
        let counter =
            crate::aws::CountRequests(Arc::new(move |service: &str, op: &str, outcome: &str| {
                m.aws_request(service, op, outcome)
            }));
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(base)
                .interceptor(counter.clone())
                .build(),
        );
        Ok(Context {
            store: Store::new(dynamodb, table),
            ecs: aws_sdk_ecs::Client::from_conf(
                aws_sdk_ecs::config::Builder::from(base)
                    .interceptor(counter.clone())
                    .build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(base)
                    .interceptor(counter.clone())
                    .build(),
            ),
            roles: AssumedRoles::new(base.clone(), "ferry-operator", force_path_style)
                .with_interceptor(counter.clone()),
            counter,
            metrics,
            settings,
            policy,
            timing,
            infra_checked: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn drift_due(&self, job: &str) -> bool {
        let map = self.infra_checked.lock().unwrap_or_else(|e| e.into_inner());
        map.get(job)
            .is_none_or(|t| t.elapsed() >= self.timing.drift)
    }

    fn mark_checked(&self, job: &str) {
        let mut map = self.infra_checked.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(job.to_string(), Instant::now());
    }
}

/// Whether a resync should reconcile a job, from its listed record alone: anything in motion,
/// anything not ready, a drift check or a schedule tick that is due. A finished job at rest costs
/// nothing between drift checks. Pure.
pub fn needs_attention(stored: &StoredJob, drift_due: bool, now_ms: u64) -> bool {
    if stored.deletion_requested_at.is_some() || drift_due {
        return true;
    }
    let Some(s) = stored.job.status.as_ref() else {
        return true;
    };
    if s.observed_generation != stored.generation || !plan::infra_ready(Some(s), stored.generation)
    {
        return true;
    }
    if stored.job.spec.run.suspend {
        return s.phase != Phase::Suspended;
    }
    // Blocked waits for a spec change (a stream event) or a drift check (the policy may have
    // changed with a restart).
    if s.phase == Phase::Blocked {
        return false;
    }
    match &s.run {
        None => true,
        Some(r) if r.finished_at.is_none() => true,
        Some(_) => s
            .next_run_time
            .as_deref()
            .is_some_and(|t| plan::epoch_ms(t) <= now_ms),
    }
}

/// Reconciles one job: observe, plan, apply, write status.
pub async fn reconcile(name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
    let Some(stored) = ctx.store.get_job(name).await? else {
        ctx.metrics.forget_job(name);
        return Ok(Action::await_change());
    };
    tracing::Span::current().record("generation", stored.generation);
    if stored.deletion_requested_at.is_some() {
        return finalize(ctx, &stored).await;
    }
    let status = stored.job.status.as_ref();
    // The stored spec is validated and judged against the operator's policy on every read:
    // whoever can write the table is a job author, not the operator's deployer.
    let violations = admission::admit(&stored.job, &ctx.policy, &ctx.settings);
    if !violations.is_empty() {
        ctx.mark_checked(name);
        return reconcile_blocked(ctx, &stored, &violations).await;
    }
    let check = ctx.drift_due(name) || !plan::infra_ready(status, stored.generation);
    let obs = observe::observe(ctx, &stored, check).await?;
    if check {
        ctx.mark_checked(name);
    }
    let start = plan::admitted(status, obs.now_ms);
    let mut p = plan::plan(&stored.job, start.as_ref(), &obs, &ctx.settings);
    for kind in &p.corrections {
        tracing::warn!(job = %name, kind, "drift: putting the resource back");
        ctx.metrics.corrected(kind);
    }
    // A statement is recorded in the status before it is written, so the finalizer knows every
    // statement ferry may have put anywhere, whatever happens between the two writes.
    let mut status_version = stored.status_version;
    let known = |g: &crate::model::SourceGrant| status.is_some_and(|s| s.source_policy.contains(g));
    if !p.status.source_policy.iter().all(known) {
        let mut intent = status.cloned().unwrap_or_default();
        for g in &p.status.source_policy {
            if !intent.source_policy.contains(g) {
                intent.source_policy.push(g.clone());
            }
        }
        status_version = ctx.store.put_status(name, &intent, status_version).await?;
    }
    let applied = apply::apply(ctx, &stored, &p.steps, &mut p.status).await;
    // Statements in buckets the job no longer reads go whatever became of the steps: a grant
    // nobody needs is not kept because, say, a task cannot start.
    let cleaned = apply::apply(ctx, &stored, &p.cleanup, &mut p.status).await;
    let applied = match (applied, cleaned) {
        (Err(f), Err(c)) => {
            tracing::warn!(job = %name, error = %c.error, "cannot remove an old source statement");
            Err(f)
        }
        (a, c) => a.and(c),
    };
    if let Err(f) = &applied {
        plan::set_condition(
            &mut p.status.conditions,
            f.condition,
            false,
            &f.problem.reason,
            &f.problem.message,
            &plan::rfc3339(obs.now_ms),
        );
        if f.problem.terminal {
            p.status.phase = Phase::Failed;
        }
    }
    if status != Some(&p.status) {
        ctx.store
            .put_status(name, &p.status, status_version)
            .await?;
        if status.map(|s| s.phase) != Some(p.status.phase) {
            tracing::info!(job = %name, phase = p.status.phase.as_str(), "phase changed");
        }
    }
    let running = running_tasks(&p.status, &obs.tasks);
    ctx.metrics.observe_job(name, &p.status, running);
    applied.map_err(|f| f.error)?;
    if let Some(problem) = p.blocked {
        if !problem.terminal {
            return Err(ReconcileError::Blocked(problem));
        }
    }
    let active = p
        .status
        .run
        .as_ref()
        .is_some_and(|r| r.finished_at.is_none());
    Ok(Action(match (p.requeue, active) {
        (Some(d), true) => Some(d.min(ctx.timing.task_poll)),
        (Some(d), false) => Some(d),
        (None, true) => Some(ctx.timing.task_poll),
        (None, false) => None,
    }))
}

/// A job the operator may not act on: Blocked, with nothing observed and nothing written but
/// its status (and StopTask for tasks an earlier, admitted generation started).
async fn reconcile_blocked(
    ctx: &Context,
    stored: &StoredJob,
    violations: &[admission::Violation],
) -> Result<Action, ReconcileError> {
    let name = stored.name();
    let status = stored.job.status.as_ref();
    let now = crate::store::runs::now_ms();
    let mut p = plan::blocked(status, violations, now, stored.generation);
    let applied = apply::apply(ctx, stored, &p.steps, &mut p.status).await;
    if status != Some(&p.status) {
        ctx.store
            .put_status(name, &p.status, stored.status_version)
            .await?;
        tracing::warn!(job = %name, violations = %p.blocked.as_ref().map(|b| b.message.as_str()).unwrap_or_default(), "job blocked: outside the operator's policy or invalid");
    }
    ctx.metrics.observe_job(name, &p.status, 0);
    applied.map_err(|f| f.error)?;
    Ok(Action::await_change())
}

fn running_tasks(status: &CopyJobStatus, tasks: &HashMap<String, TaskState>) -> usize {
    // A finished run's tasks are on their way out.
    status
        .run
        .as_ref()
        .filter(|r| r.finished_at.is_none())
        .map_or(0, |r| {
            r.tasks
                .iter()
                .filter_map(|t| t.arn.as_ref())
                .filter(|a| matches!(tasks.get(*a), Some(TaskState::Running)))
                .count()
        })
}

/// The condition a deletion that cannot finish records.
pub const FINALIZED: &str = "Finalized";

/// The finalizer: phase Deleting, then cleanup, then the records go.
async fn finalize(ctx: &Context, stored: &StoredJob) -> Result<Action, ReconcileError> {
    let name = stored.name();
    let mut status = stored.job.status.clone().unwrap_or_default();
    if status.phase != Phase::Deleting {
        status.phase = Phase::Deleting;
        ctx.store
            .put_status(name, &status, stored.status_version)
            .await?;
        ctx.metrics.observe_job(name, &status, 0);
    }
    if let Err(e) = apply::cleanup(ctx, stored).await {
        // Recorded where `describe` shows it: the job (and what ferry still has to remove) stays
        // until the cleanup can finish.
        let (reason, message) = match &e {
            ReconcileError::Blocked(p) => (p.reason.clone(), p.message.clone()),
            ReconcileError::Aws { code, .. } => (code.clone(), e.to_string()),
            _ => ("CleanupFailed".to_string(), e.to_string()),
        };
        if let Some(fresh) = ctx.store.get_job(name).await? {
            let mut st = fresh.job.status.clone().unwrap_or_default();
            let before = st.clone();
            let now = plan::rfc3339(crate::store::runs::now_ms());
            plan::set_condition(
                &mut st.conditions,
                FINALIZED,
                false,
                &reason,
                &message,
                &now,
            );
            if st != before {
                ctx.store
                    .put_status(name, &st, fresh.status_version)
                    .await?;
            }
        }
        return Err(e);
    }
    ctx.metrics.forget_job(name);
    Ok(Action::await_change())
}

/// Decides what a failed reconcile means: logged and counted; the queue backs the job off
/// (exponential, jittered, reset on success) unless the error is terminal, in which case the
/// job waits for a change to its spec (or the next drift check).
pub fn error_policy(name: &str, err: &ReconcileError, _ctx: &Context) -> Outcome {
    match err.kind().fails_again() {
        true => {
            tracing::error!(job = %name, error = %err, "reconcile failed; waiting for a change");
            Outcome::Requeue(None)
        }
        _ => {
            tracing::warn!(job = %name, error = %err, "reconcile failed; backing off");
            Outcome::Failed
        }
    }
}

/// State shared by the operator's tasks.
struct Shared {
    queue: Mutex<Queue>,
    notify: Notify,
    leading: AtomicBool,
    store_ok: AtomicBool,
}

impl Shared {
    async fn trigger(&self, job: &str, after: Duration) {
        self.queue.lock().await.trigger(job, Instant::now() + after);
        self.notify.notify_one();
    }
}

/// Runs the operator until SIGTERM/SIGINT: serves HTTP, campaigns for the lease, and while it
/// leads, watches the stream, resyncs and reconciles.
pub async fn run_operator(
    ctx: Arc<Context>,
    listen: SocketAddr,
    holder: String,
) -> Result<(), std::io::Error> {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::new(Backoff::default())),
        notify: Notify::new(),
        leading: AtomicBool::new(false),
        store_ok: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let http = tokio::spawn(serve(listener, Arc::clone(&ctx), Arc::clone(&shared)));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = campaign(Arc::clone(&ctx), Arc::clone(&shared), holder.clone()) => {}
    }
    if shared.leading.load(Ordering::Relaxed) {
        if let Err(e) = ctx.store.release_leader_lease(&holder).await {
            tracing::warn!(error = %e, "could not release the leader lease; it expires by itself");
        }
    }
    http.abort();
    tracing::info!("operator stopped");
    Ok(())
}

/// Waits for the lease, leads while it holds it, and starts over when it loses it.
async fn campaign(ctx: Arc<Context>, shared: Arc<Shared>, holder: String) {
    let ttl = ctx.timing.lease;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(15_000);
    let renew = ttl / 3;
    loop {
        match ctx.store.acquire_leader_lease(&holder, ttl_ms).await {
            Ok(true) => {
                shared.store_ok.store(true, Ordering::Relaxed);
                tracing::info!(holder = %holder, "acquired the leader lease; reconciling");
                shared.leading.store(true, Ordering::Relaxed);
                ctx.metrics.set_leader(true);
                lead(Arc::clone(&ctx), Arc::clone(&shared), &holder).await;
                shared.leading.store(false, Ordering::Relaxed);
                ctx.metrics.set_leader(false);
                tracing::warn!(holder = %holder, "lost the leader lease; stopped reconciling");
            }
            Ok(false) => shared.store_ok.store(true, Ordering::Relaxed),
            Err(e) => {
                shared.store_ok.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot reach the store to campaign for the lease");
            }
        }
        tokio::time::sleep(renew).await;
    }
}

/// Leads until the lease cannot be renewed: runs the watch, the resync and the dispatcher.
async fn lead(ctx: Arc<Context>, shared: Arc<Shared>, holder: &str) {
    let ttl = ctx.timing.lease;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(15_000);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch_stream(Arc::clone(&ctx), Arc::clone(&shared)));
    tasks.spawn(resync(Arc::clone(&ctx), Arc::clone(&shared)));
    tasks.spawn(dispatch(Arc::clone(&ctx), Arc::clone(&shared)));
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match ctx.store.acquire_leader_lease(holder, ttl_ms).await {
            Ok(true) => {
                shared.store_ok.store(true, Ordering::Relaxed);
                renewed = Instant::now();
            }
            Ok(false) => break,
            Err(e) => {
                shared.store_ok.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot renew the leader lease");
                // Stop before the lease can expire under us.
                if renewed.elapsed() >= ttl * 2 / 3 {
                    break;
                }
            }
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    // A new term starts from a clean queue; the next leader resyncs everything.
    *shared.queue.lock().await = Queue::new(Backoff::default());
}

async fn watch_stream(ctx: Arc<Context>, shared: Arc<Shared>) {
    let arn = match ctx.store.stream_arn().await {
        Ok(Some(arn)) => arn,
        Ok(None) => {
            tracing::warn!(
                "the table has no stream; changes are seen on resyncs only (run `ferry init`)"
            );
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot find the table's stream; relying on resyncs");
            return;
        }
    };
    let conf = aws_sdk_dynamodbstreams::config::Builder::from(&ctx.roles_base())
        .interceptor(ctx.counter.clone())
        .build();
    let client = aws_sdk_dynamodbstreams::Client::from_conf(conf);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let poll = ctx.timing.stream_poll;
    tokio::spawn(watch::follow(client, arn, tx, poll));
    while let Some(watch::Event::Job(job, after)) = rx.recv().await {
        shared.trigger(&job, after).await;
    }
}

async fn resync(ctx: Arc<Context>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(ctx.timing.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match ctx.store.list_jobs().await {
            Ok(jobs) => {
                let now = crate::store::runs::now_ms();
                let mut triggered = 0;
                for job in &jobs {
                    if let Some(s) = &job.job.status {
                        ctx.metrics.observe_job(job.name(), s, running_of(s));
                    }
                    if needs_attention(job, ctx.drift_due(job.name()), now) {
                        shared.queue.lock().await.resync(job.name(), Instant::now());
                        shared.notify.notify_one();
                        triggered += 1;
                    }
                }
                tracing::debug!(jobs = jobs.len(), triggered, "resync");
            }
            Err(e) => tracing::warn!(error = %e, "resync: cannot list jobs"),
        }
    }
}

fn running_of(s: &CopyJobStatus) -> usize {
    s.run
        .as_ref()
        .filter(|r| r.finished_at.is_none())
        .map_or(0, |r| r.tasks.iter().filter(|t| t.arn.is_some()).count())
}

/// Hands due jobs to at most `concurrency` reconciles at once; never the same job twice.
async fn dispatch(ctx: Arc<Context>, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(ctx.timing.concurrency.max(1)));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (job, next) = {
            let mut q = shared.queue.lock().await;
            let job = q.pop(Instant::now());
            (job, q.next_due())
        };
        let Some(job) = job else {
            drop(permit);
            let wait = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                _ = shared.notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let started = Instant::now();
            let span = tracing::info_span!(
                "reconcile",
                job = %job,
                generation = tracing::field::Empty
            );
            let result = reconcile(&job, &ctx).instrument(span).await;
            let outcome = match &result {
                Ok(Action(after)) => Outcome::Requeue(*after),
                Err(e) => error_policy(&job, e, &ctx),
            };
            ctx.metrics.reconciled(
                started.elapsed().as_secs_f64(),
                result.as_ref().err().map(ReconcileError::label),
            );
            let jitter = rand::random::<f64>();
            shared
                .queue
                .lock()
                .await
                .finish(&job, outcome, Instant::now(), jitter);
            shared.notify.notify_one();
            drop(permit);
        });
    }
}

impl Context {
    fn roles_base(&self) -> SdkConfig {
        self.roles.base().clone()
    }
}

/// `/metrics`, `/healthz` (the process is up) and `/readyz` (the store answers and this replica
/// leads or campaigns).
async fn serve(listener: tokio::net::TcpListener, ctx: Arc<Context>, shared: Arc<Shared>) {
    use axum::http::StatusCode;
    use axum::routing::get;
    let metrics = Arc::clone(&ctx.metrics);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = Arc::clone(&metrics);
                async move { ([("content-type", "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let shared = Arc::clone(&shared);
                async move {
                    if shared.store_ok.load(Ordering::Relaxed) {
                        let role = if shared.leading.load(Ordering::Relaxed) {
                            "leader"
                        } else {
                            "standby"
                        };
                        (StatusCode::OK, format!("ready ({role})\n"))
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: the store is unreachable\n".to_string(),
                        )
                    }
                }
            }),
        );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}
