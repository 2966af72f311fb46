//! The queue stepped by hand: fairness, bounds, expiry, ETAs. No threads, no wall clock.

use std::time::{Duration, Instant};

use super::*;

fn config(max_length: usize, max_wait_secs: u64) -> QueueConfig {
    QueueConfig {
        max_length,
        max_wait: Duration::from_secs(max_wait_secs),
        // These tests are about order and bounds, not shares: one tenant may hold it all.
        tenant_share_percent: 100,
        prior_per_slot_per_sec: 1.0,
    }
}

fn shared(max_length: usize, tenant_share_percent: u8) -> QueueConfig {
    QueueConfig {
        tenant_share_percent,
        ..config(max_length, 600)
    }
}

fn tenant(name: &str) -> TenantKey {
    Some(name.to_owned())
}

#[test]
fn b_is_served_within_2k_while_a_has_a_backlog_of_500() {
    let t0 = Instant::now();
    let mut q = State::new(config(10_000, 600));
    for i in 0..500 {
        q.push(tenant("a"), ("a", i), t0).unwrap();
    }
    // A few of A's are taken before B shows up.
    for _ in 0..7 {
        q.pop(t0).unwrap();
    }
    let k = 50;
    for i in 0..k {
        q.push(tenant("b"), ("b", i), t0 + Duration::from_secs(1))
            .unwrap();
    }
    let mut taken = 0;
    let mut b_seen = 0;
    while b_seen < k {
        let e = q.pop(t0 + Duration::from_secs(2)).unwrap();
        taken += 1;
        if e.item.0 == "b" {
            b_seen += 1;
            assert!(
                taken <= 2 * b_seen,
                "B's request #{b_seen} was taken at position {taken}, more than 2×{b_seen}"
            );
        }
    }
    // A's backlog is still mostly there.
    assert!(q.len() >= 500 - 7 - k);
}

#[test]
fn b_positions_reported_at_enqueue_are_at_most_2k() {
    let t0 = Instant::now();
    let mut q = State::new(config(10_000, 600));
    for i in 0..500 {
        q.push(tenant("a"), i, t0).unwrap();
    }
    for k in 1..=20 {
        let (_, pos) = q.push(tenant("b"), 1000 + k, t0).unwrap();
        assert!(pos.position <= 2 * k as usize, "k={k}: {pos:?}");
    }
}

#[test]
fn the_none_tenant_is_a_class_of_its_own() {
    let t0 = Instant::now();
    let mut q = State::new(config(100, 600));
    for i in 0..10 {
        q.push(None, i, t0).unwrap();
    }
    let (_, pos) = q.push(tenant("x"), 99, t0).unwrap();
    assert_eq!(pos.position, 2);
}

#[test]
fn weights_give_proportional_turns() {
    let t0 = Instant::now();
    let mut q = State::new(config(1000, 600));
    q.set_weight("gold", 3);
    for i in 0..100 {
        q.push(tenant("gold"), ("gold", i), t0).unwrap();
        q.push(tenant("free"), ("free", i), t0).unwrap();
    }
    let gold = (0..40)
        .filter(|_| q.pop(t0).unwrap().item.0 == "gold")
        .count();
    assert_eq!(gold, 30, "weight 3 vs 1 takes 3 of every 4 turns");
}

#[test]
fn a_full_queue_refuses_with_retry_after() {
    let t0 = Instant::now();
    let mut q = State::new(config(3, 600));
    for i in 0..3 {
        q.push(None, i, t0).unwrap();
    }
    let full = q.push(None, 3, t0).unwrap_err();
    // Prior of 1/s: three waiting need 3 s.
    assert_eq!(
        full,
        Refusal::Full {
            queued: 3,
            retry_after: 3
        }
    );
    q.pop(t0).unwrap();
    assert!(q.push(None, 4, t0).is_ok());
}

#[test]
fn requests_past_max_wait_expire_in_arrival_order() {
    let t0 = Instant::now();
    let mut q = State::new(config(100, 10));
    q.push(tenant("a"), 1, t0).unwrap();
    q.push(tenant("b"), 2, t0 + Duration::from_secs(3)).unwrap();
    q.push(tenant("a"), 3, t0 + Duration::from_secs(6)).unwrap();
    assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(10)));
    assert!(q.expire(t0 + Duration::from_millis(9_999)).is_empty());
    let gone = q.expire(t0 + Duration::from_secs(13));
    let items: Vec<_> = gone.iter().map(|e| e.item).collect();
    assert_eq!(items, vec![1, 2]);
    assert_eq!(gone[0].waited(t0 + Duration::from_secs(13)).as_secs(), 13);
    assert_eq!(q.len(), 1);
    assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(16)));
}

