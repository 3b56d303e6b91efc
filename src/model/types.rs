//! The CopyJob resource: the desired state a user writes (`spec`) and the observed state only the
//! operator writes (`status`). Plain data with serde and JSON Schema derives; no AWS types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API version this build reads and writes.
pub const API_VERSION: &str = "ferry.dev/v1alpha1";
/// The one kind ferry knows.
pub const KIND: &str = "CopyJob";

/// A CopyJob: copy the objects of one S3 bucket (or prefix) into another bucket, possibly in
/// another AWS account and region, once or on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "CopyJob")]
pub struct CopyJob {
    /// Always `ferry.dev/v1alpha1`.
    pub api_version: String,
    /// Always `CopyJob`.
    pub kind: String,
    pub metadata: Metadata,
    pub spec: CopyJobSpec,
    /// Written by the operator only; ignored by `ferry apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CopyJobStatus>,
}

/// Identifies the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// Unique job name: a DNS-1123 label (lowercase letters, digits and `-`, at most 63
    /// characters, starting and ending with a letter or digit).
    pub name: String,
    /// Free-form labels, as in Kubernetes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Read-only, set by ferry when it shows a job: increments on every spec change. Ignored by
    /// `ferry apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Read-only, set by ferry: when the job was first applied (RFC 3339). Ignored by `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Read-only, set by ferry: when deletion was requested (RFC 3339). Ignored by `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    /// Read-only, set by ferry: this incarnation of the job. A job deleted and created again
    /// under the same name gets a new uid, and its runs and tasks share nothing with the old
    /// one's. Ignored by `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl CopyJob {
    /// The document as the user owns it: no status and no read-only metadata. This is what
    /// `apply` stores and compares, and what `diff` shows.
    pub fn desired(&self) -> CopyJob {
        let mut job = self.clone();
        job.status = None;
        job.metadata.generation = None;
        job.metadata.creation_timestamp = None;
        job.metadata.uid = None;
        job.metadata.deletion_timestamp = None;
        job
    }
}

/// What to copy, from where to where, and how to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyJobSpec {
    pub source: Source,
    pub destination: Destination,
    #[serde(default)]
    pub copy: CopyOptions,
    #[serde(default)]
    pub run: RunOptions,
    /// Where the worker tasks run. Every field falls back to the operator's defaults
    /// (`ferry operator --help`).
    #[serde(default)]
    pub ecs: EcsOptions,
}

/// The bucket the objects are read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// 12-digit AWS account id that owns the bucket.
    pub account: String,
    /// Region of the bucket, e.g. `eu-west-1`.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Copy only keys under this prefix (empty: the whole bucket).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Role in the source account that the operator assumes to manage the source bucket's
    /// policy. Its account must be `account`.
    pub role_arn: String,
    /// The bucket is requester-pays: every request carries `x-amz-request-payer: requester`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub requester_pays: bool,
    /// Read the object list from this S3 Inventory report instead of listing the bucket: how a
    /// run over 10⁸–10⁹ objects starts copying at once. Objects written after the report are
    /// not copied; objects changed since are copied as they are now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryInput>,
}

/// An S3 Inventory report of the source bucket, used as the run's object list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryInput {
    /// The report's `manifest.json`, e.g.
    /// `s3://inventory-bucket/prefix/source-bucket/config-id/2026-11-30T00-00Z/manifest.json`.
    /// The inventory bucket is in the source bucket's region (S3 Inventory requires it); its
    /// `sourceBucket` must be this job's source bucket, and its format CSV or Parquet with the
    /// Size and ETag fields. The destination role needs `s3:GetObject` on the report's objects.
    pub manifest: String,
    /// 12-digit account id that owns the inventory bucket (every read of the report checks it).
    /// Default: the source account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// The bucket the objects are written to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// 12-digit AWS account id that owns the bucket.
    pub account: String,
    /// Region of the bucket, e.g. `ap-southeast-2`.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Write keys under this prefix: source `prefix` + `k` becomes destination `prefix` + `k`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Role in the destination account that the worker assumes to copy. Its account must be
    /// `account`; the source bucket policy grants this role read access.
    pub role_arn: String,
    /// Create the bucket if it does not exist, with these settings. Omit to require an existing
    /// bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<BucketSettings>,
    /// Storage class of the copies. Omit to keep each object's source storage class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<StorageClass>,
    /// Encrypt the copies with this KMS key (ARN) using SSE-KMS. Omit to use the bucket's default
    /// encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

