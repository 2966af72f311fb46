//! The embedding worker: a dedicated OS thread owning a llama.cpp context with embeddings on
//! and the model's own pooling. It gathers the inputs of every waiting request, runs them as
//! one multi-sequence batch per step under a token budget ([`Batcher`]), and answers each
//! request once all its inputs are done.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use super::batch::{normalize, Batcher, Planned};
use crate::model::{llama_backend, LoadedModel};

pub type Reply = oneshot::Sender<Result<Vec<Vec<f32>>, String>>;

pub enum Command {
    Embed { inputs: Vec<Vec<i32>>, reply: Reply },
    Stop,
}

#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    pub budget_tokens: usize,
    pub max_seqs: usize,
    pub threads: i32,
    /// Tokens per decode: a step's inputs run in decodes of at most this many tokens
    /// ([`chunks`]).
    pub chunk_tokens: usize,
    /// Scale vectors to unit length (pooled embeddings; not a cross-encoder's scores).
    pub normalize: bool,
}

pub fn spawn(
    model: Arc<LoadedModel>,
    config: WorkerConfig,
    name: &str,
) -> Result<(mpsc::UnboundedSender<Command>, JoinHandle<()>), String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let thread = crate::thread::start(format!("embed-{name}"), "embedding", move |ready| {
        run(&model, config, rx, &ready)
    })?;
    Ok((tx, thread))
}

fn run(
    model: &LoadedModel,
    config: WorkerConfig,
    mut rx: mpsc::UnboundedReceiver<Command>,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) {
    let budget = config.budget_tokens as u32;
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_n_ctx(std::num::NonZeroU32::new(budget))
        .with_n_batch(budget)
        .with_n_ubatch(budget)
        .with_n_seq_max(config.max_seqs as u32)
        // Every sequence may use the whole context (a pooled model keeps no KV cache to split),
        // and each batch holds at most `budget` tokens, which llama.cpp asserts for encoders.
        .with_kv_unified(true)
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads);
    let mut ctx = match llama_backend().map_err(|e| e.to_string()).and_then(|b| {
        model
            .model
            .new_context(b, params)
            .map_err(|e| e.to_string())
    }) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "could not create an embedding context of {budget} tokens: {e}"
            )));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut batcher = Batcher::new(config.budget_tokens, config.max_seqs);
    let mut replies: HashMap<u64, Reply> = HashMap::new();
    let mut next_job = 0u64;
    let mut batch = LlamaBatch::new(config.budget_tokens, config.max_seqs as i32);
    let mut accept =
        |command: Command, batcher: &mut Batcher, replies: &mut HashMap<u64, Reply>| -> bool {
            match command {
                Command::Stop => false,
                Command::Embed { inputs, reply } => {
                    next_job += 1;
                    match batcher.push(next_job, inputs) {
                        Some(done) => {
                            let _ = reply.send(Ok(done));
                        }
                        None => {
                            replies.insert(next_job, reply);
                        }
                    }
                    true
                }
            }
        };
    'work: loop {
        if batcher.is_idle() {
            match rx.blocking_recv() {
                Some(command) => {
                    if !accept(command, &mut batcher, &mut replies) {
                        break 'work;
                    }
                }
                None => break 'work,
            }
        }
        while let Ok(command) = rx.try_recv() {
            if !accept(command, &mut batcher, &mut replies) {
                break 'work;
            }
        }
        // Requests whose client left are dropped before they cost a batch.
        let gone: Vec<u64> = batcher
            .jobs()
            .filter(|j| replies.get(j).is_none_or(oneshot::Sender::is_closed))
            .collect();
        for job in gone {
            batcher.cancel(job);
            replies.remove(&job);
        }
        let plan = batcher.plan();
        if plan.is_empty() {
            continue;
        }
        for chunk in chunks(plan, config.chunk_tokens) {
            run_chunk(
                &mut ctx,
                &mut batch,
                chunk,
                config,
                &mut batcher,
                &mut replies,
            );
        }
    }
    // Pending requests' replies drop here: their callers see the engine gone.
    drop(replies);
    drop(ctx);
}

/// Splits a step's inputs into runs of at most `limit` tokens (one input longer than that
/// runs alone). Non-causal attention spans the whole of one decode, masked between inputs, so
/// its cost grows with the square of the run's length: 32 inputs of 64 tokens in one decode
/// compute 2,048² scores per head and layer where 32 × 64² are needed.
fn chunks(plan: Vec<Planned>, limit: usize) -> Vec<Vec<Planned>> {
    let mut out: Vec<Vec<Planned>> = Vec::new();
    let mut tokens = 0;
    for item in plan {
        let n = item.tokens.len();
        match out.last_mut() {
            Some(run) if tokens + n <= limit => run.push(item),
            _ => {
                out.push(vec![item]);
                tokens = 0;
            }
        }
        tokens += n;
    }
    out
}

/// Decodes one run of inputs (one sequence each) and hands each its vector.
fn run_chunk(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    chunk: Vec<Planned>,
    config: WorkerConfig,
    batcher: &mut Batcher,
    replies: &mut HashMap<u64, Reply>,
) {
    batch.clear();
    let mut added = Ok(());
    for (seq, item) in chunk.iter().enumerate() {
        for (pos, token) in item.tokens.iter().enumerate() {
            added = added.and_then(|()| {
                batch
                    .add(LlamaToken(*token), pos as i32, &[seq as i32], true)
                    .map_err(|e| e.to_string())
            });
        }
    }
    ctx.clear_kv_cache();
    let decoded = added.and_then(|()| ctx.decode(batch).map_err(|e| e.to_string()));
    if let Err(e) = decoded {
        tracing::error!(error = %e, "embedding batch failed");
        for item in &chunk {
            batcher.fail(item.job);
            if let Some(reply) = replies.remove(&item.job) {
                let _ = reply.send(Err(format!("the embedding batch failed: {e}")));
            }
        }
        return;
    }
    for (seq, item) in chunk.into_iter().enumerate() {
        let vector = match ctx.embeddings_seq_ith(seq as i32) {
            Ok(v) => {
                let mut v = v.to_vec();
                if config.normalize {
                    normalize(&mut v);
                }
                v
            }
            Err(e) => {
                batcher.fail(item.job);
                if let Some(reply) = replies.remove(&item.job) {
                    let _ = reply.send(Err(format!("no embedding for an input: {e}")));
                }
                continue;
            }
        };
        if let Some(done) = batcher.complete(item.job, item.index, vector) {
            if let Some(reply) = replies.remove(&item.job) {
                let _ = reply.send(Ok(done));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(lengths: &[usize]) -> Vec<Planned> {
        lengths
            .iter()
            .enumerate()
            .map(|(index, &n)| Planned {
                job: 1,
                index,
                tokens: vec![7; n],
            })
            .collect()
    }

    fn shape(runs: &[Vec<Planned>]) -> Vec<Vec<usize>> {
        runs.iter()
            .map(|r| r.iter().map(|p| p.index).collect())
            .collect()
    }

    #[test]
    fn a_step_runs_in_decodes_under_the_token_limit_in_order() {
        assert_eq!(
            shape(&chunks(planned(&[64; 10]), 256)),
            [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]
        );
        // An input longer than the limit runs alone; nothing is dropped or split.
        assert_eq!(
            shape(&chunks(planned(&[10, 300, 10, 10]), 256)),
            [vec![0], vec![1], vec![2, 3]]
        );
        assert!(chunks(Vec::new(), 256).is_empty());
    }
}
