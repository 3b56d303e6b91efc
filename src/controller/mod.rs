//! The operator's reconciler (being built): for now the pure pieces it will apply — the source
//! bucket policy statement and its merge into existing policies.

pub mod policy;
