//! What a request may cost is bounded before the backend does any work for it: stop
//! sequences in bytes, prompts against the model's context, and tenants that cannot pay or are
//! over their RPM (issue 13, item 5). Each refusal is asserted to leave the backend untouched.

use axum::body::Body;
use axum::http::{header, Request};
use backend::Event;
use serde_json::json;

use crate::common::*;
use crate::tenants::{account, admin, setup, tenant_with_key};

fn seen(backend: &Scripted) -> usize {
    backend.seen.lock().unwrap().len()
}

#[tokio::test]
async fn stop_sequences_are_bounded_in_bytes_before_the_backend() {
    let backend = Scripted::hello("m");
    let app = app(vec![backend.clone()]).await;
    let with_stop = |stop: serde_json::Value| {
        let mut body = chat_body("m");
        body["stop"] = stop;
        body
    };
    // The attack, scaled to the test's body limit: 15 long stop sequences.
    let long = "x".repeat(4000);
    post(
        &app,
        "/v1/chat/completions",
        with_stop(json!(vec![long; 15])),
    )
    .await
    .assert_error(400, "invalid_request_error", Some("stop[0]"));
    // One sequence over the per-sequence bound, alone or in a list.
    let over = "y".repeat(257);
    post(&app, "/v1/chat/completions", with_stop(json!(over)))
        .await
        .assert_error(400, "invalid_request_error", Some("stop"));
    let reply = post(
        &app,
        "/v1/completions",
        json!({ "model": "m", "prompt": "p", "stop": ["a", over] }),
    )
    .await;
    reply.assert_error(400, "invalid_request_error", Some("stop[1]"));
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("256 bytes")),
        "{}",
        reply.body
    );
    // Each short enough, but too many bytes together.
    let reply = post(
        &app,
        "/v1/chat/completions",
        with_stop(json!(vec!["z".repeat(200); 6])),
    )
    .await;
    reply.assert_error(400, "invalid_request_error", Some("stop"));
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1024 bytes together")),
        "{}",
        reply.body
    );
    assert_eq!(seen(&backend), 0, "a refused request reached the backend");

    // Up to the bounds is fine.
    let stops = vec!["w".repeat(256); 4];
    let ok = post(&app, "/v1/chat/completions", with_stop(json!(stops))).await;
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
    assert_eq!(backend.last_request().stop, stops);
}

#[tokio::test]
async fn a_prompt_that_cannot_fit_the_context_is_refused_before_tokenizing() {
    // A context of 64 tokens: no tokenizer fits 64 × 256 bytes of text in fewer than 64.
    let backend = Scripted::with_context("m", Script::Events(hello_events()), 64);
    let app = app(vec![backend.clone()]).await;
    let reply = post(
        &app,
        "/v1/completions",
        json!({ "model": "m", "prompt": "a".repeat(64 * 256) }),
    )
    .await;
    reply.assert_error(400, "context_length_exceeded", Some("prompt"));
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("64 tokens"), "{message}");
    let chat = json!({ "model": "m", "messages": [
        { "role": "system", "content": "s".repeat(32 * 256) },
        { "role": "user", "content": "u".repeat(32 * 256) },
    ] });
    post(&app, "/v1/chat/completions", chat).await.assert_error(
        400,
        "context_length_exceeded",
        Some("messages"),
    );
    assert_eq!(seen(&backend), 0, "a refused prompt reached the backend");

    // One token's worth of bytes less may fit (the backend decides, after tokenizing).
    let ok = post(
        &app,
        "/v1/completions",
        json!({ "model": "m", "prompt": "a".repeat(63 * 256) }),
    )
    .await;
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
    assert_eq!(seen(&backend), 1);
}

#[tokio::test]
async fn a_big_prompt_from_a_tenant_that_cannot_pay_never_reaches_the_backend() {
    let backend = Scripted::hello("m");
    let (app, _) = setup(vec![backend.clone()]).await;
    let price = admin(
        &app,
        "PUT",
        "/prices/m",
        Some(json!({ "input_per_million": 1_000_000, "output_per_million": 1_000_000 })),
    )
    .await;
    assert_eq!(price.status.as_u16(), 200, "{}", price.body);
    let (_, broke, _) =
        tenant_with_key(&app, json!({ "grant_tokens": 0 }), json!({ "rpm": 1 })).await;
    let big = "a".repeat(60 * 1024);
    for _ in 0..4 {
        let body = json!({ "model": "m", "prompt": big, "stream": true }).to_string();
        post_as(&app, "/v1/completions", body, Some(&broke))
            .await
            .assert_error(402, "insufficient_quota", None);
        let body = json!({ "model": "m", "messages": [{ "role": "user", "content": big }] });
        post_as(&app, "/v1/chat/completions", body.to_string(), Some(&broke))
            .await
            .assert_error(402, "insufficient_quota", None);
    }
    assert_eq!(seen(&backend), 0, "an unpaid request reached the backend");

    // A free-tier-only tenant whose grant is used up: 403, also before the backend.
    let (_, spent, _) = tenant_with_key(
        &app,
        json!({ "grant_tokens": 0, "free_tier_only": true }),
        json!({}),
    )
    .await;
    let body = json!({ "model": "m", "prompt": big }).to_string();
    post_as(&app, "/v1/completions", body, Some(&spent))
        .await
        .assert_error(403, "permission_denied", None);
    assert_eq!(seen(&backend), 0);

    // A tenant with a little money can send a small prompt, but not one whose bytes alone
    // (at least 240 tokens at 1 micro-unit each) cost more than it has.
    let (id, poor, _) = tenant_with_key(&app, json!({ "grant_tokens": 0 }), json!({})).await;
    let topped = admin(
        &app,
        "POST",
        &format!("/tenants/{id}/topups"),
        Some(json!({ "amount": 1_000 })),
    )
    .await;
    assert_eq!(topped.status.as_u16(), 200, "{}", topped.body);
    let body = json!({ "model": "m", "prompt": big, "max_tokens": 16 }).to_string();
    post_as(&app, "/v1/completions", body, Some(&poor))
        .await
        .assert_error(402, "insufficient_quota", None);
    assert_eq!(seen(&backend), 0);
    let mut small = chat_body("m");
    small["max_tokens"] = json!(16);
    let ok = post_as(&app, "/v1/chat/completions", small.to_string(), Some(&poor)).await;
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
    assert_eq!(seen(&backend), 1);
}

