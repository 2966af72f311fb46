//! The Whisper network on candle: candle-transformers' encoder, and a text decoder written here
//! with a key/value cache for its self-attention.
//!
//! candle-transformers' own decoder caches only the cross-attention and recomputes every
//! earlier position at each step (quadratic in the tokens of a window, which with the previous
//! window's text as prompt is hundreds of positions per step), and applies the output
//! projection to all positions. This one feeds each new token once and projects only the last
//! position. Both read the same Hugging Face-named safetensors (`model.decoder.*`).

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::whisper::{self as tw, model::AudioEncoder};

fn layer_norm(size: usize, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(size, "weight")?,
        vb.get(size, "bias")?,
        1e-5,
    ))
}

#[derive(Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    /// Self-attention: keys and values of the positions fed so far, `[1, heads, t, dh]`.
    /// Cross-attention: those of the encoder output.
    cache: Option<(Tensor, Tensor)>,
}

impl Attention {
    fn load(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q: candle_nn::linear(d, d, vb.pp("q_proj"))?,
            k: candle_nn::linear_no_bias(d, d, vb.pp("k_proj"))?,
            v: candle_nn::linear(d, d, vb.pp("v_proj"))?,
            out: candle_nn::linear(d, d, vb.pp("out_proj"))?,
            heads,
            cache: None,
        })
    }

    /// `[1, t, d]` → `[1, heads, t, dh]`.
    fn split(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let dh = q.dim(D::Minus1)?;
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? / (dh as f64).sqrt())?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let w = candle_nn::ops::softmax_last_dim(&scores)?;
        let (b, _, t, _) = q.dims4()?;
        w.matmul(v)?.transpose(1, 2)?.reshape((b, t, ()))
    }

    /// Self-attention over the cache plus `x`'s positions (causal within `x`).
    fn self_forward(&mut self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let q = self.split(&self.q.forward(x)?)?;
        let k = self.split(&self.k.forward(x)?)?;
        let v = self.split(&self.v.forward(x)?)?;
        let (k, v) = match &self.cache {
            Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            None => (k, v),
        };
        self.cache = Some((k.clone(), v.clone()));
        self.out.forward(&self.attend(&q, &k, &v, mask)?)
    }

    /// Cross-attention over the encoder output `xa` (projected once per window).
    fn cross_forward(&mut self, x: &Tensor, xa: &Tensor) -> Result<Tensor> {
        let q = self.split(&self.q.forward(x)?)?;
        let (k, v) = match &self.cache {
            Some(kv) => kv.clone(),
            None => {
                let kv = (
                    self.split(&self.k.forward(xa)?)?,
                    self.split(&self.v.forward(xa)?)?,
                );
                self.cache = Some(kv.clone());
                kv
            }
        };
        self.out.forward(&self.attend(&q, &k, &v, None)?)
    }
}

#[derive(Clone)]
struct Block {
    attn: Attention,
    attn_ln: LayerNorm,
    cross: Attention,
    cross_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    mlp_ln: LayerNorm,
}

impl Block {
    fn load(d: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            attn: Attention::load(d, heads, vb.pp("self_attn"))?,
            attn_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
            cross: Attention::load(d, heads, vb.pp("encoder_attn"))?,
            cross_ln: layer_norm(d, vb.pp("encoder_attn_layer_norm"))?,
            fc1: candle_nn::linear(d, 4 * d, vb.pp("fc1"))?,
            fc2: candle_nn::linear(4 * d, d, vb.pp("fc2"))?,
            mlp_ln: layer_norm(d, vb.pp("final_layer_norm"))?,
        })
    }

    fn forward(&mut self, x: &Tensor, xa: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self.attn.self_forward(&self.attn_ln.forward(x)?, mask)?)?;
        let x = (&x + self.cross.cross_forward(&self.cross_ln.forward(&x)?, xa)?)?;
        let h = self.fc1.forward(&self.mlp_ln.forward(&x)?)?.gelu_erf()?;
        x + self.fc2.forward(&h)?
    }
}

