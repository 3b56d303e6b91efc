//! The finalizer: a job marked for deletion gets phase Deleting; then, like a reconcile,
//! observe (`observe::deletion`) → pure plan (`deletion::plan`) → apply (`apply::cleanup`)
//! removes what ferry made for it, its records last. A cleanup that cannot finish records why in the
//! `Finalized` condition and is tried again with backoff; the job stays until it can finish.

use super::plan;
use super::{Action, Context, ReconcileError, apply, deletion, observe};
use crate::model::Phase;
use crate::store::StoredJob;

/// The condition a deletion that cannot finish records.
pub const FINALIZED: &str = "Finalized";

/// The finalizer: phase Deleting, then observe → plan → cleanup, the records last. Waiting for
/// tasks to stop is progress, not failure: the job is looked at again after `task_poll`, without
/// the error backoff (which would grow while a worker uses its stop timeout).
pub(super) async fn finalize(ctx: &Context, stored: &StoredJob) -> Result<Action, ReconcileError> {
    let name = stored.name();
    let mut status = stored.job.status.clone().unwrap_or_default();
    if status.phase != Phase::Deleting {
        status.phase = Phase::Deleting;
        ctx.store
            .put_status(name, &status, stored.status_version)
            .await?;
        ctx.metrics.observe_job(name, &status, 0);
    }
    let cleaned = async {
        let found = observe::deletion(ctx, stored).await?;
        let planned = deletion::plan(&found);
        apply::cleanup(ctx, stored, &planned.steps).await?;
        Ok::<_, ReconcileError>(planned.waiting)
    }
    .await;
    match cleaned {
        Ok(None) => {
            ctx.metrics.forget_job(name);
            Ok(Action::await_change())
        }
        Ok(Some(waiting)) => {
            record(ctx, name, &waiting.reason, &waiting.message).await?;
            Ok(Action::requeue(ctx.timing.task_poll))
        }
        Err(e) => {
            if matches!(e, ReconcileError::LeaseLost) {
                return Err(e);
            }
            let (reason, message) = match &e {
                ReconcileError::Blocked(p) => (p.reason.clone(), p.message.clone()),
                ReconcileError::Aws { code, .. } => (code.clone(), e.to_string()),
                _ => ("CleanupFailed".to_string(), e.to_string()),
            };
            record(ctx, name, &reason, &message).await?;
            Err(e)
        }
    }
}

/// Records why the deletion cannot finish yet in `Finalized`, where `describe` shows it: the job
/// (and what ferry still has to remove) stays until the cleanup can finish.
async fn record(
    ctx: &Context,
    name: &str,
    reason: &str,
    message: &str,
) -> Result<(), ReconcileError> {
    if let Some(fresh) = ctx.store.get_job(name).await? {
        let mut st = fresh.job.status.clone().unwrap_or_default();
        let before = st.clone();
        let now = plan::rfc3339(crate::store::runs::now_ms());
        plan::set_condition(&mut st.conditions, FINALIZED, false, reason, message, &now);
        if st != before {
            ctx.store
                .put_status(name, &st, fresh.status_version)
                .await?;
        }
    }
    Ok(())
}
