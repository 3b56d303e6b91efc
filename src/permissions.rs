//! The IAM permissions a job needs from the two roles its users create: the source role (the
//! operator manages ferry's statement in the source bucket policy with it) and the destination
//! role (the operator checks and creates the destination bucket, the workers copy with it).
//! `ferry policies` prints them; README and `examples/deploy/policies/` show them; the strict
//! emulator layer evaluates them on every S3 request of a full run (tests/integration). Pure.
//!
//! Each action is here because a call needs it (S3 User Guide, "Required permissions for Amazon
//! S3 API operations"): HeadBucket and ListObjectsV2 need `s3:ListBucket`, HeadObject needs
//! `s3:GetObject`, CopyObject needs `s3:GetObject` on the source and `s3:PutObject` on the
//! destination (with tags kept, `s3:GetObjectTagging` and `s3:PutObjectTagging`), a multipart
//! upload needs `s3:PutObject` and, to abort, `s3:AbortMultipartUpload`, CreateBucket with
//! Object Ownership needs `s3:PutBucketOwnershipControls`.

use serde_json::{Value, json};

use crate::model::CopyJob;

/// A key prefix as a literal inside a policy's `Resource` or `StringLike` value: `*`, `?` and
/// `$` are policy syntax there, written `${*}`, `${?}` and `${$}` to mean themselves (IAM User
/// Guide, "IAM JSON policy elements: Resource": "special characters").
pub fn literal(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        match c {
            '*' | '?' | '$' => {
                out.push_str("${");
                out.push(c);
                out.push('}');
            }
            c => out.push(c),
        }
    }
    out
}

/// The source role's permissions: read and rewrite the source bucket's policy (ferry's own
/// statements only; the policy is deleted only when nothing else is left in it).
pub fn source_role_policy(job: &CopyJob) -> Value {
    let bucket = format!("arn:aws:s3:::{}", job.spec.source.bucket);
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ManageFerryStatementInBucketPolicy",
            "Effect": "Allow",
            "Action": ["s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"],
            "Resource": bucket,
        }]
    })
}

