//! A tiny synthetic BERT checkpoint built here → GGUF → read back.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::bert::gguf_name;
use crate::gguf::TensorType;
use crate::quant::{dequantize_q8_0, quantize_q8_0};
use crate::{convert_bert, OutType};

const HIDDEN: usize = 32;
const FF: usize = 64;
const VOCAB: [&str; 8] = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat", "##s", "dog",
];

/// A read-back GGUF: metadata (scalars as text, arrays as lists of text) and tensors.
struct Read {
    meta: HashMap<String, Vec<String>>,
    /// name → (dims innermost first, type, data as f32)
    tensors: HashMap<String, (Vec<u64>, u32, Vec<f32>)>,
}

struct Cursor<'a>(&'a [u8], usize);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.0[self.1..self.1 + n];
        self.1 += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).unwrap()
    }
    fn scalar(&mut self, ty: u32) -> String {
        match ty {
            4 => self.u32().to_string(),
            5 => i32::from_le_bytes(self.take(4).try_into().unwrap()).to_string(),
            6 => f32::from_le_bytes(self.take(4).try_into().unwrap()).to_string(),
            7 => (self.take(1)[0] != 0).to_string(),
            8 => self.string(),
            other => panic!("type {other}"),
        }
    }
}

fn read_gguf(path: &Path) -> Read {
    let bytes = std::fs::read(path).unwrap();
    let mut c = Cursor(&bytes, 0);
    assert_eq!(c.take(4), b"GGUF");
    assert_eq!(c.u32(), 3);
    let (n_tensors, n_kv) = (c.u64(), c.u64());
    let mut meta = HashMap::new();
    for _ in 0..n_kv {
        let key = c.string();
        let ty = c.u32();
        let values = if ty == 9 {
            let (ety, n) = (c.u32(), c.u64());
            (0..n).map(|_| c.scalar(ety)).collect()
        } else {
            vec![c.scalar(ty)]
        };
        meta.insert(key, values);
    }
    let mut infos = Vec::new();
    for _ in 0..n_tensors {
        let name = c.string();
        let dims: Vec<u64> = (0..c.u32()).map(|_| c.u64()).collect();
        let (ty, offset) = (c.u32(), c.u64());
        infos.push((name, dims, ty, offset));
    }
    let data_start = c.1.div_ceil(32) * 32;
    let tensors = infos
        .into_iter()
        .map(|(name, dims, ty, offset)| {
            assert_eq!(offset % 32, 0);
            let n: u64 = dims.iter().product();
            let start = data_start + offset as usize;
            let len = TensorType::from_id(ty).bytes_of(n) as usize;
            let values = match ty {
                0 => bytes[start..start + 4 * n as usize]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                1 => bytes[start..start + len]
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                30 => bytes[start..start + len]
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                8 => dequantize_q8_0(&bytes[start..start + len]),
                other => panic!("tensor type {other}"),
            };
            (name, (dims, ty, values))
        })
        .collect();
    Read { meta, tensors }
}

