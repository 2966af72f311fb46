//! The llama forward pass as llama.cpp computes `LLM_ARCH_LLAMA`, with LoRA on `q` and `v`,
//! written with candle's differentiable ops (`rms_norm_slow`, `rope_i_slow`, `softmax`) so
//! the loss back-propagates to the LoRA matrices.
//!
//! GGUF llama weights have `q`/`k` permuted for llama.cpp's "normal" rope, which rotates
//! adjacent pairs `(x[2i], x[2i+1])`: hence `rope_i` (interleaved), not the NeoX rotate-half.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor, D};
use candle_nn::ops::{rms_norm_slow, softmax};
use candle_nn::rotary_emb::rope_i_slow;

use crate::lora::{LoraPair, LoraParams};
use crate::weights::BaseModel;
use crate::Result;

/// Precomputed rope tables for positions `0..max_len`.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub fn new(model: &BaseModel, max_len: usize) -> Result<Self> {
        let c = &model.config;
        let dim = c.rope_dim;
        let inv: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / c.rope_freq_base.powf((2 * i) as f32 / dim as f32))
            .collect();
        let inv = Tensor::from_vec(inv, (1, dim / 2), &Device::Cpu)?;
        let pos = Tensor::arange(0u32, max_len as u32, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .reshape((max_len, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }
}

/// `x @ w^T` for a frozen weight `w: [out, in]`, as a custom op whose backward pass gives
/// the gradient of `x` only: candle's own matmul backward also computes the weight's gradient
/// (a second product as large as the forward, and an F32 copy of every weight), which a
/// frozen base model never uses.
struct Frozen(Tensor);

impl CustomOp1 for Frozen {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k) = xl.shape().dims2()?;
        let (out, wk) = self.0.dims2()?;
        if k != wk {
            candle_core::bail!("frozen-linear: input width {k}, weight width {wk}");
        }
        let (storage, wl) = self.0.storage_and_layout();
        let Storage::Cpu(w) = &*storage else {
            candle_core::bail!("frozen-linear runs on the CPU only");
        };
        let wt = wl.transpose(0, 1)?;
        Ok((x.matmul(w, (1, n, out, k), xl, &wt)?, Shape::from((n, out))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.0)?))
    }
}

/// `x @ w^T` for `x: [n, in]` and a frozen `w: [out, in]`.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Frozen(w.clone()))?)
}

fn with_lora(x: &Tensor, w: &Tensor, lora: Option<(&LoraPair, f64)>) -> Result<Tensor> {
    let base = linear(x, w)?;
    match lora {
        None => Ok(base),
        Some((p, scale)) => {
            // Both factors train: candle's matmul, with gradients for both sides.
            let down = x.matmul(&p.a.as_tensor().t()?)?;
            let up = down.matmul(&p.b.as_tensor().t()?)?;
            Ok((base + (up * scale)?)?)
        }
    }
}

/// The final hidden states (after `output_norm`), `[batch, seq, n_embd]`, for a right-padded
/// batch of token ids `[batch, seq]`. Causal attention makes right padding harmless to the
/// real tokens. `lora: None` runs the base model.
pub fn hidden_states(
    model: &BaseModel,
    lora: Option<&LoraParams>,
    rope: &Rope,
    tokens: &Tensor,
) -> Result<Tensor> {
    let c = &model.config;
    let (b, t) = tokens.dims2()?;
    let hd = c.head_dim();
    let n = b * t;
    let mut x = model
        .token_embd
        .index_select(&tokens.flatten_all()?, 0)?
        .reshape((n, c.n_embd))?;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?;
    let scale = 1.0 / (hd as f64).sqrt();
    let cos = rope.cos.narrow(0, 0, t)?;
    let sin = rope.sin.narrow(0, 0, t)?;
    let group = c.n_head / c.n_head_kv.max(1);
    for (i, blk) in model.blocks.iter().enumerate() {
        let l = lora.map(|p| (&p.layers[i], p.config.scale()));
        let h = rms_norm_slow(&x, &blk.attn_norm, c.rms_eps as f32)?;
        let q = with_lora(&h, &blk.wq, l.map(|(l, s)| (&l.q, s)))?;
        let k = linear(&h, &blk.wk)?;
        let v = with_lora(&h, &blk.wv, l.map(|(l, s)| (&l.v, s)))?;
        let q = q
            .reshape((b, t, c.n_head, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = k
            .reshape((b, t, c.n_head_kv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = v
            .reshape((b, t, c.n_head_kv, hd))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = rope_i_slow(&q, &cos, &sin)?;
        let k = rope_i_slow(&k, &cos, &sin)?;
        // Grouped-query attention: each kv head serves `group` query heads.
        let (k, v) = if group > 1 {
            let rep = |x: Tensor| -> Result<Tensor> {
                Ok(x.unsqueeze(2)?
                    .expand((b, c.n_head_kv, group, t, hd))?
                    .reshape((b, c.n_head, t, hd))?)
            };
            (rep(k)?, rep(v)?)
        } else {
            (k, v)
        };
        let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
        let att = softmax(&att, D::Minus1)?;
        let o = att.matmul(&v)?.transpose(1, 2)?.reshape((n, c.n_embd))?;
        x = (x + linear(&o, &blk.wo)?)?;
        let h = rms_norm_slow(&x, &blk.ffn_norm, c.rms_eps as f32)?;
        let gate = candle_nn::ops::silu(&linear(&h, &blk.w_gate)?)?;
        let up = linear(&h, &blk.w_up)?;
        x = (x + linear(&(gate * up)?, &blk.w_down)?)?;
    }
    let x = rms_norm_slow(&x, &model.output_norm, c.rms_eps as f32)?;
    Ok(x.reshape((b, t, c.n_embd))?)
}

/// Logits `[rows, vocab]` for the hidden states `[rows, n_embd]`.
pub fn logits(model: &BaseModel, hidden: &Tensor) -> Result<Tensor> {
    linear(hidden, &model.output)
}

/// The next-token logits after `tokens` (one sequence), `[vocab]`.
pub fn next_token_logits(
    model: &BaseModel,
    lora: Option<&LoraParams>,
    tokens: &[u32],
) -> Result<Vec<f32>> {
    if tokens.is_empty() {
        return Err(crate::FinetuneError::Invalid(
            "no tokens to predict from".into(),
        ));
    }
    let rope = Rope::new(model, tokens.len())?;
    let ids = Tensor::from_vec(tokens.to_vec(), (1, tokens.len()), &Device::Cpu)?;
    let h = hidden_states(model, lora, &rope, &ids)?;
    let last = h
        .narrow(1, tokens.len() - 1, 1)?
        .reshape((1, model.config.n_embd))?;
    Ok(logits(model, &last)?.flatten_all()?.to_vec1()?)
}
