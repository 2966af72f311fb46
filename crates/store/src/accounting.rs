//! The arithmetic of holds and charges. Pure functions, used inside the stores' transactions so
//! that both databases decide exactly alike.
//!
//! A request costs `ceil(Σ tokens × price_per_million / 1,000,000)` micro-units. The free grant
//! pays for a request's tokens first, in this order: uncached prompt tokens, cached prompt
//! tokens, completion tokens; the balance pays for the rest.
//!
//! A reservation holds the worst case: all its prompt tokens at the dearer of the input and
//! cached-input prices, and `max_completion_tokens` completion tokens. Because usage is clamped
//! to the reservation (prompt ≤ reserved prompt, completion ≤ reserved completion) and the same
//! grant tokens come first, a charge never exceeds its hold.

use crate::error::StoreError;
use crate::model::{
    Balances, Debit, NewReservation, PriceRates, Reservation, ReservationState, SettleWith, Tenant,
    TokenUsage,
};

const PER_MILLION: i128 = 1_000_000;

/// `ceil(Σ units × price / per)`, saturating at `i64::MAX`: `per` is 1,000,000 for tokens
/// (prices per million) and 60 for audio seconds (prices per minute).
fn priced(parts: &[(i64, i64)], per: i64) -> i64 {
    let per = i128::from(per.max(1));
    let sum: i128 = parts
        .iter()
        .map(|&(tokens, price)| i128::from(tokens.max(0)) * i128::from(price.max(0)))
        .sum();
    let ceil = (sum + per - 1) / per;
    i64::try_from(ceil).unwrap_or(i64::MAX)
}

/// The full price of a usage, with no grant.
pub fn cost(usage: &TokenUsage, rates: &PriceRates) -> i64 {
    charge(usage, 0, rates).amount
}

/// Served-model names of this prefix are speech transcriptions (`audio/<served name>`): their
/// "prompt tokens" are audio seconds (`ceil(ms / 1000)`), priced per minute (the entry's input
/// price is micro-units per minute, so a request costs `ceil(seconds × per_minute / 60)`), and
/// never paid by the free token grant.
pub const AUDIO_PREFIX: &str = "audio/";

pub fn is_audio(model: &str) -> bool {
    model.starts_with(AUDIO_PREFIX)
}

/// What one price covers for `model`'s reservations: a million tokens, or a minute of audio
/// (60 seconds).
pub fn price_unit(model: &str) -> i64 {
    if is_audio(model) {
        60
    } else {
        PER_MILLION as i64
    }
}

/// Reservations the free token grant never pays: tool calls and audio.
pub fn money_only(model: &str) -> bool {
    is_tool_call(model) || is_audio(model)
}

/// Clamps measured usage to what was reserved, so the charge stays within the hold.
pub fn clamp_usage(
    usage: &TokenUsage,
    prompt_tokens: i64,
    max_completion_tokens: i64,
) -> TokenUsage {
    let prompt = usage.prompt_tokens.clamp(0, prompt_tokens.max(0));
    TokenUsage {
        prompt_tokens: prompt,
        completion_tokens: usage
            .completion_tokens
            .clamp(0, max_completion_tokens.max(0)),
        cached_tokens: usage.cached_tokens.clamp(0, prompt),
    }
}

/// What a (clamped) usage takes, given how many grant tokens its reservation holds.
pub fn charge(usage: &TokenUsage, grant_held: i64, rates: &PriceRates) -> Debit {
    charge_per(usage, grant_held, rates, PER_MILLION as i64)
}

/// [`charge`] with prices per `per` units ([`price_unit`]).
pub fn charge_per(usage: &TokenUsage, grant_held: i64, rates: &PriceRates, per: i64) -> Debit {
    let cached = usage.cached_tokens.clamp(0, usage.prompt_tokens.max(0));
    let uncached = usage.prompt_tokens.max(0) - cached;
    let completion = usage.completion_tokens.max(0);
    let mut free = grant_held.clamp(0, uncached + cached + completion);
    let grant_tokens = free;
    let mut take = |tokens: i64| {
        let t = tokens.min(free);
        free -= t;
        tokens - t
    };
    let paid_uncached = take(uncached);
    let paid_cached = take(cached);
    let paid_completion = take(completion);
    Debit {
        grant_tokens,
        amount: priced(
            &[
                (paid_uncached, rates.input_per_million),
                (paid_cached, rates.cached_input_per_million),
                (paid_completion, rates.output_per_million),
            ],
            per,
        ),
    }
}

