//! The seam through which replicas are sized and started: in process here
//! ([`EngineLauncher`]: a GGUF file on llama.cpp, a speech model directory on the `speech`
//! crate), by a node agent on another machine later.

use std::sync::Arc;

use backend::Backend;

use crate::footprint::Footprint;
use crate::Result;

/// Tokens per decode step replicas are started with.
pub const STEP_TOKENS: usize = 512;

/// Everything needed to start one replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaSpec {
    /// The served name.
    pub deployment: String,
    /// The model SPEC as the deployment gives it.
    pub model: String,
    /// Bumped on every model change; replicas of older generations are rolled over.
    pub generation: u64,
    pub slots: usize,
    pub threads: usize,
    pub slot_context: Option<u32>,
    /// Tokens per decode step; `None`: [`STEP_TOKENS`].
    pub step_tokens: Option<usize>,
}

impl ReplicaSpec {
    /// Tokens per decode step actually used: at least one per slot.
    pub fn step_tokens(&self) -> usize {
        self.step_tokens.unwrap_or(STEP_TOKENS).max(self.slots)
    }
}

/// Splits a `BASE+lora:ADAPTER` model SPEC (a fine-tuned model: its base model served with a
/// LoRA adapter) into its parts; any other SPEC has no adapter.
pub fn split_adapter(model: &str) -> (&str, Option<&str>) {
    match model.split_once(LORA_SEPARATOR) {
        Some((base, adapter)) => (base, Some(adapter)),
        None => (model, None),
    }
}

/// Between a fine-tuned model's base SPEC and its adapter's SPEC.
pub const LORA_SEPARATOR: &str = "+lora:";

/// Sizes and starts replicas.
#[async_trait::async_trait]
pub trait ReplicaLauncher: Send + Sync {
    /// What one replica of this spec will need, from the model's header (nothing loaded).
    async fn footprint(&self, spec: &ReplicaSpec) -> Result<Footprint>;

    /// Load the model and return something that generates with `spec.slots` slots.
    async fn start(&self, spec: &ReplicaSpec) -> Result<Arc<dyn Backend>>;
}

#[cfg(feature = "engine")]
pub use in_process::EngineLauncher;

#[cfg(feature = "engine")]
mod in_process {
    use std::path::PathBuf;
    use std::sync::Arc;

    use backend::Backend;
    use engine::EngineOptions;

    use super::{ReplicaLauncher, ReplicaSpec};
    use crate::footprint::{Footprint, ModelShape, Sizing};
    use crate::{Error, Result};

    type Resolve = dyn Fn(&str) -> std::result::Result<PathBuf, String> + Send + Sync;

    use super::split_adapter;

    /// Starts replicas as in-process llama.cpp engines.
    pub struct EngineLauncher {
        resolve: Arc<Resolve>,
    }

    impl Default for EngineLauncher {
        fn default() -> Self {
            Self::new()
        }
    }

    impl EngineLauncher {
        /// Model SPECs are file paths.
        pub fn new() -> Self {
            Self::with_resolver(|model| Ok(PathBuf::from(model)))
        }

        /// Model SPECs are resolved to local files by `resolve` (e.g. `hub:` references
        /// through the hub's blob store); its error says what is missing.
        pub fn with_resolver(
            resolve: impl Fn(&str) -> std::result::Result<PathBuf, String> + Send + Sync + 'static,
        ) -> Self {
            Self {
                resolve: Arc::new(resolve),
            }
        }

        /// The LoRA adapter of a `BASE+lora:ADAPTER` model SPEC, resolved like the base.
        fn adapter(&self, spec: &ReplicaSpec) -> Result<Option<PathBuf>> {
            let Some(adapter) = split_adapter(&spec.model).1 else {
                return Ok(None);
            };
            let path = (self.resolve)(adapter).map_err(Error::Launch)?;
            if !path.is_file() {
                return Err(Error::Launch(format!(
                    "LoRA adapter {} for '{}' does not exist",
                    path.display(),
                    spec.deployment
                )));
            }
            Ok(Some(path))
        }

