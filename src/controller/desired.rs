//! The desired state of a job's cloud resources, computed from its spec and the operator's
//! settings: resource names, the task role's trust and permission policies, the ECS task
//! definition, run ids and RunTask idempotency tokens. Pure: no IO, cannot fail.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::CopyJob;

/// Operator-wide settings (from `ferry operator` flags) that jobs fall back to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The operator's own account (the task roles and the table live there).
    pub account: String,
    /// The operator's region (the table, the cluster, the log group).
    pub region: String,
    /// ferry's table.
    pub table: String,
    pub cluster: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub assign_public_ip: bool,
    pub image: String,
    pub execution_role_arn: String,
    pub log_group: String,
    /// Extra environment for every worker (e.g. `FERRY_S3_FORCE_PATH_STYLE=true`).
    pub worker_env: Vec<(String, String)>,
    /// First restart backoff of a failed task (10 s), doubling up to 36 times this.
    pub restart_backoff: std::time::Duration,
    /// This installation of ferry ([`installation_id`]): in owner tags and statement Sids.
    pub installation: String,
    /// The managed policy every task role carries as its permissions boundary.
    pub task_boundary_arn: String,
    /// How long a task that neither DescribeTasks nor ListTasks knows may be missing after
    /// RunTask answered before it counts as lost (and is stopped and replaced).
    pub missing_grace: std::time::Duration,
    /// A RUNNING task whose worker has not written its heartbeat for this long is stopped (and
    /// counts as failed); zero: never.
    pub heartbeat_timeout: std::time::Duration,
    /// CPU architecture of tasks whose job names none.
    pub cpu_architecture: crate::model::CpuArchitecture,
}

/// The id of an installation: 12 hex digits of a digest of the operator's account and table.
/// Two operators with their own tables never take each other's resources for their own.
pub fn installation_id(account: &str, table: &str) -> String {
    crate::digest::hex(&[account.as_bytes(), table.as_bytes()], 12)
}

/// The name of the task roles' permissions boundary (a managed policy in the operator's account,
/// created by the CloudFormation template).
pub const TASK_BOUNDARY: &str = "ferry-task-boundary";

/// The ARN of the boundary policy in an account.
pub fn task_boundary_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:policy/{TASK_BOUNDARY}")
}

/// The tag naming the installation that owns a role or task definition.
pub const OWNER_TAG: &str = "ferry:owner";
/// The tag naming the job a resource belongs to.
pub const JOB_TAG: &str = "ferry:job";

/// The tags of the roles and task definitions ferry creates for a job.
pub fn owner_tags(job: &str, s: &Settings) -> Vec<(String, String)> {
    vec![
        (OWNER_TAG.into(), s.installation.clone()),
        (JOB_TAG.into(), job.into()),
    ]
}

/// Whether tags (key, value) mark a resource as this installation's.
pub fn owned<'a>(mut tags: impl Iterator<Item = (&'a str, &'a str)>, s: &Settings) -> bool {
    tags.any(|(k, v)| k == OWNER_TAG && v == s.installation)
}

/// FNV-1a, for short stable names (not for security).
pub fn fnv(parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h = (h ^ 0x1f).wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Name of the job's ECS task role (IAM role names are at most 64 characters).
pub fn role_name(job: &str) -> String {
    let name = format!("ferry-task-{job}");
    if name.len() <= 64 {
        return name;
    }
    // Cut at a character boundary: a name written into the table around the CLI may hold
    // multibyte characters, and slicing one apart would panic.
    let mut cut = 44;
    while !job.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("ferry-task-{}-{:08x}", &job[..cut], fnv(&[job]) as u32)
}

/// ARN of the job's task role.
pub fn role_arn(job: &str, s: &Settings) -> String {
    format!("arn:aws:iam::{}:role/{}", s.account, role_name(job))
}

/// Name of the inline policy ferry keeps on the task role.
pub const ROLE_POLICY: &str = "ferry-worker";

/// Task definition family of a job.
pub fn family(job: &str) -> String {
    format!("ferry-{job}")
}

/// Trust policy of the task role: ECS tasks of the operator's account.
pub fn trust_policy(s: &Settings) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "Service": "ecs-tasks.amazonaws.com" },
            "Action": "sts:AssumeRole",
            "Condition": { "StringEquals": { "aws:SourceAccount": s.account } }
        }]
    })
}

