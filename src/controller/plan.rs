//! The reconcile planner: from a job, its last status and what `observe` found, the steps that
//! bring the cloud to the desired state and the status to write. Pure: no IO, no clock (time is
//! an input), cannot fail; every decision of the operator is table-tested here.

use std::collections::HashMap;
use std::time::Duration;

use super::admission::{ADMITTED, Violation};
use super::desired::{self, Settings, TaskDefinition};
use super::policy;
use super::restart::{self, StopKind};
use crate::model::{
    Condition, CopyJob, CopyJobStatus, Phase, Progress, RunMode, RunStatus, SourceGrant, TaskStatus,
};

/// Condition types, in the order `describe` shows them.
pub const ROLES_READY: &str = "RolesReady";
pub const SOURCE_POLICY_READY: &str = "SourcePolicyReady";
pub const DESTINATION_READY: &str = "DestinationReady";
pub const TASK_DEFINITION_READY: &str = "TaskDefinitionReady";
pub const COMPLETE: &str = "Complete";
/// Set (False) when a schedule tick was skipped for startingDeadlineSeconds.
pub const SCHEDULED: &str = "Scheduled";
const INFRA: [&str; 4] = [
    ROLES_READY,
    SOURCE_POLICY_READY,
    DESTINATION_READY,
    TASK_DEFINITION_READY,
];

/// A problem `observe` met, as a condition reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// One CamelCase word (usually the AWS error code).
    pub reason: String,
    pub message: String,
    /// Retrying will not help until someone changes something.
    pub terminal: bool,
}

/// The job's task role as IAM has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleState {
    Missing,
    /// Ours (tagged with this installation's `ferry:owner`); whether trust policy, inline policy
    /// and permissions boundary are as desired.
    Present {
        trust_ok: bool,
        policy_ok: bool,
        boundary_ok: bool,
    },
    /// A role of that name exists without this installation's owner tag: ferry neither adopts,
    /// changes nor deletes it.
    NotOwned,
}

/// The task role as it should be.
pub const ROLE_OK: RoleState = RoleState::Present {
    trust_ok: true,
    policy_ok: true,
    boundary_ok: true,
};

/// The destination bucket as S3 has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketState {
    Missing,
    /// Exists and is ours; its region if S3 said.
    Exists {
        region: Option<String>,
    },
    /// The name is taken by another account.
    OwnedByOther,
}

/// The slow-changing resources, read when a drift check is due or something is not ready.
#[derive(Debug, Clone, PartialEq)]
pub struct Infra {
    /// Whether the source and destination roles can be assumed.
    pub roles: Result<(), Problem>,
    pub task_role: RoleState,
    /// The source bucket policy document (None: the bucket has no policy).
    pub source_policy: Result<Option<String>, Problem>,
    pub bucket: Result<BucketState, Problem>,
    /// The latest ACTIVE revision of the job's task definition family (a problem if that
    /// revision is not this installation's).
    pub task_definition: Result<Option<TaskDefinition>, Problem>,
}

/// An ECS task as DescribeTasks reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Pending,
    Running,
    Stopped {
        stop_code: Option<String>,
        reason: Option<String>,
    },
    /// DescribeTasks does not know the task.
    Missing,
}

/// The current run as the store has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunState {
    pub complete: bool,
    pub progress: Progress,
    /// The last state each worker task wrote (`running`, `done`, `stopped`, `failed`), by task id.
    pub workers: HashMap<String, String>,
    /// When each worker task last wrote its heartbeat (epoch ms), by task id.
    pub heartbeats: HashMap<String, u64>,
}

/// Everything `observe` found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub now_ms: u64,
    pub generation: u64,
    /// The job incarnation's uid (run ids carry it).
    pub uid: String,
    /// The job's rerun counter (`ferry rerun`).
    pub rerun: u64,
    /// `None`: not checked this pass (the status says it was ready).
    pub infra: Option<Infra>,
    /// The tasks named in the status, by ARN.
    pub tasks: HashMap<String, TaskState>,
    /// The current run (the status's), if there is one.
    pub run: Option<RunState>,
}

/// One idempotent step of `apply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create or update the job's task role, its trust policy and its inline policy.
    EnsureTaskRole,
    /// Merge ferry's statements into the source bucket policy. `apply` merges into a fresh
    /// read under the bucket's policy lock (the policy seen by `observe` may be stale by then).
    PutSourcePolicy,
    /// Remove a statement ferry wrote into a bucket the job no longer reads (its source moved),
    /// then forget it in `status.sourcePolicy`.
    RemoveSourceGrant {
        grant: SourceGrant,
    },
    /// Create the destination bucket with the job's settings.
    CreateBucket,
    RegisterTaskDefinition,
    /// Create the run's record in the store (with the spec it copies).
    StartRun {
        run: String,
    },
    /// Start (or find, by its token) the task of one attempt of a slot of the current run.
    RunTask {
        slot: u32,
        attempt: u32,
    },
    StopTask {
        arn: String,
        reason: String,
    },
    /// Expire the items of runs older than the `keep` most recent earlier ones (a cleanup step
    /// of a new run; [`super::history`]).
    ExpireRuns {
        keep: u32,
    },
}

/// What one reconcile does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub status: CopyJobStatus,
    /// Look again after this long (besides events and resyncs).
    pub requeue: Option<Duration>,
    /// Resource kinds found drifted and put back this pass.
    pub corrections: Vec<&'static str>,
    /// A problem that keeps the job from progressing: the status records it and the reconcile
    /// backs off (unless it is terminal).
    pub blocked: Option<Problem>,
    /// Steps that undo what ferry did for an earlier spec (statements in buckets the job no
    /// longer reads): carried out after `steps`, so a bucket that refuses cannot hold up the job.
    pub cleanup: Vec<Step>,
}

/// The condition that records whether ECS could place the run's tasks (only once it could not).
pub const TASKS_PLACED: &str = "TasksPlaced";

/// What carrying out a plan reported back, for [`settle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A statement ferry wrote into a bucket the job no longer reads is gone.
    GrantRemoved(SourceGrant),
    /// RunTask started (or found) the slot's task.
    TaskStarted {
        slot: u32,
        arn: String,
        /// The revision it runs.
        task_definition: Option<String>,
        at_ms: u64,
    },
    /// RunTask answered `failures`: nothing started.
    TaskNotPlaced {
        slot: u32,
        reason: String,
        message: String,
        at_ms: u64,
    },
    /// A step failed: the condition it concerns and what to record there.
    Failed {
        condition: &'static str,
        problem: Problem,
        at_ms: u64,
    },
}

/// Puts what apply reported into the planned status: the one place, with `plan` itself, where
/// a reconcile's status is edited. Pure.
pub fn settle(status: &mut CopyJobStatus, applied: &[Applied], settings: &Settings) {
    for a in applied {
        match a {
            Applied::GrantRemoved(grant) => status.source_policy.retain(|g| g != grant),
            Applied::TaskStarted {
                slot,
                arn,
                task_definition,
                at_ms,
            } => {
                let now_s = rfc3339(*at_ms);
                let Some(run) = status.run.as_mut() else {
                    continue;
                };
                if run.task_definition.is_none() {
                    run.task_definition.clone_from(task_definition);
                }
                if let Some(t) = run.tasks.iter_mut().find(|t| t.slot == *slot) {
                    t.arn = Some(arn.clone());
                    t.started_at = Some(now_s.clone());
                }
                // Placed again once no slot of the run waits for a placement.
                let waiting = run
                    .tasks
                    .iter()
                    .any(|t| t.arn.is_none() && t.placement_failures > 0);
                if !waiting && status.conditions.iter().any(|c| c.kind == TASKS_PLACED) {
                    set_condition(
                        &mut status.conditions,
                        TASKS_PLACED,
                        true,
                        "Placed",
                        "ECS placed the run's tasks",
                        &now_s,
                    );
                }
            }
            Applied::TaskNotPlaced {
                slot,
                reason,
                message,
                at_ms,
            } => {
                let Some(run) = status.run.as_mut() else {
                    continue;
                };
                if let Some(t) = run.tasks.iter_mut().find(|t| t.slot == *slot) {
                    t.placement_failures += 1;
                    let wait = restart::backoff(t.placement_failures, settings.restart_backoff);
                    let at = at_ms.saturating_add(u64::try_from(wait.as_millis()).unwrap_or(0));
                    t.not_before = Some(rfc3339(at));
                    run.placement_failures += 1;
                }
                set_condition(
                    &mut status.conditions,
                    TASKS_PLACED,
                    false,
                    reason,
                    message,
                    &rfc3339(*at_ms),
                );
            }
            Applied::Failed {
                condition,
                problem,
                at_ms,
            } => {
                set_condition(
                    &mut status.conditions,
                    condition,
                    false,
                    &problem.reason,
                    &problem.message,
                    &rfc3339(*at_ms),
                );
                if problem.terminal {
                    status.phase = Phase::Failed;
                }
            }
        }
    }
}

/// RFC 3339 of epoch milliseconds.
pub fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Epoch milliseconds of an RFC 3339 time (0 if unreadable).
pub fn epoch_ms(t: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| u64::try_from(d.timestamp_millis()).unwrap_or(0))
        .unwrap_or(0)
}

/// Sets a condition; its transition time moves only when its status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let status = if ok { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.kind == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.to_string();
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
        }
        None => conditions.push(Condition {
            kind: kind.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: now.to_string(),
        }),
    }
}

fn is_true(status: &CopyJobStatus, kind: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.kind == kind && c.status == "True")
}