#[test]
fn eta_follows_the_observed_drain_rate() {
    let t0 = Instant::now();
    let mut q = State::new(config(1000, 600));
    for i in 0..100 {
        q.push(None, i, t0).unwrap();
    }
    // Prior 1/s: the 10th waits about 10 s.
    let tenth = q.positions().nth(9).unwrap().2;
    assert_eq!(
        tenth,
        Position {
            position: 10,
            eta_ms: 10_000
        }
    );
    // Observe 5 completions per second on the one slot for a few seconds (the service times,
    // 400 ms, alone would say 2.5/s: observed drain wins).
    for s in 0..5u64 {
        for j in 0..5u64 {
            let now = t0 + Duration::from_millis(s * 1000 + j * 200);
            q.pop(now).unwrap();
            q.record_completion(now, Duration::from_millis(400), 1, 1);
        }
    }
    q.push(None, 1000, t0 + Duration::from_secs(5)).unwrap();
    let rate = q.drain_rate().per_sec();
    assert!(q.drain_rate().is_observed());
    assert!((rate - 5.0).abs() < 0.5, "rate {rate}");
    let tenth = q.positions().nth(9).unwrap().2;
    assert!((1_800..=2_200).contains(&tenth.eta_ms), "{tenth:?}");
    // Retry-After for the 76 waiting at 5/s.
    assert!((15..=17).contains(&q.retry_after()), "{}", q.retry_after());
}

#[test]
fn requeue_keeps_the_place_and_removal_forgets() {
    let t0 = Instant::now();
    let mut q = State::new(config(10, 600));
    let (a, _) = q.push(None, "first", t0).unwrap();
    let (b, _) = q.push(None, "second", t0).unwrap();
    let e = q.pop(t0).unwrap();
    assert_eq!(e.id, a);
    q.requeue(e);
    assert_eq!(q.peek().map(|(id, _)| id), Some(a));
    assert_eq!(q.remove(b).map(|e| e.item), Some("second"));
    assert_eq!(q.remove(b).map(|e| e.item), None);
    assert_eq!(q.len(), 1);
}

#[test]
fn tenant_bookkeeping_stays_bounded() {
    let t0 = Instant::now();
    let mut q = State::new(config(10, 600));
    for i in 0..10_000 {
        q.push(Some(format!("t{i}")), i, t0).unwrap();
        q.pop(t0).unwrap();
    }
    assert!(q.last_finish.len() <= 32, "{}", q.last_finish.len());
}

