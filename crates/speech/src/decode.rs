//! Transcribing a whole recording: 30-second windows, each encoded once and decoded token by
//! token with Whisper's rules, as faster-whisper (CTranslate2) does it, so the two engines
//! agree on the same weights:
//! - the prompt is `<|startofprev|>` + the text so far (at most 223 tokens; the caller's
//!   `prompt` first) + `<|startoftranscript|>` + language + `<|transcribe|>`;
//! - the configured tokens are suppressed, and at the first step the blank and end tokens;
//! - timestamp rules: the first token is a timestamp no later than 1 s; timestamps come in
//!   pairs (except before the end) and never decrease; when the timestamps together are more
//!   likely than any text token, a timestamp is taken;
//! - at most 224 new tokens per window; a window judged silence (no-speech probability above
//!   0.6 and mean log-probability below −1) is skipped;
//! - the window's tokens are cut into segments at consecutive timestamps, and the next window
//!   starts at the last complete segment's end (or after the window when it ended cleanly).

use backend::{TranscriptSegment, Transcription};
use candle_core::Tensor;

use crate::mel::{self, WINDOW_FRAMES};
use crate::model::Whisper;
use crate::tokens::{self, Vocab};
use crate::SpeechError;

/// Seconds per timestamp token and per mel frame.
const TIME_PRECISION: f64 = 0.02;
const FRAME_SECONDS: f64 = 0.01;
/// Mel frames per timestamp step (the encoder halves the frame rate).
const INPUT_STRIDE: usize = 2;
const MAX_INITIAL_TIMESTAMP_INDEX: u32 = 50;
const NO_SPEECH_THRESHOLD: f64 = 0.6;
const LOGPROB_THRESHOLD: f64 = -1.0;

/// What a transcription is asked to do.
pub struct Options<'a> {
    /// ISO code; `None`: detected from the first window.
    pub language: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub temperature: f32,
    /// Checked between decoding steps: `true` ends the work (the caller left).
    pub cancelled: &'a (dyn Fn() -> bool + Sync),
}

/// The model, tokenizer and filters of one loaded speech model.
#[derive(Clone)]
pub struct Transcriber {
    pub model: Whisper,
    pub vocab: Vocab,
    pub filters: Vec<f32>,
    pub suppress: Vec<u32>,
    pub suppress_begin: Vec<u32>,
    rng: u64,
}

struct Decoded {
    tokens: Vec<u32>,
    sum_logprob: f64,
    no_speech_prob: f64,
}

fn model_err(e: candle_core::Error) -> SpeechError {
    SpeechError::Inference(e.to_string())
}

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|l| l - lse).collect()
}

