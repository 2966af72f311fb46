//! Server-sent event framing, and the [`Encoder`] each streamed API implements to write its
//! frames. The driver that reads a request's events and sends the frames is the gateway's.

use backend::{FinishReason, TokenLogprob, Usage};
use serde_json::Value;

use crate::error::ApiError;
use crate::tools::ToolCallView;
use crate::{ChunkFormat, ChunkUsage, ResponseMeta, UsageView};

/// One `data: …` event.
pub fn frame(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    // Serializing a `Value` cannot fail.
    if serde_json::to_writer(&mut *out, data).is_err() {
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

/// One `event: NAME` + `data: …` event (Anthropic's and the Responses API's streams).
pub fn named_frame(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    frame(out, data);
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The comment a queued request's stream carries when its place changes.
pub fn queue_comment(out: &mut Vec<u8>, position: usize, eta_ms: u64) {
    out.extend_from_slice(format!(": queue position={position} eta_ms={eta_ms}\n\n").as_bytes());
}

/// What usage a stream's chunks carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageOptions {
    /// `stream_options.include_usage`: a last chunk with the usage (`null` on the others).
    pub include_usage: bool,
    /// `stream_options.continuous_usage_stats`: the usage so far on every chunk.
    pub continuous: bool,
}

/// Writes one API's SSE frames for a stream's events. The driver (the gateway's `sse::respond`) reads the
/// events, keeps the usage so far, sends queue comments and stops reading at the end.
pub trait Encoder: Send + 'static {
    /// Frames sent before any event is read (OpenAI's chat sends the assistant role).
    fn open(&mut self, out: &mut Vec<u8>) {
        let _ = out;
    }
    /// The backend counted the prompt.
    fn admitted(&mut self, out: &mut Vec<u8>, prompt_tokens: u32) {
        let _ = (out, prompt_tokens);
    }
    /// A piece of the answer's text (never empty); `so_far` counts it.
    fn text(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage);
    /// The events that follow are answer `index`'s (a request for several answers, `n`).
    fn select(&mut self, index: u32) {
        let _ = index;
    }
    /// The selected answer ended (a request for several answers; the stream's own `finish`
    /// follows once all have).
    fn answer_finished(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage) {
        let _ = (out, reason, usage);
    }
    /// Log-probabilities of the tokens the next text releases (only when asked for).
    fn logprobs(&mut self, tokens: Vec<TokenLogprob>) {
        let _ = tokens;
    }
    /// A piece of the model's reasoning (never empty); `so_far` counts it.
    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage);
    /// A whole tool call, the `index`th of the answer.
    fn tool_call(&mut self, out: &mut Vec<u8>, index: u32, call: ToolCallView, so_far: Usage);
    /// The end of the answer; the stream ends after this.
    fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage);
    /// An error after the stream started; the stream ends after this.
    fn fail(&mut self, out: &mut Vec<u8>, err: &ApiError);
    /// Work that must be done after `finish` and before its frames are sent (a stored
    /// response is saved before the client reads `response.completed`).
    fn settle(&mut self) -> Option<futures::future::BoxFuture<'static, ()>> {
        None
    }
}

/// OpenAI's streams: `data:` chunks in `F`'s shape, then `data: [DONE]` (not after an error).
pub struct OpenAi<F> {
    format: F,
    meta: ResponseMeta,
    usage: UsageOptions,
    /// The answer the events are about (`n` > 1), and whether there are several.
    index: u32,
    several: bool,
    /// Per answer, log-probabilities of tokens whose text has not been sent yet.
    logprobs: Vec<Vec<TokenLogprob>>,
}

impl<F: ChunkFormat> OpenAi<F> {
    pub fn new(format: F, meta: ResponseMeta, usage: UsageOptions) -> Self {
        Self {
            format,
            meta,
            usage,
            index: 0,
            several: false,
            logprobs: Vec::new(),
        }
    }

    fn pending_logprobs(&mut self) -> &mut Vec<TokenLogprob> {
        let index = self.index as usize;
        if self.logprobs.len() <= index {
            self.logprobs.resize_with(index + 1, Vec::new);
        }
        &mut self.logprobs[index]
    }

    fn chunk_usage(&self, so_far: Usage) -> ChunkUsage {
        if self.usage.continuous {
            ChunkUsage::Some(UsageView::from(so_far))
        } else if self.usage.include_usage {
            ChunkUsage::Null
        } else {
            ChunkUsage::Omit
        }
    }
}

impl<F: ChunkFormat> Encoder for OpenAi<F> {
    fn open(&mut self, out: &mut Vec<u8>) {
        let usage = self.chunk_usage(Usage::default());
        if let Some(opening) = self.format.opening(&self.meta, usage) {
            frame(out, &opening);
        }
    }

    fn select(&mut self, index: u32) {
        self.index = index;
        self.several = true;
    }

    fn answer_finished(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage) {
        let chunk_usage = self.chunk_usage(usage);
        let data = self
            .format
            .finish(&self.meta, self.index, reason, chunk_usage);
        frame(out, &data);
    }

    fn logprobs(&mut self, tokens: Vec<TokenLogprob>) {
        self.pending_logprobs().extend(tokens);
    }

    fn text(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage) {
        let usage = self.chunk_usage(so_far);
        let logprobs = std::mem::take(self.pending_logprobs());
        let data = self
            .format
            .text(&self.meta, self.index, text, &logprobs, usage);
        frame(out, &data);
    }

    fn reasoning(&mut self, out: &mut Vec<u8>, text: &str, so_far: Usage) {
        // Log-probabilities are reported for the answer's tokens only.
        self.pending_logprobs().clear();
        let usage = self.chunk_usage(so_far);
        if let Some(data) = self.format.reasoning(&self.meta, self.index, text, usage) {
            frame(out, &data);
        }
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, index: u32, call: ToolCallView, so_far: Usage) {
        self.pending_logprobs().clear();
        let usage = self.chunk_usage(so_far);
        let data = self
            .format
            .tool_call(&self.meta, self.index, index, call, usage);
        if let Some(data) = data {
            frame(out, &data);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>, reason: FinishReason, usage: Usage) {
        let chunk_usage = self.chunk_usage(usage);
        // Several answers finished one by one (`answer_finished`).
        if !self.several {
            frame(out, &self.format.finish(&self.meta, 0, reason, chunk_usage));
        }
        if self.usage.include_usage {
            frame(out, &self.format.usage(&self.meta, UsageView::from(usage)));
        }
        out.extend_from_slice(DONE);
    }

    fn fail(&mut self, out: &mut Vec<u8>, err: &ApiError) {
        let body = serde_json::to_value(err.body()).unwrap_or(Value::Null);
        frame(out, &body);
    }
}
