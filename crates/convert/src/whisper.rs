//! A CTranslate2 Whisper directory (faster-whisper's: `model.bin`, `config.json`,
//! `tokenizer.json`) → a Hugging Face-named safetensors directory that candle-transformers'
//! Whisper loads (`model.safetensors`, `config.json`, `tokenizer.json`).
//!
//! CTranslate2 fuses attention projections: an encoder or decoder self-attention's
//! `linear_0` is q, k and v stacked on the output axis, a cross-attention's `linear_1` is k and
//! v. They are split back (row ranges of the same bytes: no copy, the dtype kept); the key
//! projection's bias, which Whisper does not have and CTranslate2 fills with zeros, is dropped
//! after checking it is zero. Layer-norm `gamma`/`beta` become `weight`/`bias`.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, View};
use serde::Deserialize;

use crate::ct2::{self, DType, Variable};
use crate::{ConvertError, Progress, Result};

/// What a Whisper conversion wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperSummary {
    pub tensors: usize,
    pub bytes: u64,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub d_model: usize,
    pub vocab_size: usize,
}

/// faster-whisper's `config.json` beside `model.bin` (all optional).
#[derive(Debug, Default, Deserialize)]
struct Ct2Config {
    #[serde(default)]
    suppress_ids: Vec<i64>,
    #[serde(default)]
    suppress_ids_begin: Vec<i64>,
    #[serde(default)]
    lang_ids: Vec<i64>,
    #[serde(default)]
    alignment_heads: Vec<(i64, i64)>,
}

/// A tensor to write: a borrowed byte range with its safetensors type and shape.
pub(crate) struct Slice<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
}

impl View for &Slice<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn format(msg: String) -> ConvertError {
    ConvertError::Format(msg)
}

fn float_dtype(name: &str, v: &Variable<'_>) -> Result<Dtype> {
    match v.dtype {
        DType::F32 => Ok(Dtype::F32),
        DType::F16 => Ok(Dtype::F16),
        DType::BF16 => Ok(Dtype::BF16),
        other => Err(format(format!(
            "model.bin: '{name}' is {other:?}: the model is quantized (int8/int16), which \
             candle's Whisper cannot load. Convert it again with --quantization float16 or \
             float32."
        ))),
    }
}

/// The tensors of one model, by their Hugging Face names.
struct Out<'a> {
    tensors: BTreeMap<String, Slice<'a>>,
    vars: &'a BTreeMap<String, Variable<'a>>,
}

impl<'a> Out<'a> {
    fn var(&self, name: &str) -> Result<&'a Variable<'a>> {
        self.vars.get(name).ok_or_else(|| {
            format(format!(
                "model.bin has no variable '{name}': not a CTranslate2 Whisper model"
            ))
        })
    }

    /// Copies `ct2` as `hf` unchanged.
    fn put(&mut self, hf: &str, ct2: &str) -> Result<()> {
        let v = self.var(ct2)?;
        let dtype = float_dtype(ct2, v)?;
        self.tensors.insert(
            hf.to_owned(),
            Slice {
                dtype,
                shape: v.shape.clone(),
                data: v.data,
            },
        );
        Ok(())
    }

    /// A linear layer: `weight` and `bias` (when `bias`).
    fn linear(&mut self, hf: &str, ct2: &str, bias: bool) -> Result<()> {
        self.put(&format!("{hf}.weight"), &format!("{ct2}/weight"))?;
        if bias {
            self.put(&format!("{hf}.bias"), &format!("{ct2}/bias"))?;
        }
        Ok(())
    }

    fn layer_norm(&mut self, hf: &str, ct2: &str) -> Result<()> {
        self.put(&format!("{hf}.weight"), &format!("{ct2}/gamma"))?;
        self.put(&format!("{hf}.bias"), &format!("{ct2}/beta"))
    }

