//! The CLI and the job store, end to end against DynamoDB on moto.

use std::path::PathBuf;
use std::sync::Arc;

use ferry::cli::apply::{Outcome, apply_one};
use ferry::model::{self, CopyJob};
use ferry::store::Store;

use crate::support::{Emulator, root, run_ferry, write_file};

const JOB_A: &str = r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata:
  name: job-a
spec:
  source:
    account: "111111111111"
    region: eu-west-1
    bucket: src-a
    roleArn: arn:aws:iam::111111111111:role/src
  destination:
    account: "222222222222"
    region: us-east-1
    bucket: dst-a
    roleArn: arn:aws:iam::222222222222:role/dst
"#;

fn job_named(name: &str) -> String {
    JOB_A
        .replace("job-a", name)
        .replace("src-a", &format!("src-{name}"))
        .replace("dst-a", &format!("dst-{name}"))
}

async fn store(emu: &Emulator) -> Store {
    let store = Store::from_config(&emu.sdk_config().await, "ferry");
    store.init().await.expect("init table");
    store
}

/// (name, generation, version) of every stored job.
async fn versions(store: &Store) -> Vec<(String, u64, u64)> {
    let jobs = store.list_jobs().await.expect("list");
    jobs.iter()
        .map(|j| (j.name().to_string(), j.generation, j.version))
        .collect()
}

async fn generation(store: &Store, name: &str) -> u64 {
    store
        .get_job(name)
        .await
        .expect("get")
        .expect("job exists")
        .generation
}

