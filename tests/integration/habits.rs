//! kubectl habits, end to end against the emulator: `-f -`, `-l`, `-o name`, `--no-headers`,
//! `wait`, `suspend`/`resume`/`rerun`, `delete --wait`/`--ignore-not-found`, apply-set
//! conflicts, `--dry-run=server`, the missing-region error, completion, man pages and every
//! verb's Examples.

use std::time::Duration;

use ferry::model::{Condition, CopyJobStatus, Phase, RunStatus};
use ferry::store::Store;

use crate::operator::{SRC_BUCKET, job_yaml, objects, rig};
use crate::support::{Emulator, Output, root, run_ferry, run_ferry_with_input};
use crate::worker::seed;

fn labelled(name: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: {name}, labels: {{ {labels} }} }}
spec:
  source: {{ account: "111111111111", region: eu-west-1, bucket: src-{name}, roleArn: "arn:aws:iam::111111111111:role/src" }}
  destination: {{ account: "222222222222", region: us-east-1, bucket: dst-{name}, roleArn: "arn:aws:iam::222222222222:role/dst" }}
"#
    )
}

async fn initialized() -> (Emulator, Store) {
    let emu = Emulator::start();
    let init = emu.ferry(&["init"]);
    assert_eq!(init.code, 0, "{init:?}");
    let store = Store::from_config(&emu.sdk_config().await, "ferry");
    (emu, store)
}

fn apply_stdin(emu: &Emulator, args: &[&str], yaml: &str) -> Output {
    let mut all = vec!["apply", "-f", "-"];
    all.extend_from_slice(args);
    run_ferry_with_input(&all, &emu.env(), Some(yaml))
}

fn names(out: &Output) -> Vec<&str> {
    out.stdout.lines().collect()
}

#[tokio::test]
async fn apply_reads_a_multi_document_stream_from_standard_input() {
    let (emu, store) = initialized().await;
    let stream = format!(
        "{}---\n{}",
        labelled("a", "team: x"),
        labelled("b", "team: y")
    );
    let out = apply_stdin(&emu, &[], &stream);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(names(&out), ["copyjob/a created", "copyjob/b created"]);
    assert_eq!(store.list_jobs().await.expect("list").len(), 2);
    let bad = apply_stdin(&emu, &[], "kind: CopyJob\nmetadata: {name: c}\n");
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.contains("<stdin>"),
        "problems name standard input: {}",
        bad.stderr
    );
}

#[tokio::test]
async fn a_listing_in_pages_of_any_size_joins_each_jobs_spec_and_status() {
    let (emu, store) = initialized().await;
    let names = ["a", "b", "c", "d", "e"];
    let stream: Vec<String> = names.iter().map(|n| labelled(n, "team: x")).collect();
    assert_eq!(apply_stdin(&emu, &[], &stream.join("---\n")).code, 0);
    for name in ["a", "c", "d"] {
        let status = CopyJobStatus {
            phase: Phase::Running,
            ..CopyJobStatus::default()
        };
        store.put_status(name, &status, 0).await.expect("status");
    }
    let whole = store.list_jobs().await.expect("list");
    assert_eq!(whole.iter().filter(|j| j.job.status.is_some()).count(), 3);
    // Pages of 1 to 4 items end between a job's spec and its status in every possible place.
    for size in 1..=4 {
        let mut pages = store.job_pages(Some(size));
        let mut paged = Vec::new();
        while let Some(page) = pages.next().await.expect("page") {
            paged.extend(page);
        }
        assert_eq!(paged, whole, "pages of {size} items");
    }
}

