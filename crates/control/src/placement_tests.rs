use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::*;
use crate::footprint::{ModelShape, Sizing};

const MIB: u64 = 1 << 20;

fn fp(weights: &str, weights_mib: u64, private_mib: u64, threads: usize) -> Footprint {
    Footprint {
        weights_key: weights.into(),
        weights_bytes: weights_mib * MIB,
        private_bytes: private_mib * MIB,
        threads,
        kind: backend::ModelKind::Generate,
    }
}

fn key(d: &str, r: u64) -> ReplicaKey {
    ReplicaKey {
        deployment: d.into(),
        replica: r,
    }
}

fn node(mem_mib: u64, threads: usize) -> Placement {
    Placement::new(NodeBudget {
        memory_bytes: mem_mib * MIB,
        threads,
    })
}

#[test]
fn never_oversubscribes_and_names_the_numbers() {
    let mut p = node(1000, 2);
    p.reserve(key("a", 1), fp("a.gguf", 300, 200, 1)).unwrap();
    // Same weights: only the private part is added.
    p.reserve(key("a", 2), fp("a.gguf", 300, 200, 1)).unwrap();
    assert_eq!(p.used_bytes(), 700 * MIB);
    assert_eq!(p.free_threads(), 0);
    let e = p
        .reserve(key("a", 3), fp("a.gguf", 300, 200, 1))
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(
            "needs 200 MiB and 1 threads; the node has 300 MiB of 1000 MiB and 0 of 2 threads free"
        ),
        "{msg}"
    );
    assert!(msg.contains("Lower slots_per_replica"), "{msg}");
    assert!(e.evict.is_empty(), "its own replicas are never victims");
}

#[test]
fn weights_are_freed_with_their_last_replica() {
    let mut p = node(1000, 4);
    p.reserve(key("a", 1), fp("a.gguf", 300, 100, 1)).unwrap();
    p.reserve(key("a", 2), fp("a.gguf", 300, 100, 1)).unwrap();
    p.release(&key("a", 1));
    assert_eq!(p.used_bytes(), 400 * MIB);
    p.release(&key("a", 2));
    assert_eq!(p.used_bytes(), 0);
    assert_eq!(p.used_threads(), 0);
    p.release(&key("a", 2));
    assert_eq!(p.used_bytes(), 0);
}

#[test]
fn names_the_least_recently_used_idle_replicas_of_others() {
    let t0 = Instant::now();
    let mut p = node(1000, 4);
    p.reserve(key("x", 1), fp("x.gguf", 300, 100, 1)).unwrap();
    p.reserve(key("y", 1), fp("y.gguf", 300, 100, 1)).unwrap();
    p.reserve(key("z", 1), fp("z.gguf", 100, 50, 1)).unwrap();
    // y idle longest, x idle more recently, z busy.
    p.set_idle(&key("x", 1), Some(t0 + Duration::from_secs(50)));
    p.set_idle(&key("y", 1), Some(t0));
    let e = p
        .reserve(key("b", 1), fp("b.gguf", 300, 100, 1))
        .unwrap_err();
    assert_eq!(e.evict, vec![key("y", 1)], "{e}");
    assert!(
        e.to_string()
            .contains("unloading replica 1 of 'y' makes room"),
        "{e}"
    );
    // Needing more than y frees takes x too.
    let e = p
        .reserve(key("b", 1), fp("b.gguf", 700, 100, 1))
        .unwrap_err();
    assert_eq!(e.evict, vec![key("y", 1), key("x", 1)]);
    // More than everything idle frees: no victims.
    let e = p
        .reserve(key("b", 1), fp("b.gguf", 900, 100, 1))
        .unwrap_err();
    assert!(e.evict.is_empty());
    assert_eq!(p.threads_available_for("b", false), 1 + 2);
    assert_eq!(p.threads_available_for("x", false), 1 + 1);
}

#[test]
fn a_starving_deployment_may_name_spare_replicas_and_no_one_else_can() {
    let t0 = Instant::now();
    let mut p = node(8000, 3);
    p.reserve(key("x", 1), fp("x.gguf", 300, 100, 1)).unwrap();
    p.reserve(key("x", 2), fp("x.gguf", 300, 100, 1)).unwrap();
    p.reserve(key("z", 1), fp("z.gguf", 300, 100, 1)).unwrap();
    p.set_standing(&key("x", 1), Standing::Spare);
    p.set_standing(&key("x", 2), Standing::Spare);
    // Nothing idle: a deployment that has replicas waits, one that has none takes a spare one.
    let e = p
        .reserve(key("y", 1), fp("y.gguf", 300, 100, 1))
        .unwrap_err();
    assert!(e.evict.is_empty() && !e.is_pending(), "{e}");
    assert_eq!(p.threads_available_for("y", false), 0);
    assert_eq!(p.threads_available_for("y", true), 2);
    let e = p
        .reserve_starving(key("y", 1), fp("y.gguf", 300, 100, 1))
        .unwrap_err();
    assert_eq!(e.evict, vec![key("x", 1)], "one is enough: {e}");
    assert!(
        e.to_string()
            .contains("unloading replica 1 of 'x' makes room"),
        "{e}"
    );
    // An idle replica goes before a spare one.
    p.set_standing(&key("z", 1), Standing::Idle(t0));
    let e = p
        .reserve_starving(key("y", 1), fp("y.gguf", 300, 100, 1))
        .unwrap_err();
    assert_eq!(e.evict, vec![key("z", 1)], "{e}");
}

