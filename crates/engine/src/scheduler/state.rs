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

use std::collections::VecDeque;

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
    pub payload: P,
}

/// A job that owns a slot.
#[derive(Debug)]
pub struct Running<P> {
    pub payload: P,
    pub prompt_len: usize,
    /// Prompt tokens whose KV was reused instead of computed.
    pub reused: usize,
    pub max_new: usize,
    /// Tokens sampled so far.
    pub generated: usize,
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

pub struct State<P> {
    limits: Limits,
    slots: Vec<Slot<P>>,
    queue: VecDeque<Job<P>>,
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
            clock: 0,
            steps: 0,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Queue a job; a full queue hands it back.
    pub fn enqueue(&mut self, job: Job<P>) -> Result<(), Job<P>> {
        if self.queue.len() >= self.limits.max_queue {
            return Err(job);
        }
        self.queue.push_back(job);
        Ok(())
    }

    /// Put jobs at the head of the queue, in order, whatever its length (the other answers of a
    /// request already admitted).
    pub fn enqueue_front(&mut self, jobs: Vec<Job<P>>) {
        for job in jobs.into_iter().rev() {
            self.queue.push_front(job);
        }
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn running(&self) -> usize {
        self.slots.iter().filter(|s| s.job.is_some()).count()
    }

    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.running() == 0
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
        // Called every step: only rebuild the queue when someone actually left.
        if !self.queue.iter().any(|j| gone(&j.payload)) {
            return Vec::new();
        }
        let (dropped, kept): (Vec<_>, Vec<_>) =
            self.queue.drain(..).partition(|j| gone(&j.payload));
        self.queue = kept.into();
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

    /// Move queued jobs into free slots, first come first served. Each admission says which KV
    /// to keep or share so that the longest prefix already computed anywhere is reused.
    pub fn admit(&mut self) -> Vec<Admission> {
        let mut out = Vec::new();
        while !self.queue.is_empty() {
            let Some(dst) = self.pick_free_slot() else {
                break;
            };
            let Some(job) = self.queue.pop_front() else {
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
            slot.job = Some(Running {
                prompt_len: job.prompt.len(),
                reused,
                max_new: job.max_new,
                generated: 0,
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

    /// The free slot whose cache shares the most with the head of the queue; ties go to the
    /// least recently used, so fresh caches survive longest, then to the lowest id.
    fn pick_free_slot(&self) -> Option<usize> {
        let prompt = &self.queue.front()?.prompt;
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
    /// in admission order.
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
        let mut prefilling: Vec<(i64, u64, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let job = s.job.as_ref().filter(|j| !j.decoding)?;
                let waited = self.steps.saturating_sub(job.admitted_step);
                let key = prefill_priority(job.pending.len(), waited, aging);
                Some((key, job.ticket, i))
            })
            .collect();
        prefilling.sort_unstable();
        for (_, _, i) in prefilling {
            if budget == 0 {
                break;
            }
            let s = &self.slots[i];
            let Some(job) = &s.job else { continue };
            let n = job.pending.len().min(budget);
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
