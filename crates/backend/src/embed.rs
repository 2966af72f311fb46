//! Embedding and scoring requests: what `/v1/embeddings` and `/v1/rerank` hand a backend.

/// One input to embed.
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    /// Text, tokenized by the model (its special tokens added as the model wants).
    Text(String),
    /// Token ids of the model's vocabulary, used as given.
    Tokens(Vec<u32>),
    /// A (query, document) pair for a cross-encoder, scored together.
    Pair(String, String),
}

impl EmbedInput {
    /// An upper bound of this input's tokens before tokenizing: a token covers at least one
    /// byte, and a model adds at most [`EMBED_SPECIAL_TOKENS`] around an input.
    pub fn max_tokens(&self) -> u32 {
        let n = match self {
            EmbedInput::Text(t) => t.len(),
            EmbedInput::Tokens(t) => return u32::try_from(t.len()).unwrap_or(u32::MAX),
            EmbedInput::Pair(q, d) => q.len().saturating_add(d.len()),
        };
        u32::try_from(n)
            .unwrap_or(u32::MAX)
            .saturating_add(EMBED_SPECIAL_TOKENS)
    }
}

/// Special tokens a model adds around one input at most (BERT's `[CLS] … [SEP] … [SEP]`).
pub const EMBED_SPECIAL_TOKENS: u32 = 4;

/// A validated embedding request for one served model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    /// Id for logs and the ledger.
    pub request_id: String,
    /// The served name.
    pub model: String,
    /// At least one.
    pub inputs: Vec<EmbedInput>,
    /// The tenant, for fair queueing.
    pub tenant: Option<String>,
    /// The vector length asked for (`None`: the model's own); a model serves only its own.
    pub dimensions: Option<u32>,
    /// Its class: a batch's line (`Priority::Batch`) waits behind interactive work in a
    /// deployment's queue and takes only a replica's free slots.
    pub priority: crate::Priority,
}

impl EmbedRequest {
    /// An upper bound of the request's tokens before tokenizing.
    pub fn max_prompt_tokens(&self) -> u32 {
        self.inputs
            .iter()
            .map(EmbedInput::max_tokens)
            .fold(0, u32::saturating_add)
    }
}

/// A backend's answer: one vector per input, in order (a cross-encoder's are one score
/// long), and the tokens computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

/// What a served model does, for `/v1/models` and for refusing requests a model cannot serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelKind {
    /// Text generation (chat and completions).
    #[default]
    Generate,
    /// Embeddings of `dimensions` (a pooled, normalised vector per input).
    Embed { dimensions: u32 },
    /// A cross-encoder: one relevance score per (query, document) pair.
    Rank,
    /// Speech to text (`/v1/audio/transcriptions`).
    Transcribe,
}

impl ModelKind {
    /// The APIs this kind serves, as `/v1/models` lists them.
    pub fn capabilities(self) -> &'static [&'static str] {
        match self {
            ModelKind::Generate => &["chat", "completions"],
            ModelKind::Embed { .. } => &["embeddings", "rerank"],
            ModelKind::Rank => &["rerank"],
            ModelKind::Transcribe => &["transcriptions"],
        }
    }
}
