//! In-process LLM inference on llama.cpp.
//!
//! An [`Engine`] serves one GGUF model: it owns a worker thread with one llama.cpp context of
//! `slots` sequences (one KV stream per slot) and runs continuous batching over it (see
//! [`scheduler`]). It implements [`backend::Backend`], so the gateway neither knows nor cares
//! that llama.cpp is underneath. This crate knows nothing of HTTP.
//!
//! [`Backend::stop`] (and dropping the last handle) ends the worker's requests and *joins* its
//! thread, so the context is freed on that thread before anything else is torn down.

pub mod constrain;
pub mod embed;
pub mod logprobs;
pub mod metrics;
pub mod model;
pub mod reasoning;
mod relay;
pub mod sampling;
pub mod scheduler;
pub mod special;
pub mod template;
pub mod text;
mod thread;
pub mod tool_calls;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use backend::{
    Backend, BackendError, Event, EventStream, GenerateRequest, ModelInfo, SamplingParams,
};
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use crate::model::LoadedModel;
use crate::scheduler::state::Limits;
use crate::scheduler::worker::{self, Command, Request, WorkerConfig};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Load(String),
    #[error("{0}")]
    BadPrompt(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl From<EngineError> for BackendError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::BadPrompt(message) => BackendError::InvalidPrompt(message),
            EngineError::Load(m) => BackendError::Internal(m),
        }
    }
}

/// How an engine is sized. Defaults suit a small CPU machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Sequences decoded together (and KV slots).
    pub slots: usize,
    /// Tokens per slot; `None`: the model's training context, at most 4096.
    pub slot_context: Option<u32>,
    /// CPU threads for llama.cpp.
    pub threads: usize,
    /// Tokens per decode step (prefill chunk budget).
    pub step_tokens: usize,
    /// Requests that may wait for a slot before new ones get 429.
    pub max_queue: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            slots: 16,
            slot_context: None,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            step_tokens: 512,
            max_queue: 256,
        }
    }
}

/// One served GGUF model.
pub struct Engine {
    info: ModelInfo,
    model: Arc<LoadedModel>,
    /// Grammars built for constrained requests.
    grammars: Arc<constrain::Cache>,
    slot_context: u32,
    commands: mpsc::UnboundedSender<Command>,
    /// The worker thread until it has been joined (shared with the blocking task joining it).
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Set by `stop`: new requests are refused as `ShuttingDown`.
    stopped: AtomicBool,
}

impl Engine {
    /// Load the model and start its worker. Blocking (seconds for large files): call it from
    /// `spawn_blocking` or before the runtime serves traffic.
    pub fn start(path: &Path, name: &str, opts: &EngineOptions) -> Result<Self> {
        check_options(opts)?;
        let model = Arc::new(LoadedModel::load(path, name)?);
        Self::with_model(model, path, name, opts, None)
    }

    /// [`Engine::start`] with a LoRA adapter (a GGUF LoRA, as `convert_lora_to_gguf.py` or
    /// the `finetune` crate writes it) applied to every request: the served name is the
    /// fine-tuned model. The engine loads its own copy of the base model (llama.cpp maps the
    /// file, so the weights' pages are shared with the base model's engine) and its context
    /// has the adapter set for its whole life, so no request of another model ever runs with
    /// it, and none of its own without it.
    pub fn start_with_adapter(
        path: &Path,
        adapter: &Path,
        name: &str,
        opts: &EngineOptions,
    ) -> Result<Self> {
        check_options(opts)?;
        let mut model = LoadedModel::load(path, name)?;
        if embed::kind_of(&model.model) != backend::ModelKind::Generate {
            return Err(EngineError::Load(format!(
                "{} is not a text-generation model; LoRA adapters apply to those only",
                path.display()
            )));
        }
        if !adapter.is_file() {
            return Err(EngineError::Load(format!(
                "the LoRA adapter {} does not exist or is not a file",
                adapter.display()
            )));
        }
        let lora = model.model.lora_adapter_init(adapter).map_err(|e| {
            EngineError::Load(format!(
                "{} is not a LoRA adapter of {} ({e}); llama.cpp logs say why",
                adapter.display(),
                path.display()
            ))
        })?;
        tracing::info!(model = name, adapter = %adapter.display(), "LoRA adapter loaded");
        Self::with_model(Arc::new(model), path, name, opts, Some(lora))
    }

