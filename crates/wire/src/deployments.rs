//! The admin API's deployment JSON (`/admin/v1/deployments…`, `/admin/v1/node`): bodies read
//! strictly into control's domain types (an unknown field is a 400 naming it), and the views of
//! deployments, replicas, the node and scale events. Control's types carry no serde: this is
//! their wire form, and the binary keeps its own stored form.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use control::{
    DeploymentPatch, DeploymentSpec, DeploymentView, NodeView, QueueSpec, ReplicaView, ScaleEvent,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, Code, Result};

/// Fields a deployment body may carry (`pinned` is the command line's, never the API's).
const SPEC_FIELDS: &[&str] = &[
    "name",
    "model",
    "min_replicas",
    "max_replicas",
    "slots_per_replica",
    "threads_per_replica",
    "context_length",
    "step_tokens",
    "idle_seconds",
    "queue",
    "tenant_weights",
];
/// Fields a `PATCH` may carry: a deployment is not renamed, and its step budget is fixed.
const PATCH_FIELDS: &[&str] = &[
    "model",
    "min_replicas",
    "max_replicas",
    "slots_per_replica",
    "threads_per_replica",
    "context_length",
    "idle_seconds",
    "queue",
    "tenant_weights",
];
const QUEUE_FIELDS: &[&str] = &["max_length", "max_wait_seconds", "tenant_share_percent"];

/// A `POST /admin/v1/deployments` body: absent fields take [`DeploymentSpec::new`]'s
/// defaults.
#[derive(Debug, Deserialize)]
struct SpecBody {
    name: String,
    model: String,
    #[serde(flatten)]
    shape: ShapeBody,
    step_tokens: Option<usize>,
}

/// What a body may set beside the name (both `POST` and `PATCH`).
#[derive(Debug, Default, Deserialize)]
struct ShapeBody {
    model: Option<String>,
    min_replicas: Option<usize>,
    max_replicas: Option<usize>,
    slots_per_replica: Option<usize>,
    threads_per_replica: Option<usize>,
    context_length: Option<u32>,
    idle_seconds: Option<u64>,
    queue: Option<QueueBody>,
    tenant_weights: Option<BTreeMap<String, u32>>,
}

/// A `queue` object: absent fields take [`QueueSpec::default`]'s values.
#[derive(Debug, Deserialize)]
struct QueueBody {
    max_length: Option<usize>,
    max_wait_seconds: Option<u64>,
    tenant_share_percent: Option<u8>,
}

impl From<QueueBody> for QueueSpec {
    fn from(q: QueueBody) -> Self {
        let d = QueueSpec::default();
        QueueSpec {
            max_length: q.max_length.unwrap_or(d.max_length),
            max_wait_seconds: q.max_wait_seconds.unwrap_or(d.max_wait_seconds),
            tenant_share_percent: q.tenant_share_percent.unwrap_or(d.tenant_share_percent),
        }
    }
}

impl From<ShapeBody> for DeploymentPatch {
    fn from(b: ShapeBody) -> Self {
        DeploymentPatch {
            model: b.model,
            min_replicas: b.min_replicas,
            max_replicas: b.max_replicas,
            slots_per_replica: b.slots_per_replica,
            threads_per_replica: b.threads_per_replica,
            context_length: b.context_length,
            idle_seconds: b.idle_seconds,
            queue: b.queue.map(QueueSpec::from),
            tenant_weights: b.tenant_weights,
        }
    }
}

/// A `POST /admin/v1/deployments` body as a spec (not yet validated: control does that).
pub fn parse_spec(body: &[u8]) -> Result<DeploymentSpec> {
    let body: SpecBody = typed(object(body, SPEC_FIELDS)?)?;
    // `model` is read by `SpecBody` itself; the flattened shape never sees it.
    let patch = DeploymentPatch::from(body.shape);
    let mut spec = patch.apply(&DeploymentSpec::new(body.name, body.model));
    spec.step_tokens = body.step_tokens;
    Ok(spec)
}

/// A `PATCH /admin/v1/deployments/{name}` body: absent fields stay as they are.
pub fn parse_patch(body: &[u8]) -> Result<DeploymentPatch> {
    let shape: ShapeBody = typed(object(body, PATCH_FIELDS)?)?;
    Ok(shape.into())
}

