//! Speech to text in pure Rust: Whisper on candle, on the CPU. No HTTP.
//!
//! A speech model is a directory `flywheel convert` writes from a CTranslate2 Whisper
//! (`model.safetensors` with Hugging Face names, `config.json`, `tokenizer.json`).
//! [`SpeechEngine`] loads it and implements [`backend::Backend::transcribe`]: requests queue on
//! a bounded channel and `slots` worker threads (each with its own decoder caches over shared
//! weights) run them inside one rayon pool of `threads` threads, so a speech model never takes
//! more CPU than it was given. The audio arrives decoded (16 kHz mono); [`mel`] turns it into
//! Whisper's features and [`decode`] transcribes it window by window.

pub mod decode;
pub mod mel;
pub mod model;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use backend::{
    BackendError, EventStream, GenerateRequest, ModelInfo, ModelKind, TranscribeRequest,
    Transcription,
};
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::decode::{Options, Transcriber};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpeechError {
    #[error("{0}")]
    Load(String),
    #[error("{0}")]
    Invalid(String),
    #[error("speech inference failed: {0}")]
    Inference(String),
    #[error("the request was cancelled")]
    Cancelled,
}

/// The parts of a converted directory's `config.json` sizing and loading need.
#[derive(Debug, Clone, Deserialize)]
struct DirConfig {
    #[serde(default)]
    model_type: String,
    #[serde(default)]
    suppress_tokens: Vec<u32>,
    #[serde(default)]
    begin_suppress_tokens: Vec<u32>,
}

/// What a speech model directory holds, read without loading it.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Bytes of `model.safetensors` (f32 in memory: twice that for an f16 file).
    pub weight_bytes: u64,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub heads: usize,
    pub vocab_size: usize,
    /// Tokens the decoder holds per window.
    pub max_target_positions: usize,
    pub max_source_positions: usize,
}

fn read_config(
    dir: &Path,
) -> Result<(candle_transformers::models::whisper::Config, DirConfig), SpeechError> {
    let path = dir.join("config.json");
    let bytes = std::fs::read(&path)
        .map_err(|e| SpeechError::Load(format!("cannot read {}: {e}", path.display())))?;
    let extra: DirConfig = serde_json::from_slice(&bytes)
        .map_err(|e| SpeechError::Load(format!("{} cannot be read: {e}", path.display())))?;
    if extra.model_type != "whisper" {
        return Err(SpeechError::Load(format!(
            "{} is not a Whisper model (model_type '{}'); convert a CTranslate2 Whisper \
             directory with `flywheel convert SRC -o DIR`",
            path.display(),
            extra.model_type
        )));
    }
    let config = serde_json::from_slice(&bytes)
        .map_err(|e| SpeechError::Load(format!("{} cannot be read: {e}", path.display())))?;
    Ok((config, extra))
}

/// Whether `dir` is a speech model directory (a Whisper `config.json` beside its weights).
pub fn is_speech_dir(dir: &Path) -> bool {
    dir.join("model.safetensors").is_file() && read_config(dir).is_ok()
}

/// Reads `dir`'s facts without loading the weights.
pub fn inspect(dir: &Path) -> Result<Facts, SpeechError> {
    let (c, _) = read_config(dir)?;
    let weights = dir.join("model.safetensors");
    let weight_bytes = std::fs::metadata(&weights)
        .map_err(|e| SpeechError::Load(format!("cannot read {}: {e}", weights.display())))?
        .len();
    Ok(Facts {
        weight_bytes,
        d_model: c.d_model,
        encoder_layers: c.encoder_layers,
        decoder_layers: c.decoder_layers,
        heads: c.decoder_attention_heads,
        vocab_size: c.vocab_size,
        max_target_positions: c.max_target_positions,
        max_source_positions: c.max_source_positions,
    })
}

/// Loads a speech model directory into a [`Transcriber`] (no threads started).
pub fn load(dir: &Path) -> Result<Transcriber, SpeechError> {
    let (config, extra) = read_config(dir)?;
    let vocab = tokens::Vocab::load(&dir.join("tokenizer.json"), config.vocab_size)?;
    let weights: PathBuf = dir.join("model.safetensors");
    let model = model::Whisper::load(&weights, config)
        .map_err(|e| SpeechError::Load(format!("cannot load {}: {e}", weights.display())))?;
    Ok(Transcriber::new(
        model,
        vocab,
        extra.suppress_tokens,
        extra.begin_suppress_tokens,
    ))
}

/// How a speech engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechOptions {
    /// Requests transcribed at once.
    pub slots: usize,
    /// CPU threads all of them share.
    pub threads: usize,
    /// Requests that may wait for a slot; more are refused as overloaded.
    pub max_queue: usize,
}

struct Job {
    request: TranscribeRequest,
    language: Option<&'static str>,
    reply: oneshot::Sender<Result<Transcription, BackendError>>,
}

