//! The destination role's credentials: assumed from the task's base credentials and refreshed
//! by the SDK's identity cache before they expire, so a run of many hours never fails with
//! ExpiredToken (role chaining caps sessions at one hour). Each AssumeRole is counted, so the
//! refreshes are visible in the task's progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

use super::WorkerConfig;

/// Wraps a provider and counts how often credentials were fetched.
#[derive(Debug)]
struct Counting {
    inner: AssumeRoleProvider,
    count: Arc<AtomicU64>,
}

impl ProvideCredentials for Counting {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let creds = self.inner.provide_credentials().await;
            if creds.is_ok() {
                let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(
                    assume_role_calls = n,
                    "destination role credentials fetched"
                );
            }
            creds
        })
    }
}

/// The destination role's credentials provider and the counter of AssumeRole calls.
pub async fn destination_provider(
    base: &SdkConfig,
    role_arn: &str,
    cfg: &WorkerConfig,
) -> (SharedCredentialsProvider, Arc<AtomicU64>) {
    let session = super::copy::session_name(&cfg.job, &cfg.task);
    let inner = AssumeRoleProvider::builder(role_arn)
        .session_name(session)
        .session_length(cfg.session)
        .configure(base)
        .build()
        .await;
    let count = Arc::new(AtomicU64::new(0));
    (
        SharedCredentialsProvider::new(Counting {
            inner,
            count: Arc::clone(&count),
        }),
        count,
    )
}
