//! The trainable LoRA matrices: for every layer, `A` (`[rank, in]`) and `B` (`[out, rank]`)
//! on the attention `q` and `v` projections, as PEFT lays them out; the update to a projection
//! `W x` is `(alpha / rank) · B A x`. `A` starts uniform in ±1/√in (PEFT's Kaiming init),
//! `B` at zero, so training starts from the base model exactly.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::weights::LlamaConfig;
use crate::{FinetuneError, Result};

/// Rank and scale of the adapter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
        }
    }
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha as f64 / self.rank as f64
    }
}

/// One adapted projection.
pub struct LoraPair {
    pub a: Var,
    pub b: Var,
}

/// The adapter of one layer: `q` and `v`.
pub struct LayerLora {
    pub q: LoraPair,
    pub v: LoraPair,
}

/// All trainable parameters.
pub struct LoraParams {
    pub config: LoraConfig,
    pub layers: Vec<LayerLora>,
}

impl LoraParams {
    /// Fresh parameters, drawn from `seed`.
    pub fn init(model: &LlamaConfig, config: LoraConfig, seed: u64) -> Result<Self> {
        if config.rank == 0 || config.rank > model.n_embd {
            return Err(FinetuneError::Invalid(format!(
                "LoRA rank must be between 1 and {}, not {}",
                model.n_embd, config.rank
            )));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dev = Device::Cpu;
        let mut pair = |out: usize, inp: usize| -> Result<LoraPair> {
            let bound = 1.0 / (inp as f32).sqrt();
            let a: Vec<f32> = (0..config.rank * inp)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let a = Tensor::from_vec(a, (config.rank, inp), &dev)?;
            let b = Tensor::zeros((out, config.rank), candle_core::DType::F32, &dev)?;
            Ok(LoraPair {
                a: Var::from_tensor(&a)?,
                b: Var::from_tensor(&b)?,
            })
        };
        let layers = (0..model.n_layer)
            .map(|_| {
                Ok(LayerLora {
                    q: pair(model.n_embd, model.n_embd)?,
                    v: pair(model.kv_dim(), model.n_embd)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { config, layers })
    }

    /// Every trainable tensor under its llama.cpp adapter name
    /// (`blk.N.attn_q.weight.lora_a` …), in a fixed order.
    pub fn named(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::with_capacity(self.layers.len() * 4);
        for (i, l) in self.layers.iter().enumerate() {
            for (proj, p) in [("attn_q", &l.q), ("attn_v", &l.v)] {
                out.push((format!("blk.{i}.{proj}.weight.lora_a"), &p.a));
                out.push((format!("blk.{i}.{proj}.weight.lora_b"), &p.b));
            }
        }
        out
    }

    pub fn vars(&self) -> Vec<Var> {
        self.named().into_iter().map(|(_, v)| v.clone()).collect()
    }

    /// The parameters as plain tensors, by name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.named()
            .into_iter()
            .map(|(n, v)| {
                (
                    n,
                    v.as_tensor()
                        .copy()
                        .unwrap_or_else(|_| v.as_tensor().clone()),
                )
            })
            .collect()
    }

    /// Overwrite the parameters with `tensors` (a checkpoint), checking every name and shape.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.named() {
            let t = tensors
                .get(&name)
                .ok_or_else(|| FinetuneError::Checkpoint(format!("the checkpoint lacks {name}")))?;
            if t.dims() != var.dims() {
                return Err(FinetuneError::Checkpoint(format!(
                    "{name} has shape {:?} in the checkpoint, {:?} in the model",
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(t)?;
        }
        Ok(())
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.named().iter().map(|(_, v)| v.elem_count()).sum()
    }
}
