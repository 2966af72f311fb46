//! What one replica of a model costs a node: memory (weights, KV cache, compute buffers) and
//! CPU threads, estimated from the GGUF header before anything is loaded.

use std::path::Path;

use crate::gguf::{GgufError, Metadata};

const MIB: u64 = 1 << 20;
/// Bytes per KV cache element (llama.cpp's default cache type is f16).
const KV_ELEMENT_BYTES: u64 = 2;
/// Fixed part of the compute-buffer allowance (graph, scratch).
const COMPUTE_BASE: u64 = 32 * MIB;

/// The shape of a model as far as sizing goes, read from its GGUF metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelShape {
    pub architecture: String,
    /// Size of the file: the weights (memory-mapped; shared by replicas of the same file).
    pub file_bytes: u64,
    pub block_count: u64,
    pub embedding_length: u64,
    pub head_count: u64,
    pub head_count_kv: u64,
    pub key_length: u64,
    pub value_length: u64,
    /// The training context (tokens).
    pub context_length: u64,
    pub vocab_size: u64,
    /// What the model does, from its pooling type and attention (see [`ModelShape::kind_of`]).
    pub kind: backend::ModelKind,
}

impl ModelShape {
    /// Read the shape of the GGUF file at `path` (header only).
    pub fn from_file(path: &Path) -> Result<Self, GgufError> {
        let meta = Metadata::read_file(path)?;
        let file_bytes = std::fs::metadata(path)
            .map_err(|source| GgufError::Io {
                path: path.display().to_string(),
                source,
            })?
            .len();
        Self::from_metadata(&meta, file_bytes)
    }

    pub fn from_metadata(meta: &Metadata, file_bytes: u64) -> Result<Self, GgufError> {
        let arch = meta
            .str("general.architecture")
            .ok_or_else(|| GgufError::Missing("general.architecture".into()))?
            .to_owned();
        let need = |name: &str| {
            let key = format!("{arch}.{name}");
            meta.u64(&key).ok_or(GgufError::Missing(key))
        };
        let block_count = need("block_count")?;
        let embedding_length = need("embedding_length")?;
        let head_count = need("attention.head_count")?.max(1);
        let head_count_kv = meta
            .u64(&format!("{arch}.attention.head_count_kv"))
            .unwrap_or(head_count);
        let head_dim = embedding_length / head_count;
        let key_length = meta
            .u64(&format!("{arch}.attention.key_length"))
            .unwrap_or(head_dim);
        let value_length = meta
            .u64(&format!("{arch}.attention.value_length"))
            .unwrap_or(head_dim);
        let context_length = need("context_length")?;
        let vocab_size = meta
            .array_lengths
            .get("tokenizer.ggml.tokens")
            .copied()
            .or_else(|| meta.u64(&format!("{arch}.vocab_size")))
            .unwrap_or(32_000);
        let kind = Self::kind_of(meta, &arch, embedding_length);
        Ok(Self {
            kind,
            architecture: arch,
            file_bytes,
            block_count,
            embedding_length,
            head_count,
            head_count_kv,
            key_length,
            value_length,
            context_length,
            vocab_size,
        })
    }

    /// An embedding model has a pooling type (llama.cpp's `{arch}.pooling_type`: 1 mean,
    /// 2 CLS, 3 last) or non-causal attention; pooling type 4 is a cross-encoder (rank).
    pub fn kind_of(meta: &Metadata, arch: &str, embedding_length: u64) -> backend::ModelKind {
        let pooling = meta.u64(&format!("{arch}.pooling_type")).unwrap_or(0);
        let causal = !matches!(
            meta.values.get(&format!("{arch}.attention.causal")),
            Some(crate::gguf::Value::Bool(false))
        );
        match pooling {
            4 => backend::ModelKind::Rank,
            0 if causal => backend::ModelKind::Generate,
            _ => backend::ModelKind::Embed {
                dimensions: u32::try_from(embedding_length).unwrap_or(u32::MAX),
            },
        }
    }

    /// KV cache bytes per token of context: layers × (K + V width) × f16.
    pub fn kv_bytes_per_token(&self) -> u64 {
        let width = self
            .head_count_kv
            .saturating_mul(self.key_length.saturating_add(self.value_length));
        self.block_count
            .saturating_mul(width)
            .saturating_mul(KV_ELEMENT_BYTES)
    }

    /// The tokens per slot an engine will use: the request, or the training context capped at
    /// 4096, never more than the training context (the engine's own rule).
    pub fn slot_context(&self, requested: Option<u32>) -> u64 {
        let train = if self.context_length > 0 {
            self.context_length
        } else {
            4096
        };
        requested
            .map_or(train.min(4096), u64::from)
            .clamp(16.min(train), train)
    }
}

/// How a replica is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    pub slots: usize,
    pub slot_context: Option<u32>,
    pub threads: usize,
    /// Tokens per decode step (llama.cpp's batch): sizes the compute buffers.
    pub step_tokens: usize,
}

/// What one replica needs from a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// Identifies the weights (a file path): replicas of the same weights share them.
    pub weights_key: String,
    pub weights_bytes: u64,
    /// Memory of this replica alone: KV cache and compute buffers.
    pub private_bytes: u64,
    pub threads: usize,
    /// What the model does (the deployment tells `/v1/models` before a replica is loaded).
    pub kind: backend::ModelKind,
}

impl Footprint {
    /// Estimate from the model's shape. KV: layers × slots × slot context × (K+V width) × 2
    /// bytes. Compute buffers: a fixed allowance plus the logits and activations of one step
    /// (step tokens × (vocabulary + 8 × embedding) × 4 bytes), which is what llama.cpp's CPU
    /// backend reserves for a batch of that size, rounded up.
    pub fn estimate(weights_key: &str, shape: &ModelShape, sizing: &Sizing) -> Self {
        let cells = (sizing.slots as u64).saturating_mul(shape.slot_context(sizing.slot_context));
        // Embedding models keep no KV cache.
        let kv = match shape.kind {
            backend::ModelKind::Generate => cells.saturating_mul(shape.kv_bytes_per_token()),
            _ => 0,
        };
        let per_step_token = shape
            .vocab_size
            .saturating_add(shape.embedding_length.saturating_mul(8))
            .saturating_mul(4);
        let compute =
            COMPUTE_BASE.saturating_add(per_step_token.saturating_mul(sizing.step_tokens as u64));
        Self {
            weights_key: weights_key.to_owned(),
            weights_bytes: shape.file_bytes,
            private_bytes: kv.saturating_add(compute),
            threads: sizing.threads.max(1),
            kind: shape.kind,
        }
    }

    /// Memory if nothing is shared.
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes.saturating_add(self.private_bytes)
    }
}

/// Bytes as whole MiB, rounded up (for messages).
pub fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB)
}
