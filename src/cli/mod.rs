//! The command line: a kubectl-like front end over the job store (`validate`, `apply`, `diff`,
//! `get`, `describe`, `delete`, `wait`, `suspend`, `resume`, `rerun`), plus `init`, `schema`,
//! `completion`, `man` and `version`. Parses, prints, and calls `model` and `store`; holds no
//! business rules of its own beyond presentation.

pub mod apply;
pub mod help;
pub mod lifecycle;
pub mod select;
pub mod wait;
pub mod watch;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::aws::AwsOptions;
use crate::model::{self, CopyJob, Problems};
use crate::store::{InitOutcome, Store, StoreError, StoredJob};

/// ferry: copy S3 data between AWS accounts and regions, declaratively.
///
/// CopyJob records live in a DynamoDB table. Write jobs as YAML and `ferry apply` them; the
/// operator (`ferry operator`) reconciles them on ECS, and its Fargate tasks (`ferry worker`)
/// copy the data. `ferry local-agent` stands in for Fargate on a laptop.
#[derive(Debug, Parser)]
#[command(
    name = "ferry",
    version,
    long_version = LONG_VERSION,
    propagate_version = true,
    after_help = help::FERRY
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// `ferry --version` and `ferry version`: the version, the git commit and the compiler.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERRY_GIT_COMMIT"),
    ", ",
    env!("FERRY_RUSTC_VERSION"),
    ")"
);

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalOptions {
    /// DynamoDB table that holds the jobs.
    #[arg(long, env = "FERRY_TABLE", default_value = crate::store::DEFAULT_TABLE, global = true)]
    pub table: String,
    #[command(flatten)]
    pub aws: AwsOptions,
    /// Log format on stderr.
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create ferry's DynamoDB table (streams on) if it does not exist. Idempotent.
    #[command(after_help = help::INIT)]
    Init,
    /// Check job files without touching AWS. Exit 0 if all are valid, 1 otherwise.
    #[command(after_help = help::VALIDATE)]
    Validate(FilesArg),
    /// Create or update the jobs in the files.
    ///
    /// Prints `copyjob/NAME created|configured|unchanged|pruned`. An unchanged spec writes
    /// nothing; a changed spec increments the job's generation. Every file is validated before
    /// anything is written: one bad document means nothing is applied. A job another apply set
    /// recorded is refused unless --force-conflicts.
    #[command(after_help = help::APPLY)]
    Apply(ApplyArgs),
    /// Show a unified diff between the files and the stored jobs.
    ///
    /// Exit 0: no difference; 1: differences; 2: error (kubectl's convention).
    #[command(after_help = help::DIFF)]
    Diff(FilesArg),
    /// List jobs, or show one.
    #[command(after_help = help::GET)]
    Get(GetArgs),
    /// Show one job in detail: spec, status, conditions.
    #[command(after_help = help::DESCRIBE)]
    Describe {
        /// Job name.
        name: String,
    },
    /// Request deletion of jobs: marks them; the operator stops their tasks, removes what it
    /// created (its source bucket policy statement, the task role, task definitions; never
    /// destination data) and then removes the records.
    #[command(after_help = help::DELETE)]
    Delete(DeleteArgs),
    /// Wait until jobs meet a condition or phase, or are deleted (kubectl wait).
    ///
    /// A status written for an earlier generation, or before the last `ferry rerun`, does not
    /// count.
    #[command(after_help = help::WAIT)]
    Wait(WaitArgs),
    /// Suspend jobs: the operator stops their tasks and schedules (sets spec.run.suspend).
    #[command(after_help = help::SUSPEND)]
    Suspend(NamesArg),
    /// Resume suspended jobs (clears spec.run.suspend).
    #[command(after_help = help::RESUME)]
    Resume(NamesArg),
    /// Start a new run of jobs without changing their spec: the operator starts it once the
    /// current run, if any, has finished (Once jobs copy again; Sync jobs run before the next
    /// tick).
    #[command(after_help = help::RERUN)]
    Rerun(NamesArg),
    /// Print the CopyJob JSON Schema (the content of schemas/copyjob.schema.json).
    #[command(after_help = help::SCHEMA)]
    Schema,
    /// Print a shell completion script.
    #[command(after_help = help::COMPLETION)]
    Completion { shell: clap_complete::Shell },
    /// Print the version, the git commit and the rustc version ferry was built from.
    #[command(after_help = help::VERSION)]
    Version,
    /// Write man pages (ferry.1 and one per verb) into a directory.
    #[command(after_help = help::MAN)]
    Man {
        /// Directory to write the pages to (created if missing).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Print, as JSON, the IAM policies of the jobs in the files: what the operator writes
    /// (each job's task role trust and permission policies, ferry's statements in the source
    /// bucket policy) and what the job needs from the roles you create (`sourceRolePolicy`,
    /// `destinationRolePolicy`). For setup and security review; touches no AWS.
    #[command(after_help = help::POLICIES)]
    Policies(PoliciesArgs),
    /// Copy objects for one run of a job: the entrypoint of the Fargate tasks the operator
    /// starts.
    ///
    /// Configured by environment variables (set by the operator as RunTask overrides):
    /// FERRY_JOB and FERRY_RUN (required), FERRY_TASK (default: random), FERRY_TABLE,
    /// FERRY_LEASE_SECONDS (60), FERRY_SESSION_SECONDS (3600), FERRY_COPY_CONCURRENCY (64),
    /// FERRY_SHUTDOWN_GRACE_SECONDS (25), FERRY_S3_FORCE_PATH_STYLE (for emulators),
    /// FERRY_ASSUME_DESTINATION_ROLE (true; false copies with the task's own credentials).
    ///
    /// Exit codes: 0 run complete, or stopped cleanly on SIGTERM with work checkpointed;
    /// 1 unexpected error; 2 bad configuration or bad input (an S3 Inventory report that does
    /// not fit the job); 3 job or run not found; 4 AWS refused a call that cannot succeed on
    /// retry (e.g. AccessDenied); 5 the watchdog found the task hung.
    #[command(after_help = help::WORKER)]
    Worker,
    /// Reconcile every CopyJob on ECS: task roles, source bucket policy statements, destination
    /// buckets, task definitions and worker tasks; restart failed tasks with backoff, correct
    /// drift, finalize deleted jobs, write status and serve Prometheus metrics.
    ///
    /// Several replicas may run: one holds a lease item in the table and reconciles, the others
    /// wait to take over. Stops cleanly (releasing the lease) on SIGTERM.
    #[command(after_help = help::OPERATOR)]
    Operator(OperatorArgs),
    /// Stand in for Fargate: run `ferry worker` for each RUNNING task ferry started on an
    /// (emulated) ECS cluster, with the task's environment overrides, and StopTask with the exit
    /// status when it ends. For the local quick start and tests.
    #[command(after_help = help::LOCAL_AGENT)]
    LocalAgent(AgentArgs),
}

#[derive(Debug, Args)]
pub struct PoliciesArgs {
    #[command(flatten)]
    pub files: FilesArg,
    /// The operator's AWS account (where task roles and the table live).
    #[arg(long, default_value = "123456789012")]
    pub operator_account: String,
    /// The operator's installation id (`ferry operator --installation-id`), for the Sids of the
    /// bucket policy statements [default: derived from the operator account and the table].
    #[arg(long, value_parser = parse_installation)]
    pub installation_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: std::net::SocketAddr,
    /// ECS cluster for jobs that name none.
    #[arg(long, env = "FERRY_CLUSTER", default_value = "ferry")]
    pub cluster: String,
    /// Subnets for jobs that name none (comma-separated).
    #[arg(long, env = "FERRY_SUBNETS", value_delimiter = ',')]
    pub subnets: Vec<String>,
    /// Security groups for jobs that name none (comma-separated).
    #[arg(long, env = "FERRY_SECURITY_GROUPS", value_delimiter = ',')]
    pub security_groups: Vec<String>,
    /// Give tasks a public IP unless the job says otherwise.
    #[arg(long, env = "FERRY_ASSIGN_PUBLIC_IP")]
    pub assign_public_ip: bool,
    /// Worker image for jobs that name none.
    #[arg(long, env = "FERRY_IMAGE", default_value = "ferry:latest")]
    pub image: String,
    /// Task execution role (pulls the image, writes logs).
    #[arg(long, env = "FERRY_EXECUTION_ROLE_ARN", default_value = "")]
    pub execution_role_arn: String,
    /// CloudWatch log group of the workers.
    #[arg(long, env = "FERRY_LOG_GROUP", default_value = "/ferry/workers")]
    pub log_group: String,
    /// Extra environment for every worker task, KEY=VALUE (repeatable).
    #[arg(long = "worker-env", value_parser = parse_key_value)]
    pub worker_env: Vec<(String, String)>,
    /// S3 path-style addressing for the operator's S3 clients (emulators).
    #[arg(long, env = "FERRY_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: bool,
    /// Seconds between full resyncs of every job.
    #[arg(long, env = "FERRY_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// Seconds between drift checks of a job's slow-changing resources (role, bucket policy,
    /// bucket, task definition). Tasks are checked on every resync.
    #[arg(long, env = "FERRY_DRIFT_SECONDS", default_value_t = 1800)]
    pub drift_seconds: u64,
    /// Seconds between checks of an active run's tasks (besides stream events).
    #[arg(long, env = "FERRY_TASK_POLL_SECONDS", default_value_t = 30)]
    pub task_poll_seconds: u64,
    /// Leader lease length in seconds (renewed every third of it).
    #[arg(long, env = "FERRY_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// First restart backoff of a failed task in seconds (doubles, capped at 36 times this).
    #[arg(long, env = "FERRY_RESTART_BACKOFF_SECONDS", default_value_t = 10)]
    pub restart_backoff_seconds: u64,
    /// How long a task that ECS does not know (yet) may be missing after RunTask answered
    /// before it counts as lost, is stopped and replaced: the ECS API is eventually consistent,
    /// and AWS advises retrying DescribeTasks for up to five minutes
    #[arg(long, env = "FERRY_MISSING_GRACE_SECONDS", default_value_t = 120)]
    pub missing_grace_seconds: u64,
    /// Stop (and count as failed) a running task whose worker has not written its heartbeat for
    /// this many seconds; workers write one every few seconds. 0: never
    #[arg(long, env = "FERRY_HEARTBEAT_TIMEOUT_SECONDS", default_value_t = 300)]
    pub heartbeat_timeout_seconds: u64,
    /// Reconciles at once.
    #[arg(long, env = "FERRY_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// CPU architecture of worker tasks whose job names none (spec.ecs.cpuArchitecture);
    /// ARM64 (Graviton) is about 20% cheaper on Fargate, and the image must be built for it.
    #[arg(long, env = "FERRY_CPU_ARCHITECTURE", value_parser = parse_architecture, default_value = "X86_64")]
    pub cpu_architecture: crate::model::CpuArchitecture,
    /// This replica's name in the leader lease [default: host name + random suffix].
    #[arg(long, env = "FERRY_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// This installation's id: its `ferry:owner` tag and part of its bucket policy Sids (letters
    /// and digits) [default: 12 hex digits of a digest of the operator's account and table; the
    /// CloudFormation template passes its stack id].
    #[arg(long, env = "FERRY_INSTALLATION_ID", value_parser = parse_installation)]
    pub installation_id: Option<String>,
    /// The permissions boundary of every task role ferry creates [default:
    /// arn:aws:iam::<operator account>:policy/ferry-task-boundary, made by the CloudFormation
    /// template].
    #[arg(long, env = "FERRY_TASK_BOUNDARY_ARN")]
    pub task_boundary_arn: Option<String>,
    /// Source buckets jobs may read, ACCOUNT:BUCKET (`*` matches any characters, e.g.
    /// `111111111111:logs-*`; comma-separated in the environment), and the buckets of the S3
    /// Inventory reports they read their object lists from. The operator refuses
    /// (phase Blocked) every job outside its --allow-* lists.
    #[arg(long = "allow-source", env = "FERRY_ALLOW_SOURCES", value_delimiter = ',', value_parser = parse_source)]
    pub allow_sources: Vec<(String, String)>,
    /// Destination accounts jobs may write to.
    #[arg(
        long = "allow-destination-account",
        env = "FERRY_ALLOW_DESTINATION_ACCOUNTS",
        value_delimiter = ','
    )]
    pub allow_destination_accounts: Vec<String>,
    /// Source and destination role ARNs jobs may name (`*` matches any characters).
    #[arg(long = "allow-role", env = "FERRY_ALLOW_ROLES", value_delimiter = ',')]
    pub allow_roles: Vec<String>,
    /// Image repositories (without tag or digest) a job's spec.ecs.image may name; the image
    /// must be pinned `@sha256:` unless --allow-image-tags. The operator's --image is always
    /// allowed.
    #[arg(
        long = "allow-image",
        env = "FERRY_ALLOW_IMAGES",
        value_delimiter = ','
    )]
    pub allow_images: Vec<String>,
    /// Let jobs name allowed images by tag instead of digest.
    #[arg(long, env = "FERRY_ALLOW_IMAGE_TAGS")]
    pub allow_image_tags: bool,
    /// Subnets jobs may name besides --subnets.
    #[arg(
        long = "allow-subnet",
        env = "FERRY_ALLOW_SUBNETS",
        value_delimiter = ','
    )]
    pub allow_subnets: Vec<String>,
    /// Security groups jobs may name besides --security-groups.
    #[arg(
        long = "allow-security-group",
        env = "FERRY_ALLOW_SECURITY_GROUPS",
        value_delimiter = ','
    )]
    pub allow_security_groups: Vec<String>,
    /// Let jobs give their tasks a public IP.
    #[arg(long, env = "FERRY_ALLOW_PUBLIC_IP")]
    pub allow_public_ip: bool,
    /// Admit every valid job, whatever its accounts, buckets, roles, image and network: for the
    /// emulator and the quick start only, never with real accounts.
    #[arg(long, env = "FERRY_ALLOW_ANY")]
    pub allow_any: bool,
}

