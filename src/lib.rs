//! ferry: declarative cross-account, cross-region S3 copies, reconciled like Kubernetes objects.
//! See ARCHITECTURE.md for the map of modules.

pub mod agent;
pub mod aws;
pub mod cli;
pub mod controller;
pub mod digest;
pub mod keyrange;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod permissions;
pub mod store;
pub mod worker;
