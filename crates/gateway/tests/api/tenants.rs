//! Tenant keys end to end through the router: authentication, scopes, allow-lists, the admin
//! API, and the ledger driven by the backend's events (reserve → progress → settle).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use backend::{Backend, Event};
use serde_json::{json, Value};
use tenancy::Tenancy;

use crate::common::*;

pub async fn setup(models: Vec<Arc<Scripted>>) -> (Router, Tenancy) {
    let tenancy = tenancy().await;
    let models = models.into_iter().map(|m| m as Arc<dyn Backend>).collect();
    (app_on(models, false, tenancy.clone()), tenancy)
}

pub async fn admin(app: &Router, method: &str, path: &str, body: Option<Value>) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(format!("/admin/v1{path}"))
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN_KEY}"))
        .header(header::CONTENT_TYPE, "application/json");
    let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
    send(app, request.body(body).expect("request")).await
}

/// A tenant with `fields` and one key with `key_fields`: `(tenant id, secret, key id)`.
pub async fn tenant_with_key(
    app: &Router,
    fields: Value,
    key_fields: Value,
) -> (String, String, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let mut body = json!({ "name": format!("acme-{}", NEXT.fetch_add(1, Ordering::Relaxed)) });
    body.as_object_mut()
        .expect("object")
        .extend(fields.as_object().cloned().unwrap_or_default());
    let tenant = admin(app, "POST", "/tenants", Some(body)).await;
    assert_eq!(tenant.status.as_u16(), 201, "{}", tenant.body);
    let id = tenant.json()["id"].as_str().expect("id").to_owned();
    let key = admin(
        app,
        "POST",
        &format!("/tenants/{id}/keys"),
        Some(key_fields),
    )
    .await;
    assert_eq!(key.status.as_u16(), 201, "{}", key.body);
    let key = key.json();
    (
        id,
        key["key"].as_str().expect("secret").to_owned(),
        key["id"].as_str().expect("key id").to_owned(),
    )
}

