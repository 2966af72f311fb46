//! Batch requests in a deployment: interactive ones go past a batch backlog and batch work
//! takes only what they leave, without scaling the deployment out (only interactive demand
//! does).

use std::sync::Arc;
use std::time::Duration;

use backend::Priority;
use control::EventKind;

use crate::common::*;

fn batch_line(id: &str) -> backend::GenerateRequest {
    backend::GenerateRequest {
        priority: Priority::Batch,
        ..request(id, Some("batcher"))
    }
}

#[tokio::test(start_paused = true)]
async fn interactive_requests_pass_a_batch_backlog_that_neither_times_out_nor_scales_out() {
    let work = Duration::from_secs(10);
    let fx = fixture(8, Duration::from_secs(1), work);
    fx.plane.create(spec("d", 1, 3, 2)).await.unwrap();
    let d = Arc::new(fx.plane.get("d").unwrap());
    wait_until(&fx.plane, "d", 10, |v| ready(v) == 1).await;

    // Twenty lines of 10 s on two slots: 100 s of work, past the 60 s an interactive request
    // may wait in line.
    let lines: Vec<_> = (0..20)
        .map(|i| {
            let d = d.clone();
            tokio::spawn(async move { run(&*d, batch_line(&format!("b{i}"))).await })
        })
        .collect();
    wait_until(&fx.plane, "d", 5, |v| {
        v.queue_length == 18 && v.in_flight == 2
    })
    .await;

    // An interactive request starts at once, on a replica whose slots batch work fills.
    let started = tokio::time::Instant::now();
    let outcome = run(&*d, request("i1", Some("someone"))).await;
    assert_eq!(outcome, Outcome::Finished { queued_events: 0 });
    assert_eq!(started.elapsed(), work, "served without waiting");
    // Ten seconds of ticks with 18 batch lines waiting and every slot busy: no scale-up.
    let scale_ups = |events: &[control::ScaleEvent]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.kind == EventKind::Scale && e.to > e.from && e.from > 0)
            .map(|e| e.reason.clone())
            .collect()
    };
    let events = fx.plane.events("d").await.unwrap();
    assert_eq!(scale_ups(&events), Vec::<String>::new(), "{events:#?}");
    // A tenant's interactive requests beyond the slots queue ahead of every batch line.
    let burst: Vec<_> = (0..3)
        .map(|i| {
            let d = d.clone();
            tokio::spawn(async move { run(&*d, request(&format!("i{}", i + 2), None)).await })
        })
        .collect();
    for h in burst {
        let outcome = h.await.unwrap();
        assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    }
    for h in lines {
        let outcome = h.await.unwrap();
        assert!(
            matches!(outcome, Outcome::Finished { .. }),
            "a batch line did not finish: {outcome:?}"
        );
    }
    let started = fx.journal.started.lock().unwrap().clone();
    let i4 = started.iter().position(|id| id == "i4").unwrap();
    let batch_before: Vec<_> = started[..i4]
        .iter()
        .filter(|id| id.starts_with('b'))
        .collect();
    assert!(
        batch_before.len() <= 4,
        "the last interactive request waited behind batch lines: {started:?}"
    );
    // The burst may scale out, for its own sake only: batch lines are not counted as waiting.
    let events = fx.plane.events("d").await.unwrap();
    for reason in scale_ups(&events) {
        assert!(reason.starts_with("1 waiting"), "{reason}");
    }
}
