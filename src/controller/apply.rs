//! Idempotent `ensure_*` steps that carry out a plan, and the finalizer's cleanup. "Already
//! exists" and "already gone" are success; every RunTask carries the attempt's token and is
//! preceded by a look for a task with that token, so no attempt ever starts twice.

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition, ContainerOverride,
    DesiredStatus, KeyValuePair, LaunchType, LogConfiguration, LogDriver, NetworkConfiguration,
    NetworkMode, TaskOverride,
};
use aws_sdk_s3::types::{
    BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
    ObjectOwnership as S3Ownership, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, VersioningConfiguration,
};

use super::deletion::Cleanup;
use super::desired;
use super::plan::{Applied, Problem, Step};
use super::{Context, ReconcileError, aws_error};
use crate::aws::{ErrorKind, describe, error_code, kind};
use crate::model::{CopyJob, CopyJobStatus, EncryptionKind, ObjectOwnership, SourceGrant};
use crate::store::{StoredJob, spec_document};

/// A step that failed: the condition it concerns and the problem to record there, plus the
/// error to back off on.
#[derive(Debug)]
pub struct StepFailure {
    pub condition: &'static str,
    pub problem: Problem,
    pub error: ReconcileError,
}

fn fail(condition: &'static str, error: ReconcileError) -> StepFailure {
    let reason = match &error {
        ReconcileError::Aws { code, .. } => code.clone(),
        ReconcileError::Store(_) => "StoreError".into(),
        ReconcileError::Blocked(p) => p.reason.clone(),
        ReconcileError::Invalid(_) => "InvalidRequest".into(),
        ReconcileError::LeaseLost => "LeaseLost".into(),
    };
    StepFailure {
        condition,
        problem: Problem {
            reason,
            message: error.to_string(),
            // Even AccessDenied may be fixed by the user: keep retrying, with backoff.
            terminal: false,
        },
        error,
    }
}

/// Runs the steps in order; stops at the first failure. What the steps report back (tasks
/// started or not placed, statements removed) goes into `applied`, for `plan::settle` to put
/// into the status: apply reads the planned status, it never edits it.
pub async fn apply(
    ctx: &Context,
    stored: &StoredJob,
    steps: &[Step],
    status: &CopyJobStatus,
    applied: &mut Vec<Applied>,
) -> Result<(), StepFailure> {
    let job = &stored.job;
    // The run's pinned revision, once its first task reports one in this pass.
    let mut pinned = status.run.as_ref().and_then(|r| r.task_definition.clone());
    for step in steps {
        // Every step changes something: a replica whose lease may have run out takes none.
        if !ctx.fence.valid() {
            return Err(fail(super::plan::COMPLETE, ReconcileError::LeaseLost));
        }
        match step {
            Step::EnsureTaskRole => ensure_task_role(ctx, job)
                .await
                .map_err(|e| fail(super::plan::ROLES_READY, e))?,
            Step::PutSourcePolicy => ensure_source_policy(ctx, job)
                .await
                .map_err(|e| fail(super::plan::SOURCE_POLICY_READY, e))?,
            Step::ExpireRuns { keep } => {
                // History is housekeeping: a failure is logged and taken up at the next run.
                if let Err(e) = expire_runs(ctx, stored, status, *keep).await {
                    tracing::warn!(job = %job.metadata.name, error = %e, "cannot expire old runs");
                }
            }
            Step::RemoveSourceGrant { grant } => {
                remove_grant(ctx, grant)
                    .await
                    .map_err(|e| fail(super::plan::SOURCE_POLICY_READY, e))?;
                applied.push(Applied::GrantRemoved(grant.clone()));
            }
            Step::CreateBucket => ensure_bucket(ctx, job).await?,
            Step::RegisterTaskDefinition => ensure_task_definition(ctx, job)
                .await
                .map_err(|e| fail(super::plan::TASK_DEFINITION_READY, e))?,
            Step::StartRun { run } => {
                ctx.store
                    .ensure_run(
                        &job.metadata.name,
                        run,
                        stored.generation,
                        &spec_document(job),
                    )
                    .await
                    .map_err(|e| fail(super::plan::COMPLETE, e.into()))?;
            }
            Step::RunTask { slot, attempt } => {
                let Some(run) = status.run.as_ref() else {
                    continue;
                };
                let Some(task) = run.tasks.iter().find(|t| t.slot == *slot) else {
                    continue;
                };
                let attempt_of = Attempt {
                    run: &run.id,
                    slot: *slot,
                    attempt: *attempt,
                    placement_failures: task.placement_failures,
                    task_definition: pinned.as_deref(),
                };
                let started = ensure_task(ctx, job, &attempt_of)
                    .await
                    .map_err(|e| fail(super::plan::COMPLETE, e))?;
                let at_ms = crate::store::runs::now_ms();
                applied.push(match started {
                    Started::Task {
                        arn,
                        task_definition,
                    } => {
                        if pinned.is_none() {
                            pinned.clone_from(&task_definition);
                        }
                        Applied::TaskStarted {
                            slot: *slot,
                            arn,
                            task_definition,
                            at_ms,
                        }
                    }
                    Started::NotPlaced { reason, message } => {
                        tracing::warn!(job = %job.metadata.name, slot, attempt, %reason, "ECS could not place the task; trying again under a new token after a backoff");
                        Applied::TaskNotPlaced {
                            slot: *slot,
                            reason,
                            message,
                            at_ms,
                        }
                    }
                });
            }
            Step::StopTask { arn, reason } => {
                // The cluster the task runs in, which the job's current spec may no longer name.
                let cluster = desired::task_cluster(arn)
                    .map_or_else(|| desired::cluster(job, &ctx.settings), str::to_string);
                stop_task(ctx, &cluster, arn, reason)
                    .await
                    .map_err(|e| fail(super::plan::COMPLETE, e))?;
            }
        }
    }
    Ok(())
}

