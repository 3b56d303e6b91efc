//! Reading an AWS error once: what kind of failure it is, for every service. Callers match the
//! kind they mean ("the role is gone" is [`ErrorKind::NotFound`], never "any error that will
//! fail again"), so an AccessDenied can never pass for "already gone". Whether a kind is worth
//! retrying is a separate question ([`ErrorKind::is_retryable`]), answered by the SDK's one
//! retry layer for single calls and by the callers' backoff for whole reconciles.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

/// What kind of failure an AWS error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The resource does not exist (404, `NoSuch*`, `*NotFound*`, ECS "Unable to describe").
    NotFound,
    /// Creating something that exists (`EntityAlreadyExists`, `BucketAlreadyOwnedByYou`, …).
    AlreadyExists,
    /// The caller may not do this (403, `AccessDenied*`, `UnauthorizedOperation`), including
    /// a bucket owned by an account other than the expected one.
    AccessDenied,
    /// The credentials expired or are not valid (`ExpiredToken`, `InvalidClientTokenId`, …).
    Credentials,
    /// The service asked us to slow down (`SlowDown`, `Throttling*`, 429, 503).
    Throttled,
    /// A condition did not hold or a concurrent change won (`ConditionalCheckFailed`, 412
    /// `PreconditionFailed`, `ConflictException`, …): re-read and decide again.
    Conflict,
    /// The request went to the wrong region (301 `PermanentRedirect`).
    Redirect,
    /// The request itself is wrong and will be refused again (validation, limits, 4xx).
    Invalid,
    /// Transport failure, timeout or 5xx: the same request may succeed later.
    Retryable,
}

impl ErrorKind {
    /// Worth sending the same request again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Retryable | ErrorKind::Throttled)
    }

    /// Will fail the same way again until something outside changes (the user's spec, a
    /// permission, a resource): neither retryable nor a lost race.
    pub fn fails_again(self) -> bool {
        !self.is_retryable() && self != ErrorKind::Conflict
    }

    /// A short snake_case label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::Credentials => "credentials",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Redirect => "redirect",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Retryable => "retryable",
        }
    }
}

const THROTTLING: &[&str] = &[
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

const CONFLICT: &[&str] = &[
    "ConditionalCheckFailedException",
    "TransactionCanceledException",
    "ConflictException",
    "OperationAborted",
    "ConcurrentModification",
    "ConcurrentModificationException",
    "PreconditionFailed",
];

const NOT_FOUND: &[&str] = &[
    "NotFound",
    "NoSuchKey",
    "NoSuchBucket",
    "NoSuchBucketPolicy",
    "NoSuchUpload",
    "NoSuchVersion",
    "NoSuchEntity",
    "NoSuchTagSet",
    "ResourceNotFoundException",
    "ClusterNotFoundException",
    "ServiceNotFoundException",
    "TaskSetNotFoundException",
    "ServerSideEncryptionConfigurationNotFoundError",
    "OwnershipControlsNotFoundError",
    "NoSuchLifecycleConfiguration",
];

const ALREADY_EXISTS: &[&str] = &[
    "EntityAlreadyExists",
    "BucketAlreadyOwnedByYou",
    "ResourceInUseException",
    "TableAlreadyExistsException",
];

const ACCESS_DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnauthorizedException",
    "AllAccessDisabled",
    "AccountProblem",
];

const CREDENTIALS: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
];

