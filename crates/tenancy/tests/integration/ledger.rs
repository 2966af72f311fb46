//! The ledger: grant before balance, free-tier-only, idempotent settlement, concurrent
//! reservations, and recovery of abandoned reservations.

use std::collections::HashSet;

use tenancy::{
    Error, Ledger, PriceRates, ReservationState, ReserveRequest, Settlement, Tenancy, TenantPatch,
    TokenUsage,
};

use crate::common::{Fixture, LEASE_SECS};

store::on_both!(Fixture;
    grant_is_consumed_before_the_balance,
    free_tier_only_tenants_stop_when_the_grant_is_used,
    settlement_is_idempotent,
    concurrent_reservations_take_exactly_what_the_balance_covers,
    expired_leases_are_recovered_and_live_ones_are_not,
    a_reservation_shrinks_to_its_counted_prompt_and_grows_only_if_the_account_can_pay,
);

/// 1 micro-unit per input token, 2 per output token, 0.5 per cached input token.
pub const RATES: PriceRates = PriceRates {
    input_per_million: 1_000_000,
    output_per_million: 2_000_000,
    cached_input_per_million: 500_000,
};

pub fn request(id: &str, tenant: &str, prompt: i64, max: i64) -> ReserveRequest {
    ReserveRequest {
        request_id: id.to_owned(),
        tenant_id: tenant.to_owned(),
        key_id: None,
        served_model: "m".to_owned(),
        prompt_tokens: prompt,
        max_completion_tokens: max,
    }
}

pub fn usage(prompt: i64, completion: i64, cached: i64) -> TokenUsage {
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        cached_tokens: cached,
    }
}

/// The account counters equal what the ledger entries sum to, and nothing is over-held.
pub async fn assert_consistent(tenancy: &Tenancy, tenant_id: &str) {
    let tenant = tenancy.directory.tenant(tenant_id).await.expect("tenant");
    let entries = tenancy.ledger.entries(tenant_id).await.expect("ledger");
    assert_eq!(store::balances_from_ledger(&entries), tenant.balances);
    assert!(tenant.balances.grant_tokens_available() >= 0, "{tenant:?}");
    assert!(tenant.balances.amount_available() >= 0, "{tenant:?}");
}

async fn grant_is_consumed_before_the_balance(fx: Fixture) {
    let t = &fx.tenancy;
    t.prices.set("m", RATES).await.expect("price");
    let tenant = fx.tenant("acme", 100).await;
    t.ledger
        .top_up(&tenant.id, 1_000, None)
        .await
        .expect("top up");

    // Worst case 50 + 100 tokens: 100 from the grant, 50 completion tokens paid at 2.
    let r = t
        .ledger
        .reserve(&request("r1", &tenant.id, 50, 100))
        .await
        .expect("reserve");
    assert_eq!((r.hold.grant_tokens, r.hold.amount), (100, 100));
    assert_consistent(t, &tenant.id).await;
    let account = t.usage.account(&tenant.id).await.expect("account");
    assert_eq!((account.grant_tokens_held, account.amount_held), (100, 100));

    // 50 prompt (10 cached) + 80 completion: the grant pays 100 tokens, 30 completion are paid.
    let s = t
        .ledger
        .settle("r1", usage(50, 80, 10))
        .await
        .expect("settle");
    assert_eq!((s.charged.grant_tokens, s.charged.amount), (100, 60));
    assert_eq!((s.released.grant_tokens, s.released.amount), (0, 40));
    let account = t.usage.account(&tenant.id).await.expect("account");
    assert_eq!(account.grant_tokens_left, 0);
    assert_eq!((account.balance, account.amount_held), (940, 0));

    // Without grant: 40 uncached at 1, 10 cached at 0.5, 5 completion at 2 = 55 micro-units.
    t.ledger
        .reserve(&request("r2", &tenant.id, 50, 10))
        .await
        .expect("reserve");
    let s = t
        .ledger
        .settle("r2", usage(50, 5, 10))
        .await
        .expect("settle");
    assert_eq!(s.charged.amount, 55);
    assert_eq!(tenancy::cost(&usage(50, 5, 10), &RATES), 55);
    assert_eq!(
        t.usage.account(&tenant.id).await.expect("account").balance,
        885
    );

    // A worst case beyond the balance is refused, and holds nothing.
    let err = t
        .ledger
        .reserve(&request("r3", &tenant.id, 500, 200))
        .await
        .expect_err("402");
    assert_eq!(err.code(), "insufficient_quota");
    assert_consistent(t, &tenant.id).await;
    // A free model needs no balance.
    let broke = fx.tenant("broke", 0).await;
    let mut free = request("r4", &broke.id, 10, 10);
    free.served_model = "free".into();
    t.ledger.reserve(&free).await.expect("a free model");
}

