//! The source bucket policy statement ferry owns, and merging it into (or removing it from) a
//! bucket policy that may hold other statements. Pure: the operator reads the policy, calls these
//! functions, and writes the result back with a conditional step of its own.
//!
//! Every statement that is not ferry's (found by `Sid`) is kept exactly as it was: same keys in
//! the same order, same values.

use serde_json::{Map, Value, json};

use crate::model::CopyJob;

/// The `Sid` of ferry's statement for a job of one installation: `Ferry`, the installation id
/// (so two operators sharing a source bucket never take each other's statements for their
/// own), the job name without dashes (a Sid allows only letters and digits), and a short hash
/// of the exact name so `a-b` and `ab` differ.
pub fn statement_id(installation: &str, job: &str) -> String {
    let clean: String = job.chars().filter(char::is_ascii_alphanumeric).collect();
    let hash = job.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("Ferry{installation}{clean}{:08x}", hash as u32)
}

/// S3's limit on a bucket policy: 20 KB (20,480 bytes) without whitespace (S3 User Guide,
/// "Adding a bucket policy by using the Amazon S3 console": "Bucket policies are limited to
/// 20 KB in size").
pub const MAX_POLICY_BYTES: usize = 20_480;

pub use crate::permissions::literal;

/// The statement that lets the job's destination role list and read the source bucket/prefix.
pub fn statement(job: &CopyJob, installation: &str) -> Value {
    let src = &job.spec.source;
    let bucket_arn = format!("arn:aws:s3:::{}", src.bucket);
    let mut actions = vec!["s3:GetObject"];
    if job.spec.copy.tags {
        actions.push("s3:GetObjectTagging");
    }
    if job.spec.copy.acl {
        actions.push("s3:GetObjectAcl");
    }
    let objects = format!("{bucket_arn}/{}*", literal(&src.prefix));
    let mut list = json!({
        "Effect": "Allow",
        "Principal": { "AWS": job.spec.destination.role_arn },
        "Action": ["s3:ListBucket"],
        "Resource": bucket_arn,
    });
    if !src.prefix.is_empty() {
        list["Condition"] =
            json!({ "StringLike": { "s3:prefix": [format!("{}*", literal(&src.prefix))] } });
    }
    // One Sid per job covers both statements: the list statement gets the Sid + "List".
    let sid = statement_id(installation, &job.metadata.name);
    list["Sid"] = Value::String(format!("{sid}List"));
    json!([
        list,
        {
            "Sid": sid,
            "Effect": "Allow",
            "Principal": { "AWS": job.spec.destination.role_arn },
            "Action": actions,
            "Resource": objects,
        }
    ])
}

/// Errors in an existing policy document.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the bucket policy is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the bucket policy has no `Statement` list")]
    NoStatements,
    #[error(
        "with ferry's statements the bucket policy would have {bytes} bytes; S3 allows {MAX_POLICY_BYTES}"
    )]
    TooLarge { bytes: usize },
}

fn is_ours(statement: &Value, sid: &str) -> bool {
    statement
        .get("Sid")
        .and_then(Value::as_str)
        .is_some_and(|s| s == sid || s == format!("{sid}List"))
}

/// The policy with ferry's statements for `job` present and current. `None` if `existing`
/// already has them exactly (nothing to write).
pub fn merge(
    existing: Option<&str>,
    job: &CopyJob,
    installation: &str,
) -> Result<Option<String>, PolicyError> {
    let sid = statement_id(installation, &job.metadata.name);
    let mut doc = parse(existing)?;
    let ours = statement(job, installation);
    let statements = statements_mut(&mut doc)?;
    let current: Vec<Value> = statements
        .iter()
        .filter(|s| is_ours(s, &sid))
        .cloned()
        .collect();
    if Value::Array(current) == ours {
        return Ok(None);
    }
    statements.retain(|s| !is_ours(s, &sid));
    if let Value::Array(new) = ours {
        statements.extend(new);
    }
    let text = serde_json::to_string(&doc).map_err(PolicyError::Json)?;
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge { bytes: text.len() });
    }
    Ok(Some(text))
}