impl Transcriber {
    pub fn new(model: Whisper, vocab: Vocab, suppress: Vec<u32>, suppress_begin: Vec<u32>) -> Self {
        let filters = mel::mel_filters(16_000, mel::N_FFT, model.config.num_mel_bins);
        Self {
            model,
            vocab,
            filters,
            suppress,
            suppress_begin,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Another transcriber over the same weights (tensors are shared), with its own caches.
    pub fn fork(&self) -> Self {
        let mut t = self.clone();
        t.model.decoder.reset();
        t
    }

    /// Transcribes 16 kHz mono `samples`.
    pub fn transcribe(
        &mut self,
        samples: &[f32],
        opts: &Options<'_>,
    ) -> Result<Transcription, SpeechError> {
        let n_mels = self.model.config.num_mel_bins;
        let (mel, frames) = mel::log_mel(samples, &self.filters, n_mels);
        let content_frames = frames.saturating_sub(1);
        let mut all_tokens: Vec<u32> = match opts.prompt.filter(|p| !p.trim().is_empty()) {
            Some(p) => self.vocab.encode_prompt(p)?,
            None => Vec::new(),
        };
        let mut language: Option<String> = opts.language.map(str::to_owned);
        let mut segments: Vec<TranscriptSegment> = Vec::new();
        let mut seek = 0usize;
        let mut prompt_reset_since = 0usize;
        while seek < content_frames {
            if (opts.cancelled)() {
                return Err(SpeechError::Cancelled);
            }
            let time_offset = seek as f64 * FRAME_SECONDS;
            let segment_size = WINDOW_FRAMES.min(content_frames - seek);
            let segment_duration = segment_size as f64 * FRAME_SECONDS;
            let window = mel::window(&mel, n_mels, frames, seek, segment_size);
            let xa = self.model.encode(window).map_err(model_err)?;
            let lang = match &language {
                Some(l) => l.clone(),
                None => {
                    let l = self.detect_language(&xa)?;
                    language = Some(l.clone());
                    l
                }
            };
            let mut prompt = Vec::new();
            let previous = &all_tokens[prompt_reset_since.min(all_tokens.len())..];
            if !previous.is_empty() {
                let keep = self.model.decoder.max_positions / 2 - 1;
                prompt.push(self.vocab.sot_prev);
                prompt.extend_from_slice(&previous[previous.len().saturating_sub(keep)..]);
            }
            prompt.push(self.vocab.sot);
            if self.vocab.multilingual {
                let id = self.vocab.language(&lang).ok_or_else(|| {
                    SpeechError::Invalid(format!("this model does not know the language '{lang}'"))
                })?;
                prompt.extend([id, self.vocab.transcribe]);
            }
            let decoded = self.generate(&xa, &prompt, opts)?;
            let avg_logprob = decoded.sum_logprob / (decoded.tokens.len() + 1) as f64;
            if decoded.no_speech_prob > NO_SPEECH_THRESHOLD && avg_logprob < LOGPROB_THRESHOLD {
                seek += segment_size;
                continue;
            }
            let previous_seek = seek;
            let (pieces, next) = self.split(
                &decoded.tokens,
                time_offset,
                segment_size,
                segment_duration,
                seek,
            );
            seek = next;
            for (start, end, toks) in pieces {
                let text = self.vocab.decode(&toks);
                if start == end || text.trim().is_empty() {
                    continue;
                }
                all_tokens.extend_from_slice(&toks);
                segments.push(TranscriptSegment {
                    id: segments.len() as u32,
                    seek: previous_seek as u32,
                    start: round2(start),
                    end: round2(end),
                    compression_ratio: compression_ratio(text.trim()),
                    text,
                    tokens: toks,
                    temperature: opts.temperature,
                    avg_logprob,
                    no_speech_prob: decoded.no_speech_prob,
                });
            }
            if opts.temperature > 0.5 {
                prompt_reset_since = all_tokens.len();
            }
        }
        let text: String = segments.iter().map(|s| s.text.as_str()).collect();
        let code = language.unwrap_or_else(|| "en".into());
        Ok(Transcription {
            text: text.trim().to_owned(),
            language: tokens::language_name(&code),
            segments,
        })
    }

    /// The most likely language token after `<|startoftranscript|>`.
    fn detect_language(&mut self, xa: &Tensor) -> Result<String, SpeechError> {
        if !self.vocab.multilingual || self.vocab.languages.is_empty() {
            return Ok("en".into());
        }
        let dec = &mut self.model.decoder;
        dec.reset();
        let logits = dec.feed(&[self.vocab.sot], xa, &[0]).map_err(model_err)?;
        let logits: Vec<f32> = logits
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(model_err)?;
        let best = self
            .vocab
            .languages
            .iter()
            .max_by(|a, b| logits[a.1 as usize].total_cmp(&logits[b.1 as usize]))
            .map_or("en", |(c, _)| c);
        Ok(best.to_owned())
    }

    fn generate(
        &mut self,
        xa: &Tensor,
        prompt: &[u32],
        opts: &Options<'_>,
    ) -> Result<Decoded, SpeechError> {
        let v = &self.vocab;
        let (eot, ts_begin) = (v.eot, v.timestamp_begin);
        let sot_index = prompt.iter().position(|t| *t == v.sot).unwrap_or(0);
        let max_positions = self.model.decoder.max_positions;
        let max_new = (max_positions / 2).min(max_positions.saturating_sub(prompt.len() - 1));
        let dec = &mut self.model.decoder;
        dec.reset();
        let last = prompt.len() - 1;
        let logits = dec
            .feed(prompt, xa, &[sot_index, last])
            .map_err(model_err)?;
        let rows: Vec<Vec<f32>> = logits.to_vec2().map_err(model_err)?;
        let no_speech_prob = match (v.no_speech, rows.first()) {
            (Some(id), Some(row)) if sot_index != last => {
                f64::from(log_softmax(row)[id as usize]).exp()
            }
            _ => 0.0,
        };
        let mut logits = rows.into_iter().last().unwrap_or_default();
        let mut out: Vec<u32> = Vec::new();
        let mut sum_logprob = 0f64;
        let mut first_no_speech = None;
        for step in 0..max_new {
            if step > 0 && (opts.cancelled)() {
                return Err(SpeechError::Cancelled);
            }
            if step == 0 && sot_index == last {
                if let Some(id) = v.no_speech {
                    first_no_speech = Some(f64::from(log_softmax(&logits)[id as usize]).exp());
                }
            }
            for t in &self.suppress {
                if let Some(l) = logits.get_mut(*t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            if step == 0 {
                for t in &self.suppress_begin {
                    if let Some(l) = logits.get_mut(*t as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
            apply_timestamp_rules(&mut logits, &out, eot, v.no_timestamps, ts_begin);
            let logprobs = log_softmax(&logits);
            let token = if opts.temperature > 0.0 {
                self.rng = self
                    .rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                sample(&logits, opts.temperature, self.rng)
            } else {
                argmax(&logits)
            };
            sum_logprob += f64::from(logprobs[token as usize]);
            if token == eot {
                break;
            }
            out.push(token);
            if step + 1 == max_new {
                break;
            }
            let next = self
                .model
                .decoder
                .feed(&[token], xa, &[0])
                .map_err(model_err)?;
            logits = next
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(model_err)?;
        }
        Ok(Decoded {
            tokens: out,
            sum_logprob,
            no_speech_prob: first_no_speech.unwrap_or(no_speech_prob),
        })
    }

    /// Cuts a window's tokens into (start, end, tokens) segments; returns them and the next
    /// seek.
    fn split(
        &self,
        tokens: &[u32],
        time_offset: f64,
        segment_size: usize,
        segment_duration: f64,
        seek: usize,
    ) -> (Vec<(f64, f64, Vec<u32>)>, usize) {
        let tb = self.vocab.timestamp_begin;
        let is_ts = |t: u32| t >= tb;
        let n = tokens.len();
        let single_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
        let consecutive: Vec<usize> = (1..n)
            .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
            .collect();
        let time = |t: u32| time_offset + f64::from(t - tb) * TIME_PRECISION;
        let mut out = Vec::new();
        if !consecutive.is_empty() {
            let mut slices = consecutive;
            if single_ending {
                slices.push(n);
            }
            let mut last = 0;
            for &cut in &slices {
                let piece = &tokens[last..cut];
                if let (Some(&a), Some(&b)) = (piece.first(), piece.last()) {
                    if is_ts(a) && is_ts(b) {
                        out.push((time(a), time(b), piece.to_vec()));
                    }
                }
                last = cut;
            }
            let next = if single_ending {
                seek + segment_size
            } else {
                let last_ts = tokens[last - 1].saturating_sub(tb) as usize;
                seek + last_ts * INPUT_STRIDE
            };
            (out, next)
        } else {
            let mut duration = segment_duration;
            if let Some(&t) = tokens.iter().rev().find(|t| is_ts(**t)) {
                if t != tb {
                    duration = f64::from(t - tb) * TIME_PRECISION;
                }
            }
            out.push((time_offset, time_offset + duration, tokens.to_vec()));
            (out, seek + segment_size)
        }
    }
}

/// Whisper's timestamp rules on one step's logits, given the tokens sampled so far.
pub(crate) fn apply_timestamp_rules(
    logits: &mut [f32],
    sampled: &[u32],
    eot: u32,
    no_timestamps: u32,
    ts_begin: u32,
) {
    let n = logits.len();
    let (eot, ts) = ((eot as usize).min(n), (ts_begin as usize).min(n));
    let ninf = f32::NEG_INFINITY;
    if let Some(l) = logits.get_mut(no_timestamps as usize) {
        *l = ninf;
    }
    let Some(&last) = sampled.last() else {
        logits[..ts].fill(ninf);
        let max_initial = ts + MAX_INITIAL_TIMESTAMP_INDEX as usize + 1;
        if max_initial < n {
            logits[max_initial..].fill(ninf);
        }
        return;
    };
    let mut check = true;
    if last >= ts_begin {
        let penultimate = sampled.len().checked_sub(2).map_or(last, |i| sampled[i]);
        if penultimate >= ts_begin {
            logits[ts..].fill(ninf);
            check = false;
        } else {
            logits[..eot].fill(ninf);
        }
    }
    if let Some(&prev_ts) = sampled.iter().rev().find(|t| **t >= ts_begin) {
        logits[ts..(prev_ts as usize).clamp(ts, n)].fill(ninf);
    }
    if check && ts < n {
        let lp = log_softmax(logits);
        let max_text = lp[..ts].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let ts_max = lp[ts..].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let ts_sum = if ts_max == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            ts_max
                + lp[ts..]
                    .iter()
                    .map(|l| (l - ts_max).exp())
                    .sum::<f32>()
                    .ln()
        };
        if ts_sum > max_text {
            logits[..ts].fill(ninf);
        }
    }
}

fn argmax(logits: &[f32]) -> u32 {
    logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

/// Draws from softmax(logits / temperature) with a uniform in [0, 1) from `bits`.
fn sample(logits: &[f32], temperature: f32, bits: u64) -> u32 {
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let lp = log_softmax(&scaled);
    let mut u = (bits >> 11) as f64 / (1u64 << 53) as f64;
    for (i, l) in lp.iter().enumerate() {
        u -= f64::from(*l).exp();
        if u <= 0.0 {
            return i as u32;
        }
    }
    argmax(logits)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// gzip-style compression ratio of `text` (bytes / deflated bytes), as Whisper reports it.
fn compression_ratio(text: &str) -> f64 {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    if z.write_all(text.as_bytes()).is_err() {
        return 0.0;
    }
    match z.finish() {
        Ok(c) if !c.is_empty() => text.len() as f64 / c.len() as f64,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::apply_timestamp_rules;

    const EOT: u32 = 5;
    const NO_TS: u32 = 6;
    const TS: u32 = 7;

    fn allowed(logits: &[f32]) -> Vec<usize> {
        (0..logits.len())
            .filter(|i| logits[*i].is_finite())
            .collect()
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let mut l = vec![0.0; 70];
        apply_timestamp_rules(&mut l, &[], EOT, NO_TS, TS);
        assert_eq!(allowed(&l), (7..=57).collect::<Vec<_>>());
    }

    #[test]
    fn timestamps_pair_and_never_decrease() {
        // After text then a timestamp: only another timestamp (≥ it) or the end.
        let mut l = vec![0.0; 20];
        l[EOT as usize] = 5.0;
        apply_timestamp_rules(&mut l, &[TS + 2, 1, TS + 4], EOT, NO_TS, TS);
        assert_eq!(allowed(&l), [5, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
        // After two timestamps: text only (no timestamp).
        let mut l = vec![0.0; 20];
        apply_timestamp_rules(&mut l, &[TS, 1, TS + 4, TS + 4], EOT, NO_TS, TS);
        assert_eq!(allowed(&l), [0, 1, 2, 3, 4, 5]);
        // After text, when timestamps together outweigh every text token: a timestamp.
        let mut l = vec![0.0; 20];
        l[1] = 1.0;
        apply_timestamp_rules(&mut l, &[TS, 1], EOT, NO_TS, TS);
        assert_eq!(allowed(&l), (7..20).collect::<Vec<_>>());
        // …and not when one text token is far likelier.
        let mut l = vec![0.0; 20];
        l[1] = 10.0;
        apply_timestamp_rules(&mut l, &[TS, 1], EOT, NO_TS, TS);
        assert!(l[1].is_finite() && l[NO_TS as usize].is_infinite());
    }
}
