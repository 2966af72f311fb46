//! Loading a GGUF and turning prompts into tokens: the tokenizer, special tokens and chat
//! template all come from the file's own metadata.

use std::num::NonZeroU16;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use backend::{ChatMessage, Prompt, Tool, ToolCall};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;

use crate::special::{Piece, Special, SpecialTokens};
use crate::template::{ChatTemplate, TemplateError, CHATML};
use crate::tool_calls::CallFormat;
use crate::{EngineError, Result};

static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
static BACKEND_INIT: Mutex<()> = Mutex::new(());

/// llama.cpp's process-wide backend, initialised once (its logs go to `tracing`).
pub fn llama_backend() -> Result<&'static LlamaBackend> {
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    let _guard = BACKEND_INIT
        .lock()
        .map_err(|_| EngineError::Load("llama.cpp backend init lock poisoned".into()))?;
    if let Some(b) = BACKEND.get() {
        return Ok(b);
    }
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let backend = LlamaBackend::init()
        .map_err(|e| EngineError::Load(format!("llama.cpp backend failed to start: {e}")))?;
    Ok(BACKEND.get_or_init(|| backend))
}

/// A prompt ready to decode.
pub struct GenerationPrompt {
    pub tokens: Vec<LlamaToken>,
    /// The chat template's generation prompt opened a thinking block.
    pub opens_thinking: bool,
}

/// A loaded GGUF with what is needed to turn requests into tokens. Shared (read-only) between
/// the request path, which tokenizes, and the worker thread, which decodes.
pub struct LoadedModel {
    pub model: LlamaModel,
    pub template: ChatTemplate,
    /// Whether the template came from the GGUF (false: the ChatML fallback).
    pub template_from_gguf: bool,
    /// How the template teaches the model to call tools; `None`: it has no tool support.
    pub call_format: Option<CallFormat>,
    /// Whether the template thinks in `<think>…</think>` (its reasoning is split from the
    /// answer, see [`crate::reasoning`]).
    pub thinks: bool,
    /// The control tokens, which only the chat template may write.
    specials: SpecialTokens,
    add_bos: bool,
    pub n_ctx_train: u32,
    pub file_bytes: u64,
}

impl LoadedModel {
    /// Load a GGUF, logging progress every 10%.
    pub fn load(path: &Path, name: &str) -> Result<Self> {
        let backend = llama_backend()?;
        if !path.is_file() {
            return Err(EngineError::Load(format!(
                "model file {} does not exist or is not a file; check the --model path",
                path.display()
            )));
        }
        let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let label = name.to_owned();
        let mut reported = -1i32;
        let params = LlamaModelParams::default().with_progress_callback(move |p| {
            let decile = (p * 10.0).floor() as i32;
            if decile > reported {
                reported = decile;
                tracing::info!(model = %label, "loading weights: {:>3}%", decile * 10);
            }
            true
        });
        let model = LlamaModel::load_from_file(backend, path, &params).map_err(|e| {
            EngineError::Load(format!(
                "{} is not a loadable GGUF model ({e}); check that the file is complete",
                path.display()
            ))
        })?;
        let vocab = model.vocab();
        let bos_token = piece(&model, vocab.bos());
        let eos_token = piece(&model, vocab.eos());
        let add_bos = vocab.should_add_bos();
        let (source, template_from_gguf) = match model.chat_template(None) {
            Ok(t) => match t.to_string() {
                Ok(s) => (s, true),
                Err(_) => (CHATML.to_owned(), false),
            },
            Err(_) => (CHATML.to_owned(), false),
        };
        if !template_from_gguf {
            tracing::warn!(
                model = name,
                "the GGUF carries no chat template; using ChatML"
            );
        }
        let template = ChatTemplate::new(&source, &bos_token, &eos_token)
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        let call_format = CallFormat::detect(&source);
        let thinks = crate::reasoning::detect(&source);
        tracing::info!(model = name, tool_calls = ?call_format, thinks, "chat template read");
        let n_ctx_train = model.n_ctx_train();
        let specials = control_tokens(&model);
        Ok(Self {
            model,
            template,
            template_from_gguf,
            call_format,
            thinks,
            specials,
            add_bos,
            n_ctx_train,
            file_bytes,
        })
    }

    /// The prompt's tokens, BOS first if the vocabulary wants it and the prompt does not start
    /// with it already.
    ///
    /// Chat messages go through the model's template, and only the special tokens the template
    /// writes are special: the same texts in a message's role or content are plain text (see
    /// [`crate::special`]). A raw `/v1/completions` prompt is the client's whole prompt, template
    /// included, so special-token texts in it are parsed as special tokens, as llama-server does.
    pub fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<LlamaToken>> {
        self.prompt_tokens_with_tools(prompt, &[])
    }

    /// [`LoadedModel::prompt_tokens`] with `tools` offered to a chat prompt's template. Every
    /// string of the tools and of the messages' tool calls is escaped like content.
    pub fn prompt_tokens_with_tools(
        &self,
        prompt: &Prompt,
        tools: &[Tool],
    ) -> Result<Vec<LlamaToken>> {
        self.generation_prompt(prompt, tools).map(|p| p.tokens)
    }

    /// [`LoadedModel::prompt_tokens_with_tools`], and whether the chat template's generation
    /// prompt opened a thinking block (the output starts inside it).
    pub fn generation_prompt(&self, prompt: &Prompt, tools: &[Tool]) -> Result<GenerationPrompt> {
        match prompt {
            Prompt::Chat(messages) => self.chat_tokens(messages, tools),
            Prompt::Text(text) => {
                let add_bos = self.wants_bos(text);
                Ok(GenerationPrompt {
                    tokens: self.model.vocab().tokenize(text.as_bytes(), add_bos, true),
                    opens_thinking: false,
                })
            }
        }
    }

