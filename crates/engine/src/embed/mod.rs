//! Embedding and cross-encoder models: [`EmbedEngine`] serves one (a GGUF whose metadata says
//! it pools: a pooling type, or non-causal attention, as llama.cpp's `bert` models have), with
//! its own worker thread batching the inputs of many requests together (see [`worker`] and
//! the pure [`batch`] state). It implements [`Backend::embed`]; asked to generate it refuses.

pub mod batch;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use backend::{
    Backend, BackendError, EmbedInput, EmbedRequest, Embeddings, EventStream, Field,
    GenerateRequest, ModelInfo, ModelKind,
};
use llama_cpp_2::model::LlamaModel;
use tokio::sync::{mpsc, oneshot};

use crate::model::LoadedModel;
use crate::{EngineError, EngineOptions, Result};

/// Tokens per llama.cpp decode of an embedding step (see `worker::chunks`). Measured on
/// all-MiniLM-L6-v2 (Q8_0, 2 threads, 64-token inputs): 64 → 74 inputs/s, 128 → 104,
/// 256 → 130, 384 → 133, 512 → 136, 2,048 (one decode per step) → 93; past 512 the attention
/// over the whole decode costs more than fewer, larger matrix products save.
const CHUNK_TOKENS: usize = 512;

/// What the GGUF's metadata says the model does: pooling type 4 is a cross-encoder (rank);
/// another pooling type, or non-causal attention, an embedding model.
pub fn kind_of(model: &LlamaModel) -> ModelKind {
    let Ok(arch) = model.meta_val_str("general.architecture") else {
        return ModelKind::Generate;
    };
    let pooling: i64 = model
        .meta_val_str(&format!("{arch}.pooling_type"))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let causal = model
        .meta_val_str(&format!("{arch}.attention.causal"))
        .map_or(true, |v| v.trim() != "false");
    match pooling {
        4 => ModelKind::Rank,
        0 if causal => ModelKind::Generate,
        _ => ModelKind::Embed {
            dimensions: u32::try_from(model.n_embd()).unwrap_or(0),
        },
    }
}

/// One served embedding (or cross-encoder) model.
pub struct EmbedEngine {
    info: ModelInfo,
    model: Arc<LoadedModel>,
    /// Tokens one input may have: the training context, within one batch.
    max_input_tokens: u32,
    commands: mpsc::UnboundedSender<worker::Command>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
    stopped: AtomicBool,
}

impl EmbedEngine {
    /// Starts the worker for an already loaded embedding model of `kind`. Blocking.
    pub fn start(
        model: Arc<LoadedModel>,
        name: &str,
        kind: ModelKind,
        opts: &EngineOptions,
    ) -> Result<Self> {
        let train = if model.n_ctx_train > 0 {
            model.n_ctx_train
        } else {
            512
        };
        // A non-causal model sees each sequence whole in one micro-batch: the budget holds at
        // least one input of the longest kind.
        let max_input_tokens = opts
            .slot_context
            .map_or(train, |c| c.clamp(16.min(train), train));
        let budget_tokens = opts.step_tokens.max(max_input_tokens as usize);
        let config = worker::WorkerConfig {
            budget_tokens,
            max_seqs: opts.slots.clamp(1, 64),
            threads: opts.threads.max(1) as i32,
            chunk_tokens: CHUNK_TOKENS,
            normalize: kind != ModelKind::Rank,
        };
        let (commands, thread) =
            worker::spawn(model.clone(), config, name).map_err(EngineError::Load)?;
        tracing::info!(
            model = name,
            ?kind,
            budget_tokens,
            max_seqs = config.max_seqs,
            max_input_tokens,
            "embedding model ready"
        );
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self {
            info: ModelInfo {
                id: name.to_owned(),
                owned_by: "flywheel".into(),
                context_length: Some(max_input_tokens),
                created,
                kind,
            },
            model,
            max_input_tokens,
            commands,
            worker: Arc::new(Mutex::new(Some(thread))),
            stopped: AtomicBool::new(false),
        })
    }

    fn stop_blocking(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.commands.send(worker::Command::Stop);
        crate::thread::join(&self.worker, "embedding");
    }
}

impl Drop for EmbedEngine {
    fn drop(&mut self) {
        self.stop_blocking();
    }
}

