//! Read-only: what exists in AWS and in the store for one job, turned into the planner's
//! `Observed`. Never writes anything.

use std::collections::HashMap;

use aws_sdk_ecs::types::{DesiredStatus, TaskDefinitionStatus};
use serde_json::Value;

use super::deletion::Found;
use super::desired::{self, TaskDefinition};
use super::plan::{BucketState, Infra, Observed, Problem, RoleState, RunState, TaskState};
use super::{Context, ReconcileError, aws_error};
use crate::aws::{ErrorKind, error_code, kind};
use crate::model::CopyJob;
use crate::store::StoredJob;
use crate::store::runs::now_ms;

/// Gathers what the planner needs. `check_infra` reads the slow-changing resources too.
pub async fn observe(
    ctx: &Context,
    stored: &StoredJob,
    check_infra: bool,
) -> Result<Observed, ReconcileError> {
    let job = &stored.job;
    let mut obs = Observed {
        now_ms: now_ms(),
        generation: stored.generation,
        uid: stored.uid.clone(),
        rerun: stored.rerun,
        ..Observed::default()
    };
    if check_infra {
        obs.infra = Some(infra(ctx, job).await?);
    }
    // Tasks and progress matter only while a run is active (a finished run's tasks have exited).
    if let Some(run) = job.status.as_ref().and_then(|s| s.run.as_ref()) {
        if run.finished_at.is_none() {
            let arns: Vec<String> = run.tasks.iter().filter_map(|t| t.arn.clone()).collect();
            if !arns.is_empty() {
                let cluster = desired::cluster(job, &ctx.settings);
                obs.tasks = describe_tasks(ctx, &cluster, &arns).await?;
                confirm_missing(ctx, &cluster, job, run, &mut obs.tasks).await?;
            }
            let summary = ctx
                .store
                .run_summary(job.metadata.name.as_str(), &run.id)
                .await?;
            obs.run = Some(RunState {
                complete: summary.complete(),
                progress: summary.progress,
                heartbeats: summary
                    .tasks
                    .iter()
                    .map(|t| (t.task.clone(), t.heartbeat_ms))
                    .collect(),
                workers: summary
                    .tasks
                    .into_iter()
                    .map(|t| (t.task, t.state))
                    .collect(),
            });
        }
    }
    // Now that the reads are done, take the time the plan compares against.
    obs.now_ms = now_ms();
    Ok(obs)
}

/// The tasks' states by ARN, in DescribeTasks batches of 100.
pub async fn describe_tasks(
    ctx: &Context,
    cluster: &str,
    arns: &[String],
) -> Result<HashMap<String, TaskState>, ReconcileError> {
    let mut out = HashMap::new();
    for batch in arns.chunks(100) {
        let resp = ctx
            .ecs
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(batch.to_vec()))
            .send()
            .await
            .map_err(|e| aws_error("ECS", "DescribeTasks", e))?;
        for t in resp.tasks() {
            let Some(arn) = t.task_arn() else { continue };
            let state = match t.last_status().unwrap_or_default() {
                "STOPPED" | "DELETED" => TaskState::Stopped {
                    stop_code: t.stop_code().map(|c| c.as_str().to_string()),
                    reason: t.stopped_reason().map(str::to_string),
                },
                "RUNNING" => TaskState::Running,
                _ => TaskState::Pending,
            };
            out.insert(arn.to_string(), state);
        }
        for f in resp.failures() {
            if let Some(arn) = f.arn() {
                out.insert(arn.to_string(), TaskState::Missing);
            }
        }
    }
    Ok(out)
}

/// Asks ListTasks about the tasks DescribeTasks did not know: ECS is eventually consistent, and
/// a task RunTask just started may be missing from DescribeTasks for a while (RunTask API
/// reference). A task ListTasks finds by its attempt's token is there (Pending); the others
/// stay Missing, and `plan` gives them a grace period from their start.
async fn confirm_missing(
    ctx: &Context,
    cluster: &str,
    job: &crate::model::CopyJob,
    run: &crate::model::RunStatus,
    tasks: &mut HashMap<String, TaskState>,
) -> Result<(), ReconcileError> {
    for t in &run.tasks {
        let Some(arn) = &t.arn else { continue };
        if tasks.get(arn) != Some(&TaskState::Missing) {
            continue;
        }
        let token = desired::placement_token(
            &job.metadata.name,
            &run.id,
            t.slot,
            t.attempt,
            t.placement_failures,
        );
        let listed = ctx
            .ecs
            .list_tasks()
            .cluster(cluster)
            .started_by(&token)
            .send()
            .await
            .map_err(|e| aws_error("ECS", "ListTasks", e))?;
        if listed.task_arns().iter().any(|a| a == arn) {
            tasks.insert(arn.clone(), TaskState::Pending);
        }
    }
    Ok(())
}

