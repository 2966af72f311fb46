//! The price book: micro-units per million tokens per served model, with a configured default.

use std::sync::Arc;

use store::{Price, PriceRates, Store, TokenUsage};

use crate::clock::Clock;
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct PriceBook {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    default: PriceRates,
}

/// Checks that no rate is negative; `prefix` qualifies the offending field's name.
pub(crate) fn validate_rates(rates: &PriceRates, prefix: &str) -> Result<()> {
    let all = [
        ("input_per_million", rates.input_per_million),
        ("output_per_million", rates.output_per_million),
        ("cached_input_per_million", rates.cached_input_per_million),
    ];
    match all.iter().find(|(_, v)| *v < 0) {
        Some((name, _)) => {
            let param = if prefix.is_empty() {
                (*name).to_owned()
            } else {
                format!("{prefix}.{name}")
            };
            Err(Error::invalid(
                &param,
                "prices are micro-units per million tokens, 0 or more",
            ))
        }
        None => Ok(()),
    }
}

impl PriceBook {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, default: PriceRates) -> Self {
        Self {
            store,
            clock,
            default,
        }
    }

    /// The price of a model without an entry.
    pub fn default_rates(&self) -> PriceRates {
        self.default
    }

    /// The rates a new reservation of `served_model` is priced at: its entry, else the default.
    pub async fn rates(&self, served_model: &str) -> Result<PriceRates> {
        Ok(self
            .store
            .price(served_model)
            .await?
            .map_or(self.default, |price| price.rates))
    }

    /// Sets (or replaces) a model's prices. Reservations already taken keep their price.
    pub async fn set(&self, served_model: &str, rates: PriceRates) -> Result<Price> {
        if served_model.trim().is_empty() {
            return Err(Error::invalid("served_model", "must not be empty"));
        }
        validate_rates(&rates, "")?;
        let price = Price {
            served_model: served_model.to_owned(),
            rates,
            updated_at: self.clock.now(),
        };
        Ok(self.store.put_price(&price).await?)
    }

    /// Every entry, by model name.
    pub async fn list(&self) -> Result<Vec<Price>> {
        Ok(self.store.prices().await?)
    }
}

/// `ceil(Σ tokens × price_per_million / 1,000,000)` micro-units, cached prompt tokens at the
/// cached-input price, with no grant applied.
pub fn cost(usage: &TokenUsage, rates: &PriceRates) -> i64 {
    store::accounting::cost(usage, rates)
}
