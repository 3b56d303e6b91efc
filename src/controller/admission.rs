//! Admission: whether the operator may act on a job at all. The operator's deployer sets an
//! [`OperatorPolicy`] (allow-lists of source buckets, destination accounts, roles, images and
//! networks); a job author can only pick within it. A job that fails [`admit`] (or
//! `model::validate`, which the operator runs on every read: an item written around the CLI is
//! bad input like any other) is Blocked before `observe` runs, so it causes no AWS call at all.
//! Pure: no IO, cannot fail; table-tested.
//!
//! Guarantees: with the default (empty) policy every job is refused. Only `allow_any`, the
//! flagged local/emulator mode, admits everything that validates.

use globset::{Glob, GlobMatcher};

use super::desired::Settings;
use crate::model::{CopyJob, validate};

/// The condition that records admission.
pub const ADMITTED: &str = "Admitted";

/// What the operator may act on, set by its deployer (`ferry operator --allow-*`).
#[derive(Debug, Clone, Default)]
pub struct OperatorPolicy {
    /// Admit every valid job: for the emulator and the quick start only.
    pub allow_any: bool,
    /// Source account and bucket pattern (`*` matches any run of characters).
    pub sources: Vec<(String, Pattern)>,
    pub destination_accounts: Vec<String>,
    /// Source and destination role ARN patterns.
    pub roles: Vec<Pattern>,
    /// Image repositories jobs may name (`registry/name`, without tag or digest).
    pub images: Vec<String>,
    /// Let jobs name images by tag; by default a job's image must be pinned `@sha256:<digest>`.
    pub image_tags: bool,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    /// Let jobs ask for a public IP.
    pub public_ip: bool,
}

/// A `*` pattern, compiled once.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

