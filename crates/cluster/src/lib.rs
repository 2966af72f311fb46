//! Flywheel on many machines, the transport side of `control::cluster`'s seams:
//! - [`etcd`] — `Discovery` and `Placement` on etcd (leases, a watch on the cluster prefix,
//!   the election API, fenced placement writes);
//! - [`internal`] — a node agent's internal generate API (axum), for gateways only;
//! - [`remote`] — the gateway's client of it, a `Connector` for `control`'s routing;
//! - [`proto`] — the messages of that protocol; [`secret`] — the cluster secret.

pub mod etcd;
pub mod internal;
pub mod proto;
pub mod remote;
pub mod secret;

pub use etcd::{parse_endpoints, EtcdCluster, EtcdOptions};
pub use remote::HttpConnector;
pub use secret::ClusterSecret;
