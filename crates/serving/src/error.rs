//! What can refuse or end a served request, in domain terms: the wire layer names the
//! parameters and picks the status.

use backend::BackendError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// No backend or deployment serves this name.
    #[error("The model '{model}' does not exist. Available: {}", available_list(.available))]
    ModelNotFound {
        model: String,
        /// Every served name, in listing order.
        available: Vec<String>,
    },
    /// The prompt's bytes alone prove it cannot fit the model's context, whatever the
    /// tokenizer: refused before anything tokenizes it.
    #[error("This model's maximum context length is {context_length} tokens. However, your prompt has {prompt_bytes} bytes of text, which is at least {at_least} tokens. Shorten the prompt or start a new conversation.")]
    PromptTooLong {
        prompt_bytes: usize,
        at_least: u32,
        context_length: u32,
    },
    /// Admission or billing refused it (allow-list, balance, rate limits) or the ledger failed.
    #[error(transparent)]
    Tenancy(#[from] tenancy::Error),
    /// The backend refused or failed it.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// An audio file that cannot be transcribed (not audio, too long, an unknown codec).
    #[error(transparent)]
    Audio(#[from] audio::AudioError),
}

fn available_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