/// Creates or updates the job's task role: trust policy, permissions boundary and ferry's inline
/// policy. A role of that name without this installation's owner tag is left alone (NotOwned).
pub async fn ensure_task_role(ctx: &Context, job: &CopyJob) -> Result<(), ReconcileError> {
    let name = desired::role_name(&job.metadata.name);
    let trust = desired::trust_policy(&ctx.settings).to_string();
    let tags = desired::owner_tags(&job.metadata.name, &ctx.settings)
        .into_iter()
        .map(|(k, v)| aws_sdk_iam::types::Tag::builder().key(k).value(v).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ReconcileError::Invalid(e.to_string()))?;
    let created = ctx
        .iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(&trust)
        .permissions_boundary(&ctx.settings.task_boundary_arn)
        .description(format!(
            "ferry worker tasks of copyjob/{}",
            job.metadata.name
        ))
        .set_tags(Some(tags))
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_entity_already_exists_exception()) =>
        {
            if !super::observe::role_owned(ctx, &name).await? {
                let what = format!("IAM role {name}");
                return Err(ReconcileError::Blocked(super::plan::not_owned(
                    &what,
                    &ctx.settings,
                )));
            }
            ctx.iam
                .update_assume_role_policy()
                .role_name(&name)
                .policy_document(&trust)
                .send()
                .await
                .map_err(|e| aws_error("IAM", "UpdateAssumeRolePolicy", e))?;
            ctx.iam
                .put_role_permissions_boundary()
                .role_name(&name)
                .permissions_boundary(&ctx.settings.task_boundary_arn)
                .send()
                .await
                .map_err(|e| aws_error("IAM", "PutRolePermissionsBoundary", e))?;
        }
        Err(e) => return Err(aws_error("IAM", "CreateRole", e)),
    }
    ctx.iam
        .put_role_policy()
        .role_name(&name)
        .policy_name(desired::ROLE_POLICY)
        .policy_document(desired::task_policy(job, &ctx.settings).to_string())
        .send()
        .await
        .map_err(|e| aws_error("IAM", "PutRolePolicy", e))?;
    Ok(())
}