/// A loaded speech model serving transcriptions.
pub struct SpeechEngine {
    name: String,
    created: u64,
    jobs: Mutex<Option<SyncSender<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stopped: Arc<AtomicBool>,
    max_queue: usize,
}

/// Loads `dir` and starts its workers.
pub fn start(
    dir: &Path,
    name: &str,
    opts: SpeechOptions,
) -> Result<Arc<SpeechEngine>, SpeechError> {
    tracing::info!(model = %name, dir = %dir.display(), "loading speech model");
    let started = std::time::Instant::now();
    let transcriber = load(dir)?;
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.max(1))
            .thread_name({
                let name = name.to_owned();
                move |i| format!("speech-{name}-{i}")
            })
            .build()
            .map_err(|e| SpeechError::Load(format!("cannot start the speech threads: {e}")))?,
    );
    let (tx, rx) = sync_channel::<Job>(opts.max_queue.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let stopped = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for slot in 0..opts.slots.max(1) {
        let mut t = transcriber.fork();
        let (rx, pool, stopped) = (rx.clone(), pool.clone(), stopped.clone());
        let handle = std::thread::Builder::new()
            .name(format!("speech-{name}-slot{slot}"))
            .spawn(move || worker(&mut t, &rx, &pool, &stopped))
            .map_err(|e| SpeechError::Load(format!("cannot start a speech worker: {e}")))?;
        workers.push(handle);
    }
    tracing::info!(model = %name, seconds = started.elapsed().as_secs_f32(), "speech model ready");
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Arc::new(SpeechEngine {
        name: name.to_owned(),
        created,
        jobs: Mutex::new(Some(tx)),
        workers: Mutex::new(workers),
        stopped,
        max_queue: opts.max_queue.max(1),
    }))
}

fn worker(
    t: &mut Transcriber,
    rx: &Mutex<Receiver<Job>>,
    pool: &rayon::ThreadPool,
    stopped: &AtomicBool,
) {
    loop {
        let job = match rx.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if stopped.load(Ordering::Relaxed) {
            let _ = job.reply.send(Err(BackendError::ShuttingDown));
            continue;
        }
        if job.reply.is_closed() {
            continue;
        }
        let started = std::time::Instant::now();
        let cancelled = || job.reply.is_closed() || stopped.load(Ordering::Relaxed);
        let opts = Options {
            language: job.language,
            prompt: job.request.prompt.as_deref(),
            temperature: job.request.temperature,
            cancelled: &cancelled,
        };
        let result = pool.install(|| t.transcribe(&job.request.samples, &opts));
        let seconds = job.request.samples.len() as f64 / 16_000.0;
        let result = match result {
            Ok(out) => {
                let took = started.elapsed().as_secs_f64();
                tracing::info!(
                    request_id = %job.request.request_id,
                    audio_seconds = seconds,
                    took_seconds = took,
                    real_time_factor = took / seconds.max(1e-3),
                    "transcribed"
                );
                Ok(out)
            }
            Err(SpeechError::Cancelled) if stopped.load(Ordering::Relaxed) => {
                Err(BackendError::ShuttingDown)
            }
            Err(SpeechError::Invalid(message)) => Err(BackendError::InvalidRequest {
                message,
                field: Some(backend::Field::Language),
            }),
            Err(e) => Err(BackendError::Internal(e.to_string())),
        };
        let _ = job.reply.send(result);
    }
}

#[async_trait::async_trait]
impl backend::Backend for SpeechEngine {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.name.clone(),
            owned_by: "flywheel".into(),
            context_length: None,
            created: self.created,
            kind: ModelKind::Transcribe,
        }
    }

    async fn generate(&self, _request: GenerateRequest) -> backend::Result<EventStream> {
        Err(BackendError::InvalidRequest {
            message: format!(
                "'{}' is a speech-to-text model: it generates no text from a prompt. Call \
                 /v1/audio/transcriptions with it.",
                self.name
            ),
            field: Some(backend::Field::Model),
        })
    }

    async fn transcribe(&self, request: TranscribeRequest) -> backend::Result<Transcription> {
        let language =
            match request.language.as_deref().filter(|l| !l.trim().is_empty()) {
                None => None,
                Some(asked) => Some(tokens::language_code(asked).ok_or_else(|| {
                    BackendError::InvalidRequest {
                        message: format!(
                        "'{asked}' is not a language Whisper knows. Give an ISO-639-1 code such \
                         as 'en', 'de' or 'zh', or leave 'language' out to detect it."
                    ),
                        field: Some(backend::Field::Language),
                    }
                })?),
            };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            language,
            reply,
        };
        {
            let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = jobs.as_ref() else {
                return Err(BackendError::ShuttingDown);
            };
            match tx.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    return Err(BackendError::Overloaded {
                        queued: self.max_queue,
                        retry_after: 5,
                    })
                }
                Err(TrySendError::Disconnected(_)) => return Err(BackendError::ShuttingDown),
            }
        }
        answer
            .await
            .map_err(|_| BackendError::Internal("the speech worker stopped".into()))?
    }

    async fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
        })
        .await;
    }
}