    /// Splits the fused linear `ct2` into `parts.len()` equal row blocks named `parts`
    /// (`k_proj` gets no bias; its fused bias must be zero).
    fn split(&mut self, hf: &str, ct2: &str, parts: &[&str]) -> Result<()> {
        let w_name = format!("{ct2}/weight");
        let b_name = format!("{ct2}/bias");
        let (w, b) = (self.var(&w_name)?, self.var(&b_name)?);
        let (wt, bt) = (float_dtype(&w_name, w)?, float_dtype(&b_name, b)?);
        let n = parts.len();
        let rows = *w.shape.first().unwrap_or(&0);
        if w.shape.len() != 2 || rows % n != 0 || b.shape != [rows] {
            return Err(format(format!(
                "model.bin: fused '{ct2}' has weight {:?} and bias {:?}, which do not split into \
                 {n} equal parts",
                w.shape, b.shape
            )));
        }
        let part_rows = rows / n;
        let w_part = w.data.len() / n;
        let b_part = b.data.len() / n;
        for (i, part) in parts.iter().enumerate() {
            let w_data = &w.data[i * w_part..(i + 1) * w_part];
            let b_data = &b.data[i * b_part..(i + 1) * b_part];
            self.tensors.insert(
                format!("{hf}.{part}.weight"),
                Slice {
                    dtype: wt,
                    shape: vec![part_rows, w.shape[1]],
                    data: w_data,
                },
            );
            if *part == "k_proj" {
                // Whisper's key projection has no bias: CTranslate2 stores zeros (±0).
                if !all_zero(b_data, b.dtype.size()) {
                    return Err(format(format!(
                        "model.bin: '{ct2}' has a nonzero key bias; Whisper's key projection has \
                         none, so this is not a Whisper model candle can load"
                    )));
                }
                continue;
            }
            self.tensors.insert(
                format!("{hf}.{part}.bias"),
                Slice {
                    dtype: bt,
                    shape: vec![part_rows],
                    data: b_data,
                },
            );
        }
        Ok(())
    }
}

/// Whether every little-endian float element of `data` (`size` bytes each) is +0 or -0.
fn all_zero(data: &[u8], size: usize) -> bool {
    data.chunks(size).all(|e| {
        let (last, rest) = e.split_last().unwrap_or((&0, &[]));
        rest.iter().all(|x| *x == 0) && *last & 0x7f == 0
    })
}

fn int(vars: &BTreeMap<String, Variable<'_>>, name: &str) -> Result<i64> {
    vars.get(name).and_then(Variable::int).ok_or_else(|| {
        format(format!(
            "model.bin has no integer '{name}': not a CTranslate2 Whisper model"
        ))
    })
}

fn layers(vars: &BTreeMap<String, Variable<'_>>, side: &str) -> usize {
    (0..)
        .take_while(|i| vars.contains_key(&format!("{side}/layer_{i}/ffn/linear_0/weight")))
        .count()
}