/// What a deletion finds (`deletion::plan` decides on it): the family's tasks still running and
/// still stopping, whether the family and the role are this installation's, its owned
/// revisions, and the statements the status recorded.
pub async fn deletion(ctx: &Context, stored: &StoredJob) -> Result<Found, ReconcileError> {
    let job = &stored.job;
    let name = &job.metadata.name;
    let cluster = desired::cluster(job, &ctx.settings);
    let family = desired::family(name);
    let family_owned = family_owned(ctx, &family).await?;
    let (running, stopping) = if family_owned {
        (
            family_tasks(ctx, &cluster, &family, DesiredStatus::Running).await?,
            family_tasks_not_stopped(ctx, &cluster, &family).await?,
        )
    } else {
        (Vec::new(), 0)
    };
    Ok(Found {
        family_owned,
        running,
        stopping,
        grants: job
            .status
            .as_ref()
            .map(|s| s.source_policy.clone())
            .unwrap_or_default(),
        role_owned: role_owned(ctx, &desired::role_name(name)).await?,
        task_definitions: owned_revisions(ctx, &family).await?,
        family,
    })
}

/// The tasks of a family with this desired status (all pages); none if the cluster is gone.
/// A refused ListTasks is an error: tasks may still run, and their role must not be deleted
/// under them.
async fn family_tasks(
    ctx: &Context,
    cluster: &str,
    family: &str,
    desired_status: DesiredStatus,
) -> Result<Vec<String>, ReconcileError> {
    let mut arns = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let out = match ctx
            .ecs
            .list_tasks()
            .cluster(cluster)
            .family(family)
            .desired_status(desired_status.clone())
            .set_next_token(next.take())
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if kind(&e) == ErrorKind::NotFound => break,
            Err(e) => return Err(aws_error("ECS", "ListTasks", e)),
        };
        arns.extend(out.task_arns().iter().cloned());
        match out.next_token() {
            Some(t) => next = Some(t.to_string()),
            None => break,
        }
    }
    Ok(arns)
}

/// The revisions of exactly this family that carry this installation's owner tag (all pages).
async fn owned_revisions(ctx: &Context, family: &str) -> Result<Vec<String>, ReconcileError> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page = ctx
            .ecs
            .list_task_definitions()
            .family_prefix(family)
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| aws_error("ECS", "ListTaskDefinitions", e))?;
        for arn in page.task_definition_arns() {
            // The prefix also matches longer family names: only this family.
            let fam = arn.rsplit_once('/').map(|(_, f)| f).unwrap_or("");
            if fam.rsplit_once(':').map(|(f, _)| f) != Some(family) {
                continue;
            }
            let described = ctx
                .ecs
                .describe_task_definition()
                .task_definition(arn)
                .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
                .send()
                .await
                .map_err(|e| aws_error("ECS", "DescribeTaskDefinition", e))?;
            let tags = described.tags().iter();
            if desired::owned(
                tags.map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
                &ctx.settings,
            ) {
                out.push(arn.clone());
            } else {
                tracing::info!(task_definition = %arn, "not this installation's; left alone");
            }
        }
        match page.next_token() {
            Some(t) => next = Some(t.to_string()),
            None => break,
        }
    }
    Ok(out)
}

/// How many tasks of a family ECS has been asked to stop that have not reached STOPPED yet
/// (DescribeTasks `lastStatus`; ListTasks `desiredStatus=STOPPED` lists them from the moment
/// StopTask is called).
async fn family_tasks_not_stopped(
    ctx: &Context,
    cluster: &str,
    family: &str,
) -> Result<usize, ReconcileError> {
    let arns = family_tasks(ctx, cluster, family, DesiredStatus::Stopped).await?;
    let states = describe_tasks(ctx, cluster, &arns).await?;
    Ok(states
        .values()
        .filter(|s| matches!(s, TaskState::Pending | TaskState::Running))
        .count())
}

/// Whether the job's task definition family is this installation's, judged by its latest
/// revision's tags (a family without revisions has nothing anyone could own).
async fn family_owned(ctx: &Context, family: &str) -> Result<bool, ReconcileError> {
    match ctx
        .ecs
        .describe_task_definition()
        .task_definition(family)
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
    {
        Ok(out) => Ok(desired::owned(
            out.tags()
                .iter()
                .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
            &ctx.settings,
        )),
        Err(e) if kind(&e) == ErrorKind::NotFound => Ok(true),
        Err(e) => Err(aws_error("ECS", "DescribeTaskDefinition", e)),
    }
}