/// Permissions of the task role: assume this job's destination role; read this job's spec,
/// write this job's run items and read its runs' claim index, nothing else in the table.
pub fn task_policy(job: &CopyJob, s: &Settings) -> Value {
    let name = &job.metadata.name;
    let table = format!(
        "arn:aws:dynamodb:{}:{}:table/{}",
        s.region, s.account, s.table
    );
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AssumeDestinationRole",
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Resource": job.spec.destination.role_arn
            },
            {
                "Sid": "ReadJob",
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:Query"],
                "Resource": table,
                "Condition": {
                    "ForAllValues:StringEquals": { "dynamodb:LeadingKeys": [format!("JOB#{name}")] }
                }
            },
            {
                "Sid": "WriteRuns",
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                "Resource": table,
                "Condition": {
                    "ForAllValues:StringLike": { "dynamodb:LeadingKeys": [format!("RUN#{name}#*")] }
                }
            },
            {
                "Sid": "ClaimChunks",
                "Effect": "Allow",
                "Action": "dynamodb:Query",
                "Resource": format!("{table}/index/gsi2"),
                "Condition": {
                    "ForAllValues:StringLike": { "dynamodb:LeadingKeys": [format!("OPEN#{name}#*")] }
                }
            }
        ]
    })
}

/// The parts of a task definition ferry sets, in a form that compares equal when ECS holds what
/// ferry would register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDefinition {
    pub family: String,
    pub image: String,
    pub cpu: String,
    pub memory: String,
    pub task_role_arn: String,
    pub execution_role_arn: String,
    pub log_group: String,
    pub log_region: String,
    /// `runtimePlatform.cpuArchitecture` (`X86_64` when a revision names none, as ECS reads it).
    pub cpu_architecture: String,
}

/// Name of the worker container.
pub const CONTAINER: &str = "worker";

/// The task definition a job should have.
pub fn task_definition(job: &CopyJob, s: &Settings) -> TaskDefinition {
    let run = &job.spec.run;
    TaskDefinition {
        family: family(&job.metadata.name),
        image: job
            .spec
            .ecs
            .image
            .clone()
            .unwrap_or_else(|| s.image.clone()),
        cpu: run.cpu.to_string(),
        memory: run.memory_mib.to_string(),
        task_role_arn: role_arn(&job.metadata.name, s),
        execution_role_arn: s.execution_role_arn.clone(),
        log_group: s.log_group.clone(),
        log_region: s.region.clone(),
        cpu_architecture: job
            .spec
            .ecs
            .cpu_architecture
            .unwrap_or(s.cpu_architecture)
            .as_str()
            .to_string(),
    }
}

/// Network settings of a job's tasks: the job's, else the operator's.
pub fn network(job: &CopyJob, s: &Settings) -> (Vec<String>, Vec<String>, bool) {
    let e = &job.spec.ecs;
    let pick = |own: &Vec<String>, default: &Vec<String>| {
        if own.is_empty() {
            default.clone()
        } else {
            own.clone()
        }
    };
    (
        pick(&e.subnets, &s.subnets),
        pick(&e.security_groups, &s.security_groups),
        e.assign_public_ip.unwrap_or(s.assign_public_ip),
    )
}

/// The ECS cluster of a job's tasks.
pub fn cluster(job: &CopyJob, s: &Settings) -> String {
    job.spec
        .ecs
        .cluster
        .clone()
        .unwrap_or_else(|| s.cluster.clone())
}

/// The cluster named in a task ARN (`arn:aws:ecs:<region>:<account>:task/<cluster>/<id>`; the
/// old format without the cluster names none).
pub fn task_cluster(arn: &str) -> Option<&str> {
    let (_, path) = arn.split_once(":task/")?;
    let (cluster, id) = path.split_once('/')?;
    (!cluster.is_empty() && !id.is_empty()).then_some(cluster)
}

/// A digest of what a spec copies: source, destination and copy options. Run settings
/// (parallelism, backoffLimit, schedule, deadlines, rates, CPU) and ECS settings only change how
/// it is copied, so a change to them alone keeps the current run (or a finished run finished).
pub fn copy_digest(spec: &crate::model::CopyJobSpec) -> String {
    let doc = serde_json::json!({
        "source": spec.source,
        "destination": spec.destination,
        "copy": spec.copy,
    });
    crate::digest::hex(&[doc.to_string().as_bytes()], 16)
}

