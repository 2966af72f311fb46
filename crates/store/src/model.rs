//! The records the store keeps. Plain data: no policy beyond what the accounting needs.
//!
//! Money is `i64` micro-units of one currency unit; tokens are `i64`; times are UTC.

use chrono::{DateTime, Utc};

/// A point in time, UTC. Rendered as RFC 3339 on the wire.
pub type Timestamp = DateTime<Utc>;

/// A tenant: the unit that is billed and limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
    /// Once the free grant is used up, calls are refused rather than paid from the balance.
    pub free_tier_only: bool,
    pub disabled: bool,
    /// Requests per minute over a sliding 60 s window; `None` is unlimited.
    pub rpm: Option<i64>,
    /// Tokens (input + output) per minute over a sliding 60 s window; `None` is unlimited.
    pub tpm: Option<i64>,
    pub balances: Balances,
    /// When the tenant was deleted: its keys revoked, its data removed, this row and its ledger
    /// kept for accounting. A deleted tenant is also `disabled`.
    pub deleted_at: Option<Timestamp>,
}

/// A tenant's account counters, kept in step with the ledger in the same transaction.
///
/// Invariants (also enforced by the schema): `grant_tokens_used + grant_tokens_held <=
/// grant_tokens_total` and `0 <= amount_held <= balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balances {
    /// Free tokens granted in total.
    pub grant_tokens_total: i64,
    /// Free tokens consumed by settled requests.
    pub grant_tokens_used: i64,
    /// Free tokens held by open reservations.
    pub grant_tokens_held: i64,
    /// Paid balance in micro-units: top-ups minus charges.
    pub balance: i64,
    /// Micro-units held by open reservations.
    pub amount_held: i64,
}

impl Balances {
    /// Free tokens not yet consumed (some may be held).
    pub fn grant_tokens_left(&self) -> i64 {
        self.grant_tokens_total - self.grant_tokens_used
    }

    /// Free tokens a new reservation may hold.
    pub fn grant_tokens_available(&self) -> i64 {
        self.grant_tokens_left() - self.grant_tokens_held
    }

    /// Micro-units a new reservation may hold.
    pub fn amount_available(&self) -> i64 {
        self.balance - self.amount_held
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
    pub free_tier_only: bool,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    /// Recorded as the tenant's `grant` ledger entry; 0 records none.
    pub grant_tokens: i64,
}

/// A partial update of a tenant; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPatch {
    pub free_tier_only: Option<bool>,
    pub disabled: Option<bool>,
    /// `Some(None)` removes the limit.
    pub rpm: Option<Option<i64>>,
    /// `Some(None)` removes the limit.
    pub tpm: Option<Option<i64>>,
}

/// A tenant-owned namespace on the hub. Names are unique across tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: Timestamp,
}

/// An API key as stored: never the secret, only its SHA-256 and a visible prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    /// The first characters of the secret, shown in listings and used to find the key.
    pub prefix: String,
    /// Lower-case hex SHA-256 of the whole secret.
    pub hash: String,
    pub scopes: Vec<String>,
    /// Served model names this key may call; `None` allows all.
    pub models: Option<Vec<String>>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

/// Prices in micro-units per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PriceRates {
    pub input_per_million: i64,
    pub output_per_million: i64,
    pub cached_input_per_million: i64,
}

/// A price-book entry for one served model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub served_model: String,
    pub rates: PriceRates,
    pub updated_at: Timestamp,
}

/// Token counts of one request. `cached_tokens` is the part of `prompt_tokens` served from
/// reused KV (billed at the cached-input price).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
}

impl TokenUsage {
    pub fn total(&self) -> i64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// What a reservation holds or a settlement takes: free-grant tokens and paid micro-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Debit {
    pub grant_tokens: i64,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReservation {
    /// The request's id: the reservation's key and the idempotency key of its ledger entries.
    pub request_id: String,
    pub tenant_id: String,
    pub key_id: Option<String>,
    pub model: String,
    pub prompt_tokens: i64,
    pub max_completion_tokens: i64,
    /// The price when the model has no price-book entry. The entry, read in the reservation's
    /// own transaction, wins; the reservation records the price it used and settlement uses it.
    pub default_rates: PriceRates,
    /// The process that serves the request and renews the lease.
    pub owner: String,
    pub lease_expires_at: Timestamp,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// Holding; the request is running.
    Open,
    /// Closed with a charge (possibly zero tokens of it from the balance).
    Settled,
    /// Closed with nothing delivered: the whole hold went back.
    Released,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Settled => "settled",
            Self::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "settled" => Some(Self::Settled),
            "released" => Some(Self::Released),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub request_id: String,
    pub tenant_id: String,
    pub key_id: Option<String>,
    pub model: String,
    pub prompt_tokens: i64,
    pub max_completion_tokens: i64,
    pub rates: PriceRates,
    pub hold: Debit,
    pub owner: String,
    pub lease_expires_at: Timestamp,
    pub created_at: Timestamp,
    pub state: ReservationState,
    /// Last persisted progress; `None` until the first `record_progress`.
    pub delivered: Option<TokenUsage>,
    /// What was billed, once closed.
    pub billed: Option<TokenUsage>,
    pub charged: Option<Debit>,
    pub settled_at: Option<Timestamp>,
}

impl Reservation {
    /// The settlement of a closed reservation (`None` while it is open).
    pub fn settlement(&self, already_settled: bool) -> Option<Settlement> {
        let (billed, charged) = (self.billed?, self.charged?);
        Some(Settlement {
            request_id: self.request_id.clone(),
            tenant_id: self.tenant_id.clone(),
            billed,
            charged,
            released: Debit {
                grant_tokens: self.hold.grant_tokens - charged.grant_tokens,
                amount: self.hold.amount - charged.amount,
            },
            already_settled,
        })
    }
}

/// The outcome of closing a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub request_id: String,
    pub tenant_id: String,
    pub billed: TokenUsage,
    pub charged: Debit,
    pub released: Debit,
    /// True when the reservation had already been closed: this call changed nothing.
    pub already_settled: bool,
}

