//! Decoding and resampling on files built here: WAV in several shapes, refusals for what is
//! not audio, too long or of an unsupported codec.

use super::*;

/// A 16-bit PCM WAV of `samples` (interleaved) at `rate` with `channels`.
pub(crate) fn wav(samples: &[f32], rate: u32, channels: u16) -> Vec<u8> {
    wav_with_format(samples, rate, channels, 1)
}

fn wav_with_format(samples: &[f32], rate: u32, channels: u16, format: u16) -> Vec<u8> {
    let data: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

fn sine(freq: f32, rate: u32, seconds: f32) -> Vec<f32> {
    let n = (rate as f32 * seconds) as usize;
    (0..n)
        .map(|i| 0.5 * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
        .collect()
}

/// The amplitude of `freq` in `x` (a single-bin DFT), relative to a full-scale sine's 0.5.
fn amplitude(x: &[f32], freq: f32, rate: u32) -> f32 {
    let (mut re, mut im) = (0f64, 0f64);
    for (i, s) in x.iter().enumerate() {
        let w = 2.0 * std::f64::consts::PI * f64::from(freq) * i as f64 / f64::from(rate);
        re += f64::from(*s) * w.cos();
        im += f64::from(*s) * w.sin();
    }
    (2.0 * (re * re + im * im).sqrt() / x.len() as f64) as f32
}

#[test]
fn wav_at_16k_decodes_unchanged() {
    let x = sine(440.0, 16_000, 1.0);
    let a = decode(wav(&x, 16_000, 1), Some("wav"), 60).unwrap();
    assert_eq!(a.samples.len(), 16_000);
    assert_eq!(a.duration_ms, 1000);
    assert_eq!(a.seconds(), 1);
    assert!(x.iter().zip(&a.samples).all(|(p, q)| (p - q).abs() < 1e-3));
}

#[test]
fn stereo_44k1_is_mixed_down_and_resampled() {
    let left = sine(440.0, 44_100, 2.5);
    let right = sine(1000.0, 44_100, 2.5);
    let inter: Vec<f32> = left
        .iter()
        .zip(&right)
        .flat_map(|(l, r)| [*l, *r])
        .collect();
    let a = decode(wav(&inter, 44_100, 2), None, 60).unwrap();
    assert_eq!((a.source_rate, a.channels), (44_100, 2));
    assert_eq!(a.duration_ms, 2500);
    assert_eq!(a.seconds(), 3, "2.5 s is metered as 3");
    assert_eq!(a.samples.len(), 40_000);
    // Each tone keeps half its amplitude (mono mix), in the same place in time.
    let mid = &a.samples[8_000..32_000];
    assert!((amplitude(mid, 440.0, 16_000) - 0.25).abs() < 0.01);
    assert!((amplitude(mid, 1000.0, 16_000) - 0.25).abs() < 0.01);
}

#[test]
fn resampling_removes_what_16k_cannot_hold() {
    // 11 kHz is above the 8 kHz Nyquist frequency of 16 kHz: it must not fold back to 5 kHz.
    let x = sine(11_000.0, 48_000, 1.0);
    let y = resample(&x, 48_000, 16_000).unwrap();
    assert_eq!(y.len(), 16_000);
    assert!(amplitude(&y, 5_000.0, 16_000) < 0.01);
    // A tone in band keeps its level and phase (no delay left in).
    let x = sine(1000.0, 48_000, 1.0);
    let y = resample(&x, 48_000, 16_000).unwrap();
    let reference = sine(1000.0, 16_000, 1.0);
    let err: f32 = y[1000..15_000]
        .iter()
        .zip(&reference[1000..15_000])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(err < 0.01, "max error {err}");
}

#[test]
fn refusals_say_what_is_wrong() {
    assert_eq!(decode(Vec::new(), None, 60), Err(AudioError::Empty));
    let text = b"this is not audio at all, just text in a file".repeat(20);
    assert!(matches!(
        decode(text, Some("mp3"), 60),
        Err(AudioError::NotAudio(_))
    ));
    let long = wav(&vec![0.0; 16_000 * 5], 16_000, 1);
    assert_eq!(
        decode(long, None, 4),
        Err(AudioError::TooLong { limit_seconds: 4 })
    );
    // A WAV whose format tag is GSM 6.10 (0x31): a container we read, a codec we do not.
    let gsm = wav_with_format(&sine(440.0, 8_000, 0.5), 8_000, 1, 0x31);
    let err = decode(gsm, Some("wav"), 60).unwrap_err();
    assert!(matches!(err, AudioError::UnsupportedCodec(_)), "{err:?}");
    assert!(err.to_string().contains("codec"));
    // A WAV header cut short.
    let cut = wav(&sine(440.0, 8_000, 0.5), 8_000, 1)[..30].to_vec();
    assert!(decode(cut, None, 60).is_err());
}