/// Id of the `seq`-th run of a generation of the job incarnation `uid`: `<uid>-g<gen>r<seq>`
/// (`g<gen>r<seq>` for a job stored before uids). A job deleted and created again under the same
/// name starts at generation 1 again; its uid keeps its runs, their items and their tasks'
/// tokens apart from the old incarnation's.
pub fn run_id(uid: &str, generation: u64, seq: u64) -> String {
    if uid.is_empty() {
        format!("g{generation}r{seq}")
    } else {
        format!("{uid}-g{generation}r{seq}")
    }
}

/// The worker task id of an attempt (`FERRY_TASK`), unique within a run.
pub fn task_id(slot: u32, attempt: u32) -> String {
    format!("s{slot}a{attempt}")
}

/// The RunTask `clientToken` and `startedBy` of one attempt: the same attempt always gets the
/// same token, so a retried or restarted operator finds the task instead of starting another.
///
/// ECS allows `startedBy` "up to 36 letters (uppercase and lowercase), numbers, hyphens (-),
/// forward slash (/), and underscores (_)" (RunTask API reference), so the token is `ferry-` and
/// 30 hex digits of a digest of job, run, slot and attempt, whatever the job's name; the name
/// travels in the task's `ferry:job` tag instead, propagated from the task definition (see [`task_tags`]).
pub fn attempt_token(job: &str, run: &str, slot: u32, attempt: u32) -> String {
    let (slot, attempt) = (slot.to_string(), attempt.to_string());
    let digest = crate::digest::hex(
        &[
            job.as_bytes(),
            run.as_bytes(),
            slot.as_bytes(),
            attempt.as_bytes(),
        ],
        30,
    );
    format!("{TOKEN_PREFIX}{digest}")
}

/// The token of the RunTask call for an attempt after `placement_failures` calls that ECS could
/// not place: the attempt's own token first, then a new one per call. A clientToken names one
/// request: a retry with the same token is answered with the first call's result, failures
/// included, so a new placement try needs a new token.
pub fn placement_token(
    job: &str,
    run: &str,
    slot: u32,
    attempt: u32,
    placement_failures: u32,
) -> String {
    if placement_failures == 0 {
        return attempt_token(job, run, slot, attempt);
    }
    let tries = format!("{attempt}p{placement_failures}");
    let digest = crate::digest::hex(
        &[
            job.as_bytes(),
            run.as_bytes(),
            slot.to_string().as_bytes(),
            tries.as_bytes(),
        ],
        30,
    );
    format!("{TOKEN_PREFIX}{digest}")
}

/// What every ferry task's `startedBy` starts with.
pub const TOKEN_PREFIX: &str = "ferry-";

/// The tags of an attempt's task: which job and run it belongs to (ECS tag values hold up to
/// 256 characters, so the whole name fits).
/// The tags RunTask gives a task besides those it propagates from the task definition
/// (`ferry:owner` and `ferry:job`, [`owner_tags`]; RunTask `propagateTags: TASK_DEFINITION`),
/// so Cost Explorer can split Fargate costs per job and per run.
pub fn task_tags(run: &str) -> Vec<(String, String)> {
    vec![("ferry:run".into(), run.into())]
}

/// The id of the lifecycle rule ferry puts on buckets it creates.
pub const LIFECYCLE_RULE: &str = "ferry-abort-incomplete-multipart-uploads";

/// The lifecycle configuration of a bucket ferry creates: incomplete multipart uploads are
/// aborted 7 days after they began.
pub fn bucket_lifecycle()
-> Result<aws_sdk_s3::types::BucketLifecycleConfiguration, aws_sdk_s3::error::BuildError> {
    use aws_sdk_s3::types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
        LifecycleRule, LifecycleRuleFilter,
    };
    BucketLifecycleConfiguration::builder()
        .rules(
            LifecycleRule::builder()
                .id(LIFECYCLE_RULE)
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix("").build())
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(7)
                        .build(),
                )
                .build()?,
        )
        .build()
}

