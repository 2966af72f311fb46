//! `DELETE /admin/v1/tenants/{id}` through the router: a dry run lists what the deletion then
//! removes; a running stream of the tenant ends with an error event and is settled; its keys
//! get 401 at once, its private repository 404 while another tenant's repository sharing a
//! blob still downloads; the blob only it named is gone from disk; its row stays, marked
//! deleted, and refuses changes; every bad input is a clear error.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use backend::{Backend, Event};
use gateway::{router, GatewayState};
use hub::{Hub, HubConfig};
use serde_json::{json, Value};
use tenancy::Tenancy;
use tokio_util::task::TaskTracker;

use crate::common::*;
use crate::hub::{call, json_call, push, tenant};

const SCOPES: &[&str] = &["inference", "hub:read", "hub:write"];

struct App {
    app: Router,
    hub: Hub,
    backend: Arc<Scripted>,
    _dir: tempfile::TempDir,
}

async fn app() -> App {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store::open("sqlite::memory:").await.expect("store");
    let tenancy = Tenancy::new(
        store.clone(),
        Arc::new(tenancy::SystemClock),
        &tenancy::TenancyConfig::default(),
    )
    .expect("tenancy");
    let hub = Hub::open(store, dir.path(), HubConfig::default()).expect("hub");
    // A generation that runs until it is cancelled.
    let backend = Scripted::new(
        "m",
        Script::EventsThenHang(vec![admitted(), Ok(Event::text("Hello", 1))]),
    );
    let app = router(GatewayState {
        models: vec![backend.clone() as Arc<dyn Backend>],
        admin_key: ADMIN_KEY.into(),
        tenancy,
        metrics: metrics_handle(),
        metrics_open: false,
        max_body_bytes: MAX_BODY,
        audio: gateway::AudioLimits::default(),
        routing: None,
        webhook_guard: None,
        settlements: TaskTracker::new(),
        hub: Some(hub.clone()),
        plane: None,
        mcp: None,
        files: None,
        batch: None,
        fine_tuning: None,
    });
    App {
        app,
        hub,
        backend,
        _dir: dir,
    }
}

async fn delete(app: &Router, path: &str, key: Option<&str>) -> Reply {
    call(app, "DELETE", path, key, Body::empty()).await
}