/// Removes ferry's statement `grant.sid` from the bucket it was written to, with the role that
/// wrote it. A bucket or policy that is gone has nothing to remove; a policy ferry cannot parse
/// is a problem (the grant stays recorded until someone fixes the policy).
pub async fn remove_grant(ctx: &Context, grant: &SourceGrant) -> Result<(), ReconcileError> {
    let s3 = ctx.roles.s3(&grant.role_arn, &grant.region).await;
    with_policy_lock(ctx, &grant.account, &grant.bucket, async || {
        let current = read_policy(&s3, &grant.bucket, &grant.account).await?;
        match super::policy::remove(current.as_deref(), &grant.sid) {
            Ok(None) => Ok(()),
            Ok(Some(Some(doc))) => s3
                .put_bucket_policy()
                .bucket(&grant.bucket)
                .expected_bucket_owner(&grant.account)
                .policy(doc)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_error("S3", "PutBucketPolicy", e)),
            // The fresh copy held nothing but ferry's statements.
            Ok(Some(None)) => s3
                .delete_bucket_policy()
                .bucket(&grant.bucket)
                .expected_bucket_owner(&grant.account)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_error("S3", "DeleteBucketPolicy", e)),
            Err(e) => Err(ReconcileError::Blocked(Problem {
                reason: "InvalidBucketPolicy".into(),
                message: format!(
                    "the policy of bucket {} cannot be parsed ({e}), so ferry cannot remove its statement {}; fix the policy and ferry goes on",
                    grant.bucket, grant.sid
                ),
                terminal: false,
            })),
        }
    })
    .await?;
    tracing::info!(bucket = %grant.bucket, sid = %grant.sid, "removed ferry's statement from a source bucket policy");
    Ok(())
}

/// How long a bucket's policy lock is held at most (its read–modify–write takes a few calls).
const POLICY_LOCK_TTL_MS: u64 = 30_000;
/// How long a step waits for a bucket's policy lock before it backs off.
const POLICY_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs `f` holding the policy lock of `account`'s `bucket` (a lock item in the table): S3 has
/// no conditional PutBucketPolicy, so ferry's own read–modify–writes of one policy, from any
/// reconcile on any replica, take turns. Writers outside ferry are caught by reading back.
async fn with_policy_lock<T>(
    ctx: &Context,
    account: &str,
    bucket: &str,
    f: impl AsyncFnOnce() -> Result<T, ReconcileError>,
) -> Result<T, ReconcileError> {
    let name = format!("bucket-policy#{account}#{bucket}");
    let holder = format!("{:016x}", rand::random::<u64>());
    let deadline = std::time::Instant::now() + POLICY_LOCK_WAIT;
    while !ctx
        .store
        .try_lock(&name, &holder, POLICY_LOCK_TTL_MS)
        .await?
    {
        if std::time::Instant::now() >= deadline {
            return Err(ReconcileError::Store(crate::store::StoreError::Conflict {
                what: format!("the policy lock of bucket {bucket}"),
            }));
        }
        let wait = 50 + rand::random::<u64>() % 200;
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    }
    let result = f().await;
    if let Err(e) = ctx.store.unlock(&name, &holder).await {
        tracing::warn!(bucket, error = %e, "cannot release the bucket policy lock; it expires by itself");
    }
    result
}

/// A bucket's policy, `None` when it has none (or the bucket is gone).
async fn read_policy(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    account: &str,
) -> Result<Option<String>, ReconcileError> {
    match s3
        .get_bucket_policy()
        .bucket(bucket)
        .expected_bucket_owner(account)
        .send()
        .await
    {
        Ok(o) => Ok(o.policy().map(str::to_string)),
        Err(e) if kind(&e) == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(aws_error("S3", "GetBucketPolicy", e)),
    }
}

/// How often a merge is tried again when someone else rewrote the policy under ferry's write.
const POLICY_ATTEMPTS: usize = 3;