#[tokio::test]
async fn requests_over_rpm_are_refused_before_the_backend() {
    let backend = Scripted::hello("m");
    let (app, _) = setup(vec![backend.clone()]).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({ "rpm": 1 })).await;
    let ok = post_as(
        &app,
        "/v1/chat/completions",
        chat_body("m").to_string(),
        Some(&key),
    )
    .await;
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
    let big = "a".repeat(60 * 1024);
    for _ in 0..4 {
        let body = json!({ "model": "m", "prompt": big }).to_string();
        let limited = post_as(&app, "/v1/completions", body, Some(&key)).await;
        limited.assert_error(429, "rate_limit_exceeded", None);
        assert!(limited.header("retry-after").is_some());
    }
    assert_eq!(seen(&backend), 1, "a request over RPM reached the backend");
}

#[tokio::test]
async fn a_queued_request_counts_against_rpm() {
    // The backend queues the request and never admits it.
    let backend = Scripted::new(
        "m",
        Script::EventsThenHang(vec![Ok(Event::Queued {
            position: 1,
            eta_ms: 1_000,
        })]),
    );
    let (app, _) = setup(vec![backend.clone()]).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({ "rpm": 1 })).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    let request = Request::post("/v1/chat/completions")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let waiting = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .expect("infallible");
    assert_eq!(waiting.status().as_u16(), 200);
    assert_eq!(
        waiting.headers().get("x-flywheel-queue-position").unwrap(),
        "1"
    );
    // While the first still waits in the queue, the second is over the limit.
    post_as(&app, "/v1/chat/completions", body.to_string(), Some(&key))
        .await
        .assert_error(429, "rate_limit_exceeded", None);
    assert_eq!(seen(&backend), 1);
    drop(waiting);
}

#[tokio::test]
async fn rpm_counts_each_request_once_and_tpm_its_worst_case() {
    let backend = Scripted::hello("m");
    let (app, _) = setup(vec![backend.clone()]).await;
    // hello: admitted with 5 + 16 = 21 tokens, settled at 5 + 2 = 7.
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({ "rpm": 3, "tpm": 30 })).await;
    let body = chat_body("m").to_string();
    for _ in 0..2 {
        let ok = post_as(&app, "/v1/chat/completions", body.clone(), Some(&key)).await;
        assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
    }
    // 7 + 7 used, 21 more would be 35 > 30: refused at admission, after the backend's count.
    post_as(&app, "/v1/chat/completions", body.clone(), Some(&key))
        .await
        .assert_error(429, "rate_limit_exceeded", None);
    assert_eq!(seen(&backend), 3);
    // That third request counted against RPM (3): the fourth is refused before the backend.
    post_as(&app, "/v1/chat/completions", body, Some(&key))
        .await
        .assert_error(429, "rate_limit_exceeded", None);
    assert_eq!(seen(&backend), 3, "a request over RPM reached the backend");
}

#[tokio::test]
async fn a_request_that_leaves_the_queue_gives_its_hold_back() {
    let queued = Ok(Event::Queued {
        position: 1,
        eta_ms: 1_000,
    });
    let waits = Scripted::new("waits", Script::EventsThenHang(vec![queued.clone()]));
    let times_out = Scripted::new(
        "times-out",
        Script::Events(vec![
            queued,
            Err(backend::BackendError::QueueTimeout {
                waited_secs: 30,
                retry_after: 5,
            }),
        ]),
    );
    let (app, _) = setup(vec![waits, times_out]).await;
    for model in ["waits", "times-out"] {
        let price = json!({ "input_per_million": 1_000_000, "output_per_million": 1_000_000 });
        let put = admin(&app, "PUT", &format!("/prices/{model}"), Some(price)).await;
        assert_eq!(put.status.as_u16(), 200, "{}", put.body);
    }
    let (id, key, _) = tenant_with_key(&app, json!({ "grant_tokens": 0 }), json!({})).await;
    let topped = admin(
        &app,
        "POST",
        &format!("/tenants/{id}/topups"),
        Some(json!({ "amount": 1_000_000 })),
    )
    .await;
    assert_eq!(topped.status.as_u16(), 200, "{}", topped.body);

    // Its client leaves while it waits: the hold taken before it queued goes back.
    let mut body = chat_body("waits");
    body["stream"] = json!(true);
    let request = Request::post("/v1/chat/completions")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let waiting = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .expect("infallible");
    assert_eq!(waiting.status().as_u16(), 200);
    assert!(account(&app, &key).await["amount_held"].as_i64() > Some(0));
    drop(waiting);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while account(&app, &key).await["amount_held"] != 0 {
        assert!(std::time::Instant::now() < deadline, "the hold was kept");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // It times out in the queue: its status says so, and nothing is held or charged.
    let body = chat_body("times-out").to_string();
    post_as(&app, "/v1/chat/completions", body, Some(&key))
        .await
        .assert_error(503, "queue_timeout", None);
    let after = account(&app, &key).await;
    assert_eq!(after["amount_held"], 0, "{after}");
    assert_eq!(after["balance"], 1_000_000, "{after}");
}
