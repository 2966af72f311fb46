//! Token log-probabilities in OpenAI's two shapes: chat's `logprobs.content` entries and the
//! legacy completions' parallel arrays (`tokens`, `token_logprobs`, `top_logprobs`,
//! `text_offset`).

use backend::{Logprob, TokenLogprob};
use serde_json::{json, Map, Value};

fn entry(l: &Logprob) -> Value {
    json!({ "token": l.token, "logprob": l.logprob, "bytes": l.bytes })
}

/// Chat's `logprobs` object for these tokens.
pub fn chat(tokens: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(&t.chosen);
            e["top_logprobs"] = t.top.iter().map(entry).collect();
            e
        })
        .collect();
    json!({ "content": content, "refusal": null })
}

/// The completions API's `logprobs` objects of one answer, chunk by chunk: `text_offset` counts
/// bytes of the answer from its start (the prompt is not echoed).
#[derive(Debug, Default)]
pub struct Completion {
    offset: usize,
}

impl Completion {
    pub fn render(&mut self, tokens: &[TokenLogprob]) -> Value {
        let mut offsets = Vec::with_capacity(tokens.len());
        for t in tokens {
            offsets.push(self.offset);
            self.offset += t.chosen.token.len();
        }
        let top: Vec<Value> = tokens
            .iter()
            .map(|t| {
                let map: Map<String, Value> = t
                    .top
                    .iter()
                    .map(|l| (l.token.clone(), json!(l.logprob)))
                    .collect();
                Value::Object(map)
            })
            .collect();
        json!({
            "tokens": tokens.iter().map(|t| t.chosen.token.clone()).collect::<Vec<_>>(),
            "token_logprobs": tokens.iter().map(|t| t.chosen.logprob).collect::<Vec<_>>(),
            "top_logprobs": top,
            "text_offset": offsets,
        })
    }
}