/// The kind of an error from its code, HTTP status and message (any may be unknown).
pub fn kind_of(code: Option<&str>, status: Option<u16>, message: Option<&str>) -> ErrorKind {
    if let Some(code) = code {
        let is = |list: &[&str]| list.contains(&code);
        if is(THROTTLING) {
            return ErrorKind::Throttled;
        }
        if is(CONFLICT) {
            return ErrorKind::Conflict;
        }
        if is(NOT_FOUND) {
            return ErrorKind::NotFound;
        }
        if is(ALREADY_EXISTS) {
            return ErrorKind::AlreadyExists;
        }
        if is(ACCESS_DENIED) {
            return ErrorKind::AccessDenied;
        }
        if is(CREDENTIALS) {
            return ErrorKind::Credentials;
        }
        if code == "PermanentRedirect" {
            return ErrorKind::Redirect;
        }
        if matches!(
            code,
            "InternalError"
                | "InternalFailure"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "ServerException"
                | "RequestTimeout"
        ) {
            return ErrorKind::Retryable;
        }
        // ECS names missing things in a generic code: "Unable to describe task definition.",
        // "The referenced task was not found.".
        if matches!(code, "ClientException" | "InvalidParameterException") {
            let m = message.unwrap_or_default().to_ascii_lowercase();
            if m.contains("unable to describe") || m.contains("not found") {
                return ErrorKind::NotFound;
            }
        }
    }
    match status {
        Some(301 | 307) => ErrorKind::Redirect,
        Some(403) => ErrorKind::AccessDenied,
        Some(404) => ErrorKind::NotFound,
        Some(409) => ErrorKind::Conflict,
        Some(412) => ErrorKind::Conflict,
        Some(429 | 503) => ErrorKind::Throttled,
        Some(s) if s >= 500 => ErrorKind::Retryable,
        _ => ErrorKind::Invalid,
    }
}

/// The one classifier of SDK errors, for every AWS service.
pub fn kind<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> ErrorKind {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorKind::Retryable
        }
        SdkError::ConstructionFailure(_) => ErrorKind::Invalid,
        SdkError::ServiceError(se) => kind_of(
            se.err().code(),
            Some(se.raw().status().as_u16()),
            se.err().message(),
        ),
        _ => kind_of(
            err.code(),
            err.raw_response().map(|r| r.status().as_u16()),
            err.message(),
        ),
    }
}

/// The error code of an SDK error, for messages and conditions.
pub fn error_code<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> String {
    match err {
        SdkError::TimeoutError(_) => "Timeout".into(),
        SdkError::DispatchFailure(_) => "DispatchFailure".into(),
        SdkError::ResponseError(_) => "ResponseError".into(),
        SdkError::ConstructionFailure(_) => "ConstructionFailure".into(),
        _ => match (err.code(), err.raw_response().map(|r| r.status().as_u16())) {
            (Some(c), _) => c.to_string(),
            // HEAD answers have no body: name the status.
            (None, Some(403)) => "AccessDenied".into(),
            (None, Some(404)) => "NotFound".into(),
            (None, Some(301)) => "PermanentRedirect".into(),
            _ => "Unknown".into(),
        },
    }
}