        fn path(&self, spec: &ReplicaSpec) -> Result<PathBuf> {
            let base = split_adapter(&spec.model).0;
            let path = (self.resolve)(base).map_err(Error::Launch)?;
            if path.is_dir() {
                if speech::is_speech_dir(&path) {
                    return Ok(path);
                }
                return Err(Error::Launch(format!(
                    "model directory {} for '{}' is not a speech model (a Whisper config.json \
                     and model.safetensors, as `flywheel convert` writes them); give a GGUF \
                     file or such a directory",
                    path.display(),
                    spec.deployment
                )));
            }
            if !path.is_file() {
                return Err(Error::Launch(format!(
                    "model file {} for '{}' does not exist; fetch it or fix the deployment's model",
                    path.display(),
                    spec.deployment
                )));
            }
            Ok(path)
        }
    }

    /// A speech model's needs: its weights as f32 (an f16 file doubles), and per slot the
    /// decoder's caches and one window's activations.
    fn speech_footprint(path: &std::path::Path, sizing: &Sizing) -> Result<Footprint> {
        let facts = speech::inspect(path).map_err(|e| Error::Launch(e.to_string()))?;
        let d = facts.d_model as u64;
        let source = facts.max_source_positions as u64;
        let layers = (facts.encoder_layers + facts.decoder_layers) as u64;
        // Encoder activations of one window (×8 for attention scores and the MLP), the
        // cross-attention keys and values, and the self-attention cache, all f32.
        let per_slot = (source * d * 8 + source * source * facts.heads as u64)
            .saturating_mul(4)
            .saturating_add(layers * 2 * source * d * 4)
            .saturating_add(layers * 2 * facts.max_target_positions as u64 * d * 4);
        Ok(Footprint {
            weights_key: path.display().to_string(),
            weights_bytes: facts.weight_bytes.saturating_mul(2),
            private_bytes: (32u64 << 20)
                .saturating_add(per_slot.saturating_mul(sizing.slots as u64)),
            threads: sizing.threads.max(1),
            kind: backend::ModelKind::Transcribe,
        })
    }

    #[async_trait::async_trait]
    impl ReplicaLauncher for EngineLauncher {
        async fn footprint(&self, spec: &ReplicaSpec) -> Result<Footprint> {
            let path = self.path(spec)?;
            let sizing = Sizing {
                slots: spec.slots,
                slot_context: spec.slot_context,
                threads: spec.threads,
                step_tokens: spec.step_tokens(),
            };
            tokio::task::spawn_blocking(move || {
                if path.is_dir() {
                    return speech_footprint(&path, &sizing);
                }
                let shape = ModelShape::from_file(&path)?;
                Ok(Footprint::estimate(
                    &path.display().to_string(),
                    &shape,
                    &sizing,
                ))
            })
            .await
            .map_err(|e| Error::Launch(format!("sizing task failed: {e}")))?
        }

        async fn start(&self, spec: &ReplicaSpec) -> Result<Arc<dyn Backend>> {
            let path = self.path(spec)?;
            let name = spec.deployment.clone();
            if path.is_dir() {
                let opts = speech::SpeechOptions {
                    slots: spec.slots,
                    threads: spec.threads,
                    max_queue: spec.slots,
                };
                let engine = tokio::task::spawn_blocking(move || speech::start(&path, &name, opts))
                    .await
                    .map_err(|e| Error::Launch(format!("speech start task failed: {e}")))?
                    .map_err(|e| Error::Launch(e.to_string()))?;
                return Ok(engine);
            }
            let opts = EngineOptions {
                slots: spec.slots,
                slot_context: spec.slot_context,
                threads: spec.threads,
                step_tokens: spec.step_tokens(),
                // The deployment's queue holds the backlog; the engine's own queue only
                // absorbs the moment between a slot freeing and the next dispatch.
                max_queue: spec.slots,
            };
            if let Some(adapter) = self.adapter(spec)? {
                let engine = tokio::task::spawn_blocking(move || {
                    engine::Engine::start_with_adapter(&path, &adapter, &name, &opts)
                })
                .await
                .map_err(|e| Error::Launch(format!("engine start task failed: {e}")))?
                .map_err(|e| Error::Launch(e.to_string()))?;
                return Ok(Arc::new(engine));
            }
            let engine = tokio::task::spawn_blocking(move || engine::start(&path, &name, &opts))
                .await
                .map_err(|e| Error::Launch(format!("engine start task failed: {e}")))?
                .map_err(|e| Error::Launch(e.to_string()))?;
            Ok(engine)
        }
    }
}