/// The worst-case hold of a request, given the grant tokens still available.
pub fn hold(
    prompt_tokens: i64,
    max_completion_tokens: i64,
    rates: &PriceRates,
    grant_available: i64,
) -> Debit {
    hold_per(
        prompt_tokens,
        max_completion_tokens,
        rates,
        grant_available,
        PER_MILLION as i64,
    )
}

/// [`hold`] with prices per `per` units ([`price_unit`]).
pub fn hold_per(
    prompt_tokens: i64,
    max_completion_tokens: i64,
    rates: &PriceRates,
    grant_available: i64,
    per: i64,
) -> Debit {
    let prompt = prompt_tokens.max(0);
    let completion = max_completion_tokens.max(0);
    let grant_tokens = grant_available.clamp(0, prompt + completion);
    let paid_prompt = prompt - grant_tokens.min(prompt);
    let paid_completion = completion - (grant_tokens - prompt).max(0);
    let prompt_price = rates.input_per_million.max(rates.cached_input_per_million);
    Debit {
        grant_tokens,
        amount: priced(
            &[
                (paid_prompt, prompt_price),
                (paid_completion, rates.output_per_million),
            ],
            per,
        ),
    }
}

/// Why an account cannot take a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldRefusal {
    /// A free-tier-only tenant whose grant is used up.
    GrantExhausted,
    /// Grant plus balance, less what is held, does not cover the worst case.
    Insufficient { needed: Debit, available: Debit },
}

/// Decides whether `balances` can take `hold` for a request of `worst_case_tokens`.
pub fn check_hold(
    balances: &Balances,
    free_tier_only: bool,
    hold: &Debit,
    worst_case_tokens: i64,
) -> Result<(), HoldRefusal> {
    let available = Debit {
        grant_tokens: balances.grant_tokens_available().max(0),
        amount: if free_tier_only {
            0
        } else {
            balances.amount_available().max(0)
        },
    };
    if free_tier_only {
        if balances.grant_tokens_left() <= 0 {
            return Err(HoldRefusal::GrantExhausted);
        }
        if hold.grant_tokens < worst_case_tokens {
            let needed = Debit {
                grant_tokens: worst_case_tokens,
                amount: 0,
            };
            return Err(HoldRefusal::Insufficient { needed, available });
        }
        return Ok(());
    }
    if hold.grant_tokens > available.grant_tokens || hold.amount > available.amount {
        return Err(HoldRefusal::Insufficient {
            needed: *hold,
            available,
        });
    }
    Ok(())
}

/// Served-model names of this prefix are MCP tool calls (`mcp/<server id>`): one "prompt
/// token" per call at the server's per-call price (kept as the price per million × 10⁶), never
/// paid by the free token grant.
pub const TOOL_CALL_PREFIX: &str = "mcp/";

pub fn is_tool_call(model: &str) -> bool {
    model.starts_with(TOOL_CALL_PREFIX)
}

/// The hold `new` takes from `tenant` at `rates`, or why the tenant cannot take it.
pub fn hold_for(
    tenant: &Tenant,
    new: &NewReservation,
    rates: &PriceRates,
) -> Result<Debit, StoreError> {
    if tenant.disabled {
        return Err(StoreError::TenantDisabled(tenant.id.clone()));
    }
    let worst_case = new.prompt_tokens + new.max_completion_tokens;
    let call = money_only(&new.model);
    let grant = if call {
        0
    } else {
        tenant.balances.grant_tokens_available()
    };
    let held = hold_per(
        new.prompt_tokens,
        new.max_completion_tokens,
        rates,
        grant,
        price_unit(&new.model),
    );
    // A tool call or audio is money only: a free-tier tenant may make the free ones.
    let free_tier_only = tenant.free_tier_only && !(call && held.amount == 0);
    check_hold(&tenant.balances, free_tier_only, &held, worst_case).map_err(StoreError::from)?;
    Ok(held)
}

/// What resizing an open reservation changes: its new hold, and the parts of it that grew
/// (taken from the account) and shrank (given back), each at least 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resize {
    pub hold: Debit,
    pub taken: Debit,
    pub returned: Debit,
}

