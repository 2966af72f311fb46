//! Log-probabilities of generated tokens, from the raw logits of the step that drew them (before
//! the sampler's penalties, temperature and truncation, as OpenAI and vLLM report them).

use backend::{Logprob, TokenLogprob};
use llama_cpp_2::token::LlamaToken;

use crate::model::LoadedModel;

/// `chosen`'s log-probability among `logits` and the `top` most likely tokens', most likely
/// first. One pass for the normaliser and one for the top entries (a small sorted buffer:
/// `top` ≤ 20 against a vocabulary of 10⁵).
pub fn entry(model: &LoadedModel, logits: &[f32], chosen: LlamaToken, top: usize) -> TokenLogprob {
    let log_norm = log_sum_exp(logits);
    let at = |token: LlamaToken| -> Logprob {
        let logit = usize::try_from(token.0)
            .ok()
            .and_then(|i| logits.get(i))
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        let mut bytes = Vec::new();
        model.token_bytes(token, &mut bytes);
        Logprob {
            token: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            logprob: logit - log_norm,
        }
    };
    TokenLogprob {
        chosen: at(chosen),
        top: most_likely(logits, top)
            .into_iter()
            .map(|i| at(LlamaToken(i as i32)))
            .collect(),
    }
}

/// `ln Σ exp(x)`, computed stably.
fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    max + sum.ln() as f32
}

/// The indices of the `k` largest logits, largest first (ties: lower index first).
fn most_likely(logits: &[f32], k: usize) -> Vec<usize> {
    let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return Vec::new();
    }
    for (i, &x) in logits.iter().enumerate() {
        if best.len() == k && best.last().is_some_and(|&(worst, _)| x <= worst) {
            continue;
        }
        let at = best.partition_point(|&(y, _)| y >= x);
        best.insert(at, (x, i));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normaliser_and_top_entries() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let norm = log_sum_exp(&logits);
        let want: f32 = logits.iter().map(|x| x.exp()).sum::<f32>().ln();
        assert!((norm - want).abs() < 1e-5);
        assert_eq!(most_likely(&logits, 3), vec![1, 3, 2]);
        assert_eq!(most_likely(&logits, 0), Vec::<usize>::new());
        assert_eq!(most_likely(&logits, 9), vec![1, 3, 2, 0, 4]);
        assert_eq!(log_sum_exp(&[]), f32::NEG_INFINITY);
    }
}
