//! Spend budgets: the hard cap counts settled charges and open holds and resets on the UTC
//! period boundary (a manual clock), alert thresholds fire once per period, webhook
//! deliveries are claimed once and retried, a tenant's budget caps all its keys, and webhook
//! signing secrets are sealed at rest.

use std::sync::Arc;

use tenancy::{
    BudgetSpec, Error, KeySpec, Period, PriceRates, Principal, ReserveRequest, Spender, TokenUsage,
};

use crate::common::Fixture;

/// A stand-in for the server's key (`mcp::Sealer` in the server): `KEY|BOUND|hex(plain)`,
/// opened with the current or the previous key and only for the row it was sealed for.
struct TestSeal {
    current: &'static str,
    previous: Option<&'static str>,
}

impl tenancy::SecretSeal for TestSeal {
    fn seal(&self, plain: &str, bound_to: &str) -> Result<String, String> {
        let hex: String = plain.bytes().map(|b| format!("{b:02x}")).collect();
        Ok(format!("{}|{bound_to}|{hex}", self.current))
    }

    fn open(&self, sealed: &str, bound_to: &str) -> Result<String, String> {
        let mut parts = sealed.splitn(3, '|');
        let (Some(key), Some(bound), Some(hex)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("malformed".into());
        };
        if key != self.current && Some(key) != self.previous {
            return Err(format!("sealed with {key}"));
        }
        if bound != bound_to {
            return Err("sealed for another row".into());
        }
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }
}

store::on_both!(Fixture;
    a_key_budget_counts_holds_and_settled_charges_and_resets_each_day,
    a_tenant_budget_caps_every_key,
    thresholds_fire_once_per_period_and_deliveries_are_claimed_once,
    a_monthly_budget_resets_on_the_first,
    webhook_secrets_are_sealed_at_rest_bound_to_their_tenant_and_resealed,
);

/// 1 micro-unit per token, in and out.
const RATES: PriceRates = PriceRates {
    input_per_million: 1_000_000,
    output_per_million: 1_000_000,
    cached_input_per_million: 1_000_000,
};

/// A paying tenant (no grant) with one key.
async fn principal(fx: &Fixture, name: &str) -> Principal {
    fx.tenancy.prices.set("m", RATES).await.expect("price");
    let tenant = fx.tenant(name, 0).await;
    fx.tenancy
        .ledger
        .top_up(&tenant.id, 1_000_000, None)
        .await
        .expect("top up");
    key(fx, &tenant.id).await
}

async fn key(fx: &Fixture, tenant_id: &str) -> Principal {
    let created = fx
        .tenancy
        .directory
        .create_key(
            tenant_id,
            &KeySpec {
                name: "k".into(),
                ..KeySpec::default()
            },
        )
        .await
        .expect("key");
    fx.tenancy
        .directory
        .verify(&created.secret)
        .await
        .expect("verify")
}

fn budget(amount: i64, period: Period, alert_at_ppm: Vec<i64>, url: Option<&str>) -> BudgetSpec {
    BudgetSpec {
        amount,
        period,
        alert_at_ppm,
        webhook_url: url.map(str::to_owned),
    }
}

/// Admits (budget check with the hold it would take), then reserves `worst` tokens.
async fn run(fx: &Fixture, p: &Principal, id: &str, worst: i64) -> Result<(), Error> {
    let permit = fx.tenancy.budgets.admit(p, worst).await?;
    fx.tenancy
        .ledger
        .reserve(&ReserveRequest {
            request_id: id.to_owned(),
            tenant_id: p.tenant.id.clone(),
            key_id: Some(p.key.id.clone()),
            served_model: "m".to_owned(),
            prompt_tokens: 0,
            max_completion_tokens: worst,
        })
        .await?;
    drop(permit);
    Ok(())
}

async fn settle(fx: &Fixture, id: &str, completion: i64) {
    fx.tenancy
        .ledger
        .settle(
            id,
            TokenUsage {
                prompt_tokens: 0,
                completion_tokens: completion,
                cached_tokens: 0,
            },
        )
        .await
        .expect("settle");
}

fn refused(result: Result<(), Error>, owner: &str) {
    match result {
        Err(err @ Error::BudgetExceeded { .. }) => {
            assert_eq!(err.code(), "budget_exceeded");
            assert!(
                err.to_string().contains(&format!("this {owner}'s budget")),
                "{err}"
            );
        }
        other => panic!("expected budget_exceeded for the {owner}, got {other:?}"),
    }
}

