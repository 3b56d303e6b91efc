//! The operator against concurrent writers: jobs sharing one source bucket policy, and someone
//! else rewriting that policy at the same time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry::controller::policy::statement_id;
use ferry::model::Phase;

use crate::operator::{SRC_BUCKET, installation, job_yaml, rig};

/// Someone else's statement, re-added whenever it is missing.
const FOREIGN_SID: &str = "SomeoneElses";

fn with_foreign(current: Option<&str>) -> Option<String> {
    let mut doc: serde_json::Value = current
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or_else(|| serde_json::json!({"Version": "2012-10-17", "Statement": []}));
    let statements = doc["Statement"].as_array_mut()?;
    if statements.iter().any(|s| s["Sid"] == FOREIGN_SID) {
        return None;
    }
    statements.push(serde_json::json!({
        "Sid": FOREIGN_SID, "Effect": "Deny", "Principal": "*",
        "Action": "s3:DeleteBucket", "Resource": format!("arn:aws:s3:::{SRC_BUCKET}")
    }));
    Some(doc.to_string())
}

/// A rig with an ECS cluster (tasks stay RUNNING: no agent) and an operator with `extra` flags.
async fn rig_with_cluster() -> crate::operator::Rig {
    // Threaded moto, so S3 requests interleave as on AWS; the strict layer keeps DynamoDB's
    // conditional writes (the policy lock) atomic.
    let r = rig().await;
    r.create_cluster().await;
    r
}

/// Applies ten jobs reading the same source bucket, in one file; returns their names.
fn apply_ten(r: &crate::operator::Rig) -> Vec<String> {
    let names: Vec<String> = (0..10).map(|i| format!("share-{i}")).collect();
    let all: String = names
        .iter()
        .map(|n| job_yaml(n, &format!("race-{n}"), ""))
        .collect::<Vec<_>>()
        .join("---\n");
    r.apply("all", &all);
    names
}

/// The jobs whose statements the policy lacks.
fn missing<'a>(policy: &str, names: &'a [String]) -> Vec<&'a String> {
    names
        .iter()
        .filter(|n| !policy.contains(&format!("\"{}\"", statement_id(&installation(), n))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_jobs_on_one_source_bucket_all_have_their_statements_after_one_pass() {
    let mut r = rig_with_cluster().await;
    // All ten are in the table before the operator starts, so its first resync reconciles them
    // at once. Drift checks only when something is not ready: what the policy holds once every
    // job has been provisioned is what the merges left.
    let names = apply_ten(&r);
    let (_op, _port) = r.operator("op", &["--drift-seconds", "3600"]);
    for n in &names {
        r.until_phase(n, Phase::Running, Duration::from_secs(120))
            .await;
    }
    let policy = r.source_policy().await.expect("policy");
    assert!(
        missing(&policy, &names).is_empty(),
        "statements lost for {:?}: {policy}",
        missing(&policy, &names)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_someone_else_keeps_writing_survives_ten_jobs_merging_theirs() {
    let mut r = rig_with_cluster().await;
    // Someone else keeps a statement of theirs in the policy: read, add if missing, write.
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let (src, stop) = (r.src.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut writes = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let current = src
                    .get_bucket_policy()
                    .bucket(SRC_BUCKET)
                    .send()
                    .await
                    .ok()
                    .and_then(|o| o.policy().map(str::to_string));
                if let Some(doc) = with_foreign(current.as_deref()) {
                    if src
                        .put_bucket_policy()
                        .bucket(SRC_BUCKET)
                        .policy(doc)
                        .send()
                        .await
                        .is_ok()
                    {
                        writes += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            writes
        })
    };
    let names = apply_ten(&r);
    let (_op, _port) = r.operator("op", &[]);
    for n in &names {
        r.until_phase(n, Phase::Running, Duration::from_secs(120))
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = hammer.await.expect("hammer");
    assert!(writes >= 1, "the foreign writer wrote");
    // Quiet now. A writer outside ferry can drop ferry's statements (S3 has no conditional
    // write): drop one job's, keep the foreign one, and ferry's repair, merging into a fresh
    // read, must keep the foreign statement while it puts its own back.
    let current = r.source_policy().await;
    let mut doc: serde_json::Value = serde_json::from_str(
        &with_foreign(current.as_deref())
            .or(current)
            .expect("policy"),
    )
    .expect("JSON");
    let dropped = statement_id(&installation(), &names[0]);
    doc["Statement"]
        .as_array_mut()
        .expect("statements")
        .retain(|s| !s["Sid"].as_str().unwrap_or_default().starts_with(&dropped));
    r.src
        .put_bucket_policy()
        .bucket(SRC_BUCKET)
        .policy(doc.to_string())
        .send()
        .await
        .expect("their write");
    let policy = r
        .until(
            "every job's statement back",
            Duration::from_secs(60),
            || async {
                let p = r.source_policy().await?;
                missing(&p, &names).is_empty().then_some(p)
            },
        )
        .await;
    assert!(policy.contains(FOREIGN_SID), "{policy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_twenty_concurrent_takers_of_a_lock_exactly_one_gets_it_until_it_is_released() {
    let emu = crate::support::Emulator::start();
    let store = ferry::store::Store::from_config(&emu.sdk_config().await, "ferry");
    store.init().await.expect("init");
    let takers: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let holder = format!("taker-{i}");
                let got = store
                    .try_lock("bucket-policy#1#b", &holder, 30_000)
                    .await
                    .expect("lock");
                (holder, got)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in takers {
        let (holder, got) = t.await.expect("task");
        if got {
            winners.push(holder);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(
        !store
            .try_lock("bucket-policy#1#b", "late", 30_000)
            .await
            .expect("lock")
    );
    store
        .unlock("bucket-policy#1#b", "late")
        .await
        .expect("not the holder: nothing");
    assert!(
        !store
            .try_lock("bucket-policy#1#b", "late", 30_000)
            .await
            .expect("lock")
    );
    store
        .unlock("bucket-policy#1#b", &winners[0])
        .await
        .expect("unlock");
    assert!(
        store
            .try_lock("bucket-policy#1#b", "late", 30_000)
            .await
            .expect("lock")
    );
}