/// Whether the status says every slow-changing resource was ready for this generation; if not,
/// `observe` must check them this pass.
pub fn infra_ready(status: Option<&CopyJobStatus>, generation: u64) -> bool {
    status
        .is_some_and(|s| s.observed_generation == generation && INFRA.iter().all(|k| is_true(s, k)))
}

/// The next tick of a cron expression, read in time zone `tz` (UTC if `None` or unknown),
/// strictly after `after_ms`.
/// The time between a Sync job's next two ticks after `now_ms`, in seconds (`None` for a Once
/// job): what "no success for two schedule periods" measures against. Pure.
pub fn schedule_period(run: &crate::model::RunOptions, now_ms: u64) -> Option<u64> {
    if run.mode != RunMode::Sync {
        return None;
    }
    let expr = run.schedule.as_deref()?;
    let tz = run.time_zone.as_deref();
    let first = next_tick(expr, tz, now_ms)?;
    let second = next_tick(expr, tz, first)?;
    Some((second - first) / 1000)
}

pub fn next_tick(expr: &str, tz: Option<&str>, after_ms: u64) -> Option<u64> {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(&crate::model::validate::normalize_cron(expr))
        .ok()?;
    let zone: chrono_tz::Tz = tz.and_then(|z| z.parse().ok()).unwrap_or(chrono_tz::UTC);
    let after = chrono::DateTime::from_timestamp_millis(i64::try_from(after_ms).ok()?)?
        .with_timezone(&zone);
    let next = cron.find_next_occurrence(&after, false).ok()?;
    u64::try_from(next.timestamp_millis()).ok()
}

/// What to do about a tick that is due (`tick <= now`): run it, or skip it when it was missed
/// by more than `startingDeadlineSeconds` (then wait for the next one). Pure.
pub fn due_tick(tick_ms: u64, now_ms: u64, starting_deadline_s: Option<u64>) -> bool {
    starting_deadline_s.is_none_or(|d| now_ms.saturating_sub(tick_ms) <= d.saturating_mul(1000))
}

