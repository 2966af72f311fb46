//! The batching state: slots, the waiting queue, what each slot holds in the KV cache, and what
//! goes into the next decode step. Pure bookkeeping, no llama.cpp and no threads, so tests drive
//! it step by step (see the tests at the bottom). The worker applies what it returns.
//!
//! Vocabulary:
//! - A *slot* is one llama.cpp sequence id. Its `cached` tokens are the ones whose KV is in the
//!   cache for that sequence, at positions `0..cached.len()`.
//! - A *job* is one request. While it runs it owns a slot; its `pending` tokens are the ones still
//!   to be fed to the model (the rest of the prompt, or the last sampled token).
//! - A finished slot keeps its `cached` tokens so the next prompt sharing a prefix reuses them.
//!
//! Priority: jobs are [`Priority::Interactive`] or [`Priority::Batch`], each class with its own
//! queue. Batch jobs take only what interactive ones leave: they are admitted only while no
//! interactive job waits, get prefill budget only while no interactive prompt waits or
//! prefills, and [`State::preempt`] takes slots back from them (recompute-style: the job goes
//! back to the head of the batch queue with its prompt and generated tokens, and re-prefills
//! them, from the prefix cache where it can, when it is admitted again). Interactive work is
//! never pre-empted.

use std::collections::VecDeque;

pub use backend::Priority;

pub type Token = i32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sequence slots in the context (`n_seq_max`).
    pub slots: usize,
    /// Tokens per slot (prompt + generated).
    pub slot_context: usize,
    /// Tokens fed to the model per decode step (decode tokens first, then prefill chunks).
    pub step_tokens: usize,
    /// Jobs that may wait for a slot.
    pub max_queue: usize,
}

/// A request as the scheduler sees it. `payload` is the worker's per-request state.
#[derive(Debug)]
pub struct Job<P> {
    pub prompt: Vec<Token>,
    /// Generated tokens allowed (already clamped to what fits in the slot).
    pub max_new: usize,
    pub priority: Priority,
    pub payload: P,
    /// Set on a pre-empted job: what it had done, kept across its re-admission.
    resumed: Option<Progress>,
}

impl<P> Job<P> {
    pub fn new(prompt: Vec<Token>, max_new: usize, priority: Priority, payload: P) -> Self {
        Self {
            prompt,
            max_new,
            priority,
            payload,
            resumed: None,
        }
    }

    /// Whether this job was pre-empted and waits to resume.
    pub fn is_resumed(&self) -> bool {
        self.resumed.is_some()
    }
}

/// What a pre-empted job had done. Its `prompt` is then the original prompt followed by the
/// tokens it generated, so only counts need keeping (usage is counted once, on the original).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    prompt_len: usize,
    reused: usize,
    generated: usize,
    preemptions: u32,
}

/// A job that owns a slot.
#[derive(Debug)]
pub struct Running<P> {
    pub payload: P,
    pub priority: Priority,
    /// The original prompt's length (a resumed job re-feeds its generated tokens too).
    pub prompt_len: usize,
    /// Prompt tokens whose KV was reused instead of computed (at its first admission).
    pub reused: usize,
    pub max_new: usize,
    /// Tokens sampled so far (across pre-emptions).
    pub generated: usize,
    /// Times this job was pre-empted.
    pub preemptions: u32,
    /// Tokens still to feed: the prompt's rest while prefilling, then the last sampled token.
    pending: Vec<Token>,
    /// True once the whole prompt has been fed.
    decoding: bool,
    /// Admission order, the tie-break between equal prefill priorities.
    ticket: u64,
    /// The decode step at admission, for prefill aging.
    admitted_step: u64,
}

#[derive(Debug)]
struct Slot<P> {
    cached: Vec<Token>,
    job: Option<Running<P>>,
    last_used: u64,
}

/// A change to the KV cache that the worker must make before the next decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvOp {
    /// Drop positions `keep..` of sequence `seq`.
    Trim { seq: usize, keep: usize },
    /// Clear `dst`, then share positions `0..len` of `src` into it.
    Copy { src: usize, dst: usize, len: usize },
}