#[test]
fn a_tenant_cannot_hold_more_than_its_share_and_others_still_queue() {
    let t0 = Instant::now();
    let mut q = State::new(shared(10, 50));
    for i in 0..5 {
        q.push(tenant("a"), i, t0).unwrap();
    }
    // A holds its 5 of 10: its sixth is refused though the queue has room.
    let refused = q.push(tenant("a"), 5, t0).unwrap_err();
    assert!(
        matches!(
            refused,
            Refusal::OverShare {
                waiting: 5,
                limit: 5,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(q.len(), 5);
    // B (and the tenant-less class) still get in, and B is next after A's first.
    let (_, pos) = q.push(tenant("b"), 100, t0).unwrap();
    assert_eq!(pos.position, 2);
    q.push(None, 200, t0).unwrap();
    assert_eq!(q.held_by(&tenant("a")), 5);
    assert_eq!(q.held_by(&tenant("b")), 1);
}

#[test]
fn over_share_retry_after_is_the_wait_for_its_own_first_request() {
    let t0 = Instant::now();
    // Prior 1/s on one slot.
    let mut q = State::new(shared(100, 10));
    for i in 0..20 {
        q.push(None, i, t0).unwrap();
    }
    for i in 0..10 {
        q.push(tenant("a"), 100 + i, t0).unwrap();
    }
    // A's first waiting request is 2nd in fair order: about 2 s, not the whole backlog's 30 s.
    let Err(Refusal::OverShare { retry_after, .. }) = q.push(tenant("a"), 999, t0) else {
        panic!("A is over its share of 10");
    };
    assert_eq!(retry_after, 2);
    assert_eq!(q.retry_after(), 30);
}

#[test]
fn a_share_frees_up_as_its_requests_leave_the_queue() {
    let t0 = Instant::now();
    let mut q = State::new(shared(4, 50));
    let (a0, _) = q.push(tenant("a"), 0, t0).unwrap();
    q.push(tenant("a"), 1, t0).unwrap();
    assert!(q.push(tenant("a"), 2, t0).is_err());
    // Taken: a place frees up.
    let taken = q.pop(t0).unwrap();
    assert_eq!(taken.id, a0);
    q.push(tenant("a"), 2, t0).unwrap();
    assert!(q.push(tenant("a"), 3, t0).is_err());
    // Put back after a replica bounced it: it counts again (the share may be exceeded by one
    // requeue, never by a push).
    q.requeue(taken);
    assert_eq!(q.held_by(&tenant("a")), 3);
    assert!(q.push(tenant("a"), 3, t0).is_err());
    // Removed (client left) and expired ones free their places too.
    let ids = q.ids_where(|i| *i == 1);
    q.remove(ids[0]).unwrap();
    q.pop(t0).unwrap();
    assert_eq!(q.held_by(&tenant("a")), 1);
    q.push(tenant("a"), 4, t0).unwrap();
    assert_eq!(q.expire(t0 + Duration::from_secs(600)).len(), 2);
    assert_eq!(q.held_by(&tenant("a")), 0);
    assert!(
        q.held.is_empty(),
        "no bookkeeping for tenants with nothing waiting"
    );
}

#[test]
fn the_tenant_less_class_is_bounded_by_max_length_alone() {
    let t0 = Instant::now();
    let mut q = State::new(shared(4, 25));
    for i in 0..4 {
        q.push(None, i, t0).unwrap();
    }
    assert!(matches!(
        q.push(None, 4, t0),
        Err(Refusal::Full { queued: 4, .. })
    ));
    // A full queue refuses a tenant under its share as full, not as over its share.
    assert!(matches!(
        q.push(tenant("a"), 4, t0),
        Err(Refusal::Full { .. })
    ));
}

#[test]
fn a_share_is_at_least_one_request() {
    let t0 = Instant::now();
    let mut q = State::new(shared(3, 1));
    q.push(tenant("a"), 0, t0).unwrap();
    assert!(matches!(
        q.push(tenant("a"), 1, t0),
        Err(Refusal::OverShare { limit: 1, .. })
    ));
}

proptest::proptest! {
    /// Whatever the operations, positions are 1..=len in take order, the queue never holds
    /// more than max_length and no tenant more than its share.
    #[test]
    fn positions_are_dense_and_bounded(ops in proptest::collection::vec((0u8..4, 0u8..5), 1..300)) {
        let t0 = Instant::now();
        let mut q = State::new(QueueConfig { max_wait: Duration::from_secs(30), ..shared(20, 30) });
        let mut now = t0;
        for (op, who) in ops {
            now += Duration::from_millis(700);
            match op {
                0 | 1 => { let _ = q.push(Some(format!("t{who}")), (), now); }
                2 => { q.pop(now); }
                _ => { q.expire(now); }
            }
            proptest::prop_assert!(q.len() <= 20);
            // No tenant holds more than its share (30 % of 20), and the counts add up.
            let held: usize = q.held.values().sum();
            proptest::prop_assert_eq!(held, q.len());
            proptest::prop_assert!(q.held.values().all(|&n| (1..=6).contains(&n)));
            let ps: Vec<usize> = q.positions().map(|(_, _, p)| p.position).collect();
            proptest::prop_assert_eq!(ps, (1..=q.len()).collect::<Vec<_>>());
        }
    }
}

// Priority classes: interactive before batch, batch fair within its class.

fn classes() -> Classes<(&'static str, usize)> {
    Classes::new(config(10_000, 60))
}

fn push(
    q: &mut Classes<(&'static str, usize)>,
    class: Priority,
    who: &'static str,
    i: usize,
    now: Instant,
) -> Position {
    q.class_mut(class)
        .push(tenant(who), (who, i), now)
        .unwrap()
        .1
}

#[test]
fn an_interactive_request_is_taken_before_every_batch_request() {
    let t0 = Instant::now();
    let mut q = classes();
    for i in 0..100 {
        push(&mut q, Priority::Batch, "a", i, t0);
    }
    let later = t0 + Duration::from_secs(30);
    push(&mut q, Priority::Interactive, "b", 0, later);
    let (class, e) = q.pop_next(later, |_| true).unwrap();
    assert_eq!((class, e.item), (Priority::Interactive, ("b", 0)));
    assert_eq!(q.pop_next(later, |_| true).unwrap().0, Priority::Batch);
}

#[test]
fn a_waiting_interactive_request_without_room_holds_batch_requests_back() {
    let t0 = Instant::now();
    let mut q = classes();
    push(&mut q, Priority::Batch, "a", 0, t0);
    push(&mut q, Priority::Interactive, "b", 0, t0);
    // A batch slot is free but the interactive request finds none: nothing goes.
    assert!(q.pop_next(t0, |class| class == Priority::Batch).is_none());
    assert_eq!(q.len(), 2);
    let (class, _) = q.pop_next(t0, |_| true).unwrap();
    assert_eq!(class, Priority::Interactive);
    // Now only batch work waits, and it goes only where a batch slot is free.
    assert!(q
        .pop_next(t0, |class| class == Priority::Interactive)
        .is_none());
    assert_eq!(
        q.pop_next(t0, |class| class == Priority::Batch).unwrap().0,
        Priority::Batch
    );
}

#[test]
fn batch_requests_are_fair_among_tenants_within_their_class() {
    let t0 = Instant::now();
    let mut q = classes();
    for i in 0..200 {
        push(&mut q, Priority::Batch, "big", i, t0);
    }
    for i in 0..10 {
        push(&mut q, Priority::Batch, "small", i, t0);
    }
    let small_positions: Vec<usize> = (1..=40)
        .filter(|_| q.pop_next(t0, |_| true).unwrap().1.item.0 == "small")
        .collect();
    assert_eq!(
        small_positions.len(),
        10,
        "small's batch is taken within 2k turns"
    );
}

#[test]
fn interactive_positions_and_etas_count_no_batch_work() {
    let t0 = Instant::now();
    let mut q = classes();
    for i in 0..500 {
        push(&mut q, Priority::Batch, "a", i, t0);
    }
    let first = push(&mut q, Priority::Interactive, "b", 0, t0);
    assert_eq!(first.position, 1);
    let alone = State::<()>::new(config(10_000, 60))
        .push(tenant("b"), (), t0)
        .unwrap()
        .1;
    assert_eq!(first.eta_ms, alone.eta_ms, "as if no batch work waited");
    let second = push(&mut q, Priority::Interactive, "c", 0, t0);
    assert_eq!(second.position, 2);
}

#[test]
fn batch_requests_outwait_the_interactive_maximum() {
    let t0 = Instant::now();
    let mut q = classes();
    push(&mut q, Priority::Batch, "a", 0, t0);
    push(&mut q, Priority::Interactive, "b", 0, t0);
    let expired = q.expire(t0 + Duration::from_secs(61));
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].item, ("b", 0));
    assert_eq!(q.class(Priority::Batch).len(), 1);
    assert_eq!(q.expire(t0 + BATCH_MAX_WAIT).len(), 1);
    assert!(q.is_empty());
}

#[test]
fn a_moved_stream_goes_before_every_waiting_request_past_the_bounds() {
    let t0 = Instant::now();
    let mut q = State::new(shared(4, 50));
    q.push(tenant("a"), "a1", t0).unwrap();
    q.push(tenant("a"), "a2", t0).unwrap();
    q.push(tenant("b"), "b1", t0).unwrap();
    q.push(tenant("b"), "b2", t0).unwrap();
    assert!(q.push(tenant("c"), "c1", t0).is_err(), "full");
    // Full, and a's share (2) held: the moved streams still go in, first, in arrival order.
    let (_, first) = q.push_front(tenant("a"), "moved-a", t0);
    let (_, second) = q.push_front(tenant("c"), "moved-c", t0);
    assert_eq!((first.position, second.position), (1, 2));
    let order: Vec<&str> = std::iter::from_fn(|| q.pop(t0).map(|e| e.item)).collect();
    assert_eq!(order, ["moved-a", "moved-c", "a1", "b1", "a2", "b2"]);
    assert!(q.is_empty());
    assert_eq!(
        q.held_by(&tenant("a")),
        0,
        "its place is given back when taken"
    );
}