/// The sequence number of a run id (`g3r2` → 2).
fn run_seq(id: &str) -> u64 {
    id.rsplit_once('r')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

/// Plans one reconcile of a job that is not being deleted.
pub fn plan(
    job: &CopyJob,
    prev: Option<&CopyJobStatus>,
    obs: &Observed,
    settings: &Settings,
) -> Plan {
    let now = obs.now_ms;
    let now_s = rfc3339(now);
    let spec = &job.spec;
    let generation = obs.generation;
    let mut st = prev.cloned().unwrap_or_default();
    let mut p = Plan {
        steps: Vec::new(),
        status: CopyJobStatus::default(),
        requeue: None,
        corrections: Vec::new(),
        blocked: None,
        cleanup: Vec::new(),
    };

    let live_arns = |run: &RunStatus| -> Vec<String> {
        run.tasks
            .iter()
            .filter_map(|t| t.arn.clone())
            .filter(|a| {
                matches!(
                    obs.tasks.get(a),
                    Some(TaskState::Pending | TaskState::Running)
                )
            })
            .collect()
    };

    if spec.run.suspend {
        if let Some(run) = &st.run {
            for arn in live_arns(run) {
                p.steps.push(Step::StopTask {
                    arn,
                    reason: "ferry: job suspended".into(),
                });
            }
        }
        st.phase = Phase::Suspended;
        st.observed_generation = generation;
        st.next_run_time = None;
        p.status = st;
        return p;
    }

    // Resumed: a finished run's phase is its outcome again (an active run's is set below).
    if st.phase == Phase::Suspended {
        st.phase = match &st.run {
            Some(run) if run.finished_at.is_some() => {
                let completed = st
                    .conditions
                    .iter()
                    .any(|c| c.kind == COMPLETE && c.status == "True");
                if completed {
                    Phase::Succeeded
                } else {
                    Phase::Failed
                }
            }
            Some(_) => Phase::Running,
            None => Phase::Pending,
        };
    }

    // Slow-changing resources.
    if let Some(infra) = &obs.infra {
        check_infra(job, &mut st, infra, settings, &now_s, generation, &mut p);
    }

    // Runs. A spec change that leaves what is copied alone (run or ECS settings) keeps the
    // current run, finished or not, under the new generation; a slot added to an active run
    // starts its task.
    let copies = desired::copy_digest(spec);
    if let Some(run) = st.run.as_mut() {
        if run.generation != generation && run.copies.as_deref() == Some(copies.as_str()) {
            run.generation = generation;
            if run.finished_at.is_none() {
                for slot in u32::try_from(run.tasks.len()).unwrap_or(u32::MAX)..spec.run.parallelism
                {
                    run.tasks.push(TaskStatus {
                        slot,
                        attempt: 1,
                        ..TaskStatus::default()
                    });
                }
            } else {
                // The schedule may have changed: the next tick is computed again.
                st.next_run_time = None;
            }
        }
    }
    let mut start_new: Option<u64> = None; // sequence number of a run to start
    match st.run.clone() {
        None => start_new = Some(1),
        Some(run) if run.generation != generation => {
            // What is copied changed: stop the old run's tasks and start the new run once they
            // have stopped (CronJob's Replace policy), so two generations never copy at once.
            let live = live_arns(&run);
            for arn in &live {
                p.steps.push(Step::StopTask {
                    arn: arn.clone(),
                    reason: format!("ferry: superseded by generation {generation}"),
                });
            }
            if live.is_empty() {
                start_new = Some(1);
            } else {
                st.phase = Phase::Provisioning;
                set_condition(
                    &mut st.conditions,
                    COMPLETE,
                    false,
                    "Replacing",
                    &format!(
                        "waiting for {} task(s) of run {} to stop before generation {generation}'s run starts",
                        live.len(),
                        run.id
                    ),
                    &now_s,
                );
            }
        }
        Some(run) if run.finished_at.is_some() && obs.rerun > run.rerun => {
            // `ferry rerun`: a new run now, whatever the mode or the schedule.
            start_new = Some(run_seq(&run.id) + 1);
        }
        Some(run) if run.finished_at.is_some() => {
            if spec.run.mode == RunMode::Sync {
                let expr = spec.run.schedule.as_deref().unwrap_or_default();
                let tz = spec.run.time_zone.as_deref();
                let finished = run.finished_at.as_deref().map(epoch_ms).unwrap_or(now);
                let mut next = st
                    .next_run_time
                    .as_deref()
                    .map(epoch_ms)
                    .or_else(|| next_tick(expr, tz, finished));
                if let Some(t) = next.filter(|t| *t <= now) {
                    if !due_tick(t, now, spec.run.starting_deadline_seconds) {
                        // Missed by more than startingDeadlineSeconds: skipped, not run late.
                        let after = next_tick(expr, tz, now);
                        set_condition(
                            &mut st.conditions,
                            SCHEDULED,
                            false,
                            "StartingDeadlineExceeded",
                            &format!(
                                "the tick at {} was missed by {} s, more than startingDeadlineSeconds {}; next tick at {}",
                                rfc3339(t),
                                (now - t) / 1000,
                                spec.run.starting_deadline_seconds.unwrap_or_default(),
                                after.map(rfc3339).unwrap_or_default()
                            ),
                            &now_s,
                        );
                        next = after;
                    }
                }
                match next {
                    Some(t) if t <= now => start_new = Some(run_seq(&run.id) + 1),
                    Some(t) => {
                        st.next_run_time = Some(rfc3339(t));
                        p.requeue = Some(Duration::from_millis(t - now));
                    }
                    None => {}
                }
            }
        }
        Some(_) => manage_run(job, &mut st, obs, settings, &now_s, &mut p),
    }

    if let Some(seq) = start_new {
        if p.blocked.is_none() {
            let id = desired::run_id(&obs.uid, generation, seq);
            p.steps.push(Step::StartRun { run: id.clone() });
            let tasks = (0..spec.run.parallelism)
                .map(|slot| TaskStatus {
                    slot,
                    attempt: 1,
                    ..TaskStatus::default()
                })
                .collect();
            for slot in 0..spec.run.parallelism {
                p.steps.push(Step::RunTask { slot, attempt: 1 });
            }
            if seq > 1 || generation > 1 {
                p.cleanup.push(Step::ExpireRuns {
                    keep: spec.run.history_limit,
                });
            }
            st.run = Some(RunStatus {
                id,
                generation,
                started_at: now_s.clone(),
                tasks,
                copies: Some(copies.clone()),
                rerun: obs.rerun,
                ..RunStatus::default()
            });
            if st.run.is_some() {
                st.totals = st.totals.plus(&st.progress);
            }
            st.progress = Progress::default();
            st.last_run_time = Some(now_s.clone());
            st.next_run_time = None;
            st.phase = Phase::Provisioning;
            set_condition(
                &mut st.conditions,
                COMPLETE,
                false,
                "Running",
                "the run has started",
                &now_s,
            );
            if st.conditions.iter().any(|c| c.kind == SCHEDULED) {
                set_condition(
                    &mut st.conditions,
                    SCHEDULED,
                    true,
                    "Started",
                    "the run started on its tick",
                    &now_s,
                );
            }
        } else if st.phase != Phase::Failed {
            st.phase = Phase::Provisioning;
        }
    }

    if let Some(problem) = &p.blocked {
        if problem.terminal {
            st.phase = Phase::Failed;
        } else if st.phase == Phase::Pending {
            st.phase = Phase::Provisioning;
        }
    }
    st.observed_generation = generation;
    p.status = st;
    p
}

/// Plans a reconcile of a job the operator may not act on (`admission::admit` refused it): phase
/// Blocked, the `Admitted` condition naming the rules, and nothing but stopping the tasks an
/// earlier, admitted generation started. Nothing is observed first: a blocked job causes no AWS
/// read or write beyond those StopTasks.
pub fn blocked(
    prev: Option<&CopyJobStatus>,
    violations: &[Violation],
    now_ms: u64,
    generation: u64,
) -> Plan {
    let now_s = rfc3339(now_ms);
    let mut st = prev.cloned().unwrap_or_default();
    let mut steps = Vec::new();
    if let Some(run) = st.run.as_mut().filter(|r| r.finished_at.is_none()) {
        for arn in run.tasks.iter().filter_map(|t| t.arn.clone()) {
            steps.push(Step::StopTask {
                arn,
                reason: "ferry: job blocked by the operator's policy".into(),
            });
        }
        run.finished_at = Some(now_s.clone());
    }
    let reason = violations.first().map_or("Invalid", |v| v.rule);
    let message = violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    set_condition(
        &mut st.conditions,
        ADMITTED,
        false,
        reason,
        &message,
        &now_s,
    );
    st.phase = Phase::Blocked;
    st.observed_generation = generation;
    st.next_run_time = None;
    Plan {
        steps,
        blocked: Some(Problem {
            reason: reason.to_string(),
            message,
            terminal: true,
        }),
        status: st,
        requeue: None,
        corrections: Vec::new(),
        cleanup: Vec::new(),
    }
}

/// The status `plan` starts from for an admitted job: the `Admitted` condition true, and a job
/// that was Blocked starting over as Pending.
pub fn admitted(prev: Option<&CopyJobStatus>, now_ms: u64) -> Option<CopyJobStatus> {
    let mut st = prev.cloned()?;
    if st.phase == Phase::Blocked {
        st.phase = Phase::Pending;
    }
    if st.conditions.iter().any(|c| c.kind == ADMITTED) {
        let message = "the job is within the operator's policy";
        set_condition(
            &mut st.conditions,
            ADMITTED,
            true,
            "Admitted",
            message,
            &rfc3339(now_ms),
        );
    }
    Some(st)
}

/// Compares the slow-changing resources with the desired state; adds steps, conditions and
/// corrections.
fn check_infra(
    job: &CopyJob,
    st: &mut CopyJobStatus,
    infra: &Infra,
    settings: &Settings,
    now: &str,
    generation: u64,
    p: &mut Plan,
) {
    // Drift means "was ready for this very generation": a new generation's first check is
    // provisioning, not drift.
    let same_generation = st.observed_generation == generation;
    // Records a problem on its condition and blocks the job on it (a terminal problem wins).
    let not_ready = |st: &mut CopyJobStatus, p: &mut Plan, condition: &str, problem: &Problem| {
        let (reason, message) = (&problem.reason, &problem.message);
        set_condition(&mut st.conditions, condition, false, reason, message, now);
        if p.blocked
            .as_ref()
            .is_none_or(|b| !b.terminal && problem.terminal)
        {
            p.blocked = Some(problem.clone());
        }
    };
    // Puts a resource back (or creates it): drift when it was ready for this generation.
    let fix = |p: &mut Plan, st: &CopyJobStatus, condition: &str, kind: &'static str, step| {
        if same_generation && is_true(st, condition) {
            p.corrections.push(kind);
        }
        p.steps.push(step);
    };
    let ready = |st: &mut CopyJobStatus, condition: &str, message: &str| {
        set_condition(&mut st.conditions, condition, true, "Ready", message, now);
    };

    // Roles: the job's roles can be assumed, and ferry's task role is as it should be.
    match (&infra.roles, infra.task_role) {
        (Err(problem), _) => {
            not_ready(st, p, ROLES_READY, problem);
        }
        (Ok(()), RoleState::NotOwned) => {
            let problem = not_owned(
                &format!("IAM role {}", desired::role_name(&job.metadata.name)),
                settings,
            );
            not_ready(st, p, ROLES_READY, &problem);
        }
        (Ok(()), role) => {
            if role != ROLE_OK {
                fix(p, st, ROLES_READY, "task_role", Step::EnsureTaskRole);
            }
            ready(
                st,
                ROLES_READY,
                "source and destination roles can be assumed; the task role is in place",
            );
        }
    }

    // Where ferry's statement belongs now; statements it wrote elsewhere (the source moved) go.
    let src = &job.spec.source;
    let here = SourceGrant {
        account: src.account.clone(),
        region: src.region.clone(),
        bucket: src.bucket.clone(),
        role_arn: src.role_arn.clone(),
        sid: policy::statement_id(&settings.installation, &job.metadata.name),
    };
    let same_place =
        |g: &SourceGrant| g.account == here.account && g.bucket == here.bucket && g.sid == here.sid;
    for grant in st.source_policy.iter().filter(|g| !same_place(g)) {
        p.cleanup.push(Step::RemoveSourceGrant {
            grant: grant.clone(),
        });
    }
    match &infra.source_policy {
        Err(problem) => {
            not_ready(st, p, SOURCE_POLICY_READY, problem);
        }
        Ok(current) => match policy::merge(current.as_deref(), job, &settings.installation) {
            Ok(merged) => {
                // Recorded before it is written (`reconcile` stores new records first), so no
                // statement of ferry's is ever unknown to the finalizer.
                st.source_policy.retain(|g| !same_place(g));
                st.source_policy.push(here.clone());
                if merged.is_some() {
                    fix(
                        p,
                        st,
                        SOURCE_POLICY_READY,
                        "source_policy",
                        Step::PutSourcePolicy,
                    );
                }
                ready(
                    st,
                    SOURCE_POLICY_READY,
                    "the source bucket policy grants the destination role read access",
                );
            }
            Err(e @ policy::PolicyError::TooLarge { .. }) => {
                // Retrying cannot shrink the policy: someone must remove statements, or use
                // another bucket.
                let problem = Problem {
                    reason: "PolicyTooLarge".into(),
                    message: format!("source bucket {}: {e}", job.spec.source.bucket),
                    terminal: true,
                };
                not_ready(st, p, SOURCE_POLICY_READY, &problem);
            }
            Err(e) => {
                let problem = Problem {
                    reason: "InvalidBucketPolicy".into(),
                    message: format!("the source bucket's existing policy cannot be merged: {e}"),
                    terminal: false,
                };
                not_ready(st, p, SOURCE_POLICY_READY, &problem);
            }
        },
    }

    let dst = &job.spec.destination;
    let bucket_problem = match &infra.bucket {
        Err(problem) => Some(problem.clone()),
        Ok(BucketState::OwnedByOther) => Some(Problem {
            reason: "OwnedByOther".into(),
            message: format!(
                "destination bucket {} exists but is not owned by account {} (spec.destination.account); ferry writes nothing to it. Choose another bucket name, or correct the account",
                dst.bucket, dst.account
            ),
            terminal: true,
        }),
        Ok(BucketState::Exists { region: Some(r) }) if *r != dst.region => Some(Problem {
            reason: "RegionMismatch".into(),
            message: format!(
                "bucket {} is in {r}, the job says {}",
                dst.bucket, dst.region
            ),
            terminal: true,
        }),
        Ok(BucketState::Exists { .. }) => None,
        Ok(BucketState::Missing) if dst.create.is_some() => {
            fix(
                p,
                st,
                DESTINATION_READY,
                "destination_bucket",
                Step::CreateBucket,
            );
            None
        }
        Ok(BucketState::Missing) => Some(Problem {
            reason: "BucketNotFound".into(),
            message: format!(
                "bucket {} does not exist and the job does not ask to create it (destination.create)",
                dst.bucket
            ),
            terminal: false,
        }),
    };
    match bucket_problem {
        Some(problem) => {
            not_ready(st, p, DESTINATION_READY, &problem);
        }
        None => ready(
            st,
            DESTINATION_READY,
            &format!("bucket {} is ready in {}", dst.bucket, dst.region),
        ),
    }

    let want = desired::task_definition(job, settings);
    match &infra.task_definition {
        Err(problem) => not_ready(st, p, TASK_DEFINITION_READY, problem),
        Ok(current) => {
            if current.as_ref() != Some(&want) {
                let step = Step::RegisterTaskDefinition;
                fix(p, st, TASK_DEFINITION_READY, "task_definition", step);
            }
            ready(
                st,
                TASK_DEFINITION_READY,
                &format!("task definition family {} is current", want.family),
            );
        }
    }
}

/// The problem of a resource with ferry's name that this installation does not own.
pub fn not_owned(what: &str, settings: &Settings) -> Problem {
    Problem {
        reason: "NotOwned".into(),
        message: format!(
            "{what} exists but is not tagged {}={}; ferry neither adopts, changes nor deletes it. Delete or rename it, or rename the job",
            desired::OWNER_TAG,
            settings.installation
        ),
        terminal: true,
    }
}