/// Whether the role exists with this installation's owner tag (`false` if it does not exist).
pub(super) async fn role_owned(ctx: &Context, name: &str) -> Result<bool, ReconcileError> {
    match ctx.iam.get_role().role_name(name).send().await {
        Ok(out) => {
            let tags = out.role().map(|r| r.tags()).unwrap_or_default();
            Ok(desired::owned(
                tags.iter().map(|t| (t.key(), t.value())),
                &ctx.settings,
            ))
        }
        Err(e) if kind(&e) == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(aws_error("IAM", "GetRole", e)),
    }
}

fn problem(reason: impl Into<String>, message: impl Into<String>, terminal: bool) -> Problem {
    Problem {
        reason: reason.into(),
        message: message.into(),
        terminal,
    }
}

/// A policy document as IAM returns it (URL-encoded JSON) or as ferry wrote it.
pub fn policy_json(doc: &str) -> Option<Value> {
    serde_json::from_str(doc).ok().or_else(|| {
        let decoded = percent_encoding::percent_decode_str(doc)
            .decode_utf8()
            .ok()?;
        serde_json::from_str(&decoded).ok()
    })
}

async fn infra(ctx: &Context, job: &CopyJob) -> Result<Infra, ReconcileError> {
    let spec = &job.spec;
    let roles = match (
        ctx.roles.check(&spec.source.role_arn).await,
        ctx.roles.check(&spec.destination.role_arn).await,
    ) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(m), _) | (_, Err(m)) => Err(problem("AssumeRoleFailed", m, false)),
    };
    let task_role = task_role(ctx, job).await?;
    let (source_policy, bucket) = match &roles {
        Err(p) => (Err(p.clone()), Err(p.clone())),
        Ok(()) => (source_policy(ctx, job).await?, bucket(ctx, job).await?),
    };
    Ok(Infra {
        roles,
        task_role,
        source_policy,
        bucket,
        task_definition: task_definition(ctx, job).await?,
    })
}

async fn task_role(ctx: &Context, job: &CopyJob) -> Result<RoleState, ReconcileError> {
    let name = desired::role_name(&job.metadata.name);
    let role = match ctx.iam.get_role().role_name(&name).send().await {
        Ok(r) => r,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            return Ok(RoleState::Missing);
        }
        Err(e) => return Err(aws_error("IAM", "GetRole", e)),
    };
    let tags = role.role().map(|r| r.tags()).unwrap_or_default();
    if !desired::owned(tags.iter().map(|t| (t.key(), t.value())), &ctx.settings) {
        return Ok(RoleState::NotOwned);
    }
    let boundary_ok = role
        .role()
        .and_then(|r| r.permissions_boundary())
        .and_then(|b| b.permissions_boundary_arn())
        == Some(ctx.settings.task_boundary_arn.as_str());
    let trust_ok = role
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .and_then(policy_json)
        .is_some_and(|v| v == desired::trust_policy(&ctx.settings));
    let policy_ok = match ctx
        .iam
        .get_role_policy()
        .role_name(&name)
        .policy_name(desired::ROLE_POLICY)
        .send()
        .await
    {
        Ok(p) => policy_json(p.policy_document())
            .is_some_and(|v| v == desired::task_policy(job, &ctx.settings)),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_no_such_entity_exception()) =>
        {
            false
        }
        Err(e) => return Err(aws_error("IAM", "GetRolePolicy", e)),
    };
    Ok(RoleState::Present {
        trust_ok,
        policy_ok,
        boundary_ok,
    })
}

async fn source_policy(
    ctx: &Context,
    job: &CopyJob,
) -> Result<Result<Option<String>, Problem>, ReconcileError> {
    let src = &job.spec.source;
    let s3 = ctx.roles.s3(&src.role_arn, &src.region).await;
    let read = s3
        .get_bucket_policy()
        .bucket(&src.bucket)
        .expected_bucket_owner(&src.account)
        .send()
        .await;
    let e = match read {
        Ok(out) => return Ok(Ok(out.policy().map(str::to_string))),
        Err(e) => e,
    };
    let code = error_code(&e);
    Ok(Err(match kind(&e) {
        ErrorKind::NotFound if code == "NoSuchBucket" => problem(
            "NoSuchBucket",
            format!("source bucket {} does not exist", src.bucket),
            false,
        ),
        ErrorKind::NotFound => return Ok(Ok(None)),
        // S3 answers a request signed for another region with 301 and the bucket's region.
        ErrorKind::Redirect => problem(
            "RegionMismatch",
            format!(
                "source bucket {} is in {}, the job says {}",
                src.bucket,
                redirect_region(&e).unwrap_or("another region"),
                src.region
            ),
            true,
        ),
        ErrorKind::AccessDenied => problem(
            "AccessDenied",
            format!(
                "{} may not read the policy of source bucket {}, or account {} does not own it: {}",
                src.role_arn,
                src.bucket,
                src.account,
                crate::aws::describe(&e)
            ),
            false,
        ),
        k if k.fails_again() => problem(
            code.clone(),
            format!(
                "cannot read the policy of source bucket {} as {}: {}",
                src.bucket,
                src.role_arn,
                crate::aws::describe(&e)
            ),
            false,
        ),
        _ => return Err(aws_error("S3", "GetBucketPolicy", e)),
    }))
}