fn parse_architecture(s: &str) -> Result<crate::model::CpuArchitecture, String> {
    match s {
        "X86_64" => Ok(crate::model::CpuArchitecture::X86_64),
        "ARM64" => Ok(crate::model::CpuArchitecture::Arm64),
        _ => Err(format!("`{s}`: allowed: X86_64, ARM64")),
    }
}

fn parse_installation(s: &str) -> Result<String, String> {
    if (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}`: allowed: 1 to 32 letters and digits"))
    }
}

fn parse_source(s: &str) -> Result<(String, String), String> {
    s.split_once(':')
        .filter(|(a, b)| a.len() == 12 && a.bytes().all(|c| c.is_ascii_digit()) && !b.is_empty())
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| {
            format!(
                "`{s}`: expected ACCOUNT:BUCKET, a 12-digit account id and a bucket name or pattern"
            )
        })
}

/// A list from flags or a comma-separated variable, without empty entries (an empty variable
/// lists nothing).
fn nonempty(items: &[String]) -> Vec<String> {
    items.iter().filter(|s| !s.is_empty()).cloned().collect()
}

impl OperatorArgs {
    /// The operator's policy from its --allow-* flags.
    pub fn policy(&self) -> Result<crate::controller::admission::OperatorPolicy, String> {
        use crate::controller::admission::{OperatorPolicy, Pattern};
        Ok(OperatorPolicy {
            allow_any: self.allow_any,
            sources: self
                .allow_sources
                .iter()
                .map(|(a, b)| Ok((a.clone(), Pattern::new(b)?)))
                .collect::<Result<_, String>>()?,
            destination_accounts: nonempty(&self.allow_destination_accounts),
            roles: nonempty(&self.allow_roles)
                .iter()
                .map(|r| Pattern::new(r))
                .collect::<Result<_, String>>()?,
            images: nonempty(&self.allow_images),
            image_tags: self.allow_image_tags,
            subnets: nonempty(&self.allow_subnets),
            security_groups: nonempty(&self.allow_security_groups),
            public_ip: self.allow_public_ip,
        })
    }
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The ECS cluster to watch.
    #[arg(long, env = "FERRY_CLUSTER", default_value = "ferry")]
    pub cluster: String,
    /// Create the cluster if it does not exist.
    #[arg(long)]
    pub create_cluster: bool,
    /// Milliseconds between looks at the cluster.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// Run this shell command for each task instead of `ferry worker` (simulates a broken
    /// image in tests).
    #[arg(long)]
    pub worker_command: Option<String>,
    /// Seconds between SIGTERM and SIGKILL for the worker of a stopped task (the task
    /// definition's stopTimeout)
    #[arg(long, default_value_t = 30)]
    pub stop_timeout_seconds: u64,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}`: expected KEY=VALUE"))
}