/// Merges ferry's statements for `job` into the source bucket policy: under the bucket's policy
/// lock, from a fresh read, then read back; a policy someone else rewrote in between is merged
/// again (up to [`POLICY_ATTEMPTS`] times).
async fn ensure_source_policy(ctx: &Context, job: &CopyJob) -> Result<(), ReconcileError> {
    let src = &job.spec.source;
    let installation = &ctx.settings.installation;
    let s3 = ctx.roles.s3(&src.role_arn, &src.region).await;
    let merge = |current: Option<&str>| {
        super::policy::merge(current, job, installation).map_err(|e| {
            let too_large = matches!(e, super::policy::PolicyError::TooLarge { .. });
            ReconcileError::Blocked(Problem {
                reason: if too_large {
                    "PolicyTooLarge"
                } else {
                    "InvalidBucketPolicy"
                }
                .into(),
                message: format!("source bucket {}: {e}", src.bucket),
                terminal: too_large,
            })
        })
    };
    with_policy_lock(ctx, &src.account, &src.bucket, async || {
        for _ in 0..POLICY_ATTEMPTS {
            let current = read_policy(&s3, &src.bucket, &src.account).await?;
            let Some(document) = merge(current.as_deref())? else {
                return Ok(());
            };
            s3.put_bucket_policy()
                .bucket(&src.bucket)
                .expected_bucket_owner(&src.account)
                .policy(document)
                .send()
                .await
                .map_err(|e| aws_error("S3", "PutBucketPolicy", e))?;
            let back = read_policy(&s3, &src.bucket, &src.account).await?;
            if merge(back.as_deref())?.is_none() {
                return Ok(());
            }
            tracing::warn!(job = %job.metadata.name, bucket = %src.bucket, "the source bucket policy changed under ferry's write; merging again");
        }
        Err(ReconcileError::Store(crate::store::StoreError::Conflict {
            what: format!("the policy of bucket {}", src.bucket),
        }))
    })
    .await
}

