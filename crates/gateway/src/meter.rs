//! Billing a tenant's request as its events pass through on their way to the client.
//!
//! The backend's events drive the ledger (see `tenancy`'s crate docs for the protocol):
//! - `Admitted { prompt_tokens, max_tokens }`: count the request against the key's and the
//!   tenant's RPM/TPM windows with its worst case, then reserve that worst case (402/429/403
//!   before anything is delivered);
//! - `Text { tokens }` of a stream: before the chunk is sent, persist a progress mark when the
//!   last one no longer covers it (at most [`tenancy::PROGRESS_INTERVAL_TOKENS`] ahead of what
//!   was sent), so a crash bills at most K tokens more than the client received;
//! - `Finished { usage }`: settle exactly the reported usage, then correct the TPM window.
//!
//! If the request ends any other way (the client disconnects, the backend fails, the stream is
//! dropped), dropping the [`Meter`] settles what was *delivered*: the prompt and the completion
//! tokens already sent. A non-streamed request delivers its completion only at the end.
//! Settlements spawned on drop are tracked, so a draining server waits for them.
//!
//! Requests with the admin key are not metered (no tenant pays for them).

use backend::{Event, EventStream, Usage};
use futures::StreamExt;
use tenancy::{Admission, Principal, ProgressMarks, ReserveRequest, Tenancy, TokenUsage};
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

/// The ledger side of one tenant request.
pub struct Meter {
    tenancy: Tenancy,
    principal: Box<Principal>,
    model: String,
    request_id: String,
    streaming: bool,
    settlements: TaskTracker,
    /// Set once admitted and reserved.
    open: Option<Open>,
    marks: ProgressMarks,
    /// Completion tokens sent to the client so far.
    delivered: i64,
    /// The backend's final usage, once it reported one.
    final_usage: Option<TokenUsage>,
    settled: bool,
}

struct Open {
    admission: Admission,
    prompt_tokens: i64,
}

/// What a meter needs to know about its request.
pub struct MeterSpec {
    pub principal: Box<Principal>,
    pub model: String,
    pub request_id: String,
    pub streaming: bool,
}

impl Meter {
    pub fn new(tenancy: Tenancy, settlements: TaskTracker, spec: MeterSpec) -> Self {
        Self {
            tenancy,
            principal: spec.principal,
            model: spec.model,
            request_id: spec.request_id,
            streaming: spec.streaming,
            settlements,
            open: None,
            marks: ProgressMarks::new(),
            delivered: 0,
            final_usage: None,
            settled: false,
        }
    }

    /// Rate limits and reservation for the request's worst case.
    async fn admit(&mut self, prompt_tokens: u32, max_tokens: u32) -> Result<(), ApiError> {
        if self.open.is_some() {
            return Ok(());
        }
        let prompt_tokens = i64::from(prompt_tokens);
        let max_tokens = i64::from(max_tokens);
        let admission = self
            .tenancy
            .limits
            .admit(
                Some(&self.principal.key),
                &self.principal.tenant,
                prompt_tokens + max_tokens,
            )
            .await
            .map_err(ApiError::from_tenancy)?;
        let request = ReserveRequest {
            request_id: self.request_id.clone(),
            tenant_id: self.principal.tenant.id.clone(),
            key_id: Some(self.principal.key.id.clone()),
            served_model: self.model.clone(),
            prompt_tokens,
            max_completion_tokens: max_tokens,
        };
        if let Err(err) = self.tenancy.ledger.reserve(&request).await {
            // Not admitted after all: give the window its tokens back.
            if let Err(undo) = self.tenancy.limits.correct(&admission, 0).await {
                tracing::warn!(error = %undo, "could not return a refused request's tokens to its TPM window");
            }
            return Err(ApiError::from_tenancy(err));
        }
        self.open = Some(Open {
            admission,
            prompt_tokens,
        });
        Ok(())
    }