#[derive(Debug, Args)]
pub struct FilesArg {
    /// Job files or directories (searched recursively for .yaml, .yml and .json); `-` reads
    /// standard input.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
}

/// Job names.
#[derive(Debug, Args)]
pub struct NamesArg {
    /// Job names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

fn parse_selector(s: &str) -> Result<select::Selector, String> {
    select::Selector::parse(s)
}

/// `--dry-run`'s strategies, as kubectl's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Read the stored jobs and decide; write nothing.
    Client,
    /// As `client`, and have DynamoDB check every write's condition (a ConditionCheck in a
    /// transaction of its own) without writing.
    Server,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Job names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// condition=TYPE[=True|False|Unknown] (e.g. condition=Complete), phase=PHASE (e.g.
    /// phase=Succeeded) or delete.
    #[arg(long = "for", value_parser = wait::For::parse)]
    pub condition: wait::For,
    /// How long to wait: 90s, 30m, 1h30m.
    #[arg(long, default_value = "30s", value_parser = wait::parse_timeout)]
    pub timeout: std::time::Duration,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: FilesArg,
    /// Also mark for deletion the jobs that earlier applies of the same apply set created and
    /// that the files no longer contain. Jobs of other apply sets are never touched.
    #[arg(long)]
    pub prune: bool,
    /// Name of the apply set recorded on every job this apply writes; `--prune` only considers
    /// jobs of this set. Use one per git repository.
    #[arg(long, env = "FERRY_APPLYSET", default_value = "default")]
    pub applyset: String,
    /// Print what would happen; write nothing. Plain `--dry-run` means `client`.
    #[arg(long, value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "client")]
    pub dry_run: Option<DryRun>,
    /// Take over jobs another apply set recorded (the job is then recorded under this one).
    #[arg(long)]
    pub force_conflicts: bool,
    /// Apply (and with --prune, prune) only the jobs whose labels match: key=value,key!=value,
    /// key, !key.
    #[arg(short = 'l', long = "selector", value_parser = parse_selector)]
    pub selector: Option<select::Selector>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Job name; all jobs if omitted.
    pub name: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, conflicts_with = "watch")]
    pub output: Option<Output>,
    /// Only jobs whose labels match: key=value,key!=value,key,!key.
    #[arg(short = 'l', long = "selector", value_parser = parse_selector, conflicts_with = "name")]
    pub selector: Option<select::Selector>,
    /// Print tables without their header line.
    #[arg(long)]
    pub no_headers: bool,
    /// Watch: a live display of objects, bytes, rate, ETA and phase per job, refreshed until
    /// Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2, requires = "watch")]
    pub interval: u64,
    /// Stop after this many refreshes (for scripts).
    #[arg(long, requires = "watch")]
    pub frames: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Wide,
    Yaml,
    Json,
    /// `copyjob/NAME` per line.
    Name,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Job names.
    #[arg(conflicts_with_all = ["files", "selector"], required_unless_present_any = ["files", "selector"])]
    pub names: Vec<String>,
    /// Delete the jobs defined in these files or directories (`-`: standard input).
    #[arg(short = 'f', long = "filename", num_args = 1.., conflicts_with = "selector")]
    pub files: Vec<PathBuf>,
    /// Delete the jobs whose labels match: key=value,key!=value,key,!key.
    #[arg(short = 'l', long = "selector", value_parser = parse_selector)]
    pub selector: Option<select::Selector>,
    /// Wait until the operator has finalized the jobs and removed their records.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits: 90s, 30m, 1h30m.
    #[arg(long, default_value = "10m", value_parser = wait::parse_timeout, requires = "wait")]
    pub timeout: std::time::Duration,
    /// A job that does not exist is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// Errors of the CLI layer.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Invalid(#[from] Problems),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error("{0}")]
    Failed(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot render {what}: {message}")]
    Render { what: String, message: String },
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
}

