//! Continuous batching: [`state`] decides (pure, unit-tested), [`worker`] acts on llama.cpp.

pub mod state;
pub mod worker;
