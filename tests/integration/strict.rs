//! The strict AWS layer (scripts/strict_aws/) refuses what AWS refuses and moto accepts. Each
//! test sends real SDK requests through it, then switches the rule off to show that moto alone
//! would have let the request through.

use aws_sdk_ecs::types::{
    AwsVpcConfiguration, ContainerDefinition, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, Tag, TaskOverride,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectCannedAcl, ServerSideEncryption};

use crate::support::{Emulator, s3};
use crate::worker::{allow_acls, create_bucket};
use std::time::Duration;

async fn put(client: &aws_sdk_s3::Client, b: &str, key: &str, body: &[u8]) {
    client
        .put_object()
        .bucket(b)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

fn md5_etag(data: &[u8]) -> String {
    use md5::Digest;
    let digest = md5::Md5::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

#[tokio::test]
async fn s3_refuses_object_keys_over_1024_bytes_as_key_too_long() {
    let emu = Emulator::start();
    let c = s3(&emu.sdk_config().await, "us-east-1");
    create_bucket(&c, "strict-keys", "us-east-1").await;
    let longest = "k".repeat(1024);
    put(&c, "strict-keys", &longest, b"x").await;
    let too_long = format!("{}ü", "k".repeat(1023)); // 1,025 bytes of UTF-8
    let err = c
        .put_object()
        .bucket("strict-keys")
        .key(&too_long)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("a 1,025-byte key is refused");
    assert_eq!(err.code(), Some("KeyTooLongError"));
    let err = c
        .copy_object()
        .bucket("strict-keys")
        .key(&too_long)
        .copy_source(format!("strict-keys/{longest}"))
        .send()
        .await
        .expect_err("a copy to a 1,025-byte key is refused");
    assert_eq!(err.code(), Some("KeyTooLongError"));
    assert_eq!(emu.strict_rejections("s3-key-too-long"), 2);

    emu.strict_off(&["s3-key-too-long"]);
    put(&c, "strict-keys", &too_long, b"x").await; // moto alone stores it
}

#[tokio::test]
async fn s3_copies_with_a_wrong_copy_source_if_match_fail_with_412() {
    let emu = Emulator::start();
    let c = s3(&emu.sdk_config().await, "us-east-1");
    create_bucket(&c, "strict-ifmatch", "us-east-1").await;
    put(&c, "strict-ifmatch", "a", b"first").await;
    let etag = c
        .head_object()
        .bucket("strict-ifmatch")
        .key("a")
        .send()
        .await
        .expect("head")
        .e_tag()
        .expect("etag")
        .to_string();
    c.copy_object()
        .bucket("strict-ifmatch")
        .key("b")
        .copy_source("strict-ifmatch/a")
        .copy_source_if_match(&etag)
        .send()
        .await
        .expect("the matching ETag copies");
    put(&c, "strict-ifmatch", "a", b"rewritten").await;
    let err = c
        .copy_object()
        .bucket("strict-ifmatch")
        .key("b")
        .copy_source("strict-ifmatch/a")
        .copy_source_if_match(&etag)
        .send()
        .await
        .expect_err("the old ETag no longer matches");
    assert_eq!(err.code(), Some("PreconditionFailed"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(412));

    emu.strict_off(&["s3-copy-source-if-match"]);
    c.copy_object()
        .bucket("strict-ifmatch")
        .key("b")
        .copy_source("strict-ifmatch/a")
        .copy_source_if_match(&etag)
        .send()
        .await
        .expect("moto alone ignores the condition");
}

#[tokio::test]
async fn s3_refuses_requests_whose_expected_bucket_owner_is_another_account() {
    let emu = Emulator::start();
    let owner = s3(&emu.account_config("111111111111").await, "us-east-1");
    let other = s3(&emu.account_config("222222222222").await, "us-east-1");
    create_bucket(&owner, "strict-owned", "us-east-1").await;
    put(&owner, "strict-owned", "a", b"data").await;
    create_bucket(&other, "strict-theirs", "us-east-1").await;
    owner
        .head_object()
        .bucket("strict-owned")
        .key("a")
        .expected_bucket_owner("111111111111")
        .send()
        .await
        .expect("the right owner is accepted");
    let err = owner
        .head_object()
        .bucket("strict-owned")
        .key("a")
        .expected_bucket_owner("222222222222")
        .send()
        .await
        .expect_err("the wrong owner is refused");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(403));
    let err = other
        .copy_object()
        .bucket("strict-theirs")
        .key("a")
        .copy_source("strict-owned/a")
        .expected_bucket_owner("222222222222")
        .expected_source_bucket_owner("333333333333")
        .send()
        .await
        .expect_err("a copy source owned by another account is refused");
    assert_eq!(err.code(), Some("AccessDenied"));
    assert_eq!(emu.strict_rejections("s3-expected-bucket-owner"), 2);

    emu.strict_off(&["s3-expected-bucket-owner"]);
    owner
        .head_object()
        .bucket("strict-owned")
        .key("a")
        .expected_bucket_owner("222222222222")
        .send()
        .await
        .expect("moto alone ignores the expected owner");
}

#[tokio::test]
async fn s3_refuses_acls_on_buckets_whose_ownership_is_bucket_owner_enforced() {
    let emu = Emulator::start();
    let c = s3(&emu.sdk_config().await, "us-east-1");
    create_bucket(&c, "strict-enforced", "us-east-1").await; // the AWS default since April 2023
    create_bucket(&c, "strict-writer", "us-east-1").await;
    allow_acls(&c, "strict-writer").await;
    for b in ["strict-enforced", "strict-writer"] {
        put(&c, b, "a", b"x").await;
    }
    let err = c
        .put_object()
        .bucket("strict-enforced")
        .key("b")
        .acl(ObjectCannedAcl::PublicRead)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("an ACL header on an enforced bucket");
    assert_eq!(err.code(), Some("AccessControlListNotSupported"));
    let err = c
        .put_object_acl()
        .bucket("strict-enforced")
        .key("a")
        .grant_read("id=abc")
        .send()
        .await
        .expect_err("PutObjectAcl on an enforced bucket");
    assert_eq!(err.code(), Some("AccessControlListNotSupported"));
    c.put_object()
        .bucket("strict-enforced")
        .key("c")
        .acl(ObjectCannedAcl::BucketOwnerFullControl)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("bucket-owner-full-control is allowed everywhere");
    c.get_object_acl()
        .bucket("strict-enforced")
        .key("a")
        .send()
        .await
        .expect("reading ACLs is allowed");
    c.put_object()
        .bucket("strict-writer")
        .key("b")
        .acl(ObjectCannedAcl::PublicRead)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("ObjectWriter buckets take ACLs");

    emu.strict_off(&["s3-acl-bucket-owner-enforced"]);
    c.put_object_acl()
        .bucket("strict-enforced")
        .key("a")
        .grant_read("id=abc")
        .send()
        .await
        .expect("moto alone ignores Object Ownership");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_refuses_bucket_policies_that_are_not_policy_documents_as_malformed() {
    let emu = Emulator::start();
    let c = s3(&emu.sdk_config().await, "us-east-1");
    create_bucket(&c, "strict-malformed", "us-east-1").await;
    for bad in [
        "not json",
        r#"["Statement"]"#,
        r#"{"Version":"2012-10-17","Statement":"text"}"#,
        r#"{"Version":"2012-10-17","Statement":[]}"#,
        r#"{"Version":"2012-10-17","Statement":["text"]}"#,
    ] {
        let err = c
            .put_bucket_policy()
            .bucket("strict-malformed")
            .policy(bad)
            .send()
            .await
            .expect_err(bad);
        assert_eq!(err.code(), Some("MalformedPolicy"), "{bad}");
    }
    let one = r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Principal":"*","Action":"s3:DeleteBucket","Resource":"arn:aws:s3:::strict-malformed"}}"#;
    c.put_bucket_policy()
        .bucket("strict-malformed")
        .policy(one)
        .send()
        .await
        .expect("a single statement as an object is a policy");
    assert_eq!(emu.strict_rejections("s3-malformed-policy"), 5);
}

#[tokio::test]
async fn s3_refuses_bucket_policies_over_20_kib() {
    let emu = Emulator::start();
    let c = s3(&emu.sdk_config().await, "us-east-1");
    create_bucket(&c, "strict-policy", "us-east-1").await;
    let policy = |n: usize| {
        let statements: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({
                    "Sid": format!("S{i}"), "Effect": "Allow",
                    "Principal": {"AWS": "arn:aws:iam::222222222222:role/reader"},
                    "Action": "s3:GetObject",
                    "Resource": format!("arn:aws:s3:::strict-policy/{i:0>60}/*"),
                })
            })
            .collect();
        serde_json::json!({"Version": "2012-10-17", "Statement": statements}).to_string()
    };
    let small = policy(60);
    let large = policy(150);
    assert!(small.len() < 20_480 && large.len() > 20_480);
    c.put_bucket_policy()
        .bucket("strict-policy")
        .policy(&small)
        .send()
        .await
        .expect("under 20 KiB");
    let err = c
        .put_bucket_policy()
        .bucket("strict-policy")
        .policy(&large)
        .send()
        .await
        .expect_err("over 20 KiB");
    assert_eq!(err.code(), Some("PolicyTooLarge"));

    emu.strict_off(&["s3-bucket-policy-size"]);
    c.put_bucket_policy()
        .bucket("strict-policy")
        .policy(&large)
        .send()
        .await
        .expect("moto alone stores it");
}

#[tokio::test]
async fn s3_answers_requests_signed_for_another_region_with_a_301_naming_the_bucket_region() {
    let emu = Emulator::start();
    let config = emu.sdk_config().await;
    let home = s3(&config, "eu-west-1");
    let away = s3(&config, "us-east-1");
    create_bucket(&home, "strict-region", "eu-west-1").await;
    let err = away
        .head_bucket()
        .bucket("strict-region")
        .send()
        .await
        .expect_err("HeadBucket from the wrong region");
    let raw = err.raw_response().expect("a response");
    assert_eq!(raw.status().as_u16(), 301);
    assert_eq!(raw.headers().get("x-amz-bucket-region"), Some("eu-west-1"));
    let err = away
        .list_objects_v2()
        .bucket("strict-region")
        .send()
        .await
        .expect_err("a listing from the wrong region");
    assert_eq!(err.code(), Some("PermanentRedirect"));
    let loc = away
        .get_bucket_location()
        .bucket("strict-region")
        .send()
        .await
        .expect("GetBucketLocation answers from any region");
    assert_eq!(
        loc.location_constraint().map(|l| l.as_str()),
        Some("eu-west-1")
    );
    home.head_bucket()
        .bucket("strict-region")
        .send()
        .await
        .expect("the bucket's own region");

    emu.strict_off(&["s3-region-redirect"]);
    away.head_bucket()
        .bucket("strict-region")
        .send()
        .await
        .expect("moto alone answers from any region");
}

#[tokio::test]
async fn s3_objects_stored_with_sse_kms_have_etags_that_are_not_the_md5_of_their_data() {
    let emu = Emulator::start();
    let c = s3(&emu.sdk_config().await, "us-east-1");
    create_bucket(&c, "strict-kms", "us-east-1").await;
    let data = b"the same bytes";
    put(&c, "strict-kms", "plain", data).await;
    c.put_object()
        .bucket("strict-kms")
        .key("kms")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .body(ByteStream::from_static(data))
        .send()
        .await
        .expect("put with SSE-KMS");
    let head = |k: &'static str| {
        let c = c.clone();
        async move {
            c.head_object()
                .bucket("strict-kms")
                .key(k)
                .send()
                .await
                .expect("head")
                .e_tag()
                .expect("etag")
                .to_string()
        }
    };
    assert_eq!(head("plain").await, md5_etag(data));
    let kms = head("kms").await;
    assert_ne!(kms, md5_etag(data));
    let listed = c
        .list_objects_v2()
        .bucket("strict-kms")
        .send()
        .await
        .expect("list");
    let listed_kms = listed
        .contents()
        .iter()
        .find(|o| o.key() == Some("kms"))
        .and_then(|o| o.e_tag())
        .expect("listed");
    assert_eq!(listed_kms, kms, "List and Head agree");
    let copied = c
        .copy_object()
        .bucket("strict-kms")
        .key("kms-copy")
        .copy_source("strict-kms/kms")
        .server_side_encryption(ServerSideEncryption::AwsKms)
        .send()
        .await
        .expect("copy");
    let copy_etag = copied
        .copy_object_result()
        .and_then(|r| r.e_tag())
        .expect("copy etag")
        .to_string();
    assert_ne!(copy_etag, kms, "a copy of the same bytes gets another ETag");
    assert_eq!(head("kms-copy").await, copy_etag);

    emu.strict_off(&["s3-kms-etag"]);
    assert_eq!(head("kms").await, md5_etag(data), "moto alone uses the MD5");
}