/// The tokens of each input, checked against the vocabulary and the input limit; errors name
/// the input's index.
pub fn tokenize_inputs(
    model: &LoadedModel,
    inputs: &[EmbedInput],
    kind: ModelKind,
    max_tokens: u32,
) -> std::result::Result<Vec<Vec<i32>>, BackendError> {
    let vocab = model.model.vocab();
    let n_vocab = u32::try_from(vocab.n_tokens()).unwrap_or(0);
    let invalid = |index: usize, message: String| BackendError::InvalidRequest {
        message: format!("input[{index}]: {message}"),
        field: Some(Field::Input),
    };
    let mut out = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.iter().enumerate() {
        let tokens: Vec<i32> = match input {
            EmbedInput::Text(text) => vocab
                .tokenize(text.as_bytes(), true, false)
                .into_iter()
                .map(|t| t.0)
                .collect(),
            EmbedInput::Tokens(ids) => {
                if let Some(bad) = ids.iter().find(|&&id| id >= n_vocab) {
                    return Err(invalid(
                        index,
                        format!(
                            "token id {bad} is not in the model's vocabulary of {n_vocab} tokens"
                        ),
                    ));
                }
                ids.iter().map(|&id| id as i32).collect()
            }
            EmbedInput::Pair(query, document) => {
                // `[CLS] query [SEP] document [SEP]`, as a BERT cross-encoder was trained.
                let mut tokens: Vec<i32> = vocab
                    .tokenize(query.as_bytes(), true, false)
                    .into_iter()
                    .map(|t| t.0)
                    .collect();
                tokens.extend(
                    vocab
                        .tokenize(document.as_bytes(), false, false)
                        .into_iter()
                        .map(|t| t.0),
                );
                tokens.push(vocab.sep().0);
                tokens
            }
        };
        if matches!(input, EmbedInput::Pair(..)) != (kind == ModelKind::Rank) {
            return Err(BackendError::InvalidRequest {
                message: "a cross-encoder scores (query, document) pairs and an embedding model \
                          embeds single inputs"
                    .into(),
                field: Some(Field::Model),
            });
        }
        if tokens.is_empty() {
            return Err(invalid(
                index,
                "it has no tokens; send text or token ids".into(),
            ));
        }
        if tokens.len() > max_tokens as usize {
            return Err(invalid(
                index,
                format!(
                    "it has {} tokens, more than the {max_tokens} this model takes per input; \
                     shorten it or split it",
                    tokens.len()
                ),
            ));
        }
        out.push(tokens);
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Backend for EmbedEngine {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        Err(BackendError::InvalidRequest {
            message: format!(
                "'{}' is an embedding model: it generates no text. Call /v1/embeddings or \
                 /v1/rerank with it, or use a text-generation model.",
                request.model
            ),
            field: Some(Field::Model),
        })
    }

    async fn embed(&self, request: EmbedRequest) -> backend::Result<Embeddings> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(BackendError::ShuttingDown);
        }
        let model = self.model.clone();
        let (kind, max) = (self.info.kind, self.max_input_tokens);
        let inputs = request.inputs;
        let tokens =
            tokio::task::spawn_blocking(move || tokenize_inputs(&model, &inputs, kind, max))
                .await
                .map_err(|e| BackendError::Internal(format!("tokenizer task failed: {e}")))??;
        let prompt_tokens = tokens
            .iter()
            .map(|t| u32::try_from(t.len()).unwrap_or(u32::MAX))
            .fold(0, u32::saturating_add);
        let (reply, answer) = oneshot::channel();
        let gone = || {
            if self.stopped.load(Ordering::SeqCst) {
                BackendError::ShuttingDown
            } else {
                BackendError::Internal("the embedding thread has stopped".into())
            }
        };
        self.commands
            .send(worker::Command::Embed {
                inputs: tokens,
                reply,
            })
            .map_err(|_| gone())?;
        let vectors = answer
            .await
            .map_err(|_| gone())?
            .map_err(BackendError::Internal)?;
        Ok(Embeddings {
            vectors,
            prompt_tokens,
        })
    }

    async fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.commands.send(worker::Command::Stop);
        let worker = self.worker.clone();
        if tokio::task::spawn_blocking(move || crate::thread::join(&worker, "embedding"))
            .await
            .is_err()
        {
            tracing::error!(model = %self.info.id, "could not join the embedding thread");
        }
    }
}
