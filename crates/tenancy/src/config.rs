//! Tenancy settings. The binary fills them from its layered config.

use chrono::TimeDelta;
use store::PriceRates;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenancyConfig {
    /// Free tokens every new tenant gets; 0 turns the grant off.
    pub free_grant_tokens: i64,
    /// The price of a served model without a price-book entry.
    pub default_price: PriceRates,
    /// How long a reservation stays this process's without a heartbeat. Heartbeat at least
    /// every third of it.
    pub lease: TimeDelta,
    /// This process's id, the owner of its reservations. Unique per process start.
    pub process_id: String,
}

/// The default free grant: one million tokens.
pub const DEFAULT_FREE_GRANT_TOKENS: i64 = 1_000_000;

impl Default for TenancyConfig {
    fn default() -> Self {
        Self {
            free_grant_tokens: DEFAULT_FREE_GRANT_TOKENS,
            default_price: PriceRates::default(),
            lease: TimeDelta::seconds(30),
            process_id: format!("proc_{}", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl TenancyConfig {
    pub fn validate(&self) -> Result<()> {
        if self.free_grant_tokens < 0 {
            return Err(Error::invalid("free_grant_tokens", "must be 0 or more"));
        }
        crate::prices::validate_rates(&self.default_price, "default_price")?;
        if self.lease <= TimeDelta::zero() {
            return Err(Error::invalid("lease", "must be positive"));
        }
        if self.process_id.is_empty() {
            return Err(Error::invalid("process_id", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        let config = TenancyConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.free_grant_tokens, 1_000_000);
        assert_ne!(config.process_id, TenancyConfig::default().process_id);
    }
}
