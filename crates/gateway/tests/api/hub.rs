//! The hub's routes under attack (issue 13): deep-tree listings, another tenant's blob by
//! its hash, oversized chunks, huge tag filters, scope-less reads, and the storage quota.
//! Each answer is a clear refusal in the hub's shape (OpenAI error body, `X-Error-Code`) or a
//! bounded one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use gateway::{router, GatewayState};
use hub::path::RepoId;
use hub::{Access, CommitRequest, FileOp, Hub, HubConfig};
use serde_json::{json, Value};
use tenancy::Tenancy;
use tokio_util::task::TaskTracker;

use crate::common::*;

struct HubApp {
    app: Router,
    hub: Hub,
    _dir: tempfile::TempDir,
}

async fn hub_app(config: HubConfig) -> HubApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store::open("sqlite::memory:").await.expect("store");
    let tenancy = Tenancy::new(
        store.clone(),
        Arc::new(tenancy::SystemClock),
        &tenancy::TenancyConfig::default(),
    )
    .expect("tenancy");
    let hub = Hub::open(store, dir.path(), config).expect("hub");
    let app = router(GatewayState {
        models: Vec::new(),
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
    HubApp {
        app,
        hub,
        _dir: dir,
    }
}

pub(crate) async fn call(
    app: &Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Body,
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let request = request
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("request");
    send(app, request).await
}

pub(crate) async fn json_call(
    app: &Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Value,
) -> Reply {
    call(app, method, path, key, Body::from(body.to_string())).await
}

/// A tenant owning org `org`, and a key with `scopes`.
pub(crate) async fn tenant(app: &Router, name: &str, org: &str, scopes: &[&str]) -> String {
    let t = json_call(
        app,
        "POST",
        "/admin/v1/tenants",
        Some(ADMIN_KEY),
        json!({"name": name}),
    )
    .await;
    assert_eq!(t.status.as_u16(), 201, "{}", t.body);
    let id = t.json()["id"].as_str().expect("id").to_owned();
    let o = json_call(
        app,
        "POST",
        &format!("/admin/v1/tenants/{id}/orgs"),
        Some(ADMIN_KEY),
        json!({"name": org}),
    )
    .await;
    assert_eq!(o.status.as_u16(), 201, "{}", o.body);
    let k = json_call(
        app,
        "POST",
        &format!("/admin/v1/tenants/{id}/keys"),
        Some(ADMIN_KEY),
        json!({"scopes": scopes}),
    )
    .await;
    assert_eq!(k.status.as_u16(), 201, "{}", k.body);
    k.json()["key"].as_str().expect("key").to_owned()
}

/// Uploads `data` into `repo` over HTTP and commits it as `path`.
pub(crate) async fn push(app: &Router, key: &str, repo: &str, path: &str, data: &[u8]) {
    let d = hub::blobs::Digests::of(data);
    let s = json_call(
        app,
        "POST",
        &format!("/api/v1/hub/repos/{repo}/uploads"),
        Some(key),
        json!({"sha256": d.sha256, "size": data.len()}),
    )
    .await;
    assert_eq!(s.status.as_u16(), 200, "{}", s.body);
    if let Some(id) = s.json()["upload_id"].as_str() {
        let c = call(
            app,
            "PUT",
            &format!("/api/v1/hub/repos/{repo}/uploads/{id}?offset=0"),
            Some(key),
            Body::from(data.to_vec()),
        )
        .await;
        assert_eq!(c.status.as_u16(), 200, "{}", c.body);
    }
    let c = json_call(
        app,
        "POST",
        &format!("/api/v1/hub/repos/{repo}/commits/main"),
        Some(key),
        json!({"files": [{"path": path, "sha256": d.sha256, "size": data.len()}]}),
    )
    .await;
    assert_eq!(c.status.as_u16(), 201, "{}", c.body);
}

#[tokio::test]
async fn a_deep_wide_tree_lists_in_bounded_bytes_and_time() {
    let h = hub_app(HubConfig::default()).await;
    let id = RepoId::parse("acme/deep").expect("id");
    h.hub
        .create_repo(&Access::Admin, &id, false)
        .await
        .expect("create");
    let d = hub::blobs::Digests::of(b"x");
    let s = h
        .hub
        .start_upload(&Access::Admin, &id, &d.sha256, 1)
        .await
        .expect("start");
    let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"x",
    ))]);
    h.hub
        .write_chunk(&Access::Admin, &id, &s.upload_id.expect("id"), 0, body)
        .await
        .expect("chunk");
    // 1,000 files, each 120 directories deep in a chain of its own: 120,000 directories.
    let chain = vec!["d"; 119].join("/");
    let files: Vec<FileOp> = (0..1000)
        .map(|i| FileOp {
            path: format!("f{i:04}/{chain}/x.txt"),
            sha256: d.sha256.clone(),
            size: 1,
        })
        .collect();
    h.hub
        .commit(
            &Access::Admin,
            &id,
            "main",
            CommitRequest {
                files,
                ..Default::default()
            },
        )
        .await
        .expect("commit");

    let started = Instant::now();
    let r = get(
        &h.app,
        "/api/models/acme/deep/tree/main?recursive=true",
        None,
    )
    .await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.body);
    assert!(r.body.len() < 1 << 20, "a page of {} bytes", r.body.len());
    assert_eq!(r.json().as_array().map(Vec::len), Some(1000));
    let link = r.header("link").expect("a next page").to_owned();
    assert!(link.contains("cursor=1000"), "{link}");
    // The last page, by cursor, costs no more.
    let last = get(
        &h.app,
        "/api/models/acme/deep/tree/main?recursive=true&cursor=120999",
        None,
    )
    .await;
    assert_eq!(last.json().as_array().map(Vec::len), Some(1));
    assert!(last.header("link").is_none());
    // ModelScope: the whole listing is refused with what to do; a page is bounded.
    let ms = get(
        &h.app,
        "/api/v1/models/acme/deep/repo/files?Recursive=true",
        None,
    )
    .await;
    ms.assert_error(400, "invalid_request_error", Some("PageSize"));
    let page = get(
        &h.app,
        "/api/v1/models/acme/deep/repo/files?Recursive=true&PageNumber=3&PageSize=1000",
        None,
    )
    .await;
    assert_eq!(page.status.as_u16(), 200, "{}", page.body);
    assert!(
        page.body.len() < 1 << 20,
        "a page of {} bytes",
        page.body.len()
    );
    assert_eq!(
        page.json()["Data"]["Files"].as_array().map(Vec::len),
        Some(1000)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Cursors: one past everything is an empty page, garbage a clear 400 (never an overflow).
    let past = get(
        &h.app,
        &format!(
            "/api/models/acme/deep/tree/main?recursive=true&cursor={}",
            usize::MAX
        ),
        None,
    )
    .await;
    assert_eq!((past.status.as_u16(), past.body.as_str()), (200, "[]"));
    get(&h.app, "/api/models/acme/deep/tree/main?cursor=abc", None)
        .await
        .assert_error(400, "invalid_request_error", Some("cursor"));
}

