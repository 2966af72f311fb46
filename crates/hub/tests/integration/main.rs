//! The hub against both databases: every scenario runs as `NAME::sqlite` and
//! `NAME::postgres` (PostgreSQL must be reachable; see `common.rs`).

mod common;
mod hardening;
mod remote;
mod scenarios;