async fn free_tier_only_tenants_stop_when_the_grant_is_used(fx: Fixture) {
    let t = &fx.tenancy;
    t.prices.set("m", RATES).await.expect("price");
    let tenant = fx.tenant("trial", 100).await;
    t.ledger
        .top_up(&tenant.id, 1_000_000, None)
        .await
        .expect("top up");
    let patch = TenantPatch {
        free_tier_only: Some(true),
        ..TenantPatch::default()
    };
    t.directory
        .update_tenant(&tenant.id, &patch)
        .await
        .expect("patch");

    t.ledger
        .reserve(&request("a", &tenant.id, 30, 30))
        .await
        .expect("within the grant");
    t.ledger
        .settle("a", usage(30, 30, 0))
        .await
        .expect("settle");
    // 40 free tokens left: a worst case of 50 is not covered, and the balance may not pay.
    let err = t
        .ledger
        .reserve(&request("b", &tenant.id, 20, 30))
        .await
        .expect_err("402");
    assert_eq!(err.code(), "insufficient_quota");
    t.ledger
        .reserve(&request("c", &tenant.id, 20, 20))
        .await
        .expect("fits");
    t.ledger
        .settle("c", usage(20, 20, 0))
        .await
        .expect("settle");
    // Used up: 403, not 402.
    let err = t
        .ledger
        .reserve(&request("d", &tenant.id, 1, 1))
        .await
        .expect_err("403");
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let account = t.usage.account(&tenant.id).await.expect("account");
    assert_eq!((account.grant_tokens_left, account.balance), (0, 1_000_000));
    assert_consistent(t, &tenant.id).await;
}

async fn settlement_is_idempotent(fx: Fixture) {
    let t = &fx.tenancy;
    t.prices.set("m", RATES).await.expect("price");
    let tenant = fx.tenant("acme", 0).await;
    t.ledger
        .top_up(&tenant.id, 10_000, Some("topup-1"))
        .await
        .expect("top up");
    // A retried top-up applies once; the key cannot be reused for another amount.
    t.ledger
        .top_up(&tenant.id, 10_000, Some("topup-1"))
        .await
        .expect("retry");
    let reuse = t.ledger.top_up(&tenant.id, 5, Some("topup-1")).await;
    assert!(matches!(reuse, Err(Error::Conflict { .. })));
    assert_eq!(
        t.usage.account(&tenant.id).await.expect("account").balance,
        10_000
    );

    t.ledger
        .reserve(&request("r", &tenant.id, 100, 100))
        .await
        .expect("reserve");
    let again = t.ledger.reserve(&request("r", &tenant.id, 1, 1)).await;
    assert!(matches!(again, Err(Error::Conflict { .. })));
    t.ledger
        .progress("r", usage(100, 16, 0))
        .await
        .expect("progress");
    let first = t
        .ledger
        .settle("r", usage(100, 40, 0))
        .await
        .expect("settle");
    assert_eq!(first.charged.amount, 180);
    assert!(!first.already_settled);
    let entries = t.ledger.entries(&tenant.id).await.expect("ledger").len();

    let second = t
        .ledger
        .settle("r", usage(100, 99, 0))
        .await
        .expect("settle again");
    let cancel = t.ledger.cancel("r").await.expect("cancel after settle");
    for later in [&second, &cancel] {
        assert!(later.already_settled);
        assert_eq!((later.billed, later.charged), (first.billed, first.charged));
    }
    t.ledger
        .progress("r", usage(100, 90, 0))
        .await
        .expect("progress after settle: no-op");
    assert_eq!(
        t.ledger.entries(&tenant.id).await.expect("ledger").len(),
        entries
    );
    assert_eq!(
        t.usage.account(&tenant.id).await.expect("account").balance,
        9_820
    );
    let r = t.ledger.reservation("r").await.expect("reservation");
    assert_eq!(r.state, ReservationState::Settled);

    // Usage beyond the reservation is clamped to it; nothing delivered is a release.
    t.ledger
        .reserve(&request("big", &tenant.id, 10, 10))
        .await
        .expect("reserve");
    let s = t
        .ledger
        .settle("big", usage(10, 500, 0))
        .await
        .expect("settle");
    assert_eq!(s.billed, usage(10, 10, 0));
    t.ledger
        .reserve(&request("none", &tenant.id, 10, 10))
        .await
        .expect("reserve");
    let s = t.ledger.cancel("none").await.expect("cancel");
    assert_eq!((s.charged.amount, s.released.amount), (0, 30));
    let r = t.ledger.reservation("none").await.expect("reservation");
    assert_eq!(r.state, ReservationState::Released);
    assert!(matches!(
        t.ledger.settle("unknown", usage(1, 1, 0)).await,
        Err(Error::NotFound { .. })
    ));
    assert_consistent(t, &tenant.id).await;
}