    /// Called before `tokens` more completion tokens are sent.
    async fn before_send(&mut self, tokens: u32) -> Result<(), ApiError> {
        let Some(open) = &self.open else {
            return Ok(());
        };
        if !self.streaming {
            return Ok(());
        }
        let tokens = i64::from(tokens);
        if let Some(mark) = self.marks.before_send(self.delivered, tokens) {
            let progress = TokenUsage {
                prompt_tokens: open.prompt_tokens,
                completion_tokens: mark,
                cached_tokens: 0,
            };
            self.tenancy
                .ledger
                .progress(&self.request_id, progress)
                .await
                .map_err(|err| {
                    tracing::error!(id = %self.request_id, error = %err, "cannot record stream progress; ending the stream");
                    ApiError::from_tenancy(err)
                })?;
        }
        self.delivered += tokens;
        Ok(())
    }

    /// Settles the backend's reported usage.
    async fn finish(&mut self, usage: Usage) -> Result<(), ApiError> {
        if self.open.is_none() {
            return Ok(());
        }
        let usage = TokenUsage {
            prompt_tokens: i64::from(usage.prompt_tokens),
            completion_tokens: i64::from(usage.completion_tokens),
            cached_tokens: i64::from(usage.cached_tokens),
        };
        self.final_usage = Some(usage);
        let result = settle(&self.tenancy, &self.request_id, self.open.as_ref(), usage).await;
        self.settled = result.is_ok();
        result
    }

    /// What the client has received, for a request that ends without a final usage.
    fn delivered_usage(&self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.open.as_ref().map_or(0, |o| o.prompt_tokens),
            completion_tokens: self.delivered,
            cached_tokens: 0,
        }
    }
}

async fn settle(
    tenancy: &Tenancy,
    request_id: &str,
    open: Option<&Open>,
    usage: TokenUsage,
) -> Result<(), ApiError> {
    let settlement = tenancy
        .ledger
        .settle(request_id, usage)
        .await
        .map_err(|err| {
            tracing::error!(id = %request_id, error = %err, "settlement failed; recovery will settle from the last progress mark");
            ApiError::from_tenancy(err)
        })?;
    if let Some(open) = open {
        if let Err(err) = tenancy
            .limits
            .correct(&open.admission, settlement.billed.total())
            .await
        {
            tracing::warn!(id = %request_id, error = %err, "could not correct the TPM window");
        }
    }
    Ok(())
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.settled || self.open.is_none() {
            return;
        }
        let usage = self.final_usage.unwrap_or_else(|| self.delivered_usage());
        let tenancy = self.tenancy.clone();
        let request_id = std::mem::take(&mut self.request_id);
        let open = self.open.take();
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(id = %request_id, "no runtime to settle a dropped request; recovery will settle it");
            return;
        }
        tracing::debug!(id = %request_id, ?usage, "settling an interrupted request");
        self.settlements.spawn(async move {
            let _ = settle(&tenancy, &request_id, open.as_ref(), usage).await;
        });
    }
}

/// A backend's events with the request's billing applied in order: each event is yielded only
/// after its ledger step succeeded. Errors come out in the API's shape.
pub struct Metered {
    events: EventStream,
    meter: Option<Meter>,
    prompt_param: &'static str,
}

impl Metered {
    /// `meter` is `None` for requests that nobody pays for (the admin key).
    pub fn new(events: EventStream, meter: Option<Meter>, prompt_param: &'static str) -> Self {
        Self {
            events,
            meter,
            prompt_param,
        }
    }

    /// The next event, or `None` when the backend's stream ended.
    pub async fn next(&mut self) -> Option<Result<Event, ApiError>> {
        let event = match self.events.next().await? {
            Ok(event) => event,
            Err(err) => return Some(Err(ApiError::from_backend(err, self.prompt_param))),
        };
        if let Some(meter) = &mut self.meter {
            let billed = match &event {
                Event::Queued { .. } => Ok(()),
                Event::Admitted {
                    prompt_tokens,
                    max_tokens,
                    ..
                } => meter.admit(*prompt_tokens, *max_tokens).await,
                Event::Text { tokens, .. } => meter.before_send(*tokens).await,
                Event::Finished { usage, .. } => meter.finish(*usage).await,
            };
            if let Err(err) = billed {
                return Some(Err(err));
            }
        }
        Some(Ok(event))
    }

    pub fn prompt_param(&self) -> &'static str {
        self.prompt_param
    }
}