/// The region S3 names in a 301 answer (`x-amz-bucket-region`).
fn redirect_region<E>(
    e: &aws_smithy_runtime_api::client::result::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
) -> Option<&str> {
    e.raw_response()?.headers().get("x-amz-bucket-region")
}

/// The destination bucket: missing, ours (and where), or another account's. HeadBucket is sent
/// with `ExpectedBucketOwner` = the job's destination account; a 403 is asked again without it,
/// and a bucket that then answers belongs to another account (S3 "Verifying bucket ownership
/// with bucket owner condition": a mismatch answers 403).
async fn bucket(
    ctx: &Context,
    job: &CopyJob,
) -> Result<Result<BucketState, Problem>, ReconcileError> {
    let dst = &job.spec.destination;
    let s3 = ctx.roles.s3(&dst.role_arn, &dst.region).await;
    let head = s3
        .head_bucket()
        .bucket(&dst.bucket)
        .expected_bucket_owner(&dst.account)
        .send()
        .await;
    let e = match head {
        Ok(out) => {
            return Ok(Ok(BucketState::Exists {
                region: out.bucket_region().map(str::to_string),
            }));
        }
        Err(e) => e,
    };
    Ok(match kind(&e) {
        ErrorKind::NotFound => Ok(BucketState::Missing),
        // HeadBucket signed for the wrong region: a bodiless 301 naming the bucket's region.
        ErrorKind::Redirect => Ok(BucketState::Exists {
            region: redirect_region(&e).map(str::to_string),
        }),
        ErrorKind::AccessDenied => match s3.head_bucket().bucket(&dst.bucket).send().await {
            Ok(_) => Ok(BucketState::OwnedByOther),
            Err(again) if kind(&again).is_retryable() => {
                return Err(aws_error("S3", "HeadBucket", again));
            }
            Err(_) => Err(problem(
                "AccessDenied",
                format!(
                    "{} may not access destination bucket {} (does another account own it?)",
                    dst.role_arn, dst.bucket
                ),
                false,
            )),
        },
        k if k.fails_again() => Err(problem(error_code(&e), crate::aws::describe(&e), false)),
        _ => return Err(aws_error("S3", "HeadBucket", e)),
    })
}

/// The latest revision of the job's family; a problem if it is not this installation's (no
/// `ferry:owner` tag of ours): ferry does not add revisions to a family it does not own.
async fn task_definition(
    ctx: &Context,
    job: &CopyJob,
) -> Result<Result<Option<TaskDefinition>, Problem>, ReconcileError> {
    let family = desired::family(&job.metadata.name);
    let out = match ctx
        .ecs
        .describe_task_definition()
        .task_definition(&family)
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
    {
        Ok(o) => o,
        // ClientException "Unable to describe task definition": no revision of the family. A
        // refused call is an error, never a reason to register the definition again.
        Err(e) if kind(&e) == ErrorKind::NotFound => return Ok(Ok(None)),
        Err(e) => return Err(aws_error("ECS", "DescribeTaskDefinition", e)),
    };
    let Some(td) = out.task_definition() else {
        return Ok(Ok(None));
    };
    let tags = out.tags().iter();
    if !desired::owned(
        tags.map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
        &ctx.settings,
    ) {
        let what = format!("ECS task definition family {family}");
        return Ok(Err(super::plan::not_owned(&what, &ctx.settings)));
    }
    if td.status() == Some(&TaskDefinitionStatus::Inactive) {
        return Ok(Ok(None));
    }
    let container = td
        .container_definitions()
        .iter()
        .find(|c| c.name() == Some(desired::CONTAINER));
    let log = container
        .and_then(|c| c.log_configuration())
        .and_then(|l| l.options());
    let opt = |k: &str| log.and_then(|o| o.get(k)).cloned().unwrap_or_default();
    Ok(Ok(Some(TaskDefinition {
        family: td.family().unwrap_or_default().to_string(),
        image: container
            .and_then(|c| c.image())
            .unwrap_or_default()
            .to_string(),
        cpu: td.cpu().unwrap_or_default().to_string(),
        memory: td.memory().unwrap_or_default().to_string(),
        task_role_arn: td.task_role_arn().unwrap_or_default().to_string(),
        execution_role_arn: td.execution_role_arn().unwrap_or_default().to_string(),
        log_group: opt("awslogs-group"),
        log_region: opt("awslogs-region"),
        cpu_architecture: td
            .runtime_platform()
            .and_then(|p| p.cpu_architecture())
            .map_or("X86_64", |a| a.as_str())
            .to_string(),
    })))
}
