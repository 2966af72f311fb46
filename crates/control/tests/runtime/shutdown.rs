//! Shutdown past the drain: what still runs after the grace is ended, and every replica is
//! stopped before `shutdown_within` returns.

use std::sync::atomic::Ordering;
use std::time::Duration;

use backend::{Backend, BackendError};
use tokio::time::Instant;

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn past_the_grace_running_and_queued_requests_end_and_replicas_stop() {
    // Requests would run for an hour; one slot, so two of three wait in the queue.
    let fx = fixture(8, Duration::from_millis(10), Duration::from_secs(3600));
    fx.plane.create(spec("long", 1, 1, 1)).await.unwrap();
    wait_until(&fx.plane, "long", 10, |v| ready(v) == 1).await;
    let d = fx.plane.get("long").unwrap();
    let mut streams = Vec::new();
    for id in ["r0", "r1", "r2"] {
        streams.push(d.generate(request(id, None)).await.unwrap());
    }
    let done = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for s in streams {
            outcomes.push(finish(s).await);
        }
        outcomes
    });
    let started = Instant::now();
    fx.plane.shutdown_within(Duration::from_secs(2)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "shutdown took {took:?} with a grace of 2 s"
    );
    assert!(
        fx.journal.stops.load(Ordering::SeqCst) >= 1,
        "the replica was not stopped"
    );
    for outcome in done.await.unwrap() {
        assert!(
            matches!(outcome, Outcome::Failed(BackendError::ShuttingDown)),
            "{outcome:?}"
        );
    }
    assert_eq!(fx.plane.node().threads_used, 0);
    let refused = run(&d, request("after", None)).await;
    assert!(
        matches!(refused, Outcome::Refused(BackendError::ShuttingDown)),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn within_the_grace_requests_finish_and_the_replica_still_stops() {
    let fx = fixture(8, Duration::from_millis(10), Duration::from_secs(1));
    fx.plane.create(spec("short", 1, 1, 1)).await.unwrap();
    wait_until(&fx.plane, "short", 10, |v| ready(v) == 1).await;
    let d = fx.plane.get("short").unwrap();
    let stream = d.generate(request("r0", None)).await.unwrap();
    let done = tokio::spawn(finish(stream));
    fx.plane.shutdown_within(Duration::from_secs(30)).await;
    assert!(matches!(done.await.unwrap(), Outcome::Finished { .. }));
    // Unloading stops (and so joins) every replica, also after a clean drain.
    assert_eq!(fx.journal.stops.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_drain_ends_waiting_batch_lines_at_once_and_lets_running_work_finish() {
    let fx = fixture(8, Duration::from_millis(10), Duration::from_secs(1));
    fx.plane.create(spec("d", 1, 1, 1)).await.unwrap();
    wait_until(&fx.plane, "d", 10, |v| ready(v) == 1).await;
    let d = fx.plane.get("d").unwrap();
    let mut streams = Vec::new();
    for id in ["b0", "b1", "b2"] {
        let line = backend::GenerateRequest {
            priority: backend::Priority::Batch,
            ..request(id, None)
        };
        streams.push(d.generate(line).await.unwrap());
    }
    let done = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for s in streams {
            outcomes.push(finish(s).await);
        }
        outcomes
    });
    let started = Instant::now();
    fx.plane.shutdown_within(Duration::from_secs(600)).await;
    assert!(
        started.elapsed() <= Duration::from_secs(2),
        "the drain waited for the batch backlog: {:?}",
        started.elapsed()
    );
    let outcomes = done.await.unwrap();
    assert!(
        matches!(outcomes[0], Outcome::Finished { .. }),
        "{outcomes:?}"
    );
    for outcome in &outcomes[1..] {
        assert_eq!(
            *outcome,
            Outcome::Failed(BackendError::ShuttingDown),
            "{outcomes:?}"
        );
    }
}
