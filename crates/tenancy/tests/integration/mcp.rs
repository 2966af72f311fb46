//! What the MCP gateway keeps (`store::McpStore`) and how tool calls are billed, on both
//! databases: server names unique per owner, grants, the upstream-session pin (first writer
//! wins, unpinned only if unchanged), cascades, the audit log, and tool calls charged their
//! per-call price, never from the token grant, counted apart in usage.

use store::{McpCallRecord, McpServerRecord, McpSessionRecord, McpUpstreamSession, StoreError};
use tenancy::{Clock, UsageGroup, UsageQuery};

use crate::common::Fixture;

store::on_both!(Fixture;
    mcp_records_persist_and_pins_are_first_writer_wins,
    tool_calls_are_charged_their_price_and_counted_apart,
);

/// A call's audit row before settlement (`charged` is the settlement's to fill in).
fn audit(fx: &Fixture, id: &str, tenant: &str, outcome: &str) -> McpCallRecord {
    McpCallRecord {
        id: id.into(),
        tenant_id: Some(tenant.into()),
        key_prefix: None,
        server_id: "mcp_x".into(),
        server_name: "x".into(),
        tool: "t".into(),
        started_at: fx.clock.now(),
        duration_ms: 1,
        outcome: outcome.into(),
        error: None,
        charged: -1,
        arguments: None,
    }
}

fn server(fx: &Fixture, id: &str, tenant: Option<&str>, name: &str) -> McpServerRecord {
    McpServerRecord {
        id: id.into(),
        tenant_id: tenant.map(str::to_owned),
        name: name.into(),
        transport: "http".into(),
        url: Some("https://mcp.example.com/mcp".into()),
        command: None,
        args: Vec::new(),
        sealed: Some("v1.k.sealed".into()),
        header_names: vec!["X-Api-Key".into()],
        env_names: Vec::new(),
        allowed_tools: Some(vec!["a".into()]),
        public: tenant.is_none(),
        created_at: fx.clock.now(),
        updated_at: fx.clock.now(),
    }
}

