//! Pure decisions about stopped worker tasks: whether a stop counts against `backoffLimit`, and
//! how long to wait before the replacement (Kubernetes Job's schedule: 10 s doubling, capped at
//! 6 min).

use std::time::Duration;

/// Why a task stopped, as far as the decision to replace it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopKind {
    /// The platform took the task away (spot, maintenance, scheduler): replace, do not count.
    Platform,
    /// Stopped by a person or a deployment tool: replace, do not count.
    Interrupted,
    /// The task failed: replace after a backoff and count it.
    Failed,
}

/// Classifies a stopped task from what ECS reports and the last state its worker wrote to the
/// store (`None` if it never wrote one). The worker records `stopped` when a signal stopped it
/// cleanly and `done` when the run was complete; anything else (`failed`, a heartbeat's
/// `running`, nothing) means the task died. Exit codes are not used: ECS emulators report 0 for
/// everything, and the store is the worker's own account of what happened.
pub fn classify_stop(
    stop_code: Option<&str>,
    stopped_reason: Option<&str>,
    worker_state: Option<&str>,
) -> StopKind {
    let reason = stopped_reason.unwrap_or_default();
    match stop_code {
        Some("SpotInterruption" | "TerminationNotice" | "ServiceSchedulerInitiated") => {
            return StopKind::Platform;
        }
        _ if reason.contains("maintenance") || reason.starts_with("Task retirement") => {
            return StopKind::Platform;
        }
        Some("TaskFailedToStart") => return StopKind::Failed,
        _ => {}
    }
    if reason.starts_with("CannotPullContainerError")
        || reason.starts_with("ResourceInitializationError")
    {
        return StopKind::Failed;
    }
    match worker_state {
        Some("stopped" | "done") => StopKind::Interrupted,
        _ if stop_code == Some("UserInitiated") && worker_state.is_none() => StopKind::Interrupted,
        _ => StopKind::Failed,
    }
}

/// Delay before starting the replacement of the `failures`-th failed task (1-based): `base`
/// (10 s in production) doubling, capped at 36 × base (6 min).
pub fn backoff(failures: u32, base: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << exp).min(base.saturating_mul(36))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_are_classified_like_a_kubernetes_pod_failure_policy() {
        let cases: &[(Option<&str>, Option<&str>, Option<&str>, StopKind)] = &[
            (
                Some("SpotInterruption"),
                None,
                Some("running"),
                StopKind::Platform,
            ),
            (Some("TerminationNotice"), None, None, StopKind::Platform),
            (
                Some("ServiceSchedulerInitiated"),
                None,
                Some("stopped"),
                StopKind::Platform,
            ),
            (
                Some("EssentialContainerExited"),
                Some("Task retirement: scheduled maintenance"),
                Some("running"),
                StopKind::Platform,
            ),
            (
                Some("TaskFailedToStart"),
                Some("CannotPullContainerError: not found"),
                None,
                StopKind::Failed,
            ),
            (
                None,
                Some("ResourceInitializationError: secrets"),
                None,
                StopKind::Failed,
            ),
            (
                Some("UserInitiated"),
                Some("stopped by hand"),
                Some("stopped"),
                StopKind::Interrupted,
            ),
            (
                Some("UserInitiated"),
                Some("stopped by hand"),
                None,
                StopKind::Interrupted,
            ),
            (
                Some("EssentialContainerExited"),
                None,
                Some("running"),
                StopKind::Failed,
            ),
            (
                Some("EssentialContainerExited"),
                None,
                Some("failed"),
                StopKind::Failed,
            ),
            (
                Some("EssentialContainerExited"),
                None,
                Some("stopped"),
                StopKind::Interrupted,
            ),
            (None, Some("exit code 137"), None, StopKind::Failed),
            (None, None, None, StopKind::Failed),
        ];
        for (code, reason, worker, want) in cases {
            assert_eq!(
                classify_stop(*code, *reason, *worker),
                *want,
                "{code:?} {reason:?} {worker:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_six_minutes() {
        let base = Duration::from_secs(10);
        let got: Vec<u64> = (1..=8).map(|n| backoff(n, base).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 320, 360, 360]);
        assert_eq!(backoff(0, base).as_secs(), 10);
        assert_eq!(backoff(u32::MAX, base).as_secs(), 360);
    }
}
