//! Tenancy against both databases. Every scenario runs twice: `NAME::sqlite` and
//! `NAME::postgres` (PostgreSQL must be reachable; see `common.rs`).

mod budgets;
mod common;
mod deployments;
mod invariants;
mod keys;
mod ledger;
mod limits;
mod mcp;
mod members;
mod usage;