/// Writes a synthetic checkpoint; each tensor's values are `seed + index / 1000` so that
/// every tensor is distinguishable after conversion.
fn write_checkpoint(dir: &Path, layers: usize, classifier: bool, prefix: &str) {
    let mut config = serde_json::json!({
        "architectures": [if classifier { "BertForSequenceClassification" } else { "BertModel" }],
        "hidden_size": HIDDEN, "intermediate_size": FF, "num_attention_heads": 2,
        "num_hidden_layers": layers, "max_position_embeddings": 16, "layer_norm_eps": 1e-12,
        "type_vocab_size": 2, "hidden_act": "gelu", "vocab_size": VOCAB.len(),
    });
    if classifier {
        config["id2label"] = serde_json::json!({"0": "LABEL_0"});
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let vocab: serde_json::Map<_, _> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), serde_json::json!(i)))
        .collect();
    let added: Vec<_> = VOCAB[..5]
        .iter()
        .enumerate()
        .map(|(i, t)| serde_json::json!({"id": i, "content": t, "special": true}))
        .collect();
    let tokenizer = serde_json::json!({
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "lowercase": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "vocab": vocab},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();

    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![VOCAB.len(), HIDDEN],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![16, HIDDEN],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, HIDDEN],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![HIDDEN]),
        ("embeddings.LayerNorm.bias".into(), vec![HIDDEN]),
        ("pooler.dense.weight".into(), vec![HIDDEN, HIDDEN]),
        ("pooler.dense.bias".into(), vec![HIDDEN]),
    ];
    for l in 0..layers {
        for (part, shape) in [
            ("attention.self.query", vec![HIDDEN, HIDDEN]),
            ("attention.self.key", vec![HIDDEN, HIDDEN]),
            ("attention.self.value", vec![HIDDEN, HIDDEN]),
            ("attention.output.dense", vec![HIDDEN, HIDDEN]),
            ("attention.output.LayerNorm", vec![HIDDEN]),
            ("intermediate.dense", vec![FF, HIDDEN]),
            ("output.dense", vec![HIDDEN, FF]),
            ("output.LayerNorm", vec![HIDDEN]),
        ] {
            let bias = vec![*shape.first().unwrap()];
            shapes.push((format!("encoder.layer.{l}.{part}.weight"), shape));
            shapes.push((format!("encoder.layer.{l}.{part}.bias"), bias));
        }
    }
    if classifier {
        shapes.push(("classifier.weight".into(), vec![1, HIDDEN]));
        shapes.push(("classifier.bias".into(), vec![1]));
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .enumerate()
        .map(|(seed, (name, shape))| {
            let n: usize = shape.iter().product();
            let bytes = (0..n)
                .flat_map(|i| (seed as f32 + i as f32 / 1000.0).to_le_bytes())
                .collect();
            (format!("{prefix}{name}"), shape, bytes)
        })
        .collect();
    let mut views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(name, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    // position_ids is in real checkpoints and must be skipped.
    let ids: Vec<u8> = (0..16i64).flat_map(i64::to_le_bytes).collect();
    views.push((
        format!("{prefix}embeddings.position_ids"),
        TensorView::new(Dtype::I64, vec![1, 16], &ids).unwrap(),
    ));
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn converts_a_bert_embedding_model() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), 11, false, "");
    let out = dir.path().join("out.gguf");
    let mut seen = Vec::new();
    let summary = convert_bert(dir.path(), &out, OutType::Source, &mut |p| {
        seen.push(p.clone())
    })
    .unwrap();
    assert_eq!(summary.pooling, "mean");
    assert_eq!(summary.tensors, 5 + 11 * 16);
    assert_eq!(seen.len(), summary.tensors);
    assert_eq!(
        seen.last().unwrap().bytes_done,
        seen.last().unwrap().bytes_total
    );
    assert!(!dir.path().join("out.gguf.part").exists());

    let read = read_gguf(&out);
    let one = |k: &str| read.meta[k][0].clone();
    assert_eq!(one("general.architecture"), "bert");
    assert_eq!(one("bert.block_count"), "11");
    assert_eq!(one("bert.embedding_length"), HIDDEN.to_string());
    assert_eq!(one("bert.feed_forward_length"), FF.to_string());
    assert_eq!(one("bert.attention.head_count"), "2");
    assert_eq!(one("bert.attention.causal"), "false");
    assert_eq!(one("bert.pooling_type"), "1");
    assert_eq!(one("bert.context_length"), "16");
    assert_eq!(one("tokenizer.ggml.model"), "bert");
    assert_eq!(one("tokenizer.ggml.cls_token_id"), "2");
    assert_eq!(one("tokenizer.ggml.seperator_token_id"), "3");
    assert_eq!(
        read.meta["tokenizer.ggml.tokens"],
        [
            "[PAD]",
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "[MASK]",
            "\u{2581}cat",
            "s",
            "\u{2581}dog"
        ]
    );
    assert_eq!(
        read.meta["tokenizer.ggml.token_type"],
        ["3", "3", "3", "3", "3", "1", "1", "1"]
    );

    // Shapes are stored innermost first; values come through unchanged, in layer order.
    let (dims, ty, values) = &read.tensors["token_embd.weight"];
    assert_eq!(
        (dims.as_slice(), *ty),
        (&[HIDDEN as u64, VOCAB.len() as u64][..], 0)
    );
    assert_eq!(values[..2], [0.0, 0.001]);
    let (dims, _, values) = &read.tensors["blk.10.ffn_up.weight"];
    assert_eq!(dims, &[HIDDEN as u64, FF as u64]);
    assert!((values[1] - values[0] - 0.001).abs() < 1e-4);
    assert!(read.tensors.contains_key("blk.10.layer_output_norm.bias"));
    assert!(
        !read.tensors.contains_key("cls.weight"),
        "a BertModel's pooler is unused"
    );
    assert!(!read.tensors.keys().any(|k| k.contains("position_ids")));
}