#[test]
fn room_that_is_leaving_is_waited_for_not_evicted_for_twice() {
    let mut p = node(8000, 2);
    p.reserve(key("x", 1), fp("x.gguf", 300, 100, 1)).unwrap();
    p.reserve(key("x", 2), fp("x.gguf", 300, 100, 1)).unwrap();
    p.set_standing(&key("x", 1), Standing::Leaving);
    p.set_standing(&key("x", 2), Standing::Spare);
    let e = p
        .reserve_starving(key("y", 1), fp("y.gguf", 300, 100, 1))
        .unwrap_err();
    assert!(e.evict.is_empty() && e.awaiting && e.is_pending(), "{e}");
    assert!(e.to_string().contains("replicas leaving make room"), "{e}");
    // Needing more than what leaves: the spare one too.
    let e = p
        .reserve_starving(key("y", 1), fp("y.gguf", 300, 100, 2))
        .unwrap_err();
    assert_eq!(e.evict, vec![key("x", 2)], "{e}");
    // Once it is gone, the room is there.
    p.release(&key("x", 1));
    p.reserve_starving(key("y", 1), fp("y.gguf", 300, 100, 1))
        .unwrap();
}

#[test]
fn a_model_larger_than_the_node_is_refused_outright() {
    let p = node(1000, 2);
    let e = p
        .fits_empty_node("big", &fp("big.gguf", 900, 200, 1))
        .unwrap_err();
    assert!(e.to_string().contains("needs 1100 MiB"), "{e}");
    let e = p
        .fits_empty_node("wide", &fp("w.gguf", 1, 1, 3))
        .unwrap_err();
    assert!(e.to_string().contains("3 threads"), "{e}");
    assert!(p.fits_empty_node("ok", &fp("o.gguf", 500, 100, 2)).is_ok());
}

#[test]
fn machine_defaults_are_sane() {
    let b = NodeBudget::from_machine();
    assert!(b.threads >= 1);
    assert!(b.memory_bytes > 0);
}

/// A real model from `FLYWHEEL_<NAME>_GGUF`, or `None` with a note (the test then checks
/// nothing more). `scripts/test.sh` sets them after `scripts/fetch-models.sh`.
fn real_model(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            eprintln!(
                "skipped: {var} is not set (scripts/test.sh sets it after scripts/fetch-models.sh)"
            );
            None
        }
    }
}

fn sizing(slots: usize, ctx: u32) -> Sizing {
    Sizing {
        slots,
        slot_context: Some(ctx),
        threads: 1,
        step_tokens: 512,
    }
}

#[test]
fn smollm2_shape_and_footprint() {
    let Some(path) = real_model("FLYWHEEL_SMOL_GGUF") else {
        return;
    };
    let shape = ModelShape::from_file(&path).unwrap();
    // SmolLM2-135M: llama, 30 layers, 576 wide, 9 heads of 64, 3 KV heads, 8192 context.
    assert_eq!(shape.architecture, "llama");
    assert_eq!(shape.block_count, 30);
    assert_eq!(shape.embedding_length, 576);
    assert_eq!(shape.head_count, 9);
    assert_eq!(shape.head_count_kv, 3);
    assert_eq!((shape.key_length, shape.value_length), (64, 64));
    assert_eq!(shape.context_length, 8192);
    assert_eq!(shape.vocab_size, 49152);
    // 30 layers × 3 × (64+64) × 2 bytes = 23040 bytes per token.
    assert_eq!(shape.kv_bytes_per_token(), 23_040);
    let f = Footprint::estimate("smol", &shape, &sizing(4, 2048));
    assert_eq!(
        f.private_bytes - 32 * MIB - 512 * (49152 + 8 * 576) * 4,
        4 * 2048 * 23_040
    );
    assert_eq!(f.weights_bytes, std::fs::metadata(&path).unwrap().len());
}

#[test]
fn qwen_shape_and_footprint() {
    let Some(path) = real_model("FLYWHEEL_QWEN_GGUF") else {
        return;
    };
    let shape = ModelShape::from_file(&path).unwrap();
    // Qwen2.5-0.5B: qwen2, 24 layers, 896 wide, 14 heads, 2 KV heads (head dim 64), 32768.
    assert_eq!(shape.architecture, "qwen2");
    assert_eq!(shape.block_count, 24);
    assert_eq!(shape.embedding_length, 896);
    assert_eq!((shape.head_count, shape.head_count_kv), (14, 2));
    assert_eq!((shape.key_length, shape.value_length), (64, 64));
    assert_eq!(shape.context_length, 32768);
    assert_eq!(shape.kv_bytes_per_token(), 24 * 2 * 128 * 2);
    // Default slot context: the training context capped at 4096.
    assert_eq!(shape.slot_context(None), 4096);
    let f = Footprint::estimate("qwen", &shape, &sizing(2, 4096));
    assert!(
        mib(f.total_bytes()) > 400 && mib(f.total_bytes()) < 1500,
        "{f:?}"
    );
    // A 1 GiB node refuses 16 slots of 32k context with the numbers.
    let big = Footprint::estimate("qwen", &shape, &sizing(16, 32768));
    let e = node(1024, 2).fits_empty_node("qwen", &big).unwrap_err();
    assert!(e.to_string().contains("MiB of 1024 MiB"), "{e}");
}
