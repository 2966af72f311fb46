//! The WordPiece vocabulary of a `tokenizer.json`, in llama.cpp's form for `bert` models:
//! continuation pieces (`##ing`) lose their prefix, every other normal piece gets the word-start
//! mark ▁ (U+2581), and special tokens stay as they are, typed as control tokens.

use std::collections::HashMap;

use serde::Deserialize;

use crate::{ConvertError, Result};

/// llama.cpp's token types.
pub const NORMAL: i32 = 1;
pub const CONTROL: i32 = 3;
pub const USER_DEFINED: i32 = 4;
const WORD_START: char = '\u{2581}';

#[derive(Deserialize)]
struct TokenizerJson {
    model: Model,
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    #[serde(default)]
    normalizer: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Model {
    r#type: String,
    vocab: HashMap<String, u32>,
    #[serde(default = "default_prefix")]
    continuing_subword_prefix: String,
}

fn default_prefix() -> String {
    "##".into()
}

#[derive(Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
    #[serde(default)]
    special: bool,
}

/// The vocabulary as GGUF stores it, with the special tokens' ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    /// `[CLS]`, `[SEP]`, `[UNK]`, `[PAD]`, `[MASK]` where present.
    pub specials: Vec<(&'static str, u32)>,
}

impl Vocab {
    /// Parses `tokenizer.json` text (`what` names the file in errors).
    pub fn from_tokenizer_json(text: &str, what: &str) -> Result<Self> {
        let parsed: TokenizerJson = serde_json::from_str(text)
            .map_err(|e| ConvertError::Format(format!("{what} is not a tokenizer.json: {e}")))?;
        if parsed.model.r#type != "WordPiece" {
            return Err(ConvertError::Format(format!(
                "{what} has a {} tokenizer; only WordPiece (BERT) vocabularies convert",
                parsed.model.r#type
            )));
        }
        let lowercase = parsed
            .normalizer
            .as_ref()
            .and_then(|n| n.get("lowercase"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true);
        if !lowercase {
            return Err(ConvertError::Format(format!(
                "{what} is a cased WordPiece vocabulary; llama.cpp's BERT tokenizer lowercases, \
                 so only uncased models convert faithfully"
            )));
        }
        let size = parsed.model.vocab.len();
        let mut raw: Vec<Option<String>> = vec![None; size];
        for (piece, id) in parsed.model.vocab {
            let slot = raw.get_mut(id as usize).ok_or_else(|| {
                ConvertError::Format(format!(
                    "{what}: token id {id} of '{piece}' is outside the vocabulary of {size}"
                ))
            })?;
            if slot.replace(piece).is_some() {
                return Err(ConvertError::Format(format!(
                    "{what}: token id {id} is used twice"
                )));
            }
        }
        let mut kinds = vec![NORMAL; size];
        for added in &parsed.added_tokens {
            if let Some(kind) = kinds.get_mut(added.id as usize) {
                *kind = if added.special { CONTROL } else { USER_DEFINED };
            }
        }
        let prefix = parsed.model.continuing_subword_prefix;
        let mut tokens = Vec::with_capacity(size);
        for (id, piece) in raw.into_iter().enumerate() {
            let piece = piece
                .ok_or_else(|| ConvertError::Format(format!("{what}: no token has id {id}")))?;
            tokens.push(match kinds[id] {
                CONTROL => piece,
                _ => match piece.strip_prefix(prefix.as_str()) {
                    Some(rest) if !prefix.is_empty() => rest.to_owned(),
                    _ => format!("{WORD_START}{piece}"),
                },
            });
        }
        let find = |content: &str| {
            parsed
                .added_tokens
                .iter()
                .find(|t| t.content == content)
                .map(|t| t.id)
        };
        let specials = [
            ("cls", "[CLS]"),
            ("seperator", "[SEP]"),
            ("unknown", "[UNK]"),
            ("padding", "[PAD]"),
            ("mask", "[MASK]"),
        ]
        .into_iter()
        .filter_map(|(key, content)| find(content).map(|id| (key, id)))
        .collect();
        Ok(Self {
            tokens,
            types: kinds,
            specials,
        })
    }

    /// Pads the vocabulary with unused control tokens up to `rows` (an embedding matrix with
    /// more rows than the tokenizer has tokens, as some checkpoints round it up).
    pub fn pad_to(&mut self, rows: usize) {
        while self.tokens.len() < rows {
            self.tokens.push(format!("[PAD{}]", self.tokens.len()));
            self.types.push(CONTROL);
        }
    }
}