/// Handles an active run: completion, deadline, stopped tasks and their replacements.
fn manage_run(
    job: &CopyJob,
    st: &mut CopyJobStatus,
    obs: &Observed,
    settings: &Settings,
    now_s: &str,
    p: &mut Plan,
) {
    let now = obs.now_ms;
    let spec = &job.spec;
    let Some(mut run) = st.run.clone() else {
        return;
    };
    let state = obs.run.clone().unwrap_or_default();
    st.progress = state.progress;

    if state.complete {
        run.finished_at = Some(now_s.to_string());
        st.phase = Phase::Succeeded;
        st.last_successful_time = Some(now_s.to_string());
        set_condition(
            &mut st.conditions,
            COMPLETE,
            true,
            "Completed",
            &format!(
                "run {} copied {} objects, skipped {}, {} failed",
                run.id,
                state.progress.objects_copied,
                state.progress.objects_skipped,
                state.progress.objects_failed
            ),
            now_s,
        );
        if spec.run.mode == RunMode::Sync {
            let next = spec
                .run
                .schedule
                .as_deref()
                .and_then(|e| next_tick(e, spec.run.time_zone.as_deref(), now));
            st.next_run_time = next.map(rfc3339);
            p.requeue = next.map(|t| Duration::from_millis(t.saturating_sub(now)));
        }
        st.run = Some(run);
        return;
    }

    let live: Vec<String> = run
        .tasks
        .iter()
        .filter_map(|t| t.arn.clone())
        .filter(|a| {
            matches!(
                obs.tasks.get(a),
                Some(TaskState::Pending | TaskState::Running)
            )
        })
        .collect();
    let fail_run = |run: &mut RunStatus,
                    st: &mut CopyJobStatus,
                    p: &mut Plan,
                    reason: &str,
                    message: String| {
        for arn in &live {
            p.steps.push(Step::StopTask {
                arn: arn.clone(),
                reason: format!("ferry: {reason}"),
            });
        }
        run.finished_at = Some(now_s.to_string());
        st.phase = Phase::Failed;
        set_condition(&mut st.conditions, COMPLETE, false, reason, &message, now_s);
    };

    if let Some(deadline) = spec.run.active_deadline_seconds {
        let started = epoch_ms(&run.started_at);
        if now.saturating_sub(started) > deadline.saturating_mul(1000) {
            let message = format!("run {} was active for longer than {deadline} s", run.id);
            fail_run(&mut run, st, p, "DeadlineExceeded", message);
            st.run = Some(run);
            return;
        }
    }

    let mut running = 0;
    let mut wake: Option<u64> = None;
    let mut exceeded = None;
    for i in 0..run.tasks.len() {
        let slot = run.tasks[i].clone();
        if let Some(arn) = &slot.arn {
            let observed = obs.tasks.get(arn).cloned().unwrap_or(TaskState::Missing);
            let worker = state
                .workers
                .get(&desired::task_id(slot.slot, slot.attempt))
                .map(String::as_str);
            let (kind, reason) = match observed {
                TaskState::Running => {
                    running += 1;
                    // A worker that stopped writing its heartbeat is hung or cut off: stop the
                    // task (its worker's last state, `running`, makes it count as failed).
                    let id = desired::task_id(slot.slot, slot.attempt);
                    let started = slot.started_at.as_deref().map_or(0, epoch_ms);
                    let last = state.heartbeats.get(&id).copied().unwrap_or(0).max(started);
                    let timeout =
                        u64::try_from(settings.heartbeat_timeout.as_millis()).unwrap_or(u64::MAX);
                    if timeout > 0 && last > 0 && now.saturating_sub(last) > timeout {
                        p.steps.push(Step::StopTask {
                            arn: arn.clone(),
                            reason: format!(
                                "ferry: no heartbeat from its worker for {} s",
                                now.saturating_sub(last) / 1000
                            ),
                        });
                    }
                    continue;
                }
                TaskState::Pending => {
                    running += 1;
                    continue;
                }
                TaskState::Stopped { stop_code, reason } => (
                    restart::classify_stop(stop_code.as_deref(), reason.as_deref(), worker),
                    reason,
                ),
                TaskState::Missing => {
                    // ECS is eventually consistent: a task RunTask just started may be unknown
                    // to DescribeTasks (and ListTasks) for a while. Wait out the grace period.
                    let started = slot.started_at.as_deref().map_or(0, epoch_ms);
                    let grace = u64::try_from(settings.missing_grace.as_millis()).unwrap_or(0);
                    if now < started.saturating_add(grace) {
                        running += 1;
                        let due = started.saturating_add(grace);
                        wake = Some(wake.map_or(due, |w| w.min(due)));
                        continue;
                    }
                    // Lost: stop it in case it runs after all, and replace it. Not the task's
                    // fault unless its worker said so.
                    p.steps.push(Step::StopTask {
                        arn: arn.clone(),
                        reason: "ferry: task lost (unknown to ECS past the grace period)".into(),
                    });
                    let kind = match worker {
                        Some("failed") => StopKind::Failed,
                        _ => StopKind::Platform,
                    };
                    (kind, Some("the task vanished from ECS".to_string()))
                }
            };
            let why = reason.unwrap_or_else(|| "stopped".into());
            let next = &mut run.tasks[i];
            next.attempt += 1;
            next.arn = None;
            next.started_at = None;
            next.placement_failures = 0;
            next.last_stop = Some(why);
            match kind {
                StopKind::Platform => run.platform_restarts += 1,
                StopKind::Interrupted => {
                    run.interruptions += 1;
                    p.corrections.push("task");
                }
                StopKind::Failed => {
                    run.failures += 1;
                    if run.failures > spec.run.backoff_limit {
                        exceeded = Some(run.failures);
                        break;
                    }
                    let at = now
                        + u64::try_from(
                            restart::backoff(run.failures, settings.restart_backoff).as_millis(),
                        )
                        .unwrap_or(0);
                    next.not_before = Some(rfc3339(at));
                }
            }
        }
        let slot = run.tasks[i].clone();
        let due = slot.not_before.as_deref().map(epoch_ms).unwrap_or(0);
        if due <= now {
            if p.blocked.is_none() {
                run.tasks[i].not_before = None;
                // Not counted as running until ECS reports it (RunTask may place nothing).
                p.steps.push(Step::RunTask {
                    slot: slot.slot,
                    attempt: slot.attempt,
                });
            }
        } else {
            wake = Some(wake.map_or(due, |w| w.min(due)));
        }
    }
    if let Some(failures) = exceeded {
        fail_run(
            &mut run,
            st,
            p,
            "BackoffLimitExceeded",
            format!(
                "{failures} task failures, more than backoffLimit {}",
                spec.run.backoff_limit
            ),
        );
        st.run = Some(run);
        return;
    }
    st.phase = if running > 0 {
        Phase::Running
    } else {
        Phase::Provisioning
    };
    if let Some(w) = wake {
        p.requeue = Some(Duration::from_millis(w - now));
    }
    st.run = Some(run);
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;
    const INST: &str = "0123abcd4567";

    fn job(extra_run: &str) -> CopyJob {
        let yaml = format!(
            r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: logs }}
spec:
  source: {{ account: "111111111111", region: eu-west-1, bucket: src, roleArn: "arn:aws:iam::111111111111:role/s" }}
  destination: {{ account: "222222222222", region: us-east-1, bucket: dst, roleArn: "arn:aws:iam::222222222222:role/d", create: {{}} }}
  run: {{ parallelism: 2, backoffLimit: 2 {extra_run} }}
"#
        );
        serde_saphyr::from_str(&yaml).expect("job")
    }

    fn settings() -> Settings {
        Settings {
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            table: "ferry".into(),
            cluster: "ferry".into(),
            image: "ferry:1".into(),
            log_group: "/ferry".into(),
            restart_backoff: Duration::from_secs(10),
            installation: INST.into(),
            task_boundary_arn: desired::task_boundary_arn("123456789012"),
            ..Settings::default()
        }
    }

    fn ready_infra(job: &CopyJob) -> Infra {
        let policy = policy::merge(None, job, INST).unwrap();
        Infra {
            roles: Ok(()),
            task_role: ROLE_OK,
            source_policy: Ok(policy),
            bucket: Ok(BucketState::Exists {
                region: Some("us-east-1".into()),
            }),
            task_definition: Ok(Some(desired::task_definition(job, &settings()))),
        }
    }

    fn observed(now: u64, infra: Option<Infra>) -> Observed {
        Observed {
            now_ms: now,
            generation: 1,
            infra,
            ..Observed::default()
        }
    }

    /// The status after the first reconcile of `job`, with both tasks started.
    fn started(job: &CopyJob) -> CopyJobStatus {
        let mut p = plan(
            job,
            None,
            &observed(T0, Some(ready_infra(job))),
            &settings(),
        );
        for (i, t) in p.status.run.as_mut().unwrap().tasks.iter_mut().enumerate() {
            t.arn = Some(format!("arn:task/{i}"));
        }
        p.status
    }

    fn running(arns: &[&str]) -> HashMap<String, TaskState> {
        arns.iter()
            .map(|a| (a.to_string(), TaskState::Running))
            .collect()
    }

    fn cond<'a>(s: &'a CopyJobStatus, kind: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.kind == kind).unwrap()
    }

    fn violation(rule: &'static str) -> Violation {
        Violation {
            rule,
            field: "spec.source.bucket".into(),
            message: "not allowed".into(),
        }
    }

    #[test]
    fn a_blocked_job_gets_no_steps_phase_blocked_and_the_rule_as_reason() {
        let p = blocked(None, &[violation("SourceNotAllowed")], T0, 1);
        assert!(p.steps.is_empty());
        assert_eq!(p.status.phase, Phase::Blocked);
        assert_eq!(p.status.observed_generation, 1);
        let c = cond(&p.status, ADMITTED);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "SourceNotAllowed")
        );
        assert!(c.message.contains("spec.source.bucket"), "{}", c.message);
        assert!(p.blocked.is_some_and(|b| b.terminal));
    }

    #[test]
    fn a_running_job_that_becomes_blocked_has_its_tasks_stopped_and_its_run_ended() {
        let j = job("");
        let st = started(&j);
        let p = blocked(Some(&st), &[violation("RoleNotAllowed")], T0 + 1000, 2);
        assert_eq!(
            p.steps
                .iter()
                .filter(|s| matches!(s, Step::StopTask { .. }))
                .count(),
            2
        );
        assert!(
            p.status
                .run
                .as_ref()
                .is_some_and(|r| r.finished_at.is_some())
        );
        // Once blocked, the run is over: blocking again stops nothing.
        let again = blocked(
            Some(&p.status),
            &[violation("RoleNotAllowed")],
            T0 + 2000,
            2,
        );
        assert!(again.steps.is_empty());
    }

    #[test]
    fn a_blocked_job_that_is_admitted_again_starts_over_from_pending() {
        let p = blocked(None, &[violation("SourceNotAllowed")], T0, 1);
        let st = admitted(Some(&p.status), T0 + 1000).expect("status");
        assert_eq!(st.phase, Phase::Pending);
        assert_eq!(cond(&st, ADMITTED).status, "True");
        let j = job("");
        let next = plan(
            &j,
            Some(&st),
            &observed(T0 + 1000, Some(ready_infra(&j))),
            &settings(),
        );
        assert_eq!(next.status.phase, Phase::Provisioning);
        assert!(next.steps.iter().any(|s| matches!(s, Step::RunTask { .. })));
        // A job never blocked gets no Admitted condition.
        let fresh = admitted(Some(&started(&j)), T0).expect("status");
        assert!(fresh.conditions.iter().all(|c| c.kind != ADMITTED));
    }

    #[test]
    fn a_new_job_gets_every_resource_and_a_run_with_one_task_per_slot() {
        let j = job("");
        let infra = Infra {
            roles: Ok(()),
            task_role: RoleState::Missing,
            source_policy: Ok(None),
            bucket: Ok(BucketState::Missing),
            task_definition: Ok(None),
        };
        let p = plan(&j, None, &observed(T0, Some(infra)), &settings());
        assert_eq!(p.steps[0], Step::EnsureTaskRole);
        assert!(matches!(p.steps[1], Step::PutSourcePolicy));
        assert_eq!(
            p.steps[2..],
            [
                Step::CreateBucket,
                Step::RegisterTaskDefinition,
                Step::StartRun { run: "g1r1".into() },
                Step::RunTask {
                    slot: 0,
                    attempt: 1
                },
                Step::RunTask {
                    slot: 1,
                    attempt: 1
                },
            ]
        );
        assert!(p.corrections.is_empty(), "creation is not drift");
        assert_eq!(p.status.phase, Phase::Provisioning);
        assert_eq!(p.status.observed_generation, 1);
        for kind in INFRA {
            assert_eq!(cond(&p.status, kind).status, "True", "{kind}");
        }
    }

    #[test]
    fn a_first_run_has_no_history_to_expire() {
        let j = job(", historyLimit: 0");
        let p = plan(&j, None, &observed(T0, Some(ready_infra(&j))), &settings());
        assert!(p.steps.iter().any(|s| matches!(s, Step::StartRun { .. })));
        assert!(p.cleanup.is_empty(), "{:?}", p.cleanup);
    }

    #[test]
    fn a_finished_job_at_rest_plans_nothing_and_keeps_its_status() {
        let j = job("");
        let mut st = started(&j);
        let mut obs = observed(T0 + 1000, None);
        obs.tasks = running(&["arn:task/0", "arn:task/1"]);
        obs.run = Some(RunState {
            complete: true,
            ..RunState::default()
        });
        let done = plan(&j, Some(&st), &obs, &settings()).status;
        assert_eq!(done.phase, Phase::Succeeded);
        assert_eq!(
            done.last_successful_time.as_deref(),
            Some(rfc3339(T0 + 1000).as_str()),
            "a success is dated"
        );
        assert_eq!(cond(&done, COMPLETE).status, "True");
        st = done;
        let again = plan(
            &j,
            Some(&st),
            &observed(T0 + 5000, Some(ready_infra(&j))),
            &settings(),
        );
        assert!(again.steps.is_empty(), "{:?}", again.steps);
        assert_eq!(
            again.status, st,
            "nothing moved, not even a transition time"
        );
    }

    #[test]
    fn drifted_resources_are_put_back_and_counted_per_kind() {
        let j = job("");
        let st = started(&j);
        let cases: Vec<(&str, Box<dyn Fn(&mut Infra)>, Step)> = vec![
            (
                "source_policy",
                Box::new(|i: &mut Infra| i.source_policy = Ok(None)),
                Step::PutSourcePolicy,
            ),
            (
                "destination_bucket",
                Box::new(|i: &mut Infra| i.bucket = Ok(BucketState::Missing)),
                Step::CreateBucket,
            ),
            (
                "task_definition",
                Box::new(|i: &mut Infra| i.task_definition = Ok(None)),
                Step::RegisterTaskDefinition,
            ),
            (
                "task_role",
                Box::new(|i: &mut Infra| {
                    i.task_role = RoleState::Present {
                        trust_ok: true,
                        policy_ok: false,
                        boundary_ok: true,
                    }
                }),
                Step::EnsureTaskRole,
            ),
        ];
        for (kind, breaks, step) in cases {
            let mut infra = ready_infra(&j);
            breaks(&mut infra);
            let mut obs = observed(T0 + 1000, Some(infra));
            obs.tasks = running(&["arn:task/0", "arn:task/1"]);
            obs.run = Some(RunState::default());
            let p = plan(&j, Some(&st), &obs, &settings());
            assert_eq!(p.corrections, [kind]);
            assert_eq!(p.steps, [step], "{kind}");
        }
    }

    #[test]
    fn a_job_whose_source_moved_removes_its_old_statement_after_the_new_one_is_in_place() {
        let j = job("");
        let st = started(&j);
        let first = st.source_policy.clone();
        assert_eq!(first.len(), 1, "the first statement is recorded");
        assert_eq!(first[0].bucket, "src");
        assert_eq!(first[0].sid, policy::statement_id(INST, "logs"));
        let mut moved = j.clone();
        moved.spec.source.bucket = "src2".into();
        let mut infra = ready_infra(&moved);
        infra.source_policy = Ok(None);
        let mut obs = observed(T0 + 1000, Some(infra));
        obs.generation = 2;
        let p = plan(&moved, Some(&st), &obs, &settings());
        assert!(matches!(p.steps[0], Step::PutSourcePolicy), "{:?}", p.steps);
        assert_eq!(
            p.cleanup,
            [
                Step::RemoveSourceGrant {
                    grant: first[0].clone()
                },
                Step::ExpireRuns { keep: 3 }
            ]
        );
        let buckets: Vec<&str> = p
            .status
            .source_policy
            .iter()
            .map(|g| g.bucket.as_str())
            .collect();
        assert_eq!(
            buckets,
            ["src", "src2"],
            "both recorded until the old one is removed"
        );
    }

    #[test]
    fn resources_of_another_installation_are_neither_adopted_nor_changed() {
        let j = job("");
        let mut infra = ready_infra(&j);
        infra.task_role = RoleState::NotOwned;
        infra.task_definition = Err(not_owned(
            "ECS task definition family ferry-logs",
            &settings(),
        ));
        let p = plan(&j, None, &observed(T0, Some(infra)), &settings());
        assert!(
            !p.steps.iter().any(|s| matches!(
                s,
                Step::EnsureTaskRole | Step::RegisterTaskDefinition | Step::RunTask { .. }
            )),
            "{:?}",
            p.steps
        );
        assert_eq!(p.status.phase, Phase::Failed);
        assert_eq!(cond(&p.status, ROLES_READY).reason, "NotOwned");
        assert_eq!(cond(&p.status, TASK_DEFINITION_READY).reason, "NotOwned");
        assert!(cond(&p.status, ROLES_READY).message.contains(INST));
    }

    #[test]
    fn a_task_role_without_its_boundary_is_drift_put_back() {
        let j = job("");
        let st = started(&j);
        let mut infra = ready_infra(&j);
        infra.task_role = RoleState::Present {
            trust_ok: true,
            policy_ok: true,
            boundary_ok: false,
        };
        let mut obs = observed(T0 + 1000, Some(infra));
        obs.tasks = running(&["arn:task/0", "arn:task/1"]);
        obs.run = Some(RunState::default());
        let p = plan(&j, Some(&st), &obs, &settings());
        assert_eq!(p.steps, [Step::EnsureTaskRole]);
        assert_eq!(p.corrections, ["task_role"]);
    }

    #[test]
    fn a_policy_with_only_other_statements_gets_ferrys_merged_in() {
        let j = job("");
        let other = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Keep","Effect":"Deny","Principal":"*","Action":"s3:DeleteBucket","Resource":"arn:aws:s3:::src"}]}"#;
        let mut infra = ready_infra(&j);
        infra.source_policy = Ok(Some(other.into()));
        let p = plan(&j, None, &observed(T0, Some(infra)), &settings());
        assert_eq!(p.steps[0], Step::PutSourcePolicy, "{:?}", p.steps);
    }

    #[test]
    fn failed_tasks_are_replaced_with_backoff_until_the_limit_then_the_job_fails() {
        let j = job("");
        let mut st = started(&j);
        let mut now = T0;
        let mut delays = Vec::new();
        for attempt in 1..=3u32 {
            // Slot 0's task dies; slot 1 keeps running.
            let mut obs = observed(now, None);
            obs.tasks = running(&["arn:task/1"]);
            let arn = if attempt == 1 {
                "arn:task/0".to_string()
            } else {
                format!("arn:task/0-{attempt}")
            };
            obs.tasks.insert(
                arn,
                TaskState::Stopped {
                    stop_code: Some("EssentialContainerExited".into()),
                    reason: Some("exit code 1".into()),
                },
            );
            obs.run = Some(RunState::default());
            let p = plan(&j, Some(&st), &obs, &settings());
            if attempt == 3 {
                assert_eq!(p.status.phase, Phase::Failed);
                assert_eq!(cond(&p.status, COMPLETE).reason, "BackoffLimitExceeded");
                assert_eq!(
                    p.steps,
                    [Step::StopTask {
                        arn: "arn:task/1".into(),
                        reason: "ferry: BackoffLimitExceeded".into()
                    }]
                );
                assert_eq!(p.status.run.as_ref().unwrap().failures, 3);
                return;
            }
            assert!(p.steps.is_empty(), "waits for the backoff: {:?}", p.steps);
            let slot = &p.status.run.as_ref().unwrap().tasks[0];
            assert_eq!(slot.attempt, attempt + 1);
            let due = epoch_ms(slot.not_before.as_deref().unwrap());
            delays.push((due - now) / 1000);
            assert_eq!(p.requeue, Some(Duration::from_millis(due - now)));
            // At the due time the next attempt starts.
            st = p.status;
            let mut obs = observed(due, None);
            obs.tasks = running(&["arn:task/1"]);
            obs.run = Some(RunState::default());
            let p = plan(&j, Some(&st), &obs, &settings());
            assert_eq!(
                p.steps,
                [Step::RunTask {
                    slot: 0,
                    attempt: attempt + 1
                }]
            );
            st = p.status;
            st.run.as_mut().unwrap().tasks[0].arn = Some(format!("arn:task/0-{}", attempt + 1));
            now = due;
        }
        assert_eq!(delays, [10, 20]);
    }

    #[test]
    fn platform_and_manual_stops_are_replaced_at_once_without_counting() {
        let j = job("");
        for (code, reason, worker, counted) in [
            (Some("SpotInterruption"), "spot", None, "platform"),
            (None, "stopped by hand", Some("stopped"), "interrupted"),
        ] {
            let st = started(&j);
            let mut obs = observed(T0 + 1000, None);
            obs.tasks = running(&["arn:task/1"]);
            obs.tasks.insert(
                "arn:task/0".into(),
                TaskState::Stopped {
                    stop_code: code.map(str::to_string),
                    reason: Some(reason.into()),
                },
            );
            let mut run = RunState::default();
            if let Some(w) = worker {
                run.workers.insert("s0a1".into(), w.into());
            }
            obs.run = Some(run);
            let p = plan(&j, Some(&st), &obs, &settings());
            assert_eq!(
                p.steps,
                [Step::RunTask {
                    slot: 0,
                    attempt: 2
                }],
                "{counted}"
            );
            let r = p.status.run.unwrap();
            assert_eq!(r.failures, 0);
            assert_eq!(
                (r.platform_restarts, r.interruptions),
                if counted == "platform" {
                    (1, 0)
                } else {
                    (0, 1)
                }
            );
        }
    }

    #[test]
    fn a_task_ecs_does_not_know_gets_a_grace_period_then_is_stopped_and_replaced_uncounted() {
        let j = job("");
        let mut st = started(&j);
        let grace = Duration::from_secs(60);
        let set = Settings {
            missing_grace: grace,
            ..settings()
        };
        for t in &mut st.run.as_mut().unwrap().tasks {
            t.started_at = Some(rfc3339(T0));
        }
        // (ms after the task started, its worker's last state, want: stopped, replaced at once
        // (a failure waits for its backoff), failures, platform restarts)
        let cases = [
            (1_000, None, false, false, 0, 0),
            (59_999, None, false, false, 0, 0),
            (60_000, None, true, true, 0, 1),
            (60_000, Some("failed"), true, false, 1, 0),
        ];
        for (after, worker, replaced, at_once, failures, platform) in cases {
            let mut obs = observed(T0 + after, None);
            obs.tasks = running(&["arn:task/0"]);
            obs.tasks.insert("arn:task/1".into(), TaskState::Missing);
            let mut run = RunState::default();
            if let Some(w) = worker {
                run.workers.insert(desired::task_id(1, 1), w.to_string());
            }
            obs.run = Some(run);
            let p = plan(&j, Some(&st), &obs, &set);
            let what = format!("{after} ms, worker {worker:?}");
            let stopped = p.steps.contains(&Step::StopTask {
                arn: "arn:task/1".into(),
                reason: "ferry: task lost (unknown to ECS past the grace period)".into(),
            });
            assert_eq!(stopped, replaced, "{what}: {:?}", p.steps);
            assert_eq!(
                p.steps.contains(&Step::RunTask {
                    slot: 1,
                    attempt: 2
                }),
                at_once,
                "{what}"
            );
            let r = p.status.run.as_ref().unwrap();
            assert_eq!(
                (r.failures, r.platform_restarts),
                (failures, platform),
                "{what}"
            );
            if !replaced {
                // Looked at again when the grace period ends.
                let left = Duration::from_millis(60_000 - after);
                assert!(
                    p.requeue.is_some_and(|d| d <= left),
                    "{what}: {:?}",
                    p.requeue
                );
                assert_eq!(p.status.phase, Phase::Running, "{what}");
            }
        }
        // A task from before start times were recorded that ECS does not know is lost at once.
        let mut obs = observed(T0 + 1000, None);
        obs.tasks = running(&["arn:task/0"]);
        obs.tasks.insert("arn:task/1".into(), TaskState::Missing);
        obs.run = Some(RunState::default());
        let p = plan(&j, Some(&started(&j)), &obs, &set);
        assert_eq!(p.status.run.unwrap().platform_restarts, 1);
    }

    #[test]
    fn a_running_task_whose_worker_stopped_writing_heartbeats_is_stopped() {
        let j = job("");
        let mut st = started(&j);
        for t in &mut st.run.as_mut().unwrap().tasks {
            t.started_at = Some(rfc3339(T0));
        }
        let set = Settings {
            heartbeat_timeout: Duration::from_secs(300),
            ..settings()
        };
        // (now, slot 0's last heartbeat (None: never wrote one), want it stopped)
        let cases = [
            (T0 + 60_000, Some(T0 + 55_000), false),
            (T0 + 400_000, Some(T0 + 390_000), false),
            (T0 + 400_000, Some(T0 + 99_000), true),
            // Never wrote one: judged from the task's start.
            (T0 + 200_000, None, false),
            (T0 + 301_000, None, true),
        ];
        for (now, heartbeat, stopped) in cases {
            let mut obs = observed(now, None);
            obs.tasks = running(&["arn:task/0", "arn:task/1"]);
            let mut run = RunState::default();
            run.heartbeats.insert(desired::task_id(1, 1), now - 1000);
            if let Some(h) = heartbeat {
                run.heartbeats.insert(desired::task_id(0, 1), h);
            }
            obs.run = Some(run);
            let p = plan(&j, Some(&st), &obs, &set);
            let stops: Vec<&Step> = p
                .steps
                .iter()
                .filter(|s| matches!(s, Step::StopTask { .. }))
                .collect();
            let want = usize::from(stopped);
            assert_eq!(
                stops.len(),
                want,
                "now {now}, heartbeat {heartbeat:?}: {stops:?}"
            );
            if stopped {
                assert!(
                    matches!(stops[0], Step::StopTask { arn, reason } if arn == "arn:task/0" && reason.contains("no heartbeat")),
                    "{stops:?}"
                );
            }
        }
    }

    #[test]
    fn a_rerun_request_starts_one_new_run_once_the_current_run_has_finished() {
        let once = job("");
        let sync = job(", mode: Sync, schedule: \"0 0 1 1 *\"");
        let finish = |j: &CopyJob| {
            let mut obs = observed(T0 + 1000, None);
            obs.tasks = running(&["arn:task/0", "arn:task/1"]);
            obs.run = Some(RunState {
                complete: true,
                ..RunState::default()
            });
            plan(j, Some(&started(j)), &obs, &settings()).status
        };
        let failed = {
            let mut st = finish(&once);
            st.phase = Phase::Failed;
            st
        };
        // (what, job, status before, the job's rerun counter, run id wanted, rerun recorded)
        let cases: Vec<(&str, &CopyJob, CopyJobStatus, u64, &str, u64)> = vec![
            (
                "a finished Once job without a request stays finished",
                &once,
                finish(&once),
                0,
                "g1r1",
                0,
            ),
            (
                "a Succeeded Once job asked to rerun starts run 2",
                &once,
                finish(&once),
                1,
                "g1r2",
                1,
            ),
            (
                "a Failed Once job asked to rerun starts run 2",
                &once,
                failed,
                1,
                "g1r2",
                1,
            ),
            (
                "a Sync job between ticks asked to rerun starts at once",
                &sync,
                finish(&sync),
                1,
                "g1r2",
                1,
            ),
            (
                "an active run is not replaced by a request",
                &once,
                started(&once),
                1,
                "g1r1",
                0,
            ),
            (
                "two requests while finished start one run that records both",
                &once,
                finish(&once),
                2,
                "g1r2",
                2,
            ),
        ];
        for (what, j, prev, rerun, run, recorded) in cases {
            let mut obs = observed(T0 + 5000, None);
            obs.tasks = running(&["arn:task/0", "arn:task/1"]);
            obs.run = Some(RunState::default());
            obs.rerun = rerun;
            let p = plan(j, Some(&prev), &obs, &settings());
            let r = p.status.run.as_ref().unwrap();
            assert_eq!(r.id, run, "{what}");
            assert_eq!(r.rerun, recorded, "{what}");
            let starts = p
                .steps
                .iter()
                .filter(|s| matches!(s, Step::StartRun { .. }))
                .count();
            assert_eq!(starts, usize::from(run == "g1r2"), "{what}");
            let expires = p.cleanup.contains(&Step::ExpireRuns { keep: 3 });
            assert_eq!(
                expires,
                run == "g1r2",
                "{what}: a second run expires history beyond the limit"
            );
        }
        // The new run's record consumes the request: the next pass starts nothing more.
        let mut obs = observed(T0 + 6000, None);
        obs.rerun = 1;
        let again = plan(&once, Some(&finish(&once)), &obs, &settings()).status;
        let mut done = again.clone();
        done.run.as_mut().unwrap().finished_at = Some(rfc3339(T0 + 7000));
        let p = plan(&once, Some(&done), &obs, &settings());
        assert!(
            p.steps.iter().all(|s| !matches!(s, Step::StartRun { .. })),
            "{:?}",
            p.steps
        );
    }

    #[test]
    fn a_spec_change_restarts_only_what_it_must_and_replaces_a_run_only_once_its_tasks_stopped() {
        let base = job("");
        let active = started(&base);
        let succeeded = {
            let mut obs = observed(T0 + 1000, None);
            obs.tasks = running(&["arn:task/0", "arn:task/1"]);
            obs.run = Some(RunState {
                complete: true,
                ..RunState::default()
            });
            plan(&base, Some(&active), &obs, &settings()).status
        };
        assert_eq!(succeeded.phase, Phase::Succeeded);
        let with = |f: &dyn Fn(&mut CopyJob)| {
            let mut j = base.clone();
            f(&mut j);
            j
        };
        let new_source = with(&|j| j.spec.source.prefix = "other/".into());
        let more_retries = with(&|j| j.spec.run.backoff_limit = 9);
        let deadline = with(&|j| j.spec.run.active_deadline_seconds = Some(3600));
        let wider = with(&|j| j.spec.run.parallelism = 3);
        let stopped = || {
            let stop = TaskState::Stopped {
                stop_code: Some("UserInitiated".into()),
                reason: None,
            };
            [("arn:task/0", stop.clone()), ("arn:task/1", stop)]
                .into_iter()
                .map(|(a, s)| (a.to_string(), s))
                .collect::<HashMap<_, _>>()
        };
        // Generation 2's run with its two slots' first tasks.
        let new_run = || {
            vec![
                Step::StartRun { run: "g2r1".into() },
                Step::RunTask {
                    slot: 0,
                    attempt: 1,
                },
                Step::RunTask {
                    slot: 1,
                    attempt: 1,
                },
            ]
        };
        let superseded = |i: u32| Step::StopTask {
            arn: format!("arn:task/{i}"),
            reason: "ferry: superseded by generation 2".into(),
        };
        // (what, new spec, status before, tasks ECS reports, steps wanted, phase wanted, run id)
        let cases: Vec<(
            &str,
            &CopyJob,
            &CopyJobStatus,
            HashMap<String, TaskState>,
            Vec<Step>,
            Phase,
            &str,
        )> = vec![
            (
                "new source, tasks running: stop them, start nothing yet",
                &new_source,
                &active,
                running(&["arn:task/0", "arn:task/1"]),
                vec![superseded(0), superseded(1)],
                Phase::Provisioning,
                "g1r1",
            ),
            (
                "new source, old tasks stopped: the new run starts",
                &new_source,
                &active,
                stopped(),
                new_run(),
                Phase::Provisioning,
                "g2r1",
            ),
            (
                "backoffLimit of an active run: it carries on",
                &more_retries,
                &active,
                running(&["arn:task/0", "arn:task/1"]),
                vec![],
                Phase::Running,
                "g1r1",
            ),
            (
                "parallelism of an active run: the new slot's task starts",
                &wider,
                &active,
                running(&["arn:task/0", "arn:task/1"]),
                vec![Step::RunTask {
                    slot: 2,
                    attempt: 1,
                }],
                Phase::Running,
                "g1r1",
            ),
            (
                "deadline of a Succeeded Once job: nothing copies again",
                &deadline,
                &succeeded,
                HashMap::new(),
                vec![],
                Phase::Succeeded,
                "g1r1",
            ),
            (
                "parallelism of a Succeeded Once job: nothing copies again",
                &wider,
                &succeeded,
                HashMap::new(),
                vec![],
                Phase::Succeeded,
                "g1r1",
            ),
            (
                "new source of a Succeeded Once job: a new run at once",
                &new_source,
                &succeeded,
                HashMap::new(),
                new_run(),
                Phase::Provisioning,
                "g2r1",
            ),
        ];
        for (what, j, prev, tasks, steps, phase, run) in cases {
            let mut obs = observed(T0 + 2000, None);
            obs.generation = 2;
            obs.tasks = tasks;
            obs.run = Some(RunState::default());
            let p = plan(j, Some(prev), &obs, &settings());
            assert_eq!(p.steps, steps, "{what}");
            assert_eq!(p.status.phase, phase, "{what}");
            let r = p.status.run.as_ref().unwrap();
            assert_eq!(r.id, run, "{what}");
            assert_eq!(p.status.observed_generation, 2, "{what}");
            if run == "g1r1" && steps.is_empty() {
                assert_eq!(
                    r.generation, 2,
                    "{what}: the run carries the new generation"
                );
            }
            if phase == Phase::Provisioning && run == "g1r1" {
                assert_eq!(cond(&p.status, COMPLETE).reason, "Replacing", "{what}");
            }
        }
    }

    #[test]
    fn schedules_are_read_in_their_time_zone_across_daylight_saving_changes() {
        let ms = |t: &str| epoch_ms(t);
        // (expression, zone, after, next tick)
        let cases = [
            (
                "0 3 * * *",
                None,
                "2026-03-28T12:00:00Z",
                "2026-03-29T03:00:00Z",
            ),
            // Berlin: CET (+1) on 28 March, CEST (+2) from 29 March 02:00 local.
            (
                "0 3 * * *",
                Some("Europe/Berlin"),
                "2026-03-27T12:00:00Z",
                "2026-03-28T02:00:00Z",
            ),
            (
                "0 3 * * *",
                Some("Europe/Berlin"),
                "2026-03-28T12:00:00Z",
                "2026-03-29T01:00:00Z",
            ),
            (
                "0 9 * * 1",
                Some("America/New_York"),
                "2026-11-01T00:00:00Z",
                "2026-11-02T14:00:00Z",
            ),
            // An unknown zone (refused by validation) reads as UTC.
            (
                "0 3 * * *",
                Some("Nowhere/Else"),
                "2026-03-28T12:00:00Z",
                "2026-03-29T03:00:00Z",
            ),
        ];
        for (expr, tz, after, want) in cases {
            assert_eq!(
                next_tick(expr, tz, ms(after)).map(rfc3339),
                Some(want.to_string()),
                "{expr} in {tz:?} after {after}"
            );
        }
    }

    #[test]
    fn a_tick_missed_by_more_than_the_starting_deadline_is_skipped() {
        // (tick, now, startingDeadlineSeconds, run it)
        let cases = [
            (T0, T0, None, true),
            (T0, T0 + 86_400_000, None, true),
            (T0, T0 + 60_000, Some(60), true),
            (T0, T0 + 60_001, Some(60), false),
        ];
        for (tick, now, deadline, want) in cases {
            assert_eq!(
                due_tick(tick, now, deadline),
                want,
                "{tick} {now} {deadline:?}"
            );
        }
        // In a plan: the run is not started, the next tick is set, the skip is recorded.
        let j = job(", mode: Sync, schedule: \"0 * * * *\", startingDeadlineSeconds: 60");
        let mut obs = observed(T0, None);
        obs.run = Some(RunState {
            complete: true,
            ..RunState::default()
        });
        let done = plan(&j, Some(&started(&j)), &obs, &settings()).status;
        let tick = epoch_ms(done.next_run_time.as_deref().unwrap());
        let late = tick + 120_000;
        let p = plan(&j, Some(&done), &observed(late, None), &settings());
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert_eq!(
            p.status.next_run_time.as_deref().map(epoch_ms),
            Some(tick + 3_600_000)
        );
        assert_eq!(
            cond(&p.status, SCHEDULED).reason,
            "StartingDeadlineExceeded"
        );
        // Without the deadline the late tick runs.
        let j = job(", mode: Sync, schedule: \"0 * * * *\"");
        let p = plan(&j, Some(&done), &observed(late, None), &settings());
        assert!(p.steps.iter().any(|s| matches!(s, Step::StartRun { .. })));
    }

    #[test]
    fn what_apply_reports_is_settled_into_the_status_in_one_place() {
        let j = job("");
        let planned = plan(&j, None, &observed(T0, Some(ready_infra(&j))), &settings()).status;
        let g = SourceGrant {
            account: "111111111111".into(),
            region: "eu-west-1".into(),
            bucket: "old".into(),
            role_arn: "arn:aws:iam::111111111111:role/s".into(),
            sid: "FerryOld".into(),
        };
        let mut st = planned.clone();
        st.source_policy.push(g.clone());
        let reports = [
            Applied::TaskNotPlaced {
                slot: 1,
                reason: "RESOURCE:ENI".into(),
                message: "no ENI".into(),
                at_ms: T0,
            },
            Applied::TaskStarted {
                slot: 0,
                arn: "arn:task/0".into(),
                task_definition: Some("td:1".into()),
                at_ms: T0 + 10,
            },
            Applied::GrantRemoved(g.clone()),
        ];
        settle(&mut st, &reports, &settings());
        let run = st.run.as_ref().unwrap();
        let (s0, s1) = (&run.tasks[0], &run.tasks[1]);
        assert_eq!(s0.arn.as_deref(), Some("arn:task/0"));
        assert_eq!(s0.started_at.as_deref(), Some(rfc3339(T0 + 10).as_str()));
        assert_eq!(run.task_definition.as_deref(), Some("td:1"), "pinned");
        assert_eq!((s1.arn.as_deref(), s1.placement_failures), (None, 1));
        // The restart backoff (10 s) before the next placement try.
        assert_eq!(
            s1.not_before.as_deref(),
            Some(rfc3339(T0 + 10_000).as_str())
        );
        assert_eq!(run.placement_failures, 1);
        assert_eq!(cond(&st, TASKS_PLACED).reason, "RESOURCE:ENI");
        assert!(
            !st.source_policy.contains(&g),
            "the removed grant is forgotten"
        );
        assert_eq!(st.source_policy, planned.source_policy, "the others stay");
        // A later start does not move the pin; a placed task sets TasksPlaced back to True.
        settle(
            &mut st,
            &[Applied::TaskStarted {
                slot: 1,
                arn: "arn:task/1".into(),
                task_definition: Some("td:2".into()),
                at_ms: T0 + 20_000,
            }],
            &settings(),
        );
        assert_eq!(
            st.run.as_ref().unwrap().task_definition.as_deref(),
            Some("td:1")
        );
        assert_eq!(cond(&st, TASKS_PLACED).status, "True");
        // A failed step: its condition, and Failed if terminal.
        let mut failed = planned.clone();
        settle(
            &mut failed,
            &[Applied::Failed {
                condition: DESTINATION_READY,
                problem: Problem {
                    reason: "OwnedByOther".into(),
                    message: "taken".into(),
                    terminal: true,
                },
                at_ms: T0,
            }],
            &settings(),
        );
        assert_eq!(failed.phase, Phase::Failed);
        assert_eq!(cond(&failed, DESTINATION_READY).reason, "OwnedByOther");
    }

    #[test]
    fn a_new_schedule_moves_a_finished_sync_jobs_next_run_without_starting_one() {
        let j = job(", mode: Sync, schedule: \"0 0 * * *\"");
        let mut obs = observed(T0, None);
        obs.run = Some(RunState {
            complete: true,
            ..RunState::default()
        });
        let done = plan(&j, Some(&started(&j)), &obs, &settings()).status;
        let daily = epoch_ms(done.next_run_time.as_deref().unwrap());
        let mut hourly = j.clone();
        hourly.spec.run.schedule = Some("0 * * * *".into());
        let mut obs = observed(T0 + 1000, None);
        obs.generation = 2;
        let p = plan(&hourly, Some(&done), &obs, &settings());
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        let next = epoch_ms(p.status.next_run_time.as_deref().unwrap());
        assert!(next < daily && next <= T0 + 3_600_000, "{next} vs {daily}");
        assert_eq!(p.status.phase, Phase::Succeeded);
    }

    #[test]
    fn a_sync_job_starts_the_next_run_on_its_tick_and_folds_progress_into_totals() {
        let j = job(", mode: Sync, schedule: \"*/5 * * * *\"");
        let st = started(&j);
        let mut obs = observed(T0, None);
        obs.run = Some(RunState {
            complete: true,
            progress: Progress {
                bytes_copied: 7,
                ..Progress::default()
            },
            ..RunState::default()
        });
        let done = plan(&j, Some(&st), &obs, &settings());
        let next = epoch_ms(done.status.next_run_time.as_deref().unwrap());
        assert!(next > T0 && next <= T0 + 300_000);
        assert_eq!(done.requeue, Some(Duration::from_millis(next - T0)));
        // Before the tick: nothing. At the tick: run 2.
        let early = plan(
            &j,
            Some(&done.status),
            &observed(next - 1, None),
            &settings(),
        );
        assert!(early.steps.is_empty());
        let tick = plan(&j, Some(&done.status), &observed(next, None), &settings());
        assert_eq!(tick.steps[0], Step::StartRun { run: "g1r2".into() });
        assert_eq!(tick.status.totals.bytes_copied, 7);
        assert_eq!(tick.status.progress, Progress::default());
    }

    #[test]
    fn a_source_policy_that_would_pass_20_kib_fails_the_job_as_policy_too_large() {
        let j = job("");
        let mut infra = ready_infra(&j);
        let statements: Vec<serde_json::Value> = (0..200)
            .map(|i| {
                serde_json::json!({"Sid": format!("F{i}"), "Effect": "Deny", "Principal": "*",
                "Action": "s3:DeleteObject", "Resource": format!("arn:aws:s3:::src/{i:0>80}")})
            })
            .collect();
        infra.source_policy = Ok(Some(
            serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string(),
        ));
        let p = plan(&j, None, &observed(T0, Some(infra)), &settings());
        assert!(
            p.steps
                .iter()
                .all(|s| !matches!(s, Step::PutSourcePolicy | Step::RunTask { .. }))
        );
        assert_eq!(p.status.phase, Phase::Failed);
        assert_eq!(
            cond(&p.status, SOURCE_POLICY_READY).reason,
            "PolicyTooLarge"
        );
        assert!(p.blocked.unwrap().terminal);
    }

    #[test]
    fn a_bucket_owned_by_another_account_fails_the_job_without_starting_tasks() {
        let j = job("");
        let mut infra = ready_infra(&j);
        infra.bucket = Ok(BucketState::OwnedByOther);
        let p = plan(&j, None, &observed(T0, Some(infra)), &settings());
        assert!(
            p.steps
                .iter()
                .all(|s| !matches!(s, Step::RunTask { .. } | Step::StartRun { .. }))
        );
        assert_eq!(p.status.phase, Phase::Failed);
        assert_eq!(cond(&p.status, DESTINATION_READY).reason, "OwnedByOther");
        assert!(p.blocked.unwrap().terminal);
    }

    #[test]
    fn suspending_stops_the_tasks_and_the_deadline_fails_the_run() {
        let st = started(&job(""));
        let mut obs = observed(T0 + 1000, None);
        obs.tasks = running(&["arn:task/0"]);
        let p = plan(&job(", suspend: true"), Some(&st), &obs, &settings());
        assert_eq!(p.status.phase, Phase::Suspended);
        assert_eq!(p.steps.len(), 1);

        let j = job(", activeDeadlineSeconds: 60");
        let st = started(&j);
        let mut obs = observed(T0 + 61_000, None);
        obs.tasks = running(&["arn:task/0", "arn:task/1"]);
        obs.run = Some(RunState::default());
        let p = plan(&j, Some(&st), &obs, &settings());
        assert_eq!(p.status.phase, Phase::Failed);
        assert_eq!(cond(&p.status, COMPLETE).reason, "DeadlineExceeded");
        assert_eq!(p.steps.len(), 2);
    }

    #[test]
    fn a_resumed_job_whose_run_had_finished_shows_the_runs_outcome_again() {
        let finished = |complete: bool| {
            let j = job("");
            let mut obs = observed(T0 + 1000, None);
            obs.run = Some(RunState {
                complete,
                ..RunState::default()
            });
            let mut st = plan(&j, Some(&started(&j)), &obs, &settings()).status;
            if !complete {
                st.run.as_mut().unwrap().finished_at = Some(rfc3339(T0 + 1000));
                set_condition(
                    &mut st.conditions,
                    COMPLETE,
                    false,
                    "DeadlineExceeded",
                    "m",
                    "t",
                );
            }
            st
        };
        for (what, before, sync, wanted) in [
            ("a Succeeded Once job", finished(true), "", Phase::Succeeded),
            ("a Failed Once job", finished(false), "", Phase::Failed),
            (
                "a Sync job between ticks",
                finished(true),
                ", mode: Sync, schedule: \"0 0 1 1 *\"",
                Phase::Succeeded,
            ),
        ] {
            let suspended = plan(
                &job(&format!("{sync}, suspend: true")),
                Some(&before),
                &observed(T0 + 2000, None),
                &settings(),
            )
            .status;
            assert_eq!(suspended.phase, Phase::Suspended, "{what}");
            let resumed = plan(
                &job(sync),
                Some(&suspended),
                &observed(T0 + 3000, None),
                &settings(),
            );
            assert_eq!(resumed.status.phase, wanted, "{what}");
            assert!(
                resumed
                    .steps
                    .iter()
                    .all(|s| !matches!(s, Step::StartRun { .. })),
                "{what}: {:?}",
                resumed.steps
            );
        }
    }

    #[test]
    fn the_schedule_period_is_the_time_between_the_next_two_ticks() {
        let period = |extra: &str| schedule_period(&job(extra).spec.run, T0);
        assert_eq!(period(""), None, "a Once job has none");
        assert_eq!(
            period(", mode: Sync, schedule: \"*/15 * * * *\""),
            Some(900)
        );
        assert_eq!(
            period(", mode: Sync, schedule: \"0 3 * * *\""),
            Some(86_400)
        );
        assert_eq!(
            period(", mode: Sync, schedule: \"0 3 * * 1\""),
            Some(604_800)
        );
    }

    #[test]
    fn condition_times_move_only_when_the_status_flips() {
        let mut c = Vec::new();
        set_condition(&mut c, "A", true, "Ready", "m", "t1");
        set_condition(&mut c, "A", true, "Ready", "m2", "t2");
        assert_eq!(c[0].last_transition_time, "t1");
        set_condition(&mut c, "A", false, "Broken", "m3", "t3");
        assert_eq!(c[0].last_transition_time, "t3");
    }
}