/// The body as a JSON object whose keys are all in `allowed` (and `queue`'s in
/// [`QUEUE_FIELDS`]).
fn object(body: &[u8], allowed: &[&str]) -> Result<Value> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::InvalidRequest,
            format!("The body is not valid JSON: {e}"),
        )
    })?;
    let Some(map) = value.as_object() else {
        return Err(ApiError::new(
            Code::InvalidRequest,
            "The body must be a JSON object.",
        ));
    };
    if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            key.as_str(),
            format!(
                "Unknown field '{key}'. Accepted fields: {}.",
                allowed.join(", ")
            ),
        ));
    }
    if let Some(queue) = map.get("queue").and_then(Value::as_object) {
        if let Some(key) = queue.keys().find(|k| !QUEUE_FIELDS.contains(&k.as_str())) {
            return Err(ApiError::invalid(
                format!("queue.{key}"),
                format!(
                    "Unknown field 'queue.{key}'. Accepted fields: {}.",
                    QUEUE_FIELDS.join(", ")
                ),
            ));
        }
    }
    Ok(value)
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            Code::InvalidRequest,
            format!("Invalid deployment body: {e}."),
        )
    })
}

/// A spec as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct SpecView {
    pub name: String,
    pub model: String,
    pub min_replicas: usize,
    pub max_replicas: usize,
    pub slots_per_replica: usize,
    pub threads_per_replica: usize,
    pub context_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_tokens: Option<usize>,
    pub idle_seconds: u64,
    pub queue: QueueView,
    pub tenant_weights: BTreeMap<String, u32>,
    pub pinned: bool,
}

#[derive(Debug, Serialize)]
pub struct QueueView {
    pub max_length: usize,
    pub max_wait_seconds: u64,
    pub tenant_share_percent: u8,
}

impl From<DeploymentSpec> for SpecView {
    fn from(s: DeploymentSpec) -> Self {
        Self {
            name: s.name,
            model: s.model,
            min_replicas: s.min_replicas,
            max_replicas: s.max_replicas,
            slots_per_replica: s.slots_per_replica,
            threads_per_replica: s.threads_per_replica,
            context_length: s.context_length,
            step_tokens: s.step_tokens,
            idle_seconds: s.idle_seconds,
            queue: QueueView {
                max_length: s.queue.max_length,
                max_wait_seconds: s.queue.max_wait_seconds,
                tenant_share_percent: s.queue.tenant_share_percent,
            },
            tenant_weights: s.tenant_weights,
            pinned: s.pinned,
        }
    }
}

/// A deployment as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct DeploymentJson {
    pub spec: SpecView,
    pub replicas: Vec<ReplicaJson>,
    pub queue_length: usize,
    pub in_flight: usize,
    /// Completions per second while work was waiting (the queue's drain rate).
    pub drain_per_sec: f64,
    /// Generated tokens per second while replicas were busy.
    pub tokens_per_sec: f64,
    /// Memory and threads one replica needs.
    pub replica_memory_bytes: u64,
    pub replica_threads: usize,
}