/// A job that just got a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub slot: usize,
    pub reused: usize,
    pub kv: KvOp,
}

/// Tokens of one slot in the next batch, at positions `start..start + tokens.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub slot: usize,
    pub start: usize,
    pub tokens: Vec<Token>,
    /// Logits wanted for the last token: the prompt is complete, a token is to be sampled.
    pub sample: bool,
}

/// How fast a waiting prompt gains prefill priority: `step_tokens / PREFILL_AGING_SHARE` tokens
/// per decode step it has waited (see [`State::plan`]).
const PREFILL_AGING_SHARE: usize = 8;

/// Batch prompts get at most `step_tokens / BATCH_PREFILL_SHARE` tokens of a step, together.
/// A step cannot be interrupted, so this bounds what an interactive arrival waits for the
/// step in flight (a full step of batch prefill would be 4× longer); on a CPU prefill costs
/// about the same per token in small chunks, so the batch loses little.
const BATCH_PREFILL_SHARE: usize = 4;

/// A running batch job was pre-empted: its slot is free (its KV kept as reusable cache) and
/// the job waits at the head of the batch queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preemption {
    pub slot: usize,
    /// Tokens it had generated; they are fed again with the prompt when it resumes.
    pub generated: usize,
}

pub struct State<P> {
    limits: Limits,
    slots: Vec<Slot<P>>,
    /// Interactive jobs waiting for a slot.
    queue: VecDeque<Job<P>>,
    /// Batch jobs waiting for a slot (pre-empted ones at the head).
    batch: VecDeque<Job<P>>,
    clock: u64,
    /// Decode steps committed so far.
    steps: u64,
}

