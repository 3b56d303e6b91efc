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
