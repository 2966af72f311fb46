//! `POST /v1/chat/completions` and `POST /v1/completions`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use backend::{BackendError, Event, TokenLogprob, Usage};
use serving::{Delivery, Served};

use super::RawBody;
use crate::auth::{Caller, Inference};
use crate::error::{ApiError, Result};
use crate::metrics::{self, ModelLabel};
use crate::observe::RequestId;
use crate::sse::{self, UsageOptions};
use crate::wire::chat::{self, Answer, ChatChunks, ChatCompletionView};
use crate::wire::completions::{self, CompletionChunks, CompletionView};
use crate::wire::tools::ToolCallView;
use crate::wire::{unix_now, ResponseMeta, UsageView, ValidRequest};
use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Response {
    let request = chat::parse(&body);
    serve(&state, caller, request_id, request, Endpoint::Chat).await
}

pub async fn completions(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Response {
    let request = completions::parse(&body);
    serve(&state, caller, request_id, request, Endpoint::Completions).await
}

/// The metric label of responses for a model name this server does not serve: labels must
/// not grow with what clients send.
pub(crate) const UNKNOWN_MODEL: &str = "unknown";

/// Runs a validated request against its model. The response (success or error) is labelled
/// for metrics with the model's name if it is served, else [`UNKNOWN_MODEL`].
async fn serve(
    state: &AppState,
    caller: Caller,
    request_id: RequestId,
    request: Result<ValidRequest>,
    endpoint: Endpoint,
) -> Response {
    let mut label = ModelLabel(UNKNOWN_MODEL.to_string());
    let result = match request {
        Ok(request) => generate(state, caller, request_id, request, endpoint, &mut label).await,
        Err(err) => Err(err),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(label);
    response
}

async fn generate(
    state: &AppState,
    caller: Caller,
    request_id: RequestId,
    request: ValidRequest,
    endpoint: Endpoint,
    label: &mut ModelLabel,
) -> Result<Response> {
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completions => "cmpl",
    };
    let meta = ResponseMeta {
        id: format!("{prefix}-{}", request_id.0),
        created: unix_now(),
        model: request.model.clone(),
    };
    let (include_usage, continuous) = (request.include_usage, request.continuous_usage);
    let logprobs = request.sampling.logprobs.is_some();
    match run(state, &caller, &request, meta.id.clone(), label).await? {
        Outcome::Whole(whole) => {
            let usage = UsageView::from(whole.usage);
            let answers = whole.answers;
            Ok(match endpoint {
                Endpoint::Chat => {
                    Json(ChatCompletionView::new(meta, answers, usage)).into_response()
                }
                Endpoint::Completions => {
                    Json(CompletionView::new(meta, answers, usage)).into_response()
                }
            })
        }
        Outcome::Stream(source) => {
            let source = *source;
            let stream = sse::Stream {
                events: source.events,
                first: source.first,
                meta,
                usage: UsageOptions {
                    include_usage,
                    continuous,
                },
                prompt_param: source.prompt_param,
            };
            Ok(match endpoint {
                Endpoint::Chat => sse::response(stream, ChatChunks { logprobs }),
                Endpoint::Completions => {
                    let format = CompletionChunks {
                        logprobs,
                        rendered: Vec::new(),
                    };
                    sse::response(stream, format)
                }
            })
        }
    }
}

/// A whole generation, gathered: its answers (one unless the request asked for `n`) and the
/// request's usage.
pub(crate) struct Whole {
    pub answers: Vec<Answer>,
    pub usage: Usage,
}

impl Whole {
    /// The first answer (the only one: Responses and Messages have no `n`).
    pub fn first(&mut self) -> Answer {
        if self.answers.is_empty() {
            return Answer::new(None);
        }
        self.answers.swap_remove(0)
    }
}

/// One answer being gathered.
struct Gathered {
    answer: Answer,
    /// Log-probabilities of tokens whose text has not come yet.
    pending: Vec<TokenLogprob>,
}

impl Gathered {
    fn new(logprobs: bool) -> Self {
        Self {
            answer: Answer::new(logprobs.then(Vec::new)),
            pending: Vec::new(),
        }
    }

    fn absorb(&mut self, event: Event) {
        let answer = &mut self.answer;
        match event {
            Event::Text { text, .. } => {
                answer.text.push_str(&text);
                if let Some(logprobs) = &mut answer.logprobs {
                    logprobs.append(&mut self.pending);
                }
            }
            // Log-probabilities are reported for the answer's tokens only.
            Event::Reasoning { text, .. } => {
                answer.reasoning.push_str(&text);
                self.pending.clear();
            }
            Event::Logprobs(tokens) => self.pending.extend(tokens),
            Event::ToolCall {
                id,
                name,
                arguments,
                ..
            } => {
                answer.calls.push(ToolCallView::new(id, name, arguments));
                self.pending.clear();
            }
            Event::Finished { reason, .. } => answer.reason = reason,
            Event::Queued { .. } | Event::Admitted { .. } | Event::Choice { .. } => {}
        }
    }
}

/// What [`run`] gives the wire layer to render.
pub(crate) enum Outcome {
    Whole(Whole),
    Stream(Box<sse::Source>),
}

/// The one path every generating API takes below its wire format: serve `request` (admission,
/// metering) under the response id `id`, label the response's metrics with the model if it is
/// served, then gather the whole answer or hand back the events to stream.
pub(crate) async fn run(
    state: &AppState,
    caller: &Caller,
    request: &ValidRequest,
    id: String,
    label: &mut ModelLabel,
) -> Result<Outcome> {
    let prompt_param = request.prompt_param();
    let delivery = if request.stream {
        Delivery::Stream
    } else {
        Delivery::Whole
    };
    let tenant = caller.tenant_id().map(str::to_owned);
    let generate = request.generate_request(id.clone(), tenant);
    // Admission (limits, balance, the reservation) happens in here, before the request may
    // queue: its refusals are HTTP statuses.
    let served = state
        .serving()
        .serve(caller.principal(), generate, delivery)
        .await;
    // Only served names become labels. A request that was served named one; a refused one is
    // looked up (off the hot path).
    let served_name = match &served {
        Ok(_) => true,
        Err(serving::ServeError::ModelNotFound { .. }) => false,
        Err(_) => state.serving().catalog().backend(&request.model).is_some(),
    };
    if served_name {
        label.0.clone_from(&request.model);
        tracing::Span::current().record("model", request.model.as_str());
    }
    let mut events = served.map_err(|err| ApiError::from_serve(err, prompt_param))?;
    if !request.stream {
        let whole = collect(&mut events, request, prompt_param).await?;
        return Ok(Outcome::Whole(whole));
    }
    // Answer with a status while one can: a backend's refusal (a full queue, the context)
    // comes before the first byte unless the request had to queue first. Once admitted or
    // queued, the stream starts at once, so a client waiting for a slot already has its id.
    // An estimated admission (`exact: false`: an upstream server, called only once the
    // reservation is held) is not yet an answer: the upstream may still refuse, so its first
    // answer is awaited too.
    let first = match events.next().await {
        Some(Ok(event)) => Some(event),
        Some(Err(err)) => return Err(ApiError::from_serve(err, prompt_param)),
        None => None,
    };
    if let Some(Event::Admitted { exact: false, .. }) = first {
        match events.next().await {
            Some(Ok(event)) => events.unread(event),
            Some(Err(err)) => return Err(ApiError::from_serve(err, prompt_param)),
            None => {}
        }
    }
    Ok(Outcome::Stream(Box::new(sse::Source {
        events,
        first,
        id,
        model: request.model.clone(),
        prompt_param,
    })))
}

/// Gathers a whole generation. If the client goes away meanwhile, this future is dropped with
/// the stream, which cancels the generation.
pub(crate) async fn collect(
    events: &mut Served,
    request: &ValidRequest,
    prompt_param: &'static str,
) -> Result<Whole> {
    let logprobs = request.sampling.logprobs.is_some();
    let n = request.sampling.n.max(1) as usize;
    let mut answers: Vec<Gathered> = (0..n).map(|_| Gathered::new(logprobs)).collect();
    while let Some(event) = events.next().await {
        match event.map_err(|err| ApiError::from_serve(err, prompt_param))? {
            Event::Queued { .. } | Event::Admitted { .. } => {}
            Event::Choice { index, event } => {
                if let Some(answer) = answers.get_mut(index as usize) {
                    answer.absorb(*event);
                }
            }
            Event::Finished { reason, usage } => {
                metrics::record_usage(&request.model, usage);
                if n == 1 {
                    answers[0].answer.reason = reason;
                }
                let answers = answers.into_iter().map(|g| g.answer).collect();
                return Ok(Whole { answers, usage });
            }
            event => answers[0].absorb(event),
        }
    }
    Err(ApiError::from_backend(
        BackendError::Internal("the backend's stream ended before the generation finished".into()),
        prompt_param,
    ))
}
