//! Thin adapters over the AWS SDK: building clients from flags and the environment, reading an
//! SDK error into its kind (`error.rs`), counting requests. No business decisions here.
//!
//! Retries live in exactly one layer: the SDK's standard retry strategy (bounded attempts,
//! exponential backoff with full jitter, retrying throttling, 5xx and transport errors only),
//! configured here once for every client. Callers never wrap SDK calls in a retry loop of their
//! own; optimistic-concurrency re-reads after a failed condition are not retries of one call.

pub mod assumed;
pub mod error;

pub use error::{ErrorKind, describe, error_code, kind};

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// Where and how to reach AWS (flags of every command that talks to AWS).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AwsOptions {
    /// AWS region of ferry's table and the operator's clients [default: AWS_REGION,
    /// AWS_DEFAULT_REGION, or the AWS profile's `region`; none of them is an error]
    #[arg(long, env = "FERRY_REGION", global = true)]
    pub region: Option<String>,
    /// Send every AWS request to this endpoint (an emulator). `AWS_ENDPOINT_URL` and
    /// per-service `AWS_ENDPOINT_URL_<SERVICE>` are honored as well.
    #[arg(long, env = "FERRY_ENDPOINT_URL", global = true)]
    pub endpoint_url: Option<String>,
    /// Maximum attempts per AWS request (retries throttling, 5xx and transport errors only).
    #[arg(long, env = "FERRY_MAX_ATTEMPTS", default_value_t = 5, global = true)]
    pub max_attempts: u32,
    /// Seconds one attempt of an AWS request may take before it is abandoned (and retried);
    /// the worker's S3 copies get 30 minutes whatever this says
    #[arg(
        long,
        env = "FERRY_ATTEMPT_TIMEOUT_SECONDS",
        default_value_t = 60,
        global = true
    )]
    pub attempt_timeout_seconds: u64,
}

/// Timeouts of every client: a connection that does not open in 10 s, an attempt that has no
/// answer in `attempt` (60 s by default) and an operation (its retries included) that takes 5
/// times that are errors, so a call never hangs a reconcile or a worker. The SDK sets none by
/// default.
pub fn timeouts(attempt: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10).min(attempt))
        .operation_attempt_timeout(attempt)
        .operation_timeout(attempt.saturating_mul(5))
        .build()
}

/// Timeouts of the worker's S3 clients: one CopyObject or UploadPartCopy copies up to 5 GiB
/// server-side, which S3 may take minutes to answer, so an attempt has 30 min.
pub fn s3_data_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .operation_attempt_timeout(Duration::from_secs(1800))
        .operation_timeout(Duration::from_secs(7200))
        .build()
}

/// The error when no region is set anywhere ferry looks.
pub const NO_REGION: &str = "no AWS region is set: pass --region (or set FERRY_REGION), set AWS_REGION, or set `region` in your AWS profile (~/.aws/config; AWS_PROFILE names the profile)";

/// The region from --region/FERRY_REGION, then AWS_REGION/AWS_DEFAULT_REGION, then the AWS
/// profile. Never IMDS (whose warnings a laptop would print three times) and never a silent
/// default: `None` when none is set. On ECS, AWS_REGION is set in every container.
pub async fn resolve_region(opts: &AwsOptions) -> Option<aws_config::Region> {
    use aws_config::meta::region::ProvideRegion;
    if let Some(r) = opts.region.as_ref().filter(|r| !r.is_empty()) {
        return Some(aws_config::Region::new(r.clone()));
    }
    let env = aws_config::environment::region::EnvironmentVariableRegionProvider::new();
    if let Some(r) = env.region().await {
        return Some(r);
    }
    aws_config::profile::ProfileFileRegionProvider::builder()
        .build()
        .region()
        .await
}

/// Loads the shared SDK configuration: the default credential chain (environment, `AWS_PROFILE`,
/// web identity, the ECS container endpoint, IMDS), the region ([`resolve_region`]; an error if
/// none is set), the retry policy and the timeouts.
pub async fn load_config(opts: &AwsOptions) -> Result<SdkConfig, &'static str> {
    let region = resolve_region(opts).await.ok_or(NO_REGION)?;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(opts.max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(20)),
        )
        .timeout_config(timeouts(Duration::from_secs(
            opts.attempt_timeout_seconds.max(1),
        )));
    if let Some(endpoint) = &opts.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    Ok(loader.region(region).load().await)
}