#[tokio::test]
async fn init_is_idempotent_and_turns_the_stream_on() {
    let emu = Emulator::start();
    let first = emu.ferry(&["init"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(first.stdout.trim(), "table/ferry created");
    let second = emu.ferry(&["init"]);
    assert_eq!(second.stdout.trim(), "table/ferry unchanged");
    let store = Store::from_config(&emu.sdk_config().await, "ferry");
    assert!(
        store.stream_arn().await.expect("describe").is_some(),
        "stream must be enabled"
    );
    let ttl = store
        .client()
        .describe_time_to_live()
        .table_name("ferry")
        .send()
        .await
        .expect("describe TTL");
    let ttl = ttl.time_to_live_description().expect("TTL description");
    assert_eq!(
        ttl.attribute_name(),
        Some("expiresAt"),
        "run history expires by TTL"
    );
    assert_eq!(
        ttl.time_to_live_status(),
        Some(&aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled)
    );
}

#[tokio::test]
async fn init_adds_the_claim_index_to_a_table_made_before_it() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    let emu = Emulator::start();
    let store = Store::from_config(&emu.sdk_config().await, "ferry");
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    // The table as `ferry init` made it before the claim index existed.
    store
        .client()
        .create_table()
        .table_name("ferry")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr("gsi1pk"))
        .attribute_definitions(attr("gsi1sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("gsi1")
                .key_schema(key("gsi1pk", KeyType::Hash))
                .key_schema(key("gsi1sk", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("old table");
    let out = emu.ferry(&["init"]);
    assert_eq!(out.code, 0, "{out:?}");
    let table = store
        .client()
        .describe_table()
        .table_name("ferry")
        .send()
        .await
        .expect("describe");
    let indexes: Vec<(String, Option<ProjectionType>)> = table
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .map(|g| {
            (
                g.index_name().unwrap_or_default().to_string(),
                g.projection().and_then(|p| p.projection_type()).cloned(),
            )
        })
        .collect();
    assert!(
        indexes.contains(&("gsi2".to_string(), Some(ProjectionType::KeysOnly))),
        "the claim index is added, keys only: {indexes:?}"
    );
}

#[tokio::test]
async fn applying_the_same_files_twice_is_unchanged_and_keeps_generations() {
    let emu = Emulator::start();
    let store = store(&emu).await;
    let first = emu.ferry(&["apply", "-f", "examples/jobs/"]);
    assert_eq!(first.code, 0, "{first:?}");
    assert_eq!(
        first.stdout,
        "copyjob/assets-nightly-sync created\ncopyjob/backups-to-dr created\ncopyjob/logs-migration created\n"
    );
    let before = versions(&store).await;
    let second = emu.ferry(&["apply", "-f", "examples/jobs/"]);
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(
        second.stdout,
        "copyjob/assets-nightly-sync unchanged\ncopyjob/backups-to-dr unchanged\ncopyjob/logs-migration unchanged\n"
    );
    let after = versions(&store).await;
    assert_eq!(before, after, "an unchanged apply must write nothing");
    assert!(after.iter().all(|(_, g, _)| *g == 1));
}

#[tokio::test]
async fn a_changed_spec_is_configured_and_bumps_the_generation_but_a_label_does_not() {
    let emu = Emulator::start();
    let store = store(&emu).await;
    let dir = tempfile::tempdir().expect("tmp");
    let f = write_file(dir.path(), "a.yaml", JOB_A);
    let path = f.to_str().expect("utf-8 path");
    assert_eq!(
        emu.ferry(&["apply", "-f", path]).stdout,
        "copyjob/job-a created\n"
    );
    write_file(
        dir.path(),
        "a.yaml",
        &JOB_A.replace("bucket: dst-a", "bucket: dst-b"),
    );
    assert_eq!(
        emu.ferry(&["apply", "-f", path]).stdout,
        "copyjob/job-a configured\n"
    );
    assert_eq!(generation(&store, "job-a").await, 2);
    let labeled = JOB_A
        .replace("bucket: dst-a", "bucket: dst-b")
        .replace("  name: job-a\n", "  name: job-a\n  labels: {team: x}\n");
    write_file(dir.path(), "a.yaml", &labeled);
    assert_eq!(
        emu.ferry(&["apply", "-f", path]).stdout,
        "copyjob/job-a configured\n"
    );
    let job = store.get_job("job-a").await.expect("get").expect("exists");
    assert_eq!(job.generation, 2, "labels are metadata, not spec");
    assert_eq!(
        job.job.metadata.labels.get("team").map(String::as_str),
        Some("x")
    );
    assert_eq!(job.job.spec.destination.bucket, "dst-b");
}

#[tokio::test]
async fn dry_run_reports_what_would_happen_and_writes_nothing() {
    let emu = Emulator::start();
    let store = store(&emu).await;
    let out = emu.ferry(&[
        "apply",
        "--dry-run",
        "-f",
        "examples/jobs/logs-migration.yaml",
    ]);
    assert_eq!(out.stdout, "copyjob/logs-migration created (dry run)\n");
    assert!(store.list_jobs().await.expect("list").is_empty());
}

#[tokio::test]
async fn prune_marks_only_jobs_of_the_same_applyset_that_the_files_no_longer_contain() {
    let emu = Emulator::start();
    let store = store(&emu).await;
    let dir = tempfile::tempdir().expect("tmp");
    let all = format!(
        "{}---\n{}---\n{}",
        job_named("keep"),
        job_named("gone"),
        job_named("also-gone")
    );
    let f = write_file(dir.path(), "jobs.yaml", &all);
    let other = write_file(dir.path(), "other.yaml", &job_named("foreign"));
    assert_eq!(emu.ferry(&["apply", "-f", f.to_str().unwrap()]).code, 0);
    assert_eq!(
        emu.ferry(&[
            "apply",
            "--applyset",
            "team-b",
            "-f",
            other.to_str().unwrap()
        ])
        .code,
        0
    );

    write_file(dir.path(), "jobs.yaml", &job_named("keep"));
    let out = emu.ferry(&["apply", "--prune", "-f", f.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "copyjob/keep unchanged\ncopyjob/also-gone pruned\ncopyjob/gone pruned\n"
    );

    let jobs = store.list_jobs().await.expect("list");
    let deleting: Vec<&str> = jobs
        .iter()
        .filter(|j| j.deletion_requested_at.is_some())
        .map(|j| j.name())
        .collect();
    assert_eq!(
        deleting,
        vec!["also-gone", "gone"],
        "only this applyset's missing jobs are pruned"
    );
    let again = emu.ferry(&["apply", "--prune", "-f", f.to_str().unwrap()]);
    assert_eq!(
        again.stdout, "copyjob/keep unchanged\n",
        "pruning twice marks nothing new"
    );
}

#[tokio::test]
async fn diff_exits_0_without_differences_1_with_them_and_2_on_error() {
    let emu = Emulator::start();
    let _store = store(&emu).await;
    let dir = tempfile::tempdir().expect("tmp");
    let f = write_file(dir.path(), "a.yaml", JOB_A);
    let path = f.to_str().unwrap();
    let new = emu.ferry(&["diff", "-f", path]);
    assert_eq!(new.code, 1, "a job not yet stored is a difference: {new:?}");
    assert!(new.stdout.contains("+++ copyjob/job-a"), "{}", new.stdout);
    emu.ferry(&["apply", "-f", path]);
    let same = emu.ferry(&["diff", "-f", path]);
    assert_eq!((same.code, same.stdout.as_str()), (0, ""));
    write_file(
        dir.path(),
        "a.yaml",
        &JOB_A.replace("bucket: dst-a", "bucket: dst-z"),
    );
    let changed = emu.ferry(&["diff", "-f", path]);
    assert_eq!(changed.code, 1);
    assert!(
        changed
            .stdout
            .contains("-    bucket: dst-a\n+    bucket: dst-z\n"),
        "{}",
        changed.stdout
    );
    let bad = emu.ferry(&["diff", "-f", "tests/fixtures/invalid/bucket-uppercase.yaml"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[tokio::test]
async fn delete_marks_the_job_and_apply_refuses_it_until_the_operator_removes_it() {
    let emu = Emulator::start();
    let store = store(&emu).await;
    emu.ferry(&["apply", "-f", "examples/jobs/logs-migration.yaml"]);
    let out = emu.ferry(&["delete", "logs-migration"]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "copyjob/logs-migration marked for deletion\n")
    );
    let job = store
        .get_job("logs-migration")
        .await
        .expect("get")
        .expect("still stored until finalized");
    assert!(job.deletion_requested_at.is_some());
    let shown = emu.ferry(&["get"]);
    assert!(
        shown.stdout.contains("logs-migration   Deleting"),
        "{}",
        shown.stdout
    );
    let again = emu.ferry(&["apply", "-f", "examples/jobs/logs-migration.yaml"]);
    assert_eq!(again.code, 1);
    assert!(
        again
            .stderr
            .contains("copyjob/logs-migration is being deleted"),
        "{}",
        again.stderr
    );
    let missing = emu.ferry(&["delete", "no-such-job"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("copyjob/no-such-job not found"),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn get_prints_a_table_yaml_and_json_and_describe_shows_spec_and_status() {
    let emu = Emulator::start();
    let _store = store(&emu).await;
    emu.ferry(&["apply", "-f", "examples/jobs/"]);
    let table = emu.ferry(&["get"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("PHASE") && lines[0].contains("PROGRESS")
    );
    assert!(lines[3].starts_with("logs-migration") && lines[3].contains("Pending"));
    let wide = emu.ferry(&["get", "-o", "wide"]);
    assert!(
        wide.stdout.contains("s3://acme-logs-eu/logs/ (eu-west-1)"),
        "{}",
        wide.stdout
    );

    let yaml = emu.ferry(&["get", "logs-migration", "-o", "yaml"]);
    let shown: CopyJob = serde_saphyr::from_str(&yaml.stdout).expect("get -o yaml is a CopyJob");
    assert_eq!(shown.metadata.generation, Some(1));
    let file: CopyJob = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("examples/jobs/logs-migration.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        shown.desired(),
        file.desired(),
        "what get shows round-trips to what was applied"
    );

    let json = emu.ferry(&["get", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3));

    let described = emu.ferry(&["describe", "logs-migration"]);
    assert!(described.stdout.contains("Name:         logs-migration"));
    assert!(described.stdout.contains("bucket: acme-logs-apse2"));
    assert!(
        described
            .stdout
            .contains("<not yet observed by an operator>")
    );
}

#[tokio::test]
async fn every_invalid_fixture_is_refused_with_its_file_and_field_and_nothing_is_written() {
    let emu = Emulator::start();
    let store = store(&emu).await;
    let dir = root().join("tests/fixtures/invalid");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fixtures.sort();
    assert!(
        fixtures.len() >= 20,
        "at least 20 invalid fixtures, found {}",
        fixtures.len()
    );
    for f in &fixtures {
        let text = std::fs::read_to_string(f).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            f.display()
        );
        let rel = f.strip_prefix(root()).unwrap().to_str().unwrap();
        for verb in ["validate", "apply"] {
            let out = emu.ferry(&[verb, "-f", rel]);
            assert_eq!(out.code, 1, "{verb} {rel} must fail: {out:?}");
            assert!(
                out.stderr.contains(rel),
                "{verb} {rel}: message must name the file: {}",
                out.stderr
            );
            for e in &expects {
                assert!(
                    out.stderr.contains(e),
                    "{verb} {rel}: expected `{e}` in:\n{}",
                    out.stderr
                );
            }
            assert_eq!(out.stdout, "", "{verb} {rel} printed success lines");
        }
    }
    // A good file next to a bad one: validation comes first, so nothing is written at all.
    let out = emu.ferry(&[
        "apply",
        "-f",
        "examples/jobs/logs-migration.yaml",
        "-f",
        "tests/fixtures/invalid/wrong-kind.yaml",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        store.list_jobs().await.expect("list").is_empty(),
        "a failed apply must write nothing"
    );
}

#[test]
fn the_examples_are_valid() {
    let out = run_ferry(&["validate", "-f", "examples/jobs/"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 3);
}

#[test]
fn every_example_names_the_schema_for_editors() {
    for f in model::load::expand_paths(&[root().join("examples")]).expect("examples") {
        let text = std::fs::read_to_string(&f).unwrap();
        if f.extension().is_some_and(|e| e == "yaml") && text.contains("kind: CopyJob") {
            assert!(
                text.starts_with("# yaml-language-server: $schema="),
                "{} must start with the yaml-language-server modeline",
                f.display()
            );
            let schema = text
                .lines()
                .next()
                .and_then(|l| l.split_once("$schema="))
                .map(|(_, p)| p.trim())
                .unwrap_or_default();
            let target = f.parent().expect("dir").join(schema);
            assert!(
                target.exists(),
                "{}: {} does not exist",
                f.display(),
                target.display()
            );
        }
    }
}

#[test]
fn the_committed_schema_is_what_the_code_generates() {
    let out = run_ferry(&["schema"], &[]);
    let committed = std::fs::read_to_string(root().join("schemas/copyjob.schema.json"))
        .expect("committed schema");
    assert!(
        out.stdout == committed,
        "schemas/copyjob.schema.json is stale: run `cargo run -- schema > schemas/copyjob.schema.json`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_applies_are_serialized_and_no_write_is_lost() {
    // DynamoDB's per-item conditions are atomic, as on AWS (the strict layer's
    // dynamodb-atomic-writes).
    let emu = Emulator::start();
    let store = Arc::new(store(&emu).await);
    const WRITERS: usize = 8;
    let mut tasks = Vec::new();
    for i in 0..WRITERS {
        let store = Arc::clone(&store);
        let job: CopyJob =
            serde_saphyr::from_str(&JOB_A.replace("bucket: dst-a", &format!("bucket: dst-{i}")))
                .unwrap();
        tasks.push(tokio::spawn(async move {
            apply_one(&store, &job, "default", Default::default()).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(
            t.await
                .expect("task")
                .expect("every apply succeeds after re-reading"),
        );
    }
    let created = outcomes.iter().filter(|o| **o == Outcome::Created).count();
    let configured = outcomes
        .iter()
        .filter(|o| **o == Outcome::Configured)
        .count();
    assert_eq!((created, configured), (1, WRITERS - 1), "{outcomes:?}");
    let job = store.get_job("job-a").await.unwrap().unwrap();
    assert_eq!(
        job.generation, WRITERS as u64,
        "every distinct spec was written once, in some order"
    );
    assert_eq!(job.version, WRITERS as u64);
}

/// `ferry validate -f FILE` under a 1 GiB address-space limit (`ulimit -v`): a file that
/// expands without bound would abort on allocation instead of being refused.
fn validate_bounded(file: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -v 1048576; exec '{}' validate -f '{}'",
            crate::support::ferry_bin(),
            file.display()
        ))
        .output()
        .expect("run ferry validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_alias_bomb_and_a_2_mib_file_are_refused_naming_the_file_within_bounded_memory() {
    let dir = tempfile::tempdir().expect("dir");
    // One anchored list of 1,000 items referenced 10,000 times: ~50 KB that expands to ten
    // million values.
    let items: String = (0..1000).map(|i| format!("x{i},")).collect();
    let refs: String = (0..10_000).map(|_| "*a,").collect();
    let bomb = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: CopyJob\nmetadata: {{ name: bomb }}\nlist: &a [{items}]\nrefs: [{refs}]\n"
    );
    assert!(bomb.len() < 60_000, "{}", bomb.len());
    let bomb_file = crate::support::write_file(dir.path(), "bomb.yaml", &bomb);
    let (code, stderr) = validate_bounded(&bomb_file);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("bomb.yaml") && stderr.contains("more than 100000 values"),
        "{stderr}"
    );

    let mut big = job_named("big");
    big.push_str(&format!("# {}\n", "x".repeat(2 << 20)));
    let big_file = crate::support::write_file(dir.path(), "big.yaml", &big);
    let (code, stderr) = validate_bounded(&big_file);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("big.yaml") && stderr.contains("at most 1 MiB"),
        "{stderr}"
    );
}
