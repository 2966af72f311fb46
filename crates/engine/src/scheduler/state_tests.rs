//! Deterministic tests of the batching state: no model, no threads; each test plays the worker's
//! part by hand (plan → commit → push_token/release).

use super::*;

fn limits(slots: usize, step_tokens: usize, max_queue: usize) -> Limits {
    Limits {
        slots,
        slot_context: 4096,
        step_tokens,
        max_queue,
    }
}

fn job(prompt: std::ops::Range<i32>, tag: &'static str) -> Job<&'static str> {
    Job::new(prompt.collect(), 100, Priority::Interactive, tag)
}

/// One decode step as the worker does it: plan, commit, sample token 7 for every chunk that
/// asks for logits. Returns the plan.
fn step(s: &mut State<&'static str>) -> Vec<Chunk> {
    let plan = s.plan();
    s.commit(&plan);
    for c in plan.iter().filter(|c| c.sample) {
        s.push_token(c.slot, 7);
    }
    plan
}

fn shape(plan: &[Chunk]) -> Vec<(usize, usize, usize, bool)> {
    plan.iter()
        .map(|c| (c.slot, c.start, c.tokens.len(), c.sample))
        .collect()
}

#[test]
fn prompt_is_prefilled_in_chunks_under_the_budget() {
    let mut s = State::new(limits(2, 8, 4));
    s.enqueue(job(0..20, "a")).expect("queued");
    assert_eq!(s.admit().len(), 1);
    assert_eq!(shape(&step(&mut s)), vec![(0, 0, 8, false)]);
    assert_eq!(shape(&step(&mut s)), vec![(0, 8, 8, false)]);
    assert_eq!(shape(&step(&mut s)), vec![(0, 16, 4, true)]);
    // Now decoding: one token per step, at the next position.
    assert_eq!(shape(&step(&mut s)), vec![(0, 20, 1, true)]);
    assert_eq!(s.job(0).map(|j| j.generated), Some(2));
}

#[test]
fn new_request_joins_mid_batch_and_decoders_go_first() {
    let mut s = State::new(limits(2, 8, 4));
    s.enqueue(job(0..4, "a")).expect("queued");
    s.admit();
    step(&mut s); // a's prompt
    step(&mut s); // a decodes
    s.enqueue(job(100..120, "b")).expect("queued");
    let adm = s.admit();
    assert_eq!(adm[0].slot, 1);
    // a keeps decoding (1 token) while b prefills with what is left of the budget (7).
    assert_eq!(
        shape(&step(&mut s)),
        vec![(0, 5, 1, true), (1, 0, 7, false)]
    );
    assert_eq!(
        shape(&step(&mut s)),
        vec![(0, 6, 1, true), (1, 7, 7, false)]
    );
    assert_eq!(
        shape(&step(&mut s)),
        vec![(0, 7, 1, true), (1, 14, 6, true)]
    );
    assert_eq!(
        shape(&step(&mut s)),
        vec![(0, 8, 1, true), (1, 20, 1, true)]
    );
}

#[test]
fn slot_exhaustion_queues_then_admits_when_a_slot_frees() {
    let mut s = State::new(limits(1, 64, 4));
    s.enqueue(job(0..4, "a")).expect("queued");
    s.enqueue(job(50..54, "b")).expect("queued");
    assert_eq!(s.admit().len(), 1);
    assert_eq!(s.queued(), 1);
    step(&mut s);
    assert!(s.admit().is_empty(), "no free slot while a runs");
    let done = s.release(0, true).expect("a was running");
    assert_eq!(done.payload, "a");
    let adm = s.admit();
    assert_eq!(adm.len(), 1);
    assert_eq!(s.job(0).map(|j| j.payload), Some("b"));
    assert_eq!(s.queued(), 0);
}

#[test]
fn full_queue_hands_the_job_back() {
    let mut s = State::new(limits(1, 64, 2));
    s.enqueue(job(0..4, "a")).expect("queued");
    s.enqueue(job(0..4, "b")).expect("queued");
    let back = s.enqueue(job(0..4, "c")).expect_err("queue is full");
    assert_eq!(back.payload, "c");
}

#[test]
fn finished_slot_prefix_is_reused_in_place() {
    let mut s = State::new(limits(2, 64, 4));
    s.enqueue(job(0..10, "a")).expect("queued");
    s.admit();
    step(&mut s);
    step(&mut s); // generated token 7 fed: cache = 0..10 + [7]
    s.release(0, true);
    // Same 10-token prefix, different continuation.
    let mut prompt: Vec<i32> = (0..10).collect();
    prompt.extend([42, 43]);
    s.enqueue(Job::new(prompt, 5, Priority::Interactive, "b"))
        .expect("queued");
    let adm = s.admit();
    assert_eq!(
        adm,
        vec![Admission {
            slot: 0,
            reused: 10,
            kv: KvOp::Trim { seq: 0, keep: 10 }
        }]
    );
    assert_eq!(shape(&s.plan()), vec![(0, 10, 2, true)]);
    assert_eq!(s.job(0).map(|j| j.reused), Some(10));
}

#[test]
fn identical_prompt_recomputes_only_its_last_token() {
    let mut s = State::new(limits(1, 64, 4));
    s.enqueue(job(0..10, "a")).expect("queued");
    s.admit();
    step(&mut s);
    s.release(0, true);
    s.enqueue(job(0..10, "b")).expect("queued");
    let adm = s.admit();
    assert_eq!(adm[0].reused, 9);
    assert_eq!(shape(&s.plan()), vec![(0, 9, 1, true)]);
}

#[test]
fn running_sequence_prefix_is_shared_into_another_slot() {
    let mut s = State::new(limits(2, 64, 4));
    s.enqueue(job(0..30, "a")).expect("queued");
    s.admit();
    step(&mut s); // a's 30 prompt tokens are cached, a is decoding
    let mut prompt: Vec<i32> = (0..20).collect();
    prompt.extend([99, 98, 97]);
    s.enqueue(Job::new(prompt, 5, Priority::Interactive, "b"))
        .expect("queued");
    let adm = s.admit();
    assert_eq!(
        adm,
        vec![Admission {
            slot: 1,
            reused: 20,
            kv: KvOp::Copy {
                src: 0,
                dst: 1,
                len: 20
            }
        }]
    );
    assert_eq!(s.cached(1), &(0..20).collect::<Vec<_>>()[..]);
    assert_eq!(shape(&s.plan()), vec![(0, 30, 1, true), (1, 20, 3, true)]);
}

#[test]
fn free_slot_with_the_best_prefix_is_chosen_over_lru() {
    let mut s = State::new(limits(3, 64, 8));
    for (r, tag) in [(0..8, "a"), (100..108, "b"), (200..208, "c")] {
        s.enqueue(job(r, tag)).expect("queued");
    }
    s.admit();
    step(&mut s);
    for slot in 0..3 {
        s.release(slot, true);
    }
    s.enqueue(job(100..110, "d")).expect("queued");
    assert_eq!(s.admit()[0].slot, 1);
}

#[test]
fn cancelled_queued_jobs_are_dropped_and_released_slots_free_at_once() {
    let mut s = State::new(limits(1, 64, 4));
    s.enqueue(job(0..4, "a")).expect("queued");
    s.enqueue(job(0..4, "gone")).expect("queued");
    s.admit();
    let dropped = s.drain_queued(|p| *p == "gone");
    assert_eq!(dropped.len(), 1);
    assert_eq!(s.queued(), 0);
    assert_eq!(s.running_where(|p| *p == "a"), vec![0]);
    s.release(0, false);
    assert!(s.is_idle());
    assert_eq!(s.kv_cells(), (0, 0));
}

#[test]
fn shortest_remaining_prompt_is_prefilled_first() {
    let mut s = State::new(limits(3, 8, 4));
    s.enqueue(job(0..20, "long")).expect("queued");
    s.enqueue(job(100..104, "short")).expect("queued");
    assert_eq!(s.admit().len(), 2);
    // The later, shorter prompt takes the budget first and samples this step.
    assert_eq!(
        shape(&step(&mut s)),
        vec![(1, 0, 4, true), (0, 0, 4, false)]
    );
}

#[test]
fn a_long_prompt_is_not_starved_by_a_stream_of_short_ones() {
    // Budget 8, so a waiting prompt gains 1 token of priority per step. Every step a new
    // 8-token prompt arrives, enough to fill the budget on its own; each finishes after its
    // first token. Without aging the 40-token prompt would never get a token.
    let mut s = State::new(limits(16, 8, 16));
    s.enqueue(job(0..40, "long")).expect("queued");
    s.admit();
    let mut steps = 0;
    while s.job(0).is_some_and(|j| !j.decoding) {
        steps += 1;
        assert!(
            steps <= 60,
            "the long prompt is still prefilling after {steps} steps"
        );
        let start = 1000 + 10 * steps;
        s.enqueue(job(start..start + 8, "short")).expect("queued");
        s.admit();
        step(&mut s);
        for slot in s.running_where(|tag| *tag == "short") {
            if s.job(slot).is_some_and(|j| j.generated > 0) {
                s.release(slot, false);
            }
        }
    }
    // It waits while its priority (40 − steps waited) is worse than a fresh short one's (8).
    assert!(steps > 30, "aged too fast: done after {steps} steps");
}

#[test]
fn prefill_priority_ages_by_steps_waited() {
    assert_eq!(prefill_priority(1500, 0, 64), 1500);
    assert_eq!(prefill_priority(1500, 10, 64), 860);
    assert!(prefill_priority(1500, 30, 64) < prefill_priority(64, 0, 64));
    assert_eq!(prefill_priority(usize::MAX, u64::MAX, usize::MAX), 0);
}

// Priority classes: interactive work first, batch work in what it leaves, pre-emption.

fn batch(prompt: std::ops::Range<i32>, tag: &'static str) -> Job<&'static str> {
    Job::new(prompt.collect(), 100, Priority::Batch, tag)
}

/// The scheduler's part of one worker iteration: pre-empt, admit, then one decode step.
fn iterate(s: &mut State<&'static str>) -> (Vec<Preemption>, Vec<Admission>, Vec<Chunk>) {
    let preempted = s.preempt();
    let admitted = s.admit();
    let plan = step(s);
    (preempted, admitted, plan)
}

fn slot_of(s: &State<&'static str>, tag: &str) -> Option<usize> {
    s.running_where(|t| *t == tag).first().copied()
}

#[test]
fn an_interactive_arrival_is_admitted_at_the_next_step_preempting_batch_work() {
    let mut s = State::new(limits(2, 64, 8));
    s.enqueue(batch(0..10, "b1")).expect("queued");
    s.enqueue(batch(100..130, "b2")).expect("queued");
    iterate(&mut s);
    iterate(&mut s); // both batch jobs decode; every slot is full
    assert_eq!(s.running_batch(), 2);
    s.enqueue(job(200..205, "i")).expect("queued");
    let (preempted, admitted, plan) = iterate(&mut s);
    // The cheapest batch job to recompute (fewest cached tokens) gave its slot up.
    assert_eq!(
        preempted,
        vec![Preemption {
            slot: 0,
            generated: 2
        }]
    );
    assert_eq!(admitted.len(), 1);
    assert_eq!(slot_of(&s, "i"), Some(0));
    // In this very step the interactive prompt is computed and sampled.
    assert!(plan.contains(&Chunk {
        slot: 0,
        start: 0,
        tokens: (200..205).collect(),
        sample: true
    }));
    assert_eq!((s.running_batch(), s.queued_batch()), (1, 1));
}

#[test]
fn no_prefill_budget_goes_to_batch_work_while_an_interactive_prompt_waits() {
    let mut s = State::new(limits(3, 8, 8));
    s.enqueue(batch(0..40, "long batch")).expect("queued");
    s.enqueue(batch(100..102, "short batch")).expect("queued");
    iterate(&mut s); // the short batch prompt decodes from now on
    s.enqueue(job(200..220, "i")).expect("queued");
    // While the interactive prompt prefills (7 + 7 + 6 tokens), the batch prompt gets nothing,
    // not even what the last chunk leaves of the budget; the decoding batch sequence still
    // takes its one token a step.
    let short = slot_of(&s, "short batch").expect("running");
    for _ in 0..3 {
        let (preempted, _, plan) = iterate(&mut s);
        assert!(preempted.is_empty(), "a free slot was there: {preempted:?}");
        let i = slot_of(&s, "i").expect("admitted");
        assert!(
            plan.iter()
                .all(|c| c.slot == i || (c.slot == short && c.tokens.len() == 1)),
            "batch prefill while an interactive prompt waits: {:?}",
            shape(&plan)
        );
        assert!(plan.iter().any(|c| c.slot == i), "{:?}", shape(&plan));
    }
    // The interactive prompt is complete: batch prefill resumes.
    let i = slot_of(&s, "i").expect("admitted");
    assert!(s.job(i).is_some_and(|j| j.generated == 1));
    let long = slot_of(&s, "long batch").expect("running");
    let plan = s.plan();
    assert!(
        plan.iter().any(|c| c.slot == long && c.tokens.len() > 1),
        "{:?}",
        shape(&plan)
    );
}

#[test]
fn an_interactive_job_waiting_for_a_slot_stops_batch_prefill_and_admission() {
    let mut s = State::new(limits(1, 8, 8));
    s.enqueue(job(0..20, "i1")).expect("queued");
    s.enqueue(batch(100..104, "b")).expect("queued");
    s.enqueue(job(200..204, "i2")).expect("queued");
    let (_, admitted, _) = iterate(&mut s);
    assert_eq!(slot_of(&s, "i1"), Some(admitted[0].slot));
    // i1 runs to completion; the batch job, queued before i2, still waits behind it.
    while s.job(0).is_some_and(|j| j.generated == 0) {
        iterate(&mut s);
    }
    s.release(0, true);
    assert!(s.preempt().is_empty());
    s.admit();
    assert_eq!(s.job(0).map(|j| j.payload), Some("i2"));
    assert_eq!(s.queued_batch(), 1);
}

#[test]
fn interactive_work_is_never_preempted() {
    let mut s = State::new(limits(2, 64, 8));
    s.enqueue(job(0..4, "i1")).expect("queued");
    s.enqueue(batch(10..14, "b")).expect("queued");
    iterate(&mut s);
    s.enqueue(job(20..24, "i2")).expect("queued");
    s.enqueue(job(30..34, "i3")).expect("queued");
    // Two interactive jobs wait for one slot held by batch work: only the batch job yields.
    let (preempted, admitted, _) = iterate(&mut s);
    assert_eq!(preempted.len(), 1);
    assert_eq!(admitted.len(), 1);
    assert_eq!(s.running_batch(), 0);
    assert!(s.preempt().is_empty(), "only interactive work runs now");
    assert_eq!(s.queued(), 2);
}

#[test]
fn a_preempted_job_resumes_where_it_stopped_and_counts_its_prompt_once() {
    let mut s = State::new(limits(1, 64, 8));
    s.enqueue(batch(0..10, "b")).expect("queued");
    for _ in 0..4 {
        iterate(&mut s); // prompt, then three tokens fed: 0..10 + [7, 7, 7], a 4th pending
    }
    assert_eq!(s.job(0).map(|j| j.generated), Some(4));
    s.enqueue(job(0..6, "i")).expect("queued");
    let (preempted, _, _) = iterate(&mut s);
    assert_eq!(preempted[0].generated, 4);
    // The interactive job took the slot (and reused the shared prefix of the batch job's KV).
    assert_eq!(s.job(0).map(|j| (j.payload, j.reused)), Some(("i", 5)));
    s.release(0, true);
    let admitted = s.admit();
    let running = s.job(0).expect("resumed");
    assert_eq!(running.payload, "b");
    assert_eq!(
        (
            running.prompt_len,
            running.generated,
            running.reused,
            running.preemptions
        ),
        (10, 4, 0, 1)
    );
    // What the slot still caches of it is reused; the rest of prompt + generated tokens is
    // computed again, and the next token is sampled at its end.
    let mut whole: Vec<i32> = (0..10).collect();
    whole.extend([7, 7, 7, 7]);
    let reused = admitted[0].reused;
    assert_eq!(reused, 6, "the prefix the interactive job left");
    assert_eq!(
        s.plan(),
        vec![Chunk {
            slot: 0,
            start: reused,
            tokens: whole[reused..].to_vec(),
            sample: true
        }]
    );
    step(&mut s);
    assert_eq!(s.job(0).map(|j| j.generated), Some(5));
    assert_eq!(s.cached(0), &whole[..]);
}

#[test]
fn a_preempted_job_whose_client_left_is_dropped_from_the_batch_queue() {
    let mut s = State::new(limits(1, 64, 8));
    s.enqueue(batch(0..10, "gone")).expect("queued");
    iterate(&mut s);
    s.enqueue(job(20..24, "i")).expect("queued");
    iterate(&mut s);
    assert_eq!(s.queued_batch(), 1);
    assert_eq!(s.drain_queued(|t| *t == "gone").len(), 1);
    assert_eq!(s.queued(), 0);
}

#[test]
fn batch_work_never_fills_the_queue_for_interactive_work() {
    let mut s = State::new(limits(1, 64, 2));
    s.enqueue(batch(0..4, "b1")).expect("queued");
    s.enqueue(batch(0..4, "b2")).expect("queued");
    assert!(s.enqueue(batch(0..4, "b3")).is_err());
    s.enqueue(job(0..4, "i1"))
        .expect("interactive has its own bound");
    s.enqueue(job(0..4, "i2"))
        .expect("interactive has its own bound");
    assert!(s.enqueue(job(0..4, "i3")).is_err());
    assert!(s.enqueue(batch(0..4, "b4")).is_err(), "batch counts both");
}

#[test]
fn batch_prompts_take_at_most_a_quarter_of_a_step() {
    // A step cannot be interrupted: an interactive arrival waits for the one in flight, so
    // batch prefill keeps steps short.
    let mut s = State::new(limits(3, 64, 8));
    s.enqueue(batch(0..40, "b1")).expect("queued");
    s.enqueue(batch(100..140, "b2")).expect("queued");
    s.admit();
    let plan = step(&mut s);
    assert_eq!(plan.iter().map(|c| c.tokens.len()).sum::<usize>(), 16);
    // An interactive prompt still gets the whole budget left.
    s.enqueue(job(200..300, "i")).expect("queued");
    s.admit();
    let plan = step(&mut s);
    assert_eq!(shape(&plan), vec![(2, 0, 64, false)]);
}
