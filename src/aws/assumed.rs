//! Clients that act as a job's source or destination role: one AssumeRole provider per role,
//! its credentials kept until five minutes before they expire, so a reconcile pass does not
//! call STS for every job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use tokio::sync::Mutex;

/// Refresh credentials this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Cached {
    inner: AssumeRoleProvider,
    current: Mutex<Option<Credentials>>,
}

impl ProvideCredentials for Cached {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let mut current = self.current.lock().await;
            if let Some(c) = current.as_ref() {
                let fresh = c
                    .expiry()
                    .is_none_or(|e| e > SystemTime::now() + REFRESH_BEFORE);
                if fresh {
                    return Ok(c.clone());
                }
            }
            let c = self.inner.provide_credentials().await?;
            *current = Some(c.clone());
            Ok(c)
        })
    }
}

/// Assumed-role credentials and S3 clients, per role ARN.
#[derive(Debug, Clone)]
pub struct AssumedRoles {
    base: SdkConfig,
    session_name: String,
    force_path_style: bool,
    interceptors: Vec<aws_sdk_s3::config::SharedInterceptor>,
    providers: Arc<Mutex<HashMap<String, SharedCredentialsProvider>>>,
}

impl AssumedRoles {
    pub fn new(base: SdkConfig, session_name: &str, force_path_style: bool) -> AssumedRoles {
        AssumedRoles {
            base,
            session_name: session_name.to_string(),
            force_path_style,
            interceptors: Vec::new(),
            providers: Arc::default(),
        }
    }

    /// Adds an interceptor (counting, fencing) to every S3 client this hands out.
    pub fn with_interceptor(
        mut self,
        interceptor: impl aws_sdk_s3::config::Intercept + 'static,
    ) -> AssumedRoles {
        self.interceptors
            .push(aws_sdk_s3::config::SharedInterceptor::new(interceptor));
        self
    }

    /// The base configuration (the operator's own credentials).
    pub fn base(&self) -> &SdkConfig {
        &self.base
    }

    /// The (cached) credentials provider of a role.
    pub async fn provider(&self, role_arn: &str) -> SharedCredentialsProvider {
        let mut map = self.providers.lock().await;
        if let Some(p) = map.get(role_arn) {
            return p.clone();
        }
        let inner = AssumeRoleProvider::builder(role_arn)
            .session_name(&self.session_name)
            .configure(&self.base)
            .build()
            .await;
        let p = SharedCredentialsProvider::new(Cached {
            inner,
            current: Mutex::new(None),
        });
        map.insert(role_arn.to_string(), p.clone());
        p
    }

    /// Whether the role can be assumed now; the error message otherwise.
    pub async fn check(&self, role_arn: &str) -> Result<(), String> {
        self.provider(role_arn)
            .await
            .provide_credentials()
            .await
            .map(|_| ())
            .map_err(|e| {
                let mut s = format!("cannot assume {role_arn}: {e}");
                let mut src = std::error::Error::source(&e);
                while let Some(inner) = src {
                    s.push_str(": ");
                    s.push_str(&inner.to_string());
                    src = inner.source();
                }
                s
            })
    }

    /// An S3 client acting as `role_arn` in `region`.
    pub async fn s3(&self, role_arn: &str, region: &str) -> aws_sdk_s3::Client {
        let mut conf = aws_sdk_s3::config::Builder::from(&self.base)
            .credentials_provider(self.provider(role_arn).await)
            .region(aws_config::Region::new(region.to_string()))
            .retry_config(super::s3_retry(&self.base))
            .force_path_style(self.force_path_style);
        for i in &self.interceptors {
            conf.push_interceptor(i.clone());
        }
        aws_sdk_s3::Client::from_conf(conf.build())
    }
}
