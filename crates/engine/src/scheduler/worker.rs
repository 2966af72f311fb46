//! The worker: one OS thread per model that owns the llama.cpp context and runs the batching
//! loop. Between decode steps it takes new requests (commands from [`crate::Engine`]), drops
//! the ones whose client went away, admits queued jobs into free slots (applying prefix reuse
//! to the KV cache), decodes one batch, samples, and streams text back. On [`Command::Stop`]
//! (or when every handle is gone and nothing runs) it ends and frees its context on its own
//! thread; [`crate::Engine`] joins it, so no llama.cpp call outlives the process's teardown.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use backend::{BackendError, Event, FinishReason, Priority, SamplingParams, TokenLogprob, Usage};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaLoraAdapter;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::DecodeError;
use tokio::sync::{mpsc, oneshot};

use super::state::{Chunk, Job, KvOp, Limits, State};
use crate::metrics::ModelMetrics;
use crate::model::{llama_backend, LoadedModel};
use crate::text::{StopMatcher, StopOutcome, Utf8Stream};

pub type Events = mpsc::UnboundedSender<Result<Event, BackendError>>;

/// A request handed to the worker.
pub struct Request {
    pub prompt: Vec<LlamaToken>,
    pub max_new: usize,
    pub sampling: SamplingParams,
    /// The grammar the answer must follow, if constrained.
    pub grammar: Option<crate::constrain::Grammar>,
    pub stop: Vec<String>,
    pub events: Events,
    pub received: Instant,
    /// Batch work yields its slot to interactive work (see [`State::preempt`]).
    pub priority: Priority,
    /// More answers to the same prompt (OpenAI's `n`): queued once this request's prompt is in
    /// the KV cache, so each copies it instead of computing it again.
    pub followers: Vec<Follower>,
    /// The last this many tokens of `prompt` were generated before (a resumed stream).
    pub resumed: usize,
}

/// Another answer to a [`Request`]'s prompt, with its own sampler, grammar and events.
pub struct Follower {
    pub sampling: SamplingParams,
    pub grammar: Option<crate::constrain::Grammar>,
    pub events: Events,
}

pub enum Command {
    Submit {
        request: Request,
        reply: oneshot::Sender<Result<(), BackendError>>,
    },
    /// End every queued and running request now (their streams get `ShuttingDown`), then end
    /// the thread.
    Stop,
}

/// Per-sequence state that lives on the worker thread (samplers are not `Send`).
struct Seq {
    events: Events,
    sampler: LlamaSampler,
    grammar: Option<LlamaSampler>,
    utf8: Utf8Stream,
    stop: StopMatcher,
    received: Instant,
    last_token: Option<Instant>,
    ignore_eos: bool,
    /// Ids of the tokens sampled since the last text chunk was sent (their text is held back).
    unsent_ids: Vec<u32>,
    /// Report log-probabilities with this many alternatives.
    logprobs: Option<u8>,
    /// Log-probabilities of the unsent tokens.
    unsent_logprobs: Vec<TokenLogprob>,
    /// Answers to queue once this one's prompt is computed (see [`Request::followers`]).
    followers: Vec<Job<Seq>>,
}

impl Seq {
    /// Sends released text of the tokens `ids`, after the log-probabilities of the tokens it
    /// releases; false if the client is gone.
    fn send_text(&mut self, text: String, ids: Vec<u32>) -> bool {
        if !self.unsent_logprobs.is_empty() {
            let logprobs = std::mem::take(&mut self.unsent_logprobs);
            if self.events.send(Ok(Event::Logprobs(logprobs))).is_err() {
                return false;
            }
        }
        self.events.send(Ok(Event::text_of(text, ids))).is_ok()
    }
}

pub struct WorkerConfig {
    pub limits: Limits,
    pub threads: i32,
    /// A LoRA adapter set on the context for its whole life (a fine-tuned model's engine).
    pub adapter: Option<LlamaLoraAdapter>,
}

/// Start the worker thread; returns once the context exists (or failed to be created), with
/// the thread's handle for joining it.
pub fn spawn(
    model: Arc<LoadedModel>,
    config: WorkerConfig,
    metrics: ModelMetrics,
) -> Result<(mpsc::UnboundedSender<Command>, JoinHandle<()>), String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let name = format!("engine-{}", metrics.model());
    let thread = crate::thread::start(name, "engine", move |ready| {
        run(model, config, metrics, rx, ready)
    })?;
    Ok((tx, thread))
}

