//! `reconcile(job, ctx) -> Result<Action>` and `error_policy`: what the runtime calls for one
//! job. Observe what exists, plan with a pure function, apply the plan's steps, write the status
//! in one place. A job marked for deletion goes to the finalizer (`finalizer.rs`) through the
//! same entry point, as kube-runtime's `finalizer()` does.

use std::collections::HashMap;

use super::plan::{self, TaskState};
use super::queue::Outcome;
use super::{Action, Context, ReconcileError, admission, apply, finalizer, observe};
use crate::model::{CopyJobStatus, Phase};
use crate::store::StoredJob;

/// Whether a resync should reconcile a job, from its listed record alone: anything in motion,
/// anything not ready, a drift check or a schedule tick that is due. A finished job at rest costs
/// nothing between drift checks. Pure.
pub fn needs_attention(stored: &StoredJob, drift_due: bool, now_ms: u64) -> bool {
    if stored.deletion_requested_at.is_some() || drift_due {
        return true;
    }
    let Some(s) = stored.job.status.as_ref() else {
        return true;
    };
    if s.observed_generation != stored.generation || !plan::infra_ready(Some(s), stored.generation)
    {
        return true;
    }
    if stored.job.spec.run.suspend {
        return s.phase != Phase::Suspended;
    }
    // Blocked waits for a spec change (a stream event) or a drift check (the policy may have
    // changed with a restart).
    if s.phase == Phase::Blocked {
        return false;
    }
    match &s.run {
        None => true,
        Some(r) if r.finished_at.is_none() || stored.rerun > r.rerun => true,
        Some(_) => s
            .next_run_time
            .as_deref()
            .is_some_and(|t| plan::epoch_ms(t) <= now_ms),
    }
}

/// Reconciles one job: observe, plan, apply, write status.
pub async fn reconcile(name: &str, ctx: &Context) -> Result<Action, ReconcileError> {
    let Some(stored) = ctx.store.get_job(name).await? else {
        ctx.metrics.forget_job(name);
        return Ok(Action::await_change());
    };
    tracing::Span::current().record("generation", stored.generation);
    if stored.deletion_requested_at.is_some() {
        return finalizer::finalize(ctx, &stored).await;
    }
    let status = stored.job.status.as_ref();
    // The stored spec is validated and judged against the operator's policy on every read:
    // whoever can write the table is a job author, not the operator's deployer.
    let violations = admission::admit(&stored.job, &ctx.policy, &ctx.settings);
    if !violations.is_empty() {
        ctx.mark_checked(name);
        return reconcile_blocked(ctx, &stored, &violations).await;
    }
    let check = ctx.drift_due(name) || !plan::infra_ready(status, stored.generation);
    let obs = observe::observe(ctx, &stored, check).await?;
    if check {
        ctx.mark_checked(name);
    }
    let start = plan::admitted(status, obs.now_ms);
    let mut p = plan::plan(&stored.job, start.as_ref(), &obs, &ctx.settings);
    for kind in &p.corrections {
        tracing::warn!(job = %name, kind, "drift: putting the resource back");
        ctx.metrics.corrected(kind);
    }
    // A statement is recorded in the status before it is written, so the finalizer knows every
    // statement ferry may have put anywhere, whatever happens between the two writes.
    let mut status_version = stored.status_version;
    let known = |g: &crate::model::SourceGrant| status.is_some_and(|s| s.source_policy.contains(g));
    if !p.status.source_policy.iter().all(known) {
        let mut intent = status.cloned().unwrap_or_default();
        for g in &p.status.source_policy {
            if !intent.source_policy.contains(g) {
                intent.source_policy.push(g.clone());
            }
        }
        status_version = ctx.store.put_status(name, &intent, status_version).await?;
    }
    let mut reported = Vec::new();
    let applied = apply::apply(ctx, &stored, &p.steps, &p.status, &mut reported).await;
    // Statements in buckets the job no longer reads go whatever became of the steps: a grant
    // nobody needs is not kept because, say, a task cannot start.
    let cleaned = apply::apply(ctx, &stored, &p.cleanup, &p.status, &mut reported).await;
    let applied = match (applied, cleaned) {
        (Err(f), Err(c)) => {
            tracing::warn!(job = %name, error = %c.error, "cannot remove an old source statement");
            Err(f)
        }
        (a, c) => a.and(c),
    };
    if let Err(f) = &applied {
        if matches!(f.error, ReconcileError::LeaseLost) {
            // Nothing to record: another replica leads now, or will.
            return Err(ReconcileError::LeaseLost);
        }
        reported.push(plan::Applied::Failed {
            condition: f.condition,
            problem: f.problem.clone(),
            at_ms: obs.now_ms,
        });
    }
    plan::settle(&mut p.status, &reported, &ctx.settings);
    if status != Some(&p.status) {
        ctx.store
            .put_status(name, &p.status, status_version)
            .await?;
        if status.map(|s| s.phase) != Some(p.status.phase) {
            tracing::info!(job = %name, phase = p.status.phase.as_str(), "phase changed");
        }
    }
    let running = running_tasks(&p.status, &obs.tasks);
    ctx.metrics.observe_job(name, &p.status, running);
    ctx.metrics.observe_schedule(
        name,
        plan::schedule_period(&stored.job.spec.run, obs.now_ms),
    );
    applied.map_err(|f| f.error)?;
    if let Some(problem) = p.blocked {
        if !problem.terminal {
            return Err(ReconcileError::Blocked(problem));
        }
    }
    let active = p
        .status
        .run
        .as_ref()
        .is_some_and(|r| r.finished_at.is_none());
    Ok(Action(match (p.requeue, active) {
        (Some(d), true) => Some(d.min(ctx.timing.task_poll)),
        (Some(d), false) => Some(d),
        (None, true) => Some(ctx.timing.task_poll),
        (None, false) => None,
    }))
}