/// Creates the destination bucket in its region with the job's settings.
async fn ensure_bucket(ctx: &Context, job: &CopyJob) -> Result<(), StepFailure> {
    let cond = super::plan::DESTINATION_READY;
    let dst = &job.spec.destination;
    let settings = dst.create.clone().unwrap_or_default();
    let s3 = ctx.roles.s3(&dst.role_arn, &dst.region).await;
    let mut req =
        s3.create_bucket()
            .bucket(&dst.bucket)
            .object_ownership(match settings.object_ownership {
                ObjectOwnership::BucketOwnerEnforced => S3Ownership::BucketOwnerEnforced,
                ObjectOwnership::BucketOwnerPreferred => S3Ownership::BucketOwnerPreferred,
                ObjectOwnership::ObjectWriter => S3Ownership::ObjectWriter,
            });
    // us-east-1 takes no LocationConstraint; every other region must name itself.
    if dst.region != "us-east-1" {
        req = req.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(dst.region.as_str()))
                .build(),
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if kind(&e) == ErrorKind::AlreadyExists => {}
        Err(e) if error_code(&e) == "BucketAlreadyExists" => {
            let problem = Problem {
                reason: "OwnedByOther".into(),
                message: format!(
                    "bucket name {} is taken by another account than {} (spec.destination.account); choose another name",
                    dst.bucket, dst.account
                ),
                terminal: true,
            };
            return Err(StepFailure {
                condition: cond,
                error: ReconcileError::Blocked(problem.clone()),
                problem,
            });
        }
        Err(e) => {
            let problem = Problem {
                reason: error_code(&e),
                message: format!(
                    "cannot create bucket {} in {}: {}",
                    dst.bucket,
                    dst.region,
                    describe(&e)
                ),
                terminal: false,
            };
            return Err(StepFailure {
                condition: cond,
                problem,
                error: aws_error("S3", "CreateBucket", e),
            });
        }
    }
    let settings_result: Result<(), ReconcileError> = async {
        if settings.versioning {
            s3.put_bucket_versioning()
                .bucket(&dst.bucket)
                .expected_bucket_owner(&dst.account)
                .versioning_configuration(
                    VersioningConfiguration::builder()
                        .status(BucketVersioningStatus::Enabled)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| aws_error("S3", "PutBucketVersioning", e))?;
        }
        let mut default = ServerSideEncryptionByDefault::builder();
        default = match settings.encryption.kind {
            EncryptionKind::SseS3 => default.sse_algorithm(ServerSideEncryption::Aes256),
            EncryptionKind::SseKms => default
                .sse_algorithm(ServerSideEncryption::AwsKms)
                .set_kms_master_key_id(settings.encryption.kms_key_id.clone()),
        };
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                default
                    .build()
                    .map_err(|e| ReconcileError::Invalid(e.to_string()))?,
            )
            .build();
        s3.put_bucket_encryption()
            .bucket(&dst.bucket)
            .expected_bucket_owner(&dst.account)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()
                    .map_err(|e| ReconcileError::Invalid(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| aws_error("S3", "PutBucketEncryption", e))?;
        // Parts of an upload nobody completes or aborts are billed forever; S3 aborts them
        // after 7 days with this rule (S3 User Guide, "Configuring a bucket lifecycle
        // configuration to delete incomplete multipart uploads"). Only on buckets ferry
        // creates: a lifecycle configuration is one document, and a user's is not ferry's.
        s3.put_bucket_lifecycle_configuration()
            .bucket(&dst.bucket)
            .expected_bucket_owner(&dst.account)
            .lifecycle_configuration(
                desired::bucket_lifecycle().map_err(|e| ReconcileError::Invalid(e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| aws_error("S3", "PutBucketLifecycleConfiguration", e))?;
        Ok(())
    }
    .await;
    settings_result.map_err(|e| fail(cond, e))
}

/// Registers the job's task definition (a new revision of its family).
async fn ensure_task_definition(ctx: &Context, job: &CopyJob) -> Result<(), ReconcileError> {
    let td = desired::task_definition(job, &ctx.settings);
    let log = LogConfiguration::builder()
        .log_driver(LogDriver::Awslogs)
        .options("awslogs-group", &td.log_group)
        .options("awslogs-region", &td.log_region)
        .options("awslogs-stream-prefix", "ferry")
        .build()
        .map_err(|e| ReconcileError::Invalid(e.to_string()))?;
    let memory = i32::try_from(job.spec.run.memory_mib).unwrap_or(i32::MAX);
    let container = ContainerDefinition::builder()
        .name(desired::CONTAINER)
        .image(&td.image)
        .essential(true)
        .command("worker")
        .memory(memory)
        .stop_timeout(30)
        .log_configuration(log)
        .build();
    let mut req = ctx
        .ecs
        .register_task_definition()
        .family(&td.family)
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu(&td.cpu)
        .memory(&td.memory)
        // RuntimePlatform (ECS API reference, data type RuntimePlatform): cpuArchitecture
        // X86_64 or ARM64, operatingSystemFamily LINUX for Fargate Linux tasks.
        .runtime_platform(
            aws_sdk_ecs::types::RuntimePlatform::builder()
                .cpu_architecture(aws_sdk_ecs::types::CpuArchitecture::from(
                    td.cpu_architecture.as_str(),
                ))
                .operating_system_family(aws_sdk_ecs::types::OsFamily::Linux)
                .build(),
        )
        .task_role_arn(&td.task_role_arn)
        .container_definitions(container)
        .set_tags(Some(
            desired::owner_tags(&job.metadata.name, &ctx.settings)
                .into_iter()
                .map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build())
                .collect(),
        ));
    if !td.execution_role_arn.is_empty() {
        req = req.execution_role_arn(&td.execution_role_arn);
    }
    req.send()
        .await
        .map_err(|e| aws_error("ECS", "RegisterTaskDefinition", e))?;
    Ok(())
}