fn run(
    model: Arc<LoadedModel>,
    config: WorkerConfig,
    metrics: ModelMetrics,
    rx: mpsc::UnboundedReceiver<Command>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let limits = config.limits;
    let n_ctx = (limits.slots * limits.slot_context) as u32;
    let params = LlamaContextParams::default()
        .with_n_ctx(std::num::NonZeroU32::new(n_ctx))
        .with_n_batch(limits.step_tokens as u32)
        .with_n_ubatch(limits.step_tokens as u32)
        .with_n_seq_max(limits.slots as u32)
        // One KV stream per slot: attention of each sequence only spans its own cells. (A unified
        // cache makes every sequence attend over the union of all slots' cells, which on CPU costs
        // more than the batching gains once slots hold long prompts.)
        .with_kv_unified(false)
        .with_n_threads(config.threads)
        .with_n_threads_batch(config.threads);
    let mut adapter = config.adapter;
    let ctx = match llama_backend().map_err(|e| e.to_string()).and_then(|b| {
        model
            .model
            .new_context(b, params)
            .map_err(|e| e.to_string())
    }) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "could not create a context of {n_ctx} tokens ({} slots × {}): {e}; lower --slots or --slot-context",
                limits.slots, limits.slot_context
            )));
            return;
        }
    };
    let mut ctx = ctx;
    if let Some(a) = adapter.as_mut() {
        if let Err(e) = ctx.lora_adapter_set(a, 1.0) {
            let _ = ready.send(Err(format!("could not apply the LoRA adapter: {e}")));
            return;
        }
    }
    let _ = ready.send(Ok(()));
    let mut worker = Worker {
        _adapter: adapter,
        batch: LlamaBatch::new(limits.step_tokens.max(limits.slots), limits.slots as i32),
        state: State::new(limits),
        model: &model,
        ctx,
        metrics,
        rx,
        avg_request_secs: 1.0,
        piece: Vec::with_capacity(32),
        stopping: false,
    };
    worker.run();
    let model_name = worker.metrics.model().to_owned();
    // The context is freed here, on this thread.
    drop(worker);
    tracing::info!(model = %model_name, "engine thread stopped");
}

struct Worker<'m> {
    model: &'m LoadedModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    state: State<Seq>,
    metrics: ModelMetrics,
    rx: mpsc::UnboundedReceiver<Command>,
    /// Moving average of request duration, for `Retry-After` estimates.
    avg_request_secs: f64,
    piece: Vec<u8>,
    /// `Stop` arrived: end everything and return.
    stopping: bool,
    /// The LoRA adapter the context applies: declared after `ctx`, so it is freed after it.
    _adapter: Option<LlamaLoraAdapter>,
}