/// The retry policy of the operator's S3 clients: the SDK's adaptive mode, which adds a client-side rate
/// limiter that slows every request of the client down once S3 answers SlowDown or 503 (S3
/// scales a prefix up gradually), with the configuration's attempts and backoff. Still the one
/// retry layer of each call.
pub fn s3_retry(config: &SdkConfig) -> RetryConfig {
    let base = config
        .retry_config()
        .cloned()
        .unwrap_or_else(RetryConfig::standard);
    RetryConfig::adaptive()
        .with_max_attempts(base.max_attempts())
        .with_initial_backoff(base.initial_backoff())
        .with_max_backoff(base.max_backoff())
}

/// Called once per AWS operation (after its retries) with service, operation and outcome
/// (`ok`, `throttled` or `error`).
pub type RequestSink = std::sync::Arc<dyn Fn(&str, &str, &str) + Send + Sync>;

/// An SDK interceptor that reports every operation a client makes, for
/// `ferry_aws_requests_total`. Add it to each client with `.interceptor(..)`.
#[derive(Clone)]
pub struct CountRequests(pub RequestSink);

impl std::fmt::Debug for CountRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountRequests")
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "ferry-count-requests"
    }

    fn read_after_execution(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let status = context.response().map(|r| r.status().as_u16());
        let ok = matches!(context.output_or_error(), Some(Ok(_)));
        let outcome = match (ok, status) {
            (true, _) => "ok",
            (false, Some(429 | 503)) => "throttled",
            _ => "error",
        };
        let (service, op) = operation(cfg);
        (self.0)(&service.to_ascii_lowercase().replace(' ', ""), op, outcome);
        Ok(())
    }
}

/// An SDK interceptor that calls its function after every attempt that got an answer from the
/// service (any status): the worker's watchdog counts these as signs of life.
#[derive(Clone)]
pub struct OnAnswer(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for OnAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnAnswer")
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for OnAnswer {
    fn name(&self) -> &'static str {
        "ferry-on-answer"
    }

    fn read_after_attempt(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        _cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if context.response().is_some() {
            (self.0)();
        }
        Ok(())
    }
}

/// The response header [`PaceThrottled`] writes on a throttled answer: the milliseconds its
/// retry waits for a slot of the pacer. Internal to the client; never sent anywhere.
const PACED_RETRY_HEADER: &str = "x-ferry-paced-retry-ms";

/// What a request pacer learns from every attempt of an S3 call, through [`PaceThrottled`].
/// `read_only` tells the two budgets S3 keeps per prefix apart (GET and HEAD; PUT, COPY, POST
/// and DELETE): see [`is_read_only`].
pub trait Pace: Send + Sync {
    /// An attempt goes on the wire.
    fn sent(&self, read_only: bool);
    /// S3 answered an attempt sent at `sent`; `throttled` for a 503 (`SlowDown`) or 429.
    /// Returns the wait for the send slot of the retry of a throttled attempt (ignored
    /// otherwise).
    fn answered(&self, read_only: bool, throttled: bool, sent: std::time::Instant) -> Duration;
}

/// The service and operation the SDK runs under `cfg` ("unknown" when it does not say).
fn operation(cfg: &aws_smithy_types::config_bag::ConfigBag) -> (&str, &str) {
    cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
        .map_or(("unknown", "unknown"), |m| (m.service(), m.name()))
}

/// The current attempt: when it went on the wire and whether its operation only reads, kept in
/// the operation's config bag between [`PaceThrottled`]'s two hooks.
#[derive(Debug, Clone, Copy)]
struct SentAt {
    at: std::time::Instant,
    read_only: bool,
}

