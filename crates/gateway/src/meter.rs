//! Billing a tenant's request as its events pass through on their way to the client.
//!
//! Before the backend is asked anything, [`preadmit`] refuses a tenant that cannot pay even for
//! the smallest request of this prompt and counts the request against its RPM windows (402,
//! 403, 429), so an unpaying or over-limit tenant costs no queueing, tokenizing or upstream
//! call. Then the backend's events drive the ledger (see `tenancy`'s crate docs for the
//! protocol):
//! - `Admitted { prompt_tokens, max_tokens }`: count the worst case against the key's and the
//!   tenant's TPM windows, then reserve it (402/429/403 before anything is delivered);
//! - `Text { tokens }` of a stream: before the chunk is sent, persist a progress mark when the
//!   last one no longer covers it (at most [`tenancy::PROGRESS_INTERVAL_TOKENS`] ahead of what
//!   was sent), so a crash bills at most K tokens more than the client received;
//! - `Finished { usage }`: settle exactly the reported usage, then correct the TPM window.
//!
//! If the request ends any other way (the client disconnects, the backend fails, the stream is
//! dropped), dropping the [`Meter`] settles what was *delivered*: the prompt and the completion
//! tokens already sent. A non-streamed request delivers its completion only at the end. One
//! exception: a backend that fails before delivering anything after an estimated admission
//! (`exact: false`: an upstream server that refused or could not be reached) did no billable
//! work for us, so its reservation is released.
//! Settlements spawned on drop are tracked, so a draining server waits for them.
//!
//! Requests with the admin key are not metered (no tenant pays for them).

use backend::{Event, EventStream, Usage};
use futures::StreamExt;
use tenancy::{Admission, Counted, Principal, ProgressMarks, ReserveRequest, Tenancy, TokenUsage};
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

/// Pre-admission: what can refuse a tenant's request before its backend does any work for it.
/// A tenant that cannot pay for the smallest request of this prompt (`min_prompt_tokens`, a
/// lower bound derived from its bytes, and one completion token) gets 402 (403 when its free
/// grant is used up and it is free-tier only); otherwise the request is counted against the
/// key's and the tenant's RPM (429 when over, or when a TPM window is already full). A request
/// refused here does not count toward RPM; one counted here does, whatever happens to it later.
///
/// This is the seam a serving layer in front of the backends takes over: call it once per
/// request, before `Backend::generate`, and hand what it returns to the request's [`Meter`].
pub async fn preadmit(
    tenancy: &Tenancy,
    principal: &Principal,
    model: &str,
    min_prompt_tokens: u32,
) -> Result<Counted, ApiError> {
    tenancy
        .ledger
        .check_affordable(&principal.tenant, model, i64::from(min_prompt_tokens))
        .await
        .map_err(ApiError::from_tenancy)?;
    tenancy
        .limits
        .admit_request(Some(&principal.key), &principal.tenant)
        .await
        .map_err(ApiError::from_tenancy)
}

/// The ledger side of one tenant request.
pub struct Meter {
    tenancy: Tenancy,
    principal: Box<Principal>,
    /// The request's place in its RPM windows, from [`preadmit`].
    counted: Counted,
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
    /// Whether `prompt_tokens` is the backend's count rather than an upper-bound estimate.
    exact: bool,
}

/// What a meter needs to know about its request.
pub struct MeterSpec {
    pub principal: Box<Principal>,
    /// What [`preadmit`] returned for the request.
    pub counted: Counted,
    pub model: String,
    pub request_id: String,
    pub streaming: bool,
}

impl Meter {
    pub fn new(tenancy: Tenancy, settlements: TaskTracker, spec: MeterSpec) -> Self {
        Self {
            tenancy,
            principal: spec.principal,
            counted: spec.counted,
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

    /// TPM and reservation for the request's worst case.
    async fn admit(
        &mut self,
        prompt_tokens: u32,
        max_tokens: u32,
        exact: bool,
    ) -> Result<(), ApiError> {
        if self.open.is_some() {
            return Ok(());
        }
        let prompt_tokens = i64::from(prompt_tokens);
        let max_tokens = i64::from(max_tokens);
        let admission = self
            .tenancy
            .limits
            .admit_tokens(&self.counted, prompt_tokens + max_tokens)
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
            exact,
        });
        Ok(())
    }

    /// The backend failed. After an estimated admission with nothing delivered (an upstream
    /// server that refused or could not be reached), nothing was done that the tenant should
    /// pay for: the reservation is released now.
    async fn backend_failed(&mut self) {
        let refused = self
            .open
            .as_ref()
            .is_some_and(|open| !open.exact && self.delivered == 0);
        if !refused || self.settled {
            return;
        }
        // Also what the drop settles, should this settlement fail.
        self.final_usage = Some(TokenUsage::default());
        let result = settle(
            &self.tenancy,
            &self.request_id,
            self.open.as_ref(),
            TokenUsage::default(),
        )
        .await;
        self.settled = result.is_ok();
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
    /// An event already read and billed, handed out again by the next [`Metered::next`].
    unread: Option<Event>,
}

impl Metered {
    /// `meter` is `None` for requests that nobody pays for (the admin key).
    pub fn new(events: EventStream, meter: Option<Meter>, prompt_param: &'static str) -> Self {
        Self {
            events,
            meter,
            prompt_param,
            unread: None,
        }
    }

    /// Puts back an event [`Metered::next`] returned (its ledger step is not repeated).
    pub fn unread(&mut self, event: Event) {
        self.unread = Some(event);
    }

    /// The next event, or `None` when the backend's stream ended.
    pub async fn next(&mut self) -> Option<Result<Event, ApiError>> {
        if let Some(event) = self.unread.take() {
            return Some(Ok(event));
        }
        let event = match self.events.next().await? {
            Ok(event) => event,
            Err(err) => {
                if let Some(meter) = &mut self.meter {
                    meter.backend_failed().await;
                }
                return Some(Err(ApiError::from_backend(err, self.prompt_param)));
            }
        };
        if let Some(meter) = &mut self.meter {
            let billed = match &event {
                Event::Queued { .. } => Ok(()),
                Event::Admitted {
                    prompt_tokens,
                    max_tokens,
                    exact,
                } => meter.admit(*prompt_tokens, *max_tokens, *exact).await,
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