async fn tenant_id(app: &Router, name: &str) -> String {
    let list = get(app, "/admin/v1/tenants", Some(ADMIN_KEY)).await.json();
    let found = list["data"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["name"] == name);
    found.expect("the tenant")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// The deletion listing without what differs between a dry run and the deletion (the ledger
/// grows by the running request's settlement).
fn listing(reply: &Reply) -> Value {
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    let mut v = reply.json();
    assert_eq!(v["object"], "tenant.deletion");
    let obj = v.as_object_mut().expect("an object");
    for varies in [
        "dry_run",
        "deleted_at",
        "database_scrubbed",
        "ledger_entries_kept",
    ] {
        obj.remove(varies);
    }
    v
}

#[tokio::test]
async fn deleting_a_tenant_ends_its_streams_and_removes_what_the_dry_run_listed() {
    let a = app().await;
    let app = &a.app;
    let alice = tenant(app, "alice", "alice-org", SCOPES).await;
    let bob = tenant(app, "bob", "bob-org", SCOPES).await;
    let alice_id = tenant_id(app, "alice").await;
    for (key, org) in [(&alice, "alice-org"), (&bob, "bob-org")] {
        let r = json_call(
            app,
            "POST",
            "/api/v1/hub/repos",
            Some(key),
            json!({"org": org, "name": "r", "private": true}),
        )
        .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    }
    let shared = b"the same weights in both tenants' repositories";
    let only_alice = b"weights only alice has";
    push(app, &alice, "alice-org/r", "w.bin", shared).await;
    push(app, &alice, "alice-org/r", "x.bin", only_alice).await;
    push(app, &bob, "bob-org/r", "w.bin", shared).await;
    let blob = |data: &[u8]| {
        let sha = hub::blobs::Digests::of(data).sha256;
        a.hub.blobs().blob_path(&sha).expect("path")
    };
    assert!(blob(shared).exists() && blob(only_alice).exists());

    // A stream of alice's runs (its client keeps waiting for more).
    let streaming = {
        let app = app.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut body = chat_body("m");
            body["stream"] = json!(true);
            post_as(&app, "/v1/chat/completions", body.to_string(), Some(&alice)).await
        })
    };
    for _ in 0..200 {
        if !a.backend.seen.lock().expect("lock").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let path = format!("/admin/v1/tenants/{alice_id}");
    let dry = delete(app, &format!("{path}?dry_run=true"), Some(ADMIN_KEY)).await;
    let planned = listing(&dry);
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(planned["removed"]["hub_repos"], json!(["alice-org/r"]));
    assert_eq!(planned["removed"]["orgs"], json!(["alice-org"]));
    assert_eq!(
        planned["running_requests"].as_array().map(Vec::len),
        Some(1)
    );
    let only_alice_sha = hub::blobs::Digests::of(only_alice).sha256;
    assert_eq!(planned["removed"]["hub_blobs"], json!([only_alice_sha]));
    // A dry run changes nothing.
    assert_eq!(
        get(app, "/v1/models", Some(&alice)).await.status.as_u16(),
        200
    );

    let done = delete(app, &path, Some(ADMIN_KEY)).await;
    assert_eq!(done.json()["dry_run"], false, "{}", done.body);
    assert!(done.json()["deleted_at"].is_string());
    assert_eq!(done.json()["database_scrubbed"], true);
    assert_eq!(listing(&done), planned, "the dry run listed what went");
    let entries = |r: &Reply| r.json()["ledger_entries_kept"].as_i64().expect("count");
    assert_eq!(
        entries(&done),
        entries(&dry) + 2,
        "the settlement's charge and release"
    );

    // The stream ended with an error event, and was billed for what it delivered.
    let stream = tokio::time::timeout(Duration::from_secs(10), streaming)
        .await
        .expect("the stream ended")
        .expect("task");
    assert!(
        stream.body.contains("tenant was deleted"),
        "{}",
        stream.body
    );
    assert!(a.backend.was_dropped());
    let request_id = planned["running_requests"][0].as_str().expect("id");
    let bill = get(
        app,
        &format!("/admin/v1/requests/{request_id}"),
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(bill.json()["state"], "settled", "{}", bill.body);
    assert_eq!(bill.json()["billed"]["completion_tokens"], 1);

    // Its key is refused at once; its private repository is gone, bob's still downloads.
    get(app, "/v1/models", Some(&alice))
        .await
        .assert_error(401, "invalid_api_key", None);
    let gone = get(app, "/api/models/alice-org/r", Some(ADMIN_KEY)).await;
    assert_eq!(gone.status.as_u16(), 404, "{}", gone.body);
    let file = get(app, "/bob-org/r/resolve/main/w.bin", Some(&bob)).await;
    assert_eq!(file.status.as_u16(), 200);
    assert_eq!(file.body.as_bytes(), shared);
    assert!(blob(shared).exists(), "bob's repository still names it");
    assert!(!blob(only_alice).exists(), "nothing names it any more");

    // The row stays, deleted, with its ledger; it refuses changes, and a second deletion.
    let row = get(app, &path, Some(ADMIN_KEY)).await.json();
    assert!(
        row["deleted_at"].is_string() && row["disabled"] == true,
        "{row}"
    );
    for (method, sub, body) in [
        ("DELETE", "", Value::Null),
        ("DELETE", "?dry_run=true", Value::Null),
        ("PATCH", "", json!({"rpm": 5})),
        ("POST", "/keys", json!({"name": "again"})),
        ("POST", "/topups", json!({"amount": 5})),
        ("POST", "/orgs", json!({"name": "again-org"})),
    ] {
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let r = call(app, method, &format!("{path}{sub}"), Some(ADMIN_KEY), body).await;
        r.assert_error(409, "conflict", None);
        assert!(r.body.contains("deleted"), "{method} {sub}: {}", r.body);
    }
    let active = get(app, "/admin/v1/tenants", Some(ADMIN_KEY)).await.json();
    assert_eq!(active["data"].as_array().map(Vec::len), Some(1), "only bob");
    let all = get(
        app,
        "/admin/v1/tenants?include_deleted=true",
        Some(ADMIN_KEY),
    )
    .await;
    assert_eq!(all.json()["data"].as_array().map(Vec::len), Some(2));
    // Bob is untouched.
    assert_eq!(
        get(app, "/v1/models", Some(&bob)).await.status.as_u16(),
        200
    );
}

#[tokio::test]
async fn bad_deletions_are_clear_errors() {
    let a = app().await;
    let app = &a.app;
    let bob = tenant(app, "bob", "bob-org", SCOPES).await;
    let bob_id = tenant_id(app, "bob").await;
    let path = format!("/admin/v1/tenants/{bob_id}");
    delete(app, &format!("{path}?dry_run=maybe"), Some(ADMIN_KEY))
        .await
        .assert_error(400, "invalid_request_error", Some("dry_run"));
    delete(app, &format!("{path}?force=true"), Some(ADMIN_KEY))
        .await
        .assert_error(400, "invalid_request_error", None);
    get(
        app,
        "/admin/v1/tenants?include_deleted=yes",
        Some(ADMIN_KEY),
    )
    .await
    .assert_error(400, "invalid_request_error", Some("include_deleted"));
    delete(app, "/admin/v1/tenants/ten_nobody", Some(ADMIN_KEY))
        .await
        .assert_error(404, "not_found", None);
    delete(app, &path, Some(&bob))
        .await
        .assert_error(403, "permission_denied", None);
    delete(app, &path, None)
        .await
        .assert_error(401, "invalid_api_key", None);
    // Nothing happened to bob.
    assert_eq!(
        get(app, "/v1/models", Some(&bob)).await.status.as_u16(),
        200
    );
    let dry = delete(app, &format!("{path}?dry_run=1"), Some(ADMIN_KEY)).await;
    assert_eq!(dry.json()["dry_run"], true, "{}", dry.body);
}
