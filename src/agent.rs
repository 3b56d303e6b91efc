//! `ferry local-agent`: Fargate for a laptop or a test. Watches an (emulated) ECS cluster and,
//! for each RUNNING task that ferry started, runs `ferry worker` as a child process with the
//! task's environment overrides; when the child exits it calls StopTask with a reason carrying
//! the exit status, and when someone stops the task it sends the child SIGTERM, then SIGKILL
//! after the task definition's stopTimeout (30 s), as ECS does. Like ECS's container agent, it
//! reports each container's start and exit with SubmitTaskStateChange, so the emulator can
//! answer lastStatus STOPPING until the container has really exited. The operator runs its
//! production code path unchanged.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ecs::types::DesiredStatus;
use tokio::process::{Child, Command};

use crate::aws::describe;

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub cluster: String,
    pub poll: Duration,
    /// Run this shell command instead of `ferry worker` (to simulate a broken image).
    pub worker_command: Option<String>,
    /// Create the cluster if it does not exist.
    pub create_cluster: bool,
    /// Between SIGTERM and SIGKILL for the worker of a stopped task (the task definition's
    /// `stopTimeout`, 30 s).
    pub stop_timeout: Duration,
}

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("ECS {op} failed: {message}")]
    Ecs { op: &'static str, message: String },
    #[error("cannot start a worker: {0}")]
    Spawn(#[from] std::io::Error),
}

struct Running {
    child: Child,
    /// When the task was stopped and its worker sent SIGTERM.
    terminated: Option<std::time::Instant>,
}

/// Tells ECS what became of a task's container, as the container agent does. The emulator uses
/// it to keep a stopped task STOPPING until its container has exited; a refusal changes
/// nothing for the worker.
async fn report(ecs: &aws_sdk_ecs::Client, cluster: &str, arn: &str, status: &str, reason: &str) {
    let mut req = ecs
        .submit_task_state_change()
        .cluster(cluster)
        .task(arn)
        .status(status);
    if !reason.is_empty() {
        req = req.reason(reason);
    }
    if let Err(e) = req.send().await {
        tracing::debug!(task = %arn, status, error = %describe(&e), "SubmitTaskStateChange refused");
    }
}

/// Runs the agent until SIGTERM/SIGINT; then stops its workers like ECS would.
pub async fn run(ecs: aws_sdk_ecs::Client, cfg: AgentConfig) -> Result<(), AgentError> {
    if cfg.create_cluster {
        ecs.create_cluster()
            .cluster_name(&cfg.cluster)
            .send()
            .await
            .map_err(|e| AgentError::Ecs {
                op: "CreateCluster",
                message: describe(&e),
            })?;
    }
    let exe = std::env::current_exe()?;
    let mut children: HashMap<String, Running> = HashMap::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tracing::info!(cluster = %cfg.cluster, "local agent watching for tasks");
    loop {
        if let Err(e) = step(&ecs, &cfg, &exe, &mut children).await {
            tracing::warn!(error = %e, "local agent pass failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll) => {}
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for (arn, r) in children.iter_mut() {
        if let Some(pid) = r.child.id() {
            tracing::info!(task = %arn, "stopping worker");
            signal_term(pid);
        }
    }
    for (arn, mut r) in children {
        let status = tokio::time::timeout(cfg.stop_timeout, r.child.wait()).await;
        let reason = match status {
            Ok(Ok(s)) => exit_reason(&s),
            _ => {
                let _ = r.child.kill().await;
                format!(
                    "Essential container in task exited (killed after {:?})",
                    cfg.stop_timeout
                )
            }
        };
        report(&ecs, &cfg.cluster, &arn, "STOPPED", &reason).await;
        let _ = ecs
            .stop_task()
            .cluster(&cfg.cluster)
            .task(&arn)
            .reason(reason)
            .send()
            .await;
    }
    Ok(())
}

fn signal_term(pid: u32) {
    // tokio's Child::kill sends SIGKILL; ECS sends SIGTERM first.
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

fn exit_reason(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("Essential container in task exited (exit code {code})"),
        (None, Some(sig)) => format!("Essential container in task exited (signal {sig})"),
        _ => "Essential container in task exited".to_string(),
    }
}

async fn step(
    ecs: &aws_sdk_ecs::Client,
    cfg: &AgentConfig,
    exe: &std::path::Path,
    children: &mut HashMap<String, Running>,
) -> Result<(), AgentError> {
    // Children that exited: report the task stopped.
    let mut exited = Vec::new();
    for (arn, r) in children.iter_mut() {
        if let Some(status) = r.child.try_wait()? {
            exited.push((arn.clone(), status));
        }
    }
    for (arn, status) in exited {
        let Some(r) = children.remove(&arn) else {
            continue;
        };
        let reason = exit_reason(&status);
        report(ecs, &cfg.cluster, &arn, "STOPPED", &reason).await;
        if r.terminated.is_some() {
            // Someone stopped the task; ECS already has it STOPPED with their reason.
            tracing::info!(task = %arn, %reason, "worker of a stopped task exited");
            continue;
        }
        tracing::info!(task = %arn, %reason, "worker exited");
        ecs.stop_task()
            .cluster(&cfg.cluster)
            .task(&arn)
            .reason(reason)
            .send()
            .await
            .map_err(|e| AgentError::Ecs {
                op: "StopTask",
                message: describe(&e),
            })?;
    }

    let listed = ecs
        .list_tasks()
        .cluster(&cfg.cluster)
        .desired_status(DesiredStatus::Running)
        .send()
        .await
        .map_err(|e| AgentError::Ecs {
            op: "ListTasks",
            message: describe(&e),
        })?;
    let arns: Vec<String> = listed.task_arns().to_vec();
    let mut desired_running = std::collections::HashSet::new();
    for batch in arns.chunks(100) {
        let out = ecs
            .describe_tasks()
            .cluster(&cfg.cluster)
            .set_tasks(Some(batch.to_vec()))
            .send()
            .await
            .map_err(|e| AgentError::Ecs {
                op: "DescribeTasks",
                message: describe(&e),
            })?;
        for t in out.tasks() {
            let Some(arn) = t.task_arn() else { continue };
            let ours = t.started_by().is_some_and(|s| s.starts_with("ferry-"));
            let running =
                t.last_status() == Some("RUNNING") && t.desired_status() == Some("RUNNING");
            if !ours || !running {
                continue;
            }
            desired_running.insert(arn.to_string());
            if children.contains_key(arn) {
                continue;
            }
            let env: Vec<(String, String)> = t
                .overrides()
                .map(|o| o.container_overrides())
                .unwrap_or_default()
                .iter()
                .flat_map(|c| c.environment())
                .filter_map(|kv| Some((kv.name()?.to_string(), kv.value()?.to_string())))
                .collect();
            let mut cmd = match &cfg.worker_command {
                Some(shell) => {
                    let mut c = Command::new("sh");
                    c.arg("-c").arg(shell);
                    c
                }
                None => {
                    let mut c = Command::new(exe);
                    c.arg("worker");
                    c
                }
            };
            cmd.envs(env).stdin(Stdio::null()).kill_on_drop(true);
            let child = cmd.spawn()?;
            tracing::info!(task = %arn, pid = child.id().unwrap_or(0), "started worker");
            report(ecs, &cfg.cluster, arn, "RUNNING", "").await;
            children.insert(
                arn.to_string(),
                Running {
                    child,
                    terminated: None,
                },
            );
        }
    }
    // Tasks someone stopped: SIGTERM their workers, SIGKILL those still there after the stop
    // timeout (the exit is reported on a later pass).
    for (arn, r) in children.iter_mut() {
        match r.terminated {
            None if !desired_running.contains(arn) => {
                if let Some(pid) = r.child.id() {
                    tracing::info!(task = %arn, "task stopped in ECS; sending SIGTERM to its worker");
                    signal_term(pid);
                }
                r.terminated = Some(std::time::Instant::now());
            }
            Some(at) if at.elapsed() >= cfg.stop_timeout => {
                tracing::warn!(task = %arn, "worker still running after the stop timeout; SIGKILL");
                let _ = r.child.start_kill();
            }
            _ => {}
        }
    }
    Ok(())
}
