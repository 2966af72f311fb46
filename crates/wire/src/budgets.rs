//! Budgets' JSON: the `budget` field the key and tenant routes take
//! (`{"amount", "period": "day" | "month", "alert_at"?: [fractions], "webhook_url"?}`, `null`
//! removes one on the update routes), the views of budgets with their spend and of alert
//! events, and the body of an alert webhook.

use chrono::SecondsFormat;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tenancy::{BudgetEvent, BudgetRecord, BudgetSpec, BudgetStatus, Period, Timestamp};

use crate::error::{ApiError, Result};
use crate::validate::{parse_object, Fields};

/// The largest budget (micro-units per period).
const MAX_AMOUNT: i64 = 1_000_000_000_000_000;

fn time(t: &Timestamp) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `budget` field of a body: absent (`None`), `null` (`Some(None)`: remove it) or a budget.
pub fn budget_field(body: &[u8]) -> Result<Option<Option<BudgetSpec>>> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    if fields.is_null("budget") {
        return Ok(Some(None));
    }
    match fields.object("budget")? {
        None => Ok(None),
        Some(budget) => Ok(Some(Some(spec(budget)?))),
    }
}

fn spec(map: &Map<String, Value>) -> Result<BudgetSpec> {
    let fields = Fields::nested(map, "budget".to_owned());
    fields.deny_unknown(&["amount", "period", "alert_at", "webhook_url"])?;
    let amount = fields.integer("amount", 1, MAX_AMOUNT)?.ok_or_else(|| {
        ApiError::invalid(
            "budget.amount",
            "Missing required parameter: 'budget.amount' (micro-units per period).",
        )
    })?;
    let period = Period::parse(fields.string("period")?.ok_or_else(|| {
        ApiError::invalid(
            "budget.period",
            "Missing required parameter: 'budget.period' (\"day\" or \"month\").",
        )
    })?)
    .map_err(ApiError::from_tenancy)?;
    let mut alert_at_ppm = Vec::new();
    for (i, item) in fields.array("alert_at")?.into_iter().flatten().enumerate() {
        let param = format!("budget.alert_at[{i}]");
        let fraction = item.as_f64().filter(|f| *f > 0.0 && *f <= 1.0).ok_or_else(|| {
            ApiError::invalid(
                param.clone(),
                format!("Invalid value for '{param}': expected a fraction of the amount above 0 and at most 1, but got {item}."),
            )
        })?;
        // In (0, 1], so the product is in (0, 1e6] and fits.
        alert_at_ppm.push(((fraction * 1e6).round() as i64).max(1));
    }
    Ok(BudgetSpec {
        amount,
        period,
        alert_at_ppm,
        webhook_url: fields.string("webhook_url")?.map(str::to_owned),
    })
}

fn fraction(ppm: i64) -> f64 {
    ppm as f64 / 1e6
}

/// A budget as the routes show it.
#[derive(Debug, Serialize)]
pub struct BudgetView {
    pub amount: i64,
    pub period: String,
    pub alert_at: Vec<f64>,
    pub webhook_url: Option<String>,
}

impl From<&BudgetRecord> for BudgetView {
    fn from(b: &BudgetRecord) -> Self {
        Self {
            amount: b.amount,
            period: b.period.clone(),
            alert_at: b.alert_at_ppm.iter().copied().map(fraction).collect(),
            webhook_url: b.webhook_url.clone(),
        }
    }
}

