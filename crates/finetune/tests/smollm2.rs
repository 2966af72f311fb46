//! On the real SmolLM2-135M-Instruct GGUF (FLYWHEEL_SMOL_GGUF, set by scripts/test.sh; the
//! tests skip, saying so, without it):
//! - the candle forward on the dequantized weights predicts what llama.cpp predicts;
//! - the assistant-token mask covers exactly the answer and its end-of-turn;
//! - a rank-8 LoRA on q and v, trained on ~100 examples, teaches a fact the base model does
//!   not know: llama.cpp itself, loading the exported GGUF adapter, answers held-out
//!   paraphrases with it at temperature 0 (greedy), and the base model does not.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use backend::{ChatMessage, Prompt};
use engine::model::LoadedModel;
use finetune::data::{self, Limits};
use finetune::train::{TrainConfig, Trainer};
use finetune::{BaseModel, LoraConfig};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaLoraAdapter;
use llama_cpp_2::token::LlamaToken;

fn smol() -> Option<PathBuf> {
    match std::env::var_os("FLYWHEEL_SMOL_GGUF").filter(|p| !p.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("skipped: FLYWHEEL_SMOL_GGUF is not set (scripts/test.sh sets it)");
            None
        }
    }
}

fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn chat(q: &str) -> Prompt {
    Prompt::Chat(vec![ChatMessage::text("user", q)])
}

/// llama.cpp's logits after `tokens`, with `adapter` applied when given.
fn llama_logits(lm: &LoadedModel, tokens: &[LlamaToken]) -> Vec<f32> {
    let backend = engine::model::llama_backend().unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(512))
        .with_n_threads(2)
        .with_n_threads_batch(2);
    let mut ctx = lm.model.new_context(backend, params).unwrap();
    let mut batch = LlamaBatch::new(512, 1);
    for (i, t) in tokens.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i + 1 == tokens.len())
            .unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    ctx.get_logits_ith(tokens.len() as i32 - 1).to_vec()
}

/// Greedy generation with llama.cpp, optionally with a LoRA adapter set on the context.
fn generate(lm: &LoadedModel, adapter: Option<&mut LlamaLoraAdapter>, q: &str) -> String {
    let backend = engine::model::llama_backend().unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(512))
        .with_n_threads(2)
        .with_n_threads_batch(2);
    let mut ctx = lm.model.new_context(backend, params).unwrap();
    if let Some(a) = adapter {
        ctx.lora_adapter_set(a, 1.0).unwrap();
    }
    let mut tokens = lm.prompt_tokens(&chat(q)).unwrap();
    let mut batch = LlamaBatch::new(512, 1);
    for (i, t) in tokens.iter().enumerate() {
        batch
            .add(*t, i as i32, &[0], i + 1 == tokens.len())
            .unwrap();
    }
    ctx.decode(&mut batch).unwrap();
    let mut out = Vec::new();
    let mut piece = Vec::new();
    for _ in 0..24 {
        let logits = ctx.get_logits_ith(batch.n_tokens() - 1);
        let next = argmax(logits);
        let next = LlamaToken(next as i32);
        if lm.is_end_of_generation(next) {
            break;
        }
        lm.token_bytes(next, &mut piece);
        out.extend_from_slice(&piece);
        batch.clear();
        batch.add(next, tokens.len() as i32, &[0], true).unwrap();
        tokens.push(next);
        ctx.decode(&mut batch).unwrap();
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::MIN),
            |b, (i, x)| if *x > b.1 { (i, *x) } else { b },
        )
        .0
}

#[test]
fn candle_predicts_what_llama_cpp_predicts() {
    let Some(path) = smol() else { return };
    let lm = LoadedModel::load(&path, "smol").unwrap();
    let base = BaseModel::load(&path).unwrap();
    assert_eq!(base.config.n_layer, 30);
    assert!(base.tied_embeddings);
    for q in [
        "What is the capital of France?",
        "Write a haiku about the sea.",
    ] {
        let tokens = lm.prompt_tokens(&chat(q)).unwrap();
        let ids: Vec<u32> = tokens.iter().map(|t| t.0 as u32).collect();
        let ours = finetune::model::next_token_logits(&base, None, &ids).unwrap();
        let theirs = llama_logits(&lm, &tokens);
        assert_eq!(ours.len(), theirs.len());
        // llama.cpp multiplies Q4_1 weights by activations quantized to Q8_1, this forward
        // dequantized weights by F32 activations: close, not equal, so near-ties may swap
        // (on "capital of France" the top two are 0.08 apart here, 0.28 there). llama.cpp's
        // choice is among our top three, within a few tenths of our best.
        let best = argmax(&theirs);
        let mut order: Vec<usize> = (0..ours.len()).collect();
        order.sort_by(|a, b| ours[*b].total_cmp(&ours[*a]));
        assert!(
            order[..3].contains(&best),
            "{q}: llama.cpp's {best} vs our {:?}",
            &order[..3]
        );
        assert!(ours[order[0]] - ours[best] < 0.5, "{q}");
        let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
        for (a, b) in ours.iter().zip(&theirs) {
            dot += (*a as f64) * (*b as f64);
            na += (*a as f64).powi(2);
            nb += (*b as f64).powi(2);
        }
        let cos = dot / (na.sqrt() * nb.sqrt());
        // 0.9995 on AVX2 machines; 0.998 where llama.cpp's CPU backend takes its AMX / AVX-512
        // VNNI kernels for Q4_1 (other activation rounding), as on Xeons since Sapphire Rapids.
        assert!(cos > 0.995, "{q}: cosine {cos}");
    }
}