impl From<DeploymentView> for DeploymentJson {
    fn from(v: DeploymentView) -> Self {
        Self {
            spec: v.spec.into(),
            replicas: v.replicas.into_iter().map(ReplicaJson::from).collect(),
            queue_length: v.queue_length,
            in_flight: v.in_flight,
            drain_per_sec: v.drain_per_sec,
            tokens_per_sec: v.tokens_per_sec,
            replica_memory_bytes: v.replica_memory_bytes,
            replica_threads: v.replica_threads,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ReplicaJson {
    pub id: u64,
    pub state: &'static str,
    pub model: String,
    pub generation: u64,
    pub slots: usize,
    pub in_flight: usize,
    pub completed: u64,
    pub age_secs: u64,
}

impl From<ReplicaView> for ReplicaJson {
    fn from(r: ReplicaView) -> Self {
        Self {
            id: r.id,
            state: r.state.as_str(),
            model: r.model,
            generation: r.generation,
            slots: r.slots,
            in_flight: r.in_flight,
            completed: r.completed,
            age_secs: r.age_secs,
        }
    }
}

/// The node's budgets and what is used.
#[derive(Debug, Serialize)]
pub struct NodeJson {
    pub memory_bytes: u64,
    pub memory_used_bytes: u64,
    pub threads: usize,
    pub threads_used: usize,
}

impl From<NodeView> for NodeJson {
    fn from(n: NodeView) -> Self {
        Self {
            memory_bytes: n.memory_bytes,
            memory_used_bytes: n.memory_used_bytes,
            threads: n.threads,
            threads_used: n.threads_used,
        }
    }
}

/// A scale event: its time in RFC 3339 UTC.
#[derive(Debug, Serialize)]
pub struct ScaleEventView {
    pub at: String,
    pub deployment: String,
    pub kind: &'static str,
    pub from: usize,
    pub to: usize,
    pub reason: String,
}

impl From<ScaleEvent> for ScaleEventView {
    fn from(e: ScaleEvent) -> Self {
        Self {
            at: DateTime::<Utc>::from(e.at).to_rfc3339_opts(SecondsFormat::Millis, true),
            deployment: e.deployment,
            kind: e.kind.as_str(),
            from: e.from,
            to: e.to,
            reason: e.reason,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeletedView {
    pub name: String,
    pub object: &'static str,
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_with_only_name_and_model_takes_the_defaults() {
        let spec = parse_spec(br#"{"name": "smol", "model": "/m/smol.gguf"}"#).unwrap();
        assert_eq!(spec, DeploymentSpec::new("smol", "/m/smol.gguf"));
    }

    #[test]
    fn a_partial_queue_keeps_the_other_defaults() {
        let spec =
            parse_spec(br#"{"name": "smol", "model": "m.gguf", "queue": {"max_length": 9}}"#)
                .unwrap();
        assert_eq!(spec.queue.max_length, 9);
        assert_eq!(spec.queue.tenant_share_percent, 50);
        assert_eq!(spec.queue.max_wait_seconds, 60);
    }

    #[test]
    fn every_field_is_read() {
        let spec = parse_spec(
            br#"{"name": "n", "model": "m", "min_replicas": 1, "max_replicas": 3,
                 "slots_per_replica": 2, "threads_per_replica": 2, "context_length": 512,
                 "step_tokens": 64, "idle_seconds": 9, "tenant_weights": {"t": 3}}"#,
        )
        .unwrap();
        let view = serde_json::to_value(SpecView::from(spec)).unwrap();
        assert_eq!(
            view,
            serde_json::json!({"name": "n", "model": "m", "min_replicas": 1, "max_replicas": 3,
                "slots_per_replica": 2, "threads_per_replica": 2, "context_length": 512,
                "step_tokens": 64, "idle_seconds": 9, "tenant_weights": {"t": 3},
                "queue": {"max_length": 1024, "max_wait_seconds": 60, "tenant_share_percent": 50},
                "pinned": false})
        );
    }

    #[test]
    fn unknown_and_api_foreign_fields_are_named() {
        let err = parse_spec(br#"{"name": "n", "model": "m", "pinned": true}"#).unwrap_err();
        assert_eq!(err.body().error.param, Some("pinned"));
        let err = parse_spec(br#"{"name": "n", "model": "m", "queue": {"size": 1}}"#).unwrap_err();
        assert_eq!(err.body().error.param, Some("queue.size"));
        let err = parse_patch(br#"{"name": "x"}"#).unwrap_err();
        assert_eq!(err.body().error.param, Some("name"));
        assert!(parse_patch(br#"{"nmae": "x"}"#).is_err());
        assert!(
            parse_spec(br#"{"name": "n"}"#).is_err(),
            "model is required"
        );
        assert!(parse_spec(br#"{"name": "n", "model": "m", "max_replicas": -1}"#).is_err());
        assert!(parse_spec(b"[1]").is_err());
    }

    #[test]
    fn patches_apply_only_what_they_name() {
        let s = DeploymentSpec::new("smol", "a.gguf");
        let t = parse_patch(br#"{"max_replicas": 3, "model": "b.gguf"}"#)
            .unwrap()
            .apply(&s);
        assert_eq!(
            (t.max_replicas, t.model.as_str(), t.slots_per_replica),
            (3, "b.gguf", 4)
        );
    }
}