impl CliError {
    /// The process exit code for this error when running `command`.
    pub fn exit_code(&self, command: &Command) -> i32 {
        match (command, self) {
            (Command::Diff(_), _) => 2,
            (_, CliError::Worker(e)) => e.exit_code(),
            _ => 1,
        }
    }
}

/// What a command asks `main` to exit with.
pub type ExitCode = i32;

/// Runs a command that needs no AWS access; `None` if the command needs the store.
pub fn run_offline(
    cmd: &Command,
    global: &GlobalOptions,
    out: &mut impl Write,
) -> Option<Result<ExitCode, CliError>> {
    match cmd {
        Command::Validate(f) => Some(validate(&f.files, out)),
        Command::Schema => Some(
            out.write_all(model::schema_json().as_bytes())
                .map(|_| 0)
                .map_err(CliError::from),
        ),
        Command::Policies(a) => Some(policies(a, global, out)),
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "ferry", out);
            Some(Ok(0))
        }
        Command::Version => Some(
            writeln!(out, "ferry {LONG_VERSION}")
                .map(|_| 0)
                .map_err(CliError::from),
        ),
        Command::Man { dir } => Some(man_pages(dir, out)),
        _ => None,
    }
}

/// Writes `ferry.1` and `ferry-<verb>.1` for every verb into `dir`.
fn man_pages(dir: &std::path::Path, out: &mut impl Write) -> Result<ExitCode, CliError> {
    let cmd = <Cli as clap::CommandFactory>::command();
    std::fs::create_dir_all(dir)?;
    let mut write_page = |name: String, page: clap::Command| -> Result<(), CliError> {
        let path = dir.join(format!("{name}.1"));
        let mut file = std::fs::File::create(&path)?;
        clap_mangen::Man::new(page).render(&mut file)?;
        writeln!(out, "{}", path.display())?;
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
        let name = format!("ferry-{}", sub.get_name());
        write_page(name.clone(), sub.clone().name(name))?;
    }
    write_page("ferry".into(), cmd)?;
    Ok(0)
}

