//! The operator against moto: `ferry operator` and `ferry local-agent` as real processes, jobs
//! applied with `ferry apply`, the cloud inspected with the SDK.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use ferry::controller::{desired, policy};
use ferry::model::{CopyJobStatus, Phase};
use ferry::store::Store;

use crate::support::{Emulator, Proc, free_port, http_get, s3, sample, spawn_ferry, write_file};
use crate::worker::{Obj, create_bucket, listing, seed};

pub const SRC_BUCKET: &str = "op-source";
pub const SRC_REGION: &str = "eu-west-1";
const DST_REGION: &str = "ap-southeast-2";

/// An emulator prepared for the operator: ECS tasks stay RUNNING until stopped, the default
/// VPC's network, ferry's table, clients for both accounts.
pub struct Rig {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    pub subnet: String,
    pub group: String,
    pub base: SdkConfig,
    pub store: Store,
    pub src: aws_sdk_s3::Client,
    pub dst: aws_sdk_s3::Client,
    pub logs: Vec<PathBuf>,
    /// Added to the environment of the operators and agents this rig starts.
    pub extra_env: Vec<(String, String)>,
    /// The operators' policy flags: by default the production mode (allow-lists, no
    /// `--allow-any`) admitting the rig's accounts and their roles.
    pub allow: Vec<String>,
}

/// The account of the emulator's default credentials: the operator's own.
pub const OPERATOR_ACCOUNT: &str = "123456789012";

/// The installation id of a rig's operators (their account and the table `ferry`).
pub fn installation() -> String {
    desired::installation_id(OPERATOR_ACCOUNT, "ferry")
}

/// The policy flags a rig's operators get unless a test sets its own.
pub fn default_allow() -> Vec<String> {
    [
        "--allow-source",
        "111111111111:*",
        "--allow-destination-account",
        "222222222222",
        "--allow-role",
        "arn:aws:iam::111111111111:role/*",
        "--allow-role",
        "arn:aws:iam::222222222222:role/*",
    ]
    .map(String::from)
    .to_vec()
}

pub async fn rig() -> Rig {
    let emu = Emulator::start();
    emu.local_aws(&["ecs-manual"]);
    emu.local_aws(&["boundary"]);
    let net: serde_json::Value =
        serde_json::from_str(&emu.local_aws(&["network"])).expect("network json");
    let init = emu.ferry(&["init"]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    let base = emu.sdk_config().await;
    let src = s3(&emu.account_config("111111111111").await, SRC_REGION);
    let dst = s3(&emu.account_config("222222222222").await, DST_REGION);
    create_bucket(&src, SRC_BUCKET, SRC_REGION).await;
    Rig {
        subnet: net["subnet"].as_str().expect("subnet").to_string(),
        group: net["securityGroup"].as_str().expect("group").to_string(),
        store: Store::from_config(&base, "ferry"),
        dir: tempfile::tempdir().expect("temp dir"),
        base,
        src,
        dst,
        emu,
        logs: Vec::new(),
        extra_env: Vec::new(),
        allow: default_allow(),
    }
}

/// A job of the rig's source bucket. `run` adds run settings (`, backoffLimit: 1`); one that
/// names `parallelism` replaces the default 1 (YAML keys are unique: a repeated key is refused).
pub fn job_yaml(name: &str, dst_bucket: &str, run: &str) -> String {
    let run = if run.contains("parallelism:") {
        run.trim_start_matches([',', ' ']).to_string()
    } else {
        format!("parallelism: 1{run}")
    };
    format!(
        r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: {name} }}
spec:
  source: {{ account: "111111111111", region: {SRC_REGION}, bucket: {SRC_BUCKET}, roleArn: "arn:aws:iam::111111111111:role/ferry-source" }}
  destination: {{ account: "222222222222", region: {DST_REGION}, bucket: {dst_bucket}, roleArn: "arn:aws:iam::222222222222:role/ferry-destination", create: {{}} }}
  run: {{ {run} }}
"#
    )
}

pub fn objects(n: usize, tag: &str) -> Vec<Obj> {
    (0..n)
        .map(|i| {
            Obj::new(
                &format!("p{}/obj-{i:04}", i % 4),
                format!("{tag}-{i}").as_bytes(),
            )
        })
        .collect()
}

