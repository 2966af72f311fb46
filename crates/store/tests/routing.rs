//! Model groups' rows and the request log (`store::RoutingStore`) on both databases: groups
//! are created, replaced (keeping `created_at`) and deleted; log rows are written in batches
//! (a repeated request id is kept once), read newest first with filters and an `after`
//! cursor, kept per tenant, and swept by age. Every scenario runs as `NAME::sqlite` and
//! `NAME::postgres`.

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use store::testing::{Kind, ScratchDb};
use store::{LogQuery, ModelGroupRecord, RequestLogRecord, Store, StoreError, Timestamp};

struct Fixture {
    store: Arc<dyn Store>,
    _scratch: ScratchDb,
}

impl Fixture {
    async fn new(kind: Kind) -> Self {
        let scratch = ScratchDb::new(kind).await;
        let store = store::open(&scratch.url).await.expect("open the store");
        Self {
            store,
            _scratch: scratch,
        }
    }
}

fn t(seconds: i64) -> Timestamp {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
        + TimeDelta::seconds(seconds)
}

fn row(id: &str, tenant: &str, at: i64, model: &str, status: i64) -> RequestLogRecord {
    RequestLogRecord {
        request_id: id.to_owned(),
        tenant_id: tenant.to_owned(),
        created_at: t(at),
        key_prefix: "fw-abc".into(),
        model: model.into(),
        member: Some("upstream#1".into()),
        status,
        prompt_tokens: 7,
        completion_tokens: 3,
        cost: 12,
        ttft_ms: Some(5),
        total_ms: 9,
        retries: 1,
    }
}

fn query(tenant: &str, limit: i64) -> LogQuery {
    LogQuery {
        tenant_id: tenant.into(),
        limit,
        ..LogQuery::default()
    }
}

fn ids(page: &store::LogPage) -> Vec<&str> {
    page.logs.iter().map(|l| l.request_id.as_str()).collect()
}

async fn groups_are_put_replaced_and_deleted(f: Fixture) {
    let s = &f.store;
    let g = ModelGroupRecord {
        name: "pool".into(),
        spec: r#"{"members":[]}"#.into(),
        created_at: t(0),
        updated_at: t(0),
    };
    assert!(s.put_model_group(&g).await.expect("put"));
    let replaced = ModelGroupRecord {
        spec: r#"{"members":[1]}"#.into(),
        created_at: t(50),
        updated_at: t(50),
        ..g.clone()
    };
    assert!(!s.put_model_group(&replaced).await.expect("replace"));
    let all = s.model_groups().await.expect("list");
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].spec.as_str(), all[0].created_at, all[0].updated_at),
        (replaced.spec.as_str(), t(0), t(50))
    );
    assert!(s.delete_model_group("pool").await.expect("delete"));
    assert!(!s.delete_model_group("pool").await.expect("delete again"));
    assert!(s.model_groups().await.expect("list").is_empty());
}

async fn logs_page_filter_and_sweep(f: Fixture) {
    let s = &f.store;
    let mut rows: Vec<RequestLogRecord> = (0..300)
        .map(|i| {
            row(
                &format!("r{i:03}"),
                "t1",
                i,
                if i % 2 == 0 { "a" } else { "b" },
                if i % 10 == 0 { 500 } else { 200 },
            )
        })
        .collect();
    rows.push(row("other", "t2", 5, "a", 200));
    // A repeated id is kept once.
    rows.push(row("r000", "t1", 999, "zzz", 200));
    s.insert_request_logs(&rows).await.expect("insert");
    s.insert_request_logs(&[]).await.expect("nothing to insert");

    let first = s.request_logs(&query("t1", 100)).await.expect("page 1");
    assert_eq!(first.logs.len(), 100);
    assert!(first.has_more);
    assert_eq!(first.logs[0], row("r299", "t1", 299, "b", 200));
    let mut seen = ids(&first)
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let mut after = first.logs.last().map(|l| l.request_id.clone());
    while let Some(id) = after {
        let page = s
            .request_logs(&LogQuery {
                after: Some(id),
                ..query("t1", 100)
            })
            .await
            .expect("next page");
        seen.extend(ids(&page).iter().map(|s| s.to_string()));
        after = page
            .has_more
            .then(|| page.logs.last().map(|l| l.request_id.clone()))
            .flatten();
    }
    assert_eq!(seen.len(), 300);
    assert_eq!(seen.last().map(String::as_str), Some("r000"));

    let failed = s
        .request_logs(&LogQuery {
            status: Some(500),
            model: Some("a".into()),
            ..query("t1", 1000)
        })
        .await
        .expect("filtered");
    assert_eq!(failed.logs.len(), 30);
    let window = s
        .request_logs(&LogQuery {
            since: Some(t(10)),
            until: Some(t(20)),
            ..query("t1", 1000)
        })
        .await
        .expect("window");
    assert_eq!(
        ids(&window),
        (10..20)
            .rev()
            .map(|i| format!("r{i:03}"))
            .collect::<Vec<_>>()
    );
    // Another tenant's rows and cursors are not this one's.
    assert_eq!(
        ids(&s.request_logs(&query("t2", 10)).await.expect("t2")),
        ["other"]
    );
    let err = s
        .request_logs(&LogQuery {
            after: Some("other".into()),
            ..query("t1", 10)
        })
        .await
        .expect_err("another tenant's cursor");
    assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");

    assert_eq!(s.sweep_request_logs(t(100)).await.expect("sweep"), 101);
    assert_eq!(
        s.request_logs(&query("t1", 1000))
            .await
            .expect("left")
            .logs
            .len(),
        200
    );
}

store::on_both!(Fixture; groups_are_put_replaced_and_deleted, logs_page_filter_and_sweep);
