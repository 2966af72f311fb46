//! BERT-family safetensors → GGUF (arch `bert`), as llama.cpp's loader reads it.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::gguf::{TensorInfo, Value, Writer};
use crate::quant::{self, OutType};
use crate::vocab::Vocab;
use crate::{ConvertError, Result};

/// llama.cpp's pooling types.
const POOLING_MEAN: u32 = 1;
const POOLING_CLS: u32 = 2;
const POOLING_RANK: u32 = 4;

/// The hyperparameters of `config.json` the conversion needs.
#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: u32,
    intermediate_size: u32,
    num_attention_heads: u32,
    num_hidden_layers: u32,
    max_position_embeddings: u32,
    #[serde(default = "default_eps")]
    layer_norm_eps: f32,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: u32,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default = "default_position")]
    position_embedding_type: String,
    #[serde(default)]
    id2label: Option<serde_json::Map<String, serde_json::Value>>,
}

fn default_eps() -> f32 {
    1e-12
}
fn default_type_vocab() -> u32 {
    2
}
fn default_act() -> String {
    "gelu".into()
}
fn default_position() -> String {
    "absolute".into()
}

/// sentence-transformers' `1_Pooling/config.json`.
#[derive(Deserialize, Default)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

/// Where a conversion stands, after each tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The GGUF name of the tensor just written.
    pub tensor: String,
    pub tensors_done: usize,
    pub tensors_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub tensors: usize,
    pub bytes: u64,
    pub vocab_size: usize,
    /// `mean`, `cls` or `rank`.
    pub pooling: &'static str,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ConvertError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ConvertError::Format(format!("{} cannot be read: {e}", path.display())))
}

/// The GGUF name of a Hugging Face BERT tensor; `None` for tensors llama.cpp does not use.
/// `classifier`: whether the checkpoint has a classification head (its pooler is then the
/// head's first layer, `cls`).
pub(crate) fn gguf_name(hf: &str, classifier: bool) -> Result<Option<String>> {
    let name = hf.strip_prefix("bert.").unwrap_or(hf);
    // Position ids are a buffer of 0..n, not a weight.
    if name.ends_with("position_ids") {
        return Ok(None);
    }
    let name = name
        .strip_suffix(".gamma")
        .map(|n| format!("{n}.weight"))
        .or_else(|| name.strip_suffix(".beta").map(|n| format!("{n}.bias")))
        .unwrap_or_else(|| name.to_owned());
    let (stem, kind) = name
        .rsplit_once('.')
        .filter(|(_, k)| *k == "weight" || *k == "bias")
        .ok_or_else(|| unknown(hf))?;
    let mapped = match stem {
        "embeddings.word_embeddings" => "token_embd".to_owned(),
        "embeddings.token_type_embeddings" => "token_types".to_owned(),
        "embeddings.position_embeddings" => "position_embd".to_owned(),
        "embeddings.LayerNorm" => "token_embd_norm".to_owned(),
        "pooler.dense" if classifier => "cls".to_owned(),
        "pooler.dense" => return Ok(None),
        "classifier" => "cls.output".to_owned(),
        _ => {
            let rest = stem
                .strip_prefix("encoder.layer.")
                .ok_or_else(|| unknown(hf))?;
            let (layer, part) = rest.split_once('.').ok_or_else(|| unknown(hf))?;
            let layer: u32 = layer.parse().map_err(|_| unknown(hf))?;
            let part = match part {
                "attention.self.query" => "attn_q",
                "attention.self.key" => "attn_k",
                "attention.self.value" => "attn_v",
                "attention.output.dense" => "attn_output",
                "attention.output.LayerNorm" => "attn_output_norm",
                "intermediate.dense" => "ffn_up",
                "output.dense" => "ffn_down",
                "output.LayerNorm" => "layer_output_norm",
                _ => return Err(unknown(hf)),
            };
            format!("blk.{layer}.{part}")
        }
    };
    Ok(Some(format!("{mapped}.{kind}")))
}

fn unknown(hf: &str) -> ConvertError {
    ConvertError::Format(format!(
        "tensor '{hf}' is not part of a BERT model this converter knows"
    ))
}

