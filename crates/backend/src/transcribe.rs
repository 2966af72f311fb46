//! Speech to text: what `/v1/audio/transcriptions` hands a backend, and what comes back.

use std::sync::Arc;

/// A validated transcription request: audio already decoded to 16 kHz mono samples (the
/// serving layer decodes and measures it before admission, so it is metered by its length).
#[derive(Debug, Clone, PartialEq)]
pub struct TranscribeRequest {
    /// Id for logs and the ledger.
    pub request_id: String,
    /// The served name.
    pub model: String,
    /// 16 kHz mono samples in [-1, 1].
    pub samples: Arc<Vec<f32>>,
    /// ISO-639-1 code of the spoken language; `None`: detected from the first 30 seconds.
    pub language: Option<String>,
    /// Text that conditions the first window (names, spelling, style).
    pub prompt: Option<String>,
    /// 0: greedy decoding; above: sampling at this temperature.
    pub temperature: f32,
    /// The tenant, for fair queueing.
    pub tenant: Option<String>,
}

/// One stretch of speech with its times (seconds from the start of the audio).
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptSegment {
    pub id: u32,
    /// The mel frame (10 ms each) its window started at.
    pub seek: u32,
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// Its tokens, timestamps included.
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

/// A backend's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcription {
    /// The whole text (the segments' texts joined).
    pub text: String,
    /// The language spoken (given or detected), as a lowercase name such as `english`.
    pub language: String,
    pub segments: Vec<TranscriptSegment>,
}
