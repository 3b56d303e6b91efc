//! The operator under faults: a leader frozen past its lease, tasks the platform loses or that
//! hang, a job deleted and re-created under the same name.

use std::time::{Duration, Instant, SystemTime};

use crate::operator::{job_yaml, rig};
use crate::support::{http_get, sample};

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// The writes the emulator received in `[from, to]` (its clock), leader-lease writes aside.
fn writes_between(requests: &[serde_json::Value], from: f64, to: f64) -> Vec<String> {
    requests
        .iter()
        .filter(|q| q["write"] == true)
        .filter(|q| q["time"].as_f64().is_some_and(|t| t >= from && t <= to))
        .filter(|q| !q["key"].as_str().unwrap_or_default().starts_with("LEASE#"))
        .map(|q| format!("{} {}", q["service"], q["operation"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_sends_no_write_after_it_resumes() {
    let mut r = rig().await;
    r.create_cluster().await;
    let (a, port_a) = r.operator("op-a", &[]);
    let leader = |port: u16, want: f64| async move {
        let m = http_get(port, "/metrics").ok()?;
        (sample(&m, "ferry_leader") == Some(want)).then_some(())
    };
    r.until("op-a to lead", Duration::from_secs(30), || {
        leader(port_a, 1.0)
    })
    .await;
    let (mut b, port_b) = r.operator("op-b", &[]);
    r.until("op-b to stand by", Duration::from_secs(30), || {
        leader(port_b, 0.0)
    })
    .await;

    // Six jobs at once; freeze the leader as soon as it starts provisioning them, so its
    // reconciles are parked mid-way.
    let all: String = (0..6)
        .map(|i| job_yaml(&format!("frozen-{i}"), &format!("frozen-dst-{i}"), ""))
        .collect::<Vec<_>>()
        .join("---\n");
    r.apply("six", &all);
    r.until(
        "op-a's first CreateRole",
        Duration::from_secs(30),
        || async {
            r.emu
                .strict_requests()
                .iter()
                .any(|q| q["operation"] == "CreateRole")
                .then_some(())
        },
    )
    .await;
    r.until(
        "op-a to export a job's series",
        Duration::from_secs(30),
        || async {
            http_get(port_a, "/metrics")
                .ok()
                .filter(|m| m.contains("copyjob=\"frozen-"))
                .map(|_| ())
        },
    )
    .await;
    a.signal("STOP");
    let frozen = Instant::now();
    r.until("op-b to take over", Duration::from_secs(30), || {
        leader(port_b, 1.0)
    })
    .await;
    // Frozen for twice the lease (3 s).
    tokio::time::sleep_until((frozen + Duration::from_secs(6)).into()).await;
    // From here on every request the emulator sees is op-a's.
    b.kill();
    let resumed = epoch_now();
    a.signal("CONT");
    r.until("op-a to step down", Duration::from_secs(20), || {
        leader(port_a, 0.0)
    })
    .await;
    let stepped_down = epoch_now();
    let metrics = http_get(port_a, "/metrics").expect("op-a's metrics");
    assert!(
        !metrics.contains("copyjob="),
        "a replica that stepped down still exports per-job series, which sum() over replicas would count twice:\n{metrics}"
    );
    let after = writes_between(&r.emu.strict_requests(), resumed, stepped_down + 1.0);
    assert!(
        after.is_empty(),
        "op-a wrote after it resumed without a valid lease: {after:?}\n{}",
        r.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_mid_run_and_created_again_at_once_shares_nothing_with_the_old_one() {
    use crate::operator::{SRC_BUCKET, objects};
    use crate::worker::{listing, seed};
    use ferry::model::Phase;

    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(60, "v1")).await;
    let (_op, _) = r.operator("op", &[]);
    let _agent = r.agent(None);
    // Slow enough to be deleted mid-run.
    let yaml = job_yaml("again", "again-dst", ", maxRequestsPerSecond: 8");
    r.apply("again", &yaml);
    let old = r
        .until(
            "the first run to copy something",
            Duration::from_secs(60),
            || async {
                let s = r.status("again").await?;
                (s.progress.objects_copied >= 3).then(|| s.run.expect("run").id)
            },
        )
        .await;
    let out = r.emu.ferry(&["delete", "again"]);
    assert_eq!(out.code, 0, "delete: {}", out.stderr);
    r.until(
        "the job to be finalized",
        Duration::from_secs(60),
        || async { r.store.get_job("again").await.ok().filter(Option::is_none) },
    )
    .await;
    let finalized = epoch_now();
    r.apply("again", &yaml);
    let st = r
        .until_phase("again", Phase::Succeeded, Duration::from_secs(180))
        .await;
    let new = st.run.expect("run").id;
    assert_ne!(new, old, "the new incarnation's run has its own id");
    assert!(
        new.ends_with("-g1r1") && old.ends_with("-g1r1"),
        "{old} {new}"
    );
    // Nothing of the old run was written once its records were gone (the finalizer waited for
    // the old task's worker to exit), and nothing of it is left.
    let old_pk = format!("RUN#again#{old}");
    let late: Vec<String> = r
        .emu
        .strict_requests()
        .iter()
        .filter(|q| q["write"] == true && q["key"] == old_pk.as_str())
        .filter(|q| q["time"].as_f64().is_some_and(|t| t >= finalized))
        .map(|q| q["operation"].to_string())
        .collect();
    assert!(
        late.is_empty(),
        "old-run writes after cleanup: {late:?}\n{}",
        r.logs()
    );
    let left = r
        .store
        .client()
        .query()
        .table_name(r.store.table())
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(old_pk.clone()),
        )
        .send()
        .await
        .expect("query");
    assert_eq!(left.count(), 0, "items of the old run remain");
    assert_eq!(
        listing(&r.dst, "again-dst", "").await,
        listing(&r.src, SRC_BUCKET, "").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_describe_tasks_does_not_know_yet_is_waited_for_not_replaced() {
    use ferry::model::Phase;
    let mut r = rig().await;
    r.create_cluster().await;
    // ECS is eventually consistent: for 5 s after RunTask, DescribeTasks answers MISSING.
    r.emu
        .strict_ecs_faults(serde_json::json!({"describeLagMs": 5000}));
    let (_op, _) = r.operator("op", &["--missing-grace-seconds", "60"]);
    r.apply("lag", &job_yaml("lag", "lag-dst", ", parallelism: 2"));
    r.until_phase("lag", Phase::Running, Duration::from_secs(60))
        .await;
    // Until DescribeTasks knows both tasks (5 s after RunTask); the operator looked every
    // second while it answered MISSING.
    r.until(
        "both tasks to be visible",
        Duration::from_secs(60),
        || async { (r.all_tasks().await.len() == 2).then_some(()) },
    )
    .await;
    let run = r.status("lag").await.expect("status").run.expect("run");
    assert_eq!(
        (run.failures, run.platform_restarts),
        (0, 0),
        "a task ECS did not know yet is not a failure: {run:?}"
    );
    assert!(run.tasks.iter().all(|t| t.attempt == 1), "{run:?}");
    let listed = r
        .ecs()
        .list_tasks()
        .cluster("ferry")
        .send()
        .await
        .expect("list tasks");
    assert_eq!(
        listed.task_arns().len(),
        2,
        "one task per slot, none replaced: {:?}",
        listed.task_arns()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_ecs_cannot_place_is_recorded_counted_and_retried_under_a_new_token() {
    use ferry::model::Phase;
    let mut r = rig().await;
    r.create_cluster().await;
    r.emu.strict_ecs_faults(
        serde_json::json!({"placementFailures": 2, "placementReason": "RESOURCE:ENI"}),
    );
    let (_op, port) = r.operator("op", &[]);
    r.apply("place", &job_yaml("place", "place-dst", ""));
    let failed = r
        .until(
            "the placement failure to be recorded",
            Duration::from_secs(60),
            || async {
                let s = r.status("place").await?;
                s.conditions
                    .iter()
                    .find(|c| c.kind == "TasksPlaced" && c.status == "False")
                    .cloned()
            },
        )
        .await;
    assert_eq!(failed.reason, "RESOURCE:ENI");
    assert!(failed.message.contains("no capacity"), "{}", failed.message);
    let st = r
        .until_phase("place", Phase::Running, Duration::from_secs(60))
        .await;
    let run = st.run.expect("run");
    assert_eq!(run.placement_failures, 2, "{run:?}");
    assert_eq!(run.failures, 0, "placement failures are not task failures");
    let placed = st
        .conditions
        .iter()
        .find(|c| c.kind == "TasksPlaced")
        .expect("TasksPlaced");
    assert_eq!(
        (placed.status.as_str(), placed.reason.as_str()),
        ("True", "Placed")
    );
    let m = http_get(port, "/metrics").expect("metrics");
    assert_eq!(
        sample(&m, r#"ferry_placement_failures_total{copyjob="place"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(r.all_tasks().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_task_runs_the_revision_its_run_started_with() {
    use ferry::model::Phase;
    let mut r = rig().await;
    r.create_cluster().await;
    let (_op, _) = r.operator("op", &["--drift-seconds", "3600"]);
    r.apply("pin", &job_yaml("pin", "pin-dst", ""));
    let st = r
        .until_phase("pin", Phase::Running, Duration::from_secs(60))
        .await;
    let run = st.run.expect("run");
    let pinned = run.task_definition.clone().expect("pinned revision");
    assert!(pinned.ends_with(":1"), "{pinned}");
    // A newer revision of the family appears (same owner tags: another version of this
    // installation registered it).
    let ecs = r.ecs();
    let current = ecs
        .describe_task_definition()
        .task_definition(&pinned)
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
        .expect("describe");
    let td = current.task_definition().expect("td");
    let mut container = td.container_definitions()[0].clone();
    container.image = Some("ferry:other".into());
    let registered = ecs
        .register_task_definition()
        .family(td.family().unwrap_or_default())
        .set_requires_compatibilities(Some(td.requires_compatibilities().to_vec()))
        .set_network_mode(td.network_mode().cloned())
        .set_cpu(td.cpu().map(str::to_string))
        .set_memory(td.memory().map(str::to_string))
        .set_task_role_arn(td.task_role_arn().map(str::to_string))
        .container_definitions(container)
        .set_tags(Some(current.tags().to_vec()))
        .send()
        .await
        .expect("register");
    let newer = registered
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("arn")
        .to_string();
    assert!(newer.ends_with(":2"), "{newer}");
    // Someone stops the run's task; ferry replaces it.
    let arn = run.tasks[0].arn.clone().expect("arn");
    ecs.stop_task()
        .cluster("ferry")
        .task(&arn)
        .reason("stopped by a person")
        .send()
        .await
        .expect("stop");
    let replacement = r
        .until("the replacement task", Duration::from_secs(60), || async {
            let s = r.status("pin").await?;
            let t = s.run?.tasks[0].clone();
            (t.attempt == 2).then_some(t.arn).flatten()
        })
        .await;
    let described = ecs
        .describe_tasks()
        .cluster("ferry")
        .tasks(&replacement)
        .send()
        .await
        .expect("describe tasks");
    assert_eq!(
        described.tasks()[0].task_definition_arn(),
        Some(pinned.as_str()),
        "the replacement runs the run's revision, not the family's latest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_hung_while_holding_work_is_ended_by_its_watchdog_and_replaced() {
    use crate::operator::{SRC_BUCKET, objects};
    use crate::worker::seed;
    use ferry::model::Phase;
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(30, "v1")).await;
    let (_op, _) = r.operator(
        "op",
        &[
            "--worker-env",
            "FERRY_WATCHDOG_SECONDS=3",
            "--worker-env",
            "FERRY_TEST_HANG_TASK=s0a1",
        ],
    );
    let _agent = r.agent(None);
    r.apply("hung", &job_yaml("hung", "hung-dst", ""));
    let st = r
        .until_phase("hung", Phase::Succeeded, Duration::from_secs(120))
        .await;
    replaced_once_then_copied_all(&r, st, "hung-dst", "exit code 5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_worker_stops_its_heartbeat_is_stopped_counted_and_replaced() {
    use crate::operator::{SRC_BUCKET, objects};
    use crate::worker::seed;
    use ferry::model::Phase;
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(60, "v1")).await;
    let cmd = r.pid_recording_worker();
    let (_op, _) = r.operator("op", &["--heartbeat-timeout-seconds", "4"]);
    let _agent = r.agent_with(Some(&cmd), &["--stop-timeout-seconds", "2"]);
    r.apply(
        "frozen",
        &job_yaml("frozen", "frozen-dst", ", maxRequestsPerSecond: 8"),
    );
    let pid = r.first_worker_pid("frozen-dst", 3).await;
    // The process is frozen: ECS still says RUNNING, but no heartbeat comes.
    crate::support::signal_pid(pid.trim().parse().expect("a pid"), "STOP");
    let st = r
        .until_phase("frozen", Phase::Succeeded, Duration::from_secs(180))
        .await;
    replaced_once_then_copied_all(&r, st, "frozen-dst", "no heartbeat").await;
}

/// A Succeeded run whose one slot failed once (`why` in its last stop), was replaced, and whose
/// destination now holds the whole source.
async fn replaced_once_then_copied_all(
    r: &crate::operator::Rig,
    st: ferry::model::CopyJobStatus,
    dst: &str,
    why: &str,
) {
    use crate::operator::SRC_BUCKET;
    use crate::worker::listing;
    let run = st.run.expect("run");
    assert_eq!(run.failures, 1, "counted as one failure: {run:?}");
    assert_eq!(run.tasks[0].attempt, 2, "{run:?}");
    let stop = run.tasks[0].last_stop.clone().unwrap_or_default();
    assert!(stop.contains(why), "{stop}");
    assert_eq!(
        listing(&r.dst, dst, "").await,
        listing(&r.src, SRC_BUCKET, "").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_endpoint_that_never_answers_fails_the_call_within_its_timeouts() {
    use std::io::Read;
    // A server that accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            held.push(conn);
        }
    });
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(crate::support::ferry_bin());
    cmd.args([
        "get",
        "--endpoint-url",
        &endpoint,
        "--attempt-timeout-seconds",
        "1",
        "--max-attempts",
        "2",
    ])
    .env_remove("FERRY_ENDPOINT_URL")
    .env("AWS_ACCESS_KEY_ID", "test")
    .env("AWS_SECRET_ACCESS_KEY", "test")
    .env("AWS_REGION", "us-east-1")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("ferry get still waits for an endpoint that never answers after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("timeout") || stderr.to_lowercase().contains("timed out"),
        "the error says it timed out: {stderr}"
    );
}