async fn concurrent_reservations_take_exactly_what_the_balance_covers(fx: Fixture) {
    const REQUESTS: usize = 64;
    const COVERED: usize = 20;
    let t = &fx.tenancy;
    t.prices.set("m", RATES).await.expect("price");
    // Worst case 100 prompt + 100 completion = 300 micro-units; the balance covers 20.5 of them.
    let tenant = fx.tenant("burst", 0).await;
    let balance = COVERED as i64 * 300 + 150;
    t.ledger
        .top_up(&tenant.id, balance, None)
        .await
        .expect("top up");

    // Half the requests through a second process with its own connection pool.
    let other = fx.on(fx.second_store().await, "proc-b");
    let ledgers = [t.ledger.clone(), other.ledger.clone()];
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let ledger: Ledger = ledgers[i % 2].clone();
            let request = request(&format!("req-{i}"), &tenant.id, 100, 100);
            tokio::spawn(async move { ledger.reserve(&request).await })
        })
        .collect();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(r) => accepted.push(r.request_id),
            Err(e) => {
                assert_eq!(e.code(), "insufficient_quota", "{e:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(accepted.len(), COVERED);
    assert_eq!(refused, REQUESTS - COVERED);
    let account = t.usage.account(&tenant.id).await.expect("account");
    assert_eq!(account.amount_held, COVERED as i64 * 300);

    // Settle them all, concurrently, each for part of its worst case.
    let tasks: Vec<_> = accepted
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let ledger = ledgers[i % 2].clone();
            let id = id.clone();
            tokio::spawn(async move { ledger.settle(&id, usage(100, 50, 0)).await })
        })
        .collect();
    let mut charged = 0;
    for task in tasks {
        let s: Settlement = task.await.expect("task").expect("settle");
        charged += s.charged.amount;
    }
    assert_eq!(charged, COVERED as i64 * 200);
    let account = t.usage.account(&tenant.id).await.expect("account");
    assert_eq!(account.balance, balance - charged);
    assert!(account.balance >= 0 && account.amount_held == 0);
    assert_consistent(t, &tenant.id).await;
}

async fn expired_leases_are_recovered_and_live_ones_are_not(fx: Fixture) {
    let a = &fx.tenancy;
    let b = fx.process("proc-b");
    a.prices.set("m", RATES).await.expect("price");
    let tenant = fx.tenant("acme", 0).await;
    a.ledger
        .top_up(&tenant.id, 100_000, None)
        .await
        .expect("top up");

    // Process A: one stream with persisted progress, one that never started.
    a.ledger
        .reserve(&request("a-streaming", &tenant.id, 100, 200))
        .await
        .expect("reserve");
    a.ledger
        .progress("a-streaming", usage(100, 32, 0))
        .await
        .expect("progress");
    a.ledger
        .reserve(&request("a-queued", &tenant.id, 100, 200))
        .await
        .expect("reserve");
    // Process B: a live stream.
    b.ledger
        .reserve(&request("b-live", &tenant.id, 100, 200))
        .await
        .expect("reserve");
    b.ledger
        .progress("b-live", usage(100, 8, 0))
        .await
        .expect("progress");

    // Within the lease nobody's reservations are touched, not even by another process.
    fx.advance(LEASE_SECS - 1);
    let none = b.ledger.recover().await.expect("recover");
    assert_eq!(none, tenancy::Recovery::default());

    // A dies (no more heartbeats); B heartbeats and its lease moves on.
    fx.advance(LEASE_SECS / 2);
    assert_eq!(b.ledger.heartbeat().await.expect("heartbeat"), 1);
    fx.advance(LEASE_SECS / 2 + 1);
    let c = fx.process("proc-c");
    let recovery = c.ledger.recover().await.expect("recover");
    let ids = |s: &[Settlement]| {
        s.iter()
            .map(|s| s.request_id.clone())
            .collect::<HashSet<_>>()
    };
    assert_eq!(
        ids(&recovery.settled),
        HashSet::from(["a-streaming".to_owned()])
    );
    assert_eq!(
        ids(&recovery.released),
        HashSet::from(["a-queued".to_owned()])
    );
    // Billed from the persisted mark: 100 prompt at 1 + 32 completion at 2.
    assert_eq!(recovery.settled[0].billed, usage(100, 32, 0));
    assert_eq!(recovery.settled[0].charged.amount, 164);
    assert_eq!(
        a.ledger.reservation("b-live").await.expect("live").state,
        ReservationState::Open
    );
    // A second pass finds nothing; the live stream settles normally.
    assert_eq!(
        c.ledger.recover().await.expect("recover"),
        tenancy::Recovery::default()
    );
    let s = b
        .ledger
        .settle("b-live", usage(100, 50, 0))
        .await
        .expect("settle");
    assert!(!s.already_settled);
    // A late settle from the dead process changes nothing.
    let late = a
        .ledger
        .settle("a-streaming", usage(100, 200, 0))
        .await
        .expect("late");
    assert!(late.already_settled && late.billed == usage(100, 32, 0));
    let account = a.usage.account(&tenant.id).await.expect("account");
    assert_eq!(account.balance, 100_000 - 164 - 200);
    assert_eq!((account.amount_held, account.grant_tokens_held), (0, 0));
    assert_consistent(a, &tenant.id).await;
}

