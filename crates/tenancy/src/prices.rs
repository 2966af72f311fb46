//! The price book: micro-units per million tokens per served model, with a configured default.

use std::sync::Arc;

use store::{Price, PriceRates, Store, TokenUsage};

/// The largest price of one tool call: 1,000 units of money.
pub const MAX_PER_CALL: i64 = 1_000_000_000;

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

    /// The entry of `served_model`, if it has one.
    pub async fn entry(&self, served_model: &str) -> Result<Option<PriceRates>> {
        Ok(self.store.price(served_model).await?.map(|p| p.rates))
    }

    /// Sets the price of a minute of audio transcribed by the speech model `served_model`, in
    /// micro-units (kept as the entry `audio/<served_model>`, one "token" per second; a request
    /// costs `ceil(seconds × per_minute / 60)`).
    pub async fn set_per_minute(&self, served_model: &str, per_minute: i64) -> Result<Price> {
        if !(0..=MAX_PER_CALL).contains(&per_minute) {
            return Err(Error::invalid(
                "per_minute",
                format!("a price per minute is 0 to {MAX_PER_CALL} micro-units"),
            ));
        }
        if served_model.trim().is_empty() {
            return Err(Error::invalid("served_model", "must not be empty"));
        }
        let rates = PriceRates {
            input_per_million: per_minute,
            cached_input_per_million: per_minute,
            output_per_million: 0,
        };
        self.set(&audio_entry(served_model), rates).await
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

    /// Sets the price of one tool call to the MCP server `server_id`, in micro-units (kept as
    /// the entry `mcp/<server id>`, one token per call).
    pub async fn set_per_call(&self, server_id: &str, per_call: i64) -> Result<Price> {
        if !(0..=MAX_PER_CALL).contains(&per_call) {
            return Err(Error::invalid(
                "per_call",
                format!("a price per call is 0 to {MAX_PER_CALL} micro-units"),
            ));
        }
        let rates = PriceRates {
            input_per_million: per_call * 1_000_000,
            cached_input_per_million: per_call * 1_000_000,
            output_per_million: 0,
        };
        let model = format!("{}{server_id}", store::accounting::TOOL_CALL_PREFIX);
        self.set(&model, rates).await
    }

    /// Every entry, by model name.
    pub async fn list(&self) -> Result<Vec<Price>> {
        Ok(self.store.prices().await?)
    }
}

/// The price-book entry and ledger model of a speech model's transcriptions.
pub fn audio_entry(served_model: &str) -> String {
    format!("{}{served_model}", store::accounting::AUDIO_PREFIX)
}

/// `ceil(Σ tokens × price_per_million / 1,000,000)` micro-units, cached prompt tokens at the
/// cached-input price, with no grant applied.
pub fn cost(usage: &TokenUsage, rates: &PriceRates) -> i64 {
    store::accounting::cost(usage, rates)
}