/// Settings of a destination bucket that ferry creates and keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketSettings {
    /// Turn on object versioning.
    #[serde(default, skip_serializing_if = "is_false")]
    pub versioning: bool,
    /// Default encryption of the bucket.
    #[serde(default)]
    pub encryption: BucketEncryption,
    /// Object Ownership of the bucket. `BucketOwnerEnforced` (the AWS default) disables ACLs.
    #[serde(default)]
    pub object_ownership: ObjectOwnership,
}

/// Default encryption of a bucket ferry creates.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketEncryption {
    /// `SSE-S3` (S3-managed keys) or `SSE-KMS`.
    #[serde(default, rename = "type")]
    pub kind: EncryptionKind,
    /// KMS key ARN, required with `SSE-KMS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

/// Server-side encryption choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum EncryptionKind {
    #[default]
    #[serde(rename = "SSE-S3")]
    SseS3,
    #[serde(rename = "SSE-KMS")]
    SseKms,
}

/// S3 Object Ownership settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ObjectOwnership {
    #[default]
    BucketOwnerEnforced,
    BucketOwnerPreferred,
    ObjectWriter,
}

/// S3 storage classes a copy may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StorageClass {
    Standard,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    GlacierIr,
    Glacier,
    DeepArchive,
    ReducedRedundancy,
}

impl StorageClass {
    /// The name S3 uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
            StorageClass::ReducedRedundancy => "REDUCED_REDUNDANCY",
        }
    }
}

/// Which objects to copy and what to carry with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyOptions {
    /// Glob patterns (relative to the source prefix, `*` does not cross `/`, `**` does); when
    /// present only matching keys are copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Glob patterns of keys never copied; applied after `include`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Keep user metadata and content headers (Content-Type, Cache-Control, …).
    #[serde(default = "yes")]
    pub metadata: bool,
    /// Keep object tags (needs `s3:GetObjectTagging` on the source).
    #[serde(default = "yes")]
    pub tags: bool,
    /// Copy object ACLs. Needs a destination bucket whose Object Ownership allows ACLs;
    /// otherwise each object reports why its ACL was not copied.
    #[serde(default, skip_serializing_if = "is_false")]
    pub acl: bool,
    /// When to write an object that already exists at the destination.
    #[serde(default)]
    pub overwrite: Overwrite,
    /// Delete destination objects (under the destination prefix) that the source does not have.
    /// Off by default: ferry never deletes destination data unless asked here.
    #[serde(default, skip_serializing_if = "is_false")]
    pub delete_extraneous: bool,
    /// Objects larger than this many MiB are copied in parts (UploadPartCopy). At most 5120
    /// (the CopyObject limit of 5 GiB), at least 5.
    #[serde(
        default = "default_multipart_threshold_mib",
        rename = "multipartThresholdMiB"
    )]
    pub multipart_threshold_mib: u64,
    /// Where to write the per-object report of failures (JSON lines), as `s3://bucket/prefix`,
    /// written with the destination role. Omit to keep only the first failures in the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_uri: Option<String>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            include: Vec::new(),
            exclude: Vec::new(),
            metadata: true,
            tags: true,
            acl: false,
            overwrite: Overwrite::default(),
            delete_extraneous: false,
            multipart_threshold_mib: default_multipart_threshold_mib(),
            report_uri: None,
        }
    }
}

/// Overwrite policy for objects present at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Overwrite {
    /// Copy when size or source ETag differ from what ferry copied before.
    #[default]
    IfChanged,
    /// Always copy.
    Always,
    /// Never replace an existing destination object.
    Never,
}

