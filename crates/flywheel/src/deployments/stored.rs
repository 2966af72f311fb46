//! A deployment spec's stored form: the JSON text in the `deployments` table. It is its own
//! type, so the admin API's JSON (the `wire` crate's) and control's domain type can change
//! without rewriting stored rows. Absent fields read as [`DeploymentSpec::new`]'s defaults, so
//! rows written by older versions still load; unknown fields are ignored, so a row written by a
//! newer version loads here during a rolling downgrade.

use std::collections::BTreeMap;

use control::{DeploymentSpec, QueueSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct StoredSpec {
    name: String,
    model: String,
    min_replicas: Option<usize>,
    max_replicas: Option<usize>,
    slots_per_replica: Option<usize>,
    threads_per_replica: Option<usize>,
    context_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_tokens: Option<usize>,
    idle_seconds: Option<u64>,
    queue: Option<StoredQueue>,
    #[serde(default)]
    tenant_weights: BTreeMap<String, u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredQueue {
    max_length: Option<usize>,
    max_wait_seconds: Option<u64>,
    tenant_share_percent: Option<u8>,
}

/// The JSON text a spec is stored as. Pinned specs (`--model`) are never stored.
pub fn encode(spec: &DeploymentSpec) -> String {
    let stored = StoredSpec {
        name: spec.name.clone(),
        model: spec.model.clone(),
        min_replicas: Some(spec.min_replicas),
        max_replicas: Some(spec.max_replicas),
        slots_per_replica: Some(spec.slots_per_replica),
        threads_per_replica: Some(spec.threads_per_replica),
        context_length: spec.context_length,
        step_tokens: spec.step_tokens,
        idle_seconds: Some(spec.idle_seconds),
        queue: Some(StoredQueue {
            max_length: Some(spec.queue.max_length),
            max_wait_seconds: Some(spec.queue.max_wait_seconds),
            tenant_share_percent: Some(spec.queue.tenant_share_percent),
        }),
        tenant_weights: spec.tenant_weights.clone(),
    };
    // Plain strings and numbers: serializing cannot fail.
    serde_json::to_string(&stored).unwrap_or_default()
}

/// A stored row's spec.
pub fn decode(json: &str) -> serde_json::Result<DeploymentSpec> {
    let s: StoredSpec = serde_json::from_str(json)?;
    let d = DeploymentSpec::new(s.name, s.model);
    let queue = match s.queue {
        Some(q) => QueueSpec {
            max_length: q.max_length.unwrap_or(d.queue.max_length),
            max_wait_seconds: q.max_wait_seconds.unwrap_or(d.queue.max_wait_seconds),
            tenant_share_percent: q
                .tenant_share_percent
                .unwrap_or(d.queue.tenant_share_percent),
        },
        None => d.queue.clone(),
    };
    Ok(DeploymentSpec {
        min_replicas: s.min_replicas.unwrap_or(d.min_replicas),
        max_replicas: s.max_replicas.unwrap_or(d.max_replicas),
        slots_per_replica: s.slots_per_replica.unwrap_or(d.slots_per_replica),
        threads_per_replica: s.threads_per_replica.unwrap_or(d.threads_per_replica),
        context_length: s.context_length,
        step_tokens: s.step_tokens,
        idle_seconds: s.idle_seconds.unwrap_or(d.idle_seconds),
        queue,
        tenant_weights: s.tenant_weights,
        ..d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_the_round_trip() {
        let mut spec = DeploymentSpec::new("smol", "hub:org/smol@main");
        spec.max_replicas = 3;
        spec.context_length = Some(512);
        spec.step_tokens = Some(64);
        spec.queue.tenant_share_percent = 20;
        spec.tenant_weights.insert("t1".into(), 3);
        assert_eq!(decode(&encode(&spec)).unwrap(), spec);
    }

    /// What the previous version wrote (control's serde derive, `pinned` included).
    #[test]
    fn rows_written_before_the_stored_form_still_load() {
        let old = r#"{"name":"smol","model":"/m/smol.gguf","min_replicas":0,"max_replicas":2,
            "slots_per_replica":4,"threads_per_replica":1,"context_length":null,
            "idle_seconds":300,"queue":{"max_length":1024,"max_wait_seconds":60,
            "tenant_share_percent":50},"tenant_weights":{},"pinned":false}"#;
        let mut want = DeploymentSpec::new("smol", "/m/smol.gguf");
        want.max_replicas = 2;
        assert_eq!(decode(old).unwrap(), want);
        let minimal = decode(r#"{"name":"a","model":"b","queue":{"max_length":9}}"#).unwrap();
        assert_eq!(minimal.queue.max_length, 9);
        assert_eq!(minimal.queue.max_wait_seconds, 60);
        assert!(decode(r#"{"model":"b"}"#).is_err());
    }
}
