//! `POST /v1/files` under arbitrary input: multipart bodies built from random parts (known and
//! unknown names, any bytes, cut or corrupted boundaries) and random bodies. Every answer is a
//! success or a 4xx in OpenAI's error shape, never a 5xx or a panic, and no staged upload is
//! left behind.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request};
use axum::Router;
use gateway::{router, GatewayState};
use proptest::prelude::*;
use tenancy::Tenancy;
use tokio_util::task::TaskTracker;

use crate::common::*;
use crate::hub::tenant;

struct FilesApp {
    app: Router,
    key: String,
    dir: tempfile::TempDir,
}

async fn files_app() -> FilesApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = store::open("sqlite::memory:").await.expect("store");
    let tenancy = Tenancy::new(
        store.clone(),
        Arc::new(tenancy::SystemClock),
        &tenancy::TenancyConfig::default(),
    )
    .expect("tenancy");
    let hub = hub::Hub::open(store.clone(), dir.path(), hub::HubConfig::default()).expect("hub");
    let config = files::FilesConfig {
        max_file_bytes: 256,
        tenant_quota_bytes: 4096,
        min_expiry: Duration::from_secs(1),
        ..files::FilesConfig::default()
    };
    let files = files::Files::open(store, hub.clone(), dir.path(), config).expect("files");
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
        hub: Some(hub),
        plane: None,
        mcp: None,
        files: Some(files),
        batch: None,
        fine_tuning: None,
    });
    let key = tenant(&app, "fuzz", "fuzz-org", &["inference"]).await;
    FilesApp { app, key, dir }
}

async fn upload(fx: &FilesApp, content_type: &str, body: Vec<u8>) -> Reply {
    let request = Request::post("/v1/files")
        .header(header::AUTHORIZATION, format!("Bearer {}", fx.key))
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("request");
    send(&fx.app, request).await
}

fn part() -> impl Strategy<Value = (String, Option<String>, Vec<u8>)> {
    let name = prop_oneof![
        Just("file".to_owned()),
        Just("purpose".to_owned()),
        Just("expires_after[anchor]".to_owned()),
        Just("expires_after[seconds]".to_owned()),
        "[a-z\\[\\]_]{0,12}",
    ];
    let value = prop_oneof![
        Just(b"batch".to_vec()),
        Just(b"user_data".to_vec()),
        Just(b"created_at".to_vec()),
        Just(b"3600".to_vec()),
        Just(b"{\"a\": 1}\n{}\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..300),
    ];
    (name, proptest::option::of("[a-z.]{0,8}"), value)
}

fn body(parts: &[(String, Option<String>, Vec<u8>)], boundary: &str, cut: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, value) in parts {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
        );
        if let Some(f) = filename {
            out.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let keep = out.len().saturating_sub(cut);
    out.truncate(keep);
    out
}

fn check(fx: &FilesApp, reply: &Reply) -> Result<(), TestCaseError> {
    let status = reply.status.as_u16();
    prop_assert!(
        status == 200 || (400..500).contains(&status),
        "{status}: {}",
        reply.body
    );
    if status != 200 {
        let json = reply.json();
        prop_assert!(json["error"]["message"].is_string(), "{}", reply.body);
        prop_assert!(json["error"]["code"].is_string(), "{}", reply.body);
    }
    let staging = fx.dir.path().join("files").join("staging");
    let left = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    prop_assert_eq!(left, 0, "a staged upload was left behind");
    Ok(())
}

#[test]
fn arbitrary_uploads_get_a_clear_answer_and_leave_nothing() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let fx = rt.block_on(files_app());
    let config = ProptestConfig {
        cases: 96,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        parts in proptest::collection::vec(part(), 0..5),
        cut in prop_oneof![Just(0usize), 0usize..40],
        random in proptest::collection::vec(any::<u8>(), 0..200),
    )| {
        let boundary = "XyZ";
        let form = body(&parts, boundary, cut);
        let reply = rt.block_on(upload(&fx, &format!("multipart/form-data; boundary={boundary}"), form));
        check(&fx, &reply)?;
        let reply = rt.block_on(upload(&fx, "multipart/form-data; boundary=XyZ", random.clone()));
        check(&fx, &reply)?;
        let reply = rt.block_on(upload(&fx, "application/json", random));
        check(&fx, &reply)?;
    });
    // Files the fuzzer managed to store read back and delete cleanly.
    let list = rt.block_on(get(&fx.app, "/v1/files", Some(&fx.key)));
    assert_eq!(list.status.as_u16(), 200, "{}", list.body);
    for file in list.json()["data"].as_array().expect("data") {
        let id = file["id"].as_str().expect("id");
        let request = Request::delete(format!("/v1/files/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {}", fx.key))
            .body(Body::empty())
            .expect("request");
        let reply = rt.block_on(send(&fx.app, request));
        assert_eq!(reply.status.as_u16(), 200, "{}", reply.body);
    }
}

#[tokio::test]
async fn the_admin_key_and_keys_without_inference_are_refused_before_reading() {
    let fx = files_app().await;
    let reply = get(&fx.app, "/v1/files", Some(ADMIN_KEY)).await;
    reply.assert_error(403, "permission_denied", None);
    let hub_only = tenant(&fx.app, "hub-only", "hub-only-org", &["hub:read"]).await;
    let reply = get(&fx.app, "/v1/files", Some(&hub_only)).await;
    reply.assert_error(403, "permission_denied", None);
    let reply = get(&fx.app, "/v1/files/file-x", Some(&fx.key)).await;
    reply.assert_error(404, "not_found", Some("file_id"));
}