/// Gives the items of the runs beyond the history limit a TTL of now.
async fn expire_runs(
    ctx: &Context,
    stored: &StoredJob,
    status: &CopyJobStatus,
    keep: u32,
) -> Result<(), ReconcileError> {
    let name = stored.name();
    let current = status
        .run
        .as_ref()
        .map(|r| r.id.as_str())
        .unwrap_or_default();
    let records = ctx.store.run_records(name).await?;
    let now = crate::store::runs::now_ms() / 1000;
    for run in super::history::to_expire(&records, current, keep as usize) {
        let items = ctx.store.expire_run(name, &run, now).await?;
        tracing::info!(job = %name, run = %run, items, "run history: the run's items expire");
    }
    Ok(())
}

/// Which RunTask call [`ensure_task`] makes.
struct Attempt<'a> {
    run: &'a str,
    slot: u32,
    attempt: u32,
    /// Earlier calls for this attempt that ECS could not place (each gets its own token).
    placement_failures: u32,
    /// The run's pinned task definition revision; `None`: the family's latest (the first task).
    task_definition: Option<&'a str>,
}

/// What became of a RunTask call.
enum Started {
    Task {
        arn: String,
        /// The revision it runs.
        task_definition: Option<String>,
    },
    /// ECS answered `failures` and started nothing.
    NotPlaced { reason: String, message: String },
}

/// Starts the task of one attempt, or finds the one a previous try started (same token).
async fn ensure_task(
    ctx: &Context,
    job: &CopyJob,
    a: &Attempt<'_>,
) -> Result<Started, ReconcileError> {
    let name = &job.metadata.name;
    let (run, slot, attempt) = (a.run, a.slot, a.attempt);
    let cluster = desired::cluster(job, &ctx.settings);
    let token = desired::placement_token(name, run, slot, attempt, a.placement_failures);
    let existing = ctx
        .ecs
        .list_tasks()
        .cluster(&cluster)
        .started_by(&token)
        .send()
        .await
        .map_err(|e| aws_error("ECS", "ListTasks", e))?;
    if let Some(arn) = existing.task_arns().first() {
        tracing::info!(job = %name, run, slot, attempt, task = %arn, "found the attempt's task already started");
        return Ok(Started::Task {
            arn: arn.clone(),
            task_definition: None,
        });
    }
    let stopped = ctx
        .ecs
        .list_tasks()
        .cluster(&cluster)
        .started_by(&token)
        .desired_status(DesiredStatus::Stopped)
        .send()
        .await
        .map_err(|e| aws_error("ECS", "ListTasks", e))?;
    if let Some(arn) = stopped.task_arns().first() {
        return Ok(Started::Task {
            arn: arn.clone(),
            task_definition: None,
        });
    }
    let (subnets, groups, public_ip) = desired::network(job, &ctx.settings);
    if subnets.is_empty() || groups.is_empty() {
        return Err(ReconcileError::Blocked(Problem {
            reason: "NoNetwork".into(),
            message: "no subnets or security groups: set spec.ecs.subnets/securityGroups or `ferry operator --subnets/--security-groups`".into(),
            terminal: false,
        }));
    }
    let env: Vec<KeyValuePair> =
        desired::worker_environment(name, run, slot, attempt, &ctx.settings)
            .into_iter()
            .map(|(k, v)| KeyValuePair::builder().name(k).value(v).build())
            .collect();
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(subnets))
        .set_security_groups(Some(groups))
        .assign_public_ip(if public_ip {
            AssignPublicIp::Enabled
        } else {
            AssignPublicIp::Disabled
        })
        .build()
        .map_err(|e| ReconcileError::Invalid(e.to_string()))?;
    let out = ctx
        .ecs
        .run_task()
        .cluster(&cluster)
        .task_definition(
            a.task_definition
                .map_or_else(|| desired::family(name), str::to_string),
        )
        .launch_type(LaunchType::Fargate)
        .count(1)
        .started_by(&token)
        .client_token(&token)
        // RunTask `propagateTags` (ECS API reference, RunTask): the task gets the task
        // definition's tags; enforced on moto by the strict rule `ecs-propagate-tags`.
        .propagate_tags(aws_sdk_ecs::types::PropagateTags::TaskDefinition)
        .set_tags(Some(
            desired::task_tags(run)
                .into_iter()
                .map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(vpc)
                .build(),
        )
        .overrides(
            TaskOverride::builder()
                .container_overrides(
                    ContainerOverride::builder()
                        .name(desired::CONTAINER)
                        .set_environment(Some(env))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws_error("ECS", "RunTask", e))?;
    match out.tasks().first() {
        Some(task) if task.task_arn().is_some() => {
            let arn = task.task_arn().unwrap_or_default();
            tracing::info!(job = %name, run, slot, attempt, task = %arn, "started worker task");
            Ok(Started::Task {
                arn: arn.to_string(),
                task_definition: task.task_definition_arn().map(str::to_string),
            })
        }
        _ => {
            let failures = out.failures();
            let reason = failures
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("RunTaskFailed")
                .to_string();
            let why: Vec<String> = failures
                .iter()
                .map(|f| {
                    format!(
                        "{}: {}",
                        f.reason().unwrap_or("?"),
                        f.detail().unwrap_or("")
                    )
                })
                .collect();
            Ok(Started::NotPlaced {
                reason,
                message: format!(
                    "RunTask started no task for slot {slot} attempt {attempt}: {}",
                    why.join("; ")
                ),
            })
        }
    }
}

/// Stops a task; a task that is already stopped or gone is success.
pub async fn stop_task(
    ctx: &Context,
    cluster: &str,
    arn: &str,
    reason: &str,
) -> Result<(), ReconcileError> {
    match ctx
        .ecs
        .stop_task()
        .cluster(cluster)
        .task(arn)
        .reason(reason)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(task = %arn, reason, "stopped task");
            Ok(())
        }
        // The task is gone (ECS: "The referenced task was not found"): nothing to stop. Any
        // other refusal (AccessDenied) is an error: the task may still run.
        Err(e) if kind(&e) == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(aws_error("ECS", "StopTask", e)),
    }
}