/// The hold `reservation` (open, of `tenant` as read now) takes once its worst case becomes
/// `prompt_tokens` and `max_completion_tokens` at its own rates, or why the account cannot
/// take it. The account is checked as if this reservation held nothing, so a resize that
/// shrinks the hold always succeeds.
pub fn resize(
    tenant: &Tenant,
    reservation: &Reservation,
    prompt_tokens: i64,
    max_completion_tokens: i64,
) -> Result<Resize, StoreError> {
    let old = reservation.hold;
    let mut balances = tenant.balances;
    balances.grant_tokens_held -= old.grant_tokens;
    balances.amount_held -= old.amount;
    let grant = if money_only(&reservation.model) {
        0
    } else {
        balances.grant_tokens_available()
    };
    let held = hold_per(
        prompt_tokens,
        max_completion_tokens,
        &reservation.rates,
        grant,
        price_unit(&reservation.model),
    );
    let grows = held.grant_tokens > old.grant_tokens || held.amount > old.amount;
    if grows {
        let worst_case = prompt_tokens.max(0) + max_completion_tokens.max(0);
        let free_tier_only =
            tenant.free_tier_only && !(money_only(&reservation.model) && held.amount == 0);
        check_hold(&balances, free_tier_only, &held, worst_case).map_err(StoreError::from)?;
    }
    Ok(Resize {
        hold: held,
        taken: Debit {
            grant_tokens: (held.grant_tokens - old.grant_tokens).max(0),
            amount: (held.amount - old.amount).max(0),
        },
        returned: Debit {
            grant_tokens: (old.grant_tokens - held.grant_tokens).max(0),
            amount: (old.amount - held.amount).max(0),
        },
    })
}

impl From<HoldRefusal> for StoreError {
    fn from(refusal: HoldRefusal) -> Self {
        match refusal {
            HoldRefusal::GrantExhausted => StoreError::GrantExhausted,
            HoldRefusal::Insufficient { needed, available } => {
                StoreError::InsufficientQuota { needed, available }
            }
        }
    }
}

/// The idempotency key of a reservation's resize entries: a reservation is resized at most
/// once (when its backend has counted the prompt).
pub fn resize_key(request_id: &str) -> String {
    format!("{request_id}:resize")
}

/// How an open reservation closes: what is billed, charged and released, and its final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closing {
    pub billed: TokenUsage,
    pub charged: Debit,
    pub released: Debit,
    pub state: ReservationState,
}

