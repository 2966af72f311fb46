//! LoRA fine-tuning on CPU, in Rust.
//!
//! llama.cpp has no LoRA training, so this crate trains with `candle`: the base GGUF's weights
//! are read with candle's GGUF reader and dequantized to F32 ([`weights`]), a llama forward with
//! LoRA on the attention `q` and `v` projections runs on them with candle's differentiable ops
//! ([`model`]), the loss is taken on the assistant tokens of chat examples rendered and
//! tokenized exactly as serving does ([`data`], through the engine's chat template and
//! llama.cpp's tokenizer), AdamW updates only the LoRA matrices ([`optim`]), and the result is
//! exported as a GGUF LoRA adapter that llama.cpp's `llama_adapter_lora_init` loads
//! ([`export`]). [`train`] runs the loop: seedable, with a progress callback, checkpoints every
//! N steps to a directory, resume from the last one, and cancellation. [`jobs`] is OpenAI's
//! fine-tuning API over it (durable jobs, billing, publishing). This crate knows no HTTP.

pub mod data;
pub mod export;
pub mod job;
pub mod jobs;
pub mod lora;
pub mod model;
pub mod optim;
pub mod train;
pub mod weights;

pub use data::{Example, TokenizedExample};
pub use lora::LoraConfig;
pub use train::{Outcome, Progress, TrainConfig, Trainer};
pub use weights::{BaseModel, LlamaConfig};

#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// The base model cannot be trained (not a llama GGUF, missing tensors, unreadable file).
    #[error("{0}")]
    Model(String),
    /// The training data or a setting is unusable.
    #[error("{0}")]
    Invalid(String),
    /// A checkpoint directory cannot be written or read back.
    #[error("{0}")]
    Checkpoint(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = FinetuneError> = std::result::Result<T, E>;
