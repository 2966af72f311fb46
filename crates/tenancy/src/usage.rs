//! What a tenant sees of itself: its account and its usage.

use std::sync::Arc;

use store::{Store, Timestamp, UsageGroup, UsageRow};

use crate::error::{Error, Result};

/// A tenant's account at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub tenant_id: String,
    pub name: String,
    pub grant_tokens_total: i64,
    /// Free tokens not yet consumed (including those held by running requests).
    pub grant_tokens_left: i64,
    pub grant_tokens_held: i64,
    /// Paid balance in micro-units.
    pub balance: i64,
    pub amount_held: i64,
    pub free_tier_only: bool,
    pub disabled: bool,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
}

/// A usage report's range and grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageQuery {
    pub start: Timestamp,
    pub end: Timestamp,
    pub group_by: UsageGroup,
}

#[derive(Clone)]
pub struct UsageReports {
    store: Arc<dyn Store>,
}

impl UsageReports {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub async fn account(&self, tenant_id: &str) -> Result<Account> {
        let t = self.store.tenant(tenant_id).await?;
        Ok(Account {
            grant_tokens_total: t.balances.grant_tokens_total,
            grant_tokens_left: t.balances.grant_tokens_left(),
            grant_tokens_held: t.balances.grant_tokens_held,
            balance: t.balances.balance,
            amount_held: t.balances.amount_held,
            tenant_id: t.id,
            name: t.name,
            free_tier_only: t.free_tier_only,
            disabled: t.disabled,
            rpm: t.rpm,
            tpm: t.tpm,
        })
    }

    /// The tenant's tokens and cost in `[start, end)`, by model, UTC day or key. Only this
    /// tenant's requests are ever counted.
    pub async fn usage(&self, tenant_id: &str, query: &UsageQuery) -> Result<Vec<UsageRow>> {
        if query.end <= query.start {
            return Err(Error::invalid("end", "must be after start"));
        }
        Ok(self
            .store
            .usage(tenant_id, query.start, query.end, query.group_by)
            .await?)
    }
}
