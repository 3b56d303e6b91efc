//! Thin adapters over the AWS SDK: building clients from flags and the environment, and the one
//! function that classifies an SDK error as retryable, throttled, conflict or terminal. No
//! business decisions here.
//!
//! Retries live in exactly one layer: the SDK's standard retry strategy (bounded attempts,
//! exponential backoff with full jitter, retrying throttling, 5xx and transport errors only),
//! configured here once for every client. Callers never wrap SDK calls in a retry loop of their
//! own; optimistic-concurrency re-reads after a failed condition are not retries of one call.

pub mod assumed;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

/// Where and how to reach AWS (flags of every command that talks to AWS).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AwsOptions {
    /// AWS region of ferry's table and the operator's clients [default: from the AWS
    /// environment/profile, else us-east-1]
    #[arg(long, env = "FERRY_REGION", global = true)]
    pub region: Option<String>,
    /// Send every AWS request to this endpoint (an emulator). `AWS_ENDPOINT_URL` and
    /// per-service `AWS_ENDPOINT_URL_<SERVICE>` are honored as well.
    #[arg(long, env = "FERRY_ENDPOINT_URL", global = true)]
    pub endpoint_url: Option<String>,
    /// Maximum attempts per AWS request (retries throttling, 5xx and transport errors only).
    #[arg(long, env = "FERRY_MAX_ATTEMPTS", default_value_t = 5, global = true)]
    pub max_attempts: u32,
}

/// Loads the shared SDK configuration: the default credential chain (environment, `AWS_PROFILE`,
/// web identity, the ECS container endpoint, IMDS), the region, and the retry policy.
pub async fn load_config(opts: &AwsOptions) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).retry_config(
        RetryConfig::standard()
            .with_max_attempts(opts.max_attempts.max(1))
            .with_initial_backoff(Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(20)),
    );
    if let Some(endpoint) = &opts.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &opts.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return config
            .into_builder()
            .region(aws_config::Region::new("us-east-1"))
            .build();
    }
    config
}

/// How a failed AWS call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transport failure, timeout or 5xx: worth another attempt later.
    Retryable,
    /// The service asked us to slow down.
    Throttled,
    /// A condition or concurrent change: re-read and decide again.
    Conflict,
    /// Will fail the same way again (access denied, validation, not found…).
    Terminal,
}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

const CONFLICT_CODES: &[&str] = &[
    "ConditionalCheckFailedException",
    "TransactionCanceledException",
    "ConflictException",
    "OperationAborted",
    "ConcurrentModification",
    "ConcurrentModificationException",
];

/// Classifies an error code and HTTP status (either may be unknown).
pub fn classify_code(code: Option<&str>, status: Option<u16>) -> ErrorClass {
    if let Some(code) = code {
        if THROTTLING_CODES.contains(&code) {
            return ErrorClass::Throttled;
        }
        if CONFLICT_CODES.contains(&code) {
            return ErrorClass::Conflict;
        }
        if matches!(
            code,
            "InternalError" | "InternalFailure" | "ServiceUnavailable" | "RequestTimeout"
        ) {
            return ErrorClass::Retryable;
        }
    }
    match status {
        Some(429) => ErrorClass::Throttled,
        Some(503) => ErrorClass::Throttled,
        Some(s) if s >= 500 => ErrorClass::Retryable,
        _ => ErrorClass::Terminal,
    }
}

/// The one classifier of SDK errors, for every AWS service.
pub fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> ErrorClass {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorClass::Retryable
        }
        SdkError::ConstructionFailure(_) => ErrorClass::Terminal,
        SdkError::ServiceError(se) => {
            classify_code(se.err().code(), Some(se.raw().status().as_u16()))
        }
        _ => classify_code(err.code(), err.raw_response().map(|r| r.status().as_u16())),
    }
}

/// The error code of an SDK error, for messages and metrics labels.
pub fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> String {
    match err {
        SdkError::TimeoutError(_) => "Timeout".into(),
        SdkError::DispatchFailure(_) => "DispatchFailure".into(),
        SdkError::ResponseError(_) => "ResponseError".into(),
        SdkError::ConstructionFailure(_) => "ConstructionFailure".into(),
        _ => err.code().unwrap_or("Unknown").to_string(),
    }
}

/// A message for an SDK error that names its code and the service's message.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E, HttpResponse>,
) -> String {
    match (err.code(), err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => {
            let mut s = err.to_string();
            let mut src = std::error::Error::source(err);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
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
        let meta = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>();
        let status = context.response().map(|r| r.status().as_u16());
        let ok = matches!(context.output_or_error(), Some(Ok(_)));
        let outcome = match (ok, status) {
            (true, _) => "ok",
            (false, Some(429 | 503)) => "throttled",
            _ => "error",
        };
        let (service, op) = meta.map_or(("unknown", "unknown"), |m| (m.service(), m.name()));
        (self.0)(&service.to_ascii_lowercase().replace(' ', ""), op, outcome);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_5xx_retry_but_access_denied_does_not() {
        assert_eq!(
            classify_code(Some("SlowDown"), Some(503)),
            ErrorClass::Throttled
        );
        assert_eq!(
            classify_code(Some("ThrottlingException"), Some(400)),
            ErrorClass::Throttled
        );
        assert_eq!(classify_code(None, Some(500)), ErrorClass::Retryable);
        assert_eq!(
            classify_code(Some("InternalError"), Some(200)),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify_code(Some("AccessDenied"), Some(403)),
            ErrorClass::Terminal
        );
        assert_eq!(
            classify_code(Some("ValidationException"), Some(400)),
            ErrorClass::Terminal
        );
        assert_eq!(
            classify_code(Some("ConditionalCheckFailedException"), Some(400)),
            ErrorClass::Conflict
        );
    }
}