/// A message for an SDK error that names its code and the service's message.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E, HttpResponse>,
) -> String {
    let hint = err.code().and_then(hint).unwrap_or_default();
    if let SdkError::DispatchFailure(_) = err {
        let chain = error_chain(err)
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ");
        if chain.contains("loading credentials") || chain.contains("no credentials found") {
            return format!(
                "no usable AWS credentials (tried the environment, AWS_PROFILE and SSO, web identity, the ECS container endpoint and IMDS): set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY ({chain})"
            );
        }
    }
    match (err.code(), err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}{hint}"),
        (Some(c), None) => format!("{c}{hint}"),
        _ => {
            let mut s = match err.raw_response().map(|r| r.status().as_u16()) {
                Some(status) => format!("HTTP {status}: "),
                None => String::new(),
            };
            s.push_str(&err.to_string());
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

/// An error and its sources, `: `-joined.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut src = err.source();
    while let Some(e) = src {
        let text = e.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = e.source();
    }
    s
}

/// What to do about an error code a person can fix, appended to its description.
pub fn hint(code: &str) -> Option<String> {
    match code {
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" | "TokenRefreshRequired" => {
            let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
            Some(format!(
                " (the credentials have expired: refresh profile `{profile}`, e.g. `aws sso login --profile {profile}`, or export new AWS_* keys)"
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expired_token_names_the_profile_to_refresh() {
        let h = hint("ExpiredToken").expect("a hint");
        assert!(h.contains("aws sso login --profile"), "{h}");
        assert_eq!(hint("AccessDenied"), None);
    }

    /// Code, HTTP status, message, and the kind they mean.
    type Case<'a> = (Option<&'a str>, Option<u16>, Option<&'a str>, ErrorKind);

    #[test]
    fn each_code_and_status_is_read_as_the_kind_callers_mean() {
        let cases: &[Case] = &[
            (Some("SlowDown"), Some(503), None, ErrorKind::Throttled),
            (
                Some("ThrottlingException"),
                Some(400),
                None,
                ErrorKind::Throttled,
            ),
            (None, Some(503), None, ErrorKind::Throttled),
            (None, Some(500), None, ErrorKind::Retryable),
            (Some("InternalError"), Some(200), None, ErrorKind::Retryable),
            (
                Some("AccessDenied"),
                Some(403),
                None,
                ErrorKind::AccessDenied,
            ),
            (None, Some(403), None, ErrorKind::AccessDenied),
            (
                Some("AccessDeniedException"),
                Some(400),
                None,
                ErrorKind::AccessDenied,
            ),
            (Some("NoSuchKey"), Some(404), None, ErrorKind::NotFound),
            (None, Some(404), None, ErrorKind::NotFound),
            (Some("NoSuchEntity"), Some(404), None, ErrorKind::NotFound),
            (
                Some("NoSuchBucketPolicy"),
                Some(404),
                None,
                ErrorKind::NotFound,
            ),
            (
                Some("ClusterNotFoundException"),
                Some(400),
                None,
                ErrorKind::NotFound,
            ),
            (
                Some("ClientException"),
                Some(400),
                Some("Unable to describe task definition."),
                ErrorKind::NotFound,
            ),
            (
                Some("ClientException"),
                Some(400),
                Some("You are not authorized"),
                ErrorKind::Invalid,
            ),
            (
                Some("EntityAlreadyExists"),
                Some(409),
                None,
                ErrorKind::AlreadyExists,
            ),
            (
                Some("BucketAlreadyOwnedByYou"),
                Some(409),
                None,
                ErrorKind::AlreadyExists,
            ),
            (
                Some("ConditionalCheckFailedException"),
                Some(400),
                None,
                ErrorKind::Conflict,
            ),
            (
                Some("PreconditionFailed"),
                Some(412),
                None,
                ErrorKind::Conflict,
            ),
            (
                Some("ConflictException"),
                Some(400),
                None,
                ErrorKind::Conflict,
            ),
            (
                Some("PermanentRedirect"),
                Some(301),
                None,
                ErrorKind::Redirect,
            ),
            (None, Some(301), None, ErrorKind::Redirect),
            (
                Some("ExpiredToken"),
                Some(400),
                None,
                ErrorKind::Credentials,
            ),
            (
                Some("ValidationException"),
                Some(400),
                None,
                ErrorKind::Invalid,
            ),
            (Some("KeyTooLongError"), Some(400), None, ErrorKind::Invalid),
            (
                Some("InvalidParameterException"),
                Some(400),
                None,
                ErrorKind::Invalid,
            ),
        ];
        for (code, status, message, want) in cases {
            assert_eq!(
                kind_of(*code, *status, *message),
                *want,
                "{code:?} {status:?} {message:?}"
            );
        }
    }

    #[test]
    fn only_throttling_and_transient_failures_are_retryable_and_races_do_not_fail_again() {
        assert!(ErrorKind::Throttled.is_retryable());
        assert!(ErrorKind::Retryable.is_retryable());
        for k in [
            ErrorKind::NotFound,
            ErrorKind::AccessDenied,
            ErrorKind::Invalid,
            ErrorKind::Conflict,
            ErrorKind::Redirect,
        ] {
            assert!(!k.is_retryable(), "{k:?}");
        }
        assert!(!ErrorKind::Conflict.fails_again());
        assert!(ErrorKind::AccessDenied.fails_again());
    }
}
