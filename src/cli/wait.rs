//! `ferry wait`: block until jobs reach a condition or phase (or are deleted), as `kubectl wait`
//! does. The verdict on one reading of a job is pure; the loop polls the store with a deadline.

use std::io::Write;
use std::time::{Duration, Instant};

use super::{CliError, ExitCode};
use crate::model::Phase;
use crate::store::{Store, StoredJob};

/// What to wait for (`--for`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum For {
    /// `condition=TYPE` (status `True`) or `condition=TYPE=STATUS`.
    Condition { kind: String, status: String },
    /// `phase=PHASE`.
    Phase(Phase),
    /// `delete`: the job's record is gone.
    Delete,
}

impl For {
    /// Parses `--for`'s value; the error says what is allowed.
    pub fn parse(text: &str) -> Result<For, String> {
        let allowed = "allowed: condition=TYPE[=True|False|Unknown], phase=PHASE or delete";
        if text == "delete" {
            return Ok(For::Delete);
        }
        if let Some(rest) = text.strip_prefix("condition=") {
            let (kind, status) = rest.split_once('=').unwrap_or((rest, "True"));
            if kind.is_empty() || !matches!(status, "True" | "False" | "Unknown") {
                return Err(format!("--for `{text}`: {allowed}"));
            }
            return Ok(For::Condition {
                kind: kind.to_string(),
                status: status.to_string(),
            });
        }
        if let Some(p) = text.strip_prefix("phase=") {
            let phase: Phase = serde_json::from_value(serde_json::Value::String(p.into()))
                .map_err(|_| {
                    format!(
                        "--for `{text}`: `{p}` is not a phase; allowed: {}",
                        Phase::ALL
                            .iter()
                            .map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            return Ok(For::Phase(phase));
        }
        Err(format!("--for `{text}`: {allowed}"))
    }
}

/// What one reading of a job says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Met,
    /// The job reached a phase it leaves only on a spec change, rerun or resume, and the
    /// condition does not hold there: waiting longer cannot help.
    Failed(String),
    Waiting,
}

/// Judges one reading of a job (`None`: no record). A status the operator wrote for an earlier
/// generation or before the last `ferry rerun` does not count: it says nothing of the spec
/// being waited on. Pure.
pub fn verdict(job: Option<&StoredJob>, want: &For) -> Verdict {
    let Some(job) = job else {
        return match want {
            For::Delete => Verdict::Met,
            _ => Verdict::Failed("the job does not exist".into()),
        };
    };
    if *want == For::Delete {
        return Verdict::Waiting;
    }
    let Some(st) = job.job.status.as_ref() else {
        return Verdict::Waiting;
    };
    let rerun_seen = st.run.as_ref().is_none_or(|r| r.rerun >= job.rerun);
    if st.observed_generation < job.generation || !rerun_seen {
        return Verdict::Waiting;
    }
    let met = match want {
        For::Phase(p) => st.phase == *p,
        For::Condition { kind, status } => st
            .conditions
            .iter()
            .any(|c| c.kind == *kind && c.status == *status),
        For::Delete => false,
    };
    if met {
        return Verdict::Met;
    }
    match st.phase {
        Phase::Failed | Phase::Blocked => {
            let why = st
                .conditions
                .iter()
                .find(|c| c.status == "False" && !c.message.is_empty())
                .map(|c| format!(": {}: {}", c.reason, c.message))
                .unwrap_or_default();
            Verdict::Failed(format!("phase {}{why}", st.phase.as_str()))
        }
        _ => Verdict::Waiting,
    }
}

/// Waits for every named job. Exit 0 when all meet the condition; 1 (with the job and why) as
/// soon as one cannot, or when the timeout passes first (kubectl's exit code for a timeout).
pub async fn wait(
    names: &[String],
    want: &For,
    timeout: Duration,
    store: &Store,
    out: &mut impl Write,
) -> Result<ExitCode, CliError> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<&String> = names.iter().collect();
    let met_text = match want {
        For::Delete => "deleted".to_string(),
        For::Phase(p) => format!("phase={}", p.as_str()),
        For::Condition { kind, status } => format!("condition={kind}={status}"),
    };
    let mut pause = Duration::from_millis(250);
    loop {
        let mut still = Vec::new();
        for name in pending {
            let job = store.get_job(name).await?;
            match verdict(job.as_ref(), want) {
                Verdict::Met => writeln!(out, "copyjob/{name} {met_text}")?,
                Verdict::Failed(why) => {
                    return Err(CliError::Failed(format!(
                        "copyjob/{name} cannot meet {met_text}: {why}"
                    )));
                }
                Verdict::Waiting => still.push(name),
            }
        }
        out.flush()?;
        if still.is_empty() {
            return Ok(0);
        }
        let now = Instant::now();
        if now >= deadline {
            let names: Vec<String> = still.iter().map(|n| format!("copyjob/{n}")).collect();
            return Err(CliError::Failed(format!(
                "timed out waiting for {met_text} on {}",
                names.join(", ")
            )));
        }
        pending = still;
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Parses `--timeout` like kubectl: `30s`, `5m`, `1h`, `1h30m`, or plain seconds.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}`: allowed: a duration like 90s, 30m, 1h or 1h30m");
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
    }
    if !digits.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Condition, CopyJobStatus, RunStatus};

    fn stored(phase: Option<Phase>, observed: u64, generation: u64) -> StoredJob {
        let mut job = crate::model::test_job();
        job.status = phase.map(|phase| CopyJobStatus {
            phase,
            observed_generation: observed,
            conditions: vec![Condition {
                kind: "Complete".into(),
                status: if phase == Phase::Succeeded {
                    "True"
                } else {
                    "False"
                }
                .into(),
                reason: "Why".into(),
                message: "because".into(),
                last_transition_time: String::new(),
            }],
            run: Some(RunStatus::default()),
            ..CopyJobStatus::default()
        });
        StoredJob {
            generation,
            ..StoredJob::new(job)
        }
    }

    #[test]
    fn verdicts_follow_the_table() {
        let complete = For::parse("condition=Complete").unwrap();
        let succeeded = For::parse("phase=Succeeded").unwrap();
        let failed_phase = For::parse("phase=Failed").unwrap();
        let mut rerun = stored(Some(Phase::Succeeded), 1, 1);
        rerun.rerun = 1;
        let cases: Vec<(&str, Option<StoredJob>, &For, Verdict)> = vec![
            (
                "no status yet: waiting",
                Some(stored(None, 0, 1)),
                &complete,
                Verdict::Waiting,
            ),
            (
                "Succeeded: Complete is met",
                Some(stored(Some(Phase::Succeeded), 1, 1)),
                &complete,
                Verdict::Met,
            ),
            (
                "Succeeded: phase=Succeeded is met",
                Some(stored(Some(Phase::Succeeded), 1, 1)),
                &succeeded,
                Verdict::Met,
            ),
            (
                "Running: waiting",
                Some(stored(Some(Phase::Running), 1, 1)),
                &succeeded,
                Verdict::Waiting,
            ),
            (
                "Failed: cannot be met",
                Some(stored(Some(Phase::Failed), 1, 1)),
                &complete,
                Verdict::Failed("phase Failed: Why: because".into()),
            ),
            (
                "Failed is what phase=Failed waits for",
                Some(stored(Some(Phase::Failed), 1, 1)),
                &failed_phase,
                Verdict::Met,
            ),
            (
                "Blocked: cannot be met",
                Some(stored(Some(Phase::Blocked), 1, 1)),
                &succeeded,
                Verdict::Failed("phase Blocked: Why: because".into()),
            ),
            (
                "a status of the previous generation: waiting",
                Some(stored(Some(Phase::Succeeded), 1, 2)),
                &complete,
                Verdict::Waiting,
            ),
            (
                "a status from before the rerun: waiting",
                Some(rerun),
                &complete,
                Verdict::Waiting,
            ),
            ("gone: delete is met", None, &For::Delete, Verdict::Met),
            (
                "present: delete waits",
                Some(stored(Some(Phase::Succeeded), 1, 1)),
                &For::Delete,
                Verdict::Waiting,
            ),
            (
                "gone: a condition cannot be met",
                None,
                &complete,
                Verdict::Failed("the job does not exist".into()),
            ),
        ];
        for (what, job, want, expected) in cases {
            assert_eq!(verdict(job.as_ref(), want), expected, "{what}");
        }
    }

    #[test]
    fn for_and_timeout_values_parse_like_kubectl() {
        assert_eq!(
            For::parse("condition=Complete=False").unwrap(),
            For::Condition {
                kind: "Complete".into(),
                status: "False".into()
            }
        );
        for bad in [
            "phase=Done",
            "condition=",
            "ready",
            "condition=Complete=yes",
        ] {
            let e = For::parse(bad).expect_err(bad);
            assert!(e.contains("allowed"), "{bad}: {e}");
        }
        assert_eq!(parse_timeout("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_timeout("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_timeout("30m").unwrap(), Duration::from_secs(1800));
        for bad in ["", "5x", "m", "10m5"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
