//! The deployment template and the IAM policies: cfn-lint and parliament (from .venv) find
//! nothing wrong with what users deploy and what ferry writes.

use std::process::{Command, Stdio};

use crate::support::{root, run_ferry};

fn venv(tool: &str) -> std::path::PathBuf {
    root().join(".venv/bin").join(tool)
}

fn parliament(args: &[&str]) -> (i32, String) {
    let out = Command::new(venv("parliament"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("parliament in .venv (scripts/emulator.sh install)");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_cloudformation_template_passes_cfn_lint() {
    let out = Command::new(venv("cfn-lint"))
        .arg(root().join("examples/deploy/ferry-operator.yaml"))
        .output()
        .expect("cfn-lint in .venv (scripts/emulator.sh install)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cfn-lint:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.trim().is_empty(), "cfn-lint findings:\n{text}");
}

/// Trust policies have no Resource element, which parliament cannot parse; their shape is
/// checked here instead: Allow sts:AssumeRole for a named principal, never `*`.
fn assert_trust_policy(doc: &serde_json::Value, what: &str) {
    let statements = doc["Statement"].as_array().expect("statements");
    assert!(!statements.is_empty(), "{what}");
    for s in statements {
        assert_eq!(s["Effect"], "Allow", "{what}");
        assert_eq!(s["Action"], "sts:AssumeRole", "{what}");
        let principal = &s["Principal"];
        assert!(principal.is_object(), "{what}: principal must be named");
        assert!(
            !principal.to_string().contains("\"*\""),
            "{what}: wildcard principal"
        );
        assert!(s.get("Resource").is_none(), "{what}");
    }
}

#[test]
fn the_policies_users_create_and_those_ferry_generates_pass_parliament() {
    let dir = root().join("examples/deploy/policies");
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();

    let (code, out) = parliament(&[
        "--config",
        &p("parliament-destination-role.yaml"),
        "--files",
        &p("destination-role-permissions.json"),
    ]);
    assert_eq!((code, out.trim()), (0, ""), "destination role permissions");
    let (code, out) = parliament(&[
        "--config",
        &p("parliament-source-role.yaml"),
        "--files",
        &p("source-role-permissions.json"),
    ]);
    assert_eq!((code, out.trim()), (0, ""), "source role permissions");
    for trust in ["source-role-trust.json", "destination-role-trust.json"] {
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(trust)).expect("read"))
                .expect("JSON");
        assert_trust_policy(&doc, trust);
    }

    // What the operator writes, for every example job.
    let out = run_ferry(&["policies", "-f", "examples/jobs/"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(jobs.len(), 3);
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for job in &jobs {
        let name = job["job"].as_str().expect("name");
        assert_trust_policy(&job["taskRoleTrustPolicy"], name);
        for kind in ["taskRolePolicy", "sourceBucketPolicy"] {
            let f = tmp.path().join(format!("{name}-{kind}.json"));
            std::fs::write(&f, job[kind].to_string()).expect("write");
            files.push(f.to_string_lossy().into_owned());
        }
    }
    let (code, out) = parliament(&["--files", &files.join(",")]);
    assert_eq!((code, out.trim()), (0, ""), "ferry's generated policies");
}

#[test]
fn the_example_role_policies_are_what_ferry_policies_prints_for_the_example_job() {
    let out = run_ferry(
        &["policies", "-f", "examples/jobs/logs-migration.yaml"],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("JSON");
    let dir = root().join("examples/deploy/policies");
    for (kind, file) in [
        ("sourceRolePolicy", "source-role-permissions.json"),
        ("destinationRolePolicy", "destination-role-permissions.json"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("read");
        let example: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(
            example, jobs[0][kind],
            "{file} is `ferry policies -f examples/jobs/logs-migration.yaml` .{kind}"
        );
    }
}