impl Rig {
    /// Starts an operator with test timings; returns it and its metrics port.
    pub fn operator(&mut self, name: &str, extra: &[&str]) -> (Proc, u16) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "operator",
            "--listen",
            &listen,
            "--subnets",
            &self.subnet,
            "--security-groups",
            &self.group,
            "--s3-force-path-style",
            "--worker-env",
            "FERRY_S3_FORCE_PATH_STYLE=true",
            "--worker-env",
            "FERRY_LEASE_SECONDS=3",
            "--resync-seconds",
            "2",
            "--drift-seconds",
            "2",
            "--task-poll-seconds",
            "1",
            "--lease-seconds",
            "3",
            "--restart-backoff-seconds",
            "1",
            "--replica-id",
            name,
        ];
        // A timing flag the test gives replaces the rig's (clap refuses a flag given twice).
        for flag in extra.iter().filter(|a| a.starts_with("--")) {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args.drain(i..i + 2);
            }
        }
        args.extend(self.allow.iter().map(String::as_str));
        args.extend_from_slice(extra);
        let log = self.dir.path().join(format!("{name}.log"));
        let mut env = self.emu.env();
        env.push(("FERRY_LOG".into(), "info,ferry=debug".into()));
        env.extend(self.extra_env.iter().cloned());
        let p = spawn_ferry(&args, &env, &log);
        self.logs.push(log);
        (p, port)
    }

    /// Starts the local Fargate agent, optionally with a stand-in worker command.
    pub fn agent(&mut self, worker_command: Option<&str>) -> Proc {
        self.agent_with(worker_command, &[])
    }

    /// The local agent with extra flags (`--stop-timeout-seconds`).
    pub fn agent_with(&mut self, worker_command: Option<&str>, extra: &[&str]) -> Proc {
        let mut args = vec!["local-agent", "--create-cluster", "--poll-ms", "200"];
        if let Some(c) = worker_command {
            args.extend(["--worker-command", c]);
        }
        args.extend_from_slice(extra);
        let log = self
            .dir
            .path()
            .join(format!("agent-{}.log", self.logs.len()));
        let mut env = self.emu.env();
        env.extend(self.extra_env.iter().cloned());
        let p = spawn_ferry(&args, &env, &log);
        self.logs.push(log);
        p
    }

    /// A worker command for the agent that records each task's pid in `<dir>/<task>.pid`.
    pub fn pid_recording_worker(&self) -> String {
        format!(
            "echo $$ > {}/$FERRY_TASK.pid; exec {} worker",
            self.dir.path().display(),
            crate::support::ferry_bin()
        )
    }

    /// The pid of task `s0a1`'s worker once `dst` holds `n` objects.
    pub async fn first_worker_pid(&self, dst: &str, n: usize) -> String {
        let pid_file = self.dir.path().join("s0a1.pid");
        self.until(
            "the first worker to copy something",
            Duration::from_secs(60),
            || async {
                let pid = std::fs::read_to_string(&pid_file).ok()?;
                (listing(&self.dst, dst, "").await.len() >= n).then(|| pid.trim().to_string())
            },
        )
        .await
    }

    pub fn apply(&self, name: &str, yaml: &str) {
        let f = write_file(self.dir.path(), &format!("{name}.yaml"), yaml);
        let out = self.emu.ferry(&["apply", "-f", f.to_str().expect("path")]);
        assert_eq!(out.code, 0, "apply: {}", out.stderr);
    }

    pub fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| {
                let text = std::fs::read_to_string(l).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- {}\n{}",
                    l.display(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn status(&self, job: &str) -> Option<CopyJobStatus> {
        self.store
            .get_job(job)
            .await
            .ok()
            .flatten()
            .and_then(|j| j.job.status)
    }

    /// Polls until `check` holds, or panics with the processes' logs.
    pub async fn until<T, F, Fut>(&self, what: &str, limit: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn until_phase(&self, job: &str, phase: Phase, limit: Duration) -> CopyJobStatus {
        self.until(&format!("copyjob/{job} {phase:?}"), limit, || async {
            self.status(job).await.filter(|s| s.phase == phase)
        })
        .await
    }

    /// Creates the ECS cluster `ferry` (tasks then stay RUNNING: no agent runs them).
    pub async fn create_cluster(&self) {
        self.ecs()
            .create_cluster()
            .cluster_name("ferry")
            .send()
            .await
            .expect("cluster");
    }

    pub fn ecs(&self) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&self.base)
    }

    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.base)
    }

    /// Every task in the cluster (any status): ARN -> startedBy.
    pub async fn all_tasks(&self) -> BTreeMap<String, String> {
        let ecs = self.ecs();
        let arns = ecs
            .list_tasks()
            .cluster("ferry")
            .send()
            .await
            .map(|o| o.task_arns().to_vec())
            .unwrap_or_default();
        let mut out = BTreeMap::new();
        for batch in arns.chunks(100) {
            let d = ecs
                .describe_tasks()
                .cluster("ferry")
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .expect("describe tasks");
            for t in d.tasks() {
                out.insert(
                    t.task_arn().unwrap_or_default().to_string(),
                    t.started_by().unwrap_or_default().to_string(),
                );
            }
        }
        out
    }

    pub async fn source_policy(&self) -> Option<String> {
        self.src
            .get_bucket_policy()
            .bucket(SRC_BUCKET)
            .send()
            .await
            .ok()
            .and_then(|o| o.policy().map(str::to_string))
    }
}