fn validate(files: &[PathBuf], out: &mut impl Write) -> Result<ExitCode, CliError> {
    let docs = model::load(files)?;
    for d in &docs {
        writeln!(
            out,
            "copyjob/{} valid ({} document {})",
            d.job.metadata.name,
            d.file.display(),
            d.index
        )?;
    }
    Ok(0)
}

/// Runs a command that talks to AWS.
pub async fn run(
    cmd: &Command,
    config: &aws_config::SdkConfig,
    table: &str,
    out: &mut impl Write,
) -> Result<ExitCode, CliError> {
    let store = &Store::from_config(config, table);
    match cmd {
        Command::Worker => {
            let cfg = crate::worker::WorkerConfig::from_env()?;
            crate::worker::run(cfg, config, table).await?;
            Ok(0)
        }
        Command::Operator(a) => operator(a, config, table).await,
        Command::LocalAgent(a) => {
            let cfg = crate::agent::AgentConfig {
                cluster: a.cluster.clone(),
                poll: std::time::Duration::from_millis(a.poll_ms.max(50)),
                worker_command: a.worker_command.clone(),
                create_cluster: a.create_cluster,
                stop_timeout: std::time::Duration::from_secs(a.stop_timeout_seconds),
            };
            crate::agent::run(aws_sdk_ecs::Client::new(config), cfg)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            Ok(0)
        }
        Command::Init => {
            let outcome = store.init().await?;
            let what = match outcome {
                InitOutcome::Created => "created",
                InitOutcome::AlreadyExisted => "unchanged",
                InitOutcome::StreamEnabled => "configured (stream enabled)",
            };
            writeln!(out, "table/{} {what}", store.table())?;
            Ok(0)
        }
        Command::Apply(a) => apply_files(a, store, out).await,
        Command::Diff(f) => diff(&f.files, store, out).await,
        Command::Get(g) => get(g, store, out).await,
        Command::Describe { name } => describe(name, store, out).await,
        Command::Delete(d) => delete(d, store, out).await,
        Command::Wait(w) => wait::wait(&w.names, &w.condition, w.timeout, store, out).await,
        Command::Suspend(n) => lifecycle::run(lifecycle::Verb::Suspend, &n.names, store, out).await,
        Command::Resume(n) => lifecycle::run(lifecycle::Verb::Resume, &n.names, store, out).await,
        Command::Rerun(n) => lifecycle::run(lifecycle::Verb::Rerun, &n.names, store, out).await,
        Command::Validate(_)
        | Command::Schema
        | Command::Policies(_)
        | Command::Completion { .. }
        | Command::Version
        | Command::Man { .. } => Err(CliError::Failed("this command runs offline".into())),
    }
}

