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

/// Classifies a stopped task from what ECS reports. `exit_code` is the worker container's
/// (`None` if it never ran). The worker exits 0 only when the run is complete or when it was
/// stopped by a signal, so exit 0 of an unfinished run is an interruption.
pub fn classify_stop(
    stop_code: Option<&str>,
    stopped_reason: Option<&str>,
    exit_code: Option<i32>,
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
        Some("UserInitiated") => return StopKind::Interrupted,
        _ => {}
    }
    if reason.starts_with("CannotPullContainerError")
        || reason.starts_with("ResourceInitializationError")
    {
        return StopKind::Failed;
    }
    match exit_code {
        Some(0) => StopKind::Interrupted,
        _ => StopKind::Failed,
    }
}

/// Delay before starting the replacement of the `failures`-th failed task (1-based).
pub fn backoff(failures: u32) -> Duration {
    const BASE: u64 = 10;
    const CAP: u64 = 360;
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs((BASE << exp).min(CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_are_classified_like_a_kubernetes_pod_failure_policy() {
        let cases: &[(Option<&str>, Option<&str>, Option<i32>, StopKind)] = &[
            (
                Some("SpotInterruption"),
                None,
                Some(137),
                StopKind::Platform,
            ),
            (Some("TerminationNotice"), None, None, StopKind::Platform),
            (
                Some("ServiceSchedulerInitiated"),
                None,
                Some(0),
                StopKind::Platform,
            ),
            (
                Some("EssentialContainerExited"),
                Some("Task retirement: scheduled maintenance"),
                Some(143),
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
                Some(0),
                StopKind::Interrupted,
            ),
            (
                Some("EssentialContainerExited"),
                None,
                Some(137),
                StopKind::Failed,
            ),
            (
                Some("EssentialContainerExited"),
                None,
                Some(1),
                StopKind::Failed,
            ),
            (
                Some("EssentialContainerExited"),
                None,
                Some(0),
                StopKind::Interrupted,
            ),
            (None, None, None, StopKind::Failed),
        ];
        for (code, reason, exit, want) in cases {
            assert_eq!(
                classify_stop(*code, *reason, *exit),
                *want,
                "{code:?} {reason:?} {exit:?}"
            );
        }
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_six_minutes() {
        let got: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, [10, 20, 40, 80, 160, 320, 360, 360]);
        assert_eq!(backoff(0).as_secs(), 10);
        assert_eq!(backoff(u32::MAX).as_secs(), 360);
    }
}
