//! What a deployment is, as created and persisted: [`DeploymentSpec`], its partial update
//! [`DeploymentPatch`], and the [`DeploymentStore`] seam that keeps specs across restarts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::autoscale::ScalePolicy;
use crate::queue::{QueueConfig, DEFAULT_TENANT_SHARE_PERCENT};
use crate::{Error, Result};

/// Most replicas one deployment may ask for.
pub const MAX_REPLICAS: usize = 64;
/// Most slots one replica may have.
pub const MAX_SLOTS: usize = 256;

/// A deployment of one model under one served name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSpec {
    /// The served name: what the API's `model` field, prices, allow-lists and metrics use.
    pub name: String,
    /// The model SPEC as given (`PATH` or `hub:ORG/NAME[@REV][#FILE]`); the launcher resolves it.
    pub model: String,
    pub min_replicas: usize,
    pub max_replicas: usize,
    pub slots_per_replica: usize,
    pub threads_per_replica: usize,
    /// Tokens per slot; `None`: the model's training context, at most 4096.
    pub context_length: Option<u32>,
    /// Tokens per decode step of a replica (the prefill chunk budget); `None`: 512. At least
    /// `slots_per_replica` is used.
    pub step_tokens: Option<usize>,
    pub idle_seconds: u64,
    pub queue: QueueSpec,
    /// Relative shares of the queue per tenant id (default 1).
    pub tenant_weights: BTreeMap<String, u32>,
    /// From the command line (`--model`): at least one replica, never scaled to zero, not
    /// persisted.
    pub pinned: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub max_length: usize,
    pub max_wait_seconds: u64,
    /// Percent of `max_length` one tenant may hold waiting (1..=100, default 50; at least one
    /// request). Requests without a tenant are bounded by `max_length` alone.
    pub tenant_share_percent: u8,
}

impl Default for QueueSpec {
    fn default() -> Self {
        Self {
            max_length: 1024,
            max_wait_seconds: 60,
            tenant_share_percent: DEFAULT_TENANT_SHARE_PERCENT,
        }
    }
}

impl DeploymentSpec {
    /// A spec with defaults for everything but the name and model.
    pub fn new(name: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            model: model.into(),
            min_replicas: 0,
            max_replicas: 1,
            slots_per_replica: 4,
            threads_per_replica: 1,
            context_length: None,
            step_tokens: None,
            idle_seconds: 300,
            queue: QueueSpec::default(),
            tenant_weights: BTreeMap::new(),
            pinned: false,
        }
    }

    /// Check every field; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, message: String| Err(Error::InvalidSpec { field, message });
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 128
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c));
        if !name_ok {
            return bad(
                "name",
                format!(
                    "'{}' is not a served name: use 1 to 128 letters, digits and - _ . : / @",
                    self.name
                ),
            );
        }
        if self.name.starts_with("mcp/") {
            return bad(
                "name",
                format!(
                    "'{}': served names starting with 'mcp/' are the price book's names of MCP servers; choose another",
                    self.name
                ),
            );
        }
        if self.model.trim().is_empty() {
            return bad(
                "model",
                "give a model SPEC: a GGUF path or hub:ORG/NAME[@REV][#FILE]".into(),
            );
        }
        if self.max_replicas == 0 || self.max_replicas > MAX_REPLICAS {
            return bad(
                "max_replicas",
                format!("{} is outside 1..={MAX_REPLICAS}", self.max_replicas),
            );
        }
        if self.min_replicas > self.max_replicas {
            return bad(
                "min_replicas",
                format!(
                    "{} is more than max_replicas {}",
                    self.min_replicas, self.max_replicas
                ),
            );
        }
        if self.slots_per_replica == 0 || self.slots_per_replica > MAX_SLOTS {
            return bad(
                "slots_per_replica",
                format!("{} is outside 1..={MAX_SLOTS}", self.slots_per_replica),
            );
        }
        if self.threads_per_replica == 0 || self.threads_per_replica > 1024 {
            return bad(
                "threads_per_replica",
                format!("{} is outside 1..=1024", self.threads_per_replica),
            );
        }
        if let Some(ctx) = self.context_length {
            if !(16..=1 << 20).contains(&ctx) {
                return bad(
                    "context_length",
                    format!("{ctx} is outside 16..=1048576 tokens"),
                );
            }
        }
        if let Some(step) = self.step_tokens {
            if !(1..=1 << 16).contains(&step) {
                return bad("step_tokens", format!("{step} is outside 1..=65536"));
            }
        }
        if self.queue.max_length > 1_000_000 {
            return bad(
                "queue.max_length",
                format!("{} is more than 1000000", self.queue.max_length),
            );
        }
        if self.queue.max_wait_seconds == 0 || self.queue.max_wait_seconds > 3600 {
            return bad(
                "queue.max_wait_seconds",
                format!("{} is outside 1..=3600", self.queue.max_wait_seconds),
            );
        }
        if !(1..=100).contains(&self.queue.tenant_share_percent) {
            return bad(
                "queue.tenant_share_percent",
                format!(
                    "{} is outside 1..=100 (the percent of queue.max_length one tenant may hold)",
                    self.queue.tenant_share_percent
                ),
            );
        }
        if let Some((tenant, w)) = self
            .tenant_weights
            .iter()
            .find(|(_, w)| **w == 0 || **w > 1000)
        {
            return bad(
                "tenant_weights",
                format!("{tenant}: weight {w} is outside 1..=1000"),
            );
        }
        Ok(())
    }

    /// Replicas that are always kept (a pinned deployment keeps at least one).
    pub fn effective_min_replicas(&self) -> usize {
        if self.pinned {
            self.min_replicas.max(1)
        } else {
            self.min_replicas
        }
    }

    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            max_length: self.queue.max_length,
            max_wait: Duration::from_secs(self.queue.max_wait_seconds),
            tenant_share_percent: self.queue.tenant_share_percent,
            // A slot finishing a short request every two seconds, until observed.
            prior_per_slot_per_sec: 0.5,
        }
    }

    pub fn scale_policy(&self) -> ScalePolicy {
        ScalePolicy {
            idle: Duration::from_secs(self.idle_seconds),
            ..ScalePolicy::new(
                self.effective_min_replicas(),
                self.max_replicas,
                self.slots_per_replica,
                self.threads_per_replica,
            )
        }
    }
}

