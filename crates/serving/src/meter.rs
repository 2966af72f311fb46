//! The ledger side of one tenant request, from admission to settlement.
//!
//! A meter exists only once its request's worst-case bound is reserved (see `Serving::serve`):
//! before the request may queue, so a hold exists for everything a backend could deliver. Then
//! the backend's events drive it:
//! - `Admitted { prompt_tokens, max_tokens }`: the backend counted the prompt; the reservation
//!   is resized to that worst case (given back at once when smaller; grown, if the account can
//!   pay, when a template added more than the bound allowed), and the worst case is counted
//!   against the key's and the tenant's TPM windows (429 when it does not fit; a window
//!   already full refused the request before it queued);
//! - `Text { tokens }` of a stream: before the chunk is sent, a progress mark is persisted when
//!   the last one no longer covers it (at most [`tenancy::PROGRESS_INTERVAL_TOKENS`] ahead of
//!   what was sent), so a crash bills at most K tokens more than the client received;
//! - `Finished { usage }`: settle exactly the reported usage, then correct the TPM windows.
//!
//! If the request ends any other way, dropping the meter settles what was *delivered*: the
//! prompt (once admitted) and the completion tokens already sent (a non-streamed request
//! delivers its completion only at the end). A request that never got a place to run (refused
//! by the backend, timed out in the queue, its client gone while it waited) delivered nothing
//! and its hold goes back whole; so does one whose backend failed before delivering anything
//! after an estimated admission (`exact: false`: an upstream server that refused or could not
//! be reached). Settlements spawned on drop are tracked, so a draining server waits for them.

use backend::Usage;
use tenancy::{Admission, Counted, ProgressMarks, Settlement, Tenancy, TokenUsage};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::ServeError;
use crate::logs::Trail;

/// How the client receives the completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Chunk by chunk as it is generated: what was sent before a disconnect is billed.
    Stream,
    /// All at once at the end: a client gone before it receives nothing of the completion.
    Whole,
}

pub(crate) struct Meter {
    tenancy: Tenancy,
    settlements: TaskTracker,
    request_id: String,
    key_id: String,
    span: tracing::Span,
    delivery: Delivery,
    /// The request's place in its RPM windows, whose TPM windows it joins once admitted.
    counted: Counted,
    /// Its worst case in the TPM windows, once admitted.
    admission: Option<Admission>,
    /// Prompt and completion tokens the reservation holds for.
    reserved: (i64, i64),
    /// Set once the backend counted the prompt.
    admitted: Option<Admitted>,
    marks: ProgressMarks,
    /// Completion tokens sent to the client so far.
    delivered: i64,
    /// The backend's final usage, once it reported one.
    final_usage: Option<TokenUsage>,
    settled: bool,
    /// Its request-log row, sent once settled.
    trail: Option<Trail>,
}

#[derive(Debug, Clone, Copy)]
struct Admitted {
    prompt_tokens: i64,
    /// Whether `prompt_tokens` is the backend's count rather than an upper-bound estimate.
    exact: bool,
}