/// How the job runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunOptions {
    /// `Once`: copy once and finish. `Sync`: copy again on every `schedule` tick.
    #[serde(default)]
    pub mode: RunMode,
    /// Cron expression (5 fields: minute hour day-of-month month day-of-week; or 6 with
    /// seconds first), read in `timeZone`. Required with `mode: Sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in, e.g. `Europe/Berlin` (default UTC). Ticks follow
    /// the zone's daylight-saving changes, as CronJob's `timeZone` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// A tick missed by more than this many seconds (the operator was down, or the previous
    /// run was still going) is skipped, not run late; unset: a missed tick runs as soon as it
    /// can, once. CronJob's `startingDeadlineSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<u64>,
    /// Stop scheduling and stop running tasks; resume by setting it back to false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// Number of Fargate tasks that share one run.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// Fargate CPU units per task (256, 512, 1024, 2048, 4096, 8192, 16384).
    #[serde(default = "default_cpu")]
    pub cpu: u32,
    /// Fargate memory per task in MiB; must be valid for `cpu`.
    #[serde(default = "default_memory_mib", rename = "memoryMiB")]
    pub memory_mib: u32,
    /// Task failures tolerated per run before the job is Failed (platform stops do not count).
    #[serde(default = "default_backoff_limit")]
    pub backoff_limit: u32,
    /// Fail a run that has been active for longer than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
    /// Upper bound on the job's S3 requests per second, to protect a hot prefix: each of its
    /// `parallelism` tasks gets an equal share (rounded up). Whatever it says, a task slows down
    /// when S3 answers SlowDown and speeds up again gradually.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_second: Option<u32>,
    /// Earlier runs whose items (chunks, progress, failure records) stay in the table; older
    /// runs' items expire through DynamoDB TTL when a new run starts (CronJob's
    /// `successfulJobsHistoryLimit`). 0 to 100.
    #[serde(default = "default_history_limit")]
    pub history_limit: u32,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            mode: RunMode::default(),
            schedule: None,
            suspend: false,
            parallelism: default_parallelism(),
            cpu: default_cpu(),
            memory_mib: default_memory_mib(),
            backoff_limit: default_backoff_limit(),
            active_deadline_seconds: None,
            max_requests_per_second: None,
            time_zone: None,
            starting_deadline_seconds: None,
            history_limit: default_history_limit(),
        }
    }
}

/// Run once or keep in sync on a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum RunMode {
    #[default]
    Once,
    Sync,
}

/// Where the worker tasks run; empty fields take the operator's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EcsOptions {
    /// ECS cluster name or ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Subnet ids for the tasks' awsvpc network interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Security group ids for the tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Give tasks a public IP (needed in public subnets without a NAT gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assign_public_ip: Option<bool>,
    /// Container image that runs `ferry worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU architecture of the tasks (the task definition's `runtimePlatform`): `ARM64`
    /// (Graviton, about 20% cheaper per vCPU-hour on Fargate) or `X86_64`; default: the
    /// operator's `--cpu-architecture`. The image must be built for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_architecture: Option<CpuArchitecture>,
}

/// A Fargate CPU architecture (ECS `RuntimePlatform.cpuArchitecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum CpuArchitecture {
    #[default]
    #[serde(rename = "X86_64")]
    X86_64,
    #[serde(rename = "ARM64")]
    Arm64,
}

impl CpuArchitecture {
    /// ECS's name of the architecture.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuArchitecture::X86_64 => "X86_64",
            CpuArchitecture::Arm64 => "ARM64",
        }
    }
}

/// Observed state, written only by the operator.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyJobStatus {
    /// Pending, Provisioning, Running, Succeeded, Failed, Blocked, Suspended or Deleting.
    #[serde(default)]
    pub phase: Phase,
    /// The spec generation this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The current or last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunStatus>,
    /// Counters of the current or last run.
    #[serde(default)]
    pub progress: Progress,
    /// Counters of all earlier runs added up (metrics export totals + progress).
    #[serde(default)]
    pub totals: Progress,
    /// When the last run started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<String>,
    /// When the schedule starts the next run (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_time: Option<String>,
    /// When a run last finished successfully (RFC 3339), as CronJob's `lastSuccessfulTime`:
    /// what an alert on a stale Sync job reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
    /// Every source bucket policy statement ferry has written for this job and not yet
    /// removed: where a job's source moves, the old grant is removed; the finalizer removes
    /// them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_policy: Vec<SourceGrant>,
}