/// A partial update (`PATCH`): absent fields stay. A different `model` rolls the replicas over
/// to it without dropping requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentPatch {
    pub model: Option<String>,
    pub min_replicas: Option<usize>,
    pub max_replicas: Option<usize>,
    pub slots_per_replica: Option<usize>,
    pub threads_per_replica: Option<usize>,
    pub context_length: Option<u32>,
    pub idle_seconds: Option<u64>,
    pub queue: Option<QueueSpec>,
    pub tenant_weights: Option<BTreeMap<String, u32>>,
}

impl DeploymentPatch {
    /// The spec with this patch applied (not yet validated).
    pub fn apply(&self, spec: &DeploymentSpec) -> DeploymentSpec {
        let mut s = spec.clone();
        if let Some(v) = &self.model {
            s.model.clone_from(v);
        }
        s.min_replicas = self.min_replicas.unwrap_or(s.min_replicas);
        s.max_replicas = self.max_replicas.unwrap_or(s.max_replicas);
        s.slots_per_replica = self.slots_per_replica.unwrap_or(s.slots_per_replica);
        s.threads_per_replica = self.threads_per_replica.unwrap_or(s.threads_per_replica);
        if self.context_length.is_some() {
            s.context_length = self.context_length;
        }
        s.idle_seconds = self.idle_seconds.unwrap_or(s.idle_seconds);
        if let Some(q) = &self.queue {
            s.queue = q.clone();
        }
        if let Some(w) = &self.tenant_weights {
            s.tenant_weights.clone_from(w);
        }
        s
    }
}

/// Where deployment specs persist across restarts (the database, in the binary).
#[async_trait::async_trait]
pub trait DeploymentStore: Send + Sync {
    async fn list(&self) -> Result<Vec<DeploymentSpec>>;
    /// Insert or replace the spec with this name.
    async fn put(&self, spec: &DeploymentSpec) -> Result<()>;
    async fn delete(&self, name: &str) -> Result<()>;
}

/// Specs kept in memory (tests, and a server without persistence).
#[derive(Debug, Default)]
pub struct MemoryStore {
    specs: Mutex<BTreeMap<String, DeploymentSpec>>,
}

#[async_trait::async_trait]
impl DeploymentStore for MemoryStore {
    async fn list(&self) -> Result<Vec<DeploymentSpec>> {
        Ok(lock(&self.specs).values().cloned().collect())
    }

    async fn put(&self, spec: &DeploymentSpec) -> Result<()> {
        lock(&self.specs).insert(spec.name.clone(), spec.clone());
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        lock(&self.specs).remove(name);
        Ok(())
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (plain
/// maps) is still consistent, so keep going.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        DeploymentSpec::new("smol", "/m/smol.gguf")
            .validate()
            .unwrap();
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut s = DeploymentSpec::new("smol", "m.gguf");
        s.min_replicas = 3;
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("min_replicas") && e.contains("max_replicas 1"),
            "{e}"
        );
        let mut s = DeploymentSpec::new("bad name!", "m.gguf");
        assert!(s.validate().unwrap_err().to_string().contains("name"));
        s.name = "ok".into();
        s.queue.max_wait_seconds = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("queue.max_wait_seconds"));
        s.queue.max_wait_seconds = 60;
        s.queue.tenant_share_percent = 0;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("queue.tenant_share_percent"));
    }

    #[test]
    fn a_tenant_holds_half_the_queue_unless_configured() {
        let mut spec = DeploymentSpec::new("smol", "m.gguf");
        spec.queue.max_length = 9;
        assert_eq!(spec.queue.tenant_share_percent, 50);
        assert_eq!(spec.queue_config().per_tenant_limit(), 4);
        spec.queue.tenant_share_percent = 100;
        assert_eq!(spec.queue_config().per_tenant_limit(), 9);
        spec.queue.max_length = 1;
        spec.queue.tenant_share_percent = 1;
        assert_eq!(spec.queue_config().per_tenant_limit(), 1, "at least one");
    }

    #[test]
    fn patches_apply_only_what_they_name() {
        let s = DeploymentSpec::new("smol", "a.gguf");
        let p = DeploymentPatch {
            max_replicas: Some(3),
            model: Some("b.gguf".into()),
            ..DeploymentPatch::default()
        };
        let t = p.apply(&s);
        assert_eq!(
            (t.max_replicas, t.model.as_str(), t.slots_per_replica),
            (3, "b.gguf", 4)
        );
    }

    #[test]
    fn pinned_keeps_one_replica() {
        let mut s = DeploymentSpec::new("smol", "a.gguf");
        s.pinned = true;
        assert_eq!(s.scale_policy().min_replicas, 1);
    }
}
