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
