//! The worst case of a request, known before anything tokenizes it: what admission reserves
//! for a request before it may queue (and so before any replica has to start for it).
//!
//! From above, [`GenerateRequest::max_prompt_tokens`]: the prompt's bytes plus a chat template's
//! allowance (and the tools offered).
//! Where a template adds more, the backend's exact count grows the reservation at admission,
//! if the account can pay (see `Meter::admitted`).
//!
//! From below: no tokenizer makes a token from more than [`MAX_BYTES_PER_TOKEN`] bytes, so a
//! prompt whose bytes alone reach the context is refused without tokenizing it.

use backend::GenerateRequest;

use crate::error::ServeError;

/// No tokenizer's token is longer than this many bytes (llama.cpp vocabularies stay far
/// below it), so `n` bytes of text are at least `n / MAX_BYTES_PER_TOKEN` tokens.
pub const MAX_BYTES_PER_TOKEN: usize = 256;
/// The completion bound of a request without `max_tokens` to a backend that does not know its
/// context (an upstream server, which applies its own default, also 4,096 unless configured).
pub const UNKNOWN_CONTEXT_COMPLETION_TOKENS: u32 = 4096;

/// A request's prompt and completion, bounded before tokenizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// At least this many prompt tokens (≥ 1).
    pub min_prompt: u32,
    /// At most this many prompt tokens (or the backend's exact count grows the reservation).
    pub prompt: u32,
    /// At most this many completion tokens.
    pub completion: u32,
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Bound {
    /// The bound of `request` for a model of `context_length` tokens (`None`: unknown), or
    /// `PromptTooLong` when its bytes alone cannot fit.
    pub fn of(request: &GenerateRequest, context_length: Option<u32>) -> Result<Self, ServeError> {
        let bytes = request.prompt.text_bytes();
        let min_prompt = to_u32(bytes.div_ceil(MAX_BYTES_PER_TOKEN).max(1));
        if let Some(context_length) = context_length {
            if min_prompt >= context_length {
                return Err(ServeError::PromptTooLong {
                    prompt_bytes: bytes,
                    at_least: min_prompt,
                    context_length,
                });
            }
        }
        let mut prompt = request.max_prompt_tokens(bytes);
        let completion = match context_length {
            Some(context_length) => {
                // A prompt that runs is shorter than the context, and prompt plus completion
                // never exceed it.
                prompt = prompt.min(context_length - 1);
                let room = context_length - min_prompt;
                request.max_tokens.unwrap_or(room).min(room)
            }
            None => request
                .max_tokens
                .unwrap_or(UNKNOWN_CONTEXT_COMPLETION_TOKENS),
        };
        Ok(Self {
            min_prompt,
            prompt: prompt.max(min_prompt),
            // Every answer of `n` may be that long.
            completion: completion.saturating_mul(request.sampling.n.max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use backend::{
        ChatMessage, Prompt, SamplingParams, RAW_PROMPT_TOKENS, TEMPLATE_TOKENS,
        TEMPLATE_TOKENS_PER_MESSAGE,
    };

    use super::*;

    fn request(prompt: Prompt, max_tokens: Option<u32>) -> GenerateRequest {
        GenerateRequest {
            request_id: "r".into(),
            model: "m".into(),
            prompt,
            sampling: SamplingParams::default(),
            max_tokens,
            stop: Vec::new(),
            tenant: None,
            tools: Vec::new(),
            tool_choice: Default::default(),
            parallel_tool_calls: true,
            format: Default::default(),
            priority: Default::default(),
            resume: Vec::new(),
        }
    }

    fn chat(content: &str) -> Prompt {
        Prompt::Chat(vec![ChatMessage::text("user", content)])
    }

    #[test]
    fn a_chat_prompt_is_bounded_by_its_bytes_and_the_template() {
        let b = Bound::of(&request(chat("hello"), Some(10)), Some(2048)).expect("fits");
        assert_eq!(b.min_prompt, 1);
        assert_eq!(
            b.prompt,
            4 + 5 + TEMPLATE_TOKENS + TEMPLATE_TOKENS_PER_MESSAGE
        );
        assert_eq!(b.completion, 10);
    }

    #[test]
    fn the_context_caps_both_parts() {
        let long = "x".repeat(10_000);
        let b = Bound::of(&request(chat(&long), None), Some(2048)).expect("fits");
        assert_eq!(b.prompt, 2047);
        // 10,004 bytes are at least 40 tokens, which leaves at most 2,008 to generate.
        assert_eq!(b.min_prompt, 40);
        assert_eq!(b.completion, 2008);
        let b = Bound::of(&request(Prompt::Text(long), Some(5000)), Some(2048)).expect("fits");
        assert_eq!(b.completion, 2048 - 40);
    }

    #[test]
    fn an_unknown_context_bounds_the_completion_by_the_upstream_default() {
        let b = Bound::of(&request(Prompt::Text("hi".into()), None), None).expect("fits");
        assert_eq!((b.prompt, b.completion), (2 + RAW_PROMPT_TOKENS, 4096));
    }

    #[test]
    fn a_prompt_whose_bytes_cannot_fit_is_refused_without_tokenizing() {
        let long = "x".repeat(256 * 2048);
        let err = Bound::of(&request(Prompt::Text(long), None), Some(2048)).expect_err("refused");
        assert!(matches!(
            err,
            ServeError::PromptTooLong {
                at_least: 2048,
                context_length: 2048,
                ..
            }
        ));
    }
}
