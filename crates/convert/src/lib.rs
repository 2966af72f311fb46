//! Model format conversion, run locally by `flywheel convert`: a Hugging Face BERT-family
//! directory (`config.json`, `model.safetensors`, `tokenizer.json` with a WordPiece vocabulary)
//! becomes a GGUF file llama.cpp loads as arch `bert` (an embedding model with mean or CLS
//! pooling, or a cross-encoder with rank pooling when the checkpoint has a classifier head).
//! A CTranslate2 Whisper directory (faster-whisper's `model.bin`) becomes a safetensors
//! directory candle's Whisper loads ([`convert_whisper`]).
//! Knows neither HTTP nor llama.cpp; progress is reported through a callback.

mod bert;
pub mod ct2;
pub mod gguf;
mod quant;
mod vocab;
mod whisper;

pub use bert::{convert_bert, Progress, Summary};
pub use quant::OutType;
pub use whisper::{convert_whisper, is_ctranslate2, WhisperSummary};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// The input is not what the converter understands (the message says which file and why).
    #[error("{0}")]
    Format(String),
}

pub type Result<T, E = ConvertError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod whisper_tests;