async fn mcp_records_persist_and_pins_are_first_writer_wins(fx: Fixture) {
    let t = fx.tenant("t", 0).await;
    let store = &fx.store;
    store
        .create_mcp_server(&server(&fx, "mcp_1", Some(&t.id), "time"))
        .await
        .expect("create");
    // The same name for the same owner conflicts; for the operator it does not.
    let dup = store
        .create_mcp_server(&server(&fx, "mcp_2", Some(&t.id), "time"))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");
    store
        .create_mcp_server(&server(&fx, "mcp_3", None, "time"))
        .await
        .expect("operator's own namespace");
    let dup = store
        .create_mcp_server(&server(&fx, "mcp_4", None, "time"))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    let again = fx.second_store().await;
    let mine = again.mcp_servers_owned(Some(&t.id)).await.expect("list");
    assert_eq!(mine, vec![server(&fx, "mcp_1", Some(&t.id), "time")]);
    assert!(again
        .mcp_servers_granted(&t.id)
        .await
        .expect("granted")
        .is_empty());
    assert!(again
        .grant_mcp_server(&t.id, "mcp_3", fx.clock.now())
        .await
        .expect("grant"));
    assert!(!again
        .grant_mcp_server(&t.id, "mcp_3", fx.clock.now())
        .await
        .expect("again"));
    let granted = again.mcp_servers_granted(&t.id).await.expect("granted");
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0].id, "mcp_3");

    let now = fx.clock.now();
    let session = McpSessionRecord {
        id: "mcps_1".into(),
        tenant_id: Some(t.id.clone()),
        protocol_version: "2025-11-25".into(),
        created_at: now,
        last_seen: now,
    };
    store.create_mcp_session(&session).await.expect("session");
    assert!(matches!(
        store.create_mcp_session(&session).await,
        Err(StoreError::Conflict(_))
    ));
    let pin = |upstream: &str| McpUpstreamSession {
        session_id: "mcps_1".into(),
        server_id: "mcp_1".into(),
        upstream_session: Some(upstream.into()),
        protocol_version: "2025-11-25".into(),
        created_at: now,
    };
    // Two processes race to pin: the first wins, the second is told the first's.
    let first = store.pin_mcp_upstream(&pin("up-A")).await.expect("pin");
    let second = again.pin_mcp_upstream(&pin("up-B")).await.expect("pin");
    assert_eq!(first.upstream_session.as_deref(), Some("up-A"));
    assert_eq!(second.upstream_session.as_deref(), Some("up-A"));
    // Unpinning a session that changed meanwhile does nothing.
    assert!(!again
        .unpin_mcp_upstream("mcps_1", "mcp_1", Some("up-B"))
        .await
        .expect("no-op"));
    assert!(again
        .unpin_mcp_upstream("mcps_1", "mcp_1", Some("up-A"))
        .await
        .expect("unpin"));
    assert_eq!(
        store.mcp_upstream("mcps_1", "mcp_1").await.expect("read"),
        None
    );

    // The idle sweep deletes sessions not seen since the cut, not the others.
    let idle = McpSessionRecord {
        id: "mcps_idle".into(),
        last_seen: now - chrono::TimeDelta::days(2),
        ..session.clone()
    };
    store.create_mcp_session(&idle).await.expect("idle session");
    let cut = now - chrono::TimeDelta::days(1);
    assert_eq!(
        store.delete_mcp_sessions_before(cut).await.expect("sweep"),
        1
    );
    assert!(store.mcp_session("mcps_1").await.is_ok());

    // Deleting a server takes its pins; deleting a session, the rest.
    store.pin_mcp_upstream(&pin("up-C")).await.expect("pin");
    assert!(store.delete_mcp_server("mcp_1").await.expect("delete"));
    assert_eq!(
        store.mcp_upstream("mcps_1", "mcp_1").await.expect("read"),
        None
    );
    assert!(store.delete_mcp_session("mcps_1").await.expect("delete"));
    assert!(matches!(
        store.mcp_session("mcps_1").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn tool_calls_are_charged_their_price_and_counted_apart(fx: Fixture) {
    let t = fx.tenant("caller", 1_000).await;
    let tenancy = &fx.tenancy;
    tenancy
        .ledger
        .top_up(&t.id, 10_000, Some("topup-1"))
        .await
        .expect("top up");
    tenancy
        .prices
        .set_per_call("mcp_x", 1_500)
        .await
        .expect("price");
    for i in 0..4 {
        let id = format!("call-{i}");
        tenancy
            .ledger
            .reserve_call(&id, &t.id, None, "mcp_x")
            .await
            .expect("reserve");
        let settled = tenancy
            .ledger
            .close_call(true, audit(&fx, &id, &t.id, "ok"))
            .await
            .expect("settle");
        assert_eq!(settled.charged.amount, 1_500);
        assert_eq!(
            settled.charged.grant_tokens, 0,
            "the token grant never pays a call"
        );
    }
    // A failed call is released: nothing charged.
    tenancy
        .ledger
        .reserve_call("call-failed", &t.id, None, "mcp_x")
        .await
        .expect("reserve");
    let released = tenancy
        .ledger
        .close_call(false, audit(&fx, "call-failed", &t.id, "failed"))
        .await
        .expect("cancel");
    assert_eq!(released.charged.amount, 0);
    // Each call's audit row was written with its settlement, with what it was charged.
    let calls = fx
        .store
        .mcp_calls(
            Some(&t.id),
            fx.clock.now() - chrono::TimeDelta::days(1),
            fx.clock.now() + chrono::TimeDelta::days(1),
            100,
        )
        .await
        .expect("audit");
    let mut charged: Vec<(String, i64)> = calls.iter().map(|c| (c.id.clone(), c.charged)).collect();
    charged.sort();
    assert_eq!(
        charged,
        vec![
            ("call-0".to_owned(), 1_500),
            ("call-1".to_owned(), 1_500),
            ("call-2".to_owned(), 1_500),
            ("call-3".to_owned(), 1_500),
            ("call-failed".to_owned(), 0),
        ]
    );
    // 10,000 − 4 × 1,500 = 4,000 left: three more calls cannot all be held.
    for i in 0..2 {
        tenancy
            .ledger
            .reserve_call(&format!("hold-{i}"), &t.id, None, "mcp_x")
            .await
            .expect("held");
    }
    let refused = tenancy
        .ledger
        .reserve_call("hold-2", &t.id, None, "mcp_x")
        .await;
    assert!(
        matches!(refused, Err(tenancy::Error::InsufficientQuota { .. })),
        "{refused:?}"
    );
    for i in 0..2 {
        tenancy
            .ledger
            .cancel(&format!("hold-{i}"))
            .await
            .expect("release");
    }
    let account = tenancy.usage.account(&t.id).await.expect("account");
    assert_eq!(account.balance, 4_000);
    assert_eq!(
        account.grant_tokens_left, 1_000,
        "the token grant is untouched"
    );

    let rows = tenancy
        .usage
        .usage(
            &t.id,
            &UsageQuery {
                start: fx.clock.now() - chrono::TimeDelta::days(1),
                end: fx.clock.now() + chrono::TimeDelta::days(1),
                group_by: UsageGroup::Model,
            },
        )
        .await
        .expect("usage");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.group, "mcp/mcp_x");
    assert_eq!((row.tool_calls, row.amount), (4, 6_000));
    assert_eq!(
        (row.requests, row.prompt_tokens),
        (0, 0),
        "calls are not token requests"
    );

    let call = McpCallRecord {
        id: "call-recorded".into(),
        tenant_id: Some(t.id.clone()),
        key_prefix: Some("fw-abc".into()),
        server_id: "mcp_x".into(),
        server_name: "x".into(),
        tool: "count".into(),
        started_at: fx.clock.now(),
        duration_ms: 3,
        outcome: "ok".into(),
        error: None,
        charged: 1_500,
        arguments: Some(r#"{"n":1}"#.into()),
    };
    fx.store.record_mcp_call(&call).await.expect("audit");
    // Keeping arguments is opt-in, per tenant.
    assert!(!fx.store.mcp_audit_arguments(&t.id).await.expect("read"));
    for keep in [true, false, true] {
        fx.store
            .set_mcp_audit_arguments(&t.id, keep, fx.clock.now())
            .await
            .expect("set");
        assert_eq!(
            fx.store.mcp_audit_arguments(&t.id).await.expect("read"),
            keep
        );
    }
    let window = (
        fx.clock.now() - chrono::TimeDelta::minutes(1),
        fx.clock.now() + chrono::TimeDelta::minutes(1),
    );
    let audit = fx
        .store
        .mcp_calls(Some(&t.id), window.0, window.1, 10)
        .await
        .expect("audit log");
    assert_eq!(
        audit.len(),
        6,
        "five settled calls and the one recorded alone"
    );
    assert_eq!(audit.iter().find(|c| c.id == call.id), Some(&call));
    assert!(fx
        .store
        .mcp_calls(None, window.0, window.1, 10)
        .await
        .expect("admin's")
        .is_empty());
}