async fn a_key_budget_counts_holds_and_settled_charges_and_resets_each_day(fx: Fixture) {
    let p = principal(&fx, "acme").await;
    // Noon, so a day boundary is 12 h away.
    fx.advance(12 * 3600);
    let b = budget(100, Period::Day, vec![], None);
    fx.tenancy
        .budgets
        .set(&p.tenant.id, Spender::Key(&p.key.id), Some(&b))
        .await
        .expect("set");

    run(&fx, &p, "r1", 60).await.expect("first fits");
    // 60 held: 41 more would pass 100, 40 reaches it.
    refused(run(&fx, &p, "r2", 41).await, "key");
    settle(&fx, "r1", 30).await;
    // 30 settled: 70 fits exactly.
    run(&fx, &p, "r3", 70).await.expect("reaches the cap");
    refused(run(&fx, &p, "r4", 1).await, "key");
    settle(&fx, "r3", 70).await;
    refused(run(&fx, &p, "r5", 1).await, "key");
    let statuses = fx
        .tenancy
        .budgets
        .statuses(&p.tenant.id)
        .await
        .expect("status");
    assert_eq!(statuses.len(), 1);
    assert_eq!(
        (statuses[0].spent.settled, statuses[0].spent.held),
        (100, 0)
    );

    // Midnight UTC: a new day, nothing spent in it.
    fx.advance(12 * 3600);
    run(&fx, &p, "r6", 100).await.expect("a new day");
    settle(&fx, "r6", 10).await;

    // Removing the budget lifts the cap.
    fx.tenancy
        .budgets
        .set(&p.tenant.id, Spender::Key(&p.key.id), None)
        .await
        .expect("remove");
    run(&fx, &p, "r7", 10_000).await.expect("no budget");
}

async fn a_tenant_budget_caps_every_key(fx: Fixture) {
    let first = principal(&fx, "acme").await;
    let second = key(&fx, &first.tenant.id).await;
    let b = budget(100, Period::Day, vec![], None);
    fx.tenancy
        .budgets
        .set(
            &first.tenant.id,
            Spender::Tenant(&first.tenant.id),
            Some(&b),
        )
        .await
        .expect("set");
    run(&fx, &first, "a1", 50).await.expect("fits");
    run(&fx, &second, "b1", 50).await.expect("fits");
    refused(run(&fx, &second, "b2", 1).await, "tenant");
    settle(&fx, "a1", 0).await;
    run(&fx, &second, "b3", 50)
        .await
        .expect("the hold went back");
    // Another tenant is not capped by it.
    let other = principal(&fx, "other").await;
    run(&fx, &other, "o1", 1_000).await.expect("another tenant");
}

async fn thresholds_fire_once_per_period_and_deliveries_are_claimed_once(fx: Fixture) {
    let p = principal(&fx, "acme").await;
    let budgets = &fx.tenancy.budgets;
    let b = budget(
        100,
        Period::Day,
        vec![500_000, 800_000],
        Some("https://hooks.example/b"),
    );
    budgets
        .set(&p.tenant.id, Spender::Key(&p.key.id), Some(&b))
        .await
        .expect("set");
    run(&fx, &p, "r1", 40).await.expect("fits");
    settle(&fx, "r1", 40).await;
    budgets
        .after_settle(&p.tenant.id, Some(&p.key.id))
        .await
        .expect("alerts");
    assert!(budgets
        .events(&p.tenant.id, 10, None)
        .await
        .expect("events")
        .is_empty());

    run(&fx, &p, "r2", 45).await.expect("fits");
    settle(&fx, "r2", 45).await;
    // 85 of 100: both thresholds at once, each once, however often it is checked (another
    // process's service included).
    budgets
        .after_settle(&p.tenant.id, Some(&p.key.id))
        .await
        .expect("alerts");
    let other = fx.process("proc-b");
    other
        .budgets
        .after_settle(&p.tenant.id, Some(&p.key.id))
        .await
        .expect("alerts");
    budgets
        .after_settle(&p.tenant.id, Some(&p.key.id))
        .await
        .expect("alerts");
    let events = budgets
        .events(&p.tenant.id, 10, None)
        .await
        .expect("events");
    let mut thresholds: Vec<i64> = events.iter().map(|e| e.threshold_ppm).collect();
    thresholds.sort_unstable();
    assert_eq!(thresholds, vec![500_000, 800_000]);
    assert!(events.iter().all(|e| e.spent == 85 && e.amount == 100));

    // Deliveries: both due; each attempt is taken by one process only.
    let due = budgets.due(10).await.expect("due");
    assert_eq!(due.len(), 2);
    assert!(budgets.claim(&due[0]).await.expect("claim"));
    assert!(!other.budgets.claim(&due[0]).await.expect("claim again"));
    budgets
        .finish(&due[0].id, Err("HTTP 500".into()))
        .await
        .expect("failed attempt");
    assert!(budgets.claim(&due[1]).await.expect("claim"));
    budgets.finish(&due[1].id, Ok(())).await.expect("delivered");
    // The failed one is due again after its backoff; the delivered one never.
    assert!(budgets.due(10).await.expect("due").is_empty());
    fx.advance(2);
    let again = budgets.due(10).await.expect("due");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, due[0].id);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("HTTP 500"));

    // The next day the thresholds fire again.
    fx.advance(86_400);
    run(&fx, &p, "r3", 60).await.expect("a new day");
    settle(&fx, "r3", 60).await;
    budgets
        .after_settle(&p.tenant.id, Some(&p.key.id))
        .await
        .expect("alerts");
    let events = budgets
        .events(&p.tenant.id, 10, None)
        .await
        .expect("events");
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].threshold_ppm, 500_000);
    assert_eq!(events[0].spent, 60);
    // Paging: after the newest, the two older ones.
    let older = budgets
        .events(&p.tenant.id, 10, Some(&events[0].id))
        .await
        .expect("page");
    assert_eq!(older.len(), 2);

    // Webhook secrets: created once, shown once, replaced on rotation.
    let secret = budgets
        .ensure_webhook_secret(&p.tenant.id)
        .await
        .expect("secret");
    assert!(secret.as_deref().is_some_and(|s| s.starts_with("whsec_")));
    assert_eq!(
        budgets
            .ensure_webhook_secret(&p.tenant.id)
            .await
            .expect("again"),
        None
    );
    let rotated = budgets
        .rotate_webhook_secret(&p.tenant.id)
        .await
        .expect("rotate");
    assert_ne!(Some(rotated.clone()), secret);
    assert_eq!(
        budgets.webhook_secret(&p.tenant.id).await.expect("read"),
        Some(rotated)
    );
}

