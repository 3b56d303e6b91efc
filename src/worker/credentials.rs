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
use crate::model::CopyJob;

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

/// The destination role's credentials provider and the counter of AssumeRole calls. Each
/// session carries the job's session policy (`permissions::session_policy`): the task can reach
/// the job's buckets and prefixes only, whatever else the role may do.
pub async fn destination_provider(
    base: &SdkConfig,
    job: &CopyJob,
    cfg: &WorkerConfig,
) -> (SharedCredentialsProvider, Arc<AtomicU64>) {
    let session = super::copy::session_name(&cfg.job, &cfg.task);
    let inner = AssumeRoleProvider::builder(&job.spec.destination.role_arn)
        .policy(crate::permissions::session_policy(job))
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
