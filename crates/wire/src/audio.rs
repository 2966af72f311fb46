//! `/v1/audio/transcriptions` as OpenAI documents it: the multipart form's text fields, read
//! strictly, and the five response formats (`json`, `text`, `verbose_json`, `srt`, `vtt`).

use backend::{TranscriptSegment, Transcription};
use serde::Serialize;

use crate::error::{ApiError, Result};

/// Text fields of the form this endpoint knows (`file` is the upload itself).
pub const TEXT_FIELDS: &[&str] = &[
    "model",
    "language",
    "prompt",
    "response_format",
    "temperature",
    "timestamp_granularities[]",
    "timestamp_granularities",
    "stream",
];

/// How the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    #[default]
    Json,
    Text,
    VerboseJson,
    Srt,
    Vtt,
}

/// The form's text fields as sent, before checking.
#[derive(Debug, Default)]
pub struct TranscriptionForm {
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    response_format: Option<String>,
    temperature: Option<String>,
    granularities: Vec<String>,
    stream: Option<String>,
}

/// A checked transcription request (the file travels beside it).
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptionParams {
    pub model: String,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub format: ResponseFormat,
    pub temperature: f32,
}

impl TranscriptionForm {
    pub fn knows(name: &str) -> bool {
        TEXT_FIELDS.contains(&name)
    }

    /// Records one text field; unknown or repeated fields are refused by name.
    pub fn field(&mut self, name: &str, value: &str) -> Result<()> {
        let slot = match name {
            "model" => &mut self.model,
            "language" => &mut self.language,
            "prompt" => &mut self.prompt,
            "response_format" => &mut self.response_format,
            "temperature" => &mut self.temperature,
            "stream" => &mut self.stream,
            "timestamp_granularities[]" | "timestamp_granularities" => {
                self.granularities.push(value.trim().to_owned());
                return Ok(());
            }
            _ => {
                return Err(ApiError::invalid(
                    name,
                    format!(
                        "Unrecognized form field '{name}'. /v1/audio/transcriptions takes file, \
                         model, language, prompt, response_format, temperature and \
                         timestamp_granularities[]."
                    ),
                ))
            }
        };
        if slot.is_some() {
            return Err(ApiError::invalid(
                name,
                format!("The form field '{name}' is given twice; send it once."),
            ));
        }
        *slot = Some(value.to_owned());
        Ok(())
    }

    pub fn finish(self) -> Result<TranscriptionParams> {
        let model = self
            .model
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    "model",
                    "Missing required parameter: 'model'. Name a speech model (GET /v1/models \
                     lists those with the 'transcriptions' capability).",
                )
            })?;
        let format = match self.response_format.as_deref().map(str::trim) {
            None | Some("") | Some("json") => ResponseFormat::Json,
            Some("text") => ResponseFormat::Text,
            Some("verbose_json") => ResponseFormat::VerboseJson,
            Some("srt") => ResponseFormat::Srt,
            Some("vtt") => ResponseFormat::Vtt,
            Some(other) => {
                return Err(ApiError::invalid(
                    "response_format",
                    format!(
                        "Invalid response_format '{other}': use json, text, verbose_json, srt \
                         or vtt."
                    ),
                ))
            }
        };
        let temperature = match self.temperature.as_deref().map(str::trim) {
            None | Some("") => 0.0,
            Some(t) => t
                .parse::<f32>()
                .ok()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "temperature",
                        format!("Invalid temperature '{t}': a number from 0 to 1."),
                    )
                })?,
        };
        for g in &self.granularities {
            match g.as_str() {
                "segment" => {}
                "word" => {
                    return Err(ApiError::invalid(
                        "timestamp_granularities[]",
                        "Word timestamps are not supported; ask for 'segment'.",
                    ))
                }
                other => {
                    return Err(ApiError::invalid(
                        "timestamp_granularities[]",
                        format!("Invalid timestamp granularity '{other}': use 'segment'."),
                    ))
                }
            }
        }
        if !self.granularities.is_empty() && format != ResponseFormat::VerboseJson {
            return Err(ApiError::invalid(
                "timestamp_granularities[]",
                "timestamp_granularities[] needs response_format 'verbose_json'.",
            ));
        }
        if let Some(s) = self.stream.as_deref().map(str::trim) {
            if s != "false" && !s.is_empty() {
                return Err(ApiError::invalid(
                    "stream",
                    "Streaming transcriptions are not supported: leave 'stream' out.",
                ));
            }
        }
        Ok(TranscriptionParams {
            model,
            language: self
                .language
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
            prompt: self.prompt.filter(|p| !p.trim().is_empty()),
            format,
            temperature,
        })
    }
}

/// `usage` of a transcription: the audio's metered seconds.
#[derive(Debug, Serialize)]
pub struct DurationUsage {
    pub r#type: &'static str,
    pub seconds: u64,
}

#[derive(Debug, Serialize)]
struct JsonView<'a> {
    text: &'a str,
    usage: DurationUsage,
}

#[derive(Debug, Serialize)]
struct SegmentView<'a> {
    id: u32,
    seek: u32,
    start: f64,
    end: f64,
    text: &'a str,
    tokens: &'a [u32],
    temperature: f32,
    avg_logprob: f64,
    compression_ratio: f64,
    no_speech_prob: f64,
}

