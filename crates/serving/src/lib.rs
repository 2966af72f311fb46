//! The one serving path below the wire. Every API that generates (chat and text completions
//! today; Responses, Messages, MCP tool calls and batches later) hands a parsed
//! [`GenerateRequest`] to [`Serving::serve`] and renders the [`Served`] events it gets back;
//! the wire layer only parses, calls this, and maps [`ServeError`]s to its own error shapes.
//! This crate knows no HTTP.
//!
//! [`Serving::serve`], in order, before the backend is asked anything:
//! 1. the model: the tenant's allow-list (403), then a backend or deployment of that name
//!    ([`Catalog`], 404);
//! 2. the request's worst case from its bytes ([`Bound`]): a prompt whose bytes alone cannot
//!    fit the context is refused;
//! 3. for a tenant: a balance check of that worst case against the account as authenticated
//!    (402, or 403 for a free-tier-only tenant whose grant is used up), then the money that
//!    worst case would hold against the key's and the tenant's spend budgets for the period
//!    (402 `budget_exceeded`; see `tenancy::Budgets`), then the request
//!    counted against the key's and the tenant's RPM (429; also when a TPM window is already
//!    full), then the worst case reserved in the ledger (402 when a concurrent request took
//!    the balance first). TPM counts the worst case once the backend has counted the prompt
//!    (a bytes bound would refuse small TPM limits for nothing).
//!
//! Only then may the request queue, start a replica or reach an upstream server: a tenant who
//! cannot pay or is over a limit costs no backend any work, and gets its refusal before any
//! response has started. A request refused in step 1–3 does not count toward RPM, except one
//! refused by the reservation itself (it was counted just before); one counted counts whatever
//! happens to it later (a full queue, a queue timeout). The hold then follows the request
//! (see [`meter`](crate::meter)): resized when the backend counted the prompt, settled exactly
//! once, and given back whole when the request leaves the queue without running.
//!
//! Requests with the admin key (`payer: None`) are neither limited nor metered.
//!
//! A batch line (`GenerateRequest::priority` = `Priority::Batch`) takes the same path but is
//! priced and reported as `batch/<model>` (the batch price, see `tenancy::PriceBook::rates`)
//! and is not counted against the interactive RPM/TPM windows: a batch's own limit is how many
//! of its lines run at once.

mod bound;
mod catalog;
mod embed;
mod error;
mod logs;
mod meter;
mod running;
mod served;
mod transcribe;

use std::sync::Arc;

use backend::{Backend, GenerateRequest, Priority};
use tenancy::{Counted, Principal, ReserveRequest, Tenancy};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use bound::{Bound, MAX_BYTES_PER_TOKEN};
pub use catalog::Target;
pub use catalog::{Catalog, Private};
pub use embed::{RerankMethod, RerankRequest, Reranked};
pub use error::ServeError;
pub use logs::{LogWriter, RequestLogs, StatusOf};
pub use meter::Delivery;
pub use served::{Served, Withdrawn};
pub use transcribe::{Transcribed, TranscriptionJob};

use logs::Trail;
use meter::{Meter, Reserved};
use running::Running;

/// The serving layer: the served models, the tenancy services and the settlements in flight.
/// Cheap to clone.
#[derive(Clone)]
pub struct Serving {
    catalog: Catalog,
    tenancy: Tenancy,
    settlements: TaskTracker,
    /// Tenant requests in flight here, to end a deleted tenant's.
    running: Running,
    /// Where tenant requests are logged, if anywhere.
    logs: Option<RequestLogs>,
}

impl Serving {
    /// `settlements`: where settlements of interrupted requests run; a draining server waits
    /// for them.
    pub fn new(catalog: Catalog, tenancy: Tenancy, settlements: TaskTracker) -> Self {
        Self {
            catalog,
            tenancy,
            settlements,
            running: Running::default(),
            logs: None,
        }
    }

    /// Logs every tenant request served from now on to `logs`.
    pub fn with_logs(mut self, logs: RequestLogs) -> Self {
        self.logs = Some(logs);
        self
    }