    fn chat_tokens(&self, messages: &[ChatMessage], tools: &[Tool]) -> Result<GenerationPrompt> {
        self.chat_tokens_with(messages, tools, true)
    }

    /// A finished conversation's tokens, as serving would tokenize it, and for each token
    /// whether an assistant message wrote it (the tokens a fine-tune learns to produce): the
    /// assistant turn `i` covers the tokens between the rendering of `messages[..i]` with the
    /// generation prompt and that of `messages[..=i]` without it.
    pub fn training_tokens(
        &self,
        messages: &[ChatMessage],
    ) -> Result<(Vec<LlamaToken>, Vec<bool>)> {
        let full = self.chat_tokens_with(messages, &[], false)?.tokens;
        let mut mask = vec![false; full.len()];
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let start = self.chat_tokens_with(&messages[..i], &[], true)?.tokens;
            let end = self.chat_tokens_with(&messages[..=i], &[], false)?.tokens;
            if !full.starts_with(&start) || !full.starts_with(&end) || end.len() <= start.len() {
                return Err(EngineError::BadPrompt(
                    "the model's chat template does not render this conversation turn by turn, \
                     so its assistant tokens cannot be told apart"
                        .into(),
                ));
            }
            mask[start.len()..end.len()]
                .iter_mut()
                .for_each(|b| *b = true);
        }
        Ok((full, mask))
    }

    fn chat_tokens_with(
        &self,
        messages: &[ChatMessage],
        tools: &[Tool],
        add_generation_prompt: bool,
    ) -> Result<GenerationPrompt> {
        let escape = |s: &str| self.specials.escape(s).into_owned();
        let escaped: Vec<ChatMessage> = messages
            .iter()
            .map(|m| ChatMessage {
                role: escape(&m.role),
                content: escape(&m.content),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        ToolCall::function(
                            escape(&c.id),
                            escape(&c.function.name),
                            self.escape_json(&c.function.arguments),
                        )
                    })
                    .collect(),
                tool_call_id: m.tool_call_id.as_deref().map(escape),
                name: m.name.as_deref().map(escape),
            })
            .collect();
        let tools = if tools.is_empty() {
            None
        } else {
            let value = serde_json::to_value(tools)
                .map_err(|e| EngineError::BadPrompt(format!("the tools cannot be encoded: {e}")))?;
            Some(self.escape_json(&value))
        };
        let rendered = self
            .template
            .render_full(&escaped, tools.as_ref(), add_generation_prompt)
            .map_err(|e| match e {
                TemplateError::Rejected(m) => EngineError::BadPrompt(format!(
                    "the model's chat template rejected the messages: {m}"
                )),
                TemplateError::Invalid(m) => EngineError::Load(m),
            })?;
        tracing::debug!(prompt = %rendered, "rendered prompt");
        let vocab = self.model.vocab();
        let mut tokens = Vec::with_capacity(rendered.len() / 3 + 2);
        if self.wants_bos(&rendered) {
            tokens.push(vocab.bos());
        }
        for piece in self.specials.split(&rendered) {
            match piece {
                Piece::Special(id) => tokens.push(LlamaToken(id)),
                Piece::Text(text) => {
                    vocab.tokenize_into(text.as_bytes(), &mut tokens, false, false)
                }
            }
        }
        Ok(GenerationPrompt {
            tokens,
            opens_thinking: self.thinks && crate::reasoning::prompt_opens_thinking(&rendered),
        })
    }

    /// Whether to put BOS before a prompt that renders to `text`.
    /// `value` with every string (keys included) escaped like message content.
    fn escape_json(&self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(self.specials.escape(s).into_owned()),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.escape_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.specials.escape(k).into_owned(), self.escape_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn wants_bos(&self, text: &str) -> bool {
        let bos = self.template.bos_token();
        self.add_bos && (bos.is_empty() || !text.starts_with(bos))
    }

    pub fn is_end_of_generation(&self, token: LlamaToken) -> bool {
        self.model.vocab().is_eog(token)
    }

    /// The bytes a generated token stands for (special tokens render as nothing).
    pub fn token_bytes(&self, token: LlamaToken, buf: &mut Vec<u8>) {
        buf.clear();
        self.model
            .vocab()
            .token_to_piece_into(token, buf, false, None::<NonZeroU16>);
    }
}

/// The tokens llama.cpp parses only when asked to: control and unknown tokens.
fn control_tokens(model: &LlamaModel) -> SpecialTokens {
    let vocab = model.vocab();
    SpecialTokens::new(vocab.tokens().filter_map(|token| {
        let attr = vocab.attr(token);
        if !(attr.contains(LlamaTokenAttr::Control) || attr.contains(LlamaTokenAttr::Unknown)) {
            return None;
        }
        let text = vocab.text(token)?.to_str().ok()?;
        Some(Special {
            text: text.to_owned(),
            id: token.0,
            lstrip: attr.contains(LlamaTokenAttr::LStrip),
            rstrip: attr.contains(LlamaTokenAttr::RStrip),
        })
    }))
}

fn piece(model: &LlamaModel, token: LlamaToken) -> String {
    if token.0 < 0 {
        return String::new();
    }
    let bytes = model.vocab().token_to_piece(token, true, None);
    String::from_utf8_lossy(&bytes).into_owned()
}
