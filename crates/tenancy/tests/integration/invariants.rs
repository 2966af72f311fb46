//! The ledger's invariants under random sequences of reserve, progress, settle, cancel, top-up,
//! heartbeat and crash-then-recover: grant + balance − held never goes below zero, the ledger
//! always sums to the account, and every settlement charges what its usage costs.

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use store::accounting;
use tenancy::{Debit, Reservation, Tenancy, TokenUsage};

use crate::common::{Backend, Fixture, LEASE_SECS};
use crate::ledger::{request, RATES};

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        prompt: i64,
        max: i64,
    },
    Progress {
        pick: usize,
        completion: i64,
    },
    Settle {
        pick: usize,
        completion: i64,
        cached: i64,
    },
    Cancel {
        pick: usize,
    },
    TopUp {
        amount: i64,
    },
    /// Half a lease passes; the process heartbeats; another process's recovery finds nothing.
    Heartbeat,
    /// The process dies; a lease later another one recovers its reservations.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0i64..400, 0i64..400).prop_map(|(prompt, max)| Op::Reserve { prompt, max }),
        2 => (any::<usize>(), 0i64..500).prop_map(|(pick, completion)| Op::Progress { pick, completion }),
        3 => (any::<usize>(), 0i64..500, 0i64..400)
            .prop_map(|(pick, completion, cached)| Op::Settle { pick, completion, cached }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (1i64..2_000).prop_map(|amount| Op::TopUp { amount }),
        1 => Just(Op::Heartbeat),
        1 => Just(Op::Crash),
    ]
}

struct Open {
    reservation: Reservation,
    progress: Option<TokenUsage>,
}

/// What the account must hold, tracked independently of the store.
#[derive(Default)]
struct Model {
    open: Vec<Open>,
    balance: i64,
    grant_used: i64,
}

