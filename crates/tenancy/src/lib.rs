//! Tenancy and billing: tenants, orgs and scoped API keys, the free token grant, the price
//! book, the reserve-then-settle ledger, RPM/TPM limits and usage reports. On top of
//! [`store::Store`]; knows nothing of HTTP (the gateway maps [`Error::code`] to statuses).
//!
//! One request, in order (the `serving` crate runs this for every API):
//! ```text
//! let principal = tenancy.directory.verify(bearer).await?;          // 401
//! principal.require(Scope::Inference)?; principal.require_model(m)?; // 403
//! // before any work is done for the request (queueing, tokenizing, an upstream call),
//! // with its worst case bounded from its bytes:
//! tenancy.ledger.check_affordable(&principal.tenant, m, prompt_bound, max).await?; // 402 / 403
//! let counted = tenancy.limits.admit_request(Some(&principal.key), &principal.tenant).await?; // 429
//! tenancy.ledger.reserve(&request).await?;                          // 402 / 403
//! // once the backend counted the prompt:
//! tenancy.ledger.resize(id, prompt_tokens, max).await?;             // 402 only if it grows
//! let admission = tenancy.limits.admit_tokens(&counted, prompt_tokens + max).await?; // 429
//! // stream: before each chunk, `if let Some(mark) = marks.before_send(sent, n)
//! //          { tenancy.ledger.progress(id, usage_with(mark)).await? }`, then send it
//! let settlement = tenancy.ledger.settle(id, delivered).await?;     // always, also on cancel
//! tenancy.limits.correct(&admission, settlement.billed.total()).await?;
//! ```

mod budgets;
mod clock;
mod config;
mod deletion;
mod directory;
mod error;
mod keys;
mod ledger;
mod limits;
mod members;
mod prices;
mod progress;
mod responses;
mod sessions;
mod usage;
mod webhook_secrets;

use std::sync::Arc;

pub use budgets::{
    BudgetPermit, BudgetSpec, BudgetStatus, Budgets, Period, Spender, CONFIG_TTL,
    MAX_DELIVERY_ATTEMPTS,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{TenancyConfig, DEFAULT_FREE_GRANT_TOKENS};
pub use directory::{CreatedKey, Directory, KeySpec, TenantSpec};
pub use error::{Error, Result};
pub use keys::{Principal, Scope, PREFIX_LEN, SECRET_PREFIX};
pub use ledger::{Ledger, Recovery, ReserveRequest};
pub use limits::{key_subject, tenant_subject, Admission, Counted, Limiter};
pub use members::{Action, AddedMember, Member, Members, NewMember, Role, INVITE_VALID_FOR};
pub use prices::{
    audio_entry, batch_model, cost, fine_tune_model, PriceBook, BATCH_PREFIX, FINE_TUNE_PREFIX,
    MAX_PER_CALL,
};
pub use progress::{ProgressMarks, PROGRESS_INTERVAL_TOKENS};
pub use responses::{NewResponse, Responses};
pub use sessions::{Session, SignInError, StartedSession, Subject};
pub use store::accounting::{is_audio, is_tool_call, AUDIO_PREFIX, TOOL_CALL_PREFIX};
pub use usage::{Account, UsageQuery, UsageReports};
pub use webhook_secrets::{reseal_webhook_secrets, SecretSeal};

pub use store::{
    removal, ApiKey, Balances, BudgetEvent, BudgetRecord, Debit, LedgerEntry, LedgerKind,
    MemberRecord, Org, Price, PriceRates, Removal, Reservation, ReservationState, SessionRecord,
    Settlement, Spent, Store, StoredResponse, Tenant, TenantPatch, Timestamp, TokenUsage,
    UsageGroup, UsageRow,
};

/// The tenancy services over one store, each cheap to clone.
#[derive(Clone)]
pub struct Tenancy {
    pub directory: Directory,
    pub prices: PriceBook,
    pub ledger: Ledger,
    pub limits: Limiter,
    pub usage: UsageReports,
    /// Stored responses of the Responses API.
    pub responses: Responses,
    /// Console members and sessions.
    pub members: Members,
    /// Spend caps and alerts per key and tenant.
    pub budgets: Budgets,
    store: Arc<dyn Store>,
}

impl Tenancy {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: &TenancyConfig,
    ) -> Result<Self> {
        config.validate()?;
        let prices = PriceBook::new(store.clone(), clock.clone(), config.default_price);
        let directory = Directory::new(store.clone(), clock.clone(), config.free_grant_tokens);
        Ok(Self {
            members: Members::new(store.clone(), clock.clone(), directory.clone()),
            directory,
            ledger: Ledger::new(
                store.clone(),
                clock.clone(),
                prices.clone(),
                &config.process_id,
                config.lease,
            ),
            limits: Limiter::new(store.clone(), clock.clone()),
            budgets: Budgets::new(store.clone(), clock.clone()),
            responses: Responses::new(store.clone(), clock),
            usage: UsageReports::new(store.clone()),
            prices,
            store,
        })
    }

    /// Seals what this service keeps secret at rest (the budget webhooks' signing secrets)
    /// with `seal`, the server's secret key.
    pub fn with_secret_seal(mut self, seal: Arc<dyn SecretSeal>) -> Self {
        self.budgets = self.budgets.with_seal(seal);
        self
    }

    /// Whether the database answers (readiness).
    pub async fn database_reachable(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }
}
