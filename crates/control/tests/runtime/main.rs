//! The deployment runtime with fake replicas on tokio's paused clock: bursts, fairness,
//! timeouts, refusals, scale to zero and back, rolling replacement, budgets.

mod cluster;
mod common;
#[cfg(feature = "engine")]
mod engine;
mod priority;
mod room;
mod shutdown;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use backend::{Backend, BackendError};
use common::*;
use control::{DeploymentPatch, EventKind, QueueSpec};

#[tokio::test(start_paused = true)]
async fn burst_scales_up_then_down_to_zero_then_cold_starts() {
    let fx = fixture(8, Duration::from_secs(2), Duration::from_secs(1));
    let spec = control::DeploymentSpec {
        idle_seconds: 30,
        ..spec("smol", 0, 3, 2)
    };
    fx.plane.create(spec).await.unwrap();
    let d = Arc::new(fx.plane.get("smol").unwrap());

    let burst: Vec<_> = (0..40)
        .map(|i| {
            let d = d.clone();
            tokio::spawn(async move { run(&*d, request(&format!("r{i}"), None)).await })
        })
        .collect();
    for h in burst {
        let outcome = h.await.unwrap();
        assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    }
    let events = fx.plane.events("smol").await.unwrap();
    let scales: Vec<(usize, usize)> = events
        .iter()
        .filter(|e| e.kind == EventKind::Scale)
        .map(|e| (e.from, e.to))
        .collect();
    assert_eq!(
        scales.first(),
        Some(&(0, 1)),
        "cold start first: {events:#?}"
    );
    assert!(scales.contains(&(1, 3)), "then up to max: {events:#?}");

    // Idle for idle_seconds: back to zero.
    let view = wait_until(&fx.plane, "smol", 120, |v| v.replicas.is_empty()).await;
    assert_eq!(view.queue_length, 0);
    let events = fx.plane.events("smol").await.unwrap();
    let last_scale = events
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Scale)
        .unwrap();
    assert_eq!(last_scale.to, 0, "{events:#?}");
    assert!(
        last_scale.reason.contains("no traffic"),
        "{}",
        last_scale.reason
    );

    // A request at zero starts a replica and waits for it.
    let launches = fx.journal.launches.load(Ordering::SeqCst);
    let outcome = run(&*d, request("cold", None)).await;
    assert_eq!(outcome, Outcome::Finished { queued_events: 1 });
    assert_eq!(fx.journal.launches.load(Ordering::SeqCst), launches + 1);
}