fn policies(
    a: &PoliciesArgs,
    global: &GlobalOptions,
    out: &mut impl Write,
) -> Result<ExitCode, CliError> {
    use crate::controller::{desired, policy};
    use crate::permissions;
    let docs = model::load(&a.files.files)?;
    let settings = desired::Settings {
        account: a.operator_account.clone(),
        region: tokio::runtime::Builder::new_current_thread()
            .build()?
            .block_on(crate::aws::resolve_region(&global.aws))
            .ok_or_else(|| CliError::Failed(crate::aws::NO_REGION.into()))?
            .to_string(),
        table: global.table.clone(),
        installation: a
            .installation_id
            .clone()
            .unwrap_or_else(|| desired::installation_id(&a.operator_account, &global.table)),
        task_boundary_arn: desired::task_boundary_arn(&a.operator_account),
        ..desired::Settings::default()
    };
    let all: Vec<serde_json::Value> = docs
        .iter()
        .map(|d| {
            let job = &d.job;
            let bucket = policy::merge(None, job, &settings.installation)
                .ok()
                .flatten()
                .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
                .unwrap_or_default();
            serde_json::json!({
                "job": job.metadata.name,
                "taskRoleName": desired::role_name(&job.metadata.name),
                "taskRoleTrustPolicy": desired::trust_policy(&settings),
                "taskRolePolicy": desired::task_policy(job, &settings),
                "sourceBucketPolicy": bucket,
                "sourceRolePolicy": permissions::source_role_policy(job),
                "destinationRolePolicy": permissions::destination_role_policy(job),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&all).map_err(|e| CliError::Render {
        what: "policies".into(),
        message: e.to_string(),
    })?;
    writeln!(out, "{text}")?;
    Ok(0)
}

async fn operator(
    a: &OperatorArgs,
    config: &aws_config::SdkConfig,
    table: &str,
) -> Result<ExitCode, CliError> {
    use crate::controller::{Context, Timing, desired::Settings};
    use std::time::Duration;
    let identity = aws_sdk_sts::Client::new(config)
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| {
            CliError::Failed(format!(
                "cannot find the operator's own account (sts:GetCallerIdentity): {}",
                crate::aws::describe(&e)
            ))
        })?;
    let account = identity.account().unwrap_or_default().to_string();
    let region = config
        .region()
        .map(|r| r.as_ref().to_string())
        .ok_or_else(|| CliError::Failed(crate::aws::NO_REGION.into()))?;
    let settings = Settings {
        region,
        table: table.to_string(),
        cluster: a.cluster.clone(),
        subnets: a.subnets.clone(),
        security_groups: a.security_groups.clone(),
        assign_public_ip: a.assign_public_ip,
        image: a.image.clone(),
        execution_role_arn: a.execution_role_arn.clone(),
        log_group: a.log_group.clone(),
        worker_env: a.worker_env.clone(),
        restart_backoff: Duration::from_secs(a.restart_backoff_seconds.max(1)),
        missing_grace: Duration::from_secs(a.missing_grace_seconds),
        heartbeat_timeout: Duration::from_secs(a.heartbeat_timeout_seconds),
        cpu_architecture: a.cpu_architecture,
        installation: a
            .installation_id
            .clone()
            .unwrap_or_else(|| crate::controller::desired::installation_id(&account, table)),
        task_boundary_arn: a
            .task_boundary_arn
            .clone()
            .unwrap_or_else(|| crate::controller::desired::task_boundary_arn(&account)),
        account,
    };
    let secs = |n: u64| Duration::from_secs(n.max(1));
    let timing = Timing {
        resync: secs(a.resync_seconds),
        drift: secs(a.drift_seconds),
        task_poll: secs(a.task_poll_seconds),
        lease: secs(a.lease_seconds.max(3)),
        concurrency: a.concurrency.max(1),
        stream_poll: Duration::from_millis(500),
    };
    let policy = a
        .policy()
        .map_err(|e| CliError::Failed(format!("--allow-*: {e}")))?;
    if policy.allow_any {
        tracing::warn!(
            "--allow-any: every valid job is admitted, whatever its accounts, buckets, roles and image (local/emulator mode; never use it with real accounts)"
        );
    } else {
        tracing::info!(
            sources = policy.sources.len(),
            destination_accounts = policy.destination_accounts.len(),
            roles = policy.roles.len(),
            images = policy.images.len(),
            "operator policy: jobs outside the --allow-* lists are Blocked"
        );
    }
    let ctx = Context::new(
        config,
        table,
        settings,
        policy,
        timing,
        a.s3_force_path_style,
    )
    .map_err(|e| CliError::Failed(format!("cannot register the metrics: {e}")))?;
    let ctx = std::sync::Arc::new(ctx);
    let holder = a.replica_id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ferry".into());
        format!("{host}-{:08x}", rand::random::<u32>())
    });
    crate::controller::run_operator(ctx, a.listen, holder).await?;
    Ok(0)
}