/// A cluster, a task definition moto can run, and the default VPC's network.
async fn ecs_setup(emu: &Emulator) -> (aws_sdk_ecs::Client, NetworkConfiguration) {
    emu.local_aws(&["ecs-manual"]);
    let net: serde_json::Value =
        serde_json::from_str(&emu.local_aws(&["network"])).expect("network JSON");
    let ecs = aws_sdk_ecs::Client::new(&emu.sdk_config().await);
    ecs.create_cluster()
        .cluster_name("strict")
        .send()
        .await
        .expect("cluster");
    ecs.register_task_definition()
        .family("strict")
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("worker")
                .image("ferry:test")
                .memory(512)
                .build(),
        )
        .send()
        .await
        .expect("task definition");
    let network = NetworkConfiguration::builder()
        .awsvpc_configuration(
            AwsVpcConfiguration::builder()
                .subnets(net["subnet"].as_str().expect("subnet"))
                .security_groups(net["securityGroup"].as_str().expect("group"))
                .build()
                .expect("vpc"),
        )
        .build();
    (ecs, network)
}

#[tokio::test]
async fn ecs_refuses_started_by_over_36_characters_or_outside_its_character_set() {
    let emu = Emulator::start();
    let (ecs, network) = ecs_setup(&emu).await;
    for bad in ["x".repeat(37), "ferry.job".to_string()] {
        let err = ecs
            .list_tasks()
            .cluster("strict")
            .started_by(&bad)
            .send()
            .await
            .expect_err("ListTasks with a bad startedBy");
        assert_eq!(err.code(), Some("InvalidParameterException"), "{bad}");
        let err = ecs
            .run_task()
            .cluster("strict")
            .task_definition("strict")
            .launch_type(LaunchType::Fargate)
            .network_configuration(network.clone())
            .started_by(&bad)
            .send()
            .await
            .expect_err("RunTask with a bad startedBy");
        assert_eq!(err.code(), Some("InvalidParameterException"), "{bad}");
    }
    ecs.list_tasks()
        .cluster("strict")
        .started_by(format!("ferry-{}", "0".repeat(30)))
        .send()
        .await
        .expect("36 characters are allowed");
    assert_eq!(emu.strict_rejections("ecs-started-by"), 4);

    emu.strict_off(&["ecs-started-by"]);
    ecs.list_tasks()
        .cluster("strict")
        .started_by("x".repeat(37))
        .send()
        .await
        .expect("moto alone accepts any startedBy");
}