/// A job the operator may not act on: Blocked, with nothing observed and nothing written but
/// its status (and StopTask for tasks an earlier, admitted generation started).
async fn reconcile_blocked(
    ctx: &Context,
    stored: &StoredJob,
    violations: &[admission::Violation],
) -> Result<Action, ReconcileError> {
    let name = stored.name();
    let status = stored.job.status.as_ref();
    let now = crate::store::runs::now_ms();
    let mut p = plan::blocked(status, violations, now, stored.generation);
    let mut reported = Vec::new();
    let applied = apply::apply(ctx, stored, &p.steps, &p.status, &mut reported).await;
    plan::settle(&mut p.status, &reported, &ctx.settings);
    if status != Some(&p.status) {
        ctx.store
            .put_status(name, &p.status, stored.status_version)
            .await?;
        tracing::warn!(job = %name, violations = %p.blocked.as_ref().map(|b| b.message.as_str()).unwrap_or_default(), "job blocked: outside the operator's policy or invalid");
    }
    ctx.metrics.observe_job(name, &p.status, 0);
    applied.map_err(|f| f.error)?;
    Ok(Action::await_change())
}

fn running_tasks(status: &CopyJobStatus, tasks: &HashMap<String, TaskState>) -> usize {
    // A finished run's tasks are on their way out.
    status
        .run
        .as_ref()
        .filter(|r| r.finished_at.is_none())
        .map_or(0, |r| {
            r.tasks
                .iter()
                .filter_map(|t| t.arn.as_ref())
                .filter(|a| matches!(tasks.get(*a), Some(TaskState::Running)))
                .count()
        })
}

/// Decides what a failed reconcile means: logged and counted; the queue backs the job off
/// (exponential, jittered, reset on success) unless the error is terminal, in which case the
/// job waits for a change to its spec (or the next drift check).
pub fn error_policy(name: &str, err: &ReconcileError, _ctx: &Context) -> Outcome {
    match err.kind().fails_again() {
        true => {
            tracing::error!(job = %name, error = %err, "reconcile failed; waiting for a change");
            Outcome::Requeue(None)
        }
        _ => {
            tracing::warn!(job = %name, error = %err, "reconcile failed; backing off");
            Outcome::Failed
        }
    }
}