/// A statement ferry put into a source bucket's policy, and how to reach that bucket again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceGrant {
    pub account: String,
    pub region: String,
    pub bucket: String,
    /// The role ferry used to write the policy (it removes the statement with it).
    pub role_arn: String,
    /// The statement's `Sid` (the listing statement is this plus `List`).
    pub sid: String,
}

/// Lifecycle phase of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Provisioning,
    Running,
    Succeeded,
    Failed,
    /// The job is outside the operator's policy or invalid: nothing is done for it until its
    /// spec (or the operator's policy) changes. Terminal.
    Blocked,
    Suspended,
    Deleting,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Provisioning,
        Phase::Running,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Blocked,
        Phase::Suspended,
        Phase::Deleting,
    ];

    /// The phase's name as shown by `ferry get`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Blocked => "Blocked",
            Phase::Suspended => "Suspended",
            Phase::Deleting => "Deleting",
        }
    }
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// e.g. `RolesReady`, `SourcePolicyReady`, `DestinationReady`, `TasksReady`, `Complete`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
}

/// Identity of the current or last run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    pub id: String,
    /// The spec generation the run copies.
    pub generation: u64,
    pub started_at: String,
    /// Task failures counted against `backoffLimit`.
    #[serde(default)]
    pub failures: u32,
    /// Tasks replaced after a platform stop (not counted).
    #[serde(default)]
    pub platform_restarts: u32,
    /// Tasks replaced after someone stopped them (not counted).
    #[serde(default)]
    pub interruptions: u32,
    /// RunTask calls that started nothing (ECS answered `failures`: no ENI, no capacity); not
    /// counted against backoffLimit, retried with backoff under a new token.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub placement_failures: u32,
    /// A digest of what the run copies (source, destination, copy options): a spec change
    /// that leaves it alone (run or ECS settings) does not restart the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<String>,
    /// The task definition revision (ARN) the run's first task started with: every later task
    /// of the run starts with the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    /// The job's rerun counter (`ferry rerun`) when the run started: a finished run whose job
    /// counts more reruns is followed by a new run.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub rerun: u64,
    /// When the run finished, successfully or not (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The worker task of each of the run's `parallelism` slots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskStatus>,
}

/// One worker slot of a run: its current attempt and the ECS task running it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// 0 .. parallelism.
    pub slot: u32,
    /// 1 for the first task of the slot, +1 for each replacement.
    pub attempt: u32,
    /// The ECS task ARN, once RunTask answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Do not start this attempt before (RFC 3339): the restart backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// Why the previous attempt stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stop: Option<String>,
    /// When RunTask answered with this attempt's task (RFC 3339): DescribeTasks may not know a
    /// new task for a while (ECS is eventually consistent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RunTask calls for this attempt that ECS could not place; each next call uses a new
    /// token.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub placement_failures: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Counters summed over the worker tasks of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    #[serde(default)]
    pub objects_listed: u64,
    #[serde(default)]
    pub bytes_listed: u64,
    #[serde(default)]
    pub objects_copied: u64,
    #[serde(default)]
    pub bytes_copied: u64,
    #[serde(default)]
    pub objects_skipped: u64,
    #[serde(default)]
    pub bytes_skipped: u64,
    #[serde(default)]
    pub objects_failed: u64,
    #[serde(default)]
    pub objects_deleted: u64,
}

impl Progress {
    /// The two counters added up.
    pub fn plus(&self, b: &Progress) -> Progress {
        Progress {
            objects_listed: self.objects_listed + b.objects_listed,
            bytes_listed: self.bytes_listed + b.bytes_listed,
            objects_copied: self.objects_copied + b.objects_copied,
            bytes_copied: self.bytes_copied + b.bytes_copied,
            objects_skipped: self.objects_skipped + b.objects_skipped,
            bytes_skipped: self.bytes_skipped + b.bytes_skipped,
            objects_failed: self.objects_failed + b.objects_failed,
            objects_deleted: self.objects_deleted + b.objects_deleted,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn yes() -> bool {
    true
}
fn default_multipart_threshold_mib() -> u64 {
    5120
}
fn default_parallelism() -> u32 {
    1
}
fn default_cpu() -> u32 {
    1024
}
fn default_memory_mib() -> u32 {
    2048
}
fn default_backoff_limit() -> u32 {
    6
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn default_history_limit() -> u32 {
    3
}