/// What a route that set a budget answers with besides its own object: the budget, and the
/// tenant's webhook signing secret when it was created by this call (shown once).
#[derive(Debug, Serialize)]
pub struct WithBudget<T: Serialize> {
    #[serde(flatten)]
    pub inner: T,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Option<BudgetView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// `GET /v1/budget`: each budget of the tenant and its keys, with this period's spend.
#[derive(Debug, Serialize)]
pub struct BudgetStatusView {
    /// `key:ID` or `tenant:ID`.
    pub subject: String,
    #[serde(flatten)]
    pub budget: BudgetView,
    pub period_start: String,
    pub resets_at: String,
    /// Charged by requests settled this period.
    pub spent: i64,
    /// Held by requests still running.
    pub held: i64,
}

impl From<BudgetStatus> for BudgetStatusView {
    fn from(s: BudgetStatus) -> Self {
        Self {
            subject: s.budget.subject.clone(),
            budget: BudgetView::from(&s.budget),
            period_start: time(&s.period_start),
            resets_at: time(&s.resets_at),
            spent: s.spent.settled,
            held: s.spent.held,
        }
    }
}

/// One alert event (`GET /v1/budget/events`).
#[derive(Debug, Serialize)]
pub struct BudgetEventView {
    pub id: String,
    pub object: &'static str,
    pub subject: String,
    pub threshold: f64,
    pub amount: i64,
    pub spent: i64,
    pub period_start: String,
    pub created_at: String,
    /// `none` (no webhook), `pending`, `delivered` or `failed` (attempts used up).
    pub delivery: &'static str,
    pub attempts: i64,
    pub delivered_at: Option<String>,
    pub last_error: Option<String>,
}

impl From<BudgetEvent> for BudgetEventView {
    fn from(e: BudgetEvent) -> Self {
        let delivery = match (&e.webhook_url, &e.delivered_at) {
            (None, _) => "none",
            (Some(_), Some(_)) => "delivered",
            (Some(_), None) if e.attempts >= tenancy::MAX_DELIVERY_ATTEMPTS => "failed",
            (Some(_), None) => "pending",
        };
        Self {
            object: "budget.event",
            subject: e.subject,
            threshold: fraction(e.threshold_ppm),
            amount: e.amount,
            spent: e.spent,
            period_start: time(&e.period_start),
            created_at: time(&e.created_at),
            delivery,
            attempts: e.attempts,
            delivered_at: e.delivered_at.as_ref().map(time),
            last_error: e.last_error,
            id: e.id,
        }
    }
}

/// The JSON body POSTed to a budget's webhook.
pub fn alert_body(e: &BudgetEvent) -> Value {
    json!({
        "type": "budget.threshold_crossed",
        "id": e.id,
        "tenant_id": e.tenant_id,
        "subject": e.subject,
        "threshold": fraction(e.threshold_ppm),
        "amount": e.amount,
        "spent": e.spent,
        "period_start": time(&e.period_start),
        "created_at": time(&e.created_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_parsed_strictly() {
        let b = budget_field(
            br#"{"budget": {"amount": 5000, "period": "day", "alert_at": [0.5, 0.8], "webhook_url": "https://x.example/h"}}"#,
        )
        .expect("valid")
        .expect("present")
        .expect("a budget");
        assert_eq!(b.amount, 5000);
        assert_eq!(b.period, Period::Day);
        assert_eq!(b.alert_at_ppm, vec![500_000, 800_000]);
        assert_eq!(
            budget_field(br#"{"budget": null}"#).expect("valid"),
            Some(None)
        );
        assert_eq!(budget_field(br#"{"name": "x"}"#).expect("valid"), None);
        for (body, param) in [
            (r#"{"budget": {"period": "day"}}"#, "budget.amount"),
            (
                r#"{"budget": {"amount": 0, "period": "day"}}"#,
                "budget.amount",
            ),
            (
                r#"{"budget": {"amount": 1, "period": "week"}}"#,
                "budget.period",
            ),
            (
                r#"{"budget": {"amount": 1, "period": "day", "alert_at": [1.5]}}"#,
                "budget.alert_at[0]",
            ),
            (
                r#"{"budget": {"amount": 1, "period": "day", "alert_at": ["x"]}}"#,
                "budget.alert_at[0]",
            ),
            (
                r#"{"budget": {"amount": 1, "period": "day", "cap": 1}}"#,
                "budget.cap",
            ),
            (r#"{"budget": 5}"#, "budget"),
        ] {
            let err = budget_field(body.as_bytes()).expect_err(body);
            assert_eq!(err.param(), Some(param), "{body}: {err}");
        }
    }
}