/// A request whose bound is reserved, for [`Meter::new`].
pub(crate) struct Reserved {
    pub request_id: String,
    /// The key it came with (its budget's alerts are checked after settlement).
    pub key_id: String,
    /// The span its settlement is a child of (the request's).
    pub span: tracing::Span,
    pub delivery: Delivery,
    pub counted: Counted,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl Meter {
    pub(crate) fn new(tenancy: Tenancy, settlements: TaskTracker, reserved: Reserved) -> Self {
        Self {
            tenancy,
            settlements,
            request_id: reserved.request_id,
            key_id: reserved.key_id,
            span: reserved.span,
            delivery: reserved.delivery,
            counted: reserved.counted,
            admission: None,
            reserved: (reserved.prompt_tokens, reserved.completion_tokens),
            admitted: None,
            marks: ProgressMarks::new(),
            delivered: 0,
            final_usage: None,
            settled: false,
            trail: None,
        }
    }

    /// The backend counted the prompt: the reservation and the TPM windows take this worst
    /// case instead of the bound.
    pub(crate) async fn admitted(
        &mut self,
        prompt_tokens: u32,
        max_tokens: u32,
        exact: bool,
    ) -> Result<(), ServeError> {
        if self.admitted.is_some() {
            return Ok(());
        }
        let worst = (i64::from(prompt_tokens), i64::from(max_tokens));
        if worst != self.reserved {
            self.tenancy
                .ledger
                .resize(&self.request_id, worst.0, worst.1)
                .await?;
            self.reserved = worst;
        }
        let admission = self
            .tenancy
            .limits
            .admit_tokens(&self.counted, worst.0 + worst.1)
            .await?;
        self.admission = Some(admission);
        self.admitted = Some(Admitted {
            prompt_tokens: worst.0,
            exact,
        });
        Ok(())
    }

    /// Logs the request once it is settled.
    pub(crate) fn set_trail(&mut self, trail: Trail) {
        self.trail = Some(trail);
    }

    pub(crate) fn trail(&mut self) -> Option<&mut Trail> {
        self.trail.as_mut()
    }

    /// The request failed with `err`: its row says so.
    pub(crate) fn fail(&mut self, err: &ServeError) {
        if let Some(trail) = &mut self.trail {
            trail.fail(err);
        }
    }

    /// Takes `trail` (a request's row), to send it once settled.
    pub(crate) fn take_trail(&mut self, trail: &mut Option<Trail>) {
        if let Some(trail) = trail.take() {
            self.trail = Some(trail);
        }
    }

    /// The trail's row goes out with `settlement` (or what is known without it).
    fn log(&mut self, settlement: Option<&Settlement>) {
        if let Some(trail) = self.trail.take() {
            trail.finish(settlement);
        }
    }

    /// The backend failed. A request that never got a place to run, whose estimated
    /// admission delivered nothing (an upstream server that refused or could not be reached),
    /// or whose answer was to come whole (its client gets the error and nothing of the
    /// completion: a non-streamed request, a batch line, which then runs again metered under
    /// its next attempt) cost nothing the tenant should pay for: its hold goes back now.
    pub(crate) async fn backend_failed(&mut self) {
        let nothing_done = match self.admitted {
            None => true,
            Some(_) if self.delivery == Delivery::Whole => true,
            Some(admitted) => !admitted.exact && self.delivered == 0,
        };
        if nothing_done {
            self.release().await;
        }
    }

    /// Gives the whole hold back (nothing was delivered).
    pub(crate) async fn release(&mut self) {
        if self.settled {
            return;
        }
        // Also what the drop settles, should this settlement fail.
        self.final_usage = Some(TokenUsage::default());
        let result = settle(
            &self.tenancy,
            (&self.request_id, &self.key_id),
            self.admission.as_ref(),
            TokenUsage::default(),
        )
        .instrument(self.settlement_span())
        .await;
        self.settled = result.is_ok();
        if let Ok(settlement) = &result {
            self.log(Some(settlement));
        }
    }

    /// Called before `tokens` more completion tokens are sent.
    pub(crate) async fn before_send(&mut self, tokens: u32) -> Result<(), ServeError> {
        if self.delivery == Delivery::Whole {
            return Ok(());
        }
        let tokens = i64::from(tokens);
        if let Some(mark) = self.marks.before_send(self.delivered, tokens) {
            let progress = TokenUsage {
                prompt_tokens: self.admitted.map_or(0, |a| a.prompt_tokens),
                completion_tokens: mark,
                cached_tokens: 0,
            };
            self.tenancy
                .ledger
                .progress(&self.request_id, progress)
                .await
                .map_err(|err| {
                    tracing::error!(id = %self.request_id, error = %err, "cannot record stream progress; ending the stream");
                    ServeError::from(err)
                })?;
        }
        self.delivered += tokens;
        Ok(())
    }

    /// Settles a whole answer of `units` prompt units and nothing generated (embeddings,
    /// transcriptions): admitted at that exact count, then settled; a failure marks the row.
    pub(crate) async fn settle_whole(&mut self, units: u32) -> Result<(), ServeError> {
        let settled = match self.admitted(units, 0, true).await {
            Ok(()) => {
                self.finish(Usage {
                    prompt_tokens: units,
                    completion_tokens: 0,
                    cached_tokens: 0,
                })
                .await
            }
            Err(err) => Err(err),
        };
        if let Err(err) = &settled {
            self.fail(err);
        }
        settled
    }

    /// Settles the backend's reported usage.
    pub(crate) async fn finish(&mut self, usage: Usage) -> Result<(), ServeError> {
        let usage = TokenUsage {
            prompt_tokens: i64::from(usage.prompt_tokens),
            completion_tokens: i64::from(usage.completion_tokens),
            cached_tokens: i64::from(usage.cached_tokens),
        };
        self.final_usage = Some(usage);
        let result = settle(
            &self.tenancy,
            (&self.request_id, &self.key_id),
            self.admission.as_ref(),
            usage,
        )
        .instrument(self.settlement_span())
        .await;
        self.settled = result.is_ok();
        match result {
            Ok(settlement) => {
                self.log(Some(&settlement));
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    fn settlement_span(&self) -> tracing::Span {
        tracing::info_span!(parent: &self.span, "settlement", request_id = %self.request_id)
    }

    /// What the client has received, for a request that ends without a final usage.
    fn delivered_usage(&self) -> TokenUsage {
        match self.admitted {
            None => TokenUsage::default(),
            Some(admitted) => TokenUsage {
                prompt_tokens: admitted.prompt_tokens,
                completion_tokens: self.delivered,
                cached_tokens: 0,
            },
        }
    }
}

async fn settle(
    tenancy: &Tenancy,
    (request_id, key_id): (&str, &str),
    admission: Option<&Admission>,
    usage: TokenUsage,
) -> Result<Settlement, ServeError> {
    let settlement = tenancy
        .ledger
        .settle(request_id, usage)
        .await
        .map_err(|err| {
            tracing::error!(id = %request_id, error = %err, "settlement failed; recovery will settle from the last progress mark");
            ServeError::from(err)
        })?;
    if settlement.charged.amount > 0 && !settlement.already_settled {
        // Budget alerts are checked off the request path.
        let (budgets, tenant_id, key_id) = (
            tenancy.budgets.clone(),
            settlement.tenant_id.clone(),
            key_id.to_owned(),
        );
        tokio::spawn(async move {
            if let Err(err) = budgets.after_settle(&tenant_id, Some(&key_id)).await {
                tracing::warn!(tenant = %tenant_id, error = %err, "could not check budget alerts");
            }
        });
    }
    let Some(admission) = admission else {
        return Ok(settlement);
    };
    if let Err(err) = tenancy
        .limits
        .correct(admission, settlement.billed.total())
        .await
    {
        tracing::warn!(id = %request_id, error = %err, "could not correct the TPM window");
    }
    Ok(settlement)
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.settled {
            // Settled, but its row not sent (a settlement that returned an error later).
            self.log(None);
            return;
        }
        let usage = self.final_usage.unwrap_or_else(|| self.delivered_usage());
        let mut trail = self.trail.take();
        if let (Some(trail), None) = (&mut trail, self.final_usage) {
            trail.abandoned();
        }
        let tenancy = self.tenancy.clone();
        let span = self.settlement_span();
        let request_id = std::mem::take(&mut self.request_id);
        let key_id = std::mem::take(&mut self.key_id);
        let admission = self.admission.clone();
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(id = %request_id, "no runtime to settle a dropped request; recovery will settle it");
            return;
        }
        tracing::debug!(id = %request_id, ?usage, "settling an interrupted request");
        self.settlements.spawn(async move {
            let settled = settle(&tenancy, (&request_id, &key_id), admission.as_ref(), usage)
                .instrument(span)
                .await;
            if let Some(trail) = trail {
                trail.finish(settled.as_ref().ok());
            }
        });
    }
}