async fn a_monthly_budget_resets_on_the_first(fx: Fixture) {
    // The fixture's clock starts at 2025-01-01 00:00 UTC.
    let p = principal(&fx, "acme").await;
    let b = budget(100, Period::Month, vec![], None);
    fx.tenancy
        .budgets
        .set(&p.tenant.id, Spender::Key(&p.key.id), Some(&b))
        .await
        .expect("set");
    run(&fx, &p, "r1", 100).await.expect("fits");
    settle(&fx, "r1", 100).await;
    // Still January on the 31st.
    fx.advance(30 * 86_400);
    refused(run(&fx, &p, "r2", 1).await, "key");
    // February.
    fx.advance(86_400);
    run(&fx, &p, "r3", 100).await.expect("a new month");
}

async fn webhook_secrets_are_sealed_at_rest_bound_to_their_tenant_and_resealed(fx: Fixture) {
    let a = principal(&fx, "acme").await;
    let b = principal(&fx, "beta").await;
    // A secret stored before sealing existed (as a server without a seal stores it).
    let legacy = fx
        .tenancy
        .budgets
        .ensure_webhook_secret(&b.tenant.id)
        .await
        .expect("plain")
        .expect("created");
    let k1 = Arc::new(TestSeal {
        current: "k1",
        previous: None,
    });
    let sealed = fx.tenancy.budgets.clone().with_seal(k1.clone());
    // Created sealed: the database never holds the secret itself.
    let secret = sealed
        .ensure_webhook_secret(&a.tenant.id)
        .await
        .expect("secret")
        .expect("created");
    let stored = fx
        .store
        .webhook_secret(&a.tenant.id)
        .await
        .expect("stored")
        .expect("a row");
    assert!(
        stored.starts_with("k1|") && !stored.contains(&secret),
        "{stored}"
    );
    assert_eq!(
        sealed.webhook_secret(&a.tenant.id).await.expect("open"),
        Some(secret.clone())
    );
    // The legacy one still signs; sealing at start seals only it.
    assert_eq!(
        sealed.webhook_secret(&b.tenant.id).await.expect("legacy"),
        Some(legacy.clone())
    );
    let n = tenancy::reseal_webhook_secrets(fx.store.as_ref(), k1.as_ref(), false)
        .await
        .expect("seal plain");
    assert_eq!(n, 1);
    let b_stored = fx
        .store
        .webhook_secret(&b.tenant.id)
        .await
        .expect("stored")
        .expect("a row");
    assert!(b_stored.starts_with("k1|") && !b_stored.contains(&legacy));
    assert_eq!(
        sealed.webhook_secret(&b.tenant.id).await.expect("open"),
        Some(legacy.clone())
    );
    // A sealed value copied into another tenant's row does not open there.
    fx.store
        .put_webhook_secret(&b.tenant.id, &stored, chrono::Utc::now(), true)
        .await
        .expect("copy");
    assert!(sealed.webhook_secret(&b.tenant.id).await.is_err());
    // A new key: every secret moves to it and still opens; the old key alone no longer does.
    let k2 = TestSeal {
        current: "k2",
        previous: Some("k1"),
    };
    fx.store
        .put_webhook_secret(&b.tenant.id, &b_stored, chrono::Utc::now(), true)
        .await
        .expect("restore");
    let n = tenancy::reseal_webhook_secrets(fx.store.as_ref(), &k2, true)
        .await
        .expect("rotate");
    assert_eq!(n, 2);
    let rotated = fx.tenancy.budgets.clone().with_seal(Arc::new(TestSeal {
        current: "k2",
        previous: None,
    }));
    assert_eq!(
        rotated.webhook_secret(&a.tenant.id).await.expect("a"),
        Some(secret)
    );
    assert_eq!(
        rotated.webhook_secret(&b.tenant.id).await.expect("b"),
        Some(legacy)
    );
    assert!(sealed.webhook_secret(&a.tenant.id).await.is_err());
}
