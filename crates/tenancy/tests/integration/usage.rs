//! Usage reports by model, day and key, and their isolation between tenants.

use chrono::TimeDelta;
use tenancy::{KeySpec, ReserveRequest, UsageGroup, UsageQuery};

use crate::common::Fixture;
use crate::ledger::{usage, RATES};

store::on_both!(Fixture;usage_is_grouped_and_isolated);

async fn usage_is_grouped_and_isolated(fx: Fixture) {
    let t = &fx.tenancy;
    t.prices.set("m", RATES).await.expect("price");
    let a = fx.tenant("a", 0).await;
    let b = fx.tenant("b", 0).await;
    for tenant in [&a, &b] {
        t.ledger
            .top_up(&tenant.id, 1_000_000, None)
            .await
            .expect("top up");
    }
    let spec = KeySpec {
        name: "k".into(),
        ..KeySpec::default()
    };
    let ka = t.directory.create_key(&a.id, &spec).await.expect("key").key;
    let start = fx.clock_now();
    let mut n = 0;
    let mut run = |tenant: &str, key: Option<&str>, model: &str, completion: i64| {
        n += 1;
        let request = ReserveRequest {
            request_id: format!("r{n}"),
            tenant_id: tenant.to_owned(),
            key_id: key.map(str::to_owned),
            served_model: model.to_owned(),
            prompt_tokens: 10,
            max_completion_tokens: 100,
        };
        let ledger = t.ledger.clone();
        async move {
            ledger.reserve(&request).await.expect("reserve");
            ledger
                .settle(&request.request_id, usage(10, completion, 0))
                .await
                .expect("settle");
        }
    };
    // Day 1: A uses m twice with its key and "free" once; B uses m once.
    run(&a.id, Some(&ka.id), "m", 20).await;
    run(&a.id, Some(&ka.id), "m", 30).await;
    run(&a.id, None, "free", 5).await;
    run(&b.id, None, "m", 99).await;
    // Day 2: A once more.
    fx.advance(86_400);
    run(&a.id, Some(&ka.id), "m", 1).await;
    let end = fx.clock_now() + TimeDelta::seconds(1);

    let query = |group_by| UsageQuery {
        start,
        end,
        group_by,
    };
    let by_model = t
        .usage
        .usage(&a.id, &query(UsageGroup::Model))
        .await
        .expect("usage");
    let summary: Vec<_> = by_model
        .iter()
        .map(|r| (r.group.as_str(), r.requests, r.completion_tokens, r.amount))
        .collect();
    // m: 3 × 10 prompt at 1 + 51 completion at 2 = 132; "free" costs nothing.
    assert_eq!(summary, [("free", 1, 5, 0), ("m", 3, 51, 132)]);

    let by_day = t
        .usage
        .usage(&a.id, &query(UsageGroup::Day))
        .await
        .expect("usage");
    let days: Vec<_> = by_day
        .iter()
        .map(|r| (r.group.as_str(), r.requests))
        .collect();
    assert_eq!(days, [("2025-01-01", 3), ("2025-01-02", 1)]);

    let by_key = t
        .usage
        .usage(&a.id, &query(UsageGroup::Key))
        .await
        .expect("usage");
    let keys: Vec<_> = by_key
        .iter()
        .map(|r| (r.group.clone(), r.requests))
        .collect();
    assert_eq!(keys, [("-".to_owned(), 1), (ka.id.clone(), 3)]);

    // B sees only its own request; a range before everything is empty.
    let b_rows = t
        .usage
        .usage(&b.id, &query(UsageGroup::Model))
        .await
        .expect("usage");
    assert_eq!(b_rows.len(), 1);
    assert_eq!((b_rows[0].requests, b_rows[0].completion_tokens), (1, 99));
    let before = UsageQuery {
        start: start - TimeDelta::days(2),
        end: start,
        group_by: UsageGroup::Model,
    };
    assert!(t
        .usage
        .usage(&a.id, &before)
        .await
        .expect("usage")
        .is_empty());
    let backwards = UsageQuery {
        start: end,
        end: start,
        group_by: UsageGroup::Day,
    };
    assert!(t.usage.usage(&a.id, &backwards).await.is_err());
    let account = t.usage.account(&b.id).await.expect("account");
    assert_eq!(account.balance, 1_000_000 - 10 - 198);
}