    pub fn logs(&self) -> Option<&RequestLogs> {
        self.logs.as_ref()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn tenancy(&self) -> &Tenancy {
        &self.tenancy
    }

    /// Admits `request` for `payer` (`None`: the admin, not metered) and starts it on its
    /// model's backend. See the crate docs for the order of the checks.
    pub async fn serve(
        &self,
        payer: Option<&Principal>,
        request: GenerateRequest,
        delivery: Delivery,
    ) -> Result<Served, ServeError> {
        let mut trail = self.trail(payer, &request.request_id, &request.model);
        let result = self
            .serve_logged(payer, request, delivery, &mut trail)
            .await;
        logs::refused(trail, &result);
        result
    }

    /// A tenant request's request-log row in the making (`None`: not logged).
    pub(crate) fn trail(
        &self,
        payer: Option<&Principal>,
        request_id: &str,
        model: &str,
    ) -> Option<Trail> {
        match (payer, &self.logs) {
            (Some(p), Some(logs)) => Some(Trail::new(
                logs,
                (request_id, &p.tenant.id, &p.key.prefix),
                model,
            )),
            _ => None,
        }
    }

    /// [`Serving::serve`]; `trail` is taken by the meter once there is one, and left for the
    /// caller to log a refusal otherwise.
    async fn serve_logged(
        &self,
        payer: Option<&Principal>,
        mut request: GenerateRequest,
        delivery: Delivery,
        trail: &mut Option<Trail>,
    ) -> Result<Served, ServeError> {
        let (name, target) = self.target_for(payer, &request.model)?;
        request.model = name;
        let (backend, route) = match target {
            Target::Backend(backend) => (backend, None),
            Target::Group(route) => (Arc::new(route.clone()) as Arc<dyn Backend>, Some(route)),
        };
        let info = backend.info();
        embed::require_generation(&info)?;
        let bound = Bound::of(&request, info.context_length)?;
        // Registered before the reservation: a request admitted while its tenant is being
        // deleted (disabled just after this request's reservation) is ended with the others.
        let registration = payer.map(|p| self.running.register(&p.tenant.id, &request.request_id));
        let batch = request.priority == Priority::Batch;
        let priced_as = if batch {
            tenancy::batch_model(&request.model)
        } else {
            request.model.clone()
        };
        // The request's span (the gateway's): admission, queue, generation and settlement
        // are its children in a trace.
        let span = tracing::Span::current();
        let mut meter = match payer {
            Some(principal) => Some(
                self.admit(
                    principal,
                    (&request.request_id, &priced_as),
                    (bound.prompt, bound.completion),
                    (delivery, batch),
                )
                .await?,
            ),
            None => None,
        };
        if let (Some(meter), Some(trail)) = (&mut meter, trail.take()) {
            meter.set_trail(trail);
        }
        let generated = match route {
            Some(route) => route
                .generate_reported(request)
                .await
                .map(|(events, report)| {
                    if let Some(trail) = meter.as_mut().and_then(Meter::trail) {
                        trail.set_report(report);
                    }
                    events
                }),
            None => backend.generate(request).await,
        };
        match generated {
            Ok(events) => Ok(Served::new(events, meter, registration, span)),
            Err(err) => {
                let err = ServeError::Backend(err);
                if let Some(meter) = &mut meter {
                    if let Some(trail) = meter.trail() {
                        trail.fail(&err);
                    }
                    meter.release().await;
                }
                Err(err)
            }
        }
    }

    /// Ends every request of `tenant_id` running in this process (its tenant is being
    /// deleted): each one's backend stream is dropped (it leaves its queue or frees its slot)
    /// and its meter settles what was delivered, whether or not its client is reading; a
    /// reader gets a `PermissionDenied` refusal. Returns their request ids. Call it after the
    /// tenant is disabled, so no new request of it is admitted.
    pub fn end_tenant(&self, tenant_id: &str) -> Vec<String> {
        self.running.end_tenant(tenant_id)
    }

    /// A batch on `model` has `lines` left to finish by `deadline` (0: done): tells the
    /// deployment serving it, whose autoscaler may add replicas to meet the deadline, and
    /// returns how many lines the batch may keep in flight there. `None` when `model` is not
    /// a deployment of this process (an upstream server, a group, a cluster's remote node):
    /// the batch keeps its configured concurrency.
    pub async fn batch_backlog(
        &self,
        model: &str,
        batch: &str,
        lines: usize,
        deadline: std::time::SystemTime,
    ) -> Option<usize> {
        let name = self.catalog.canonical(model);
        let deployment = self.catalog.plane()?.get(&name)?;
        deployment.batch_backlog(batch, lines, deadline).await.ok()
    }

    /// The tokens `request`'s prompt would have on its model, counted by its backend without
    /// generating. Checked like a generation (allow-list, model, and for a tenant its RPM: a
    /// count costs tokenizer time) but not metered: nothing is reserved or charged.
    pub async fn count_prompt_tokens(
        &self,
        payer: Option<&Principal>,
        request: &GenerateRequest,
    ) -> Result<u32, ServeError> {
        let backend = self.backend_for(payer, &request.model)?;
        let info = backend.info();
        embed::require_generation(&info)?;
        Bound::of(request, info.context_length)?;
        if let Some(principal) = payer {
            self.tenancy
                .limits
                .admit_request(Some(&principal.key), &principal.tenant)
                .await?;
        }
        backend
            .count_prompt_tokens(request)
            .await
            .map_err(ServeError::Backend)
    }

    /// The backend serving `model`, if `payer`'s key may use it (allow-list, then the name).
    fn backend_for(
        &self,
        payer: Option<&Principal>,
        model: &str,
    ) -> Result<Arc<dyn Backend>, ServeError> {
        Ok(self.target_for(payer, model)?.1.backend())
    }

    /// The name `model` stands for (an alias read as its group's name) and what serves it,
    /// if `payer`'s key may use it: the allow-list may name the alias or the group.
    fn target_for(
        &self,
        payer: Option<&Principal>,
        model: &str,
    ) -> Result<(String, Target), ServeError> {
        let name = self.catalog.canonical(model);
        let tenant = payer.map(|p| p.tenant.id.as_str());
        let not_found = || ServeError::ModelNotFound {
            model: model.to_owned(),
            available: self.catalog.names_for(tenant),
        };
        // Another tenant's private model does not exist for this one.
        let private = self.catalog.private(&name);
        if private
            .as_ref()
            .is_some_and(|p| tenant.is_some_and(|t| t != p.tenant_id))
        {
            return Err(not_found());
        }
        if let Some(principal) = payer {
            if let Err(err) = principal.require_model(model) {
                // An alias's group, or a fine-tuned model's base, may be what the key names.
                let base_allowed = private
                    .as_ref()
                    .is_some_and(|p| principal.require_model(&p.base).is_ok());
                if !base_allowed && (name == model || principal.require_model(&name).is_err()) {
                    return Err(err.into());
                }
            }
        }
        let target = self.catalog.target(&name).ok_or_else(not_found)?;
        Ok((name, target))
    }

    /// Steps 3 of the crate docs: balance, RPM, TPM, reservation of the bound (prompt and
    /// completion tokens) of the request `(request id, model it is priced as)`; a batch line
    /// skips the RPM/TPM windows.
    async fn admit(
        &self,
        principal: &Principal,
        (request_id, model): (&str, &str),
        (prompt, completion): (u32, u32),
        (delivery, batch): (Delivery, bool),
    ) -> Result<Meter, ServeError> {
        // The request's span: the admission's parent, and the settlement's.
        let span = tracing::Span::current();
        let admission = tracing::info_span!("admission", model = %model);
        let counted = self
            .hold(principal, (request_id, model), (prompt, completion), batch)
            .instrument(admission)
            .await?;
        Ok(Meter::new(
            self.tenancy.clone(),
            self.settlements.clone(),
            Reserved {
                request_id: request_id.to_owned(),
                key_id: principal.key.id.clone(),
                span,
                delivery,
                counted,
                prompt_tokens: i64::from(prompt),
                completion_tokens: i64::from(completion),
            },
        ))
    }

    /// [`Serving::admit`]'s checks and the reservation; the request's place in the RPM windows.
    async fn hold(
        &self,
        principal: &Principal,
        (request_id, model): (&str, &str),
        (prompt, completion): (u32, u32),
        batch: bool,
    ) -> Result<Counted, ServeError> {
        let (prompt, completion) = (i64::from(prompt), i64::from(completion));
        let tenancy = &self.tenancy;
        let worst_amount = tenancy
            .ledger
            .check_affordable(&principal.tenant, model, prompt, completion)
            .await?;
        // Held until the reservation is made, so this process's requests for the same budget
        // see each other's holds.
        let permit = tenancy.budgets.admit(principal, worst_amount).await?;
        let counted = if batch {
            Counted::outside_windows()
        } else {
            tenancy
                .limits
                .admit_request(Some(&principal.key), &principal.tenant)
                .await?
        };
        let reserve = ReserveRequest {
            request_id: request_id.to_owned(),
            tenant_id: principal.tenant.id.clone(),
            key_id: Some(principal.key.id.clone()),
            served_model: model.to_owned(),
            prompt_tokens: prompt,
            max_completion_tokens: completion,
        };
        tenancy.ledger.reserve(&reserve).await?;
        drop(permit);
        Ok(counted)
    }
}
