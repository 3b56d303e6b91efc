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

#[test]
fn the_readme_lists_exactly_the_permissions_ferry_policies_prints() {
    // A job with every option that needs a permission of its own.
    let dir = tempfile::tempdir().expect("temp dir");
    let job = crate::support::write_file(
        dir.path(),
        "all.yaml",
        r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: { name: all }
spec:
  source: { account: "111111111111", region: eu-west-1, bucket: src, prefix: "in/", roleArn: "arn:aws:iam::111111111111:role/ferry-source" }
  destination: { account: "222222222222", region: us-east-1, bucket: dst, roleArn: "arn:aws:iam::222222222222:role/ferry-destination", create: { versioning: true, objectOwnership: ObjectWriter } }
  copy: { tags: true, acl: true, deleteExtraneous: true, reportUri: "s3://reports/ferry/" }
"#,
    );
    let out = run_ferry(&["policies", "-f", job.to_str().expect("path")], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let printed: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("JSON");
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let section = readme
        .split("<!-- permissions:start -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- permissions:end -->").next())
        .expect("the README's permissions section");
    let listed = |role: &str| {
        let mut actions: Vec<String> = section
            .lines()
            .filter(|l| l.starts_with(&format!("| {role} |")))
            .flat_map(|l| {
                l.split('`')
                    .filter(|w| w.starts_with("s3:"))
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        actions.sort();
        actions.dedup();
        actions
    };
    use ferry::permissions::actions;
    assert_eq!(
        listed("source role"),
        actions(&printed[0]["sourceRolePolicy"])
    );
    assert_eq!(
        listed("destination role"),
        actions(&printed[0]["destinationRolePolicy"])
    );
}
