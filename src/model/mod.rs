//! The CopyJob API: spec and status types, reading job files, validation and the JSON Schema.
//! Imports no AWS crate, so an editor plugin or a CI linter can use it without AWS.

pub mod load;
pub mod locate;
pub mod types;
pub mod validate;

pub use load::{Document, Problems, load};
pub use types::*;
pub use validate::Problem;

/// The JSON Schema of a CopyJob document.
pub fn schema_value() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(CopyJob)).unwrap_or_default()
}

/// The JSON Schema as committed in `schemas/copyjob.schema.json` (pretty, newline-terminated).
pub fn schema_json() -> String {
    let mut s = serde_json::to_string_pretty(&schema_value()).unwrap_or_default();
    s.push('\n');
    s
}

/// A valid job named `j` (source `src` in 111111111111, destination `dst` in 222222222222), for
/// unit tests.
#[cfg(test)]
pub fn test_job() -> CopyJob {
    serde_saphyr::from_str(
        r#"
apiVersion: ferry.dev/v1alpha1
kind: CopyJob
metadata: { name: j }
spec:
  source: { account: "111111111111", region: eu-west-1, bucket: src, roleArn: "arn:aws:iam::111111111111:role/s" }
  destination: { account: "222222222222", region: us-east-1, bucket: dst, roleArn: "arn:aws:iam::222222222222:role/d" }
"#,
    )
    .expect("the test job parses")
}