/// Whisper's text decoder with a self-attention cache.
#[derive(Clone)]
pub struct Decoder {
    embed: Embedding,
    positions: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
    /// Positions fed since the last [`Decoder::reset`].
    fed: usize,
    pub max_positions: usize,
}

impl Decoder {
    fn load(cfg: &tw::Config, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let blocks = (0..cfg.decoder_layers)
            .map(|i| Block::load(d, cfg.decoder_attention_heads, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embed: candle_nn::embedding(cfg.vocab_size, d, vb.pp("embed_tokens"))?,
            positions: vb.get((cfg.max_target_positions, d), "embed_positions.weight")?,
            blocks,
            ln: layer_norm(d, vb.pp("layer_norm"))?,
            fed: 0,
            max_positions: cfg.max_target_positions,
        })
    }

    /// Forgets the fed tokens and the encoder output.
    pub fn reset(&mut self) {
        self.fed = 0;
        for b in &mut self.blocks {
            b.attn.cache = None;
            b.cross.cache = None;
        }
    }

    /// Feeds `tokens` after those already fed; returns the logits at each of their positions
    /// listed in `want` (indices into `tokens`), as `[want.len(), vocab]`.
    pub fn feed(&mut self, tokens: &[u32], xa: &Tensor, want: &[usize]) -> Result<Tensor> {
        let n = tokens.len();
        if self.fed + n > self.max_positions {
            candle_core::bail!(
                "the decoder holds {} positions; {} were asked for",
                self.max_positions,
                self.fed + n
            );
        }
        let device = xa.device();
        let ids = Tensor::new(tokens, device)?.unsqueeze(0)?;
        let mut x = self
            .embed
            .forward(&ids)?
            .broadcast_add(&self.positions.narrow(0, self.fed, n)?)?;
        let mask = (n > 1)
            .then(|| causal_mask(n, self.fed, device))
            .transpose()?;
        for b in &mut self.blocks {
            x = b.forward(&x, xa, mask.as_ref())?;
        }
        self.fed += n;
        let idx = Tensor::new(
            want.iter()
                .map(|i| *i as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            device,
        )?;
        let x = self.ln.forward(&x.i(0)?.index_select(&idx, 0)?)?;
        x.matmul(&self.embed.embeddings().t()?)
    }
}

/// `[n, past + n]`: new position i sees every cached position and new positions ≤ i.
fn causal_mask(n: usize, past: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..n)
        .flat_map(|i| {
            (0..past + n).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
        })
        .collect();
    Tensor::from_vec(m, (n, past + n), device)
}

/// The loaded network.
#[derive(Clone)]
pub struct Whisper {
    pub encoder: AudioEncoder,
    pub decoder: Decoder,
    pub config: tw::Config,
}

impl Whisper {
    /// Loads `model.safetensors` as f32 on the CPU.
    pub fn load(weights: &std::path::Path, config: tw::Config) -> Result<Self> {
        let device = Device::Cpu;
        // SAFETY: the weights file is memory-mapped read-only while the tensors are built from
        // it; the map is dropped when this returns.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device)? };
        // candle-transformers builds its encoder only as part of a whole model; its decoder
        // is dropped right away in favour of the cached one.
        let whole = tw::model::Whisper::load(&vb, config.clone())?;
        let decoder = Decoder::load(&config, vb.pp("model.decoder"))?;
        Ok(Self {
            encoder: whole.encoder,
            decoder,
            config,
        })
    }

    /// Encodes one window of log-mel features (`n_mels` × 3000, row-major).
    pub fn encode(&mut self, mel: Vec<f32>) -> Result<Tensor> {
        let n_mels = self.config.num_mel_bins;
        let frames = mel.len() / n_mels;
        let x = Tensor::from_vec(mel, (1, n_mels, frames), &Device::Cpu)?;
        self.encoder.forward(&x, true)
    }
}
