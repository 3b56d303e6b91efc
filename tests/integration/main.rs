//! Integration tests: the real `ferry` binary and library against a real moto server.

mod support;

mod cli;
mod deploy;
mod faults;
mod habits;
mod inventory;
mod observability;
mod operator;
mod races;
mod runs;
pub mod strict;
mod trust;
mod worker;