/// AWS: "Currently, stopped tasks appear in the returned results for at least one hour"
/// (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeTasks.html); then ECS
/// forgets them. moto keeps every task forever.
#[tokio::test]
async fn ecs_forgets_a_stopped_task_once_its_retention_ends_and_keeps_running_ones() {
    let emu = Emulator::start();
    let (ecs, network) = ecs_setup(&emu).await;
    let run = || async {
        let out = ecs
            .run_task()
            .cluster("strict")
            .task_definition("strict")
            .launch_type(LaunchType::Fargate)
            .network_configuration(network.clone())
            .send()
            .await
            .expect("RunTask");
        out.tasks()[0].task_arn().expect("arn").to_string()
    };
    let known = |arn: String| {
        let ecs = ecs.clone();
        async move {
            let out = ecs
                .describe_tasks()
                .cluster("strict")
                .tasks(&arn)
                .send()
                .await
                .expect("DescribeTasks");
            let missing = out
                .failures()
                .iter()
                .any(|f| f.arn() == Some(arn.as_str()) && f.reason() == Some("MISSING"));
            let listed = ecs
                .list_tasks()
                .cluster("strict")
                .desired_status(aws_sdk_ecs::types::DesiredStatus::Stopped)
                .send()
                .await
                .expect("ListTasks")
                .task_arns()
                .contains(&arn);
            (out.tasks().len() == 1, missing, listed)
        }
    };
    let stay = run().await;
    let stopped = run().await;
    ecs.stop_task()
        .cluster("strict")
        .task(&stopped)
        .send()
        .await
        .expect("StopTask");
    assert_eq!(
        known(stopped.clone()).await,
        (true, false, true),
        "within the hour it is known"
    );
    emu.strict_ecs_faults(serde_json::json!({"stoppedTaskRetentionSeconds": 1}));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = known(stopped.clone()).await;
        if seen == (false, true, false) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stopped task is still known: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (described, missing, _) = known(stay.clone()).await;
    assert!(described && !missing, "a running task is never forgotten");

    emu.strict_off(&["ecs-stopped-task-retention"]);
    let kept = run().await;
    ecs.stop_task()
        .cluster("strict")
        .task(&kept)
        .send()
        .await
        .expect("StopTask");
    let until = std::time::Instant::now() + Duration::from_millis(2500);
    while std::time::Instant::now() < until {
        assert_eq!(
            known(kept.clone()).await,
            (true, false, true),
            "moto alone keeps it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn ecs_run_task_is_idempotent_per_client_token_and_refuses_reuse_with_other_parameters() {
    let emu = Emulator::start();
    let (ecs, network) = ecs_setup(&emu).await;
    let run = |token: &str, started_by: &str| {
        ecs.run_task()
            .cluster("strict")
            .task_definition("strict")
            .launch_type(LaunchType::Fargate)
            .network_configuration(network.clone())
            .client_token(token)
            .started_by(started_by)
            .send()
    };
    let arn = |out: aws_sdk_ecs::operation::run_task::RunTaskOutput| {
        out.tasks()[0].task_arn().expect("arn").to_string()
    };
    let first = arn(run("token-1", "a").await.expect("first RunTask"));
    let again = arn(run("token-1", "a").await.expect("the same call again"));
    assert_eq!(first, again, "a retried RunTask starts no second task");
    let err = run("token-1", "b")
        .await
        .expect_err("the same token with other parameters");
    assert_eq!(err.code(), Some("ConflictException"));
    let err = run(&"t".repeat(65), "a")
        .await
        .expect_err("a token over 64 characters");
    assert_eq!(err.code(), Some("InvalidParameterException"));
    let listed = ecs
        .list_tasks()
        .cluster("strict")
        .send()
        .await
        .expect("list");
    assert_eq!(listed.task_arns().len(), 1);

    emu.strict_off(&["ecs-client-token"]);
    run("token-1", "b")
        .await
        .expect("moto alone ignores the token");
}

#[tokio::test]
async fn ecs_refuses_more_than_10_tasks_per_call_overrides_over_8192_characters_and_bad_tags() {
    let emu = Emulator::start();
    let (ecs, network) = ecs_setup(&emu).await;
    let base = || {
        ecs.run_task()
            .cluster("strict")
            .task_definition("strict")
            .launch_type(LaunchType::Fargate)
            .network_configuration(network.clone())
    };
    let err = base()
        .count(11)
        .send()
        .await
        .expect_err("11 tasks in one call");
    assert_eq!(err.code(), Some("InvalidParameterException"));
    let big = TaskOverride::builder()
        .container_overrides(
            ContainerOverride::builder()
                .name("worker")
                .environment(
                    KeyValuePair::builder()
                        .name("BIG")
                        .value("v".repeat(8200))
                        .build(),
                )
                .build(),
        )
        .build();
    let err = base()
        .overrides(big)
        .send()
        .await
        .expect_err("overrides over 8,192 characters");
    assert_eq!(err.code(), Some("InvalidParameterException"));
    let err = base()
        .tags(Tag::builder().key("k").value("v".repeat(257)).build())
        .send()
        .await
        .expect_err("a tag value over 256 characters");
    assert_eq!(err.code(), Some("InvalidParameterException"));
    base()
        .count(10)
        .tags(
            Tag::builder()
                .key("ferry:job")
                .value("x".repeat(63))
                .build(),
        )
        .send()
        .await
        .expect("10 tasks with a 63-character tag value");

    emu.strict_off(&["ecs-run-task-count"]);
    base().count(11).send().await.expect("moto alone starts 11");
}

#[tokio::test]
async fn ecs_tasks_get_their_task_definitions_tags_when_run_task_propagates_them() {
    let emu = Emulator::start();
    let (ecs, network) = ecs_setup(&emu).await;
    ecs.tag_resource()
        .resource_arn(
            ecs.describe_task_definition()
                .task_definition("strict")
                .send()
                .await
                .expect("describe")
                .task_definition()
                .and_then(|t| t.task_definition_arn())
                .expect("arn"),
        )
        .tags(Tag::builder().key("ferry:job").value("j").build())
        .send()
        .await
        .expect("tag the task definition");
    let run = || async {
        let out = ecs
            .run_task()
            .cluster("strict")
            .task_definition("strict")
            .launch_type(LaunchType::Fargate)
            .network_configuration(network.clone())
            .propagate_tags(aws_sdk_ecs::types::PropagateTags::TaskDefinition)
            .tags(Tag::builder().key("ferry:run").value("r").build())
            .send()
            .await
            .expect("run task");
        let arn = out.tasks()[0].task_arn().expect("arn").to_string();
        let described = ecs
            .describe_tasks()
            .cluster("strict")
            .tasks(arn)
            .include(aws_sdk_ecs::types::TaskField::Tags)
            .send()
            .await
            .expect("describe tasks");
        let mut keys: Vec<String> = described.tasks()[0]
            .tags()
            .iter()
            .filter_map(|t| t.key().map(str::to_string))
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(
        run().await,
        ["ferry:job", "ferry:run"],
        "propagated and own tags"
    );
    emu.strict_off(&["ecs-propagate-tags"]);
    assert_eq!(
        run().await,
        ["ferry:run"],
        "moto alone ignores propagateTags"
    );
}

/// Creates `name` in `account` with one inline policy.
pub async fn role_with_policy(emu: &Emulator, account: &str, name: &str, policy: &str) {
    let iam = aws_sdk_iam::Client::new(&emu.account_config(account).await);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
    iam.create_role()
        .role_name(name)
        .assume_role_policy_document(trust)
        .send()
        .await
        .expect("create role");
    iam.put_role_policy()
        .role_name(name)
        .policy_name("permissions")
        .policy_document(policy)
        .send()
        .await
        .expect("put role policy");
}

#[tokio::test]
async fn s3_requests_of_a_role_need_its_policy_and_across_accounts_the_bucket_policy_too() {
    let emu = Emulator::start();
    let own = s3(&emu.account_config("222222222222").await, "us-east-1");
    let other = s3(&emu.account_config("111111111111").await, "us-east-1");
    create_bucket(&own, "strict-perm", "us-east-1").await;
    create_bucket(&other, "strict-foreign", "us-east-1").await;
    for k in ["allowed/a", "denied/b"] {
        put(&own, "strict-perm", k, b"x").await;
    }
    put(&other, "strict-foreign", "x", b"x").await;
    role_with_policy(
        &emu,
        "222222222222",
        "reader",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject",
            "Resource":["arn:aws:s3:::strict-perm/allowed/*","arn:aws:s3:::strict-foreign/*"]}]}"#,
    )
    .await;
    let reader = s3(
        &emu.role_config("arn:aws:iam::222222222222:role/reader")
            .await,
        "us-east-1",
    );
    let get = |b: &'static str, k: &'static str| {
        let reader = reader.clone();
        async move { reader.get_object().bucket(b).key(k).send().await }
    };
    get("strict-perm", "allowed/a")
        .await
        .expect("allowed by the role's policy");
    let err = get("strict-perm", "denied/b")
        .await
        .expect_err("outside the role's policy");
    assert_eq!(err.code(), Some("AccessDenied"));
    let err = get("strict-foreign", "x")
        .await
        .expect_err("another account's bucket without a grant");
    assert_eq!(err.code(), Some("AccessDenied"));
    other
        .put_bucket_policy()
        .bucket("strict-foreign")
        .policy(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
            "Principal":{"AWS":"arn:aws:iam::222222222222:role/reader"},
            "Action":"s3:GetObject","Resource":"arn:aws:s3:::strict-foreign/*"}]}"#,
        )
        .send()
        .await
        .expect("grant the reader");
    get("strict-foreign", "x")
        .await
        .expect("both the role's and the bucket's policy allow it");
    assert_eq!(emu.strict_rejections("iam-s3-permissions"), 2);

    emu.strict_off(&["iam-s3-permissions"]);
    get("strict-perm", "denied/b")
        .await
        .expect("moto alone evaluates no policy");
}