    fn with_model(
        model: Arc<LoadedModel>,
        path: &Path,
        name: &str,
        opts: &EngineOptions,
        adapter: Option<llama_cpp_2::model::LlamaLoraAdapter>,
    ) -> Result<Self> {
        let train = if model.n_ctx_train > 0 {
            model.n_ctx_train
        } else {
            4096
        };
        let slot_context = opts
            .slot_context
            .unwrap_or(train.min(4096))
            .clamp(16, train);
        let limits = Limits {
            slots: opts.slots,
            slot_context: slot_context as usize,
            step_tokens: opts.step_tokens,
            max_queue: opts.max_queue,
        };
        let config = WorkerConfig {
            limits,
            threads: opts.threads.max(1) as i32,
            adapter,
        };
        let (commands, thread) =
            worker::spawn(model.clone(), config, metrics::ModelMetrics::new(name))
                .map_err(EngineError::Load)?;
        tracing::info!(
            model = name,
            path = %path.display(),
            bytes = model.file_bytes,
            slots = opts.slots,
            slot_context,
            template = if model.template_from_gguf { "gguf" } else { "chatml-fallback" },
            "model ready"
        );
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self {
            info: ModelInfo {
                id: name.to_owned(),
                owned_by: "flywheel".into(),
                context_length: Some(slot_context),
                created,
                kind: backend::ModelKind::Generate,
            },
            model,
            grammars: Arc::default(),
            slot_context,
            commands,
            worker: Arc::new(Mutex::new(Some(thread))),
            stopped: AtomicBool::new(false),
        })
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Tell the worker to end every request now and wait (blocking, at most one decode step)
    /// until its thread has ended. Idempotent; a second caller waits for the first one's join.
    pub fn stop_blocking(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.commands.send(Command::Stop);
        thread::join(&self.worker, "engine");
    }
}

fn check_options(opts: &EngineOptions) -> Result<()> {
    if opts.slots == 0 || opts.step_tokens < opts.slots {
        return Err(EngineError::Load(format!(
            "need at least one slot and a step budget of at least one token per slot (slots {}, step tokens {})",
            opts.slots, opts.step_tokens
        )));
    }
    Ok(())
}

/// Loads the GGUF at `path` and starts what serves it: an [`Engine`] for a text-generation
/// model, an [`embed::EmbedEngine`] for an embedding model or a cross-encoder (told apart by
/// the file's metadata, [`embed::kind_of`]). Blocking, like [`Engine::start`].
pub fn start(path: &Path, name: &str, opts: &EngineOptions) -> Result<Arc<dyn Backend>> {
    check_options(opts)?;
    let model = Arc::new(LoadedModel::load(path, name)?);
    match embed::kind_of(&model.model) {
        backend::ModelKind::Generate => {
            Ok(Arc::new(Engine::with_model(model, path, name, opts, None)?))
        }
        kind => Ok(Arc::new(embed::EmbedEngine::start(
            model, name, kind, opts,
        )?)),
    }
}

/// Dropping the last handle stops the worker and joins it (off the async threads, please: the
/// control plane drops replicas on the blocking pool).
impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_blocking();
    }
}

impl Engine {
    fn no_tool_support(&self) -> BackendError {
        BackendError::ToolsUnsupported(format!(
            "The chat template of '{}' has no tool support, so this model cannot call tools. \
             Send the request without tools, or use a model whose template offers them \
             (Qwen 2.5, Llama 3.1 and later).",
            self.info.id
        ))
    }
}