/// How a closed reservation's usage is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleWith {
    /// The usage the caller measured.
    Usage(TokenUsage),
    /// The last persisted progress, or nothing when none was recorded.
    Progress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    /// Free tokens granted (`tokens`).
    Grant,
    /// Money added to the balance (`amount`).
    Topup,
    /// A hold taken (`tokens` of grant, `amount` of balance).
    Reserve,
    /// What a settled request consumed out of its hold.
    Charge,
    /// What went back from the hold to the account.
    Release,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Topup => "topup",
            Self::Reserve => "reserve",
            Self::Charge => "charge",
            Self::Release => "release",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "grant" => Some(Self::Grant),
            "topup" => Some(Self::Topup),
            "reserve" => Some(Self::Reserve),
            "charge" => Some(Self::Charge),
            "release" => Some(Self::Release),
            _ => None,
        }
    }
}

/// One append-only ledger row. `tokens` and `amount` are magnitudes (never negative); the kind
/// says which way they move:
///
/// | kind    | grant left | balance   | held              |
/// |---------|------------|-----------|-------------------|
/// | grant   | + tokens   |           |                   |
/// | topup   |            | + amount  |                   |
/// | reserve |            |           | + tokens, + amount |
/// | charge  | − tokens   | − amount  | − tokens, − amount |
/// | release |            |           | − tokens, − amount |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: i64,
    pub tenant_id: String,
    pub kind: LedgerKind,
    pub tokens: i64,
    pub amount: i64,
    pub idempotency_key: String,
    pub created_at: Timestamp,
}

/// Recomputes a tenant's counters from its ledger entries (see [`LedgerEntry`]).
pub fn balances_from_ledger(entries: &[LedgerEntry]) -> Balances {
    let mut b = Balances::default();
    for e in entries {
        match e.kind {
            LedgerKind::Grant => b.grant_tokens_total += e.tokens,
            LedgerKind::Topup => b.balance += e.amount,
            LedgerKind::Reserve => {
                b.grant_tokens_held += e.tokens;
                b.amount_held += e.amount;
            }
            LedgerKind::Charge => {
                b.grant_tokens_used += e.tokens;
                b.balance -= e.amount;
                b.grant_tokens_held -= e.tokens;
                b.amount_held -= e.amount;
            }
            LedgerKind::Release => {
                b.grant_tokens_held -= e.tokens;
                b.amount_held -= e.amount;
            }
        }
    }
    b
}

/// A rate-limit subject (a key or a tenant) and its limits; `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSubject {
    pub subject: String,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
}

/// How usage is grouped in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Model,
    /// UTC calendar day, `YYYY-MM-DD`.
    Day,
    /// Key id (`-` for requests made without a key).
    Key,
}

/// Usage of one group over a time range: closed reservations whose settlement falls in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub group: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    /// Tokens paid by the free grant.
    pub grant_tokens: i64,
    /// Micro-units charged to the balance (tokens and tool calls).
    pub amount: i64,
    /// MCP tool calls that completed (and were charged their price); `requests` and the token
    /// counts leave them out.
    pub tool_calls: i64,
    /// Seconds of audio transcribed (`ceil(ms / 1000)` per request); the token counts leave
    /// them out.
    pub audio_seconds: i64,
}

/// The SQL condition that a reservation is an MCP tool call ([`crate::accounting::is_tool_call`]).
pub(crate) const TOOL_CALL_SQL: &str = "model LIKE 'mcp/%'";

/// The SQL condition that a reservation is a transcription ([`crate::accounting::is_audio`]).
pub(crate) const AUDIO_SQL: &str = "model LIKE 'audio/%'";
