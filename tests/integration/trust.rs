//! The operator's trust model against moto: jobs written into the table around the CLI,
//! the operator's allow-lists (phase Blocked, no AWS call), owner tags, where ferry's
//! source-policy statements go and come back from, and the task role's permissions boundary.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use ferry::model::{CopyJob, Phase};

use crate::operator::{Rig, job_yaml, rig};
use crate::support::{http_get, run_ferry};

/// A job document as `ferry apply` would store it, edited.
pub fn job_doc(name: &str, edit: impl FnOnce(&mut CopyJob)) -> CopyJob {
    let mut job: CopyJob = serde_yaml_ng::from_str(&job_yaml(
        name,
        &format!("trust-{}", name.to_lowercase()),
        "",
    ))
    .expect("job yaml");
    edit(&mut job);
    job
}

/// Writes a spec item straight into the table, as anyone with `dynamodb:PutItem` can: no
/// validation, any key.
pub async fn put_raw(r: &Rig, pk: &str, job: &CopyJob) {
    let client = aws_sdk_dynamodb::Client::new(&r.base);
    let s = |v: &str| AttributeValue::S(v.to_string());
    client
        .put_item()
        .table_name("ferry")
        .item("pk", s(pk))
        .item("sk", s("SPEC"))
        .item("gsi1pk", s("JOB"))
        .item("gsi1sk", s(&job.metadata.name))
        .item("document", s(&serde_json::to_string(job).expect("json")))
        .item("generation", AttributeValue::N("1".into()))
        .item("version", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("raw PutItem");
}

/// The operator's `ferry_aws_requests_total` for one service, summed over operations.
pub fn aws_requests(port: u16, service: &str) -> u64 {
    let text = http_get(port, "/metrics").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("ferry_aws_requests_total{"))
        .filter(|l| l.contains(&format!("service=\"{service}\"")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_written_around_the_cli_outside_policy_are_blocked_and_cause_no_iam_s3_or_ecs_call() {
    let mut r = rig(false).await;
    r.allow = [
        "--allow-source",
        "111111111111:op-source",
        "--allow-destination-account",
        "222222222222",
        "--allow-role",
        "arn:aws:iam::111111111111:role/ferry-source",
        "--allow-role",
        "arn:aws:iam::222222222222:role/ferry-destination",
        "--allow-image",
        "registry.example/ferry",
    ]
    .map(String::from)
    .to_vec();
    let foreign = job_doc("foreign", |j| {
        j.spec.destination.account = "333333333333".into();
        j.spec.destination.role_arn = "arn:aws:iam::333333333333:role/ferry-destination".into();
    });
    let unlisted = job_doc("unlisted", |j| {
        j.spec.source.bucket = "victim-bucket".into()
    });
    let image = job_doc("image", |j| {
        j.spec.ecs.image = Some("evil.example/miner:latest".into())
    });
    let invalid = job_doc("Bad_Name", |_| {});
    let hash = job_doc("a#b", |_| {});
    let mismatched = job_doc("victim", |_| {});
    for job in [&foreign, &unlisted, &image, &invalid, &hash] {
        put_raw(&r, &format!("JOB#{}", job.metadata.name), job).await;
    }
    // A spec item whose key names another job than its document.
    put_raw(&r, "JOB#impostor", &mismatched).await;

    let (_op, port) = r.operator("op", &[]);
    for (name, rule, field) in [
        (
            "foreign",
            "DestinationNotAllowed",
            "spec.destination.account",
        ),
        ("unlisted", "SourceNotAllowed", "spec.source.bucket"),
        ("image", "ImageNotAllowed", "spec.ecs.image"),
        ("Bad_Name", "Invalid", "metadata.name"),
    ] {
        let st = r
            .until_phase(name, Phase::Blocked, Duration::from_secs(60))
            .await;
        let c = st
            .conditions
            .iter()
            .find(|c| c.kind == "Admitted")
            .expect("Admitted condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", rule),
            "{name}"
        );
        assert!(c.message.contains(field), "{name}: {}", c.message);
    }
    // The foreign job also names a role outside the list: every broken rule is reported.
    let foreign_st = r.status("foreign").await.expect("status");
    assert!(
        foreign_st.conditions[0].message.contains("RoleNotAllowed"),
        "{:?}",
        foreign_st.conditions
    );
    for service in ["iam", "s3", "ecs"] {
        assert_eq!(
            aws_requests(port, service),
            0,
            "{service} calls for blocked jobs"
        );
    }

    // Malformed items are skipped, not reconciled, and do not hide the jobs around them: a
    // job applied now through the CLI is provisioned.
    r.apply("fine", &job_yaml("fine", "trust-fine", ""));
    r.until(
        "copyjob/fine to be provisioned",
        Duration::from_secs(60),
        || async {
            r.status("fine")
                .await
                .filter(|s| s.phase != Phase::Pending && s.phase != Phase::Blocked)
        },
    )
    .await;
    assert!(
        aws_requests(port, "iam") > 0,
        "the admitted job was provisioned"
    );
    for pk in ["a#b", "impostor", "victim"] {
        assert!(r.status(pk).await.is_none(), "{pk} got a status");
    }
    let ops = std::fs::read_to_string(r.dir.path().join("op.log")).expect("log");
    assert!(
        ops.contains("JOB#a#b") && ops.contains("JOB#impostor"),
        "{ops}"
    );

    // Workers refuse them too: an invalid spec, and a job the operator blocked.
    for (job, expect) in [("Bad_Name", "invalid"), ("foreign", "Blocked")] {
        let out = run_ferry(&["worker"], &r.emu.worker_env(job, "g1r1", "s0a1"));
        assert_eq!(out.code, 2, "{job}: {}", out.stderr);
        assert!(out.stderr.contains(expect), "{job}: {}", out.stderr);
    }
}