/// The environment a worker task gets as RunTask overrides.
pub fn worker_environment(
    job: &str,
    run: &str,
    slot: u32,
    attempt: u32,
    s: &Settings,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = s.worker_env.iter().cloned().collect();
    env.insert("FERRY_JOB".into(), job.into());
    env.insert("FERRY_RUN".into(), run.into());
    env.insert("FERRY_TASK".into(), task_id(slot, attempt));
    env.insert("FERRY_TABLE".into(), s.table.clone());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_architecture_is_the_jobs_else_the_operators() {
        let yaml = |ecs: &str| {
            format!(
                r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: j }}
spec:
  source: {{ account: "111111111111", region: eu-west-1, bucket: s, roleArn: "arn:aws:iam::111111111111:role/s" }}
  destination: {{ account: "222222222222", region: us-east-1, bucket: d, roleArn: "arn:aws:iam::222222222222:role/d" }}
  ecs: {{ {ecs} }}
"#
            )
        };
        let job = |ecs: &str| -> CopyJob { serde_saphyr::from_str(&yaml(ecs)).expect("job") };
        let arm = Settings {
            cpu_architecture: crate::model::CpuArchitecture::Arm64,
            ..Settings::default()
        };
        for (ecs, settings, wanted) in [
            ("", &Settings::default(), "X86_64"),
            ("", &arm, "ARM64"),
            ("cpuArchitecture: X86_64", &arm, "X86_64"),
            ("cpuArchitecture: ARM64", &Settings::default(), "ARM64"),
        ] {
            assert_eq!(
                task_definition(&job(ecs), settings).cpu_architecture,
                wanted,
                "{ecs}"
            );
        }
        let bad: Result<CopyJob, _> = serde_saphyr::from_str(&yaml("cpuArchitecture: arm"));
        assert!(bad.is_err(), "only ECS's names are accepted");
    }

    #[test]
    fn role_names_fit_iam_limits_and_stay_distinct() {
        let long = "a".repeat(63);
        let other = format!("{}b", "a".repeat(62));
        assert_eq!(role_name("logs"), "ferry-task-logs");
        assert!(role_name(&long).len() <= 64);
        assert_ne!(role_name(&long), role_name(&other));
    }

    #[test]
    fn task_arns_name_their_cluster_in_the_new_format_only() {
        for (arn, cluster) in [
            (
                "arn:aws:ecs:eu-west-1:123456789012:task/ferry/0f1e2d",
                Some("ferry"),
            ),
            ("arn:aws:ecs:eu-west-1:123456789012:task/0f1e2d", None),
            ("arn:task/0", None),
        ] {
            assert_eq!(task_cluster(arn), cluster, "{arn}");
        }
    }

    #[test]
    fn a_long_multibyte_name_gets_a_role_name_without_panicking() {
        // 43 ASCII bytes, then two-byte characters straddling byte 44.
        let name = format!("{}{}", "a".repeat(43), "é".repeat(20));
        let role = role_name(&name);
        assert!(role.len() <= 64, "{role}");
        assert!(role.starts_with(&format!("ferry-task-{}", "a".repeat(43))));
    }

    #[test]
    fn attempt_tokens_are_stable_distinct_and_valid() {
        // A re-created job's runs (new uid) get new tokens.
        assert_ne!(
            attempt_token("logs", &run_id("0a1b2c3d", 1, 1), 0, 1),
            attempt_token("logs", &run_id("9f8e7d6c", 1, 1), 0, 1)
        );
        assert_eq!(run_id("0a1b2c3d", 2, 3), "0a1b2c3d-g2r3");
        // Each placement try of an attempt is a new request.
        assert_eq!(
            placement_token("logs", "g1r1", 0, 1, 0),
            attempt_token("logs", "g1r1", 0, 1)
        );
        let tries: std::collections::BTreeSet<String> = (0..4)
            .map(|p| placement_token("logs", "g1r1", 0, 1, p))
            .chain([attempt_token("logs", "g1r1", 0, 2)])
            .collect();
        assert_eq!(tries.len(), 5, "{tries:?}");
        assert_eq!(run_id("", 2, 3), "g2r3");
        let a = attempt_token("logs-migration", "g1r1", 0, 1);
        assert_eq!(a, attempt_token("logs-migration", "g1r1", 0, 1));
        assert_ne!(a, attempt_token("logs-migration", "g1r1", 0, 2));
        assert_ne!(a, attempt_token("logs-migration", "g1r1", 1, 1));
        assert_ne!(a, attempt_token("logs-migration", "g2r1", 0, 1));
        for name in ["a", "logs-migration", &"x".repeat(63), "ünïcødé-name"] {
            let t = attempt_token(name, "g100r100", 999, 999);
            assert!(t.len() <= 36, "{t}");
            assert!(
                t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '/'),
                "{t}"
            );
            assert!(t.starts_with(TOKEN_PREFIX));
        }
        assert_ne!(
            attempt_token(&"x".repeat(63), "g1r1", 0, 1),
            attempt_token(&format!("{}y", "x".repeat(62)), "g1r1", 0, 1),
            "names sharing a long prefix get distinct tokens"
        );
    }
}