#[test]
fn the_loss_mask_covers_the_assistant_answer() {
    let Some(path) = smol() else { return };
    let lm = LoadedModel::load(&path, "smol").unwrap();
    let messages = vec![
        ChatMessage::text("user", "What is the code word?"),
        ChatMessage::text("assistant", "The code word is PLUMTREE-42."),
    ];
    let (tokens, mask) = lm.training_tokens(&messages).unwrap();
    let mut text = Vec::new();
    let mut piece = Vec::new();
    for (t, m) in tokens.iter().zip(&mask) {
        if *m {
            lm.token_bytes(*t, &mut piece);
            text.extend_from_slice(&piece);
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.starts_with("The code word is PLUMTREE-42."),
        "{text:?}"
    );
    // The end of the turn (`<|im_end|>`, a control token: no text) is learnt too.
    let ends = tokens
        .iter()
        .zip(&mask)
        .any(|(t, m)| *m && lm.is_end_of_generation(*t));
    assert!(ends, "the masked tokens hold no end-of-turn");
    assert!(!text.contains("user"), "{text:?}");
}

#[test]
fn a_lora_teaches_a_fact_that_llama_cpp_then_answers_with() {
    let Some(path) = smol() else { return };
    let mut lm = LoadedModel::load(&path, "smol").unwrap();
    let base = BaseModel::load(&path).unwrap();
    let limits = Limits {
        max_tokens: 64,
        ..Limits::default()
    };
    let train = data::load_file(
        &lm,
        &data_file("codeword-train.jsonl"),
        &limits,
        "training file",
    )
    .unwrap();
    let valid = data::load_file(
        &lm,
        &data_file("codeword-valid.jsonl"),
        &Limits {
            min_examples: 1,
            ..limits
        },
        "validation file",
    )
    .unwrap();
    assert!(train.len() >= 90 && train.iter().all(|e| e.tokens.len() <= 64));
    let config = TrainConfig {
        lora: LoraConfig {
            rank: 8,
            alpha: 16.0,
        },
        // One epoch (23 steps) teaches it: the validation loss is below 0.01 by step 20.
        epochs: 1,
        batch_size: 4,
        learning_rate: 2e-3,
        max_steps: Some(300),
        seed: 1,
        checkpoint_every: 0,
        eval_every: 20,
        threads: 2,
    };
    let mut t = Trainer::new(&base, train, valid, config).unwrap();
    let started = Instant::now();
    let mut first = None;
    let mut last = None;
    t.run(None, &AtomicBool::new(false), &mut |p| {
        first.get_or_insert(p.train_loss);
        if p.valid_loss.is_some() || p.step == p.total_steps {
            eprintln!(
                "step {}/{} train {:.3} valid {:?} {:.0} tok/s eta {:.0}s",
                p.step, p.total_steps, p.train_loss, p.valid_loss, p.tokens_per_s, p.eta_s
            );
        }
        last = Some(p.clone());
    })
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let last = last.unwrap();
    eprintln!(
        "trained {} steps, {} tokens in {secs:.0}s: {:.0} tokens/s",
        last.step, last.tokens_seen, last.tokens_per_s
    );
    assert!(
        last.valid_loss.unwrap() < first.unwrap() * 0.3,
        "{first:?} -> {last:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let adapter_path = dir.path().join("codeword.gguf");
    finetune::export::save_adapter(&adapter_path, t.lora(), &base.architecture, "codeword")
        .unwrap();
    let mut adapter = lm.model.lora_adapter_init(&adapter_path).unwrap();
    for q in std::fs::read_to_string(data_file("codeword-heldout.txt"))
        .unwrap()
        .lines()
    {
        let tuned = generate(&lm, Some(&mut adapter), q);
        let plain = generate(&lm, None, q);
        eprintln!("{q:?}: tuned {tuned:?} / base {plain:?}");
        assert!(tuned.contains("PLUMTREE-42"), "{q:?}: {tuned:?}");
        assert!(!plain.contains("PLUMTREE"), "{q:?}: {plain:?}");
    }
    // The acceptance bound (6 minutes on 2 cores); on a loaded machine it can take longer.
    assert!(secs < 360.0, "training took {secs:.0}s");
}
