//! The trainer on a random-weight 2-layer llama the test writes as a GGUF: the loss falls,
//! a run interrupted after a checkpoint and resumed ends in the same state as one that ran
//! straight through, cancellation stops between steps, and the exported adapter reads back
//! with llama.cpp's names, metadata and shapes.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use finetune::train::{Outcome, TrainConfig, Trainer};
use finetune::{BaseModel, LoraConfig, TokenizedExample};
use rand::{Rng, SeedableRng};

const VOCAB: usize = 64;
const EMBD: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FF: usize = 64;
const LAYERS: usize = 2;

/// A llama GGUF with random weights (seeded), tied embeddings, GQA.
fn write_random_llama(path: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let dev = Device::Cpu;
    let mut rand_t = |dims: &[usize], scale: f32| {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        QTensor::quantize(&Tensor::from_vec(v, dims, &dev).unwrap(), GgmlDType::F32).unwrap()
    };
    let ones = |n: usize| {
        QTensor::quantize(
            &Tensor::ones(n, candle_core::DType::F32, &dev).unwrap(),
            GgmlDType::F32,
        )
        .unwrap()
    };
    let kv = EMBD / HEADS * KV_HEADS;
    let mut tensors = vec![("token_embd.weight".to_string(), rand_t(&[VOCAB, EMBD], 0.5))];
    for i in 0..LAYERS {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        tensors.push((p("attn_norm"), ones(EMBD)));
        tensors.push((p("attn_q"), rand_t(&[EMBD, EMBD], 0.3)));
        tensors.push((p("attn_k"), rand_t(&[kv, EMBD], 0.3)));
        tensors.push((p("attn_v"), rand_t(&[kv, EMBD], 0.3)));
        tensors.push((p("attn_output"), rand_t(&[EMBD, EMBD], 0.3)));
        tensors.push((p("ffn_norm"), ones(EMBD)));
        tensors.push((p("ffn_gate"), rand_t(&[FF, EMBD], 0.3)));
        tensors.push((p("ffn_up"), rand_t(&[FF, EMBD], 0.3)));
        tensors.push((p("ffn_down"), rand_t(&[EMBD, FF], 0.3)));
    }
    tensors.push(("output_norm.weight".to_string(), ones(EMBD)));
    let md = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.embedding_length", Value::U32(EMBD as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("llama.feed_forward_length", Value::U32(FF as u32)),
        (
            "llama.rope.dimension_count",
            Value::U32((EMBD / HEADS) as u32),
        ),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
    ];
    let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md, &ts).unwrap();
}

/// Prompts of random tokens answered by a fixed phrase: learnable by LoRA on q and v.
fn examples(n: usize, seed: u64) -> Vec<TokenizedExample> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let prompt_len = rng.random_range(3..8);
            let mut tokens: Vec<u32> = (0..prompt_len).map(|_| rng.random_range(10..60)).collect();
            let mut targets = vec![false; tokens.len()];
            tokens.extend([3, 4, 5, 6, 2]);
            targets.extend([true; 5]);
            TokenizedExample { tokens, targets }
        })
        .collect()
}

fn model() -> (tempfile::TempDir, BaseModel) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_random_llama(&path);
    let model = BaseModel::load(&path).expect("loads");
    (dir, model)
}

fn config(steps: usize) -> TrainConfig {
    TrainConfig {
        lora: LoraConfig {
            rank: 4,
            alpha: 8.0,
        },
        epochs: 100,
        batch_size: 4,
        learning_rate: 1e-2,
        max_steps: Some(steps),
        seed: 11,
        checkpoint_every: 3,
        eval_every: 5,
        threads: 1,
    }
}

#[test]
fn the_loss_falls_and_validation_is_reported() {
    let (_dir, model) = model();
    assert_eq!(model.config.n_layer, 2);
    assert!(model.tied_embeddings);
    let train = examples(16, 1);
    let valid = examples(4, 2);
    let mut t = Trainer::new(&model, train.clone(), valid, config(40)).expect("trainer");
    let before = t.mean_loss(&train, true).expect("loss");
    let base = t.mean_loss(&train, false).expect("loss");
    assert!(
        (before - base).abs() < 1e-5,
        "B = 0 starts at the base model"
    );
    let mut seen = Vec::new();
    let out = t
        .run(None, &AtomicBool::new(false), &mut |p| seen.push(p.clone()))
        .expect("trains");
    assert!(
        matches!(out, Outcome::Finished { steps: 40, .. }),
        "{out:?}"
    );
    let after = t.mean_loss(&train, true).expect("loss");
    assert!(after < before * 0.5, "loss {before} -> {after}");
    assert_eq!(seen.len(), 40);
    assert!(seen.iter().filter(|p| p.valid_loss.is_some()).count() >= 8);
    let last = seen.last().unwrap();
    assert_eq!((last.step, last.total_steps, last.eta_s), (40, 40, 0.0));
    assert!(last.tokens_per_s > 0.0 && last.tokens_seen > 0);
}

