//! `ferry operator`: the reconciler of CopyJobs, split the way kube-runtime splits a controller.
//!
//! - `reconcile.rs`: `reconcile(job, ctx)` observes what exists (`observe`), plans with a pure
//!   function (`plan`, built on `desired`, `policy`, `restart`, `admission`) and carries the plan
//!   out with idempotent steps (`apply`); `error_policy` decides what a failure means.
//! - `finalizer.rs`: deletion, through the same entry point.
//! - `runtime.rs`: the leader campaign (`leader`), the work queue with per-job backoff
//!   (`queue`), stream events (`watch`) and periodic resyncs.
//! - `http.rs`: `/metrics`, `/healthz`, `/readyz`.
//!
//! This file holds what they share: the error type, `Action`, `Timing` and `Context`.

pub mod admission;
pub mod apply;
pub mod deletion;
pub mod desired;
mod finalizer;
pub mod history;
mod http;
pub mod leader;
pub mod observe;
pub mod plan;
pub mod policy;
pub mod queue;
mod reconcile;
pub mod restart;
mod runtime;
pub mod watch;

pub use finalizer::FINALIZED;
pub use reconcile::{error_policy, needs_attention, reconcile};
pub use runtime::run_operator;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::desired::Settings;
use self::plan::Problem;
use crate::aws::assumed::AssumedRoles;
use crate::aws::{ErrorKind, describe, error_code, kind};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

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
    /// This replica's leader lease is not valid on its own clock: it changes nothing more.
    #[error("not leading: the leader lease is lost or about to expire")]
    LeaseLost,
}

impl ReconcileError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ReconcileError::Store(e) => e.kind(),
            ReconcileError::Aws { kind, .. } => *kind,
            ReconcileError::Blocked(p) if p.terminal => ErrorKind::Invalid,
            ReconcileError::Blocked(_) => ErrorKind::Retryable,
            ReconcileError::Invalid(_) => ErrorKind::Invalid,
            ReconcileError::LeaseLost => ErrorKind::Retryable,
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
            ReconcileError::LeaseLost => "lease_lost",
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
    /// The table, through a client whose writes the fence guards.
    pub store: Store,
    /// The table for the leader lease alone: renewing the lease is the one write a replica
    /// makes without holding it.
    lease_store: Store,
    /// Whether this replica may change anything now (see `leader`).
    pub fence: Arc<leader::Fence>,
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
        let fence = Arc::new(leader::Fence::default());
        let f = Arc::clone(&fence);
        let fenced = crate::aws::FenceRequests(Arc::new(move || f.valid()));
        let dynamodb = |fence: Option<&crate::aws::FenceRequests>| {
            let mut b = aws_sdk_dynamodb::config::Builder::from(base).interceptor(counter.clone());
            if let Some(f) = fence {
                b = b.interceptor(f.clone());
            }
            aws_sdk_dynamodb::Client::from_conf(b.build())
        };
        Ok(Context {
            store: Store::new(dynamodb(Some(&fenced)), table),
            lease_store: Store::new(dynamodb(None), table),
            ecs: aws_sdk_ecs::Client::from_conf(
                aws_sdk_ecs::config::Builder::from(base)
                    .interceptor(counter.clone())
                    .interceptor(fenced.clone())
                    .build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(base)
                    .interceptor(counter.clone())
                    .interceptor(fenced.clone())
                    .build(),
            ),
            roles: AssumedRoles::new(base.clone(), "ferry-operator", force_path_style)
                .with_interceptor(counter.clone())
                .with_interceptor(fenced),
            fence,
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