#[async_trait::async_trait]
impl Backend for Engine {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    async fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = self.commands.send(Command::Stop);
        let worker = self.worker.clone();
        if tokio::task::spawn_blocking(move || thread::join(&worker, "engine"))
            .await
            .is_err()
        {
            tracing::error!(model = %self.info.id, "could not join the engine thread");
        }
    }

    async fn count_prompt_tokens(&self, request: &GenerateRequest) -> backend::Result<u32> {
        if !request.tools.is_empty() && self.model.call_format.is_none() {
            return Err(self.no_tool_support());
        }
        let model = self.model.clone();
        let (prompt, tools) = (request.prompt.clone(), request.tools.clone());
        let tokens =
            tokio::task::spawn_blocking(move || model.prompt_tokens_with_tools(&prompt, &tools))
                .await
                .map_err(|e| BackendError::Internal(format!("tokenizer task failed: {e}")))??;
        Ok(u32::try_from(tokens.len()).unwrap_or(u32::MAX))
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(BackendError::ShuttingDown);
        }
        let received = Instant::now();
        let parses_calls = match (request.tools.is_empty(), self.model.call_format) {
            (true, _) => None,
            (false, Some(format)) => Some(format),
            (false, None) => return Err(self.no_tool_support()),
        };
        let n = request.sampling.n.clamp(1, backend::MAX_CHOICES) as usize;
        let vocab = u32::try_from(self.model.model.n_vocab()).unwrap_or(0);
        if let Some(bad) = request.resume.iter().find(|&&id| id >= vocab) {
            return Err(BackendError::InvalidPrompt(format!(
                "Resumed token id {bad} is not in this model's vocabulary of {vocab}."
            )));
        }
        if n > 1 && !request.resume.is_empty() {
            return Err(BackendError::InvalidPrompt(
                "A request with several answers (n > 1) cannot be resumed; send it again whole."
                    .into(),
            ));
        }
        // A grammar (when the answer is constrained) is built before the request may queue: a
        // schema it cannot enforce is a 400 now, not an error mid-stream. Each answer needs
        // its own (a grammar sampler holds its parse state); the text is built once, cached.
        let spec = constrain::Spec::of(&request, self.model.call_format);
        let strict = spec.as_ref().is_some_and(constrain::Spec::strict);
        let mut grammars = Vec::with_capacity(n);
        for _ in 0..n {
            grammars.push(match &spec {
                Some(spec) => Some(self.grammars.compile(&self.model, spec.clone()).await?),
                None => None,
            });
        }
        let model = self.model.clone();
        let (prompt, tools) = (request.prompt, request.tools);
        let model::GenerationPrompt {
            mut tokens,
            opens_thinking,
        } = tokio::task::spawn_blocking(move || model.generation_prompt(&prompt, &tools))
            .await
            .map_err(|e| BackendError::Internal(format!("tokenizer task failed: {e}")))??;
        if tokens.is_empty() {
            return Err(BackendError::InvalidPrompt(
                "The prompt is empty after tokenization; send at least one token of text.".into(),
            ));
        }
        // A resumed stream reads what it generated before after the prompt, and goes on.
        let resumed = request.resume.len();
        tokens.extend(request.resume.iter().map(|&id| LlamaToken(id as i32)));
        let room = self.slot_context as usize;
        if tokens.len() >= room {
            return Err(BackendError::ContextLengthExceeded {
                prompt_tokens: tokens.len() as u32,
                context_length: self.slot_context,
            });
        }
        // Generation stops when the slot is full: `max_tokens` beyond that is clamped.
        let fits = room - tokens.len();
        let max_new = request
            .max_tokens
            .map_or(fits, |m| (m as usize).saturating_sub(resumed).min(fits));
        if max_new == 0 {
            return Err(BackendError::InvalidPrompt(format!(
                "The request resumes after {resumed} generated tokens, all its max_tokens allow; \
                 nothing is left to generate."
            )));
        }
        let admitted = Event::Admitted {
            prompt_tokens: tokens.len() as u32,
            max_tokens: u32::try_from(max_new * n).unwrap_or(u32::MAX),
            exact: true,
        };
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let mut senders = senders.into_iter();
        let mut grammars = grammars.into_iter();
        let (Some(events), Some(grammar)) = (senders.next(), grammars.next()) else {
            return Err(BackendError::Internal("no answer to generate".into()));
        };
        // Each answer draws with its own seed, so that seeded answers differ.
        let followers = senders
            .zip(grammars)
            .zip(1u64..)
            .map(|((events, grammar), i)| worker::Follower {
                sampling: SamplingParams {
                    seed: request.sampling.seed.map(|s| s.wrapping_add(i)),
                    ..request.sampling.clone()
                },
                grammar,
                events,
            })
            .collect();
        if n == 1 {
            // Cannot fail: the receiver is right here.
            let _ = events.send(Ok(admitted.clone()));
        }
        let (reply, answer) = oneshot::channel();
        let submit = Command::Submit {
            request: Request {
                prompt: tokens,
                max_new,
                sampling: request.sampling,
                grammar,
                stop: request.stop,
                events,
                received,
                priority: request.priority,
                followers,
                resumed,
            },
            reply,
        };
        let stopped = || {
            if self.stopped.load(Ordering::SeqCst) {
                BackendError::ShuttingDown
            } else {
                BackendError::Internal("the engine thread has stopped".into())
            }
        };
        self.commands.send(submit).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())??;
        // Per answer: reasoning first, then calls in the answer. A strict grammar constrains
        // the output from its first token, so it holds no thinking even where the prompt
        // opened a block.
        let answers: Vec<_> = receivers
            .into_iter()
            .map(|rx| {
                let rx = if self.model.thinks {
                    reasoning::split(rx, opens_thinking && !strict)
                } else {
                    rx
                };
                match parses_calls {
                    Some(format) => tool_calls::parse_calls(rx, format.parser()),
                    None => rx,
                }
            })
            .collect();
        let rx = match <[_; 1]>::try_from(answers) {
            Ok([one]) => one,
            Err(answers) => relay::merge(admitted, answers),
        };
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }
}