/// Converts the CTranslate2 Whisper directory `src` into `out` (created; must not exist or be
/// empty): `model.safetensors`, `config.json` and `tokenizer.json`. Written into `OUT.part`
/// and renamed when whole.
pub fn convert_whisper(
    src: &Path,
    out: &Path,
    progress: &mut dyn FnMut(&Progress),
) -> Result<WhisperSummary> {
    let bin = src.join("model.bin");
    let file = std::fs::File::open(&bin).map_err(|source| ConvertError::Read {
        path: bin.display().to_string(),
        source,
    })?;
    // SAFETY: the map is read-only and lives for this function; a file changed underneath
    // would give wrong weights, not unsafety in this process's own memory.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ConvertError::Read {
        path: bin.display().to_string(),
        source,
    })?;
    let model = ct2::parse(&map)?;
    if model.spec != "WhisperSpec" {
        return Err(format(format!(
            "{} is a CTranslate2 '{}' model, not Whisper (WhisperSpec)",
            bin.display(),
            model.spec
        )));
    }
    let tokenizer = src.join("tokenizer.json");
    if !tokenizer.is_file() {
        return Err(format(format!(
            "{} is missing: the Whisper directory needs its tokenizer.json (faster-whisper's \
             conversions copy it with --copy_files tokenizer.json)",
            tokenizer.display()
        )));
    }
    let ct2_config: Ct2Config = match std::fs::read(src.join("config.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format(format!("{}/config.json cannot be read: {e}", src.display())))?,
        Err(_) => Ct2Config::default(),
    };
    let vars = &model.variables;
    for (name, want) in [("decoder/pre_norm", 1), ("decoder/alibi", 0)] {
        if vars
            .get(name)
            .and_then(Variable::int)
            .is_some_and(|v| v != want)
        {
            return Err(format(format!(
                "model.bin: '{name}' is not {want}; not a Whisper layout candle can load"
            )));
        }
    }
    let encoder_layers = layers(vars, "encoder");
    let decoder_layers = layers(vars, "decoder");
    let encoder_heads = int(vars, "encoder/num_heads")?;
    let decoder_heads = int(vars, "decoder/num_heads")?;
    let embeddings = vars
        .get("decoder/embeddings/weight")
        .ok_or_else(|| format("model.bin has no decoder/embeddings/weight".into()))?;
    let conv1 = vars
        .get("encoder/conv1/weight")
        .ok_or_else(|| format("model.bin has no encoder/conv1/weight".into()))?;
    let enc_pos = vars
        .get("encoder/position_encodings/encodings")
        .ok_or_else(|| format("model.bin has no encoder/position_encodings".into()))?;
    let dec_pos = vars
        .get("decoder/position_encodings/encodings")
        .ok_or_else(|| format("model.bin has no decoder/position_encodings".into()))?;
    let (&[vocab_size, d_model], &[_, n_mels, _]) =
        (embeddings.shape.as_slice(), conv1.shape.as_slice())
    else {
        return Err(format(
            "model.bin: decoder embeddings or conv1 have an unexpected rank".into(),
        ));
    };
    if encoder_layers == 0 || decoder_layers == 0 {
        return Err(format("model.bin has no encoder or decoder layers".into()));
    }

    let mut o = Out {
        tensors: BTreeMap::new(),
        vars,
    };
    let (e, d) = ("model.encoder", "model.decoder");
    o.linear(&format!("{e}.conv1"), "encoder/conv1", true)?;
    o.linear(&format!("{e}.conv2"), "encoder/conv2", true)?;
    o.put(
        &format!("{e}.embed_positions.weight"),
        "encoder/position_encodings/encodings",
    )?;
    o.layer_norm(&format!("{e}.layer_norm"), "encoder/layer_norm")?;
    for i in 0..encoder_layers {
        let (hf, c) = (format!("{e}.layers.{i}"), format!("encoder/layer_{i}"));
        self_attention(&mut o, &hf, &c)?;
        ffn(&mut o, &hf, &c)?;
    }
    o.put(
        &format!("{d}.embed_tokens.weight"),
        "decoder/embeddings/weight",
    )?;
    o.put(
        &format!("{d}.embed_positions.weight"),
        "decoder/position_encodings/encodings",
    )?;
    o.layer_norm(&format!("{d}.layer_norm"), "decoder/layer_norm")?;
    for i in 0..decoder_layers {
        let (hf, c) = (format!("{d}.layers.{i}"), format!("decoder/layer_{i}"));
        self_attention(&mut o, &hf, &c)?;
        o.split(
            &format!("{hf}.encoder_attn"),
            &format!("{c}/attention/linear_0"),
            &["q_proj"],
        )?;
        o.split(
            &format!("{hf}.encoder_attn"),
            &format!("{c}/attention/linear_1"),
            &["k_proj", "v_proj"],
        )?;
        o.linear(
            &format!("{hf}.encoder_attn.out_proj"),
            &format!("{c}/attention/linear_2"),
            true,
        )?;
        o.layer_norm(
            &format!("{hf}.encoder_attn_layer_norm"),
            &format!("{c}/attention/layer_norm"),
        )?;
        ffn(&mut o, &hf, &c)?;
    }

    let ids = |v: &[i64]| v.iter().filter(|i| **i >= 0).copied().collect::<Vec<_>>();
    let config = serde_json::json!({
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "num_mel_bins": n_mels,
        "d_model": d_model,
        "vocab_size": vocab_size,
        "encoder_layers": encoder_layers,
        "decoder_layers": decoder_layers,
        "encoder_attention_heads": encoder_heads,
        "decoder_attention_heads": decoder_heads,
        "max_source_positions": enc_pos.shape.first().copied().unwrap_or(1500),
        "max_target_positions": dec_pos.shape.first().copied().unwrap_or(448),
        "suppress_tokens": ids(&ct2_config.suppress_ids),
        "begin_suppress_tokens": ids(&ct2_config.suppress_ids_begin),
        "lang_ids": ids(&ct2_config.lang_ids),
        "alignment_heads": ct2_config.alignment_heads,
        "converted_from": "ctranslate2",
    });

    let part = out.with_extension("part");
    let _ = std::fs::remove_dir_all(&part);
    std::fs::create_dir_all(&part).map_err(|source| ConvertError::Write {
        path: part.display().to_string(),
        source,
    })?;
    let write_err = |path: &Path, source: std::io::Error| ConvertError::Write {
        path: path.display().to_string(),
        source,
    };
    let bytes: u64 = o.tensors.values().map(|t| t.data.len() as u64).sum();
    let total = o.tensors.len();
    let st = part.join("model.safetensors");
    safetensors::serialize_to_file(o.tensors.iter().map(|(k, v)| (k.clone(), v)), &None, &st)
        .map_err(|e| format(format!("cannot write {}: {e}", st.display())))?;
    progress(&Progress {
        tensor: "model.safetensors".into(),
        tensors_done: total,
        tensors_total: total,
        bytes_done: bytes,
        bytes_total: bytes,
    });
    let cfg_path = part.join("config.json");
    let text = serde_json::to_vec_pretty(&config).map_err(|e| format(e.to_string()))?;
    std::fs::write(&cfg_path, text).map_err(|e| write_err(&cfg_path, e))?;
    let tok_path = part.join("tokenizer.json");
    std::fs::copy(&tokenizer, &tok_path).map_err(|e| write_err(&tok_path, e))?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| write_err(out, e))?;
    }
    std::fs::rename(&part, out).map_err(|e| write_err(out, e))?;
    Ok(WhisperSummary {
        tensors: total,
        bytes,
        encoder_layers,
        decoder_layers,
        d_model,
        vocab_size,
    })
}

