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
    let mut job: CopyJob = serde_saphyr::from_str(&job_yaml(
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
    let mut r = rig().await;
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

/// The policy of a source-account bucket.
async fn bucket_policy(r: &Rig, bucket: &str) -> Option<String> {
    r.src
        .get_bucket_policy()
        .bucket(bucket)
        .send()
        .await
        .ok()
        .and_then(|o| o.policy().map(str::to_string))
}

/// Polls until the source bucket's policy holds the statement `sid`.
async fn until_statement(r: &Rig, sid: &str, what: &str) {
    r.until(what, Duration::from_secs(60), || async {
        bucket_policy(r, crate::operator::SRC_BUCKET)
            .await
            .filter(|p| p.contains(sid))
    })
    .await;
}

/// Polls until the job's records are gone.
async fn until_removed(r: &Rig, job: &str) {
    r.until(
        &format!("copyjob/{job} to be removed"),
        Duration::from_secs(60),
        || async { r.store.get_job(job).await.ok().filter(Option::is_none) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_or_task_definition_family_without_ferrys_owner_tag_is_neither_adopted_nor_deleted()
{
    use ferry::controller::desired;
    let mut r = rig().await;
    // Somebody's role with ferry's name for job `squat`, tagged as an older ferry would.
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    r.iam()
        .create_role()
        .role_name(desired::role_name("squat"))
        .assume_role_policy_document(trust)
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("ferry:job")
                .value("squat")
                .build()
                .expect("tag"),
        )
        .send()
        .await
        .expect("their role");
    // Somebody's task definition family with ferry's name for job `squat-td`.
    r.ecs()
        .register_task_definition()
        .family(desired::family("squat-td"))
        .container_definitions(
            aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("app")
                .image("theirs:1")
                .memory(512)
                .build(),
        )
        .send()
        .await
        .expect("their task definition");

    let (_op, _port) = r.operator("op", &[]);
    r.apply("squat", &job_yaml("squat", "trust-squat", ""));
    r.apply("squat-td", &job_yaml("squat-td", "trust-squat-td", ""));
    for (job, condition) in [("squat", "RolesReady"), ("squat-td", "TaskDefinitionReady")] {
        let st = r
            .until_phase(job, Phase::Failed, Duration::from_secs(60))
            .await;
        let c = st
            .conditions
            .iter()
            .find(|c| c.kind == condition)
            .expect("condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NotOwned"),
            "{job}"
        );
        assert!(c.message.contains("ferry:owner"), "{}", c.message);
        assert!(st.run.is_none(), "{job} started a run");
    }
    let role = r
        .iam()
        .get_role()
        .role_name(desired::role_name("squat"))
        .send()
        .await
        .expect("their role is still there");
    let role = role.role().expect("role");
    assert!(role.permissions_boundary().is_none(), "no boundary added");
    assert!(
        role.assume_role_policy_document()
            .is_some_and(|d| d.contains("lambda")),
        "trust policy untouched"
    );
    let revisions = |family: String| {
        let ecs = r.ecs();
        async move {
            ecs.list_task_definitions()
                .family_prefix(family)
                .send()
                .await
                .expect("list")
                .task_definition_arns()
                .len()
        }
    };
    assert_eq!(
        revisions(desired::family("squat-td")).await,
        1,
        "no revision added"
    );

    for job in ["squat", "squat-td"] {
        let out = r.emu.ferry(&["delete", job]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        until_removed(&r, job).await;
    }
    assert!(
        r.iam()
            .get_role()
            .role_name(desired::role_name("squat"))
            .send()
            .await
            .is_ok(),
        "their role is not deleted"
    );
    assert_eq!(
        revisions(desired::family("squat-td")).await,
        1,
        "their revision is not deregistered"
    );
    // squat-td's own role was ferry's, and went.
    assert!(
        r.iam()
            .get_role()
            .role_name(desired::role_name("squat-td"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_job_to_another_bucket_leaves_no_statement_on_the_first_and_deleting_it_none_on_the_second()
 {
    use crate::operator::{SRC_BUCKET, SRC_REGION, installation};
    use crate::worker::create_bucket;
    use ferry::controller::policy::statement_id;
    let mut r = rig().await;
    create_bucket(&r.src, "op-source-b", SRC_REGION).await;
    let keep = r#"{"Version":"2012-10-17","Statement":[{"Sid":"KeepMe","Effect":"Deny","Principal":"*","Action":"s3:DeleteBucket","Resource":"arn:aws:s3:::op-source"}]}"#;
    r.src
        .put_bucket_policy()
        .bucket(SRC_BUCKET)
        .policy(keep)
        .send()
        .await
        .expect("their policy");
    let sid = statement_id(&installation(), "mover");
    let (_op, _port) = r.operator("op", &[]);

    let on_a = job_yaml("mover", "trust-mover", "");
    r.apply("mover", &on_a);
    until_statement(&r, &sid, "ferry's statement on bucket A").await;
    let recorded = r.status("mover").await.expect("status").source_policy;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].bucket.as_str(), recorded[0].sid.as_str()),
        (SRC_BUCKET, sid.as_str())
    );

    r.apply(
        "mover",
        &on_a.replace("bucket: op-source,", "bucket: op-source-b,"),
    );
    r.until(
        "ferry's statement on bucket B only",
        Duration::from_secs(60),
        || async {
            let a = bucket_policy(&r, SRC_BUCKET).await?;
            let b = bucket_policy(&r, "op-source-b").await?;
            let st = r.status("mover").await?;
            (b.contains(&sid) && !a.contains(&sid) && st.source_policy.len() == 1).then_some(a)
        },
    )
    .await;
    assert_eq!(
        bucket_policy(&r, SRC_BUCKET).await.as_deref(),
        Some(keep),
        "theirs, byte for byte"
    );

    let out = r.emu.ferry(&["delete", "mover"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    until_removed(&r, "mover").await;
    assert_eq!(
        bucket_policy(&r, "op-source-b").await,
        None,
        "nothing of ferry's left on B"
    );
    assert_eq!(bucket_policy(&r, SRC_BUCKET).await.as_deref(), Some(keep));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_sharing_a_source_bucket_keep_both_grants() {
    use crate::operator::{OPERATOR_ACCOUNT, SRC_BUCKET, installation};
    use aws_credential_types::provider::ProvideCredentials;
    use ferry::controller::{desired, policy::statement_id};
    let mut r = rig().await;
    // The second installation runs in another operator account, with its own table and cluster.
    const OTHER: &str = "444444444444";
    let other = r.emu.account_config(OTHER).await;
    let creds = other
        .credentials_provider()
        .expect("provider")
        .provide_credentials()
        .await
        .expect("credentials");
    let mut env2 = r.emu.env();
    env2.extend([
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            creds.access_key_id().to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            creds.secret_access_key().to_string(),
        ),
        (
            "AWS_SESSION_TOKEN".to_string(),
            creds.session_token().expect("token").to_string(),
        ),
    ]);
    aws_sdk_ecs::Client::new(&other)
        .create_cluster()
        .cluster_name("ferry")
        .send()
        .await
        .expect("cluster");
    r.emu.local_aws(&["boundary", "--account", OTHER]);
    let init = run_ferry(&["init"], &env2);
    assert_eq!(init.code, 0, "{}", init.stderr);

    let (_op1, _) = r.operator("op1", &[]);
    r.apply("shared", &job_yaml("shared", "trust-shared-1", ""));
    let first = statement_id(&installation(), "shared");
    until_statement(&r, &first, "installation 1's statement").await;

    r.extra_env = env2[env2.len() - 3..].to_vec();
    let (_op2, _) = r.operator("op2", &[]);
    let file = crate::support::write_file(
        r.dir.path(),
        "shared2.yaml",
        &job_yaml("shared", "trust-shared-2", ""),
    );
    let out = run_ferry(&["apply", "-f", file.to_str().expect("path")], &env2);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let second = statement_id(&desired::installation_id(OTHER, "ferry"), "shared");
    assert_ne!(first, second);
    assert_ne!(OTHER, OPERATOR_ACCOUNT);
    r.until(
        "both installations' statements",
        Duration::from_secs(60),
        || async {
            bucket_policy(&r, SRC_BUCKET)
                .await
                .filter(|p| p.contains(&first) && p.contains(&second))
        },
    )
    .await;

    // Deleting installation 2's job removes its statements only.
    let out = run_ferry(&["delete", "shared"], &env2);
    assert_eq!(out.code, 0, "{}", out.stderr);
    r.until(
        "installation 2's statement removed",
        Duration::from_secs(60),
        || async {
            bucket_policy(&r, SRC_BUCKET)
                .await
                .filter(|p| p.contains(&first) && !p.contains(&second))
        },
    )
    .await;
    assert!(
        r.status("shared").await.is_some(),
        "installation 1's job is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_statement_that_cannot_be_removed_holds_the_deletion_with_a_condition_until_it_can()
 {
    use crate::operator::{SRC_BUCKET, installation};
    use ferry::controller::policy::statement_id;
    let mut r = rig().await;
    let (_op, _port) = r.operator("op", &[]);
    r.apply("held", &job_yaml("held", "trust-held", ""));
    let sid = statement_id(&installation(), "held");
    until_statement(&r, &sid, "ferry's statement").await;
    // The source account stops letting ferry's source role read the bucket policy.
    let source_role = "arn:aws:iam::111111111111:role/ferry-source";
    r.emu.strict_deny(&[(source_role, "s3:GetBucketPolicy")]);
    let out = r.emu.ferry(&["delete", "held"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let st = r
        .until(
            "the deletion held with a condition",
            Duration::from_secs(60),
            || async {
                let st = r.status("held").await?;
                let held = st.phase == Phase::Deleting
                    && st.conditions.iter().any(|c| {
                        c.kind == "Finalized" && c.status == "False" && c.reason == "AccessDenied"
                    });
                held.then_some(st)
            },
        )
        .await;
    assert_eq!(st.source_policy.len(), 1, "the grant stays recorded");
    assert!(
        bucket_policy(&r, SRC_BUCKET)
            .await
            .is_some_and(|p| p.contains(&sid))
    );
    // Allowed again: the deletion goes on and takes the statement with it.
    r.emu.strict_deny(&[]);
    until_removed(&r, "held").await;
    assert_eq!(bucket_policy(&r, SRC_BUCKET).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_boundary_that_does_not_exist_keeps_the_job_from_getting_a_role_and_says_so() {
    let mut r = rig().await;
    let missing = "arn:aws:iam::123456789012:policy/not-deployed";
    let (_op, _port) = r.operator("op", &["--task-boundary-arn", missing]);
    r.apply("unbounded", &job_yaml("unbounded", "trust-unbounded", ""));
    let st = r
        .until(
            "RolesReady to name the missing boundary",
            Duration::from_secs(60),
            || async {
                let st = r.status("unbounded").await?;
                st.conditions
                    .iter()
                    .any(|c| {
                        c.kind == "RolesReady" && c.status == "False" && c.reason == "NoSuchEntity"
                    })
                    .then_some(st)
            },
        )
        .await;
    assert!(
        st.run.is_none()
            || st
                .run
                .as_ref()
                .is_some_and(|run| run.tasks.iter().all(|t| t.arn.is_none()))
    );
    assert!(
        r.iam()
            .get_role()
            .role_name(ferry::controller::desired::role_name("unbounded"))
            .send()
            .await
            .is_err(),
        "no role without its boundary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_changed_to_name_an_unlisted_bucket_is_blocked_and_its_tasks_stopped() {
    let mut r = rig().await;
    r.allow = [
        "--allow-source",
        "111111111111:op-source",
        "--allow-destination-account",
        "222222222222",
        "--allow-role",
        "arn:aws:iam::*:role/ferry-*",
    ]
    .map(String::from)
    .to_vec();
    r.create_cluster().await;
    let (_op, _port) = r.operator("op", &[]);
    let yaml = job_yaml("turned", "trust-turned", "");
    r.apply("turned", &yaml);
    // No agent: the task stays RUNNING in the emulated cluster.
    let st = r
        .until_phase("turned", Phase::Running, Duration::from_secs(60))
        .await;
    let task = st
        .run
        .as_ref()
        .and_then(|run| run.tasks[0].arn.clone())
        .expect("task");
    r.apply(
        "turned",
        &yaml.replace("bucket: op-source,", "bucket: someone-elses,"),
    );
    let st = r
        .until_phase("turned", Phase::Blocked, Duration::from_secs(60))
        .await;
    assert_eq!(st.observed_generation, 2);
    r.until("the task stopped", Duration::from_secs(60), || async {
        let out = r
            .ecs()
            .describe_tasks()
            .cluster("ferry")
            .tasks(&task)
            .send()
            .await
            .ok()?;
        (out.tasks().first()?.last_status()? == "STOPPED").then_some(())
    })
    .await;
}