/// The destination role's permissions: list and read the source prefix, check (and, with
/// `destination.create`, create and configure) the destination bucket, write the destination
/// prefix and the report.
pub fn destination_role_policy(job: &CopyJob) -> Value {
    let s = &job.spec;
    let src = format!("arn:aws:s3:::{}", s.source.bucket);
    let dst = format!("arn:aws:s3:::{}", s.destination.bucket);

    let mut read = vec!["s3:GetObject"];
    if s.copy.tags {
        read.push("s3:GetObjectTagging");
    }
    if s.copy.acl {
        read.push("s3:GetObjectAcl");
    }
    let mut list_source = json!({
        "Sid": "ListSource",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": src,
    });
    if !s.source.prefix.is_empty() {
        list_source["Condition"] =
            json!({ "StringLike": { "s3:prefix": [format!("{}*", literal(&s.source.prefix))] } });
    }
    let mut bucket = vec!["s3:ListBucket", "s3:ListBucketMultipartUploads"];
    if let Some(create) = &s.destination.create {
        bucket.extend([
            "s3:CreateBucket",
            "s3:PutBucketOwnershipControls",
            "s3:PutEncryptionConfiguration",
            "s3:PutLifecycleConfiguration",
        ]);
        if create.versioning {
            bucket.push("s3:PutBucketVersioning");
        }
    }
    let mut write = vec!["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"];
    if s.copy.tags {
        write.push("s3:PutObjectTagging");
    }
    if s.copy.acl {
        write.push("s3:PutObjectAcl");
    }
    if s.copy.delete_extraneous {
        write.push("s3:DeleteObject");
    }
    let mut statements = vec![
        json!({
            "Sid": "ReadSource",
            "Effect": "Allow",
            "Action": read,
            "Resource": format!("{src}/{}*", literal(&s.source.prefix)),
        }),
        list_source,
        json!({
            "Sid": "DestinationBucket",
            "Effect": "Allow",
            "Action": bucket,
            "Resource": dst,
        }),
        json!({
            "Sid": "WriteDestination",
            "Effect": "Allow",
            "Action": write,
            "Resource": format!("{dst}/{}*", literal(&s.destination.prefix)),
        }),
    ];
    if let Some((bucket, prefix)) = s
        .copy
        .report_uri
        .as_deref()
        .and_then(|u| crate::model::validate::parse_s3_uri(u).ok())
    {
        let report = format!("arn:aws:s3:::{bucket}");
        statements.push(json!({
            "Sid": "WriteReport",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": format!("{report}/{}*", literal(prefix)),
        }));
        statements.push(json!({
            "Sid": "FindReportBucketRegion",
            "Effect": "Allow",
            "Action": "s3:GetBucketLocation",
            "Resource": report,
        }));
    }
    if let Some((bucket, prefix)) = s
        .source
        .inventory
        .as_ref()
        .and_then(|i| crate::model::validate::inventory_report_prefix(&i.manifest))
    {
        statements.push(json!({
            "Sid": "ReadInventoryReport",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{bucket}/{}*", literal(prefix)),
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// The most characters AWS takes in a session policy (STS AssumeRole API reference, `Policy`:
/// "The plaintext that you use for both inline and managed session policies can't exceed 2,048
/// characters").
pub const MAX_SESSION_POLICY: usize = 2048;

/// The session policy a job's workers pass when they assume the destination role: the job's
/// own buckets and prefixes, nothing else. A destination role shared by many jobs then still
/// cannot be made to read another job's source through this job's tasks (a session's
/// permissions are the intersection of the role's policies and the session policy). When long
/// prefixes would pass the limit, the same statements cover the job's buckets whole.
pub fn session_policy(job: &CopyJob) -> String {
    let exact = destination_role_policy(job).to_string();
    if exact.len() <= MAX_SESSION_POLICY {
        return exact;
    }
    let mut wide = job.clone();
    wide.spec.source.prefix.clear();
    wide.spec.destination.prefix.clear();
    if let Some((bucket, _)) = job
        .spec
        .copy
        .report_uri
        .as_deref()
        .and_then(|u| crate::model::validate::parse_s3_uri(u).ok())
    {
        wide.spec.copy.report_uri = Some(format!("s3://{bucket}/"));
    }
    if let Some(inv) = wide.spec.source.inventory.as_mut()
        && let Some((bucket, _)) = crate::model::validate::inventory_report_prefix(&inv.manifest)
    {
        inv.manifest = format!("s3://{bucket}/manifest.json");
    }
    destination_role_policy(&wide).to_string()
}

/// Every action a policy document allows, sorted and without duplicates.
pub fn actions(policy: &Value) -> Vec<String> {
    let mut out: Vec<String> = policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|st| match &st["Action"] {
            Value::String(a) => vec![a.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(copy: &str, create: &str, prefix: &str) -> CopyJob {
        let yaml = format!(
            r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: j }}
spec:
  source: {{ account: "111111111111", region: eu-west-1, bucket: src, prefix: "{prefix}", roleArn: "arn:aws:iam::111111111111:role/s" }}
  destination: {{ account: "222222222222", region: us-east-1, bucket: dst, prefix: "out/", roleArn: "arn:aws:iam::222222222222:role/d"{create} }}
  copy: {{ {copy} }}
"#
        );
        serde_saphyr::from_str(&yaml).expect("job")
    }

    #[test]
    fn session_policies_name_the_jobs_prefixes_and_fit_sts_limits_even_with_the_longest() {
        let short = job("acl: true", "", "logs/");
        let p = session_policy(&short);
        assert_eq!(p, destination_role_policy(&short).to_string());
        assert!(p.contains("arn:aws:s3:::src/logs/*"), "{p}");
        let mut long = job(
            "acl: true, deleteExtraneous: true",
            ", create: { versioning: true }",
            &"p".repeat(1024),
        );
        long.spec.destination.prefix = "q".repeat(1024);
        long.spec.source.bucket = "s".repeat(63);
        long.spec.destination.bucket = "d".repeat(63);
        long.spec.copy.report_uri = Some(format!("s3://{}/{}", "r".repeat(63), "x".repeat(900)));
        let p = session_policy(&long);
        assert!(p.len() <= MAX_SESSION_POLICY, "{} characters", p.len());
        assert!(
            p.contains(&format!("arn:aws:s3:::{}/*", "s".repeat(63))),
            "{p}"
        );
        assert_eq!(
            actions(&serde_json::from_str(&p).unwrap()),
            actions(&destination_role_policy(&long)),
            "the same actions, bucket-wide"
        );
    }

    #[test]
    fn each_option_adds_exactly_the_actions_its_calls_need() {
        let base = actions(&destination_role_policy(&job("tags: false", "", "")));
        assert_eq!(
            base,
            [
                "s3:AbortMultipartUpload",
                "s3:GetObject",
                "s3:ListBucket",
                "s3:ListBucketMultipartUploads",
                "s3:PutObject"
            ]
        );
        let cases: &[(&str, &str, &[&str])] = &[
            ("", "", &["s3:GetObjectTagging", "s3:PutObjectTagging"]),
            (
                "tags: false, acl: true",
                "",
                &["s3:GetObjectAcl", "s3:PutObjectAcl"],
            ),
            (
                "tags: false, deleteExtraneous: true",
                "",
                &["s3:DeleteObject"],
            ),
            (
                "tags: false",
                ", create: { versioning: true }",
                &[
                    "s3:CreateBucket",
                    "s3:PutBucketOwnershipControls",
                    "s3:PutBucketVersioning",
                    "s3:PutEncryptionConfiguration",
                    "s3:PutLifecycleConfiguration",
                ],
            ),
            (
                "tags: false, reportUri: \"s3://reports/ferry/\"",
                "",
                &["s3:GetBucketLocation"],
            ),
        ];
        for (copy, create, extra) in cases {
            let got = actions(&destination_role_policy(&job(copy, create, "")));
            let mut want: Vec<String> = base.clone();
            want.extend(extra.iter().map(|s| s.to_string()));
            want.sort();
            want.dedup();
            assert_eq!(got, want, "copy: {{{copy}}} {create}");
        }
    }

    #[test]
    fn an_inventory_job_reads_only_its_reports_directory_even_in_a_wide_session_policy() {
        let mut j = job("tags: false", "", "");
        j.spec.source.inventory = Some(crate::model::InventoryInput {
            manifest: "s3://inv/reports/src/all/2026-11-30T00-00Z/manifest.json".into(),
            account: None,
        });
        let p = destination_role_policy(&j);
        let st = p["Statement"].as_array().unwrap();
        let read = st
            .iter()
            .find(|s| s["Sid"] == "ReadInventoryReport")
            .unwrap();
        assert_eq!(read["Action"], "s3:GetObject");
        assert_eq!(read["Resource"], "arn:aws:s3:::inv/reports/src/all/*");
        j.spec.source.prefix = "p".repeat(1024);
        j.spec.destination.prefix = "q".repeat(1024);
        let wide = session_policy(&j);
        assert!(
            wide.len() <= MAX_SESSION_POLICY,
            "{} characters",
            wide.len()
        );
        assert!(wide.contains("\"arn:aws:s3:::inv/*\""), "{wide}");
    }

    #[test]
    fn resources_are_the_job_buckets_and_prefixes_with_wildcards_as_literals() {
        let p = destination_role_policy(&job("", "", "logs*/"));
        let st = p["Statement"].as_array().unwrap();
        assert_eq!(st[0]["Resource"], "arn:aws:s3:::src/logs${*}/*");
        assert_eq!(
            st[1]["Condition"]["StringLike"]["s3:prefix"][0],
            "logs${*}/*"
        );
        assert_eq!(st[2]["Resource"], "arn:aws:s3:::dst");
        assert_eq!(st[3]["Resource"], "arn:aws:s3:::dst/out/*");
        let s = source_role_policy(&job("", "", ""));
        assert_eq!(s["Statement"][0]["Resource"], "arn:aws:s3:::src");
    }
}