/// The policy without ferry's statements `sid` (and `sid` + `List`): `Ok(None)` if there were
/// none, `Ok(Some(None))` if nothing else is left (delete the policy), `Ok(Some(Some(doc)))`
/// otherwise.
pub fn remove(existing: Option<&str>, sid: &str) -> Result<Option<Option<String>>, PolicyError> {
    let Some(text) = existing else {
        return Ok(None);
    };
    let mut doc = parse(Some(text))?;
    let statements = statements_mut(&mut doc)?;
    let before = statements.len();
    statements.retain(|s| !is_ours(s, sid));
    if statements.len() == before {
        return Ok(None);
    }
    if statements.is_empty() {
        return Ok(Some(None));
    }
    Ok(Some(Some(
        serde_json::to_string(&doc).map_err(PolicyError::Json)?,
    )))
}

fn parse(existing: Option<&str>) -> Result<Value, PolicyError> {
    match existing {
        None => Ok(json!({ "Version": "2012-10-17", "Statement": [] })),
        Some(t) => serde_json::from_str(t).map_err(PolicyError::Json),
    }
}

fn statements_mut(doc: &mut Value) -> Result<&mut Vec<Value>, PolicyError> {
    let obj: &mut Map<String, Value> = doc.as_object_mut().ok_or(PolicyError::NoStatements)?;
    let st = obj
        .entry("Statement")
        .or_insert_with(|| Value::Array(Vec::new()));
    if st.is_object() {
        // A single statement may be written as an object; keep it, as a one-element list.
        *st = Value::Array(vec![st.take()]);
    }
    st.as_array_mut().ok_or(PolicyError::NoStatements)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INST: &str = "0123abcd4567";

    fn job(name: &str, prefix: &str) -> CopyJob {
        let yaml = format!(
            r#"apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: {{ name: {name} }}
spec:
  source: {{ account: "111111111111", region: eu-west-1, bucket: src, prefix: "{prefix}", roleArn: "arn:aws:iam::111111111111:role/s" }}
  destination: {{ account: "222222222222", region: us-east-1, bucket: dst, roleArn: "arn:aws:iam::222222222222:role/d" }}
"#
        );
        serde_saphyr::from_str(&yaml).expect("job")
    }

    const FOREIGN: &str = r#"{"Sid":"KeepMe","Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::src","arn:aws:s3:::src/*"],"Condition":{"Bool":{"aws:SecureTransport":"false"}}}"#;

    #[test]
    fn merge_adds_our_statements_and_keeps_foreign_ones_exactly() {
        let existing = format!(r#"{{"Version":"2012-10-17","Statement":[{FOREIGN}]}}"#);
        let merged = merge(Some(&existing), &job("logs", "a/"), INST)
            .unwrap()
            .expect("changed");
        assert!(
            merged.contains(FOREIGN),
            "foreign statement kept byte for byte: {merged}"
        );
        let doc: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 3);
        assert_eq!(
            merge(Some(&merged), &job("logs", "a/"), INST).unwrap(),
            None,
            "merging twice writes nothing"
        );
        let changed = merge(Some(&merged), &job("logs", "b/"), INST)
            .unwrap()
            .expect("prefix change rewrites ours");
        assert!(
            changed.contains("arn:aws:s3:::src/b/*") && !changed.contains("arn:aws:s3:::src/a/*")
        );
        assert!(changed.contains(FOREIGN));
    }

    #[test]
    fn two_installations_granting_the_same_job_name_keep_both_statements() {
        let other = "89ef0123cdef";
        let a = merge(None, &job("logs", ""), INST).unwrap().unwrap();
        let both = merge(Some(&a), &job("logs", "x/"), other).unwrap().unwrap();
        let doc: Value = serde_json::from_str(&both).unwrap();
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 4);
        let left = remove(Some(&both), &statement_id(INST, "logs"))
            .unwrap()
            .expect("ours was there")
            .expect("the other installation's remain");
        assert_eq!(
            left,
            merge(None, &job("logs", "x/"), other).unwrap().unwrap()
        );
    }

    #[test]
    fn remove_takes_out_only_our_statements() {
        let existing = format!(r#"{{"Version":"2012-10-17","Statement":[{FOREIGN}]}}"#);
        let merged = merge(Some(&existing), &job("logs", ""), INST)
            .unwrap()
            .unwrap();
        let other = merge(Some(&merged), &job("other", ""), INST)
            .unwrap()
            .unwrap();
        let left = remove(Some(&other), &statement_id(INST, "logs"))
            .unwrap()
            .expect("ours was there")
            .expect("others remain");
        assert_eq!(
            left,
            merge(Some(&existing), &job("other", ""), INST)
                .unwrap()
                .unwrap()
        );
        assert_eq!(
            remove(Some(&existing), &statement_id(INST, "logs")).unwrap(),
            None,
            "nothing of ours: nothing to write"
        );
        let only_ours = merge(None, &job("logs", ""), INST).unwrap().unwrap();
        assert_eq!(
            remove(Some(&only_ours), &statement_id(INST, "logs")).unwrap(),
            Some(None),
            "empty policy is deleted"
        );
        assert_eq!(remove(None, &statement_id(INST, "logs")).unwrap(), None);
    }

    #[test]
    fn wildcards_in_a_prefix_are_written_as_literals() {
        let cases = [
            ("plain/", "plain/"),
            ("a*b/", "a${*}b/"),
            ("what?/", "what${?}/"),
            ("$HOME/", "${$}HOME/"),
            ("${*}", "${$}{${*}}"),
            ("ü/", "ü/"),
        ];
        for (prefix, want) in cases {
            assert_eq!(literal(prefix), want, "{prefix}");
        }
        let st = statement(&job("logs", "a*b/"), INST);
        assert_eq!(st[0]["Condition"]["StringLike"]["s3:prefix"][0], "a${*}b/*");
        assert_eq!(st[1]["Resource"], "arn:aws:s3:::src/a${*}b/*");
    }

    #[test]
    fn the_statement_grants_no_action_ferry_does_not_use() {
        let st = statement(&job("logs", ""), INST);
        // Tags are kept by default; versions are never read (copies name no versionId).
        assert_eq!(
            st[1]["Action"],
            json!(["s3:GetObject", "s3:GetObjectTagging"])
        );
        assert_eq!(st[0]["Action"], json!(["s3:ListBucket"]));
    }

    #[test]
    fn a_merge_that_would_pass_20_kib_is_refused_and_one_just_under_is_written() {
        let filler = |n: usize| {
            let statements: Vec<Value> = (0..n)
                .map(|i| {
                    json!({"Sid": format!("F{i}"), "Effect": "Deny", "Principal": "*",
                    "Action": "s3:DeleteObject", "Resource": format!("arn:aws:s3:::src/{i:0>80}")})
                })
                .collect();
            json!({"Version": "2012-10-17", "Statement": statements}).to_string()
        };
        let mut n = 1;
        while merge(Some(&filler(n + 1)), &job("logs", ""), INST).is_ok() {
            n += 1;
        }
        let fits = merge(Some(&filler(n)), &job("logs", ""), INST)
            .unwrap()
            .unwrap();
        assert!(fits.len() <= MAX_POLICY_BYTES);
        match merge(Some(&filler(n + 1)), &job("logs", ""), INST) {
            Err(PolicyError::TooLarge { bytes }) => assert!(bytes > MAX_POLICY_BYTES),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statement_ids_are_valid_and_distinct() {
        let a = statement_id(INST, "a-b");
        assert_ne!(
            a,
            statement_id("89ef0123cdef", "a-b"),
            "another installation's job of the same name has another Sid"
        );
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, statement_id(INST, "ab"));
    }

    #[test]
    fn the_list_permission_is_limited_to_the_prefix() {
        let st = statement(&job("logs", "2024/"), INST);
        assert_eq!(st[0]["Condition"]["StringLike"]["s3:prefix"][0], "2024/*");
        assert_eq!(st[1]["Resource"], "arn:aws:s3:::src/2024/*");
        assert_eq!(
            st[1]["Principal"]["AWS"],
            "arn:aws:iam::222222222222:role/d"
        );
    }
}