#[tokio::test]
async fn another_tenants_private_file_cannot_be_copied_by_its_hash() {
    let h = hub_app(HubConfig::default()).await;
    let alice = tenant(&h.app, "alice", "alice-org", &["hub:read", "hub:write"]).await;
    let bob = tenant(&h.app, "bob", "bob-org", &["hub:read", "hub:write"]).await;
    for (key, repo, private) in [(&alice, "alice-org", true), (&bob, "bob-org", false)] {
        let r = json_call(
            &h.app,
            "POST",
            "/api/v1/hub/repos",
            Some(key),
            json!({"org": repo, "name": "r", "private": private}),
        )
        .await;
        assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    }
    let secret = b"alice's private weights";
    let size = secret.len();
    push(&h.app, &alice, "alice-org/r", "w.bin", secret).await;
    let d = hub::blobs::Digests::of(secret);

    // Bob starts an upload with the hash and a wrong size: an ordinary new upload, and the
    // real size appears nowhere.
    let start = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos/bob-org/r/uploads",
        Some(&bob),
        json!({"sha256": d.sha256, "size": 1}),
    )
    .await;
    assert_eq!(start.status.as_u16(), 200, "{}", start.body);
    let view = start.json();
    assert_eq!(
        (&view["complete"], &view["size"], &view["offset"]),
        (&json!(false), &json!(1), &json!(0))
    );
    assert!(
        !start.body.contains(&format!("{size} bytes")),
        "{}",
        start.body
    );
    let start = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos/bob-org/r/uploads",
        Some(&bob),
        json!({"sha256": d.sha256, "size": size}),
    )
    .await;
    assert_eq!(start.json()["complete"], false, "{}", start.body);
    // Committing it is refused as for a hash nobody has; nothing is readable.
    let commit = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos/bob-org/r/commits/main",
        Some(&bob),
        json!({"files": [{"path": "loot.bin", "sha256": d.sha256, "size": size}]}),
    )
    .await;
    commit.assert_error(400, "invalid_request_error", Some("files"));
    assert!(
        commit.body.contains("upload the file first"),
        "{}",
        commit.body
    );
    for path in [
        "/bob-org/r/resolve/main/loot.bin",
        "/alice-org/r/resolve/main/w.bin",
    ] {
        let r = get(&h.app, path, Some(&bob)).await;
        assert_eq!(r.status.as_u16(), 404, "{path}: {}", r.body);
        assert!(!r.body.contains("alice's private"));
    }
    let r = get(&h.app, "/alice-org/r/resolve/main/w.bin", Some(&bob)).await;
    assert_eq!(r.header("x-error-code"), Some("RepoNotFound"));
    // Alice herself still dedupes into another repository of hers.
    let r = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos",
        Some(&alice),
        json!({"org": "alice-org", "name": "r2", "private": true}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 201);
    let again = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos/alice-org/r2/uploads",
        Some(&alice),
        json!({"sha256": d.sha256, "size": size}),
    )
    .await;
    assert_eq!(again.json()["complete"], true, "{}", again.body);
}