#[test]
fn resuming_from_a_checkpoint_ends_in_the_same_state() {
    let (_dir, model) = model();
    let train = examples(12, 3);
    let straight = {
        let mut t = Trainer::new(&model, train.clone(), vec![], config(9)).unwrap();
        t.run(None, &AtomicBool::new(false), &mut |_| {}).unwrap();
        t.lora().tensors()
    };
    let ck = tempfile::tempdir().unwrap();
    {
        let cancel = AtomicBool::new(false);
        let mut t = Trainer::new(&model, train.clone(), vec![], config(9)).unwrap();
        let out = t
            .run(Some(ck.path()), &cancel, &mut |p| {
                if p.step == 5 {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed)
                }
            })
            .unwrap();
        // Cancelled after step 5; the newest checkpoint is step 3's.
        assert_eq!(out, Outcome::Cancelled { step: 5 });
    }
    let mut t = Trainer::new(&model, train.clone(), vec![], config(9)).unwrap();
    assert_eq!(t.resume(ck.path()).unwrap(), Some(3));
    assert_eq!(t.step(), 3);
    let out = t
        .run(Some(ck.path()), &AtomicBool::new(false), &mut |_| {})
        .unwrap();
    assert!(matches!(out, Outcome::Finished { steps: 9, .. }));
    let resumed = t.lora().tensors();
    for (name, a) in &straight {
        let b = &resumed[name];
        let diff = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "{name} differs by {diff}");
    }
    // Another configuration does not resume from these checkpoints.
    let mut other = config(9);
    other.seed = 12;
    let mut t = Trainer::new(&model, train, vec![], other).unwrap();
    assert!(t.resume(ck.path()).is_err());
}

#[test]
fn cancellation_stops_before_the_next_step() {
    let (_dir, model) = model();
    let mut t = Trainer::new(&model, examples(8, 4), vec![], config(50)).unwrap();
    let out = t.run(None, &AtomicBool::new(true), &mut |_| {}).unwrap();
    assert_eq!(out, Outcome::Cancelled { step: 0 });
}

#[test]
fn the_exported_adapter_has_llama_cpp_names_metadata_and_shapes() {
    let (dir, model) = model();
    let mut t = Trainer::new(&model, examples(8, 5), vec![], config(2)).unwrap();
    t.run(None, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let path = dir.path().join("adapter.gguf");
    finetune::export::save_adapter(&path, t.lora(), &model.architecture, "tiny-ft").unwrap();
    let mut f = std::fs::File::open(&path).unwrap();
    let c = Content::read(&mut f).unwrap();
    let s = |k: &str| c.metadata[k].to_string().unwrap().clone();
    assert_eq!(s("general.type"), "adapter");
    assert_eq!(s("adapter.type"), "lora");
    assert_eq!(s("general.architecture"), "llama");
    assert_eq!(c.metadata["adapter.lora.alpha"].to_f32().unwrap(), 8.0);
    assert_eq!(c.tensor_infos.len(), LAYERS * 4);
    let kv = EMBD / HEADS * KV_HEADS;
    for i in 0..LAYERS {
        // candle reports row-major dims: lora_a [rank, in], lora_b [out, rank] (ggml ne reversed).
        let dims = |n: String| c.tensor_infos[&n].shape.dims().to_vec();
        assert_eq!(dims(format!("blk.{i}.attn_q.weight.lora_a")), vec![4, EMBD]);
        assert_eq!(dims(format!("blk.{i}.attn_q.weight.lora_b")), vec![EMBD, 4]);
        assert_eq!(dims(format!("blk.{i}.attn_v.weight.lora_a")), vec![4, EMBD]);
        assert_eq!(dims(format!("blk.{i}.attn_v.weight.lora_b")), vec![kv, 4]);
    }
    assert!(!c.tensor_infos.keys().any(|k| k.starts_with("output")));
}
