//! The elastic control plane: deployments of models as served names, their replicas, a fair
//! admission queue per deployment, the autoscaler, and placement under a node's budgets.

pub mod autoscale;
pub mod footprint;
pub mod gguf;
pub mod placement;
pub mod queue;