#[tokio::test]
async fn small_refusals_have_clear_status_codes() {
    let h = hub_app(HubConfig {
        max_chunk_bytes: 1024,
        tenant_quota_bytes: 10_000,
        ..HubConfig::default()
    })
    .await;
    let key = tenant(&h.app, "t", "t-org", &["hub:read", "hub:write"]).await;
    let r = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos",
        Some(&key),
        json!({"org": "t-org", "name": "r"}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    // A chunk over the limit: 413, and the upload stays where it was.
    let s = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos/t-org/r/uploads",
        Some(&key),
        json!({"sha256": "ab".repeat(32), "size": 4000}),
    )
    .await;
    let id = s.json()["upload_id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/hub/repos/t-org/r/uploads/{id}");
    call(
        &h.app,
        "PUT",
        &format!("{path}?offset=0"),
        Some(&key),
        Body::from(vec![0u8; 2000]),
    )
    .await
    .assert_error(413, "request_too_large", None);
    let status = call(&h.app, "GET", &path, Some(&key), Body::empty()).await;
    assert_eq!(status.json()["offset"], 0, "{}", status.body);
    // Declaring more than the tenant's quota: 413 that says so.
    let over = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos/t-org/r/uploads",
        Some(&key),
        json!({"sha256": "cd".repeat(32), "size": 6001}),
    )
    .await;
    over.assert_error(413, "request_too_large", None);
    assert!(over.body.contains("quota"), "{}", over.body);
    // 5,000 tags in a search filter: a 400 naming the parameter.
    let tags: Vec<String> = (0..5000).map(|i| format!("t{i}")).collect();
    get(
        &h.app,
        &format!("/api/models?filter={}", tags.join(",")),
        None,
    )
    .await
    .assert_error(400, "invalid_request_error", Some("filter"));
    // A branch that reads as an option, a path with a bidi override.
    let c = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos/t-org/r/commits/-x",
        Some(&key),
        json!({"files": []}),
    )
    .await;
    c.assert_error(400, "invalid_request_error", Some("revision"));
    let c = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos/t-org/r/commits/main",
        Some(&key),
        json!({"files": [{"path": "a\u{202E}txt.exe", "sha256": "ab".repeat(32), "size": 1}]}),
    )
    .await;
    c.assert_error(400, "invalid_request_error", Some("path"));
}

#[tokio::test]
async fn without_anonymous_reads_a_key_needs_hub_read_for_public_repos() {
    let h = hub_app(HubConfig {
        anonymous_reads: false,
        ..HubConfig::default()
    })
    .await;
    let writer = tenant(&h.app, "w", "w-org", &["hub:write"]).await;
    let r = json_call(
        &h.app,
        "POST",
        "/api/v1/hub/repos",
        Some(&writer),
        json!({"org": "w-org", "name": "pub"}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.body);
    push(&h.app, &writer, "w-org/pub", "a.txt", b"hello").await;
    let inference_only = tenant(&h.app, "i", "i-org", &["inference"]).await;
    let reader = tenant(&h.app, "r", "r-org", &["hub:read"]).await;
    for path in [
        "/w-org/pub/resolve/main/a.txt",
        "/api/models/w-org/pub",
        "/api/models",
    ] {
        get(&h.app, path, Some(&inference_only))
            .await
            .assert_error(403, "permission_denied", None);
        get(&h.app, path, None)
            .await
            .assert_error(401, "invalid_api_key", None);
        let ok = get(&h.app, path, Some(&reader)).await;
        assert_eq!(ok.status.as_u16(), 200, "{path}: {}", ok.body);
    }
}