/// Converts the BERT-family checkpoint in `src` into a GGUF file at `out`, calling `progress`
/// after each tensor. The output is written to `out` with a `.part` suffix first and renamed
/// when complete, so a failed run leaves no file that looks whole.
pub fn convert_bert(
    src: &Path,
    out: &Path,
    outtype: OutType,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary> {
    let config: Config = read_json(&src.join("config.json"))?;
    if !config.architectures.is_empty()
        && !config.architectures.iter().any(|a| a.starts_with("Bert"))
    {
        return Err(ConvertError::Format(format!(
            "config.json: architectures {:?} are not BERT (BertModel, BertForSequenceClassification)",
            config.architectures
        )));
    }
    if !config.hidden_act.starts_with("gelu") {
        return Err(ConvertError::Format(format!(
            "config.json: hidden_act '{}' is not GELU, which llama.cpp's BERT uses",
            config.hidden_act
        )));
    }
    if config.position_embedding_type != "absolute" {
        return Err(ConvertError::Format(format!(
            "config.json: position_embedding_type '{}' is not 'absolute'",
            config.position_embedding_type
        )));
    }
    if config.num_attention_heads == 0
        || !config
            .hidden_size
            .is_multiple_of(config.num_attention_heads)
    {
        return Err(ConvertError::Format(format!(
            "config.json: hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden_size, config.num_attention_heads
        )));
    }
    let tokenizer = src.join("tokenizer.json");
    let tokenizer_text = String::from_utf8(read(&tokenizer)?)
        .map_err(|_| ConvertError::Format(format!("{} is not UTF-8", tokenizer.display())))?;
    let mut vocab = Vocab::from_tokenizer_json(&tokenizer_text, &tokenizer.display().to_string())?;

    let weights_path = src.join("model.safetensors");
    let file = File::open(&weights_path).map_err(|source| ConvertError::Read {
        path: weights_path.display().to_string(),
        source,
    })?;
    // SAFETY: the file is only read; a concurrent writer would corrupt the output, not memory
    // safety of this process beyond the bytes read (memmap2's usual caveat).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| ConvertError::Read {
        path: weights_path.display().to_string(),
        source,
    })?;
    let weights = SafeTensors::deserialize(&map).map_err(|e| {
        ConvertError::Format(format!(
            "{} is not a safetensors file: {e}",
            weights_path.display()
        ))
    })?;

    let mut names: Vec<String> = weights.names().into_iter().cloned().collect();
    names.sort_by_key(|n| sort_key(n));
    let classifier = names.iter().any(|n| {
        n.strip_prefix("bert.")
            .unwrap_or(n)
            .starts_with("classifier.")
    });
    let pooling = if classifier {
        POOLING_RANK
    } else {
        let pooling_path = src.join("1_Pooling").join("config.json");
        let pooling: PoolingConfig = if pooling_path.is_file() {
            read_json(&pooling_path)?
        } else {
            PoolingConfig {
                pooling_mode_mean_tokens: true,
                ..PoolingConfig::default()
            }
        };
        match (
            pooling.pooling_mode_mean_tokens,
            pooling.pooling_mode_cls_token,
        ) {
            (_, true) => POOLING_CLS,
            _ => POOLING_MEAN,
        }
    };

    let mut plan = Vec::new();
    let mut infos = Vec::new();
    let mut vocab_rows = None;
    for name in &names {
        let Some(gguf) = gguf_name(name, classifier)? else {
            continue;
        };
        let view = weights
            .tensor(name)
            .map_err(|e| ConvertError::Format(format!("tensor '{name}': {e}")))?;
        let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        let ty = match view.dtype() {
            dtype @ (Dtype::F32 | Dtype::F16 | Dtype::BF16) => {
                outtype.tensor_type(&gguf, &shape, dtype)
            }
            other => {
                return Err(ConvertError::Format(format!(
                    "tensor '{name}' has dtype {other:?}; only F32, F16 and BF16 convert"
                )))
            }
        };
        if gguf == "token_embd.weight" {
            vocab_rows = shape.first().map(|&r| r as usize);
        }
        infos.push(TensorInfo {
            name: gguf.clone(),
            shape,
            ty,
        });
        plan.push((name.clone(), ty));
    }
    let rows = vocab_rows.ok_or_else(|| {
        ConvertError::Format("model.safetensors has no embeddings.word_embeddings.weight".into())
    })?;
    if rows < vocab.tokens.len() {
        return Err(ConvertError::Format(format!(
            "the tokenizer has {} tokens but the embedding matrix only {rows} rows",
            vocab.tokens.len()
        )));
    }
    vocab.pad_to(rows);
    let labels = config.id2label.as_ref().map_or(1, |m| m.len().max(1));
    let metadata = metadata(&config, &vocab, pooling, classifier, labels, src, outtype);

    let part = out.with_extension("gguf.part");
    let write_err = |source| ConvertError::Write {
        path: part.display().to_string(),
        source,
    };
    let output = File::create(&part).map_err(write_err)?;
    let bytes_total: u64 = infos.iter().map(TensorInfo::bytes).sum();
    let tensors_total = infos.len();
    let mut writer = Writer::new(
        BufWriter::with_capacity(1 << 20, output),
        &metadata,
        infos.clone(),
    )
    .map_err(write_err)?;
    let mut bytes_done = 0;
    for (i, ((name, ty), info)) in plan.iter().zip(&infos).enumerate() {
        let view = weights
            .tensor(name)
            .map_err(|e| ConvertError::Format(format!("tensor '{name}': {e}")))?;
        let data = quant::encode(view.dtype(), view.data(), *ty);
        writer.tensor(&data).map_err(write_err)?;
        bytes_done += info.bytes();
        progress(&Progress {
            tensor: info.name.clone(),
            tensors_done: i + 1,
            tensors_total,
            bytes_done,
            bytes_total,
        });
    }
    let file = writer
        .finish()
        .map_err(write_err)?
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&part, out).map_err(|source| ConvertError::Write {
        path: out.display().to_string(),
        source,
    })?;
    Ok(Summary {
        tensors: tensors_total,
        bytes: bytes_done,
        vocab_size: vocab.tokens.len(),
        pooling: match pooling {
            POOLING_RANK => "rank",
            POOLING_CLS => "cls",
            _ => "mean",
        },
    })
}

