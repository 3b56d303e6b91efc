//! What `ferry apply` does with one document: a pure decision against the stored job, and the
//! optimistic-concurrency loop that carries it out.

use crate::model::CopyJob;
use crate::store::{Store, StoreError, StoredJob};

/// What applying a document to the store would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The job does not exist: create it at generation 1.
    Create,
    /// The job exists and differs: write it at `generation` (bumped only if the spec changed).
    Update {
        generation: u64,
        expected_version: u64,
    },
    /// Nothing to write.
    Unchanged,
    /// The job is being deleted: refuse until the operator has removed it.
    Deleting,
    /// Another apply set recorded the job: refuse unless forced.
    Conflict { owner: String },
}

/// Decides what applying `desired` means given what is stored. A job recorded under another
/// apply set is that set's: taking it over needs `force` (kubectl's `--force-conflicts`); a job
/// recorded under none is anyone's. Pure.
pub fn decide(
    current: Option<&StoredJob>,
    desired: &CopyJob,
    applyset: &str,
    force: bool,
) -> Decision {
    let Some(current) = current else {
        return Decision::Create;
    };
    if current.deletion_requested_at.is_some() {
        return Decision::Deleting;
    }
    if let Some(owner) = current.applyset.as_deref()
        && owner != applyset
        && !force
    {
        return Decision::Conflict {
            owner: owner.to_string(),
        };
    }
    let stored = current.job.desired();
    let desired = desired.desired();
    let spec_changed = stored.spec != desired.spec;
    let other_changed = stored != desired || current.applyset.as_deref() != Some(applyset);
    if spec_changed {
        Decision::Update {
            generation: current.generation + 1,
            expected_version: current.version,
        }
    } else if other_changed {
        Decision::Update {
            generation: current.generation,
            expected_version: current.version,
        }
    } else {
        Decision::Unchanged
    }
}

/// The outcome printed as `copyjob/NAME <outcome>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Errors of applying one document.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("copyjob/{0} is being deleted; apply it again once the operator has removed it")]
    Deleting(String),
    #[error(
        "copyjob/{name} belongs to apply set `{owner}`, not `{applyset}`; apply it with --applyset {owner}, or take it over with --force-conflicts"
    )]
    Conflict {
        name: String,
        owner: String,
        applyset: String,
    },
    #[error(
        "copyjob/{name}: gave up after {attempts} attempts, the job kept changing concurrently"
    )]
    Contended { name: String, attempts: u32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

const MAX_ATTEMPTS: u32 = 10;

/// Applies one document: read, decide, conditional write; on a lost race read again and decide
/// again, so a concurrent writer's change is never overwritten blindly.
/// How `apply_one` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mode {
    /// Write nothing.
    pub dry_run: bool,
    /// With `dry_run`: have DynamoDB check each write's condition (`--dry-run=server`).
    pub server_check: bool,
    /// Take over jobs of other apply sets.
    pub force_conflicts: bool,
}

