//! Band-limited resampling with `rubato`'s synchronous FFT resampler.

use rubato::{FftFixedInOut, Resampler};

/// Resamples mono `input` from `from` Hz to `to` Hz. The output has
/// `ceil(len × to / from)` samples, aligned with the input (the resampler's delay removed).
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, String> {
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    let mut r = FftFixedInOut::<f32>::new(from as usize, to as usize, 1024, 1)
        .map_err(|e| format!("cannot resample from {from} Hz: {e}"))?;
    let delay = r.output_delay();
    let want = (input.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
    let mut out: Vec<f32> = Vec::with_capacity(want + delay + 2048);
    let mut pos = 0;
    let err = |e: rubato::ResampleError| format!("resampling failed: {e}");
    while out.len() < want + delay {
        let n = r.input_frames_next();
        let chunk = if pos + n <= input.len() {
            r.process(&[&input[pos..pos + n]], None).map_err(err)?
        } else if pos < input.len() {
            r.process_partial(Some(&[&input[pos..]][..]), None)
                .map_err(err)?
        } else {
            r.process_partial(None::<&[&[f32]]>, None).map_err(err)?
        };
        pos += n;
        out.extend_from_slice(&chunk[0]);
    }
    Ok(out[delay..delay + want].to_vec())
}