impl Pattern {
    /// A pattern where `*` matches any characters and everything else is literal.
    pub fn new(text: &str) -> Result<Pattern, String> {
        let escaped = globset::escape(text).replace("[*]", "*");
        let glob = Glob::new(&escaped).map_err(|e| format!("`{text}`: {e}"))?;
        Ok(Pattern {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn matches(&self, s: &str) -> bool {
        self.matcher.is_match(s)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// One reason a job is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule, one CamelCase word (the condition's reason).
    pub rule: &'static str,
    /// The field of the spec it concerns.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.field, self.message, self.rule)
    }
}

/// The repository of an image reference (`registry/name` without `:tag` or `@digest`) and
/// whether it is pinned by a SHA-256 digest.
pub fn image_repository(image: &str) -> (&str, bool) {
    if let Some((repo, digest)) = image.split_once("@sha256:") {
        let pinned = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        return (repo, pinned);
    }
    // A `:` after the last `/` starts a tag (a `:` before it is a registry port).
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].find(':') {
        Some(i) => (&image[..slash + i], false),
        None => (image, false),
    }
}

/// Every reason the operator may not act on `job`: the model's validation first (a stored item
/// may have been written around the CLI), then the operator's policy. Empty: admitted.
pub fn admit(job: &CopyJob, policy: &OperatorPolicy, settings: &Settings) -> Vec<Violation> {
    let mut out: Vec<Violation> = validate::validate(job)
        .into_iter()
        .map(|p| Violation {
            rule: "Invalid",
            field: p.path,
            message: p.message,
        })
        .collect();
    if !out.is_empty() || policy.allow_any {
        return out;
    }
    let spec = &job.spec;
    let mut refuse = |rule, field: &str, message: String| {
        out.push(Violation {
            rule,
            field: field.to_string(),
            message,
        })
    };
    let src = &spec.source;
    if !policy
        .sources
        .iter()
        .any(|(account, bucket)| *account == src.account && bucket.matches(&src.bucket))
    {
        refuse(
            "SourceNotAllowed",
            "spec.source.bucket",
            format!(
                "bucket {} of account {} is not among the operator's allowed sources ({})",
                src.bucket,
                src.account,
                listing(
                    policy
                        .sources
                        .iter()
                        .map(|(a, b)| format!("{a}:{}", b.as_str()))
                )
            ),
        );
    }
    // The report a job reads its object list from is read by the destination role like the
    // source: its bucket must be an allowed source too.
    if let Some(inv) = &src.inventory
        && let Some((bucket, _)) = validate::inventory_report_prefix(&inv.manifest)
    {
        let account = inv.account.as_deref().unwrap_or(&src.account);
        if !policy
            .sources
            .iter()
            .any(|(a, b)| a == account && b.matches(bucket))
        {
            refuse(
                "InventoryNotAllowed",
                "spec.source.inventory.manifest",
                format!(
                    "the report's bucket {bucket} of account {account} is not among the operator's allowed sources ({})",
                    listing(
                        policy
                            .sources
                            .iter()
                            .map(|(a, b)| format!("{a}:{}", b.as_str()))
                    )
                ),
            );
        }
    }
    let dst = &spec.destination;
    if !policy.destination_accounts.contains(&dst.account) {
        refuse(
            "DestinationNotAllowed",
            "spec.destination.account",
            format!(
                "account {} is not among the operator's allowed destination accounts ({})",
                dst.account,
                listing(policy.destination_accounts.iter().cloned())
            ),
        );
    }
    for (field, arn) in [
        ("spec.source.roleArn", &src.role_arn),
        ("spec.destination.roleArn", &dst.role_arn),
    ] {
        if !policy.roles.iter().any(|p| p.matches(arn)) {
            refuse(
                "RoleNotAllowed",
                field,
                format!(
                    "{arn} matches none of the operator's allowed roles ({})",
                    listing(policy.roles.iter().map(|p| p.as_str().to_string()))
                ),
            );
        }
    }
    let ecs = &spec.ecs;
    if let Some(image) = &ecs.image {
        // The operator's own default image is the deployer's choice; a job's is checked.
        if *image != settings.image {
            let (repo, pinned) = image_repository(image);
            if !policy.images.iter().any(|r| r == repo) {
                refuse(
                    "ImageNotAllowed",
                    "spec.ecs.image",
                    format!(
                        "repository {repo} is not among the operator's allowed images ({})",
                        listing(policy.images.iter().cloned())
                    ),
                );
            } else if !pinned && !policy.image_tags {
                refuse(
                    "ImageNotPinned",
                    "spec.ecs.image",
                    format!(
                        "{image} is not pinned; allowed: {repo}@sha256:<64 hex digits> (the operator does not allow tags)"
                    ),
                );
            }
        }
    }
    for (field, wanted, allowed, defaults, rule) in [
        (
            "spec.ecs.subnets",
            &ecs.subnets,
            &policy.subnets,
            &settings.subnets,
            "SubnetNotAllowed",
        ),
        (
            "spec.ecs.securityGroups",
            &ecs.security_groups,
            &policy.security_groups,
            &settings.security_groups,
            "SecurityGroupNotAllowed",
        ),
    ] {
        for w in wanted {
            if !allowed.contains(w) && !defaults.contains(w) {
                refuse(
                    rule,
                    field,
                    format!(
                        "{w} is not allowed; allowed: {}",
                        listing(allowed.iter().chain(defaults).cloned())
                    ),
                );
            }
        }
    }
    if ecs.assign_public_ip == Some(true) && !policy.public_ip && !settings.assign_public_ip {
        refuse(
            "PublicIpNotAllowed",
            "spec.ecs.assignPublicIp",
            "the operator does not allow public IPs for tasks".into(),
        );
    }
    if let Some(cluster) = &ecs.cluster
        && *cluster != settings.cluster
    {
        refuse(
            "ClusterNotAllowed",
            "spec.ecs.cluster",
            format!(
                "tasks run only in the operator's cluster {}",
                settings.cluster
            ),
        );
    }
    out
}

fn listing(items: impl Iterator<Item = String>) -> String {
    let all: Vec<String> = items.collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CopyJob;

    fn job(edit: impl FnOnce(&mut CopyJob)) -> CopyJob {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/jobs/logs-migration.yaml"),
        )
        .expect("example");
        let value: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        let mut job = validate::parse_value(value).expect("example parses");
        edit(&mut job);
        job
    }

    fn policy() -> OperatorPolicy {
        let j = job(|_| {});
        OperatorPolicy {
            sources: vec![(
                j.spec.source.account.clone(),
                Pattern::new(&format!("{}*", &j.spec.source.bucket[..4])).expect("pattern"),
            )],
            destination_accounts: vec![j.spec.destination.account.clone()],
            roles: vec![
                Pattern::new("arn:aws:iam::*:role/ferry-source").expect("pattern"),
                Pattern::new(&j.spec.destination.role_arn).expect("pattern"),
            ],
            images: vec!["123456789012.dkr.ecr.eu-west-1.amazonaws.com/ferry".into()],
            subnets: vec!["subnet-0a11".into()],
            security_groups: vec!["sg-0a11".into()],
            ..OperatorPolicy::default()
        }
    }

    fn settings() -> Settings {
        Settings {
            image: "ferry:operator-default".into(),
            cluster: "ferry".into(),
            subnets: vec!["subnet-0def".into()],
            ..Settings::default()
        }
    }

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn jobs_are_admitted_or_refused_by_the_rule_they_break() {
        let repo = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/ferry";
        let cases: Vec<(&str, Box<dyn Fn(&mut CopyJob)>, Vec<&str>)> = vec![
            ("the example", Box::new(|_| {}), vec![]),
            (
                "an unlisted source bucket",
                Box::new(|j| j.spec.source.bucket = "victim-data".into()),
                vec!["SourceNotAllowed"],
            ),
            (
                "a listed bucket name in another account",
                Box::new(|j| {
                    j.spec.source.account = "999999999999".into();
                    j.spec.source.role_arn = "arn:aws:iam::999999999999:role/ferry-source".into();
                }),
                vec!["SourceNotAllowed"],
            ),
            (
                "a foreign destination account and role",
                Box::new(|j| {
                    j.spec.destination.account = "999999999999".into();
                    j.spec.destination.role_arn = "arn:aws:iam::999999999999:role/x".into();
                }),
                vec!["DestinationNotAllowed", "RoleNotAllowed"],
            ),
            (
                "an inventory report in an allowed bucket",
                Box::new(|j| {
                    j.spec.source.inventory = Some(crate::model::InventoryInput {
                        manifest:
                            "s3://acme-reports/acme-logs-eu/all/2026-11-30T00-00Z/manifest.json"
                                .into(),
                        account: None,
                    });
                }),
                vec![],
            ),
            (
                "an inventory report in an unlisted bucket",
                Box::new(|j| {
                    j.spec.source.inventory = Some(crate::model::InventoryInput {
                        manifest: "s3://victim-reports/x/all/2026-11-30T00-00Z/manifest.json"
                            .into(),
                        account: None,
                    });
                }),
                vec!["InventoryNotAllowed"],
            ),
            (
                "an inventory report in a listed bucket name of another account",
                Box::new(|j| {
                    j.spec.source.inventory = Some(crate::model::InventoryInput {
                        manifest: "s3://acme-reports/x/all/2026-11-30T00-00Z/manifest.json".into(),
                        account: Some("999999999999".into()),
                    });
                }),
                vec!["InventoryNotAllowed"],
            ),
            (
                "an unlisted image",
                Box::new(|j| j.spec.ecs.image = Some("evil.example/ferry@sha256:00".into())),
                vec!["ImageNotAllowed"],
            ),
            (
                "a listed image by tag",
                Box::new(move |j| j.spec.ecs.image = Some(format!("{repo}:latest"))),
                vec!["ImageNotPinned"],
            ),
            (
                "a listed image by digest",
                Box::new(move |j| j.spec.ecs.image = Some(format!("{repo}@sha256:{DIGEST}"))),
                vec![],
            ),
            (
                "the operator's default image named explicitly",
                Box::new(|j| j.spec.ecs.image = Some("ferry:operator-default".into())),
                vec![],
            ),
            (
                "listed and default networks",
                Box::new(|j| {
                    j.spec.ecs.subnets = vec!["subnet-0a11".into(), "subnet-0def".into()];
                    j.spec.ecs.security_groups = vec!["sg-0a11".into()];
                }),
                vec![],
            ),
            (
                "an unlisted subnet and security group",
                Box::new(|j| {
                    j.spec.ecs.subnets = vec!["subnet-0bad".into()];
                    j.spec.ecs.security_groups = vec!["sg-0bad".into()];
                }),
                vec!["SubnetNotAllowed", "SecurityGroupNotAllowed"],
            ),
            (
                "a public IP",
                Box::new(|j| j.spec.ecs.assign_public_ip = Some(true)),
                vec!["PublicIpNotAllowed"],
            ),
            (
                "another cluster",
                Box::new(|j| j.spec.ecs.cluster = Some("elsewhere".into())),
                vec!["ClusterNotAllowed"],
            ),
            (
                "an invalid name",
                Box::new(|j| j.metadata.name = "a#b".into()),
                vec!["Invalid"],
            ),
        ];
        for (what, edit, want) in cases {
            let j = job(edit);
            let mut got: Vec<&str> = admit(&j, &policy(), &settings())
                .iter()
                .map(|v| v.rule)
                .collect();
            got.dedup();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn an_empty_policy_refuses_everything_and_allow_any_only_validates() {
        let j = job(|_| {});
        assert!(!admit(&j, &OperatorPolicy::default(), &settings()).is_empty());
        let any = OperatorPolicy {
            allow_any: true,
            ..OperatorPolicy::default()
        };
        assert!(admit(&j, &any, &settings()).is_empty());
        let bad = job(|j| j.spec.source.region = "mars-1".into());
        assert_eq!(admit(&bad, &any, &settings())[0].rule, "Invalid");
    }

    #[test]
    fn image_references_split_into_repository_and_pinning() {
        for (image, repo, pinned) in [
            ("ferry", "ferry", false),
            ("ferry:1.2", "ferry", false),
            (
                "registry:5000/team/ferry:1.2",
                "registry:5000/team/ferry",
                false,
            ),
            (
                &format!("registry:5000/ferry@sha256:{DIGEST}") as &str,
                "registry:5000/ferry",
                true,
            ),
            ("ferry@sha256:abc", "ferry", false),
        ] {
            assert_eq!(image_repository(image), (repo, pinned), "{image}");
        }
    }

    #[test]
    fn patterns_treat_only_the_star_as_special() {
        let p = Pattern::new("logs-*").expect("pattern");
        assert!(p.matches("logs-2024"));
        assert!(!p.matches("xlogs-2024"));
        let q = Pattern::new("a?b[c]").expect("pattern");
        assert!(q.matches("a?b[c]"));
        assert!(!q.matches("axbc"));
    }
}