/// Embeddings first, then layers in numeric order (so `blk.10` follows `blk.9`), then heads.
fn sort_key(name: &str) -> (u32, u32, String) {
    let bare = name.strip_prefix("bert.").unwrap_or(name);
    if bare.starts_with("embeddings.") {
        return (0, 0, bare.to_owned());
    }
    if let Some(rest) = bare.strip_prefix("encoder.layer.") {
        let (layer, part) = rest.split_once('.').unwrap_or((rest, ""));
        return (1, layer.parse().unwrap_or(u32::MAX), part.to_owned());
    }
    (2, 0, bare.to_owned())
}

/// llama.cpp's `llama_ftype` for the matrices' type (what `llama-cli` prints as the file's
/// type; the loader reads each tensor's own type).
fn file_type(outtype: OutType) -> u32 {
    match outtype {
        OutType::Source | OutType::F32 => 0,
        OutType::F16 => 1,
        OutType::Q8_0 => 7,
        OutType::Bf16 => 32,
    }
}

fn metadata(
    config: &Config,
    vocab: &Vocab,
    pooling: u32,
    classifier: bool,
    labels: usize,
    src: &Path,
    outtype: OutType,
) -> Vec<(String, Value)> {
    let name = src
        .file_name()
        .map_or_else(|| "bert".to_owned(), |n| n.to_string_lossy().into_owned());
    let arch = |key: &str, value| (format!("bert.{key}"), value);
    let mut kv = vec![
        ("general.architecture".to_owned(), Value::Str("bert".into())),
        ("general.name".to_owned(), Value::Str(name)),
        (
            "general.file_type".to_owned(),
            Value::U32(file_type(outtype)),
        ),
        arch("context_length", Value::U32(config.max_position_embeddings)),
        arch("embedding_length", Value::U32(config.hidden_size)),
        arch("feed_forward_length", Value::U32(config.intermediate_size)),
        arch("block_count", Value::U32(config.num_hidden_layers)),
        arch(
            "attention.head_count",
            Value::U32(config.num_attention_heads),
        ),
        arch(
            "attention.layer_norm_epsilon",
            Value::F32(config.layer_norm_eps),
        ),
        arch("attention.causal", Value::Bool(false)),
        arch("pooling_type", Value::U32(pooling)),
        ("tokenizer.ggml.model".to_owned(), Value::Str("bert".into())),
        (
            "tokenizer.ggml.token_type_count".to_owned(),
            Value::U32(config.type_vocab_size),
        ),
        (
            "tokenizer.ggml.tokens".to_owned(),
            Value::StrArray(vocab.tokens.clone()),
        ),
        (
            "tokenizer.ggml.token_type".to_owned(),
            Value::I32Array(vocab.types.clone()),
        ),
        ("tokenizer.ggml.add_bos_token".to_owned(), Value::Bool(true)),
        ("tokenizer.ggml.add_sep_token".to_owned(), Value::Bool(true)),
    ];
    if classifier && labels > 1 {
        let names = (0..labels).map(|i| format!("LABEL_{i}")).collect();
        kv.push(arch("classifier.output_labels", Value::StrArray(names)));
    }
    for (key, id) in &vocab.specials {
        kv.push((format!("tokenizer.ggml.{key}_token_id"), Value::U32(*id)));
        if *key == "cls" {
            kv.push(("tokenizer.ggml.bos_token_id".to_owned(), Value::U32(*id)));
        }
    }
    kv
}
