//! The price book: micro-units per million tokens per served model, with a configured default.
//! A model's batch price is the entry `batch/<model>` (set like any price); without one it is
//! half the model's interactive price (each rate rounded up), see [`PriceBook::rates`].

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

    /// The rates a new reservation of `served_model` is priced at: its entry, else
    /// [`PriceBook::default_for`].
    pub async fn rates(&self, served_model: &str) -> Result<PriceRates> {
        match self.store.price(served_model).await? {
            Some(price) => Ok(price.rates),
            None => self.default_for(served_model).await,
        }
    }

    /// The rates of `served_model` when it has no entry: for a batch name
    /// (`batch/<model>`), half of `<model>`'s rates (each rounded up); none for audio (the
    /// default is a price per million tokens); else the default.
    pub async fn default_for(&self, served_model: &str) -> Result<PriceRates> {
        if store::accounting::is_audio(served_model) {
            return Ok(PriceRates::default());
        }
        let Some(model) = served_model.strip_prefix(BATCH_PREFIX) else {
            return Ok(self.default);
        };
        let interactive = self
            .store
            .price(model)
            .await?
            .map_or(self.default, |price| price.rates);
        Ok(half(interactive))
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

/// The prefix of a model's batch price entry and of its batch lines' ledger model name.
pub const BATCH_PREFIX: &str = "batch/";

/// The name batch lines of `served_model` are priced and reported under.
pub fn batch_model(served_model: &str) -> String {
    format!("{BATCH_PREFIX}{served_model}")
}

/// The prefix of a base model's fine-tuning price entry and of its jobs' ledger model name.
pub const FINE_TUNE_PREFIX: &str = "ft/";

/// The name fine-tuning jobs on the base model `served_model` are priced and reported under:
/// one trained token (training-file tokens × epochs) is one prompt token at this entry's input
/// rate; without an entry, the default price.
pub fn fine_tune_model(served_model: &str) -> String {
    format!("{FINE_TUNE_PREFIX}{served_model}")
}

/// Half of every rate, rounded up: the default batch discount.
fn half(rates: PriceRates) -> PriceRates {
    let half = |v: i64| v / 2 + v % 2;
    PriceRates {
        input_per_million: half(rates.input_per_million),
        output_per_million: half(rates.output_per_million),
        cached_input_per_million: half(rates.cached_input_per_million),
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
