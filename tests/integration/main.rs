//! Integration tests: the real `ferry` binary and library against a real moto server.

mod support;

mod cli;
mod observability;
mod operator;
mod worker;