impl Worker<'_> {
    fn run(&mut self) {
        loop {
            if self.state.is_idle() {
                self.publish_gauges();
                match self.rx.blocking_recv() {
                    Some(cmd) => self.handle(cmd),
                    None => return,
                }
            }
            loop {
                match self.rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        if self.state.is_idle() {
                            return;
                        }
                        break;
                    }
                }
            }
            if self.stopping {
                self.end_all();
                self.publish_gauges();
                return;
            }
            self.reap_cancelled();
            for preempted in self.state.preempt() {
                // The sequence waits in the batch queue with everything it needs to go on;
                // its stream stays open and its client notices nothing but a pause.
                tracing::debug!(
                    model = self.metrics.model(),
                    slot = preempted.slot,
                    generated = preempted.generated,
                    "batch sequence pre-empted for interactive work"
                );
                self.metrics.preempted();
            }
            for adm in self.state.admit() {
                self.apply(adm.kv);
                if let Some(job) = self.state.job(adm.slot) {
                    if job.preemptions == 0 {
                        self.metrics.admitted(job.prompt_len, job.reused);
                    }
                }
            }
            let plan = self.state.plan();
            if !plan.is_empty() {
                self.step(&plan);
            }
            self.publish_gauges();
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit { request, reply } => {
                let Request {
                    prompt,
                    max_new,
                    sampling,
                    grammar,
                    stop,
                    events,
                    received,
                    priority,
                    followers,
                    resumed,
                } = request;
                let seq = |s: &Self,
                           sampling: &SamplingParams,
                           grammar: Option<crate::constrain::Grammar>,
                           events: Events| Seq {
                    events,
                    sampler: crate::sampling::chain(
                        sampling,
                        s.model.model.n_vocab(),
                        s.state.limits().slot_context as i32,
                    ),
                    grammar: grammar.map(crate::constrain::Grammar::into_sampler),
                    utf8: Utf8Stream::default(),
                    stop: StopMatcher::new(stop.clone()),
                    received,
                    last_token: None,
                    ignore_eos: sampling.ignore_eos,
                    unsent_ids: Vec::new(),
                    logprobs: sampling.logprobs,
                    unsent_logprobs: Vec::new(),
                    followers: Vec::new(),
                };
                let prompt: Vec<i32> = prompt.iter().map(|t| t.0).collect();
                let followers = followers
                    .into_iter()
                    .map(|f| {
                        let payload = seq(self, &f.sampling, f.grammar, f.events);
                        Job::new(prompt.clone(), max_new, priority, payload)
                    })
                    .collect();
                let mut payload = seq(self, &sampling, grammar, events);
                payload.followers = followers;
                // Tokens generated before a resume: the samplers' history (penalties, the
                // grammar's parse state) goes on from them.
                for &token in &prompt[prompt.len().saturating_sub(resumed)..] {
                    let token = LlamaToken(token);
                    payload.sampler.accept(token);
                    if let Some(grammar) = payload.grammar.as_mut() {
                        let _ = grammar.try_accept(token);
                    }
                }
                let job = Job::new(prompt, max_new, priority, payload);
                let answer = match self.state.enqueue(job) {
                    Ok(()) => Ok(()),
                    Err(_) => {
                        self.metrics.rejected();
                        let queued = self.state.queued();
                        let per_slot = queued as f64 / self.state.limits().slots as f64;
                        Err(BackendError::Overloaded {
                            queued,
                            retry_after: (per_slot * self.avg_request_secs).ceil().max(1.0) as u64,
                        })
                    }
                };
                let _ = reply.send(answer);
            }
            Command::Stop => self.stopping = true,
        }
    }

    /// Shutdown: every queued and running request ends with `ShuttingDown` (the gateway
    /// settles what was delivered).
    fn end_all(&mut self) {
        let queued = self.state.drain_queued(|_| true);
        let running: Vec<Seq> = self
            .state
            .running_where(|_| true)
            .into_iter()
            .filter_map(|slot| self.state.release(slot, false))
            .map(|job| job.payload)
            .collect();
        let ended = queued.into_iter().map(|job| job.payload).chain(running);
        for seq in ended {
            let _ = seq.events.send(Err(BackendError::ShuttingDown));
            self.metrics.cancelled();
        }
    }

    /// Clients that disconnected: queued jobs vanish, running ones free their slot now.
    fn reap_cancelled(&mut self) {
        let dropped = self.state.drain_queued(|s| s.events.is_closed());
        for _ in dropped {
            self.metrics.cancelled();
        }
        for slot in self.state.running_where(|s| s.events.is_closed()) {
            self.state.release(slot, true);
            self.metrics.cancelled();
        }
    }

    fn apply(&mut self, op: KvOp) {
        let result = match op {
            KvOp::Trim { seq, keep } => self
                .ctx
                .clear_kv_cache_seq(Some(seq as u32), Some(keep as u32), None)
                .map(|_| ()),
            // Across KV streams llama.cpp copies whole sequences only (it asserts on partial
            // copies): copy all of `src`, then drop what lies past the shared prefix. The buffer
            // copy happens at the start of the next decode, before it computes.
            KvOp::Copy { src, dst, len } => self
                .ctx
                .copy_kv_cache_seq(src as i32, dst as i32, None, None)
                .and_then(|()| {
                    self.ctx
                        .clear_kv_cache_seq(Some(dst as u32), Some(len as u32), None)
                        .map(|_| ())
                }),
        };
        if let Err(e) = result {
            tracing::error!(
                model = self.metrics.model(),
                ?op,
                "KV cache operation failed: {e}"
            );
        }
    }

    fn step(&mut self, plan: &[Chunk]) {
        let logits_at = match self.fill_batch(plan) {
            Ok(at) => at,
            Err(e) => return self.fail(plan, &format!("could not build the batch: {e}")),
        };
        let started = Instant::now();
        let mut decoded = self.ctx.decode(&mut self.batch);
        if matches!(decoded, Err(DecodeError::NoKvCacheSlot)) {
            // Kept prefixes of finished requests are a cache: give them up and try again.
            for seq in self.state.evict_free() {
                let _ = self.ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
            }
            decoded = self.ctx.decode(&mut self.batch);
        }
        if let Err(e) = decoded {
            return self.fail(plan, &format!("llama.cpp could not decode the batch: {e}"));
        }
        self.metrics
            .step(self.batch.n_tokens() as usize, started.elapsed());
        self.state.commit(plan);
        for (chunk, idx) in plan.iter().zip(logits_at) {
            if let Some(idx) = idx {
                self.sample(chunk.slot, idx);
            }
        }
    }

    /// Put the plan's tokens into the batch; returns, per chunk, the batch index of its logits.
    fn fill_batch(
        &mut self,
        plan: &[Chunk],
    ) -> Result<Vec<Option<i32>>, llama_cpp_2::llama_batch::BatchAddError> {
        self.batch.clear();
        let mut at = Vec::with_capacity(plan.len());
        for c in plan {
            let last = c.tokens.len().saturating_sub(1);
            for (k, &tok) in c.tokens.iter().enumerate() {
                let logits = c.sample && k == last;
                self.batch.add(
                    LlamaToken(tok),
                    (c.start + k) as i32,
                    &[c.slot as i32],
                    logits,
                )?;
            }
            at.push(c.sample.then(|| self.batch.n_tokens() - 1));
        }
        Ok(at)
    }

    fn sample(&mut self, slot: usize, idx: i32) {
        let Some(job) = self.state.job_mut(slot) else {
            return;
        };
        if !job.payload.followers.is_empty() {
            // The prompt is in the KV cache now: the other answers to it may copy it.
            let followers = std::mem::take(&mut job.payload.followers);
            self.state.enqueue_front(followers);
        }
        let Some(job) = self.state.job_mut(slot) else {
            return;
        };
        let seq = &mut job.payload;
        let token = match seq.grammar.as_mut() {
            None => seq.sampler.sample(&self.ctx, idx),
            Some(grammar) => {
                match crate::constrain::sample(&self.ctx, idx, &mut seq.sampler, grammar) {
                    Some(token) => token,
                    None => {
                        // The grammar allows no token: end here rather than break the format.
                        let tail = seq.utf8.finish() + &seq.stop.finish();
                        return self.finish(slot, tail, FinishReason::Stop);
                    }
                }
            }
        };
        let now = Instant::now();
        match job.payload.last_token.replace(now) {
            None => self.metrics.first_token(now - job.payload.received),
            Some(prev) => self.metrics.next_token(now - prev),
        }
        self.metrics.generated();
        job.payload.unsent_ids.push(token.0 as u32);
        let generated = job.generated + 1;
        let reached_max = generated >= job.max_new;
        if self.model.is_end_of_generation(token) && !job.payload.ignore_eos {
            let tail = job.payload.utf8.finish() + &job.payload.stop.finish();
            return self.finish(slot, tail, FinishReason::Stop);
        }
        if let Some(top) = job.payload.logprobs {
            let logits = self.ctx.get_logits_ith(idx);
            let entry = crate::logprobs::entry(self.model, logits, token, usize::from(top));
            job.payload.unsent_logprobs.push(entry);
        }
        self.model.token_bytes(token, &mut self.piece);
        let text = job.payload.utf8.push(&self.piece);
        match job.payload.stop.push(&text) {
            StopOutcome::Stopped(head) => self.finish(slot, head, FinishReason::Stop),
            StopOutcome::Continue(mut out) if reached_max => {
                out.push_str(&job.payload.utf8.finish());
                out.push_str(&job.payload.stop.finish());
                self.finish(slot, out, FinishReason::Length);
            }
            StopOutcome::Continue(out) if out.is_empty() => self.state.push_token(slot, token.0),
            StopOutcome::Continue(out) => {
                let ids = std::mem::take(&mut job.payload.unsent_ids);
                let sent = job.payload.send_text(out, ids);
                if sent {
                    self.state.push_token(slot, token.0);
                } else {
                    self.state.release(slot, true);
                    self.metrics.cancelled();
                }
            }
        }
    }

    /// End the job in `slot`: send the last text and the usage, free the slot (its KV is kept
    /// for prefix reuse).
    fn finish(&mut self, slot: usize, tail: String, reason: FinishReason) {
        let Some(job) = self.state.release(slot, true) else {
            return;
        };
        let usage = Usage {
            prompt_tokens: job.prompt_len as u32,
            completion_tokens: job.generated as u32 + 1,
            cached_tokens: job.reused as u32,
        };
        let mut seq = job.payload;
        if !tail.is_empty() {
            // A matched stop string's tokens are not in the tail; usage counts them.
            let ids = if reason == FinishReason::Stop {
                Vec::new()
            } else {
                std::mem::take(&mut seq.unsent_ids)
            };
            let _ = seq.send_text(tail, ids);
        }
        let _ = seq.events.send(Ok(Event::Finished { reason, usage }));
        let secs = seq.received.elapsed().as_secs_f64();
        self.avg_request_secs = 0.8 * self.avg_request_secs + 0.2 * secs;
        self.metrics.finished();
    }

    /// The batch could not be decoded: end every job in it with an error and clear its KV.
    fn fail(&mut self, plan: &[Chunk], message: &str) {
        tracing::error!(model = self.metrics.model(), "{message}");
        for c in plan {
            if let Some(job) = self.state.release(c.slot, false) {
                let _ = job
                    .payload
                    .events
                    .send(Err(BackendError::Internal(message.to_owned())));
            }
            let _ = self.ctx.clear_kv_cache_seq(Some(c.slot as u32), None, None);
        }
    }

    fn publish_gauges(&self) {
        let (busy, kept) = self.state.kv_cells();
        self.metrics
            .gauges(self.state.queued(), self.state.running(), busy, kept);
        self.metrics
            .batch_gauges(self.state.queued_batch(), self.state.running_batch());
    }
}
