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

/// The finalizer: phase Deleting, then cleanup, then the records go.
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
    let found = observe::deletion(ctx, stored).await?;
    let planned = deletion::plan(&found);
    let cleaned = apply::cleanup(ctx, stored, &planned.steps)
        .await
        .and_then(|()| {
            planned
                .waiting
                .map_or(Ok(()), |w| Err(ReconcileError::Blocked(w)))
        });
    if let Err(e) = cleaned {
        // Recorded where `describe` shows it: the job (and what ferry still has to remove) stays
        // until the cleanup can finish.
        let (reason, message) = match &e {
            ReconcileError::Blocked(p) => (p.reason.clone(), p.message.clone()),
            ReconcileError::Aws { code, .. } => (code.clone(), e.to_string()),
            _ => ("CleanupFailed".to_string(), e.to_string()),
        };
        if let Some(fresh) = ctx.store.get_job(name).await? {
            let mut st = fresh.job.status.clone().unwrap_or_default();
            let before = st.clone();
            let now = plan::rfc3339(crate::store::runs::now_ms());
            plan::set_condition(
                &mut st.conditions,
                FINALIZED,
                false,
                &reason,
                &message,
                &now,
            );
            if st != before {
                ctx.store
                    .put_status(name, &st, fresh.status_version)
                    .await?;
            }
        }
        return Err(e);
    }
    ctx.metrics.forget_job(name);
    Ok(Action::await_change())
}