/// Carries out the finalizer's steps (`deletion::plan`), in order. Every step tolerates its
/// resource being gone already, so an interrupted cleanup simply runs again.
pub async fn cleanup(
    ctx: &Context,
    stored: &StoredJob,
    steps: &[Cleanup],
) -> Result<(), ReconcileError> {
    let job = &stored.job;
    let name = &job.metadata.name;
    for step in steps {
        if !ctx.fence.valid() {
            return Err(ReconcileError::LeaseLost);
        }
        match step {
            Cleanup::StopTask { arn } => {
                let cluster = desired::task_cluster(arn)
                    .map_or_else(|| desired::cluster(job, &ctx.settings), str::to_string);
                stop_task(ctx, &cluster, arn, "ferry: job deleted").await?;
            }
            Cleanup::RemoveSourceGrant { grant } => remove_grant(ctx, grant).await?,
            Cleanup::DeleteTaskRole => {
                let role = desired::role_name(name);
                match ctx
                    .iam
                    .delete_role_policy()
                    .role_name(&role)
                    .policy_name(desired::ROLE_POLICY)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    Err(e) if kind(&e) == ErrorKind::NotFound => {}
                    Err(e) => return Err(aws_error("IAM", "DeleteRolePolicy", e)),
                }
                match ctx.iam.delete_role().role_name(&role).send().await {
                    Ok(_) => {}
                    Err(e) if kind(&e) == ErrorKind::NotFound => {}
                    Err(e) => return Err(aws_error("IAM", "DeleteRole", e)),
                }
            }
            Cleanup::DeregisterTaskDefinition { arn } => {
                if let Err(e) = ctx
                    .ecs
                    .deregister_task_definition()
                    .task_definition(arn)
                    .send()
                    .await
                {
                    if kind(&e) != ErrorKind::NotFound {
                        return Err(aws_error("ECS", "DeregisterTaskDefinition", e));
                    }
                }
            }
            Cleanup::DeleteRecords => {
                ctx.store.delete_job_records(name).await?;
                tracing::info!(job = %name, "job finalized and removed");
            }
        }
    }
    Ok(())
}