/// Closes `reservation` with the usage `with` names, clamped to what was reserved.
pub fn close(reservation: &Reservation, with: SettleWith) -> Closing {
    let measured = match with {
        SettleWith::Usage(usage) => usage,
        SettleWith::Progress => reservation.delivered.unwrap_or_default(),
    };
    let billed = clamp_usage(
        &measured,
        reservation.prompt_tokens,
        reservation.max_completion_tokens,
    );
    if billed != measured {
        tracing::warn!(
            request_id = %reservation.request_id,
            ?measured,
            ?billed,
            "usage beyond the reservation was clamped to it"
        );
    }
    let hold = reservation.hold;
    let mut charged = charge_per(
        &billed,
        hold.grant_tokens,
        &reservation.rates,
        price_unit(&reservation.model),
    );
    // Never more than the hold; `charge` already guarantees it (see the module docs).
    charged.amount = charged.amount.min(hold.amount);
    Closing {
        billed,
        charged,
        released: Debit {
            grant_tokens: hold.grant_tokens - charged.grant_tokens,
            amount: hold.amount - charged.amount,
        },
        state: if billed.total() > 0 {
            ReservationState::Settled
        } else {
            ReservationState::Released
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn audio_is_priced_per_minute_and_rounded_up() {
        let per_minute = rates(100, 0, 100);
        let unit = price_unit("audio/whisper");
        assert_eq!(unit, 60);
        assert_eq!(price_unit("whisper"), 1_000_000);
        // ceil(61 × 100 / 60) = ceil(101.67) = 102; 60 s cost exactly a minute.
        let seconds = |s| TokenUsage {
            prompt_tokens: s,
            completion_tokens: 0,
            cached_tokens: 0,
        };
        assert_eq!(charge_per(&seconds(61), 0, &per_minute, unit).amount, 102);
        assert_eq!(charge_per(&seconds(60), 0, &per_minute, unit).amount, 100);
        assert_eq!(charge_per(&seconds(1), 0, &per_minute, unit).amount, 2);
        assert_eq!(hold_per(61, 0, &per_minute, 0, unit).amount, 102);
        assert!(money_only("audio/whisper") && money_only("mcp/x") && !money_only("whisper"));
    }

    fn rates(input: i64, output: i64, cached: i64) -> PriceRates {
        PriceRates {
            input_per_million: input,
            output_per_million: output,
            cached_input_per_million: cached,
        }
    }

    fn usage(prompt: i64, completion: i64, cached: i64) -> TokenUsage {
        TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
        }
    }

    #[test]
    fn cost_rounds_up_to_the_micro_unit() {
        let r = rates(1_000_000, 2_000_000, 500_000);
        // 10 × 1 + 5 × 2 + 4 × 0.5 = 22 micro-units exactly.
        assert_eq!(cost(&usage(14, 5, 4), &r), 22);
        // One token at 1 micro-unit per million is a millionth: rounds up to 1.
        assert_eq!(cost(&usage(1, 0, 0), &rates(1, 0, 0)), 1);
        assert_eq!(cost(&usage(0, 0, 0), &r), 0);
        assert_eq!(cost(&usage(1_000_000, 0, 0), &rates(3, 0, 0)), 3);
        assert_eq!(cost(&usage(1_000_001, 0, 0), &rates(3, 0, 0)), 4);
    }

    #[test]
    fn grant_pays_prompt_first_then_completion() {
        let r = rates(1_000_000, 10_000_000, 0);
        // 10 prompt + 10 completion, 15 free: 5 completion tokens paid at 10 each.
        assert_eq!(
            charge(&usage(10, 10, 0), 15, &r),
            Debit {
                grant_tokens: 15,
                amount: 50
            }
        );
        // More grant than usage: the grant takes only what was used.
        assert_eq!(
            charge(&usage(3, 2, 0), 100, &r),
            Debit {
                grant_tokens: 5,
                amount: 0
            }
        );
    }

    #[test]
    fn hold_prices_prompt_at_the_dearer_input_rate() {
        let r = rates(2_000_000, 3_000_000, 5_000_000);
        assert_eq!(
            hold(10, 10, &r, 0),
            Debit {
                grant_tokens: 0,
                amount: 80
            }
        );
        assert_eq!(
            hold(10, 10, &r, 12),
            Debit {
                grant_tokens: 12,
                amount: 24
            }
        );
    }

    #[test]
    fn free_tier_only_needs_the_whole_worst_case_from_the_grant() {
        let mut b = Balances {
            grant_tokens_total: 100,
            balance: 1_000_000,
            ..Balances::default()
        };
        let r = rates(1, 1, 1);
        let h = hold(50, 60, &r, b.grant_tokens_available());
        assert!(matches!(
            check_hold(&b, true, &h, 110),
            Err(HoldRefusal::Insufficient { .. })
        ));
        assert_eq!(check_hold(&b, false, &h, 110), Ok(()));
        b.grant_tokens_used = 100;
        let h = hold(1, 1, &r, b.grant_tokens_available());
        assert_eq!(
            check_hold(&b, true, &h, 2),
            Err(HoldRefusal::GrantExhausted)
        );
    }

    proptest! {
        #[test]
        fn a_charge_never_exceeds_its_hold(
            prompt in 0i64..5_000, max_completion in 0i64..5_000,
            used_prompt in 0i64..6_000, used_completion in 0i64..6_000, cached in 0i64..6_000,
            grant in 0i64..12_000,
            input in 0i64..50_000_000, output in 0i64..50_000_000, cached_price in 0i64..50_000_000,
        ) {
            let r = rates(input, output, cached_price);
            let h = hold(prompt, max_completion, &r, grant);
            let u = clamp_usage(&usage(used_prompt, used_completion, cached), prompt, max_completion);
            let c = charge(&u, h.grant_tokens, &r);
            prop_assert!(c.grant_tokens <= h.grant_tokens);
            prop_assert!(c.amount <= h.amount, "charge {c:?} > hold {h:?}");
            prop_assert!(c.grant_tokens <= u.total());
            // With no grant the charge is the plain cost.
            prop_assert_eq!(charge(&u, 0, &r).amount, cost(&u, &r));
        }
    }
}
