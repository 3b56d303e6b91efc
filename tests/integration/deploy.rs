//! The deployment template and the IAM policies: cfn-lint and parliament (from .venv) find
//! nothing wrong with what users deploy and what ferry writes.

use std::process::Command;

use crate::support::{root, run_ferry};

fn venv(tool: &str) -> std::path::PathBuf {
    root().join(".venv/bin").join(tool)
}

fn parliament(args: &[&str]) -> (i32, String) {
    crate::support::tool_output(
        Command::new(venv("parliament")).args(args),
        "parliament in .venv (scripts/emulator.sh install)",
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
    let out = run_ferry(
        &["policies", "-f", "examples/jobs/", "--region", "us-east-1"],
        &[],
    );
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
        &[
            "policies",
            "-f",
            "examples/jobs/logs-migration.yaml",
            "--region",
            "us-east-1",
        ],
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
    let out = run_ferry(
        &[
            "policies",
            "-f",
            job.to_str().expect("path"),
            "--region",
            "us-east-1",
        ],
        &[],
    );
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

/// The CloudFormation template as YAML values (short tags such as `!Ref` stay tagged values).
/// The template as JSON, CloudFormation's short-form tags kept: a tagged node becomes the string
/// `!Tag <value>` (`!Ref TaskBoundary`, `!GetAtt Table.Arn`, `!Sub ["…", {…}]`), so a check can
/// tell a reference from a literal.
fn template() -> serde_json::Value {
    let text = std::fs::read_to_string(root().join("examples/deploy/ferry-operator.yaml"))
        .expect("template");
    serde_saphyr::from_str::<Cfn>(&text)
        .expect("template YAML")
        .0
}

/// A YAML node with its tag folded in (see [`template`]).
struct Cfn(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Cfn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cfn, D::Error> {
        let serde_saphyr::Tagged(node, tag) = serde_saphyr::Tagged::<CfnNode>::deserialize(d)?;
        Ok(Cfn(match tag {
            Some(tag) => {
                let inner = match &node.0 {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                serde_json::Value::String(format!("{tag} {inner}"))
            }
            None => node.0,
        }))
    }
}

/// An untagged node whose children are [`Cfn`] nodes.
struct CfnNode(serde_json::Value);

impl<'de> serde::Deserialize<'de> for CfnNode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CfnNode, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CfnNode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a YAML node")
            }
            fn visit_bool<E>(self, v: bool) -> Result<CfnNode, E> {
                Ok(CfnNode(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<CfnNode, E> {
                Ok(CfnNode(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<CfnNode, E> {
                Ok(CfnNode(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<CfnNode, E> {
                Ok(CfnNode(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<CfnNode, E> {
                Ok(CfnNode(v.into()))
            }
            fn visit_unit<E>(self) -> Result<CfnNode, E> {
                Ok(CfnNode(serde_json::Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<CfnNode, A::Error> {
                let mut out = Vec::new();
                while let Some(Cfn(v)) = a.next_element::<Cfn>()? {
                    out.push(v);
                }
                Ok(CfnNode(serde_json::Value::Array(out)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<CfnNode, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    let Cfn(v) = a.next_value::<Cfn>()?;
                    out.insert(k, v);
                }
                Ok(CfnNode(serde_json::Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Every statement of the operator role's policies: (Sid, statement).
fn operator_statements(t: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for policy in t["Resources"]["OperatorRole"]["Properties"]["Policies"]
        .as_array()
        .expect("operator role policies")
    {
        for st in policy["PolicyDocument"]["Statement"]
            .as_array()
            .expect("statements")
        {
            out.push((st["Sid"].as_str().unwrap_or("?").to_string(), st.clone()));
        }
    }
    out
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// A value as text (tags included), for searching.
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[test]
fn the_template_lets_the_operator_write_task_roles_only_with_the_boundary_and_its_owner_tag() {
    let t = template();
    let statements = operator_statements(&t);
    let boundary = &t["Resources"]["TaskBoundary"]["Properties"];
    assert_eq!(
        boundary["ManagedPolicyName"].as_str(),
        Some(ferry::controller::desired::TASK_BOUNDARY)
    );
    // IAM's condition keys per action (Service Authorization Reference, "Actions, resources,
    // and condition keys for IAM"): iam:PermissionsBoundary exists for these writes.
    let boundary_writes = [
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:DeleteRolePolicy",
        "iam:PutRolePermissionsBoundary",
        "iam:AttachRolePolicy",
        "iam:DetachRolePolicy",
    ];
    let owner_writes = ["iam:UpdateAssumeRolePolicy", "iam:DeleteRole"];
    let mut seen = Vec::new();
    for (sid, st) in &statements {
        let actions = strings(&st["Action"]);
        assert!(
            !actions.iter().any(|a| a.ends_with('*')
                || a == "iam:DeleteRolePermissionsBoundary"
                || a == "iam:AttachRolePolicy"),
            "{sid} allows {actions:?}"
        );
        if !text(&st["Resource"]).contains("ferry-task-") {
            continue;
        }
        let condition = &st["Condition"]["StringEquals"];
        for a in &actions {
            if boundary_writes.contains(&a.as_str()) {
                assert_eq!(
                    text(&condition["iam:PermissionsBoundary"]).trim(),
                    "!Ref TaskBoundary",
                    "{sid}: {a} without the boundary condition"
                );
            } else if owner_writes.contains(&a.as_str()) {
                assert!(
                    text(&condition["iam:ResourceTag/ferry:owner"]).contains("AWS::StackId"),
                    "{sid}: {a} without the owner tag condition"
                );
            } else if a == "iam:TagRole" {
                assert!(
                    text(&condition["aws:RequestTag/ferry:owner"]).contains("AWS::StackId"),
                    "{sid}: {a} without the owner tag condition"
                );
            } else {
                assert!(
                    a.starts_with("iam:Get") || a == "iam:PassRole",
                    "{sid}: unexpected action {a} on task roles"
                );
            }
            seen.push(a.clone());
        }
    }
    for a in [
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:PutRolePermissionsBoundary",
        "iam:DeleteRole",
    ] {
        assert!(
            seen.iter().any(|s| s == a),
            "the template never allows {a}: {seen:?}"
        );
    }
    // Registered task definitions carry the owner tag.
    let register = statements
        .iter()
        .find(|(_, st)| strings(&st["Action"]).contains(&"ecs:RegisterTaskDefinition".into()))
        .expect("RegisterTaskDefinition");
    assert!(
        text(&register.1["Condition"]["StringEquals"]["aws:RequestTag/ferry:owner"])
            .contains("AWS::StackId")
    );
}

#[test]
fn no_role_the_template_assumes_or_admits_is_in_a_wildcard_account() {
    let t = template();
    let mut assumes = 0;
    for (sid, st) in operator_statements(&t) {
        if strings(&st["Action"]).contains(&"sts:AssumeRole".to_string()) {
            assumes += 1;
            let r = text(&st["Resource"]);
            assert!(!r.contains("iam::*") && !r.contains("::*:"), "{sid}: {r}");
            assert!(
                r.contains("SourceAccounts") || r.contains("DestinationAccounts"),
                "{sid}: {r}"
            );
        }
    }
    assert_eq!(assumes, 2);
    let boundary = text(&t["Resources"]["TaskBoundary"]);
    assert!(boundary.contains("DestinationAccounts") && !boundary.contains("iam::*"));
    let env = text(&t["Resources"]["OperatorTaskDefinition"]["Properties"]["ContainerDefinitions"]);
    for var in [
        "FERRY_ALLOW_SOURCES",
        "FERRY_ALLOW_DESTINATION_ACCOUNTS",
        "FERRY_ALLOW_ROLES",
        "FERRY_ALLOW_IMAGES",
        "FERRY_INSTALLATION_ID",
        "FERRY_TASK_BOUNDARY_ARN",
    ] {
        assert!(env.contains(var), "the operator gets no {var}");
    }
    assert!(
        !env.contains("FERRY_ALLOW_ANY"),
        "the template never runs the local mode"
    );
    assert_eq!(
        t["Parameters"]["MetricsListen"]["Default"].as_str(),
        Some("127.0.0.1:9090")
    );
}

#[test]
fn the_example_trust_policies_name_the_roles_the_template_creates() {
    let t = template();
    let name = t["Resources"]["OperatorRole"]["Properties"]["RoleName"]
        .as_str()
        .expect("the operator role has a fixed RoleName");
    let operator = format!("arn:aws:iam::123456789012:role/{name}");
    let dir = root().join("examples/deploy/policies");
    for file in ["source-role-trust.json", "destination-role-trust.json"] {
        let doc = std::fs::read_to_string(dir.join(file)).expect("read");
        assert!(
            doc.contains(&format!("\"{operator}\"")),
            "{file} does not trust {operator}"
        );
        for arn in doc.split('"').filter(|s| s.contains(":role/")) {
            let role = arn.rsplit_once(":role/").expect("role").1;
            assert!(
                role == name || role.starts_with("ferry-task-"),
                "{file} names {arn}, which the template does not create"
            );
        }
    }
}

#[test]
fn the_metrics_collector_option_adds_a_sidecar_that_may_only_remote_write_to_its_workspace() {
    let t = template();
    let source = std::fs::read_to_string(root().join("examples/deploy/ferry-operator.yaml"))
        .expect("template");
    let r = &t["Resources"];
    for name in [
        "MetricsWorkspace",
        "OperatorRemoteWritePolicy",
        "CollectorLogGroup",
    ] {
        assert_eq!(
            r[name]["Condition"].as_str(),
            Some("UseManagedPrometheus"),
            "{name} exists only with ManagedPrometheus=true"
        );
    }
    assert_eq!(
        r["MetricsWorkspace"]["Type"].as_str(),
        Some("AWS::APS::Workspace")
    );
    let statements = r["OperatorRemoteWritePolicy"]["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .expect("statements");
    assert_eq!(statements.len(), 1);
    assert_eq!(strings(&statements[0]["Action"]), ["aps:RemoteWrite"]);
    assert!(
        text(&statements[0]["Resource"]) == "!GetAtt MetricsWorkspace.Arn",
        "the grant names the stack's workspace only: {:?}",
        statements[0]["Resource"]
    );
    assert_eq!(
        t["Parameters"]["ManagedPrometheus"]["Default"].as_str(),
        Some("false")
    );
    // The collector scrapes the operator where it listens by default, and writes with SigV4.
    assert!(source.contains(r#"targets: ["127.0.0.1:9090"]"#));
    assert!(source.contains("authenticator: sigv4auth") && source.contains("service: aps"));
    assert!(source.contains("api/v1/remote_write"));
}

#[test]
fn the_template_defaults_to_graviton_and_expires_run_history_by_ttl() {
    let t = template();
    let table = &t["Resources"]["Table"]["Properties"]["TimeToLiveSpecification"];
    assert_eq!(
        table["AttributeName"].as_str(),
        Some(ferry::store::runs::EXPIRES_AT)
    );
    assert_eq!(table["Enabled"].as_bool(), Some(true));
    assert_eq!(
        t["Parameters"]["CpuArchitecture"]["Default"].as_str(),
        Some("ARM64")
    );
    let text = std::fs::read_to_string(root().join("examples/deploy/ferry-operator.yaml"))
        .expect("template");
    assert!(
        text.contains("CpuArchitecture: !Ref CpuArchitecture"),
        "the operator's own platform"
    );
    assert!(
        text.contains("{ Name: FERRY_CPU_ARCHITECTURE, Value: !Ref CpuArchitecture }"),
        "the workers' default"
    );
}

#[test]
fn every_base_image_is_pinned_by_digest_and_the_release_profile_is_lean() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().collect();
    let froms: Vec<(usize, &str)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .map(|(i, l)| (i, *l))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    for (i, from) in froms {
        let image = from.split_whitespace().nth(1).expect("image");
        let (name, digest) = image
            .split_once("@sha256:")
            .unwrap_or_else(|| panic!("{from} is not pinned by digest"));
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{from}"
        );
        let tag_comment = lines[i - 1];
        assert!(
            tag_comment.starts_with("# ")
                && tag_comment.contains(name)
                && tag_comment.contains(':'),
            "the line above `{from}` names the tag: {tag_comment}"
        );
    }
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .expect("Cargo.toml")
        .parse()
        .expect("TOML");
    let release = &manifest["profile"]["release"];
    assert_eq!(release["lto"].as_bool(), Some(true));
    assert_eq!(release["codegen-units"].as_integer(), Some(1));
    assert_eq!(release["strip"].as_bool(), Some(true));
}
