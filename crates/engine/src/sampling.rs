//! Sampler chains built from validated [`SamplingParams`], in llama.cpp's usual order:
//! penalties → top-k → top-p → min-p → temperature → draw (or greedy at temperature 0).

use backend::SamplingParams;
use llama_cpp_2::sampling::LlamaSampler;

/// The 32-bit seed llama.cpp's sampler takes; a request without a seed gets a random one.
pub fn seed32(seed: Option<u64>) -> u32 {
    match seed {
        Some(s) => (s ^ (s >> 32)) as u32,
        None => rand::random(),
    }
}

/// Build the sampler chain for one sequence. `penalty_window` is how many recent tokens the
/// presence and frequency penalties look at (the slot's context: all generated tokens).
pub fn chain(p: &SamplingParams, n_vocab: i32, penalty_window: i32) -> LlamaSampler {
    let mut stages = Vec::with_capacity(6);
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        stages.push(LlamaSampler::penalties(
            n_vocab,
            penalty_window.max(1),
            1.0,
            p.frequency_penalty,
            p.presence_penalty,
        ));
    }
    if p.temperature <= 0.0 {
        stages.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(stages);
    }
    if p.top_k > 0 {
        stages.push(LlamaSampler::top_k(p.top_k));
    }
    if p.top_p < 1.0 {
        stages.push(LlamaSampler::top_p(p.top_p, 1));
    }
    if p.min_p > 0.0 {
        stages.push(LlamaSampler::min_p(p.min_p, 1));
    }
    stages.push(LlamaSampler::temp(p.temperature));
    stages.push(LlamaSampler::dist(seed32(p.seed)));
    LlamaSampler::chain_simple(stages)
}
