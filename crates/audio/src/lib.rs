//! Audio input for speech models: a file's bytes (WAV, MP3, FLAC, Ogg Vorbis; the container is
//! sniffed, the file name's extension only hints) decoded with `symphonia`, mixed down to mono
//! and resampled to 16 kHz, the rate Whisper was trained at.
//!
//! Resampling uses `rubato`'s FFT resampler (band-limited: the signal is low-passed below the
//! new Nyquist frequency before it is decimated). A hand-written linear interpolation would fold
//! everything between 8 kHz and the source's Nyquist frequency back into the speech band as
//! aliasing, which a speech model hears as noise.
//!
//! Every refusal says what is wrong and what to send instead; nothing here panics on input.

mod resample;

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

pub use resample::resample;

/// The sample rate of [`Audio::samples`].
pub const SAMPLE_RATE: u32 = 16_000;

/// The formats this crate decodes, for messages.
pub const FORMATS: &str = "WAV (PCM, A-law, µ-law, ADPCM), MP3, FLAC or Ogg Vorbis";

/// Decoded audio: 16 kHz mono samples in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    /// The duration of the source, in milliseconds.
    pub duration_ms: u64,
    /// The source's sample rate and channel count.
    pub source_rate: u32,
    pub channels: usize,
}

impl Audio {
    /// Whole seconds, rounded up: what a request is metered by.
    pub fn seconds(&self) -> u64 {
        self.duration_ms.div_ceil(1000)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    #[error("The audio file is empty. Send a {FORMATS} file.")]
    Empty,
    #[error("The file is not audio this server can read ({0}). Send a {FORMATS} file.")]
    NotAudio(String),
    #[error("The audio uses a codec this server cannot decode ({0}). Convert it to {FORMATS}.")]
    UnsupportedCodec(String),
    #[error("The audio is longer than {limit_seconds} s, the longest this server transcribes in one request. Split it into shorter files.")]
    TooLong { limit_seconds: u64 },
    #[error("The audio file is damaged and cannot be decoded: {0}.")]
    Corrupt(String),
    #[error("The audio file has no sound: it decoded to zero samples.")]
    NoSamples,
}

/// Decodes `bytes` (a whole file; `extension` from its name, if any, as a hint) to 16 kHz mono,
/// refusing audio longer than `max_seconds`.
pub fn decode(
    bytes: Vec<u8>,
    extension: Option<&str>,
    max_seconds: u64,
) -> Result<Audio, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let (mono, rate, channels) = decode_mono(bytes, extension, max_seconds)?;
    if mono.is_empty() {
        return Err(AudioError::NoSamples);
    }
    let duration_ms = (mono.len() as u64 * 1000).div_ceil(u64::from(rate));
    let samples = resample(&mono, rate, SAMPLE_RATE).map_err(AudioError::Corrupt)?;
    Ok(Audio {
        samples,
        duration_ms,
        source_rate: rate,
        channels,
    })
}

fn unsupported(e: SymError) -> AudioError {
    match e {
        SymError::Unsupported(what) if what.contains("no suitable format reader") => {
            AudioError::NotAudio("no known container or header".into())
        }
        SymError::Unsupported(what) => AudioError::UnsupportedCodec(what.to_owned()),
        SymError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::NotAudio("it ends before a complete header".into())
        }
        SymError::IoError(e) => AudioError::Corrupt(e.to_string()),
        SymError::DecodeError(what) => AudioError::NotAudio(what.to_owned()),
        other => AudioError::Corrupt(other.to_string()),
    }
}

/// Decodes to interleaved-then-averaged mono at the source's rate.
fn decode_mono(
    bytes: Vec<u8>,
    extension: Option<&str>,
    max_seconds: u64,
) -> Result<(Vec<f32>, u32, usize), AudioError> {
    let stream = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(unsupported)?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::NotAudio("it has no audio track".into()))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(_) => AudioError::UnsupportedCodec(codec_name(&params)),
            other => unsupported(other),
        })?;
    let mut rate = params.sample_rate.unwrap_or(0);
    if let (Some(frames), true) = (params.n_frames, rate > 0) {
        if frames > max_seconds.saturating_mul(u64::from(rate)) {
            return Err(AudioError::TooLong {
                limit_seconds: max_seconds,
            });
        }
    }
    let mut mono: Vec<f32> = Vec::new();
    let mut channels = params.channels.map_or(0, |c| c.count());
    let mut buf: Option<SampleBuffer<f32>> = None;
    let mut decoded_any = false;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            // A damaged tail after good audio ends the stream, as players do.
            Err(_) if decoded_any => break,
            Err(e) => return Err(unsupported(e)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A damaged frame is skipped, as players do.
            Err(SymError::DecodeError(_)) => continue,
            Err(SymError::Unsupported(_)) => {
                return Err(AudioError::UnsupportedCodec(codec_name(&params)))
            }
            Err(e) => return Err(unsupported(e)),
        };
        decoded_any = true;
        let spec = *decoded.spec();
        rate = spec.rate;
        channels = spec.channels.count().max(1);
        let frames = decoded.frames();
        if buf
            .as_ref()
            .is_none_or(|b| b.capacity() < frames * channels)
        {
            buf = Some(SampleBuffer::<f32>::new(decoded.capacity() as u64, spec));
        }
        let Some(b) = buf.as_mut() else { continue };
        b.copy_interleaved_ref(decoded);
        let scale = 1.0 / channels as f32;
        mono.extend(
            b.samples()
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
        if rate > 0 && mono.len() as u64 > max_seconds.saturating_mul(u64::from(rate)) {
            return Err(AudioError::TooLong {
                limit_seconds: max_seconds,
            });
        }
    }
    if !decoded_any {
        return Err(AudioError::NotAudio(
            "no audio frame could be decoded".into(),
        ));
    }
    if rate == 0 {
        return Err(AudioError::Corrupt(
            "it does not say its sample rate".into(),
        ));
    }
    Ok((mono, rate, channels))
}

fn codec_name(params: &symphonia::core::codecs::CodecParameters) -> String {
    use symphonia::core::codecs as c;
    let known = [
        (c::CODEC_TYPE_OPUS, "Opus"),
        (c::CODEC_TYPE_AAC, "AAC"),
        (c::CODEC_TYPE_ALAC, "ALAC"),
        (c::CODEC_TYPE_SPEEX, "Speex"),
        (c::CODEC_TYPE_EAC3, "E-AC-3"),
        (c::CODEC_TYPE_DCA, "DTS"),
        (c::CODEC_TYPE_WAVPACK, "WavPack"),
        (c::CODEC_TYPE_MUSEPACK, "Musepack"),
        (c::CODEC_TYPE_ATRAC3, "ATRAC3"),
    ];
    if let Some((_, name)) = known.iter().find(|(t, _)| *t == params.codec) {
        return (*name).to_owned();
    }
    symphonia::default::get_codecs()
        .get_codec(params.codec)
        .map_or_else(
            || format!("codec id {}", params.codec),
            |d| d.short_name.to_owned(),
        )
}

#[cfg(test)]
mod tests;
