//! The base model's weights: a llama GGUF read with candle's GGUF reader, every tensor
//! dequantized to F32 (they stay frozen; only the LoRA matrices train).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

use crate::{FinetuneError, Result};

/// The llama hyper-parameters, from the GGUF's `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub rope_dim: usize,
    pub rope_freq_base: f32,
    pub rms_eps: f64,
    pub vocab: usize,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_head_kv
    }
}

/// One transformer block's frozen weights, in GGUF orientation (`[out, in]` row-major).
pub struct Block {
    pub attn_norm: Tensor,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub ffn_norm: Tensor,
    pub w_gate: Tensor,
    pub w_up: Tensor,
    pub w_down: Tensor,
}

/// A llama model's frozen weights in F32.
pub struct BaseModel {
    pub config: LlamaConfig,
    pub token_embd: Tensor,
    pub blocks: Vec<Block>,
    pub output_norm: Tensor,
    /// `output.weight`, or the token embeddings when they are tied (SmolLM2).
    pub output: Tensor,
    pub tied_embeddings: bool,
    pub architecture: String,
}

impl BaseModel {
    /// Read and dequantize a llama GGUF.
    pub fn load(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| {
            FinetuneError::Model(format!(
                "cannot open the base model {}: {e}",
                path.display()
            ))
        })?;
        let content = Content::read(&mut file).map_err(|e| {
            FinetuneError::Model(format!("{} is not a readable GGUF: {e}", path.display()))
        })?;
        let arch = meta_str(&content.metadata, "general.architecture")?;
        if arch != "llama" {
            return Err(FinetuneError::Model(format!(
                "fine-tuning supports llama-architecture models; {} is `{arch}`",
                path.display()
            )));
        }
        let vocab = match content.metadata.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len(),
            _ => 0,
        };
        let u = |k: &str| meta_u32(&content.metadata, k);
        let n_embd = u("llama.embedding_length")?;
        let n_head = u("llama.attention.head_count")?;
        let config = LlamaConfig {
            n_layer: u("llama.block_count")?,
            n_embd,
            n_head,
            n_head_kv: u("llama.attention.head_count_kv").unwrap_or(n_head),
            n_ff: u("llama.feed_forward_length")?,
            rope_dim: u("llama.rope.dimension_count").unwrap_or(n_embd / n_head.max(1)),
            rope_freq_base: meta_f32(&content.metadata, "llama.rope.freq_base").unwrap_or(10_000.),
            rms_eps: meta_f32(&content.metadata, "llama.attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5) as f64,
            vocab,
        };
        if config.n_head == 0
            || config.n_head_kv == 0
            || !config.n_embd.is_multiple_of(config.n_head)
            || !config.n_head.is_multiple_of(config.n_head_kv)
        {
            return Err(FinetuneError::Model(
                "bad llama head counts in the GGUF".into(),
            ));
        }
        if config.rope_dim != config.head_dim() {
            return Err(FinetuneError::Model(format!(
                "partial rope ({} of {} dimensions) is not supported",
                config.rope_dim,
                config.head_dim()
            )));
        }
        let dev = Device::Cpu;
        let mut get = |name: &str| -> Result<Tensor> {
            let q = content.tensor(&mut file, name, &dev).map_err(|e| {
                FinetuneError::Model(format!("{}: tensor {name}: {e}", path.display()))
            })?;
            Ok(q.dequantize(&dev)?.to_dtype(DType::F32)?)
        };
        let token_embd = get("token_embd.weight")?;
        let mut blocks = Vec::with_capacity(config.n_layer);
        for i in 0..config.n_layer {
            let mut b = |s: &str| get(&format!("blk.{i}.{s}.weight"));
            blocks.push(Block {
                attn_norm: b("attn_norm")?,
                wq: b("attn_q")?,
                wk: b("attn_k")?,
                wv: b("attn_v")?,
                wo: b("attn_output")?,
                ffn_norm: b("ffn_norm")?,
                w_gate: b("ffn_gate")?,
                w_up: b("ffn_up")?,
                w_down: b("ffn_down")?,
            });
        }
        let output_norm = get("output_norm.weight")?;
        let (output, tied_embeddings) = if content.tensor_infos.contains_key("output.weight") {
            (get("output.weight")?, false)
        } else {
            (token_embd.clone(), true)
        };
        let mut config = config;
        if config.vocab == 0 {
            config.vocab = token_embd.dim(0)?;
        }
        Ok(Self {
            config,
            token_embd,
            blocks,
            output_norm,
            output,
            tied_embeddings,
            architecture: arch,
        })
    }
}

fn meta<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a Value> {
    md.get(key)
        .ok_or_else(|| FinetuneError::Model(format!("the GGUF has no `{key}` metadata")))
}

fn meta_u32(md: &HashMap<String, Value>, key: &str) -> Result<usize> {
    let v = meta(md, key)?;
    v.to_u32()
        .map(|n| n as usize)
        .or_else(|_| v.to_u64().map(|n| n as usize))
        .or_else(|_| v.to_i32().map(|n| n.max(0) as usize))
        .map_err(|_| FinetuneError::Model(format!("`{key}` is not an integer")))
}

fn meta_f32(md: &HashMap<String, Value>, key: &str) -> Result<f32> {
    let v = meta(md, key)?;
    v.to_f32()
        .or_else(|_| v.to_f64().map(|f| f as f32))
        .map_err(|_| FinetuneError::Model(format!("`{key}` is not a number")))
}

fn meta_str(md: &HashMap<String, Value>, key: &str) -> Result<String> {
    meta(md, key)?
        .to_string()
        .cloned()
        .map_err(|_| FinetuneError::Model(format!("`{key}` is not a string")))
}
