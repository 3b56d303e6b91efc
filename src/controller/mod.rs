//! The operator's reconciler (being built): for now the pure pieces it will apply — the source
//! bucket policy statement and its merge into existing policies (`policy`), and the decisions
//! about stopped tasks and their backoff (`restart`).

pub mod policy;
pub mod restart;