impl<P> State<P> {
    pub fn new(limits: Limits) -> Self {
        let slots = (0..limits.slots)
            .map(|_| Slot {
                cached: Vec::new(),
                job: None,
                last_used: 0,
            })
            .collect();
        Self {
            limits,
            slots,
            queue: VecDeque::new(),
            batch: VecDeque::new(),
            clock: 0,
            steps: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Queue a job; a full queue hands it back. The bound is per class for interactive jobs
    /// (batch work never fills the queue for them) and over both queues for batch jobs.
    pub fn enqueue(&mut self, job: Job<P>) -> Result<(), Job<P>> {
        let waiting = match job.priority {
            Priority::Interactive => self.queue.len(),
            Priority::Batch => self.queued(),
        };
        if waiting >= self.limits.max_queue {
            return Err(job);
        }
        self.class_mut(job.priority).push_back(job);
        Ok(())
    }

    /// Put jobs at the head of their class's queue, in order, whatever its length (the other
    /// answers of a request already admitted).
    pub fn enqueue_front(&mut self, jobs: Vec<Job<P>>) {
        for job in jobs.into_iter().rev() {
            self.class_mut(job.priority).push_front(job);
        }
    }

    fn class_mut(&mut self, priority: Priority) -> &mut VecDeque<Job<P>> {
        match priority {
            Priority::Interactive => &mut self.queue,
            Priority::Batch => &mut self.batch,
        }
    }

    /// Jobs waiting for a slot, both classes.
    pub fn queued(&self) -> usize {
        self.queue.len() + self.batch.len()
    }

    /// Batch jobs waiting for a slot (pre-empted ones included).
    pub fn queued_batch(&self) -> usize {
        self.batch.len()
    }

    pub fn running(&self) -> usize {
        self.slots.iter().filter(|s| s.job.is_some()).count()
    }

    /// Slots held by batch jobs.
    pub fn running_batch(&self) -> usize {
        self.running_where_class(Priority::Batch).count()
    }

    fn running_where_class(&self, class: Priority) -> impl Iterator<Item = usize> + '_ {
        (0..self.slots.len()).filter(move |&i| {
            self.slots[i]
                .job
                .as_ref()
                .is_some_and(|j| j.priority == class)
        })
    }

    pub fn is_idle(&self) -> bool {
        self.queued() == 0 && self.running() == 0
    }

    /// Whether an interactive prompt waits: queued, or admitted and still prefilling. While
    /// one does, batch prompts get no prefill budget.
    pub fn interactive_prompt_waits(&self) -> bool {
        !self.queue.is_empty()
            || self.slots.iter().any(|s| {
                s.job
                    .as_ref()
                    .is_some_and(|j| j.priority == Priority::Interactive && !j.decoding)
            })
    }

    /// KV cells held by running jobs, and by finished slots kept for reuse.
    pub fn kv_cells(&self) -> (usize, usize) {
        self.slots.iter().fold((0, 0), |(busy, kept), s| {
            if s.job.is_some() {
                (busy + s.cached.len(), kept)
            } else {
                (busy, kept + s.cached.len())
            }
        })
    }

    /// Remove queued jobs the predicate rejects (clients that went away), returning them.
    pub fn drain_queued(&mut self, mut gone: impl FnMut(&P) -> bool) -> Vec<Job<P>> {
        let mut dropped = drain_where(&mut self.queue, &mut gone);
        dropped.extend(drain_where(&mut self.batch, &mut gone));
        dropped
    }

    /// Slots whose running job the predicate rejects.
    pub fn running_where(&self, mut pred: impl FnMut(&P) -> bool) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].job.as_ref().is_some_and(|j| pred(&j.payload)))
            .collect()
    }

    pub fn job(&self, slot: usize) -> Option<&Running<P>> {
        self.slots.get(slot).and_then(|s| s.job.as_ref())
    }

    pub fn job_mut(&mut self, slot: usize) -> Option<&mut Running<P>> {
        self.slots.get_mut(slot).and_then(|s| s.job.as_mut())
    }

    /// Tokens in the KV cache of `slot`.
    pub fn cached(&self, slot: usize) -> &[Token] {
        self.slots.get(slot).map_or(&[], |s| &s.cached)
    }

    /// Free slots for waiting interactive jobs by pre-empting running batch jobs, as many as
    /// the interactive queue needs beyond the free slots. The victims are the batch jobs with
    /// the least in the KV cache (the cheapest to recompute), the latest admitted among equals.
    /// Each goes back to the head of the batch queue with its prompt and generated tokens (see
    /// [`Job::is_resumed`]); its slot keeps its KV as reusable cache. Call before [`State::admit`].
    pub fn preempt(&mut self) -> Vec<Preemption> {
        let free = self.slots.iter().filter(|s| s.job.is_none()).count();
        let wanted = self.queue.len().saturating_sub(free);
        if wanted == 0 {
            return Vec::new();
        }
        let mut victims: Vec<usize> = self.running_where_class(Priority::Batch).collect();
        victims.sort_by_key(|&i| {
            let ticket = self.slots[i].job.as_ref().map_or(0, |j| j.ticket);
            (self.slots[i].cached.len(), std::cmp::Reverse(ticket))
        });
        victims.truncate(wanted);
        let mut out = Vec::with_capacity(victims.len());
        let mut requeued = Vec::with_capacity(victims.len());
        for slot in victims {
            let s = &mut self.slots[slot];
            let Some(job) = s.job.take() else { continue };
            // The slot's cached tokens are the job's, from position 0; what is pending (the
            // prompt's rest, or the last sampled token) follows them.
            let mut tokens = s.cached.clone();
            tokens.extend_from_slice(&job.pending);
            out.push(Preemption {
                slot,
                generated: job.generated,
            });
            requeued.push((
                job.ticket,
                Job {
                    prompt: tokens,
                    max_new: job.max_new,
                    priority: job.priority,
                    payload: job.payload,
                    resumed: Some(Progress {
                        prompt_len: job.prompt_len,
                        reused: job.reused,
                        generated: job.generated,
                        preemptions: job.preemptions + 1,
                    }),
                },
            ));
        }
        // Resume in the order they were first admitted.
        requeued.sort_by_key(|(ticket, _)| *ticket);
        self.enqueue_front(requeued.into_iter().map(|(_, job)| job).collect());
        out
    }

    /// Move queued jobs into free slots: interactive ones first come first served, then batch
    /// ones, but only while no interactive job waits. Each admission says which KV to keep or
    /// share so that the longest prefix already computed anywhere is reused.
    pub fn admit(&mut self) -> Vec<Admission> {
        let mut out = Vec::new();
        loop {
            let class = if !self.queue.is_empty() {
                Priority::Interactive
            } else if !self.batch.is_empty() {
                Priority::Batch
            } else {
                break;
            };
            let Some(dst) = self.pick_free_slot() else {
                break;
            };
            let Some(job) = self.class_mut(class).pop_front() else {
                break;
            };
            // At least one prompt token is always computed, to get logits to sample from.
            let cap = job.prompt.len().saturating_sub(1);
            let own = common_prefix(&self.slots[dst].cached, &job.prompt).min(cap);
            let donor = (0..self.slots.len())
                .filter(|&i| i != dst && self.slots[i].job.is_some())
                .map(|i| {
                    (
                        i,
                        common_prefix(&self.slots[i].cached, &job.prompt).min(cap),
                    )
                })
                .max_by_key(|&(_, n)| n)
                .filter(|&(_, n)| n > own);
            let (kv, reused) = match donor {
                Some((src, len)) => {
                    let shared = self.slots[src].cached[..len].to_vec();
                    self.slots[dst].cached = shared;
                    (KvOp::Copy { src, dst, len }, len)
                }
                None => {
                    self.slots[dst].cached.truncate(own);
                    (
                        KvOp::Trim {
                            seq: dst,
                            keep: own,
                        },
                        own,
                    )
                }
            };
            self.clock += 1;
            let slot = &mut self.slots[dst];
            slot.last_used = self.clock;
            let progress = job.resumed.unwrap_or(Progress {
                prompt_len: job.prompt.len(),
                reused,
                generated: 0,
                preemptions: 0,
            });
            slot.job = Some(Running {
                priority: job.priority,
                prompt_len: progress.prompt_len,
                reused: progress.reused,
                max_new: job.max_new,
                generated: progress.generated,
                preemptions: progress.preemptions,
                pending: job.prompt[reused..].to_vec(),
                decoding: false,
                ticket: self.clock,
                admitted_step: self.steps,
                payload: job.payload,
            });
            out.push(Admission {
                slot: dst,
                reused,
                kv,
            });
        }
        out
    }

    /// The free slot whose cache shares the most with the next job to admit; ties go to the
    /// least recently used, so fresh caches survive longest, then to the lowest id.
    fn pick_free_slot(&self) -> Option<usize> {
        let prompt = &self.queue.front().or(self.batch.front())?.prompt;
        (0..self.slots.len())
            .filter(|&i| self.slots[i].job.is_none())
            .max_by_key(|&i| {
                let s = &self.slots[i];
                (
                    common_prefix(&s.cached, prompt),
                    std::cmp::Reverse(s.last_used),
                    std::cmp::Reverse(i),
                )
            })
    }

    /// What to feed in the next decode step: one token for every decoding job, then prompt chunks
    /// while the step's token budget lasts, shortest remaining prompt first.
    ///
    /// Shortest-first minimises the typical time to first token when prompts of very different
    /// lengths arrive together (a 64-token question no longer waits behind a 1,500-token
    /// document). So that long prompts cannot starve, a prompt gains `step_tokens /
    /// PREFILL_AGING_SHARE` tokens of priority for every step it has waited; equal priorities go
    /// in admission order. Interactive prompts go before batch prompts, and batch prompts get
    /// nothing while an interactive prompt waits ([`State::interactive_prompt_waits`]), and at
    /// most a [`BATCH_PREFILL_SHARE`] of the step otherwise.
    pub fn plan(&self) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut budget = self.limits.step_tokens;
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(job) = s
                .job
                .as_ref()
                .filter(|j| j.decoding && !j.pending.is_empty())
            {
                chunks.push(Chunk {
                    slot: i,
                    start: s.cached.len(),
                    tokens: job.pending.clone(),
                    sample: true,
                });
                budget = budget.saturating_sub(job.pending.len());
            }
        }
        let aging = (self.limits.step_tokens / PREFILL_AGING_SHARE).max(1);
        let interactive_waits = self.interactive_prompt_waits();
        let mut prefilling: Vec<(bool, i64, u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let job = s.job.as_ref().filter(|j| !j.decoding)?;
                let batch = job.priority == Priority::Batch;
                if batch && interactive_waits {
                    return None;
                }
                let waited = self.steps.saturating_sub(job.admitted_step);
                let key = prefill_priority(job.pending.len(), waited, aging);
                Some((batch, key, job.ticket, i))
            })
            .collect();
        prefilling.sort_unstable();
        let mut batch_budget = (self.limits.step_tokens / BATCH_PREFILL_SHARE).max(1);
        for (batch, _, _, i) in prefilling {
            if budget == 0 || (batch && batch_budget == 0) {
                break;
            }
            let s = &self.slots[i];
            let Some(job) = &s.job else { continue };
            let mut n = job.pending.len().min(budget);
            if batch {
                n = n.min(batch_budget);
                batch_budget -= n;
            }
            budget -= n;
            chunks.push(Chunk {
                slot: i,
                start: s.cached.len(),
                tokens: job.pending[..n].to_vec(),
                sample: n == job.pending.len(),
            });
        }
        chunks
    }

    /// The planned chunks were decoded: their tokens are now in the KV cache.
    pub fn commit(&mut self, chunks: &[Chunk]) {
        self.steps += 1;
        for c in chunks {
            let slot = &mut self.slots[c.slot];
            slot.cached.extend_from_slice(&c.tokens);
            if let Some(job) = slot.job.as_mut() {
                job.pending.drain(..c.tokens.len().min(job.pending.len()));
                if c.sample {
                    job.decoding = true;
                }
            }
        }
    }

    /// A token was sampled for `slot` and generation goes on: feed it next step.
    pub fn push_token(&mut self, slot: usize, token: Token) {
        if let Some(job) = self.slots.get_mut(slot).and_then(|s| s.job.as_mut()) {
            job.generated += 1;
            job.pending.push(token);
        }
    }

    /// The job in `slot` ended (finished, cancelled or failed). The slot is free at once; its KV
    /// stays for prefix reuse unless `keep_kv` is false (then the worker clears the sequence).
    pub fn release(&mut self, slot: usize, keep_kv: bool) -> Option<Running<P>> {
        let s = self.slots.get_mut(slot)?;
        if !keep_kv {
            s.cached.clear();
        }
        s.job.take()
    }

    /// Forget the caches of free slots (to make room in the KV cache); returns their ids.
    pub fn evict_free(&mut self) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.job.is_none() && !s.cached.is_empty() {
                s.cached.clear();
                out.push(i);
            }
        }
        out
    }
}

/// Remove the jobs `gone` rejects from `queue`, keeping the others in order.
fn drain_where<P>(queue: &mut VecDeque<Job<P>>, gone: &mut impl FnMut(&P) -> bool) -> Vec<Job<P>> {
    // Called every step: only rebuild the queue when someone actually left.
    if !queue.iter().any(|j| gone(&j.payload)) {
        return Vec::new();
    }
    let (dropped, kept): (Vec<_>, Vec<_>) = queue.drain(..).partition(|j| gone(&j.payload));
    *queue = kept.into();
    dropped
}

/// Lower goes first: the prompt tokens left, less `aging` for every step waited.
fn prefill_priority(left: usize, waited_steps: u64, aging: usize) -> i64 {
    let left = i64::try_from(left).unwrap_or(i64::MAX);
    let credit = i64::try_from(waited_steps.saturating_mul(aging as u64)).unwrap_or(i64::MAX);
    left.saturating_sub(credit)
}

fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