/// A layer's self-attention: the fused q/k/v split, the output projection and its layer norm
/// (the same in encoder and decoder layers).
fn self_attention(o: &mut Out<'_>, hf: &str, c: &str) -> Result<()> {
    o.split(
        &format!("{hf}.self_attn"),
        &format!("{c}/self_attention/linear_0"),
        &["q_proj", "k_proj", "v_proj"],
    )?;
    o.linear(
        &format!("{hf}.self_attn.out_proj"),
        &format!("{c}/self_attention/linear_1"),
        true,
    )?;
    o.layer_norm(
        &format!("{hf}.self_attn_layer_norm"),
        &format!("{c}/self_attention/layer_norm"),
    )
}

fn ffn(o: &mut Out<'_>, hf: &str, c: &str) -> Result<()> {
    o.linear(&format!("{hf}.fc1"), &format!("{c}/ffn/linear_0"), true)?;
    o.linear(&format!("{hf}.fc2"), &format!("{c}/ffn/linear_1"), true)?;
    o.layer_norm(
        &format!("{hf}.final_layer_norm"),
        &format!("{c}/ffn/layer_norm"),
    )
}

/// Whether `dir` is a CTranslate2 model directory (it has `model.bin`).
pub fn is_ctranslate2(dir: &Path) -> bool {
    dir.join("model.bin").is_file()
}