impl aws_smithy_types::config_bag::Storable for SentAt {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// Paces the SDK's retries of throttled S3 calls with the worker's request budget, so a retry,
/// like a first attempt, waits for a send slot and the SDK stays the one retry layer.
///
/// Two halves, because retry classifiers must be free of side effects (the SDK runs them more
/// than once per attempt: its connection-poisoning interceptor classifies too):
/// - as an interceptor it runs once per attempt: it tells the [`Pace`] that the attempt was
///   sent, then how S3 answered it and when the attempt was sent (the budget counts what S3
///   accepts, and on a 503 or 429 cuts its rate and returns the wait for a send slot for the
///   retry), a wait it writes on a throttled response as [`PACED_RETRY_HEADER`];
/// - as a retry classifier (after the SDK's own) it reads that header back and classifies the
///   answer as a throttling error retried after exactly that wait.
#[derive(Clone)]
pub struct PaceThrottled(pub std::sync::Arc<dyn Pace>);

impl std::fmt::Debug for PaceThrottled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PaceThrottled")
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for PaceThrottled {
    fn name(&self) -> &'static str {
        "ferry-pace-throttled"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let read_only = is_read_only(operation(cfg).1);
        self.0.sent(read_only);
        cfg.interceptor_state().store_put(SentAt {
            at: std::time::Instant::now(),
            read_only,
        });
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let SentAt { at, read_only } = cfg.load::<SentAt>().copied().unwrap_or_else(|| SentAt {
            at: std::time::Instant::now(),
            read_only: is_read_only(operation(cfg).1),
        });
        let response = context.response_mut();
        if !matches!(response.status().as_u16(), 429 | 503) {
            self.0.answered(read_only, false, at);
        } else {
            let wait = self.0.answered(read_only, true, at);
            response
                .headers_mut()
                .insert(PACED_RETRY_HEADER, wait.as_millis().to_string());
        }
        Ok(())
    }
}

impl aws_smithy_runtime_api::client::retries::classifiers::ClassifyRetry for PaceThrottled {
    fn classify_retry(
        &self,
        ctx: &aws_smithy_runtime_api::client::interceptors::context::InterceptorContext,
    ) -> aws_smithy_runtime_api::client::retries::classifiers::RetryAction {
        use aws_smithy_runtime_api::client::retries::classifiers::RetryAction;
        let wait = ctx
            .response()
            .and_then(|r| r.headers().get(PACED_RETRY_HEADER))
            .and_then(|v| v.parse::<u64>().ok());
        match wait {
            Some(ms) => RetryAction::retryable_error_with_explicit_delay(
                aws_smithy_types::retry::ErrorKind::ThrottlingError,
                Duration::from_millis(ms),
            ),
            None => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "ferry-pace-throttled"
    }

    fn priority(
        &self,
    ) -> aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority {
        use aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority;
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// Whether an operation only reads: `Get*`, `List*`, `Describe*`, `Head*`, DynamoDB's `Query`,
/// `Scan` and `BatchGetItem`, and the STS calls that hand out credentials. Everything else
/// changes something somewhere.
pub fn is_read_only(operation: &str) -> bool {
    ["Get", "List", "Describe", "Head"]
        .iter()
        .any(|p| operation.starts_with(p))
        || matches!(
            operation,
            "Query" | "Scan" | "BatchGetItem" | "AssumeRole" | "GetCallerIdentity"
        )
}

/// Answers whether this process may still change things (the operator: whether it holds a
/// valid leader lease on its own monotonic clock).
pub type FenceCheck = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// An SDK interceptor that refuses every request that changes something once [`FenceCheck`]
/// says no, right before the request would go on the wire (and before each retry of it): a
/// replica that lost its lease, or may have, sends no write, whatever await point its
/// reconciles were parked at. Reads still go out.
#[derive(Clone)]
pub struct FenceRequests(pub FenceCheck);

impl std::fmt::Debug for FenceRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FenceRequests")
    }
}

/// The error a fenced request fails with.
#[derive(Debug, thiserror::Error)]
#[error("{operation} not sent: this replica does not hold a valid leader lease")]
pub struct Fenced {
    pub operation: String,
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for FenceRequests {
    fn name(&self) -> &'static str {
        "ferry-fence-requests"
    }

    fn read_before_transmit(
        &self,
        _context: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let (_, op) = operation(cfg);
        if is_read_only(op) || (self.0)() {
            return Ok(());
        }
        Err(Box::new(Fenced {
            operation: op.to_string(),
        }))
    }
}