async fn apply_files(
    a: &ApplyArgs,
    store: &Store,
    out: &mut impl Write,
) -> Result<ExitCode, CliError> {
    let mut docs = model::load(&a.files.files)?;
    if let Some(sel) = &a.selector {
        docs.retain(|d| sel.matches(&d.job.metadata.labels));
    }
    let mode = apply::Mode {
        dry_run: a.dry_run.is_some(),
        server_check: a.dry_run == Some(DryRun::Server),
        force_conflicts: a.force_conflicts,
    };
    let suffix = match a.dry_run {
        None => "",
        Some(DryRun::Client) => " (dry run)",
        Some(DryRun::Server) => " (server dry run)",
    };
    let mut failures = Vec::new();
    for d in &docs {
        match apply::apply_one(store, &d.job, &a.applyset, mode).await {
            Ok(outcome) => writeln!(
                out,
                "copyjob/{} {}{suffix}",
                d.job.metadata.name,
                outcome.as_str()
            )?,
            // No table (or no access to it): every job would fail the same way; say it once.
            Err(apply::ApplyError::Store(e @ StoreError::Aws { .. })) => return Err(e.into()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if a.prune {
        let keep: BTreeSet<&str> = docs.iter().map(|d| d.job.metadata.name.as_str()).collect();
        for job in store.list_jobs().await? {
            let ours = job.applyset.as_deref() == Some(a.applyset.as_str());
            let selected = a
                .selector
                .as_ref()
                .is_none_or(|sel| sel.matches(&job.job.metadata.labels));
            if !ours
                || !selected
                || keep.contains(job.name())
                || job.deletion_requested_at.is_some()
            {
                continue;
            }
            if a.dry_run.is_none() {
                if let Err(e) = store.request_deletion(job.name(), job.version).await {
                    failures.push(format!("copyjob/{}: {e}", job.name()));
                    continue;
                }
            }
            writeln!(out, "copyjob/{} pruned{suffix}", job.name())?;
        }
    }
    finish(failures)
}

pub(crate) fn finish(failures: Vec<String>) -> Result<ExitCode, CliError> {
    if failures.is_empty() {
        Ok(0)
    } else {
        Err(CliError::Failed(failures.join("\n")))
    }
}

fn to_yaml(job: &CopyJob) -> Result<String, CliError> {
    serde_saphyr::to_string(job).map_err(|e| CliError::Render {
        what: format!("copyjob/{}", job.metadata.name),
        message: e.to_string(),
    })
}

async fn diff(
    files: &[PathBuf],
    store: &Store,
    out: &mut impl Write,
) -> Result<ExitCode, CliError> {
    let docs = model::load(files)?;
    let mut differs = false;
    for d in &docs {
        let name = &d.job.metadata.name;
        let stored = store.get_job(name).await?;
        let old = match &stored {
            Some(s) => to_yaml(&s.job.desired())?,
            None => String::new(),
        };
        let new = to_yaml(&d.job.desired())?;
        if old != new {
            differs = true;
            let old_header = if stored.is_some() {
                format!("copyjob/{name} (stored)")
            } else {
                "/dev/null".into()
            };
            let new_header = format!("copyjob/{name} ({})", d.file.display());
            let text = similar::TextDiff::from_lines(&old, &new);
            write!(
                out,
                "{}",
                text.unified_diff()
                    .context_radius(3)
                    .header(&old_header, &new_header)
            )?;
        }
    }
    Ok(if differs { 1 } else { 0 })
}

async fn get(g: &GetArgs, store: &Store, out: &mut impl Write) -> Result<ExitCode, CliError> {
    if g.watch {
        let interval = std::time::Duration::from_secs(g.interval.max(1));
        return watch::watch(g.name.as_deref(), store, interval, g.frames, out).await;
    }
    let jobs = match &g.name {
        Some(name) => {
            vec![store.require_job(name).await?]
        }
        None => store.list_jobs().await?,
    };
    let jobs: Vec<StoredJob> = match &g.selector {
        Some(sel) => jobs
            .into_iter()
            .filter(|j| sel.matches(&j.job.metadata.labels))
            .collect(),
        None => jobs,
    };
    match g.output {
        Some(Output::Name) => {
            for j in &jobs {
                writeln!(out, "copyjob/{}", j.name())?;
            }
        }
        Some(Output::Yaml) => {
            for (i, j) in jobs.iter().enumerate() {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                write!(out, "{}", to_yaml(&j.shown())?)?;
            }
        }
        Some(Output::Json) => {
            let shown: Vec<CopyJob> = jobs.iter().map(StoredJob::shown).collect();
            let text = if g.name.is_some() {
                serde_json::to_string_pretty(&shown[0])
            } else {
                serde_json::to_string_pretty(
                    &serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": shown }),
                )
            };
            let text = text.map_err(|e| CliError::Render {
                what: "jobs".into(),
                message: e.to_string(),
            })?;
            writeln!(out, "{text}")?;
        }
        wide => {
            if jobs.is_empty() {
                // kubectl says so on stderr, so a script reading stdout sees no rows.
                eprintln!("No copy jobs found in table {}.", store.table());
                return Ok(0);
            }
            let wide = wide == Some(Output::Wide);
            let mut rows = if g.no_headers {
                vec![]
            } else {
                vec![table_header(wide)]
            };
            rows.extend(jobs.iter().map(|j| table_row(j, wide)));
            write_table(out, &rows)?;
        }
    }
    Ok(0)
}

fn table_header(wide: bool) -> Vec<String> {
    let mut h = vec!["NAME", "PHASE", "PROGRESS", "AGE"];
    if wide {
        h.extend(["GENERATION", "OBSERVED", "SOURCE", "DESTINATION"]);
    }
    h.into_iter().map(String::from).collect()
}

/// The phase `get` shows: the operator's, or Deleting/Pending before it has written one.
pub fn shown_phase(job: &StoredJob) -> &'static str {
    match (&job.job.status, &job.deletion_requested_at) {
        (_, Some(_)) => "Deleting",
        (Some(s), None) => s.phase.as_str(),
        (None, None) => "Pending",
    }
}

/// "done/listed objects (percent) bytes" for the table.
pub fn progress_text(job: &StoredJob) -> String {
    let p = job
        .job
        .status
        .as_ref()
        .map(|s| s.progress)
        .unwrap_or_default();
    let done = p.objects_copied + p.objects_skipped;
    if p.objects_listed == 0 {
        return "-".into();
    }
    let pct = 100.0 * done as f64 / p.objects_listed as f64;
    format!(
        "{done}/{} ({pct:.0}%) {}",
        p.objects_listed,
        human_bytes(p.bytes_copied + p.bytes_skipped)
    )
}

fn table_row(j: &StoredJob, wide: bool) -> Vec<String> {
    let mut r = vec![
        j.name().to_string(),
        shown_phase(j).to_string(),
        progress_text(j),
        age(&j.created_at),
    ];
    if wide {
        let s = &j.job.spec;
        let observed = j
            .job
            .status
            .as_ref()
            .map(|s| s.observed_generation.to_string())
            .unwrap_or_else(|| "-".into());
        r.extend([
            j.generation.to_string(),
            observed,
            format!(
                "s3://{}/{} ({})",
                s.source.bucket, s.source.prefix, s.source.region
            ),
            format!(
                "s3://{}/{} ({})",
                s.destination.bucket, s.destination.prefix, s.destination.region
            ),
        ]);
    }
    r
}

pub(crate) fn write_table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end())?;
    }
    Ok(())
}

