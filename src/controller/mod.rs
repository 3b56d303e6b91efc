//! The operator's reconciler (being built): for now the pure pieces it will apply — the source
//! bucket policy statement and its merge into existing policies (`policy`), and the decisions
//! about stopped tasks and their backoff (`restart`), and the work queue with per-job error
//! backoff (`queue`).

pub mod policy;
pub mod queue;
pub mod restart;
