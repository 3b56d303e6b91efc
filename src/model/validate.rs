//! Validation beyond the schema: unknown fields (with "did you mean"), AWS naming rules, Fargate
//! sizes, cron syntax, and cross-field rules. Pure functions; every problem is reported, not only
//! the first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::load::Document;
use super::types::{API_VERSION, CopyJob, EncryptionKind, KIND, ObjectOwnership, RunMode};

/// One problem in one field of one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: Option<PathBuf>,
    pub index: Option<usize>,
    /// Dotted field path, e.g. `spec.source.bucket` (empty for the whole document).
    pub path: String,
    pub message: String,
    /// Line and column of the field in its file (YAML), when known.
    pub at: Option<(u64, u64)>,
}

impl Problem {
    fn field(path: &str, message: impl Into<String>) -> Problem {
        Problem {
            file: None,
            index: None,
            path: path.to_string(),
            message: message.into(),
            at: None,
        }
    }

    /// A problem with a whole file.
    pub fn file(file: &Path, message: &str) -> Problem {
        Problem {
            file: Some(file.to_path_buf()),
            index: None,
            path: String::new(),
            message: message.into(),
            at: None,
        }
    }

    /// A problem located in a document of a file.
    pub fn new(file: &Path, index: usize, path: &str, message: &str) -> Problem {
        Problem::field(path, message).at(file, index)
    }

