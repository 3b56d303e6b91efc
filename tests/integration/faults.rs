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
