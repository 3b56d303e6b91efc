//! The finalizer's plan, pure: from what `observe::deletion` found, the cleanup steps in their
//! order, or what the deletion waits for. `apply::cleanup` carries the steps out.
//!
//! Order and why:
//! 1. Stop the job's tasks (only of a task definition family this installation owns), then
//!    **wait until ECS reports every one STOPPED**: a stopped task's worker has up to its
//!    stopTimeout to release its chunks and write its last state, and nothing of the job may go
//!    before it has exited (a worker writing into deleted run records recreates them; a worker
//!    whose role is deleted fails mid-copy).
//! 2. Remove ferry's statements from the source bucket policies the status recorded (every
//!    other statement stays).
//! 3. Delete the task role, if it carries this installation's owner tag.
//! 4. Deregister the family's revisions that carry the owner tag.
//! 5. Delete the job's records, the spec last.
//!
//! Destination data is never touched.

use super::plan::Problem;
use crate::model::SourceGrant;

/// What a deletion found in AWS and the status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The family whose tasks, revisions and role are the job's.
    pub family: String,
    /// Whether that family is this installation's (a family without revisions: yes).
    pub family_owned: bool,
    /// Tasks of the family ECS still wants running.
    pub running: Vec<String>,
    /// Tasks of the family asked to stop that have not reached STOPPED.
    pub stopping: usize,
    /// ferry's statements the status recorded.
    pub grants: Vec<SourceGrant>,
    /// Whether the task role exists with this installation's owner tag.
    pub role_owned: bool,
    /// Revisions of the family with this installation's owner tag.
    pub task_definitions: Vec<String>,
}

/// One cleanup step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cleanup {
    StopTask {
        arn: String,
    },
    RemoveSourceGrant {
        grant: SourceGrant,
    },
    DeleteTaskRole,
    DeregisterTaskDefinition {
        arn: String,
    },
    /// Runs, status and spec: the job is gone.
    DeleteRecords,
}

/// What a deletion does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionPlan {
    pub steps: Vec<Cleanup>,
    /// Why the deletion cannot finish yet (recorded in `Finalized`; looked at again after the
    /// task poll interval, without the error backoff).
    pub waiting: Option<Problem>,
}

/// Plans a deletion.
pub fn plan(found: &Found) -> DeletionPlan {
    let mut steps = Vec::new();
    if found.family_owned && (!found.running.is_empty() || found.stopping > 0) {
        steps.extend(
            found
                .running
                .iter()
                .map(|arn| Cleanup::StopTask { arn: arn.clone() }),
        );
        let n = found.running.len() + found.stopping;
        return DeletionPlan {
            steps,
            waiting: Some(Problem {
                reason: "TasksStopping".into(),
                message: format!(
                    "waiting for {n} task(s) of family {} to reach STOPPED before removing what the job made",
                    found.family
                ),
                terminal: false,
            }),
        };
    }
    steps.extend(
        found
            .grants
            .iter()
            .map(|g| Cleanup::RemoveSourceGrant { grant: g.clone() }),
    );
    if found.role_owned {
        steps.push(Cleanup::DeleteTaskRole);
    }
    steps.extend(
        found
            .task_definitions
            .iter()
            .map(|arn| Cleanup::DeregisterTaskDefinition { arn: arn.clone() }),
    );
    steps.push(Cleanup::DeleteRecords);
    DeletionPlan {
        steps,
        waiting: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(bucket: &str) -> SourceGrant {
        SourceGrant {
            account: "111111111111".into(),
            region: "eu-west-1".into(),
            bucket: bucket.into(),
            role_arn: "arn:aws:iam::111111111111:role/s".into(),
            sid: format!("Ferry{bucket}"),
        }
    }

    fn found() -> Found {
        Found {
            family: "ferry-logs".into(),
            family_owned: true,
            grants: vec![grant("a"), grant("b")],
            role_owned: true,
            task_definitions: vec!["td:1".into(), "td:2".into()],
            ..Found::default()
        }
    }

    #[test]
    fn a_deletion_stops_tasks_waits_for_stopped_then_removes_everything_ferry_made_records_last() {
        let everything = vec![
            Cleanup::RemoveSourceGrant { grant: grant("a") },
            Cleanup::RemoveSourceGrant { grant: grant("b") },
            Cleanup::DeleteTaskRole,
            Cleanup::DeregisterTaskDefinition { arn: "td:1".into() },
            Cleanup::DeregisterTaskDefinition { arn: "td:2".into() },
            Cleanup::DeleteRecords,
        ];
        // (what, found, steps, waits)
        let cases: Vec<(&str, Found, Vec<Cleanup>, bool)> = vec![
            (
                "tasks running: stop them and wait",
                Found {
                    running: vec!["t1".into(), "t2".into()],
                    ..found()
                },
                vec![
                    Cleanup::StopTask { arn: "t1".into() },
                    Cleanup::StopTask { arn: "t2".into() },
                ],
                true,
            ),
            (
                "tasks stopping: nothing goes yet",
                Found {
                    stopping: 1,
                    ..found()
                },
                vec![],
                true,
            ),
            (
                "all stopped: everything, records last",
                found(),
                everything,
                false,
            ),
            (
                "a family another installation owns: its tasks are not ours to stop or wait for",
                Found {
                    family_owned: false,
                    running: vec!["theirs".into()],
                    role_owned: false,
                    task_definitions: vec![],
                    ..found()
                },
                vec![
                    Cleanup::RemoveSourceGrant { grant: grant("a") },
                    Cleanup::RemoveSourceGrant { grant: grant("b") },
                    Cleanup::DeleteRecords,
                ],
                false,
            ),
            (
                "nothing was ever made: only the records",
                Found {
                    family_owned: true,
                    ..Found::default()
                },
                vec![Cleanup::DeleteRecords],
                false,
            ),
        ];
        for (what, f, steps, waits) in cases {
            let p = plan(&f);
            assert_eq!(p.steps, steps, "{what}");
            assert_eq!(p.waiting.is_some(), waits, "{what}");
            if let Some(w) = &p.waiting {
                assert_eq!(w.reason, "TasksStopping", "{what}");
                assert!(!w.terminal, "{what}");
            }
        }
    }
}