pub async fn apply_one(
    store: &Store,
    desired: &CopyJob,
    applyset: &str,
    mode: Mode,
) -> Result<Outcome, ApplyError> {
    let name = &desired.metadata.name;
    let dry_run = mode.dry_run;
    for attempt in 1..=MAX_ATTEMPTS {
        let current = store.get_job(name).await?;
        let decision = decide(current.as_ref(), desired, applyset, mode.force_conflicts);
        let result = match (&decision, dry_run) {
            (Decision::Deleting, _) => return Err(ApplyError::Deleting(name.clone())),
            (Decision::Conflict { owner }, _) => {
                return Err(ApplyError::Conflict {
                    name: name.clone(),
                    owner: owner.clone(),
                    applyset: applyset.to_string(),
                });
            }
            (Decision::Unchanged, _) => return Ok(Outcome::Unchanged),
            (Decision::Create, true) => store
                .check_spec_write(name, None, mode.server_check)
                .await
                .map(|_| Outcome::Created),
            (
                Decision::Update {
                    expected_version, ..
                },
                true,
            ) => store
                .check_spec_write(name, Some(*expected_version), mode.server_check)
                .await
                .map(|_| Outcome::Configured),
            (Decision::Create, false) => store
                .create_spec(desired, Some(applyset))
                .await
                .map(|_| Outcome::Created),
            (
                Decision::Update {
                    generation,
                    expected_version,
                },
                false,
            ) => store
                .update_spec(desired, *generation, Some(applyset), *expected_version)
                .await
                .map(|_| Outcome::Configured),
        };
        match result {
            Ok(outcome) => return Ok(outcome),
            Err(StoreError::Conflict { .. }) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(job = %name, attempt, "apply lost a race; reading again");
                let jitter = rand::random_range(0..20u64 * u64::from(attempt));
                tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApplyError::Contended {
        name: name.clone(),
        attempts: MAX_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(bucket: &str) -> CopyJob {
        let yaml = format!(
            r#"
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: j }}
spec:
  source: {{ account: "111111111111", region: eu-west-1, bucket: src, roleArn: "arn:aws:iam::111111111111:role/s" }}
  destination: {{ account: "222222222222", region: us-east-1, bucket: {bucket}, roleArn: "arn:aws:iam::222222222222:role/d" }}
"#
        );
        serde_saphyr::from_str(&yaml).expect("test job parses")
    }

    fn stored(
        job: CopyJob,
        generation: u64,
        version: u64,
        applyset: &str,
        deleting: bool,
    ) -> StoredJob {
        StoredJob {
            generation,
            version,
            applyset: Some(applyset.into()),
            deletion_requested_at: deleting.then(|| "now".into()),
            ..StoredJob::new(job)
        }
    }

    #[test]
    fn apply_decisions_follow_the_table() {
        let a = job("dst-a");
        let b = job("dst-b");
        let mut relabeled = a.clone();
        relabeled.metadata.labels.insert("team".into(), "x".into());
        let cases: Vec<(&str, Option<StoredJob>, &CopyJob, Decision)> = vec![
            ("absent job is created", None, &a, Decision::Create),
            (
                "same spec is unchanged",
                Some(stored(a.clone(), 3, 7, "default", false)),
                &a,
                Decision::Unchanged,
            ),
            (
                "changed spec bumps generation",
                Some(stored(a.clone(), 3, 7, "default", false)),
                &b,
                Decision::Update {
                    generation: 4,
                    expected_version: 7,
                },
            ),
            (
                "label change keeps generation",
                Some(stored(a.clone(), 3, 7, "default", false)),
                &relabeled,
                Decision::Update {
                    generation: 3,
                    expected_version: 7,
                },
            ),
            (
                "another apply set's job is refused",
                Some(stored(a.clone(), 3, 7, "other", false)),
                &a,
                Decision::Conflict {
                    owner: "other".into(),
                },
            ),
            (
                "job being deleted is refused",
                Some(stored(a.clone(), 3, 7, "default", true)),
                &b,
                Decision::Deleting,
            ),
        ];
        for (what, current, desired, expected) in cases {
            assert_eq!(
                decide(current.as_ref(), desired, "default", false),
                expected,
                "{what}"
            );
        }
        let theirs = stored(a.clone(), 3, 7, "other", false);
        assert_eq!(
            decide(Some(&theirs), &a, "default", true),
            Decision::Update {
                generation: 3,
                expected_version: 7,
            },
            "--force-conflicts takes the job over without a generation bump"
        );
        let mut unowned = stored(a.clone(), 3, 7, "x", false);
        unowned.applyset = None;
        assert_eq!(
            decide(Some(&unowned), &a, "default", false),
            Decision::Update {
                generation: 3,
                expected_version: 7,
            },
            "a job of no apply set is anyone's"
        );
    }

    #[test]
    fn read_only_metadata_and_status_do_not_count_as_changes() {
        let a = job("dst-a");
        let mut shown = a.clone();
        shown.metadata.generation = Some(3);
        shown.metadata.creation_timestamp = Some("2026-01-01T00:00:00Z".into());
        shown.status = Some(Default::default());
        let current = stored(a, 3, 7, "default", false);
        assert_eq!(
            decide(Some(&current), &shown, "default", false),
            Decision::Unchanged
        );
    }
}
