//! The gateway's HTTP API, driven through `router(...)` with scripted backends, and the
//! upstream backend against a small OpenAI-compatible server started in-process.

mod bounds;
mod common;
mod deployments;
mod errors;
mod files;
mod hub;
mod messages;
mod ops;
mod responses;
mod streaming;
mod tenant_delete;
mod tenants;
mod tools;
mod upstream;
mod validation;