#[tokio::test(start_paused = true)]
async fn tenant_b_is_served_while_a_has_a_backlog() {
    let fx = fixture(8, Duration::from_millis(100), Duration::from_millis(100));
    let spec = control::DeploymentSpec {
        queue: QueueSpec {
            max_length: 1000,
            max_wait_seconds: 3600,
            ..QueueSpec::default()
        },
        ..spec("fair", 1, 1, 1)
    };
    fx.plane.create(spec).await.unwrap();
    wait_until(&fx.plane, "fair", 10, |v| ready(v) == 1).await;
    let d = fx.plane.get("fair").unwrap();

    let mut streams = Vec::new();
    for i in 0..500 {
        streams.push(
            d.generate(request(&format!("a{i}"), Some("a")))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let a_before_b = fx.journal.started.lock().unwrap().len();
    for i in 0..50 {
        streams.push(
            d.generate(request(&format!("b{i}"), Some("b")))
                .await
                .unwrap(),
        );
    }
    let handles: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(finish(s)))
        .collect();
    for h in handles {
        assert!(matches!(h.await.unwrap(), Outcome::Finished { .. }));
    }
    let order = fx.journal.started.lock().unwrap().clone();
    let after_b: Vec<&String> = order[a_before_b..].iter().collect();
    let mut b_seen = 0;
    for (i, id) in after_b.iter().enumerate() {
        if id.starts_with('b') {
            b_seen += 1;
            assert!(
                i < 2 * b_seen,
                "B's #{b_seen} started at position {} after B arrived",
                i + 1
            );
        }
    }
    assert_eq!(b_seen, 50);
    let last_b = after_b.iter().rposition(|id| id.starts_with('b')).unwrap();
    assert!(
        500 - a_before_b - (last_b + 1 - 50) >= 400,
        "B was done while most of A's backlog still waited"
    );
}

#[tokio::test(start_paused = true)]
async fn tenant_a_filling_its_share_leaves_room_for_tenant_b() {
    let fx = fixture(8, Duration::from_millis(100), Duration::from_secs(1));
    let spec = control::DeploymentSpec {
        queue: QueueSpec {
            max_length: 8,
            max_wait_seconds: 600,
            tenant_share_percent: 50,
        },
        ..spec("shared", 1, 1, 1)
    };
    fx.plane.create(spec).await.unwrap();
    wait_until(&fx.plane, "shared", 10, |v| ready(v) == 1).await;
    let d = fx.plane.get("shared").unwrap();

    // A takes the one slot, then tries to fill the whole queue of 8.
    let mut a_streams = vec![d.generate(request("a-running", Some("a"))).await.unwrap()];
    let mut a_refusals = Vec::new();
    for i in 0..8 {
        match d.generate(request(&format!("a{i}"), Some("a"))).await {
            Ok(stream) => a_streams.push(stream),
            Err(e) => a_refusals.push(e),
        }
    }
    assert_eq!(a_streams.len(), 1 + 4, "A holds its share: 4 of 8 waiting");
    assert_eq!(a_refusals.len(), 4);
    for e in &a_refusals {
        match e {
            BackendError::QueueShareExceeded {
                waiting,
                limit,
                retry_after,
            } => {
                assert_eq!((*waiting, *limit), (4, 4));
                // A's first waiting request is next: one request's time, not the cap of 300.
                assert!((1..=10).contains(retry_after), "{retry_after}");
            }
            other => panic!("expected A over its share, got {other:?}"),
        }
    }

    // B is still queued behind A's share, and answered.
    let b: Vec<_> = (0..4)
        .map(|i| {
            let d = fx.plane.get("shared").unwrap();
            tokio::spawn(async move { run(&d, request(&format!("b{i}"), Some("b"))).await })
        })
        .collect();
    let a: Vec<_> = a_streams
        .into_iter()
        .map(|s| tokio::spawn(finish(s)))
        .collect();
    for h in b {
        let outcome = h.await.unwrap();
        assert!(
            matches!(outcome, Outcome::Finished { queued_events } if queued_events >= 1),
            "B waited in the queue and was answered: {outcome:?}"
        );
    }
    for h in a {
        assert!(matches!(h.await.unwrap(), Outcome::Finished { .. }));
    }
    // Fair order interleaved B with A's backlog instead of serving it after.
    let order = fx.journal.started.lock().unwrap().clone();
    let at = |id: &str| order.iter().position(|x| x == id).unwrap();
    assert!(at("b0") < at("a3"), "{order:?}");
}

#[tokio::test(start_paused = true)]
async fn past_max_wait_the_stream_ends_with_queue_timeout() {
    let fx = fixture(8, Duration::from_millis(10), Duration::from_secs(100));
    let spec = control::DeploymentSpec {
        queue: QueueSpec {
            max_length: 10,
            max_wait_seconds: 5,
            ..QueueSpec::default()
        },
        ..spec("slow", 1, 1, 1)
    };
    fx.plane.create(spec).await.unwrap();
    wait_until(&fx.plane, "slow", 10, |v| ready(v) == 1).await;
    let d = Arc::new(fx.plane.get("slow").unwrap());
    let running = {
        let d = d.clone();
        tokio::spawn(async move { run(&*d, request("long", None)).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let start = tokio::time::Instant::now();
    let outcome = run(&*d, request("waits", None)).await;
    let waited = start.elapsed();
    match outcome {
        Outcome::Failed(BackendError::QueueTimeout {
            waited_secs,
            retry_after,
        }) => {
            assert_eq!(waited_secs, 5);
            assert!(retry_after >= 1);
        }
        other => panic!("expected a queue timeout, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
    running.abort();
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_with_retry_after() {
    let fx = fixture(8, Duration::from_millis(10), Duration::from_secs(30));
    let spec = control::DeploymentSpec {
        queue: QueueSpec {
            max_length: 2,
            max_wait_seconds: 600,
            ..QueueSpec::default()
        },
        ..spec("small", 1, 1, 1)
    };
    fx.plane.create(spec).await.unwrap();
    wait_until(&fx.plane, "small", 10, |v| ready(v) == 1).await;
    let d = fx.plane.get("small").unwrap();
    let _running = d.generate(request("r0", None)).await.unwrap();
    let _q1 = d.generate(request("q1", None)).await.unwrap();
    let _q2 = d.generate(request("q2", None)).await.unwrap();
    match d.generate(request("q3", None)).await {
        Err(BackendError::Overloaded {
            queued,
            retry_after,
        }) => {
            assert_eq!(queued, 2);
            assert!((1..=300).contains(&retry_after), "{retry_after}");
        }
        Err(other) => panic!("expected overloaded, got {other:?}"),
        Ok(_) => panic!("expected overloaded, got a stream"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiting_client_that_leaves_is_forgotten() {
    let fx = fixture(8, Duration::from_millis(10), Duration::from_secs(30));
    fx.plane.create(spec("leave", 1, 1, 1)).await.unwrap();
    wait_until(&fx.plane, "leave", 10, |v| ready(v) == 1).await;
    let d = fx.plane.get("leave").unwrap();
    let _running = d.generate(request("r0", None)).await.unwrap();
    let queued = d.generate(request("gone", None)).await.unwrap();
    assert_eq!(fx.plane.describe("leave").await.unwrap().queue_length, 1);
    drop(queued);
    wait_until(&fx.plane, "leave", 5, |v| v.queue_length == 0).await;
}

#[tokio::test(start_paused = true)]
async fn rolling_replacement_drops_no_request() {
    let fx = fixture(8, Duration::from_secs(3), Duration::from_millis(300));
    fx.plane.create(spec("roll", 2, 2, 2)).await.unwrap();
    wait_until(&fx.plane, "roll", 20, |v| ready(v) == 2).await;
    let d = Arc::new(fx.plane.get("roll").unwrap());

    let mut traffic = Vec::new();
    for i in 0..150 {
        let d = d.clone();
        traffic.push(tokio::spawn(async move {
            run(&*d, request(&format!("t{i}"), Some("t"))).await
        }));
        if i == 30 {
            let patch = DeploymentPatch {
                model: Some("model-v2".into()),
                ..DeploymentPatch::default()
            };
            fx.plane.update("roll", &patch).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for h in traffic {
        let outcome = h.await.unwrap();
        assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    }
    let view = wait_until(&fx.plane, "roll", 30, |v| {
        ready(v) == 2 && v.replicas.iter().all(|r| r.model == "model-v2")
    })
    .await;
    assert_eq!(view.spec.model, "model-v2");
    let served = fx.journal.served_by.lock().unwrap().clone();
    let models: HashSet<&str> = served.iter().map(|(_, m)| m.as_str()).collect();
    assert!(models.contains("model-v1") && models.contains("model-v2"));
    let events = fx.plane.events("roll").await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == EventKind::Rollout),
        "{events:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deployment_larger_than_the_node_is_refused_with_the_numbers() {
    let fx = fixture(2, Duration::from_millis(10), Duration::from_millis(10));
    let wide = control::DeploymentSpec {
        threads_per_replica: 4,
        ..spec("wide", 0, 1, 1)
    };
    let e = fx.plane.create(wide).await.unwrap_err().to_string();
    assert!(e.contains("needs 101 MiB and 4 threads"), "{e}");
    assert!(
        e.contains("0 of 2 threads") || e.contains("2 of 2 threads"),
        "{e}"
    );
    assert!(fx.plane.get("wide").is_none());
}

#[tokio::test(start_paused = true)]
async fn the_thread_budget_caps_replicas_and_idle_ones_make_room_for_others() {
    // Two threads: deployment x can have at most two replicas of one thread.
    let fx = fixture(2, Duration::from_millis(100), Duration::from_secs(1));
    fx.plane.create(spec("x", 0, 4, 1)).await.unwrap();
    let x = Arc::new(fx.plane.get("x").unwrap());
    let burst: Vec<_> = (0..20)
        .map(|i| {
            let x = x.clone();
            tokio::spawn(async move { run(&*x, request(&format!("x{i}"), None)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let view = fx.plane.describe("x").await.unwrap();
    assert!(view.replicas.len() <= 2, "{view:#?}");
    assert_eq!(fx.plane.node().threads_used, 2);
    for h in burst {
        assert!(matches!(h.await.unwrap(), Outcome::Finished { .. }));
    }
    // x is idle with its replicas still loaded; y needs a thread: an idle x replica is
    // unloaded for it.
    fx.plane.create(spec("y", 0, 1, 1)).await.unwrap();
    let y = fx.plane.get("y").unwrap();
    let outcome = run(&y, request("y0", None)).await;
    assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    let x_events = fx.plane.events("x").await.unwrap();
    assert!(
        x_events
            .iter()
            .any(|e| e.reason.contains("given up to make room for 'y'")),
        "{x_events:#?}"
    );
    assert!(fx.plane.node().threads_used <= 2);
}

#[tokio::test(start_paused = true)]
async fn delete_drains_running_requests_first() {
    let fx = fixture(8, Duration::from_millis(10), Duration::from_secs(2));
    fx.plane.create(spec("del", 1, 1, 2)).await.unwrap();
    wait_until(&fx.plane, "del", 10, |v| ready(v) == 1).await;
    let d = fx.plane.get("del").unwrap();
    let running = d.generate(request("r0", None)).await.unwrap();
    let queued = d.generate(request("r1", None)).await.unwrap();
    let late = d.generate(request("r2", None)).await.unwrap();
    let done = tokio::spawn(async move {
        (
            finish(running).await,
            finish(queued).await,
            finish(late).await,
        )
    });
    fx.plane.delete("del").await.unwrap();
    let (a, b, c) = done.await.unwrap();
    for o in [a, b, c] {
        assert!(matches!(o, Outcome::Finished { .. }), "{o:?}");
    }
    assert!(fx.plane.get("del").is_none());
    assert_eq!(fx.plane.node().threads_used, 0);
    let refused = run(&d, request("after", None)).await;
    assert!(
        matches!(refused, Outcome::Refused(BackendError::ShuttingDown)),
        "{refused:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_cannot_start_fails_waiting_requests_with_the_reason() {
    let fx = fixture(8, Duration::from_secs(1), Duration::from_millis(10));
    let broken = control::DeploymentSpec {
        model: "broken".into(),
        ..spec("broken", 0, 1, 1)
    };
    fx.plane.create(broken).await.unwrap();
    let d = fx.plane.get("broken").unwrap();
    let start = tokio::time::Instant::now();
    match run(&d, request("r", None)).await {
        Outcome::Failed(BackendError::Internal(m)) => {
            assert!(
                m.contains("no replica of 'broken' could start") && m.contains("not a GGUF"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(3));
    let events = fx.plane.events("broken").await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == EventKind::ReplicaFailed),
        "{events:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn embeddings_queue_fairly_and_cold_start_like_generations() {
    let fx = fixture(8, Duration::from_secs(2), Duration::from_secs(1));
    fx.plane.create(spec("embed", 0, 1, 1)).await.unwrap();
    let d = Arc::new(fx.plane.get("embed").unwrap());
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let d = d.clone();
            tokio::spawn(async move {
                d.embed(backend::EmbedRequest {
                    request_id: format!("e{i}"),
                    model: "embed".into(),
                    inputs: vec![backend::EmbedInput::Text("x".into()); i + 1],
                    tenant: None,
                    dimensions: None,
                    priority: backend::Priority::Interactive,
                })
                .await
            })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let out = call.await.unwrap().expect("embedded");
        assert_eq!(out.vectors.len(), i + 1);
        assert_eq!(out.prompt_tokens, i as u32 + 1);
    }
    // One replica started at zero for them, one slot: served one after another, in order.
    assert_eq!(fx.journal.launches.load(Ordering::SeqCst), 1);
    assert_eq!(*fx.journal.started.lock().unwrap(), ["e0", "e1", "e2"]);
}