#[test]
fn a_classifier_head_makes_a_rank_model() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), 2, true, "bert.");
    let out = dir.path().join("rank.gguf");
    let summary = convert_bert(dir.path(), &out, OutType::Source, &mut |_| {}).unwrap();
    assert_eq!(summary.pooling, "rank");
    let read = read_gguf(&out);
    assert_eq!(read.meta["bert.pooling_type"][0], "4");
    assert_eq!(read.tensors["cls.weight"].0, [HIDDEN as u64, HIDDEN as u64]);
    assert_eq!(read.tensors["cls.output.weight"].0, [HIDDEN as u64, 1]);
    assert_eq!(read.tensors["cls.output.bias"].0, [1]);
}

#[test]
fn refuses_what_it_cannot_convert() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), 1, false, "");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    config["hidden_act"] = "relu".into();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let err = convert_bert(
        dir.path(),
        &dir.path().join("x.gguf"),
        OutType::Source,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("hidden_act"), "{err}");
    assert!(!dir.path().join("x.gguf").exists());

    let missing = convert_bert(
        &dir.path().join("nope"),
        &dir.path().join("y.gguf"),
        OutType::Source,
        &mut |_| {},
    );
    assert!(missing.unwrap_err().to_string().contains("config.json"));

    assert!(gguf_name("encoder.layer.0.crossattention.weight", false).is_err());
    assert_eq!(
        gguf_name("bert.embeddings.position_ids", false).unwrap(),
        None
    );
    assert_eq!(
        gguf_name("encoder.layer.3.attention.output.LayerNorm.gamma", false).unwrap(),
        Some("blk.3.attn_output_norm.weight".to_owned())
    );
}

#[test]
fn weight_matrices_take_the_asked_type_and_small_tables_stay_f32() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), 2, false, "");
    let source = read_gguf(&{
        let out = dir.path().join("source.gguf");
        convert_bert(dir.path(), &out, OutType::Source, &mut |_| {}).unwrap();
        out
    });
    for (outtype, id, file_type, tolerance) in [
        (OutType::F16, 1, "1", 1e-3),
        (OutType::Bf16, 30, "32", 4e-3),
        (OutType::Q8_0, 8, "7", 4.5e-3),
    ] {
        let out = dir.path().join(format!("{}.gguf", outtype.as_str()));
        let summary = convert_bert(dir.path(), &out, outtype, &mut |_| {}).unwrap();
        let read = read_gguf(&out);
        assert_eq!(read.meta["general.file_type"][0], file_type);
        for (name, (dims, ty, values)) in &read.tensors {
            let (_, source_ty, want) = &source.tensors[name];
            assert_eq!(*source_ty, 0);
            let matrix =
                dims.len() == 2 && name != "position_embd.weight" && name != "token_types.weight";
            assert_eq!(*ty, if matrix { id } else { 0 }, "{name} as {outtype:?}");
            // Within the type's rounding, relative to the tensor's largest value.
            let amax = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = values
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= tolerance * amax,
                "{name} as {outtype:?}: off by {worst} of {amax}"
            );
        }
        let f32_bytes: u64 = source
            .tensors
            .values()
            .map(|(d, _, _)| d.iter().product::<u64>() * 4)
            .sum();
        assert!(
            summary.bytes < f32_bytes,
            "{outtype:?}: {} bytes",
            summary.bytes
        );
    }
    assert_eq!(OutType::parse("Q8_0"), Some(OutType::Q8_0));
    assert_eq!(OutType::parse("q4"), None);
}

#[test]
fn q8_0_matches_ggml_reference_blocks() {
    // One block: the scale is max |x| / 127, each value round(x / d).
    let values: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
    let bytes = quantize_q8_0(&values);
    assert_eq!(bytes.len(), 34);
    let d = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
    assert!((d - 8.0 / 127.0).abs() < 1e-4, "{d}");
    assert_eq!(bytes[2] as i8, -127);
    assert_eq!(bytes[2 + 16] as i8, 0);
    let back = dequantize_q8_0(&bytes);
    assert!(values
        .iter()
        .zip(&back)
        .all(|(a, b)| (a - b).abs() <= d / 2.0 + 1e-3));
    // An all-zero block has scale 0 and zero values, never NaN.
    let zeros = dequantize_q8_0(&quantize_q8_0(&[0.0; 32]));
    assert!(zeros.iter().all(|v| *v == 0.0));
    assert_eq!(TensorType::Q8_0.bytes_of(64), 68);
}