pub async fn account(app: &Router, key: &str) -> Value {
    let reply = get(app, "/v1/account", Some(key)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    reply.json()
}

#[tokio::test]
async fn a_tenant_key_is_billed_exactly_its_usage_from_the_free_grant() {
    let (app, _) = setup(vec![Scripted::hello("m")]).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let before = account(&app, &key).await;
    assert_eq!(before["grant_tokens_total"], 1_000_000);
    assert_eq!(before["grant_tokens_left"], 1_000_000);
    let reply = post_as(
        &app,
        "/v1/chat/completions",
        chat_body("m").to_string(),
        Some(&key),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    let after = account(&app, &key).await;
    // hello: 5 prompt + 2 completion tokens.
    assert_eq!(after["grant_tokens_left"], 1_000_000 - 7, "{after}");
    assert_eq!(after["grant_tokens_held"], 0, "{after}");
    let usage = get(&app, "/v1/usage?group_by=model", Some(&key)).await;
    assert_eq!(usage.status.as_u16(), 200, "{}", usage.body);
    let rows = usage.json()["data"].clone();
    assert_eq!(rows[0]["group"], "m", "{rows}");
    assert_eq!(rows[0]["requests"], 1);
    assert_eq!(rows[0]["total_tokens"], 7);
}

#[tokio::test]
async fn keys_are_checked_before_anything_runs() {
    let backend = Scripted::hello("m");
    let (app, _) = setup(vec![backend.clone()]).await;
    let body = chat_body("m").to_string();
    post_as(&app, "/v1/chat/completions", body.clone(), None)
        .await
        .assert_error(401, "invalid_api_key", None);
    post_as(
        &app,
        "/v1/chat/completions",
        body.clone(),
        Some("fw-nonsense"),
    )
    .await
    .assert_error(401, "invalid_api_key", None);
    let (_, hub_only, _) =
        tenant_with_key(&app, json!({}), json!({ "scopes": ["hub:read"] })).await;
    post_as(&app, "/v1/chat/completions", body.clone(), Some(&hub_only))
        .await
        .assert_error(403, "permission_denied", None);
    let (_, other_model, _) = tenant_with_key(&app, json!({}), json!({ "models": ["x"] })).await;
    post_as(&app, "/v1/chat/completions", body, Some(&other_model))
        .await
        .assert_error(403, "permission_denied", None);
    let models = get(&app, "/v1/models", Some(&other_model)).await;
    assert_eq!(models.json()["data"], json!([]), "{}", models.body);
    assert!(
        backend.seen.lock().unwrap().is_empty(),
        "a refused request reached the backend"
    );
}

#[tokio::test]
async fn revoked_and_expired_keys_are_refused() {
    let (app, _) = setup(vec![Scripted::hello("m")]).await;
    let (_, key, key_id) = tenant_with_key(&app, json!({}), json!({})).await;
    assert_eq!(
        get(&app, "/v1/models", Some(&key)).await.status.as_u16(),
        200
    );
    let revoked = admin(&app, "DELETE", &format!("/keys/{key_id}"), None).await;
    assert_eq!(revoked.status.as_u16(), 200, "{}", revoked.body);
    get(&app, "/v1/models", Some(&key))
        .await
        .assert_error(401, "invalid_api_key", None);
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let (_, expired, _) =
        tenant_with_key(&app, json!({}), json!({ "expires_at": soon.to_rfc3339() })).await;
    assert_eq!(
        get(&app, "/v1/models", Some(&expired))
            .await
            .status
            .as_u16(),
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    get(&app, "/v1/models", Some(&expired))
        .await
        .assert_error(401, "invalid_api_key", None);
}

#[tokio::test]
async fn a_tenant_key_cannot_reach_another_tenant_or_the_admin_api() {
    let (app, _) = setup(vec![Scripted::hello("m")]).await;
    let (a, key_a, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let (b, _, b_key_id) = tenant_with_key(&app, json!({ "name": "other" }), json!({})).await;
    for path in [
        "/admin/v1/tenants".to_owned(),
        format!("/admin/v1/tenants/{b}"),
        format!("/admin/v1/tenants/{b}/keys"),
        format!("/admin/v1/tenants/{b}/orgs"),
        format!("/admin/v1/tenants/{a}"),
        "/admin/v1/prices".to_owned(),
    ] {
        get(&app, &path, Some(&key_a))
            .await
            .assert_error(403, "permission_denied", None);
    }
    for (method, path) in [
        ("POST", format!("/admin/v1/tenants/{b}/topups")),
        ("POST", format!("/admin/v1/tenants/{b}/keys")),
        ("POST", format!("/admin/v1/tenants/{b}/orgs")),
        ("PATCH", format!("/admin/v1/tenants/{b}")),
        ("DELETE", format!("/admin/v1/keys/{b_key_id}")),
        ("PUT", "/admin/v1/prices/m".to_owned()),
    ] {
        let request = Request::builder()
            .method(method)
            .uri(&path)
            .header(header::AUTHORIZATION, format!("Bearer {key_a}"))
            .body(Body::from("{}"))
            .expect("request");
        send(&app, request)
            .await
            .assert_error(403, "permission_denied", None);
    }
    // The account is always the caller's own; no parameter names another tenant.
    assert_eq!(account(&app, &key_a).await["tenant_id"], a.as_str());
    get(&app, &format!("/v1/usage?tenant_id={b}"), Some(&key_a))
        .await
        .assert_error(400, "invalid_request_error", None);
}

#[tokio::test]
async fn an_empty_account_gets_402_and_a_top_up_pays_at_the_price() {
    let (app, _) = setup(vec![Scripted::hello("m")]).await;
    let (id, key, _) = tenant_with_key(&app, json!({ "grant_tokens": 0 }), json!({})).await;
    let price = admin(
        &app,
        "PUT",
        "/prices/m",
        Some(json!({ "input_per_million": 1_000_000, "output_per_million": 2_000_000 })),
    )
    .await;
    assert_eq!(price.status.as_u16(), 200, "{}", price.body);
    let mut body = chat_body("m");
    body["max_tokens"] = json!(16);
    let body = body.to_string();
    let refused = post_as(&app, "/v1/chat/completions", body.clone(), Some(&key)).await;
    refused.assert_error(402, "insufficient_quota", None);
    assert_eq!(refused.json()["error"]["type"], "insufficient_quota");
    // Before it may queue, the request holds its worst case bounded from its bytes: "user" and
    // "Hi" (6 bytes) plus the chat template's allowance (96 + 8 per message) at 1, and 16
    // completion tokens at 2: 110 + 32 = 142. One micro-unit less is refused.
    for (amount, key_id) in [(141, "t1"), (1, "t2")] {
        let topped = admin(
            &app,
            "POST",
            &format!("/tenants/{id}/topups"),
            Some(json!({ "amount": amount, "idempotency_key": key_id })),
        )
        .await;
        assert_eq!(topped.status.as_u16(), 200, "{}", topped.body);
        if amount == 141 {
            post_as(&app, "/v1/chat/completions", body.clone(), Some(&key))
                .await
                .assert_error(402, "insufficient_quota", None);
        }
    }
    let ok = post_as(&app, "/v1/chat/completions", body, Some(&key)).await;
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
    // Billed: 2 uncached + 3 cached prompt tokens at 1 (the cached price defaults to the
    // input price) + 2 completion tokens at 2 = 9.
    let after = account(&app, &key).await;
    assert_eq!(after["balance"], 142 - 9, "{after}");
    assert_eq!(after["amount_held"], 0, "{after}");
}

#[tokio::test]
async fn a_key_over_its_rpm_gets_429_with_retry_after() {
    let (app, _) = setup(vec![Scripted::hello("m")]).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({ "rpm": 2 })).await;
    let body = chat_body("m").to_string();
    for _ in 0..2 {
        let ok = post_as(&app, "/v1/chat/completions", body.clone(), Some(&key)).await;
        assert_eq!(ok.status.as_u16(), 200, "{}", ok.body);
    }
    let limited = post_as(&app, "/v1/chat/completions", body, Some(&key)).await;
    limited.assert_error(429, "rate_limit_exceeded", None);
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
}

#[tokio::test]
async fn a_dropped_stream_is_billed_what_was_sent() {
    let backend = Scripted::new(
        "m",
        Script::EventsThenHang(vec![
            admitted(),
            Ok(Event::text("one", 1)),
            Ok(Event::text(" two", 2)),
        ]),
    );
    let (app, tenancy) = setup(vec![backend.clone()]).await;
    let (_, key, _) = tenant_with_key(&app, json!({}), json!({})).await;
    let mut body = chat_body("m");
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true, "continuous_usage_stats": true });
    let request = Request::post("/v1/chat/completions")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .expect("infallible");
    assert_eq!(response.status().as_u16(), 200);
    let id;
    {
        use futures::StreamExt;
        let mut frames = response.into_body().into_data_stream();
        let mut seen = String::new();
        while !seen.contains(" two") {
            let bytes = frames.next().await.expect("a frame").expect("bytes");
            seen.push_str(&String::from_utf8_lossy(&bytes));
        }
        // Every chunk carries the usage so far.
        assert!(seen.contains("\"completion_tokens\":3"), "{seen}");
        let start = seen.find("chatcmpl-").expect("an id");
        id = seen[start..].split('"').next().expect("id").to_owned();
        // Dropping the body here is the client going away.
    }
    let mut bill = Value::Null;
    for _ in 0..100 {
        let reply = admin(&app, "GET", &format!("/requests/{id}"), None).await;
        bill = reply.json();
        if bill["state"] == "settled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bill["state"], "settled", "{bill}");
    assert_eq!(bill["billed"]["prompt_tokens"], 5, "{bill}");
    assert_eq!(bill["billed"]["completion_tokens"], 3, "{bill}");
    assert!(backend.was_dropped());
    let reservation = tenancy.ledger.reservation(&id).await.expect("reservation");
    assert!(
        reservation.delivered.is_some(),
        "no progress mark was persisted"
    );
}

#[tokio::test]
async fn admin_inputs_are_validated_and_secrets_never_listed() {
    let (app, _) = setup(vec![]).await;
    admin(&app, "POST", "/tenants", Some(json!({})))
        .await
        .assert_error(400, "invalid_request_error", Some("name"));
    admin(
        &app,
        "POST",
        "/tenants",
        Some(json!({ "name": "x", "color": "red" })),
    )
    .await
    .assert_error(400, "invalid_request_error", Some("color"));
    let (id, secret, _) =
        tenant_with_key(&app, json!({}), json!({ "scopes": ["inference"] })).await;
    admin(
        &app,
        "POST",
        &format!("/tenants/{id}/keys"),
        Some(json!({ "scopes": ["root"] })),
    )
    .await
    .assert_error(400, "invalid_request_error", Some("scopes"));
    admin(
        &app,
        "POST",
        &format!("/tenants/{id}/topups"),
        Some(json!({ "amount": -5 })),
    )
    .await
    .assert_error(400, "invalid_request_error", Some("amount"));
    admin(&app, "PATCH", &format!("/tenants/{id}"), Some(json!({})))
        .await
        .assert_error(400, "invalid_request_error", None);
    admin(&app, "GET", "/tenants/ten_missing", None)
        .await
        .assert_error(404, "not_found", None);
    let listed = admin(&app, "GET", &format!("/tenants/{id}/keys"), None).await;
    assert_eq!(listed.status.as_u16(), 200);
    assert!(!listed.body.contains(&secret), "a listing shows a secret");
    assert!(!listed.body.contains("hash"), "a listing shows a hash");
    assert_eq!(listed.json()["data"][0]["prefix"], &secret[..12]);
    let patched = admin(
        &app,
        "PATCH",
        &format!("/tenants/{id}"),
        Some(json!({ "rpm": 5, "free_tier_only": true })),
    )
    .await;
    assert_eq!(patched.json()["rpm"], 5, "{}", patched.body);
    let cleared = admin(
        &app,
        "PATCH",
        &format!("/tenants/{id}"),
        Some(json!({ "rpm": null })),
    )
    .await;
    assert_eq!(cleared.json()["rpm"], Value::Null, "{}", cleared.body);
    let org = admin(
        &app,
        "POST",
        &format!("/tenants/{id}/orgs"),
        Some(json!({ "name": "acme-ai" })),
    )
    .await;
    assert_eq!(org.status.as_u16(), 201, "{}", org.body);
    admin(
        &app,
        "POST",
        &format!("/tenants/{id}/orgs"),
        Some(json!({ "name": "acme-ai" })),
    )
    .await
    .assert_error(409, "conflict", None);
}
