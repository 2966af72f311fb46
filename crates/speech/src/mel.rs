//! Whisper's log-mel features, computed as faster-whisper computes them (so both engines see
//! the same input): the signal padded with 160 zeros, a centred STFT (reflect padding, a
//! periodic Hann window of 400, hop 160), power spectra of all frames but the last, Slaney mel
//! filters, `log10` clamped at 1e-10, floored at the maximum − 8 and scaled as `(x + 4) / 4`.

use realfft::RealFftPlanner;

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Frames in one 30-second window.
pub const WINDOW_FRAMES: usize = 3000;

/// Slaney-style mel filters (`librosa.filters.mel(sr, n_fft, n_mels)`, area-normalised):
/// `n_mels` rows of `n_fft / 2 + 1` weights.
pub fn mel_filters(sample_rate: usize, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..bins)
        .map(|i| i as f64 * sample_rate as f64 / n_fft as f64)
        .collect();
    // Mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = (6.4f64).ln() / 27.0;
    let hz_to_mel = |f: f64| {
        if f >= min_log_hz {
            min_log_mel + (f / min_log_hz).ln() / logstep
        } else {
            f / f_sp
        }
    };
    let mel_to_hz = |m: f64| {
        if m >= min_log_mel {
            min_log_hz * (logstep * (m - min_log_mel)).exp()
        } else {
            f_sp * m
        }
    };
    let max_mel = hz_to_mel(sample_rate as f64 / 2.0);
    let points: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut weights = vec![0f32; n_mels * bins];
    for m in 0..n_mels {
        let (lo, mid, hi) = (points[m], points[m + 1], points[m + 2]);
        let norm = 2.0 / (hi - lo);
        for (k, f) in fft_freqs.iter().enumerate() {
            let lower = (f - lo) / (mid - lo);
            let upper = (hi - f) / (hi - mid);
            weights[m * bins + k] = (lower.min(upper).max(0.0) * norm) as f32;
        }
    }
    weights
}

/// Log-mel features of 16 kHz `samples`: `n_mels` rows (row-major) of `frames` columns,
/// where `frames = (len + 160) / 160`. Returns the data and `frames`.
pub fn log_mel(samples: &[f32], filters: &[f32], n_mels: usize) -> (Vec<f32>, usize) {
    let bins = N_FFT / 2 + 1;
    // faster-whisper pads 160 zeros, then the STFT pads n_fft/2 on both sides by reflection.
    let mut x: Vec<f64> = samples.iter().map(|s| f64::from(*s)).collect();
    x.extend(std::iter::repeat_n(0.0, HOP));
    let pad = N_FFT / 2;
    let n = x.len();
    let reflect = |i: isize| -> f64 {
        // numpy's "reflect": the edge sample is not repeated.
        let n = n as isize;
        if n == 1 {
            return x[0];
        }
        let period = 2 * (n - 1);
        let mut j = i.rem_euclid(period);
        if j >= n {
            j = period - j;
        }
        x[j as usize]
    };
    let padded: Vec<f64> = (-(pad as isize)..(n + pad) as isize).map(reflect).collect();
    let total_frames = 1 + (padded.len() - N_FFT) / HOP;
    // The last frame is dropped, as Whisper does.
    let frames = total_frames - 1;
    let window: Vec<f64> = (0..N_FFT)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos())
        .collect();
    let fft = RealFftPlanner::<f64>::new().plan_fft_forward(N_FFT);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let mut power = vec![0f32; bins];
    let mut mel = vec![0f32; n_mels * frames];
    for t in 0..frames {
        let start = t * HOP;
        for (i, v) in input.iter_mut().enumerate() {
            *v = padded[start + i] * window[i];
        }
        if fft.process(&mut input, &mut spectrum).is_err() {
            continue;
        }
        for (p, c) in power.iter_mut().zip(&spectrum) {
            *p = c.norm_sqr() as f32;
        }
        for m in 0..n_mels {
            let row = &filters[m * bins..(m + 1) * bins];
            let e: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
            mel[m * frames + t] = e.max(1e-10).log10();
        }
    }
    let max = mel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in &mut mel {
        *v = ((*v).max(max - 8.0) + 4.0) / 4.0;
    }
    (mel, frames)
}

/// Columns `start..start + len` of `mel` (`n_mels` × `frames`), zero-padded to
/// [`WINDOW_FRAMES`] columns.
pub fn window(mel: &[f32], n_mels: usize, frames: usize, start: usize, len: usize) -> Vec<f32> {
    let mut out = vec![0f32; n_mels * WINDOW_FRAMES];
    let len = len.min(WINDOW_FRAMES).min(frames.saturating_sub(start));
    for m in 0..n_mels {
        let src = &mel[m * frames + start..m * frames + start + len];
        out[m * WINDOW_FRAMES..m * WINDOW_FRAMES + len].copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_librosa_shape_and_area() {
        let f = mel_filters(16_000, N_FFT, 80);
        assert_eq!(f.len(), 80 * 201);
        // Every filter is a triangle with positive weight somewhere, none negative.
        for m in 0..80 {
            let row = &f[m * 201..(m + 1) * 201];
            assert!(row.iter().all(|w| *w >= 0.0));
            assert!(row.iter().any(|w| *w > 0.0), "filter {m} is empty");
        }
        // faster-whisper 1.2.1's FeatureExtractor.get_mel_filters(16000, 400, 80): [0, 1] and
        // [79, 198].
        assert!((f[1] - 0.024_862_595).abs() < 1e-7, "{}", f[1]);
        assert!(
            (f[79 * 201 + 198] - 0.000_897_518_07).abs() < 1e-8,
            "{}",
            f[79 * 201 + 198]
        );
    }

    #[test]
    fn features_match_faster_whisper() {
        let samples: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16_000.0).sin() * 0.3)
            .collect();
        let filters = mel_filters(16_000, N_FFT, 80);
        let (mel, frames) = log_mel(&samples, &filters, 80);
        assert_eq!(frames, 101);
        assert_eq!(mel.len(), 80 * 101);
        // faster-whisper 1.2.1's FeatureExtractor()(x) at [mel, frame].
        let at = |m: usize, t: usize| mel[m * frames + t];
        for (m, t, want) in [
            (10, 50, 1.237_813_6),
            (79, 50, -0.672_720_55),
            (0, 0, 0.872_354_4),
            (5, 100, 0.786_793_2),
            (3, 7, -0.672_720_55),
        ] {
            assert!(
                (at(m, t) - want).abs() < 1e-4,
                "[{m}, {t}]: {} vs {want}",
                at(m, t)
            );
        }
        let w = window(&mel, 80, frames, 0, frames);
        assert_eq!(w.len(), 80 * WINDOW_FRAMES);
        assert_eq!(w[WINDOW_FRAMES - 1], 0.0);
        assert_eq!(w[50], mel[50]);
    }
}