impl Model {
    fn charge(&mut self, r: &Reservation, measured: &TokenUsage) -> Debit {
        let billed = accounting::clamp_usage(measured, r.prompt_tokens, r.max_completion_tokens);
        let c = accounting::charge(&billed, r.hold.grant_tokens, &r.rates);
        self.balance -= c.amount;
        self.grant_used += c.grant_tokens;
        c
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if ok {
        Ok(())
    } else {
        Err(TestCaseError::fail(what()))
    }
}

async fn check_account(t: &Tenancy, tenant_id: &str, model: &Model) -> Result<(), TestCaseError> {
    let tenant = t.directory.tenant(tenant_id).await.expect("tenant");
    let b = tenant.balances;
    let entries = t.ledger.entries(tenant_id).await.expect("ledger");
    check(store::balances_from_ledger(&entries) == b, || {
        format!(
            "ledger {:?} != account {b:?}",
            store::balances_from_ledger(&entries)
        )
    })?;
    check(
        b.grant_tokens_available() >= 0 && b.amount_available() >= 0,
        || format!("over-held: {b:?}"),
    )?;
    let held = model.open.iter().fold(Debit::default(), |h, o| Debit {
        grant_tokens: h.grant_tokens + o.reservation.hold.grant_tokens,
        amount: h.amount + o.reservation.hold.amount,
    });
    check(
        (
            b.balance,
            b.grant_tokens_used,
            b.grant_tokens_held,
            b.amount_held,
        ) == (
            model.balance,
            model.grant_used,
            held.grant_tokens,
            held.amount,
        ),
        || {
            format!(
                "account {b:?} != model {} {} {held:?}",
                model.balance, model.grant_used
            )
        },
    )
}

async fn run_case(fx: &Fixture, grant: i64, top_up: i64, ops: &[Op]) -> Result<(), TestCaseError> {
    static CASE: AtomicUsize = AtomicUsize::new(0);
    let case = CASE.fetch_add(1, Ordering::Relaxed);
    let tenant = fx.tenant(&format!("case-{case}"), grant).await;
    let mut process = fx.process(&format!("case-{case}-p0"));
    let mut model = Model::default();
    if top_up > 0 {
        process
            .ledger
            .top_up(&tenant.id, top_up, None)
            .await
            .expect("top up");
        model.balance = top_up;
    }
    for (i, op) in ops.iter().enumerate() {
        let id = format!("case-{case}-r{i}");
        match *op {
            Op::Reserve { prompt, max } => {
                let before = process.directory.tenant(&tenant.id).await.expect("tenant");
                match process
                    .ledger
                    .reserve(&request(&id, &tenant.id, prompt, max))
                    .await
                {
                    Ok(reservation) => model.open.push(Open {
                        reservation,
                        progress: None,
                    }),
                    Err(e) => {
                        let b = before.balances;
                        let hold =
                            accounting::hold(prompt, max, &RATES, b.grant_tokens_available());
                        check(
                            e.code() == "insufficient_quota" && hold.amount > b.amount_available(),
                            || format!("refused {e:?} with {b:?} for {hold:?}"),
                        )?;
                    }
                }
            }
            Op::Progress { pick, completion } if !model.open.is_empty() => {
                let n = pick % model.open.len();
                let open = &mut model.open[n];
                let prompt = open.reservation.prompt_tokens;
                let mark = open
                    .progress
                    .map_or(0, |p| p.completion_tokens)
                    .max(completion);
                let usage = TokenUsage {
                    prompt_tokens: prompt,
                    completion_tokens: completion,
                    cached_tokens: 0,
                };
                let id = open.reservation.request_id.clone();
                process.ledger.progress(&id, usage).await.expect("progress");
                open.progress = Some(TokenUsage {
                    completion_tokens: mark,
                    ..usage
                });
            }
            Op::Settle {
                pick,
                completion,
                cached,
            } if !model.open.is_empty() => {
                let open = model.open.swap_remove(pick % model.open.len());
                let r = open.reservation;
                let usage = TokenUsage {
                    prompt_tokens: r.prompt_tokens,
                    completion_tokens: completion,
                    cached_tokens: cached.min(r.prompt_tokens),
                };
                let s = process
                    .ledger
                    .settle(&r.request_id, usage)
                    .await
                    .expect("settle");
                let expected = model.charge(&r, &usage);
                check(s.charged == expected && !s.already_settled, || {
                    format!("settled {s:?}, expected {expected:?}")
                })?;
                let again = process
                    .ledger
                    .settle(&r.request_id, usage)
                    .await
                    .expect("again");
                check(again.already_settled && again.charged == expected, || {
                    format!("second settle {again:?}")
                })?;
            }
            Op::Cancel { pick } if !model.open.is_empty() => {
                let open = model.open.swap_remove(pick % model.open.len());
                let s = process
                    .ledger
                    .cancel(&open.reservation.request_id)
                    .await
                    .expect("cancel");
                check(s.charged == Debit::default(), || {
                    format!("cancel charged {s:?}")
                })?;
            }
            Op::TopUp { amount } => {
                process
                    .ledger
                    .top_up(&tenant.id, amount, None)
                    .await
                    .expect("top up");
                model.balance += amount;
            }
            Op::Heartbeat => {
                fx.advance(LEASE_SECS / 2);
                process.ledger.heartbeat().await.expect("heartbeat");
                let observer = fx.process(&format!("case-{case}-observer"));
                let recovery = observer.ledger.recover().await.expect("recover");
                let ours = recovery
                    .settled
                    .iter()
                    .chain(&recovery.released)
                    .filter(|s| s.tenant_id == tenant.id)
                    .count();
                check(ours == 0, || {
                    format!("recovered a live process's reservations: {recovery:?}")
                })?;
            }
            Op::Crash => {
                fx.advance(LEASE_SECS + 1);
                process = fx.process(&format!("case-{case}-p{i}"));
                let recovery = process.ledger.recover().await.expect("recover");
                for open in std::mem::take(&mut model.open) {
                    let r = &open.reservation;
                    let expected = model.charge(r, &open.progress.unwrap_or_default());
                    let found = recovery
                        .settled
                        .iter()
                        .chain(&recovery.released)
                        .find(|s| s.request_id == r.request_id);
                    check(found.is_some_and(|s| s.charged == expected), || {
                        format!(
                            "{} recovered as {found:?}, expected {expected:?}",
                            r.request_id
                        )
                    })?;
                }
            }
            _ => {}
        }
        check_account(&process, &tenant.id, &model).await?;
    }
    Ok(())
}

fn ledger_invariants(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let fx = rt.block_on(Fixture::new(backend));
    rt.block_on(fx.tenancy.prices.set("m", RATES))
        .expect("price");
    let mut runner = TestRunner::new(Config {
        cases: 32,
        failure_persistence: None,
        ..Config::default()
    });
    let case = (0i64..1_500, 0i64..3_000, prop::collection::vec(op(), 1..40));
    let result = runner.run(&case, |(grant, top_up, ops)| {
        rt.block_on(run_case(&fx, grant, top_up, &ops))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn ledger_invariants_hold_on_sqlite() {
    ledger_invariants(Backend::Sqlite);
}

#[test]
fn ledger_invariants_hold_on_postgres() {
    ledger_invariants(Backend::Postgres);
}