async fn a_reservation_shrinks_to_its_counted_prompt_and_grows_only_if_the_account_can_pay(
    fx: Fixture,
) {
    let t = &fx.tenancy;
    t.prices.set("m", RATES).await.expect("price");
    let tenant = fx.tenant("acme", 0).await;
    t.ledger
        .top_up(&tenant.id, 1_000, None)
        .await
        .expect("top up");

    // A bound of 400 prompt tokens and 100 completion tokens: 400 + 200 held.
    let r = t
        .ledger
        .reserve(&request("r1", &tenant.id, 400, 100))
        .await
        .expect("reserve");
    assert_eq!(r.hold.amount, 600);
    // The backend counted 100 prompt tokens: 300 go back at once.
    let r = t.ledger.resize("r1", 100, 100).await.expect("shrink");
    assert_eq!((r.prompt_tokens, r.max_completion_tokens), (100, 100));
    assert_eq!(r.hold.amount, 300);
    let account = t.usage.account(&tenant.id).await.expect("account");
    assert_eq!((account.balance, account.amount_held), (1_000, 300));
    assert_consistent(t, &tenant.id).await;
    // Once per reservation.
    let again = t.ledger.resize("r1", 50, 100).await;
    assert!(matches!(again, Err(Error::Conflict { .. })), "{again:?}");

    // Growing takes only what the account has: 700 are free, 300 held by r1.
    t.ledger
        .reserve(&request("r2", &tenant.id, 100, 100))
        .await
        .expect("reserve r2");
    let refused = t.ledger.resize("r2", 900, 100).await;
    assert!(
        matches!(refused, Err(Error::InsufficientQuota { .. })),
        "{refused:?}"
    );
    let unchanged = t.ledger.reservation("r2").await.expect("r2");
    assert_eq!((unchanged.prompt_tokens, unchanged.hold.amount), (100, 300));
    let r = t.ledger.resize("r2", 300, 100).await.expect("grow");
    assert_eq!(r.hold.amount, 500);
    let account = t.usage.account(&tenant.id).await.expect("account");
    assert_eq!(account.amount_held, 800);
    assert_consistent(t, &tenant.id).await;

    // Settling bills up to the resized worst case and releases the rest.
    let s = t
        .ledger
        .settle("r2", usage(300, 10, 0))
        .await
        .expect("settle");
    assert_eq!((s.charged.amount, s.released.amount), (320, 180));
    t.ledger
        .settle("r1", usage(100, 0, 0))
        .await
        .expect("settle");
    // A closed reservation is returned unchanged.
    let closed = t.ledger.resize("r1", 10, 10).await.expect("closed");
    assert_eq!(closed.prompt_tokens, 100);
    let account = t.usage.account(&tenant.id).await.expect("account");
    assert_eq!((account.balance, account.amount_held), (580, 0));
    assert_consistent(t, &tenant.id).await;
}
