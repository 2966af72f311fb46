//! The runtime with real llama.cpp replicas (SmolLM2-135M, 2 replicas × 1 thread), on the wall
//! clock: a burst scales up, idle scales to zero, a request cold-starts a replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::{ChatMessage, GenerateRequest, Prompt, SamplingParams};
use control::{
    ControlPlane, DeploymentSpec, EngineLauncher, EventKind, MemoryStore, NodeBudget, QueueSpec,
};

use crate::common::{run, Outcome};

fn chat(id: &str) -> GenerateRequest {
    GenerateRequest {
        request_id: id.into(),
        model: "smol".into(),
        prompt: Prompt::Chat(vec![ChatMessage::text("user", "Say hi.")]),
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: Some(16),
        stop: Vec::new(),
        tenant: None,
        tools: Vec::new(),
        tool_choice: Default::default(),
        parallel_tool_calls: true,
        format: Default::default(),
        priority: Default::default(),
        resume: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_bursts_scales_to_zero_and_cold_starts() {
    let Some(path) = std::env::var_os("FLYWHEEL_SMOL_GGUF").filter(|p| !p.is_empty()) else {
        eprintln!("skipped: FLYWHEEL_SMOL_GGUF is not set (scripts/test.sh sets it after scripts/fetch-models.sh)");
        return;
    };
    let plane = ControlPlane::new(
        NodeBudget {
            threads: 2,
            ..NodeBudget::from_machine()
        },
        Arc::new(EngineLauncher::new()),
        Arc::new(MemoryStore::default()),
    );
    let spec = DeploymentSpec {
        max_replicas: 2,
        slots_per_replica: 2,
        threads_per_replica: 1,
        context_length: Some(512),
        idle_seconds: 3,
        queue: QueueSpec {
            max_length: 64,
            max_wait_seconds: 120,
            ..QueueSpec::default()
        },
        ..DeploymentSpec::new("smol", path.to_string_lossy())
    };
    let view = plane.create(spec).await.unwrap();
    let mib = view.replica_memory_bytes >> 20;
    assert!(
        (100..1000).contains(&mib),
        "SmolLM2 replica estimated at {mib} MiB"
    );
    let d = Arc::new(plane.get("smol").unwrap());

    let started = Instant::now();
    let burst: Vec<_> = (0..40)
        .map(|i| {
            let d = d.clone();
            tokio::spawn(async move { run(&*d, chat(&format!("b{i}"))).await })
        })
        .collect();
    for h in burst {
        let outcome = h.await.unwrap();
        assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    }
    eprintln!(
        "burst of 40 served in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let events = plane.events("smol").await.unwrap();
    for e in &events {
        eprintln!("event {:?} {}→{} {}", e.kind, e.from, e.to, e.reason);
    }
    let scales: Vec<(usize, usize)> = events
        .iter()
        .filter(|e| e.kind == EventKind::Scale)
        .map(|e| (e.from, e.to))
        .collect();
    assert_eq!(scales.first(), Some(&(0, 1)));
    assert!(scales.contains(&(1, 2)), "{scales:?}");

    // Idle → zero, and the node's budget is whole again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !plane.describe("smol").await.unwrap().replicas.is_empty() {
        assert!(Instant::now() < deadline, "did not scale to zero");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(plane.node().threads_used, 0);

    let cold = Instant::now();
    let outcome = run(&*d, chat("cold")).await;
    assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    eprintln!(
        "cold start + one request: {:.2} s",
        cold.elapsed().as_secs_f64()
    );
    plane.shutdown().await;
}
