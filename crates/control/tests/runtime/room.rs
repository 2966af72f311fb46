//! Room on a full node for a deployment with nothing: a replica another deployment can spare
//! (one of several, or one holding only batch work) is drained for it, no more than needed, and
//! the start goes on as soon as the room is back, with no failure logged on the way.

use std::sync::Arc;
use std::time::Duration;

use backend::Priority;
use control::EventKind;

use crate::common::*;

fn given_up_for(events: &[control::ScaleEvent], name: &str) -> usize {
    let wanted = format!("given up to make room for '{name}'");
    events
        .iter()
        .filter(|e| e.kind == EventKind::ReplicaStopped && e.reason.contains(&wanted))
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_deployment_at_zero_gets_a_replica_that_a_busy_deployment_can_spare() {
    // Two threads, both held by x's two busy replicas, with 40 s of x's work queued.
    let work = Duration::from_secs(1);
    let fx = fixture(2, Duration::from_millis(100), work);
    fx.plane.create(spec("x", 0, 2, 1)).await.unwrap();
    let x = Arc::new(fx.plane.get("x").unwrap());
    let burst: Vec<_> = (0..40)
        .map(|i| {
            let x = x.clone();
            tokio::spawn(async move { run(&*x, request(&format!("x{i}"), None)).await })
        })
        .collect();
    wait_until(&fx.plane, "x", 10, |v| ready(v) == 2).await;
    assert_eq!(fx.plane.node().threads_used, 2);

    // y has nothing: one of x's replicas finishes its request and makes room.
    fx.plane.create(spec("y", 0, 1, 1)).await.unwrap();
    let y = fx.plane.get("y").unwrap();
    let asked = tokio::time::Instant::now();
    let outcome = run(&y, request("y0", None)).await;
    assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    // x's running request (≤ 1 s), y's load and its own work, and a tick or two: not the
    // 20 s of x's backlog.
    assert!(
        asked.elapsed() <= Duration::from_secs(5),
        "y waited {:?}",
        asked.elapsed()
    );

    let x_events = fx.plane.events("x").await.unwrap();
    assert_eq!(given_up_for(&x_events, "y"), 1, "{x_events:#?}");
    let y_events = fx.plane.events("y").await.unwrap();
    assert!(
        !y_events.iter().any(|e| e.kind == EventKind::ReplicaFailed),
        "a start that waited for room logged a failure: {y_events:#?}"
    );
    let cold = y_events
        .iter()
        .filter(|e| e.kind == EventKind::Scale)
        .count();
    assert_eq!(
        cold, 1,
        "one scale-up, logged when it happened: {y_events:#?}"
    );
    // Nothing of x's was lost, and the node never held more than its threads.
    for h in burst {
        assert!(matches!(h.await.unwrap(), Outcome::Finished { .. }));
    }
    assert!(fx.plane.node().threads_used <= 2);
}

#[tokio::test(start_paused = true)]
async fn the_only_replica_of_a_busy_deployment_is_not_taken() {
    let fx = fixture(1, Duration::from_millis(100), Duration::from_secs(1));
    fx.plane.create(spec("x", 0, 1, 1)).await.unwrap();
    let x = Arc::new(fx.plane.get("x").unwrap());
    let burst: Vec<_> = (0..6)
        .map(|i| {
            let x = x.clone();
            tokio::spawn(async move { run(&*x, request(&format!("x{i}"), None)).await })
        })
        .collect();
    wait_until(&fx.plane, "x", 10, |v| ready(v) == 1 && v.queue_length > 0).await;
    fx.plane.create(spec("y", 0, 1, 1)).await.unwrap();
    let y = fx.plane.get("y").unwrap();
    // y is served once x's interactive work is done (its replica idle), not before.
    let outcome = run(&y, request("y0", None)).await;
    assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    for h in burst {
        assert!(matches!(h.await.unwrap(), Outcome::Finished { .. }));
    }
    let x_events = fx.plane.events("x").await.unwrap();
    assert!(
        !x_events
            .iter()
            .any(|e| e.reason.contains("drained (given up")),
        "x's only replica was drained while it served: {x_events:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn batch_work_gives_its_only_replica_up_to_interactive_demand() {
    let fx = fixture(1, Duration::from_millis(100), Duration::from_secs(1));
    fx.plane.create(spec("x", 0, 1, 1)).await.unwrap();
    let x = Arc::new(fx.plane.get("x").unwrap());
    let lines: Vec<_> = (0..30)
        .map(|i| {
            let x = x.clone();
            let line = backend::GenerateRequest {
                priority: Priority::Batch,
                ..request(&format!("b{i}"), Some("batcher"))
            };
            tokio::spawn(async move { run(&*x, line).await })
        })
        .collect();
    wait_until(&fx.plane, "x", 10, |v| ready(v) == 1 && v.in_flight == 1).await;
    fx.plane.create(spec("y", 0, 1, 1)).await.unwrap();
    let y = fx.plane.get("y").unwrap();
    let asked = tokio::time::Instant::now();
    let outcome = run(&y, request("y0", Some("someone"))).await;
    assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    assert!(
        asked.elapsed() <= Duration::from_secs(5),
        "y waited {:?} behind batch work",
        asked.elapsed()
    );
    let x_events = fx.plane.events("x").await.unwrap();
    assert_eq!(given_up_for(&x_events, "y"), 1, "{x_events:#?}");
    // The batch lines all finish: x gets the room back once y is idle.
    for h in lines {
        assert!(matches!(h.await.unwrap(), Outcome::Finished { .. }));
    }
}