#[derive(Debug, Serialize)]
struct VerboseView<'a> {
    task: &'static str,
    language: &'a str,
    duration: f64,
    text: &'a str,
    segments: Vec<SegmentView<'a>>,
    usage: DurationUsage,
}

/// The body and its content type.
pub fn render(
    format: ResponseFormat,
    t: &Transcription,
    duration_ms: u64,
    seconds: u64,
) -> (String, &'static str) {
    let usage = DurationUsage {
        r#type: "duration",
        seconds,
    };
    match format {
        ResponseFormat::Json => json(&JsonView {
            text: &t.text,
            usage,
        }),
        ResponseFormat::VerboseJson => json(&VerboseView {
            task: "transcribe",
            language: &t.language,
            duration: duration_ms as f64 / 1000.0,
            text: &t.text,
            segments: t.segments.iter().map(segment_view).collect(),
            usage,
        }),
        ResponseFormat::Text => (format!("{}\n", t.text), "text/plain; charset=utf-8"),
        ResponseFormat::Srt => (subtitles(&t.segments, false), "text/plain; charset=utf-8"),
        ResponseFormat::Vtt => (subtitles(&t.segments, true), "text/vtt; charset=utf-8"),
    }
}

fn json(view: &impl Serialize) -> (String, &'static str) {
    (
        serde_json::to_string(view).unwrap_or_else(|_| "{}".to_owned()),
        "application/json",
    )
}

fn segment_view(s: &TranscriptSegment) -> SegmentView<'_> {
    SegmentView {
        id: s.id,
        seek: s.seek,
        start: s.start,
        end: s.end,
        text: &s.text,
        tokens: &s.tokens,
        temperature: s.temperature,
        avg_logprob: s.avg_logprob,
        compression_ratio: s.compression_ratio,
        no_speech_prob: s.no_speech_prob,
    }
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (WebVTT).
fn timestamp(seconds: f64, vtt: bool) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let sep = if vtt { '.' } else { ',' };
    format!("{h:02}:{m:02}:{s:02}{sep}{ms:03}")
}

fn subtitles(segments: &[TranscriptSegment], vtt: bool) -> String {
    let mut out = String::new();
    if vtt {
        out.push_str("WEBVTT\n\n");
    }
    for (i, s) in segments.iter().enumerate() {
        if !vtt {
            out.push_str(&format!("{}\n", i + 1));
        }
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(s.start, vtt),
            timestamp(s.end, vtt),
            s.text.trim().replace("-->", "->")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> Result<TranscriptionParams> {
        let mut f = TranscriptionForm::default();
        for (k, v) in fields {
            f.field(k, v)?;
        }
        f.finish()
    }

    fn seg(id: u32, start: f64, end: f64, text: &str) -> TranscriptSegment {
        TranscriptSegment {
            id,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![1, 2],
            temperature: 0.0,
            avg_logprob: -0.2,
            compression_ratio: 1.1,
            no_speech_prob: 0.01,
        }
    }

    #[test]
    fn form_fields_are_checked() {
        let p = form(&[("model", "whisper"), ("response_format", "srt")]).unwrap();
        assert_eq!(
            (p.model.as_str(), p.format, p.temperature),
            ("whisper", ResponseFormat::Srt, 0.0)
        );
        assert_eq!(form(&[]).unwrap_err().param(), Some("model"));
        let e = form(&[("model", "w"), ("response_format", "xml")]).unwrap_err();
        assert_eq!(e.param(), Some("response_format"));
        let e = form(&[("model", "w"), ("temperature", "3")]).unwrap_err();
        assert_eq!(e.param(), Some("temperature"));
        let e = form(&[("model", "w"), ("timestamp_granularities[]", "segment")]).unwrap_err();
        assert!(e.message().contains("verbose_json"));
        let ok = form(&[
            ("model", "w"),
            ("response_format", "verbose_json"),
            ("timestamp_granularities[]", "segment"),
        ]);
        assert!(ok.is_ok());
        let e = form(&[("model", "w"), ("model", "x")]).unwrap_err();
        assert!(e.message().contains("twice"));
        let e = form(&[("model", "w"), ("voice", "alloy")]).unwrap_err();
        assert_eq!(e.param(), Some("voice"));
    }

    #[test]
    fn subtitles_are_well_formed() {
        let t = Transcription {
            text: "Hello there. General Kenobi.".into(),
            language: "english".into(),
            segments: vec![
                seg(0, 0.0, 1.5, " Hello there."),
                seg(1, 1.5, 3725.25, " General Kenobi."),
            ],
        };
        let (srt, _) = render(ResponseFormat::Srt, &t, 3_725_250, 3726);
        assert_eq!(
            srt,
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 01:02:05,250\nGeneral Kenobi.\n\n"
        );
        let (vtt, ct) = render(ResponseFormat::Vtt, &t, 3_725_250, 3726);
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n"));
        assert!(ct.starts_with("text/vtt"));
        let (json, _) = render(ResponseFormat::VerboseJson, &t, 3_725_250, 3726);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["duration"], 3725.25);
        assert_eq!(v["usage"]["seconds"], 3726);
        assert_eq!(v["segments"][1]["end"], 3725.25);
        let (text, _) = render(ResponseFormat::Text, &t, 0, 0);
        assert_eq!(text, "Hello there. General Kenobi.\n");
    }
}
