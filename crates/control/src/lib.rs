//! The elastic control plane: deployments of models under served names, their replicas, a
//! fair admission queue per deployment, the autoscaler, and placement under a node's budgets.
//! Knows no HTTP; the gateway's admin routes and the binary drive it through [`ControlPlane`].
//!
//! - [`queue`] — the pure, clock-injected admission queue `State`: bounded, maximum wait,
//!   start-time fair queuing across tenants, positions/ETAs and `Retry-After` from the
//!   observed drain rate.
//! - [`autoscale`] — the pure policy: signals → desired replica count and a reason.
//! - [`gguf`], [`footprint`], [`placement`] — sizing replicas from the model header and
//!   placing them under the node's memory and thread budgets without oversubscribing.
//! - [`deployment`] — the runtime: an actor per deployment behind a cloneable handle that
//!   implements `backend::Backend`.
//! - [`launcher`] — the seam that starts replicas (in process now; a node agent later).
//! - [`spec`] — `DeploymentSpec` and the `DeploymentStore` persistence seam (the admin API's
//!   JSON is the `wire` crate's, the stored form the binary's).
//! - [`plane`] — `ControlPlane`, the entry point.
//! - [`cluster`] — many processes: the `Discovery` and `Placement` seams, the pure placement
//!   policy, the placement leader, the node agent and the gateway's routing.

pub mod autoscale;
pub mod cluster;
pub mod deployment;
mod error;
pub mod events;
pub mod footprint;
pub mod gguf;
pub mod launcher;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod plane;
pub mod queue;
pub mod spec;

pub use deployment::{Deployment, DeploymentView, ReplicaState, ReplicaView};
pub use error::{Error, Result};
pub use events::{EventKind, ScaleEvent};
pub use footprint::{Footprint, ModelShape, Sizing};
#[cfg(feature = "engine")]
pub use launcher::EngineLauncher;
pub use launcher::{split_adapter, ReplicaLauncher, ReplicaSpec, LORA_SEPARATOR};
pub use node::NodeView;
pub use placement::{NoRoom, NodeBudget};
pub use plane::ControlPlane;
pub use spec::{DeploymentPatch, DeploymentSpec, DeploymentStore, MemoryStore, QueueSpec};