/// Creates `bucket` in account 222222222222 (us-east-1) holding `keys`, one byte each.
async fn bucket_of_222_with(emu: &Emulator, bucket: &str, keys: &[&str]) {
    let own = s3(&emu.account_config("222222222222").await, "us-east-1");
    create_bucket(&own, bucket, "us-east-1").await;
    for k in keys {
        put(&own, bucket, k, b"x").await;
    }
}

#[tokio::test]
async fn s3_requests_of_a_session_are_limited_to_its_session_policy() {
    let emu = Emulator::start();
    bucket_of_222_with(&emu, "strict-session", &["mine/a", "theirs/b"]).await;
    role_with_policy(
        &emu,
        "222222222222",
        "shared-reader",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::strict-session/*"}]}"#,
    )
    .await;
    let role = "arn:aws:iam::222222222222:role/shared-reader";
    let narrowed = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::strict-session/mine/*"}]}"#;
    let c = s3(&emu.session_config(role, Some(narrowed)).await, "us-east-1");
    let get = |k: &'static str| {
        let c = c.clone();
        async move { c.get_object().bucket("strict-session").key(k).send().await }
    };
    get("mine/a").await.expect("within role and session policy");
    let err = get("theirs/b")
        .await
        .expect_err("outside the session policy");
    assert_eq!(err.code(), Some("AccessDenied"));
    // The session policy cannot widen the role: PutObject is in it, not in the role's policy.
    let err = c
        .put_object()
        .bucket("strict-session")
        .key("mine/new")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("outside the role's policy");
    assert_eq!(err.code(), Some("AccessDenied"));
    emu.strict_off(&["iam-s3-permissions"]);
    get("theirs/b")
        .await
        .expect("moto alone ignores session policies");
}

/// Asserts that `c` may GET `allowed` from the bucket `strict-again` and is refused `refused`.
async fn allows_only(c: &aws_sdk_s3::Client, allowed: &str, refused: &str) {
    let get = |k: &str| c.get_object().bucket("strict-again").key(k).send();
    if let Err(e) = get(allowed).await {
        panic!("{allowed} is allowed by the role's policy: {e:?}");
    }
    let err = get(refused).await.expect_err("outside the role's policy");
    assert_eq!(err.code(), Some("AccessDenied"), "{refused}");
}

/// The layer finds roles and sessions through indexes (scripts/strict_aws/lookups.py) instead of
/// moto's scans of every role and session. A role deleted and created again under the same name
/// is a new role: GetRole must answer with it, a session of it must be judged by its policy, and a
/// session issued after the index was built must be found at all (an unknown key would pass as the
/// emulator's root, which no policy limits).
#[tokio::test]
async fn s3_requests_of_a_role_created_again_are_judged_by_its_new_policy() {
    let emu = Emulator::start();
    bucket_of_222_with(&emu, "strict-again", &["first/a", "second/b"]).await;
    let allow = |prefix: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::strict-again/{prefix}/*"}}]}}"#
        )
    };
    let role = "arn:aws:iam::222222222222:role/again";
    role_with_policy(&emu, "222222222222", "again", &allow("first")).await;
    let before = s3(&emu.role_config(role).await, "us-east-1");
    allows_only(&before, "first/a", "second/b").await;

    let iam = aws_sdk_iam::Client::new(&emu.account_config("222222222222").await);
    let role_id = |iam: aws_sdk_iam::Client| async move {
        let got = iam
            .get_role()
            .role_name("again")
            .send()
            .await
            .expect("get role");
        got.role().expect("role").role_id().to_string()
    };
    let first_id = role_id(iam.clone()).await;
    iam.delete_role_policy()
        .role_name("again")
        .policy_name("permissions")
        .send()
        .await
        .expect("delete the inline policy");
    iam.delete_role()
        .role_name("again")
        .send()
        .await
        .expect("delete the role");
    role_with_policy(&emu, "222222222222", "again", &allow("second")).await;
    assert_ne!(
        role_id(iam.clone()).await,
        first_id,
        "GetRole answers with the new role, not the deleted one"
    );
    let after = s3(&emu.role_config(role).await, "us-east-1");
    allows_only(&after, "second/b", "first/a").await;
    assert_eq!(emu.strict_rejections("iam-s3-permissions"), 2);
}

#[tokio::test]
async fn sts_refuses_session_policies_over_2048_characters() {
    let emu = Emulator::start();
    let sts = aws_sdk_sts::Client::new(&emu.sdk_config().await);
    let policy = |n: usize| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/{}"}}]}}"#,
            "p".repeat(n)
        )
    };
    let assume = |p: String| {
        let sts = sts.clone();
        async move {
            sts.assume_role()
                .role_arn("arn:aws:iam::222222222222:role/test-admin")
                .role_session_name("s")
                .policy(p)
                .send()
                .await
        }
    };
    let fits = policy(2048 - policy(0).len());
    assert_eq!(fits.len(), 2048);
    assume(fits).await.expect("2,048 characters");
    let err = assume(policy(2049 - policy(0).len()))
        .await
        .expect_err("2,049 characters");
    assert_eq!(err.code(), Some("ValidationError"));
    assert_eq!(emu.strict_rejections("sts-session-policy-length"), 1);
}

#[tokio::test]
async fn iam_refuses_a_permissions_boundary_that_is_not_an_existing_managed_policy() {
    let emu = Emulator::start();
    let iam = aws_sdk_iam::Client::new(&emu.sdk_config().await);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let create = |name: &'static str, boundary: &'static str| {
        let iam = iam.clone();
        async move {
            iam.create_role()
                .role_name(name)
                .assume_role_policy_document(trust)
                .permissions_boundary(boundary)
                .send()
                .await
        }
    };
    let missing = "arn:aws:iam::123456789012:policy/ferry-task-boundary";
    let err = create("bounded", missing)
        .await
        .expect_err("no such policy");
    assert_eq!(err.code(), Some("NoSuchEntity"));
    emu.local_aws(&["boundary"]);
    create("bounded", missing)
        .await
        .expect("the boundary exists now");
    let err = iam
        .put_role_permissions_boundary()
        .role_name("bounded")
        .permissions_boundary("arn:aws:iam::123456789012:policy/other")
        .send()
        .await
        .expect_err("no such policy");
    assert_eq!(err.code(), Some("NoSuchEntity"));
    assert_eq!(emu.strict_rejections("iam-permissions-boundary-exists"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_conditional_writes_are_atomic_under_racing_writers() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, AttributeValue, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let emu = Emulator::start();
    let ddb = aws_sdk_dynamodb::Client::new(&emu.sdk_config().await);
    ddb.create_table()
        .table_name("race")
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("table");
    let key = || AttributeValue::S("item".into());
    ddb.put_item()
        .table_name("race")
        .item("pk", key())
        .item("version", AttributeValue::N("0".into()))
        .send()
        .await
        .expect("item");
    // 32 optimistic-lock writers, 10 attempts each: read the version, write version + 1 only if
    // it is still the one read.
    let writers: Vec<_> = (0..32)
        .map(|_| {
            let ddb = ddb.clone();
            tokio::spawn(async move {
                let mut won = 0u64;
                for _ in 0..10 {
                    let read = ddb
                        .get_item()
                        .table_name("race")
                        .key("pk", AttributeValue::S("item".into()))
                        .consistent_read(true)
                        .send()
                        .await
                        .expect("read");
                    let v: u64 = read
                        .item()
                        .and_then(|i| i["version"].as_n().ok())
                        .expect("v")
                        .parse()
                        .expect("n");
                    let write = ddb
                        .update_item()
                        .table_name("race")
                        .key("pk", AttributeValue::S("item".into()))
                        .update_expression("SET version = :next")
                        .condition_expression("version = :seen")
                        .expression_attribute_values(":seen", AttributeValue::N(v.to_string()))
                        .expression_attribute_values(
                            ":next",
                            AttributeValue::N((v + 1).to_string()),
                        )
                        .send()
                        .await;
                    won += u64::from(write.is_ok());
                }
                won
            })
        })
        .collect();
    let mut successes = 0;
    for w in writers {
        successes += w.await.expect("writer");
    }
    let last = ddb
        .get_item()
        .table_name("race")
        .key("pk", key())
        .consistent_read(true)
        .send()
        .await
        .expect("read");
    let version: u64 = last
        .item()
        .and_then(|i| i["version"].as_n().ok())
        .expect("v")
        .parse()
        .expect("n");
    assert_eq!(
        successes, version,
        "every successful conditional write bumped the version once"
    );
}

/// https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html#GSI.Reads: "Global
/// secondary indexes support eventually consistent reads only." moto enforces this rule itself
/// (so there is no strict rule to switch off); this test proves that it holds on ferry's own
/// table, so any strongly consistent read ferry sent to `gsi1` or `gsi2` would fail the suite.
/// That is why `Store::run_has_open_work` can only prove a run open and `Store::run_complete`
/// decides with a read of the base table.
#[tokio::test]
async fn dynamodb_refuses_consistent_reads_on_ferrys_global_secondary_indexes() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let emu = Emulator::start();
    let store = ferry::store::Store::from_config(&emu.sdk_config().await, "ferry");
    store.init().await.expect("init");
    let ddb = aws_sdk_dynamodb::Client::new(&emu.sdk_config().await);
    for (index, key) in [("gsi1", "gsi1pk"), ("gsi2", "gsi2pk")] {
        let query = |consistent: bool| {
            ddb.query()
                .table_name("ferry")
                .index_name(index)
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", key)
                .expression_attribute_values(":v", AttributeValue::S("x".into()))
                .consistent_read(consistent)
                .send()
        };
        let err = query(true).await.expect_err("a consistent read of a GSI");
        assert_eq!(err.code(), Some("ValidationException"), "{index}");
        assert!(
            err.message()
                .unwrap_or_default()
                .contains("Consistent reads are not supported on global secondary indexes"),
            "{index}: {err:?}"
        );
        query(false)
            .await
            .expect("an eventually consistent read of the same index");
    }
}