    /// Locates a field problem in a file's document.
    pub fn at(mut self, file: &Path, index: usize) -> Problem {
        self.file = Some(file.to_path_buf());
        self.index = Some(index);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some((line, column)) = self.at {
                write!(f, ":{line}:{column}")?;
            }
            if let Some(i) = self.index {
                write!(f, " (document {i})")?;
            }
            write!(f, ": ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Turns a parsed YAML/JSON value into a CopyJob: first every unknown field (checked against the
/// generated schema), then the first type error with its field path.
pub fn parse_value(value: Value) -> Result<CopyJob, Vec<Problem>> {
    let schema = super::schema_value();
    let mut problems = Vec::new();
    unknown_fields(&value, &schema, &schema, "", &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_path_to_error::deserialize::<_, CopyJob>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let mut message = e.into_inner().to_string();
        if path.ends_with("account") && message.contains("integer") {
            message.push_str(
                " (quote account ids in YAML, e.g. \"012345678901\", or leading zeros are lost)",
            );
        }
        vec![Problem::field(&path, message)]
    })
}

fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        if let Some(name) = r.strip_prefix("#/$defs/") {
            if let Some(def) = root.get("$defs").and_then(|d| d.get(name)) {
                return resolve(root, def);
            }
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(branches) = node.get(key).and_then(Value::as_array) {
            for b in branches {
                let r = resolve(root, b);
                if r.get("properties").is_some() || r.get("items").is_some() {
                    return r;
                }
            }
        }
    }
    node
}

fn unknown_fields(value: &Value, node: &Value, root: &Value, path: &str, out: &mut Vec<Problem>) {
    let node = resolve(root, node);
    match value {
        Value::Object(map) => {
            let Some(props) = node.get("properties").and_then(Value::as_object) else {
                return;
            };
            let closed = node.get("additionalProperties") == Some(&Value::Bool(false));
            for (k, v) in map {
                let child = join(path, k);
                match props.get(k) {
                    Some(p) => unknown_fields(v, p, root, &child, out),
                    None if closed => {
                        let allowed: Vec<&str> = props.keys().map(String::as_str).collect();
                        let mut msg = format!("unknown field `{k}`");
                        if let Some(s) = did_you_mean(k, &allowed) {
                            msg.push_str(&format!(" (did you mean `{s}`?)"));
                        }
                        msg.push_str(&format!("; allowed here: {}", allowed.join(", ")));
                        out.push(Problem::field(&child, msg));
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = node.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(v, item, root, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min()
        .map(|(_, c)| c)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Every semantic problem of one job.
pub fn validate(job: &CopyJob) -> Vec<Problem> {
    let mut p = Vec::new();
    if job.api_version != API_VERSION {
        p.push(Problem::field(
            "apiVersion",
            format!(
                "`{}` is not supported; allowed: {API_VERSION}",
                job.api_version
            ),
        ));
    }
    if job.kind != KIND {
        p.push(Problem::field(
            "kind",
            format!("`{}` is not supported; allowed: {KIND}", job.kind),
        ));
    }
    if let Err(m) = check_dns_label(&job.metadata.name) {
        p.push(Problem::field("metadata.name", m));
    }
    let s = &job.spec;
    for (side, account, region, bucket, prefix, role) in [
        (
            "source",
            &s.source.account,
            &s.source.region,
            &s.source.bucket,
            &s.source.prefix,
            &s.source.role_arn,
        ),
        (
            "destination",
            &s.destination.account,
            &s.destination.region,
            &s.destination.bucket,
            &s.destination.prefix,
            &s.destination.role_arn,
        ),
    ] {
        let f = |name: &str| format!("spec.{side}.{name}");
        let account_ok = is_account(account);
        if !account_ok {
            p.push(Problem::field(&f("account"), format!("`{account}` is not an AWS account id; allowed: exactly 12 digits (quote it in YAML)")));
        }
        if let Err(m) = check_region(region) {
            p.push(Problem::field(&f("region"), m));
        }
        if let Err(m) = check_bucket(bucket) {
            p.push(Problem::field(&f("bucket"), m));
        }
        if prefix.len() > 1024 {
            p.push(Problem::field(
                &f("prefix"),
                "is longer than 1024 bytes, the S3 key limit",
            ));
        }
        match role_account(role) {
            Err(m) => p.push(Problem::field(&f("roleArn"), m)),
            Ok(acct) if account_ok && acct != account.as_str() => p.push(Problem::field(
                &f("roleArn"),
                format!("role is in account {acct} but spec.{side}.account is {account}; the role must belong to the {side} account"),
            )),
            Ok(_) => {}
        }
    }
    if s.source.bucket == s.destination.bucket
        && (s.source.prefix.starts_with(&s.destination.prefix)
            || s.destination.prefix.starts_with(&s.source.prefix))
    {
        p.push(Problem::field(
            "spec.destination",
            format!(
                "source and destination overlap (bucket `{}`, prefixes `{}` and `{}`); allowed: another bucket, or prefixes neither of which contains the other",
                s.source.bucket, s.source.prefix, s.destination.prefix
            ),
        ));
    }
    if let Some(inv) = &s.source.inventory {
        let f = |name: &str| format!("spec.source.inventory.{name}");
        match parse_s3_uri(&inv.manifest) {
            Err(m) => p.push(Problem::field(&f("manifest"), m)),
            Ok((bucket, key)) => {
                if let Err(m) = check_bucket(bucket) {
                    p.push(Problem::field(&f("manifest"), m));
                }
                if !key.ends_with("manifest.json") {
                    p.push(Problem::field(
                        &f("manifest"),
                        format!("`{}` does not name a manifest; allowed: the URI of an S3 Inventory report's manifest.json", inv.manifest),
                    ));
                }
            }
        }
        if let Some(account) = &inv.account
            && !is_account(account)
        {
            p.push(Problem::field(&f("account"), format!("`{account}` is not an AWS account id; allowed: exactly 12 digits (quote it in YAML)")));
        }
        // An inventory is a snapshot: an object written after it is missing from it, and
        // deleting what it lacks would delete data the source still has.
        if s.copy.delete_extraneous {
            p.push(Problem::field(
                "spec.copy.deleteExtraneous",
                "cannot be used with spec.source.inventory (a report does not list objects written after it; deleting what it lacks could delete live data); allowed: false",
            ));
        }
    }
    if let Some(key) = &s.destination.kms_key_id {
        if let Err(m) = check_kms_key(key, &s.destination.region) {
            p.push(Problem::field("spec.destination.kmsKeyId", m));
        }
    }
    if let Some(create) = &s.destination.create {
        let enc = &create.encryption;
        match (enc.kind, &enc.kms_key_id) {
            (EncryptionKind::SseKms, None) => p.push(Problem::field(
                "spec.destination.create.encryption.kmsKeyId",
                "is required with type SSE-KMS",
            )),
            (EncryptionKind::SseS3, Some(_)) => p.push(Problem::field(
                "spec.destination.create.encryption.kmsKeyId",
                "is only allowed with type SSE-KMS",
            )),
            (EncryptionKind::SseKms, Some(key)) => {
                if let Err(m) = check_kms_key(key, &s.destination.region) {
                    p.push(Problem::field(
                        "spec.destination.create.encryption.kmsKeyId",
                        m,
                    ));
                }
            }
            (EncryptionKind::SseS3, None) => {}
        }
        // A bucket with ACLs disabled refuses every ACL (AccessControlListNotSupported).
        if s.copy.acl && create.object_ownership == ObjectOwnership::BucketOwnerEnforced {
            p.push(Problem::field(
                "spec.copy.acl",
                "needs a destination bucket that takes ACLs: set spec.destination.create.objectOwnership to BucketOwnerPreferred or ObjectWriter (BucketOwnerEnforced, the default, disables ACLs)",
            ));
        }
    }
    for (name, patterns) in [("include", &s.copy.include), ("exclude", &s.copy.exclude)] {
        for (i, pat) in patterns.iter().enumerate() {
            if let Err(e) = globset::Glob::new(pat) {
                p.push(Problem::field(
                    &format!("spec.copy.{name}[{i}]"),
                    format!("`{pat}` is not a valid glob: {e}"),
                ));
            }
        }
    }
    if !(5..=5120).contains(&s.copy.multipart_threshold_mib) {
        p.push(Problem::field(
            "spec.copy.multipartThresholdMiB",
            format!(
                "{} is out of range; allowed: 5 to 5120",
                s.copy.multipart_threshold_mib
            ),
        ));
    }
    if let Some(uri) = &s.copy.report_uri {
        if let Err(m) = parse_s3_uri(uri).and_then(|(b, _)| check_bucket(b)) {
            p.push(Problem::field("spec.copy.reportUri", m));
        }
    }
    let r = &s.run;
    match (r.mode, &r.schedule) {
        (RunMode::Sync, None) => p.push(Problem::field(
            "spec.run.schedule",
            "is required with mode: Sync (a cron expression such as \"0 */6 * * *\")",
        )),
        (RunMode::Once, Some(_)) => p.push(Problem::field(
            "spec.run.schedule",
            "is only allowed with mode: Sync",
        )),
        (_, Some(expr)) => {
            if let Err(m) = check_cron(expr) {
                p.push(Problem::field("spec.run.schedule", m));
            }
        }
        (RunMode::Once, None) => {}
    }
    if let Some(tz) = &r.time_zone {
        if r.schedule.is_none() {
            p.push(Problem::field(
                "spec.run.timeZone",
                "is only allowed with a schedule (mode: Sync)",
            ));
        } else if tz.parse::<chrono_tz::Tz>().is_err() {
            p.push(Problem::field(
                "spec.run.timeZone",
                format!(
                    "`{tz}` is not a time zone; allowed: an IANA name such as Europe/Berlin or UTC"
                ),
            ));
        }
    }
    if let Some(d) = r.starting_deadline_seconds {
        if r.schedule.is_none() {
            p.push(Problem::field(
                "spec.run.startingDeadlineSeconds",
                "is only allowed with a schedule (mode: Sync)",
            ));
        } else if d == 0 {
            p.push(Problem::field(
                "spec.run.startingDeadlineSeconds",
                "0 would skip every tick; allowed: 1 or more seconds",
            ));
        }
    }
    if !(1..=100).contains(&r.parallelism) {
        p.push(Problem::field(
            "spec.run.parallelism",
            format!("{} is out of range; allowed: 1 to 100", r.parallelism),
        ));
    }
    if r.history_limit > 100 {
        p.push(Problem::field(
            "spec.run.historyLimit",
            format!("{} is out of range; allowed: 0 to 100", r.history_limit),
        ));
    }
    if let Err(m) = check_fargate(r.cpu, r.memory_mib) {
        p.push(Problem::field("spec.run.memoryMiB", m));
    }
    if r.backoff_limit > 100 {
        p.push(Problem::field(
            "spec.run.backoffLimit",
            format!("{} is out of range; allowed: 0 to 100", r.backoff_limit),
        ));
    }
    if r.active_deadline_seconds == Some(0) {
        p.push(Problem::field(
            "spec.run.activeDeadlineSeconds",
            "must be at least 1",
        ));
    }
    if r.max_requests_per_second == Some(0) {
        p.push(Problem::field(
            "spec.run.maxRequestsPerSecond",
            "must be at least 1",
        ));
    }
    for (i, id) in s.ecs.subnets.iter().enumerate() {
        if !is_aws_id(id, "subnet-") {
            p.push(Problem::field(
                &format!("spec.ecs.subnets[{i}]"),
                format!("`{id}` is not a subnet id; allowed: subnet- followed by hex digits"),
            ));
        }
    }
    for (i, id) in s.ecs.security_groups.iter().enumerate() {
        if !is_aws_id(id, "sg-") {
            p.push(Problem::field(
                &format!("spec.ecs.securityGroups[{i}]"),
                format!("`{id}` is not a security group id; allowed: sg- followed by hex digits"),
            ));
        }
    }
    p
}

/// Problems for job names defined more than once across all documents.
pub fn duplicate_names(docs: &[Document]) -> Vec<Problem> {
    let mut seen: BTreeMap<&str, &Document> = BTreeMap::new();
    let mut out = Vec::new();
    for d in docs {
        if let Some(first) = seen.get(d.job.metadata.name.as_str()) {
            out.push(Problem::new(
                &d.file,
                d.index,
                "metadata.name",
                &format!(
                    "job `{}` is already defined in {} (document {}); job names must be unique",
                    d.job.metadata.name,
                    first.file.display(),
                    first.index
                ),
            ));
        } else {
            seen.insert(&d.job.metadata.name, d);
        }
    }
    out
}

/// A DNS-1123 label: what Kubernetes allows as a name.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a DNS-1123 label; allowed: 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

fn is_account(a: &str) -> bool {
    a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit())
}

fn is_aws_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An AWS region name such as `eu-west-1` or `us-gov-west-1`.
pub fn check_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].bytes().all(|b| b.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok_and(|n| n >= 1);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{region}` is not an AWS region name; allowed: a region such as us-east-1, eu-west-1 or ap-southeast-2"
        ))
    }
}

/// S3's bucket naming rules (general purpose buckets).
pub fn check_bucket(name: &str) -> Result<(), String> {
    let allowed = "allowed: 3-63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit";
    let why = if name.len() < 3 || name.len() > 63 {
        Some(format!("has {} characters", name.len()))
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        Some(format!("contains `{c}`"))
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("does not start and end with a letter or digit".to_string())
    } else if name.contains("..") {
        Some("contains two adjacent periods".to_string())
    } else if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        Some("is formatted as an IP address".to_string())
    } else if ["xn--", "sthree-", "amzn-s3-demo-"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        Some("starts with a reserved prefix (xn--, sthree-, amzn-s3-demo-)".to_string())
    } else if ["-s3alias", "--ol-s3", ".mrap", "--x-s3"]
        .iter()
        .any(|s| name.ends_with(s))
    {
        Some("ends with a reserved suffix (-s3alias, --ol-s3, .mrap, --x-s3)".to_string())
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some(why) => Err(format!(
            "`{name}` is not a valid bucket name: it {why}; {allowed}"
        )),
    }
}

/// Checks an IAM role ARN and returns its account.
pub fn role_account(arn: &str) -> Result<&str, String> {
    let err = || {
        format!(
            "`{arn}` is not an IAM role ARN; allowed: arn:aws:iam::ACCOUNT:role/NAME (NAME: 1-64 of letters, digits and +=,.@_-, optionally after a path)"
        )
    };
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6
        || parts[0] != "arn"
        || !matches!(parts[1], "aws" | "aws-cn" | "aws-us-gov")
        || parts[2] != "iam"
        || !parts[3].is_empty()
        || !is_account(parts[4])
    {
        return Err(err());
    }
    let Some(path_name) = parts[5].strip_prefix("role/") else {
        return Err(err());
    };
    let name = path_name.rsplit('/').next().unwrap_or_default();
    let name_ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if name_ok { Ok(parts[4]) } else { Err(err()) }
}

fn check_kms_key(key: &str, region: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.splitn(6, ':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "kms" || !is_account(parts[4]) {
        return Err(format!(
            "`{key}` is not a KMS key ARN; allowed: arn:aws:kms:REGION:ACCOUNT:key/ID or …:alias/NAME"
        ));
    }
    if parts[3] != region {
        return Err(format!(
            "key is in region {} but the destination bucket is in {region}; KMS keys are regional",
            parts[3]
        ));
    }
    Ok(())
}

/// Splits `s3://bucket/prefix`.
pub fn parse_s3_uri(uri: &str) -> Result<(&str, &str), String> {
    let rest = uri
        .strip_prefix("s3://")
        .ok_or_else(|| format!("`{uri}` is not an S3 URI; allowed: s3://BUCKET/PREFIX"))?;
    Ok(rest.split_once('/').unwrap_or((rest, "")))
}

/// The bucket and key prefix of an S3 Inventory report's files, from its manifest's URI: S3
/// writes `…/<source-bucket>/<config-id>/<YYYY-MM-DDTHH-MMZ>/manifest.json` and the data files
/// under `…/<source-bucket>/<config-id>/data/`, so the prefix is the manifest's key less its
/// last two segments (S3 User Guide, "Locating your inventory list").
pub fn inventory_report_prefix(manifest: &str) -> Option<(&str, &str)> {
    let (bucket, key) = parse_s3_uri(manifest).ok()?;
    let dated = key.rfind('/').map_or("", |i| &key[..i]);
    let prefix = dated.rfind('/').map_or("", |i| &dated[..=i]);
    Some((bucket, prefix))
}

/// The 6-field form (seconds first) the operator's scheduler takes: a 5-field expression runs at
/// second 0.
pub fn normalize_cron(expr: &str) -> String {
    if expr.split_whitespace().count() == 5 {
        format!("0 {}", expr.trim())
    } else {
        expr.trim().to_string()
    }
}

/// Cron syntax as the operator's scheduler reads it (5 fields, or 6 with seconds first).
pub fn check_cron(expr: &str) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    if fields != 5 && fields != 6 {
        return Err(format!(
            "`{expr}` has {fields} fields; allowed: 5 (minute hour day month weekday) or 6 (seconds first)"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(&normalize_cron(expr))
        .map(|_| ())
        .map_err(|e| format!("`{expr}` is not a valid cron expression ({e}); allowed: 5 fields, e.g. \"0 */6 * * *\""))
}

/// The Fargate CPU/memory pairs (MiB) AWS accepts.
pub fn fargate_memory_range(cpu: u32) -> Option<(u32, u32, u32)> {
    match cpu {
        256 => Some((512, 2048, 512)),
        512 => Some((1024, 4096, 1024)),
        1024 => Some((2048, 8192, 1024)),
        2048 => Some((4096, 16384, 1024)),
        4096 => Some((8192, 30720, 1024)),
        8192 => Some((16384, 61440, 4096)),
        16384 => Some((32768, 122880, 8192)),
        _ => None,
    }
}

fn check_fargate(cpu: u32, memory: u32) -> Result<(), String> {
    let Some((lo, hi, step)) = fargate_memory_range(cpu) else {
        return Err(format!(
            "cpu {cpu} is not a Fargate size; allowed cpu: 256, 512, 1024, 2048, 4096, 8192, 16384"
        ));
    };
    let ok = (lo..=hi).contains(&memory) && (memory % step == 0 || (cpu == 256 && memory == 512));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{memory} MiB is not valid with cpu {cpu}; allowed: {lo} to {hi} in steps of {step}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rules_accept_good_names_and_say_why_bad_ones_fail() {
        for good in ["abc", "my-bucket.logs", "a1b2c3"] {
            assert_eq!(check_bucket(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("ab", "has 2 characters"),
            ("My_Bucket", "contains `M`"),
            ("-abc", "start and end"),
            ("a..b", "adjacent periods"),
            ("192.168.1.1", "IP address"),
            ("xn--abc", "reserved prefix"),
            ("abc-s3alias", "reserved suffix"),
        ] {
            let e = check_bucket(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn fargate_pairs_follow_the_aws_table() {
        assert!(check_fargate(256, 512).is_ok());
        assert!(check_fargate(256, 4096).is_err());
        assert!(check_fargate(1024, 2048).is_ok());
        assert!(check_fargate(1024, 2500).is_err());
        assert!(check_fargate(4096, 30720).is_ok());
        assert!(check_fargate(300, 1024).is_err());
        assert!(check_fargate(8192, 20480).is_ok());
        assert!(check_fargate(8192, 18432).is_err());
    }

    #[test]
    fn role_arn_yields_its_account() {
        assert_eq!(
            role_account("arn:aws:iam::123456789012:role/x"),
            Ok("123456789012")
        );
        assert_eq!(
            role_account("arn:aws:iam::123456789012:role/path/to/x"),
            Ok("123456789012")
        );
        assert!(role_account("arn:aws:iam::123456789012:user/x").is_err());
        assert!(role_account("arn:aws:iam::12345:role/x").is_err());
        assert!(role_account("arn:aws:s3:::bucket").is_err());
    }

    #[test]
    fn regions_are_checked_by_shape() {
        for good in [
            "us-east-1",
            "eu-west-1",
            "ap-southeast-2",
            "us-gov-west-1",
            "il-central-1",
        ] {
            assert!(check_region(good).is_ok(), "{good}");
        }
        for bad in ["useast1", "us-east", "EU-west-1", "us-east-0", ""] {
            assert!(check_region(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_accepts_five_or_six_fields() {
        assert!(check_cron("0 */6 * * *").is_ok());
        assert!(check_cron("*/10 * * * * *").is_ok());
        assert!(check_cron("61 * * * *").is_err());
        assert!(check_cron("* * *").is_err());
    }

    #[test]
    fn an_inventory_reports_files_are_under_its_configuration_directory() {
        for (uri, want) in [
            (
                "s3://inv/reports/src/all/2026-11-30T00-00Z/manifest.json",
                Some(("inv", "reports/src/all/")),
            ),
            (
                "s3://inv/2026-11-30T00-00Z/manifest.json",
                Some(("inv", "")),
            ),
            ("s3://inv/manifest.json", Some(("inv", ""))),
            ("https://inv/manifest.json", None),
        ] {
            assert_eq!(inventory_report_prefix(uri), want, "{uri}");
        }
    }

    #[test]
    fn did_you_mean_finds_close_field_names() {
        assert_eq!(did_you_mean("buckt", &["bucket", "region"]), Some("bucket"));
        assert_eq!(
            did_you_mean("rolearn", &["roleArn", "region"]),
            Some("roleArn")
        );
        assert_eq!(did_you_mean("zzzzzz", &["bucket", "region"]), None);
    }
}