/// A statement of someone else's that must survive ferry byte for byte.
const FOREIGN_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"DenyInsecureTransport","Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::op-source/never/*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_copied_end_to_end_and_deleting_it_removes_only_what_ferry_added() {
    let mut r = rig().await;
    r.src
        .put_bucket_policy()
        .bucket(SRC_BUCKET)
        .policy(FOREIGN_POLICY)
        .send()
        .await
        .expect("foreign policy");
    seed(&r.src, SRC_BUCKET, objects(120, "v1")).await;
    let (_op, port) = r.operator("op", &[]);
    let _agent = r.agent(None);
    r.apply("e2e", &job_yaml("e2e", "op-dest-e2e", ""));

    let st = r
        .until_phase("e2e", Phase::Succeeded, Duration::from_secs(120))
        .await;
    assert_eq!(st.progress.objects_copied, 120);
    assert_eq!(st.observed_generation, 1);
    assert!(
        st.conditions.iter().all(|c| c.status == "True"),
        "{:?}",
        st.conditions
    );
    assert_eq!(
        listing(&r.dst, "op-dest-e2e", "").await,
        listing(&r.src, SRC_BUCKET, "").await,
        "destination equals source"
    );
    let policy = r.source_policy().await.expect("policy");
    assert!(
        policy.contains(&policy::statement_id(&installation(), "e2e")),
        "{policy}"
    );
    assert!(policy.contains("DenyInsecureTransport"));
    let metrics = r
        .until(
            "copied objects in /metrics",
            Duration::from_secs(20),
            || async {
                http_get(port, "/metrics").ok().filter(|m| {
                    sample(m, r#"ferry_copied_objects_total{copyjob="e2e"}"#) == Some(120.0)
                })
            },
        )
        .await;
    assert_eq!(sample(&metrics, "ferry_leader"), Some(1.0));
    let success = sample(
        &metrics,
        r#"ferry_last_success_timestamp_seconds{copyjob="e2e"}"#,
    )
    .expect("the last success is exported");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        (now - 300.0..=now + 5.0).contains(&success),
        "{success} vs now {now}"
    );
    let build = format!(
        "ferry_build_info{{commit=\"{}\",version=\"{}\"}} 1",
        env!("FERRY_GIT_COMMIT"),
        env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&build), "{build} in {metrics}");
    assert!(
        sample(&metrics, "process_resident_memory_bytes").is_some_and(|b| b > 1e6),
        "process metrics"
    );
    assert!(
        metrics.contains("ferry_workqueue_adds_total")
            && metrics.contains("ferry_active_reconciles")
    );
    assert_eq!(
        sample(
            &metrics,
            r#"ferry_job_phase{copyjob="e2e",phase="Succeeded"}"#
        ),
        Some(1.0)
    );
    assert!(http_get(port, "/readyz").is_ok());

    // Deletion: ferry's statement, task role and records go; other statements and the copied
    // data stay.
    let out = r.emu.ferry(&["delete", "e2e"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    r.until(
        "the job's records to be removed",
        Duration::from_secs(60),
        || async { r.store.get_job("e2e").await.ok().filter(Option::is_none) },
    )
    .await;
    assert_eq!(
        r.source_policy().await.as_deref(),
        Some(FOREIGN_POLICY),
        "byte for byte"
    );
    let role = r
        .iam()
        .get_role()
        .role_name(desired::role_name("e2e"))
        .send()
        .await;
    assert!(role.is_err(), "task role removed");
    assert_eq!(
        listing(&r.dst, "op-dest-e2e", "").await.len(),
        120,
        "destination data is left alone"
    );
    assert!(r.store.list_runs("e2e").await.expect("runs").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_named_with_63_characters_starts_tagged_tasks_and_succeeds() {
    // ECS limits startedBy to 36 characters (RunTask API reference); the strict layer enforces
    // it, so a token built from the name would be refused and no task would ever start.
    let name = format!("long-{}", "n".repeat(58));
    assert_eq!(name.len(), 63);
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(20, "v1")).await;
    let (_op, _port) = r.operator("op", &[]);
    let _agent = r.agent(None);
    r.apply(&name, &job_yaml(&name, "op-dest-long", ""));
    let st = r
        .until_phase(&name, Phase::Succeeded, Duration::from_secs(120))
        .await;
    assert_eq!(st.progress.objects_copied, 20);
    assert_eq!(r.emu.strict_rejections("ecs-started-by"), 0);
    let ecs = aws_sdk_ecs::Client::new(&r.base);
    let mut arns = Vec::new();
    for status in [
        aws_sdk_ecs::types::DesiredStatus::Running,
        aws_sdk_ecs::types::DesiredStatus::Stopped,
    ] {
        let listed = ecs
            .list_tasks()
            .cluster("ferry")
            .desired_status(status)
            .send()
            .await
            .expect("list tasks");
        arns.extend(listed.task_arns().iter().cloned());
    }
    let tasks = ecs
        .describe_tasks()
        .cluster("ferry")
        .set_tasks(Some(arns.clone()))
        .include(aws_sdk_ecs::types::TaskField::Tags)
        .send()
        .await
        .expect("describe tasks");
    // Why each task ended, so that a second task (a replaced first one) explains itself.
    let ended: Vec<String> = tasks
        .tasks()
        .iter()
        .map(|t| {
            format!(
                "{:?} startedBy={:?} stopped={:?} exit={:?}",
                t.last_status(),
                t.started_by(),
                t.stopped_reason(),
                t.containers()
                    .iter()
                    .map(|c| c.exit_code())
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    assert_eq!(arns.len(), 1, "one task for one slot: {ended:#?}");
    let task = &tasks.tasks()[0];
    assert!(task.started_by().is_some_and(|s| s.len() <= 36), "{task:?}");
    let tags: BTreeMap<&str, &str> = task
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect();
    // Propagated from the task definition (RunTask propagateTags), for cost allocation per job.
    assert_eq!(tags.get("ferry:job"), Some(&name.as_str()), "{tags:?}");
    assert_eq!(
        tags.get("ferry:owner"),
        Some(&installation().as_str()),
        "{tags:?}"
    );
    assert!(tags.get("ferry:run").is_some(), "{tags:?}");
    let uid = r
        .store
        .get_job(&name)
        .await
        .expect("store")
        .expect("job")
        .uid;
    let run = format!("{uid}-g1r1");
    assert_eq!(tags.get("ferry:run"), Some(&run.as_str()), "{tags:?}");
    let td = ecs
        .describe_task_definition()
        .task_definition(task.task_definition_arn().expect("revision"))
        .send()
        .await
        .expect("task definition");
    let platform = td.task_definition().and_then(|t| t.runtime_platform());
    assert_eq!(
        platform
            .and_then(|p| p.cpu_architecture())
            .map(|a| a.as_str()),
        Some("X86_64"),
        "the operator's default architecture is the task definition's runtimePlatform"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_bucket_owned_by_another_account_ends_owned_by_other_and_gets_nothing() {
    // The name is taken by the source account; the job says the destination account owns it.
    // Every S3 call carries ExpectedBucketOwner, which S3 (and the strict layer) answers with
    // 403 when another account owns the bucket.
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(5, "v1")).await;
    let taker = s3(&r.emu.account_config("111111111111").await, DST_REGION);
    create_bucket(&taker, "op-dest-taken", DST_REGION).await;
    // A trap: the other account lets the job's destination role in. Without the owner check,
    // HeadBucket answers 200 and the copy would land in that account's bucket.
    taker
        .put_bucket_policy()
        .bucket("op-dest-taken")
        .policy(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"AWS":"arn:aws:iam::222222222222:role/ferry-destination"},
            "Action":"s3:*","Resource":["arn:aws:s3:::op-dest-taken","arn:aws:s3:::op-dest-taken/*"]}]}"#,
        )
        .send()
        .await
        .expect("the trap's policy");
    let (_op, _port) = r.operator("op", &[]);
    let _agent = r.agent(None);
    r.apply("taken", &job_yaml("taken", "op-dest-taken", ""));
    let st = r
        .until_phase("taken", Phase::Failed, Duration::from_secs(60))
        .await;
    let cond = st
        .conditions
        .iter()
        .find(|c| c.kind == "DestinationReady")
        .expect("DestinationReady condition");
    assert_eq!(cond.status, "False");
    assert_eq!(cond.reason, "OwnedByOther", "{cond:?}");
    assert!(cond.message.contains("222222222222"), "{}", cond.message);
    assert!(
        st.run
            .is_none_or(|run| run.tasks.iter().all(|t| t.arn.is_none()))
    );
    assert!(
        listing(&taker, "op-dest-taken", "").await.is_empty(),
        "nothing was written into another account's bucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_and_deletion_need_exactly_the_role_permissions_ferry_policies_prints() {
    // The source and destination roles get exactly what `ferry policies` prints; the strict
    // layer evaluates every S3 request against them (and, across accounts, against the source
    // bucket policy ferry writes), so a missing action fails the run.
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(30, "v1")).await;
    let yaml = job_yaml("perms", "op-dest-perms", "")
        .replace("create: {}", "create: { versioning: true }");
    let file = write_file(r.dir.path(), "perms.yaml", &yaml);
    let out = r
        .emu
        .ferry(&["policies", "-f", file.to_str().expect("path")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("JSON");
    let (source_policy, destination_policy) = (
        &printed[0]["sourceRolePolicy"],
        &printed[0]["destinationRolePolicy"],
    );
    crate::strict::role_with_policy(
        &r.emu,
        "111111111111",
        "ferry-source",
        &source_policy.to_string(),
    )
    .await;
    crate::strict::role_with_policy(
        &r.emu,
        "222222222222",
        "ferry-destination",
        &destination_policy.to_string(),
    )
    .await;
    let (_op, _port) = r.operator("op", &[]);
    let _agent = r.agent(None);
    r.apply("perms", &yaml);
    let st = r
        .until_phase("perms", Phase::Succeeded, Duration::from_secs(120))
        .await;
    assert_eq!(st.progress.objects_copied, 30);
    assert_eq!(
        listing(&r.dst, "op-dest-perms", "").await,
        listing(&r.src, SRC_BUCKET, "").await
    );
    let out = r.emu.ferry(&["delete", "perms"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    r.until("the job to be removed", Duration::from_secs(60), || async {
        r.store.get_job("perms").await.ok().filter(Option::is_none)
    })
    .await;
    assert_eq!(
        r.emu.strict_rejections("iam-s3-permissions"),
        0,
        "no request was refused"
    );

    let used: BTreeMap<String, Vec<String>> = serde_json::from_str(
        &crate::support::http_get(r.emu.port, "/ferry-strict/permissions").expect("permissions"),
    )
    .expect("JSON");
    let documented = |p: &serde_json::Value| ferry::permissions::actions(p);
    assert_eq!(
        used["arn:aws:iam::111111111111:role/ferry-source"],
        documented(source_policy),
        "the source role used every action it was given"
    );
    // Aborting an upload happens only when a multipart copy fails; this run has none.
    let mut dst_used = used["arn:aws:iam::222222222222:role/ferry-destination"].clone();
    dst_used.push("s3:AbortMultipartUpload".into());
    dst_used.sort();
    assert_eq!(
        dst_used,
        documented(destination_policy),
        "the destination role used every action it was given"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_whose_task_listing_is_refused_keeps_the_task_role_until_it_is_allowed() {
    // An AccessDenied ListTasks says nothing about what runs (before: "no cluster, nothing runs").
    deletion_refused("listed", "ecs:ListTasks").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_whose_task_stop_is_refused_keeps_the_task_role_until_it_is_allowed() {
    // An AccessDenied StopTask did not stop the task (before: counted as stopped).
    deletion_refused("stopped", "ecs:StopTask").await;
}

/// Deletes a job with a running task while the operator is refused `action`: the finalizer
/// must not go on to delete the task role under a task that may still run; once the refusal is
/// lifted, the deletion completes.
async fn deletion_refused(name: &str, action: &str) {
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(200, "v1")).await;
    let (_op, _port) = r.operator("op", &[]);
    // The agent uses its own access key, so that only the operator's calls are refused.
    r.extra_env
        .push(("AWS_ACCESS_KEY_ID".into(), "agent".into()));
    let _agent = r.agent(None);
    r.apply(
        name,
        &job_yaml(
            name,
            &format!("op-dest-{name}"),
            ", maxRequestsPerSecond: 5",
        ),
    );
    r.until("a task of the run", Duration::from_secs(60), || async {
        let st = r.status(name).await?;
        st.run?.tasks.iter().find_map(|t| t.arn.clone())
    })
    .await;
    r.emu.strict_deny(&[("accesskey:test", action)]);
    let out = r.emu.ferry(&["delete", name]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    r.until("two refused cleanups", Duration::from_secs(60), || async {
        (r.emu.strict_rejections("iam-deny-list") >= 2).then_some(())
    })
    .await;
    let role = desired::role_name(name);
    assert!(
        r.iam().get_role().role_name(&role).send().await.is_ok(),
        "the task role stays while {action} is refused"
    );
    assert!(r.store.get_job(name).await.expect("store").is_some());

    r.emu.strict_deny(&[]);
    r.until(
        "the job's records to be removed",
        Duration::from_secs(90),
        || async { r.store.get_job(name).await.ok().filter(Option::is_none) },
    )
    .await;
    assert!(r.iam().get_role().role_name(&role).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_task_definition_read_registers_no_new_revision() {
    // AccessDenied on DescribeTaskDefinition says nothing about the definition: the drift check
    // must not take it for "missing" and register a revision on every pass.
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(5, "v1")).await;
    let (_op, _port) = r.operator("op", &[]);
    let _agent = r.agent(None);
    r.apply("tdread", &job_yaml("tdread", "op-dest-tdread", ""));
    r.until_phase("tdread", Phase::Succeeded, Duration::from_secs(90))
        .await;
    let ecs = aws_sdk_ecs::Client::new(&r.base);
    let revisions = || async {
        ecs.list_task_definitions()
            .family_prefix(desired::family("tdread"))
            .send()
            .await
            .expect("list task definitions")
            .task_definition_arns()
            .len()
    };
    assert_eq!(revisions().await, 1);
    r.emu
        .strict_deny(&[("accesskey:test", "ecs:DescribeTaskDefinition")]);
    r.until(
        "two refused drift checks",
        Duration::from_secs(60),
        || async { (r.emu.strict_rejections("iam-deny-list") >= 2).then_some(()) },
    )
    .await;
    assert_eq!(revisions().await, 1, "no revision registered blindly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_drift_is_put_back_on_the_next_resync() {
    let mut r = rig().await;
    // Workers that never finish keep the run active while the cloud is tampered with.
    let (_op, port) = r.operator("op", &[]);
    let _agent = r.agent(Some("sleep 600"));
    r.apply("drift", &job_yaml("drift", "op-dest-drift", ""));
    let st = r
        .until_phase("drift", Phase::Running, Duration::from_secs(60))
        .await;
    let first_task = st
        .run
        .as_ref()
        .and_then(|r| r.tasks[0].arn.clone())
        .expect("task");
    let sid = policy::statement_id(&installation(), "drift");
    let family = desired::family("drift");
    let role = desired::role_name("drift");

    // 1. ferry's statement removed from the source bucket policy.
    r.src
        .put_bucket_policy()
        .bucket(SRC_BUCKET)
        .policy(FOREIGN_POLICY)
        .send()
        .await
        .expect("overwrite policy");
    // 2. The destination bucket deleted.
    r.dst
        .delete_bucket()
        .bucket("op-dest-drift")
        .send()
        .await
        .expect("delete bucket");
    // 3. The task definition deregistered.
    let defs = r
        .ecs()
        .list_task_definitions()
        .family_prefix(&family)
        .send()
        .await
        .expect("defs");
    for arn in defs.task_definition_arns() {
        r.ecs()
            .deregister_task_definition()
            .task_definition(arn)
            .send()
            .await
            .expect("deregister");
    }
    // 4. The task role's policy edited.
    r.iam()
        .put_role_policy()
        .role_name(&role)
        .policy_name(desired::ROLE_POLICY)
        .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#)
        .send()
        .await
        .expect("edit role policy");
    // 5. The task role's permissions boundary removed (ferry created the role with it).
    let created = r
        .iam()
        .get_role()
        .role_name(&role)
        .send()
        .await
        .expect("role");
    assert_eq!(
        created
            .role()
            .and_then(|r| r.permissions_boundary())
            .and_then(|b| b.permissions_boundary_arn()),
        Some(desired::task_boundary_arn(OPERATOR_ACCOUNT).as_str()),
        "the task role is created with the boundary"
    );
    r.iam()
        .delete_role_permissions_boundary()
        .role_name(&role)
        .send()
        .await
        .expect("remove the boundary");
    // 6. The task stopped by hand.
    r.ecs()
        .stop_task()
        .cluster("ferry")
        .task(&first_task)
        .reason("stopped by hand")
        .send()
        .await
        .expect("stop task");

    r.until(
        "ferry's policy statement back",
        Duration::from_secs(60),
        || async {
            r.source_policy()
                .await
                .filter(|p| p.contains(&sid) && p.contains("DenyInsecureTransport"))
        },
    )
    .await;
    r.until(
        "destination bucket back",
        Duration::from_secs(60),
        || async {
            r.dst
                .head_bucket()
                .bucket("op-dest-drift")
                .send()
                .await
                .ok()
        },
    )
    .await;
    r.until("task definition back", Duration::from_secs(60), || async {
        let d = r
            .ecs()
            .describe_task_definition()
            .task_definition(&family)
            .send()
            .await
            .ok()?;
        (d.task_definition()?.status()?.as_str() == "ACTIVE").then_some(())
    })
    .await;
    r.until(
        "task role policy restored",
        Duration::from_secs(60),
        || async {
            let p = r
                .iam()
                .get_role_policy()
                .role_name(&role)
                .policy_name(desired::ROLE_POLICY)
                .send()
                .await
                .ok()?;
            let doc = percent_encoding::percent_decode_str(p.policy_document())
                .decode_utf8()
                .ok()?;
            (doc.contains("AssumeDestinationRole") && !doc.contains("s3:*")).then_some(())
        },
    )
    .await;
    r.until(
        "task role boundary restored",
        Duration::from_secs(60),
        || async {
            let out = r.iam().get_role().role_name(&role).send().await.ok()?;
            let arn = out
                .role()?
                .permissions_boundary()?
                .permissions_boundary_arn()?;
            (arn == desired::task_boundary_arn(OPERATOR_ACCOUNT)).then_some(())
        },
    )
    .await;
    let replaced = r
        .until(
            "the stopped task replaced",
            Duration::from_secs(60),
            || async {
                let s = r.status("drift").await?;
                let t = s.run?.tasks.first()?.clone();
                (t.attempt == 2 && t.arn.is_some() && t.arn != Some(first_task.clone()))
                    .then_some(t)
            },
        )
        .await;
    assert_eq!(replaced.last_stop.as_deref(), Some("stopped by hand"));
    let metrics = http_get(port, "/metrics").expect("metrics");
    for kind in [
        "source_policy",
        "destination_bucket",
        "task_definition",
        "task_role",
    ] {
        let n = sample(
            &metrics,
            &format!(r#"ferry_drift_corrections_total{{kind="{kind}"}}"#),
        );
        assert!(n.unwrap_or(0.0) >= 1.0, "{kind} not counted:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_the_job_completes() {
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(60, "v1")).await;
    let pids = r.dir.path().to_path_buf();
    let cmd = r.pid_recording_worker();
    let (_op, _) = r.operator("op", &[]);
    let _agent = r.agent(Some(&cmd));
    // Slow enough to be killed mid-run.
    r.apply(
        "kill",
        &job_yaml("kill", "op-dest-kill", ", maxRequestsPerSecond: 8"),
    );
    let pid = r.first_worker_pid("op-dest-kill", 5).await;
    crate::support::signal_pid(pid.trim().parse().expect("a pid"), "KILL");

    let st = r
        .until_phase("kill", Phase::Succeeded, Duration::from_secs(180))
        .await;
    let run = st.run.expect("run");
    assert_eq!(run.failures, 1, "the killed task counts as one failure");
    assert_eq!(run.tasks[0].attempt, 2);
    assert!(pids.join("s0a2.pid").exists(), "a second attempt ran");
    assert_eq!(
        listing(&r.dst, "op-dest-kill", "").await,
        listing(&r.src, SRC_BUCKET, "").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_tasks_keep_failing_ends_failed_with_backoff_limit_exceeded() {
    let mut r = rig().await;
    let (_op, port) = r.operator("op", &[]);
    let _agent = r.agent(Some("exit 3"));
    r.apply(
        "doomed",
        &job_yaml("doomed", "op-dest-doomed", ", backoffLimit: 2"),
    );
    let st = r
        .until_phase("doomed", Phase::Failed, Duration::from_secs(120))
        .await;
    let complete = st
        .conditions
        .iter()
        .find(|c| c.kind == "Complete")
        .expect("Complete");
    assert_eq!(complete.reason, "BackoffLimitExceeded");
    assert_eq!(st.run.expect("run").failures, 3);
    // backoffLimit 2: the first task and two replacements, each started exactly once.
    let tasks = r.all_tasks().await;
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    let tokens: std::collections::BTreeSet<&String> = tasks.values().collect();
    assert_eq!(tokens.len(), 3, "no attempt started twice: {tasks:?}");
    let m = http_get(port, "/metrics").expect("metrics");
    assert_eq!(
        sample(
            &m,
            r#"ferry_task_restarts_total{copyjob="doomed",reason="failed"}"#
        ),
        Some(3.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_elect_one_leader_and_a_killed_leader_is_replaced_without_duplicate_tasks() {
    let mut r = rig().await;
    let (mut a, port_a) = r.operator("op-a", &[]);
    r.until("op-a to lead", Duration::from_secs(30), || async {
        let m = http_get(port_a, "/metrics").ok()?;
        (sample(&m, "ferry_leader") == Some(1.0)).then_some(())
    })
    .await;
    let (_b, port_b) = r.operator("op-b", &[]);
    let _agent = r.agent(Some("sleep 600"));
    r.apply(
        "ha-one",
        &job_yaml("ha-one", "op-dest-ha-one", ", parallelism: 2"),
    );
    r.until_phase("ha-one", Phase::Running, Duration::from_secs(60))
        .await;
    let m = http_get(port_b, "/metrics").expect("b metrics");
    assert_eq!(sample(&m, "ferry_leader"), Some(0.0), "b waits");
    assert!(!m.contains("RunTask"), "the standby started nothing:\n{m}");

    // Kill the leader in the middle of starting a job's tasks.
    r.apply(
        "ha-two",
        &job_yaml("ha-two", "op-dest-ha-two", ", parallelism: 2"),
    );
    let uid = r
        .store
        .get_job("ha-two")
        .await
        .expect("store")
        .expect("job")
        .uid;
    let token = desired::attempt_token("ha-two", &format!("{uid}-g1r1"), 0, 1);
    r.until(
        "ha-two's first RunTask",
        Duration::from_secs(60),
        || async {
            r.all_tasks()
                .await
                .values()
                .any(|t| *t == token)
                .then_some(())
        },
    )
    .await;
    a.kill();
    let killed_at = Instant::now();
    r.until("op-b to lead", Duration::from_secs(30), || async {
        let m = http_get(port_b, "/metrics").ok()?;
        (sample(&m, "ferry_leader") == Some(1.0)).then_some(())
    })
    .await;
    let took_over = killed_at.elapsed();
    assert!(
        took_over < Duration::from_secs(10),
        "took over after {took_over:?} (lease 3 s)"
    );
    let st = r
        .until_phase("ha-two", Phase::Running, Duration::from_secs(60))
        .await;
    assert!(st.run.expect("run").tasks.iter().all(|t| t.arn.is_some()));
    // The restarted operator converges too, and nothing was started twice.
    let (_a2, _) = r.operator("op-a2", &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tasks = r.all_tasks().await;
    assert_eq!(tasks.len(), 4, "two jobs x parallelism 2: {tasks:?}");
    let tokens: std::collections::BTreeSet<&String> = tasks.values().collect();
    assert_eq!(tokens.len(), 4, "no attempt started twice: {tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_sync_job_starts_a_second_run_on_its_tick_and_copies_only_what_changed() {
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(30, "v1")).await;
    let (_op, _) = r.operator("op", &[]);
    let _agent = r.agent(None);
    r.apply(
        "sync",
        &job_yaml(
            "sync",
            "op-dest-sync",
            r#", mode: Sync, schedule: "*/10 * * * * *""#,
        ),
    );
    let first = r
        .until(
            "the first run to finish",
            Duration::from_secs(120),
            || async {
                let s = r.status("sync").await?;
                let run = s.run.clone()?;
                (run.id.ends_with("-g1r1")
                    && run.finished_at.is_some()
                    && s.next_run_time.is_some())
                .then_some(s)
            },
        )
        .await;
    assert_eq!(first.progress.objects_copied, 30);
    // Change the source: 5 new objects and 1 changed one.
    let mut changes: Vec<Obj> = (30..35)
        .map(|i| Obj::new(&format!("p{}/obj-{i:04}", i % 4), b"new"))
        .collect();
    changes.push(Obj::new("p0/obj-0000", b"changed content"));
    seed(&r.src, SRC_BUCKET, changes).await;
    let second = r
        .until(
            "the second run to finish",
            Duration::from_secs(120),
            || async {
                let s = r.status("sync").await?;
                let run = s.run.clone()?;
                (run.id.ends_with("-g1r2") && run.finished_at.is_some()).then_some(s)
            },
        )
        .await;
    assert_eq!(second.progress.objects_copied, 6, "{:?}", second.progress);
    assert_eq!(second.progress.objects_skipped, 29);
    assert_eq!(
        second.totals.objects_copied, 30,
        "the first run's counters are kept"
    );
    assert_eq!(
        listing(&r.dst, "op-dest-sync", "").await,
        listing(&r.src, SRC_BUCKET, "").await
    );
}