#[tokio::test]
async fn selectors_choose_what_get_delete_and_prune_touch() {
    let (emu, store) = initialized().await;
    let all = [
        labelled("a1", "team: a, tier: gold"),
        labelled("a2", "team: a"),
        labelled("b1", "team: b"),
    ]
    .join("---\n");
    assert_eq!(apply_stdin(&emu, &[], &all).code, 0);

    let get = emu.ferry(&["get", "-l", "team=a", "-o", "name"]);
    assert_eq!(names(&get), ["copyjob/a1", "copyjob/a2"], "{get:?}");
    let get = emu.ferry(&["get", "-l", "team=a,!tier", "--no-headers"]);
    assert_eq!(get.stdout.lines().count(), 1, "{get:?}");
    assert!(get.stdout.starts_with("a2 "), "no header line: {get:?}");
    let get = emu.ferry(&["get", "-l", "team!=a", "-o", "name"]);
    assert_eq!(names(&get), ["copyjob/b1"]);
    let bad = emu.ferry(&["get", "-l", "te am"]);
    assert_eq!(bad.code, 2, "clap refuses a bad selector: {bad:?}");
    assert!(bad.stderr.contains("allowed"), "{}", bad.stderr);

    // --prune -l: only selected jobs that the stream no longer holds are pruned.
    let out = apply_stdin(
        &emu,
        &["--prune", "-l", "team=a"],
        &labelled("a1", "team: a, tier: gold"),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(names(&out), ["copyjob/a1 unchanged", "copyjob/a2 pruned"]);
    let deleting = |j: &ferry::store::StoredJob| j.deletion_requested_at.is_some();
    let jobs = store.list_jobs().await.expect("list");
    let marked: Vec<&str> = jobs
        .iter()
        .filter(|j| deleting(j))
        .map(|j| j.name())
        .collect();
    assert_eq!(marked, ["a2"], "b1 is outside the selector");

    let out = emu.ferry(&["delete", "-l", "team=b"]);
    assert_eq!(names(&out), ["copyjob/b1 marked for deletion"], "{out:?}");
    let missing = emu.ferry(&["delete", "nope"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    let ignored = emu.ferry(&["delete", "nope", "--ignore-not-found"]);
    assert_eq!(
        (ignored.code, ignored.stdout.as_str()),
        (0, ""),
        "{ignored:?}"
    );
}

fn status(phase: Phase, complete: &str, observed: u64) -> CopyJobStatus {
    CopyJobStatus {
        phase,
        observed_generation: observed,
        conditions: vec![Condition {
            kind: "Complete".into(),
            status: complete.into(),
            reason: "Test".into(),
            message: "set by the test".into(),
            last_transition_time: String::new(),
        }],
        run: Some(RunStatus::default()),
        ..CopyJobStatus::default()
    }
}

#[tokio::test]
async fn wait_exits_0_when_met_and_1_on_a_terminal_failure_or_a_timeout() {
    let (emu, store) = initialized().await;
    let jobs = [
        labelled("ok", ""),
        labelled("bad", ""),
        labelled("slow", ""),
    ]
    .join("---\n");
    assert_eq!(apply_stdin(&emu, &[], &jobs).code, 0);
    store
        .put_status("ok", &status(Phase::Succeeded, "True", 1), 0)
        .await
        .expect("status");
    store
        .put_status("bad", &status(Phase::Failed, "False", 1), 0)
        .await
        .expect("status");
    store
        .put_status("slow", &status(Phase::Running, "False", 1), 0)
        .await
        .expect("status");

    let met = emu.ferry(&["wait", "ok", "--for=condition=Complete", "--timeout=10s"]);
    assert_eq!(
        (met.code, met.stdout.trim()),
        (0, "copyjob/ok condition=Complete=True"),
        "{met:?}"
    );
    let phase = emu.ferry(&["wait", "ok", "--for=phase=Succeeded", "--timeout=10s"]);
    assert_eq!(phase.code, 0, "{phase:?}");

    let failed = emu.ferry(&["wait", "bad", "--for=condition=Complete", "--timeout=60s"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stderr.contains("copyjob/bad cannot meet") && failed.stderr.contains("phase Failed"),
        "{}",
        failed.stderr
    );

    let started = std::time::Instant::now();
    let slow = emu.ferry(&["wait", "slow", "--for=condition=Complete", "--timeout=2s"]);
    assert_eq!(slow.code, 1, "{slow:?}");
    assert!(
        slow.stderr.contains("timed out waiting for"),
        "{}",
        slow.stderr
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited out the timeout"
    );

    // A status of an earlier generation says nothing of the new spec.
    let changed = labelled("ok", "").replace("dst-ok", "dst-ok-2");
    assert_eq!(apply_stdin(&emu, &[], &changed).code, 0);
    let stale = emu.ferry(&["wait", "ok", "--for=condition=Complete", "--timeout=1s"]);
    assert!(stale.stderr.contains("timed out"), "{stale:?}");
}

#[tokio::test]
async fn another_apply_sets_job_is_refused_unless_forced() {
    let (emu, store) = initialized().await;
    assert_eq!(
        apply_stdin(&emu, &["--applyset", "team-a"], &labelled("j", "")).code,
        0
    );
    let changed = labelled("j", "").replace("dst-j", "dst-j-2");
    let refused = apply_stdin(&emu, &["--applyset", "team-b"], &changed);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("belongs to apply set `team-a`")
            && refused.stderr.contains("--force-conflicts"),
        "{}",
        refused.stderr
    );
    let j = store.get_job("j").await.expect("get").expect("job");
    assert_eq!(
        (j.generation, j.applyset.as_deref()),
        (1, Some("team-a")),
        "nothing written"
    );

    let forced = apply_stdin(
        &emu,
        &["--applyset", "team-b", "--force-conflicts"],
        &changed,
    );
    assert_eq!(forced.stdout.trim(), "copyjob/j configured", "{forced:?}");
    let j = store.get_job("j").await.expect("get").expect("job");
    assert_eq!((j.generation, j.applyset.as_deref()), (2, Some("team-b")));
}

#[tokio::test]
async fn server_dry_run_has_dynamodb_check_each_write_and_writes_nothing() {
    let (emu, store) = initialized().await;
    let out = apply_stdin(&emu, &["--dry-run=server"], &labelled("j", ""));
    assert_eq!(
        out.stdout.trim(),
        "copyjob/j created (server dry run)",
        "{out:?}"
    );
    assert!(
        store.list_jobs().await.expect("list").is_empty(),
        "nothing written"
    );
    let checks = emu
        .strict_requests()
        .iter()
        .filter(|q| q["operation"] == "TransactWriteItems")
        .count();
    assert_eq!(checks, 1, "one condition check went to DynamoDB");

    let plain = apply_stdin(&emu, &["--dry-run"], &labelled("j", ""));
    assert_eq!(
        plain.stdout.trim(),
        "copyjob/j created (dry run)",
        "plain --dry-run is client"
    );
    let after = emu
        .strict_requests()
        .iter()
        .filter(|q| q["operation"] == "TransactWriteItems")
        .count();
    assert_eq!(after, 1, "a client dry run sends no check");

    // A job being deleted: the server check is refused as the write would be.
    assert_eq!(apply_stdin(&emu, &[], &labelled("j", "")).code, 0);
    assert_eq!(emu.ferry(&["delete", "j"]).code, 0);
    let changed = labelled("j", "").replace("dst-j", "dst-j-2");
    let refused = apply_stdin(&emu, &["--dry-run=server"], &changed);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("being deleted"),
        "{}",
        refused.stderr
    );
}

#[test]
fn with_no_region_anywhere_a_command_says_so_in_one_line() {
    let env: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    for args in [&["get"][..], &["apply", "-f", "examples/jobs/"], &["init"]] {
        let out = run_ferry(args, &env);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: one line, no SDK internals: {}",
            out.stderr
        );
        assert!(
            lines[0].contains("no AWS region")
                && lines[0].contains("--region")
                && lines[0].contains("AWS_REGION"),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn with_a_region_but_no_credentials_a_command_says_so_in_one_line() {
    let env: Vec<(String, String)> = [
        ("AWS_REGION", "eu-west-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let out = run_ferry(&["get"], &env);
    assert_eq!(out.code, 1, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, no SDK warnings: {}", out.stderr);
    assert!(
        lines[0].contains("no usable AWS credentials") && lines[0].contains("AWS_PROFILE"),
        "{}",
        lines[0]
    );
}

#[test]
fn a_missing_table_is_reported_once_with_what_to_do() {
    let emu = Emulator::start();
    let out = emu.ferry(&["apply", "-f", "examples/jobs/"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.matches("ResourceNotFoundException").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("run `ferry init`, or check --region and --table"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_bash_completion_script_loads_and_completes_verbs() {
    let script = format!(
        "source <({} completion bash) && complete -p ferry && COMP_WORDS=(ferry su) COMP_CWORD=1 COMP_LINE='ferry su' COMP_POINT=8 && _ferry ferry su ferry && echo \"${{COMPREPLY[@]}}\"",
        crate::support::ferry_bin()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("complete") && stdout.contains("ferry"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.split(' ').any(|w| w == "suspend")),
        "{stdout}"
    );
    for shell in ["zsh", "fish"] {
        let out = run_ferry(&["completion", shell], &[]);
        assert!(
            out.code == 0 && out.stdout.contains("rerun"),
            "{shell}: {out:?}"
        );
    }
}

#[test]
fn man_pages_and_version_build_from_the_command_line() {
    let dir = tempfile::tempdir().expect("dir");
    let out = run_ferry(&["man", "--dir", dir.path().to_str().expect("path")], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    for page in ["ferry.1", "ferry-apply.1", "ferry-wait.1", "ferry-rerun.1"] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is roff: {}",
            &text[..80.min(text.len())]
        );
    }
    let apply = std::fs::read_to_string(dir.path().join("ferry-apply.1")).expect("apply page");
    assert!(
        apply.contains("force\\-conflicts"),
        "the page documents the flags"
    );
    let version = run_ferry(&["version"], &[]);
    let want = format!("ferry {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(
        version.stdout.starts_with(&want) && version.stdout.contains("rustc "),
        "{version:?}"
    );
}

#[test]
fn every_verbs_help_has_an_examples_section() {
    let top = run_ferry(&["--help"], &[]);
    assert!(top.stdout.contains("Examples:"), "{top:?}");
    let verbs: Vec<String> = top
        .stdout
        .split("Commands:")
        .nth(1)
        .expect("a command list")
        .split("Options:")
        .next()
        .expect("commands")
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .map(String::from)
        .collect();
    assert!(verbs.len() >= 18, "{verbs:?}");
    for verb in &verbs {
        let out = run_ferry(&[verb, "--help"], &[]);
        assert!(
            out.stdout.contains("Examples:\n  "),
            "ferry {verb} --help has no Examples: {}",
            out.stdout
        );
    }
    let _ = root();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_copies_again_suspend_and_resume_toggle_and_delete_wait_returns_once_gone() {
    let mut r = rig().await;
    seed(&r.src, SRC_BUCKET, objects(8, "v1")).await;
    let _op = r.operator("op", &[]);
    let _agent = r.agent(None);
    r.apply(
        "again",
        &job_yaml("again", "op-dest-again", ", historyLimit: 0"),
    );
    let env = r.emu.env();
    let ferry = move |args: Vec<&'static str>| {
        let env = env.clone();
        tokio::task::spawn_blocking(move || run_ferry(&args, &env))
    };
    let done = ferry(vec![
        "wait",
        "again",
        "--for=condition=Complete",
        "--timeout=120s",
    ])
    .await
    .expect("wait");
    assert_eq!(done.code, 0, "{done:?}\n{}", r.logs());
    let first = r
        .status("again")
        .await
        .expect("status")
        .run
        .expect("run")
        .id;

    // A new source object, then rerun: the new run copies it.
    seed(
        &r.src,
        SRC_BUCKET,
        vec![crate::worker::Obj::new("late/obj", b"late")],
    )
    .await;
    let rerun = ferry(vec!["rerun", "again"]).await.expect("rerun");
    assert_eq!(
        rerun.stdout.trim(),
        "copyjob/again rerun requested (rerun 1)",
        "{rerun:?}"
    );
    let done = ferry(vec![
        "wait",
        "again",
        "--for=condition=Complete",
        "--timeout=120s",
    ])
    .await
    .expect("wait");
    assert_eq!(done.code, 0, "{done:?}\n{}", r.logs());
    let st = r.status("again").await.expect("status");
    let second = st.run.expect("run");
    assert_ne!(second.id, first, "a new run");
    assert!(second.id.ends_with("r2"), "{}", second.id);
    assert_eq!(
        r.store
            .get_job("again")
            .await
            .expect("get")
            .expect("job")
            .generation,
        1,
        "no spec change"
    );
    let copied = crate::worker::listing(&r.dst, "op-dest-again", "late/").await;
    assert_eq!(copied.len(), 1, "the rerun copied the late object");

    // historyLimit 0: the first run's items expire (DynamoDB TTL) once the second started.
    let items = r
        .store
        .client()
        .query()
        .table_name("ferry")
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(
            ":pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("RUN#again#{first}")),
        )
        .send()
        .await
        .expect("query the first run");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(items.count() >= 2, "the first run has items: {items:?}");
    for item in items.items() {
        let at: u64 = item
            .get("expiresAt")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("an item of the first run without expiresAt: {item:?}"));
        assert!(at <= now, "{at} > {now}");
    }
    let records = r.store.run_records("again").await.expect("runs");
    let second_record = records
        .iter()
        .find(|x| x.run == second.id)
        .expect("second run");
    assert_eq!(
        second_record.expires_at, None,
        "the current run never expires"
    );

    let out = ferry(vec!["suspend", "again"]).await.expect("suspend");
    assert_eq!(out.stdout.trim(), "copyjob/again suspended", "{out:?}");
    let out = ferry(vec![
        "wait",
        "again",
        "--for=phase=Suspended",
        "--timeout=60s",
    ])
    .await
    .expect("wait");
    assert_eq!(out.code, 0, "{out:?}");
    let refused = ferry(vec!["rerun", "again"]).await.expect("rerun");
    assert!(
        refused.code == 1 && refused.stderr.contains("ferry resume"),
        "{refused:?}"
    );
    let out = ferry(vec!["resume", "again"]).await.expect("resume");
    assert_eq!(out.stdout.trim(), "copyjob/again resumed", "{out:?}");
    let out = ferry(vec![
        "wait",
        "again",
        "--for=phase=Succeeded",
        "--timeout=60s",
    ])
    .await
    .expect("wait");
    assert_eq!(
        out.code, 0,
        "a resumed Once job that finished stays finished: {out:?}"
    );

    let gone = ferry(vec!["delete", "again", "--wait", "--timeout=120s"])
        .await
        .expect("delete");
    assert_eq!(gone.code, 0, "{gone:?}\n{}", r.logs());
    assert!(gone.stdout.contains("copyjob/again deleted"), "{gone:?}");
    assert!(
        r.store.get_job("again").await.expect("get").is_none(),
        "the record is gone"
    );
}
