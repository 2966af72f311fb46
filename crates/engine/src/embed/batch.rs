//! The embedding worker's pure state: inputs of many requests waiting, batches planned under
//! a token and a sequence budget (round-robin over requests, so one request with many inputs
//! does not hold back the others), and results gathered per request. No llama.cpp here; the
//! worker applies the plans. Unit-tested below.

use std::collections::{HashMap, VecDeque};

/// One input of a request, planned into a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub job: u64,
    pub index: usize,
    pub tokens: Vec<i32>,
}

#[derive(Debug)]
struct Job {
    /// Inputs not yet planned, in order: (index, tokens).
    pending: VecDeque<(usize, Vec<i32>)>,
    results: Vec<Option<Vec<f32>>>,
    left: usize,
}

/// Waiting inputs and the results gathered so far.
#[derive(Debug)]
pub struct Batcher {
    /// Tokens per batch (llama.cpp's batch and micro-batch: a non-causal model needs each
    /// sequence whole in one).
    pub budget_tokens: usize,
    /// Sequences per batch.
    pub max_seqs: usize,
    jobs: HashMap<u64, Job>,
    /// Jobs with inputs still to plan, in round-robin order.
    turn: VecDeque<u64>,
}

impl Batcher {
    pub fn new(budget_tokens: usize, max_seqs: usize) -> Self {
        Self {
            budget_tokens: budget_tokens.max(1),
            max_seqs: max_seqs.max(1),
            jobs: HashMap::new(),
            turn: VecDeque::new(),
        }
    }

    /// Adds a request's inputs (each at most `budget_tokens` long: the engine checks before).
    /// A request without inputs is finished at once (`Some(vec![])`).
    pub fn push(&mut self, job: u64, inputs: Vec<Vec<i32>>) -> Option<Vec<Vec<f32>>> {
        if inputs.is_empty() {
            return Some(Vec::new());
        }
        let n = inputs.len();
        self.jobs.insert(
            job,
            Job {
                pending: inputs.into_iter().enumerate().collect(),
                results: vec![None; n],
                left: n,
            },
        );
        self.turn.push_back(job);
        None
    }

    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn jobs(&self) -> impl Iterator<Item = u64> + '_ {
        self.jobs.keys().copied()
    }

    /// Forgets a request (its client left); its inputs already planned are dropped on
    /// completion.
    pub fn cancel(&mut self, job: u64) {
        self.jobs.remove(&job);
        self.turn.retain(|j| *j != job);
    }

    /// The next batch: one input from each waiting request in turn while the budgets allow;
    /// never empty while inputs wait (an input longer than the budget goes alone).
    pub fn plan(&mut self) -> Vec<Planned> {
        let mut batch = Vec::new();
        let mut tokens = 0;
        // Requests whose next input does not fit now: first in line for the next batch.
        let mut skipped = Vec::new();
        while batch.len() < self.max_seqs {
            let Some(job) = self.turn.pop_front() else {
                break;
            };
            let Some(state) = self.jobs.get_mut(&job) else {
                continue;
            };
            let Some((_, next)) = state.pending.front() else {
                continue;
            };
            if !batch.is_empty() && tokens + next.len() > self.budget_tokens {
                skipped.push(job);
                continue;
            }
            let Some((index, input)) = state.pending.pop_front() else {
                continue;
            };
            tokens += input.len();
            batch.push(Planned {
                job,
                index,
                tokens: input,
            });
            if !state.pending.is_empty() {
                self.turn.push_back(job);
            }
        }
        for job in skipped.into_iter().rev() {
            self.turn.push_front(job);
        }
        batch
    }

    /// Records an input's vector; returns the request's vectors, in input order, once all are
    /// in.
    pub fn complete(&mut self, job: u64, index: usize, vector: Vec<f32>) -> Option<Vec<Vec<f32>>> {
        let state = self.jobs.get_mut(&job)?;
        let slot = state.results.get_mut(index)?;
        if slot.replace(vector).is_none() {
            state.left -= 1;
        }
        if state.left > 0 {
            return None;
        }
        let done = self.jobs.remove(&job)?;
        Some(done.results.into_iter().flatten().collect())
    }

    /// Fails every input of `job` (the batch holding it failed); the request is forgotten.
    pub fn fail(&mut self, job: u64) {
        self.cancel(job);
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(len: usize, mark: i32) -> Vec<i32> {
        vec![mark; len]
    }

    #[test]
    fn batches_fill_round_robin_under_the_budgets() {
        let mut b = Batcher::new(10, 8);
        assert!(b
            .push(1, vec![input(3, 1), input(3, 1), input(3, 1)])
            .is_none());
        assert!(b.push(2, vec![input(2, 2)]).is_none());
        let plan = b.plan();
        // One of each request in turn: 1, 2, 1 (8 tokens); the next of 1 (3) would pass 10.
        let got: Vec<_> = plan.iter().map(|p| (p.job, p.index)).collect();
        assert_eq!(got, [(1, 0), (2, 0), (1, 1)]);
        assert_eq!(
            b.plan()
                .iter()
                .map(|p| (p.job, p.index))
                .collect::<Vec<_>>(),
            [(1, 2)]
        );
        assert!(b.plan().is_empty());
    }

    #[test]
    fn the_sequence_budget_holds_and_a_long_input_goes_alone() {
        let mut b = Batcher::new(100, 2);
        b.push(1, (0..5).map(|i| input(1, i)).collect());
        assert_eq!(b.plan().len(), 2);
        let mut b = Batcher::new(4, 8);
        b.push(7, vec![input(9, 0), input(1, 0)]);
        assert_eq!(b.plan().len(), 1, "an over-budget input is planned alone");
        assert_eq!(b.plan().len(), 1);
    }

    #[test]
    fn a_skipped_input_does_not_starve() {
        let mut b = Batcher::new(10, 8);
        b.push(1, vec![input(8, 1)]);
        b.push(2, vec![input(6, 2)]);
        b.push(3, vec![input(2, 3)]);
        let first: Vec<_> = b.plan().iter().map(|p| p.job).collect();
        assert_eq!(first, [1, 3]);
        assert_eq!(b.plan().iter().map(|p| p.job).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn results_come_back_in_input_order_once_all_are_in() {
        let mut b = Batcher::new(10, 8);
        b.push(1, vec![input(1, 0), input(1, 0)]);
        let plan = b.plan();
        assert_eq!(plan.len(), 2);
        assert!(b.complete(1, 1, vec![2.0]).is_none());
        assert_eq!(
            b.complete(1, 0, vec![1.0]),
            Some(vec![vec![1.0], vec![2.0]])
        );
        assert!(b.is_idle());
        // A cancelled request's late results are dropped.
        b.push(2, vec![input(1, 0)]);
        b.plan();
        b.cancel(2);
        assert!(b.complete(2, 0, vec![1.0]).is_none());
        assert!(b.push(3, vec![]).is_some());
    }

    #[test]
    fn normalize_makes_unit_vectors() {
        let mut v = [3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut z = [0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, [0.0, 0.0]);
    }
}
