//! `ferry suspend`, `resume` and `rerun`: changes to one job that need no file, each a
//! read-decide-conditional-write loop like `apply`, so a concurrent writer's change is never
//! overwritten.

use std::io::Write;

use super::{CliError, ExitCode, finish};
use crate::store::{Store, StoreError, StoredJob};

/// What a verb does to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Suspend,
    Resume,
    Rerun,
}

/// The decision for one stored job. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write the spec with `suspend` set to this, at the next generation.
    SetSuspend(bool),
    /// Count one more rerun.
    Rerun,
    /// Already so: print this and write nothing.
    Nothing(&'static str),
    /// Refused, with why.
    Refused(String),
}

/// Decides what `verb` means for `job`. Pure.
pub fn decide(verb: Verb, job: &StoredJob) -> Change {
    if job.deletion_requested_at.is_some() {
        return Change::Refused(format!("copyjob/{} is being deleted", job.name()));
    }
    let suspended = job.job.spec.run.suspend;
    match verb {
        Verb::Suspend if suspended => Change::Nothing("already suspended"),
        Verb::Suspend => Change::SetSuspend(true),
        Verb::Resume if !suspended => Change::Nothing("not suspended"),
        Verb::Resume => Change::SetSuspend(false),
        Verb::Rerun if suspended => Change::Refused(format!(
            "copyjob/{} is suspended; `ferry resume` it first",
            job.name()
        )),
        Verb::Rerun => Change::Rerun,
    }
}

const MAX_ATTEMPTS: u32 = 10;

/// Carries out `verb` on every named job; reports each and fails if any failed.
pub async fn run(
    verb: Verb,
    names: &[String],
    store: &Store,
    out: &mut impl Write,
) -> Result<ExitCode, CliError> {
    let mut failures = Vec::new();
    for name in names {
        match one(verb, name, store).await {
            Ok(text) => writeln!(out, "copyjob/{name} {text}")?,
            Err(e) => failures.push(e.to_string()),
        }
    }
    finish(failures)
}

async fn one(verb: Verb, name: &str, store: &Store) -> Result<String, CliError> {
    for _ in 0..MAX_ATTEMPTS {
        let job = store.require_job(name).await?;
        let written = match decide(verb, &job) {
            Change::Nothing(text) => return Ok(text.to_string()),
            Change::Refused(why) => return Err(CliError::Failed(why)),
            Change::SetSuspend(on) => {
                let mut spec = job.job.clone();
                spec.status = None;
                spec.spec.run.suspend = on;
                store
                    .update_spec(
                        &spec,
                        job.generation + 1,
                        job.applyset.as_deref(),
                        job.version,
                    )
                    .await
                    .map(|()| if on { "suspended" } else { "resumed" }.to_string())
            }
            Change::Rerun => store
                .request_rerun(name, job.version)
                .await
                .map(|n| format!("rerun requested (rerun {n})")),
        };
        match written {
            Err(StoreError::Conflict { .. }) => continue,
            other => return Ok(other?),
        }
    }
    Err(CliError::Failed(format!(
        "copyjob/{name}: gave up after {MAX_ATTEMPTS} attempts, the job kept changing concurrently"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(suspend: bool, deleting: bool) -> StoredJob {
        let mut spec = crate::model::test_job();
        spec.spec.run.suspend = suspend;
        let mut stored = StoredJob::new(spec);
        stored.deletion_requested_at = deleting.then(|| "now".into());
        stored
    }

    #[test]
    fn lifecycle_verbs_decide_by_the_table() {
        let refused = |c: &Change| matches!(c, Change::Refused(_));
        assert_eq!(
            decide(Verb::Suspend, &job(false, false)),
            Change::SetSuspend(true)
        );
        assert_eq!(
            decide(Verb::Suspend, &job(true, false)),
            Change::Nothing("already suspended")
        );
        assert_eq!(
            decide(Verb::Resume, &job(true, false)),
            Change::SetSuspend(false)
        );
        assert_eq!(
            decide(Verb::Resume, &job(false, false)),
            Change::Nothing("not suspended")
        );
        assert_eq!(decide(Verb::Rerun, &job(false, false)), Change::Rerun);
        assert!(
            refused(&decide(Verb::Rerun, &job(true, false))),
            "a suspended job is not rerun"
        );
        for verb in [Verb::Suspend, Verb::Resume, Verb::Rerun] {
            assert!(
                refused(&decide(verb, &job(false, true))),
                "{verb:?} of a job being deleted"
            );
        }
    }
}