/// Bytes in binary units, e.g. `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn age(since: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(since) else {
        return "-".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

async fn describe(name: &str, store: &Store, out: &mut impl Write) -> Result<ExitCode, CliError> {
    let j = store.require_job(name).await?;
    writeln!(out, "Name:         {}", j.name())?;
    let labels: Vec<String> = j
        .job
        .metadata
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    writeln!(
        out,
        "Labels:       {}",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels.join(",")
        }
    )?;
    writeln!(out, "Generation:   {}", j.generation)?;
    writeln!(out, "Created:      {}", j.created_at)?;
    writeln!(
        out,
        "Apply set:    {}",
        j.applyset.as_deref().unwrap_or("<none>")
    )?;
    if let Some(t) = &j.deletion_requested_at {
        writeln!(out, "Deletion:     requested at {t}")?;
    }
    writeln!(out, "Phase:        {}", shown_phase(&j))?;
    writeln!(out, "Progress:     {}", progress_text(&j))?;
    writeln!(out, "Spec:")?;
    let spec = serde_saphyr::to_string(&j.job.spec).map_err(|e| CliError::Render {
        what: format!("copyjob/{name}"),
        message: e.to_string(),
    })?;
    for line in spec.lines() {
        writeln!(out, "  {line}")?;
    }
    match &j.job.status {
        None => writeln!(out, "Status:       <not yet observed by an operator>")?,
        Some(s) => {
            writeln!(out, "Observed generation: {}", s.observed_generation)?;
            if let Some(run) = &s.run {
                writeln!(
                    out,
                    "Run:          {} (generation {}, started {}, failures {}, platform restarts {})",
                    run.id, run.generation, run.started_at, run.failures, run.platform_restarts
                )?;
            }
            let p = &s.progress;
            writeln!(
                out,
                "Objects:      listed {}, copied {}, skipped {}, failed {}, deleted {}",
                p.objects_listed,
                p.objects_copied,
                p.objects_skipped,
                p.objects_failed,
                p.objects_deleted
            )?;
            writeln!(
                out,
                "Bytes:        listed {}, copied {}",
                human_bytes(p.bytes_listed),
                human_bytes(p.bytes_copied)
            )?;
            if let Some(t) = &s.last_run_time {
                writeln!(out, "Last run:     {t}")?;
            }
            if let Some(t) = &s.next_run_time {
                writeln!(out, "Next run:     {t}")?;
            }
            writeln!(out, "Conditions:")?;
            let mut rows = vec![
                ["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"]
                    .map(String::from)
                    .to_vec(),
            ];
            rows.extend(s.conditions.iter().map(|c| {
                vec![
                    c.kind.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.last_transition_time.clone(),
                    c.message.clone(),
                ]
            }));
            write_table(out, &rows)?;
        }
    }
    Ok(0)
}

async fn delete(d: &DeleteArgs, store: &Store, out: &mut impl Write) -> Result<ExitCode, CliError> {
    let names: Vec<String> = if let Some(sel) = &d.selector {
        store
            .list_jobs()
            .await?
            .into_iter()
            .filter(|j| sel.matches(&j.job.metadata.labels))
            .map(|j| j.name().to_string())
            .collect()
    } else if d.files.is_empty() {
        d.names.clone()
    } else {
        model::load(&d.files)?
            .into_iter()
            .map(|doc| doc.job.metadata.name)
            .collect()
    };
    for name in &names {
        if let Err(e) = model::validate::check_dns_label(name) {
            return Err(CliError::Failed(format!("job name {e}")));
        }
    }
    let mut failures = Vec::new();
    let mut marked = Vec::new();
    for name in &names {
        match request_deletion(store, name).await {
            Ok(true) => writeln!(out, "copyjob/{name} marked for deletion")?,
            Ok(false) => writeln!(out, "copyjob/{name} already marked for deletion")?,
            Err(StoreError::NotFound { .. }) if d.ignore_not_found => continue,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        }
        marked.push(name.clone());
    }
    if d.wait && failures.is_empty() && !marked.is_empty() {
        return wait::wait(&marked, &wait::For::Delete, d.timeout, store, out).await;
    }
    finish(failures)
}

/// Marks one job for deletion, reading again after a lost race. `Ok(false)`: already marked.
async fn request_deletion(store: &Store, name: &str) -> Result<bool, StoreError> {
    let mut attempts = 0;
    loop {
        let job = store.require_job(name).await?;
        if job.deletion_requested_at.is_some() {
            return Ok(false);
        }
        match store.request_deletion(name, job.version).await {
            Err(StoreError::Conflict { .. }) if attempts < 10 => attempts += 1,
            other => return other.map(|_| true),
        }
    }
}
