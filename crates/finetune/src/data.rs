//! Training data: OpenAI's chat fine-tuning format (one JSON object a line,
//! `{"messages": [{"role": …, "content": …}, …]}`), checked line by line, and turned into
//! tokens with the loss mask on the assistant tokens, through the base model's own chat
//! template and llama.cpp's tokenizer — the very path serving takes, so the adapter learns
//! the token sequences it will be asked to continue.

use std::path::Path;

use backend::ChatMessage;
use engine::model::LoadedModel;
use serde::Deserialize;

use crate::{FinetuneError, Result};

/// One conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub messages: Vec<ChatMessage>,
}

/// A conversation's tokens; `targets[i]`: token `i` was written by the assistant (the loss
/// is the model's prediction of exactly those tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedExample {
    pub tokens: Vec<u32>,
    pub targets: Vec<bool>,
}

impl TokenizedExample {
    /// How many tokens the loss covers.
    pub fn trained_tokens(&self) -> usize {
        self.targets.iter().skip(1).filter(|t| **t).count()
    }
}

/// Limits a training file must keep.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_examples: usize,
    pub max_examples: usize,
    /// Tokens of one rendered conversation.
    pub max_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_examples: 10,
            max_examples: 50_000,
            max_tokens: 1024,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: serde_json::Value,
    #[serde(default)]
    weight: Option<serde_json::Value>,
}

/// An error naming the 1-based line of the file it concerns.
fn at(line: usize, what: impl std::fmt::Display) -> FinetuneError {
    FinetuneError::Invalid(format!("line {line}: {what}"))
}

/// Parse a JSONL training file, checking every line's shape (no tokenization yet).
pub fn parse_jsonl(text: &str) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(raw).map_err(|e| {
            at(
                n,
                format!("not a JSON object with a `messages` array ({e})"),
            )
        })?;
        if line.messages.is_empty() {
            return Err(at(n, "`messages` is empty"));
        }
        let mut messages = Vec::with_capacity(line.messages.len());
        for (j, m) in line.messages.into_iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                return Err(at(
                    n,
                    format!(
                        "messages[{j}].role is `{}`; use system, user or assistant",
                        m.role
                    ),
                ));
            }
            let serde_json::Value::String(content) = m.content else {
                return Err(at(n, format!("messages[{j}].content must be a string")));
            };
            if content.trim().is_empty() && m.role == "assistant" {
                return Err(at(
                    n,
                    format!("messages[{j}] is an empty assistant message"),
                ));
            }
            if m.weight.is_some() {
                return Err(at(n, format!("messages[{j}].weight is not supported")));
            }
            messages.push(ChatMessage::text(&m.role, &content));
        }
        if !messages.iter().any(|m| m.role == "assistant") {
            return Err(at(n, "the conversation has no assistant message to learn"));
        }
        if messages.last().map(|m| m.role.as_str()) != Some("assistant") {
            return Err(at(n, "the conversation must end with an assistant message"));
        }
        out.push(Example { messages });
    }
    Ok(out)
}

/// Tokenize `examples` (parsed from a file, `lines[i]` the line of example `i`) with the
/// base model, checking each against `limits.max_tokens` and the count limits.
pub fn tokenize(
    model: &LoadedModel,
    examples: &[(usize, Example)],
    limits: &Limits,
    what: &str,
) -> Result<Vec<TokenizedExample>> {
    if examples.len() < limits.min_examples {
        return Err(FinetuneError::Invalid(format!(
            "the {what} has {} examples; at least {} are needed",
            examples.len(),
            limits.min_examples
        )));
    }
    if examples.len() > limits.max_examples {
        return Err(FinetuneError::Invalid(format!(
            "the {what} has {} examples; at most {} are allowed",
            examples.len(),
            limits.max_examples
        )));
    }
    examples
        .iter()
        .map(|(line, ex)| {
            let (tokens, targets) = model
                .training_tokens(&ex.messages)
                .map_err(|e| at(*line, e))?;
            if tokens.len() > limits.max_tokens {
                return Err(at(
                    *line,
                    format!(
                        "the conversation is {} tokens long; the limit is {}",
                        tokens.len(),
                        limits.max_tokens
                    ),
                ));
            }
            Ok(TokenizedExample {
                tokens: tokens.iter().map(|t| t.0 as u32).collect(),
                targets,
            })
        })
        .collect()
}

/// Parse and tokenize a training file in one go: examples numbered by their line.
pub fn load_file(
    model: &LoadedModel,
    path: &Path,
    limits: &Limits,
    what: &str,
) -> Result<Vec<TokenizedExample>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| FinetuneError::Invalid(format!("the {what} cannot be read as text: {e}")))?;
    let numbered = numbered(&text)?;
    tokenize(model, &numbered, limits, what)
}

/// [`parse_jsonl`] keeping each example's line number.
pub fn numbered(text: &str) -> Result<Vec<(usize, Example)>> {
    let examples = parse_jsonl(text)?;
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, _)| i + 1);
    Ok(lines.zip(examples).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_line_is_named() {
        let good =
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}"#;
        let text = format!(
            "{good}\n\n{good}\n{{\"messages\": [{{\"role\": \"wizard\", \"content\": \"x\"}}]}}\n"
        );
        let err = parse_jsonl(&text).expect_err("refused").to_string();
        assert!(err.starts_with("line 4:"), "{err}");
        assert!(err.contains("wizard"), "{err}");
        let err = parse_jsonl("{not json").expect_err("refused").to_string();
        assert!(err.starts_with("line 1:"), "{err}");
        let no_answer = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
        let err = parse_jsonl(&format!("{good}\n{no_answer}")).expect_err("refused");
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        let n = numbered(&format!("{good}\n\n{good}")).expect("parses");
        assert_eq!(n.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![1, 3]);
    }
}
