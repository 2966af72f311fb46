//! `/v1/responses`: create (whole or streamed, stored unless `store: false`), retrieve,
//! delete and list a stored response's input items. Generation takes the serving path chat
//! completions take; stored responses are the tenant's own (another tenant's id is a 404).

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::NewResponse;

mod hosted;

use super::generate::{run, Outcome, UNKNOWN_MODEL};
use super::RawBody;
use crate::auth::{Caller, Inference};
use crate::error::{ApiError, Code, Result};
use crate::metrics::ModelLabel;
use crate::observe::RequestId;
use crate::sse;
use crate::wire::responses::items::{self, Item};
use crate::wire::responses::view::{self, Persist, ResponseEvents, Shell};
use crate::wire::responses::{self, ResponsesRequest};
use crate::wire::{unix_now, ValidRequest};
use crate::AppState;

pub async fn create(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Extension(request_id): Extension<RequestId>,
    RawBody(body): RawBody,
) -> Response {
    let mut label = ModelLabel(UNKNOWN_MODEL.to_string());
    let result = match responses::parse(&body) {
        Ok(request) => generate(&state, &caller, &request_id, request, &mut label).await,
        Err(err) => Err(err),
    };
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(label);
    response
}

/// The Responses API's names for the fields the serving path names after chat's.
fn rename(param: &str) -> Option<String> {
    if param == "messages" {
        return Some("input".into());
    }
    if param == "max_tokens" {
        return Some("max_output_tokens".into());
    }
    if param.starts_with("response_format") {
        return Some("text.format.schema".into());
    }
    param
        .strip_suffix(".function.parameters")
        .map(|tool| format!("{tool}.parameters"))
}

/// Everything a stored turn keeps besides its response object.
struct Turn {
    id: String,
    tenant: Option<String>,
    model: String,
    previous_id: Option<String>,
    input_items: Vec<Value>,
    /// The conversation before this turn's output: earlier turns, then this input.
    conversation: Vec<Item>,
}

impl Turn {
    fn record(self, response: &Value, output: Vec<Item>) -> NewResponse {
        let mut conversation = self.conversation;
        conversation.extend(output);
        NewResponse {
            id: self.id,
            tenant_id: self.tenant,
            model: self.model,
            previous_id: self.previous_id,
            response: response.to_string(),
            input_items: Value::Array(self.input_items).to_string(),
            conversation: serde_json::to_string(&conversation).unwrap_or_else(|_| "[]".into()),
        }
    }
}

async fn save(state: &AppState, record: NewResponse) {
    let id = record.id.clone();
    if let Err(err) = state.tenancy().responses.save(record).await {
        tracing::error!(%id, error = %err, "could not store a response; it cannot be retrieved or continued");
    }
}

async fn generate(
    state: &AppState,
    caller: &Caller,
    request_id: &RequestId,
    request: ResponsesRequest,
    label: &mut ModelLabel,
) -> Result<Response> {
    let tenant = caller.tenant_id().map(str::to_owned);
    let previous: Vec<Item> = match &request.previous_response_id {
        None => Vec::new(),
        Some(id) => {
            let stored = state
                .tenancy()
                .responses
                .get(tenant.as_deref(), id)
                .await
                .map_err(|err| match err {
                    tenancy::Error::NotFound { message } => {
                        ApiError::new(Code::NotFound, message).with_param("previous_response_id")
                    }
                    other => ApiError::from_tenancy(other),
                })?;
            serde_json::from_str(&stored.conversation).map_err(|err| {
                ApiError::new(
                    Code::Internal,
                    format!("The stored conversation of '{id}' cannot be read ({err}); start a new one."),
                )
            })?
        }
    };
    let messages =
        items::chat_messages(request.instructions.as_deref(), &previous, &request.input)?;
    let valid = ValidRequest {
        model: request.model.clone(),
        prompt: backend::Prompt::Chat(messages),
        sampling: request.sampling.clone(),
        max_tokens: request.max_output_tokens,
        stop: Vec::new(),
        stream: request.stream,
        include_usage: false,
        continuous_usage: false,
        tools: request.tools.clone(),
        format: request.format.clone(),
    };
    let id = format!("resp_{}", request_id.0);
    let shell = Shell {
        id: id.clone(),
        created_at: unix_now(),
        model: request.model.clone(),
        echo: request.echo.clone(),
    };
    let conversation_so_far = (!request.mcp.is_empty()).then(|| {
        let mut all = previous.clone();
        all.extend(request.input.iter().cloned());
        all
    });
    let turn = request.store.then(|| {
        let suffix = id.trim_start_matches("resp_");
        let input_items = request
            .input
            .iter()
            .enumerate()
            .map(|(i, item)| item.view(&format!("{}_{suffix}{i:03}", prefix(item))))
            .collect();
        let mut conversation = previous;
        conversation.extend(request.input.iter().cloned());
        Turn {
            id: id.clone(),
            tenant,
            model: request.model.clone(),
            previous_id: request.previous_response_id.clone(),
            input_items,
            conversation,
        }
    });
    if let Some(conversation) = conversation_so_far {
        let setup = hosted::Setup {
            valid,
            servers: request.mcp,
            mcp_choice: request.mcp_choice,
            conversation,
            input: request.input,
            max_calls: request.max_tool_calls,
            id,
            events: ResponseEvents::new(shell, turn.map(|turn| persist(state, turn))),
        };
        return hosted::respond(state, caller, setup, label).await;
    }
    let outcome = run(state, caller, &valid, id, label)
        .await
        .map_err(|err| err.map_param(rename))?;
    match outcome {
        Outcome::Whole(mut whole) => {
            let first = whole.first();
            let (output, added) = view::output(&shell, &first.reasoning, &first.text, &first.calls);
            let response = view::finished(&shell, output, first.reason, whole.usage);
            if let Some(turn) = turn {
                save(state, turn.record(&response, added)).await;
            }
            Ok(Json(response).into_response())
        }
        Outcome::Stream(source) => {
            let persist = turn.map(|turn| persist(state, turn));
            Ok(sse::respond(*source, ResponseEvents::new(shell, persist)))
        }
    }
}

/// Stores `turn` once its response is finished.
fn persist(state: &AppState, turn: Turn) -> Persist {
    let state = state.clone();
    Box::new(move |response: Value, added: Vec<Item>| {
        let record = turn.record(&response, added);
        Box::pin(async move { save(&state, record).await })
    })
}

/// The id prefix of an input item, after its type.
fn prefix(item: &Item) -> &'static str {
    match item {
        Item::Message { .. } => "msg",
        Item::FunctionCall { .. } => "fc",
        Item::FunctionCallOutput { .. } => "fco",
        Item::McpListTools { .. } => "mcpl",
        Item::McpCall { .. } => "mcp",
        Item::McpApprovalRequest { .. } => "mcpr",
        Item::McpApprovalResponse { .. } => "mcpa",
    }
}

async fn stored(state: &AppState, caller: &Caller, id: &str) -> Result<tenancy::StoredResponse> {
    state
        .tenancy()
        .responses
        .get(caller.tenant_id(), id)
        .await
        .map_err(ApiError::from_tenancy)
}

fn parsed(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|err| {
        ApiError::new(
            Code::Internal,
            format!("The stored {what} cannot be read ({err})."),
        )
    })
}

/// `GET /v1/responses/{id}`.
pub async fn retrieve(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let found = stored(&state, &caller, &id).await?;
    Ok(Json(parsed(&found.response, "response")?))
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    state
        .tenancy()
        .responses
        .delete(caller.tenant_id(), &id)
        .await
        .map_err(ApiError::from_tenancy)?;
    Ok(Json(
        json!({ "id": id, "object": "response", "deleted": true }),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    order: Option<String>,
    after: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`: `limit` (1 to 100, default 20), `order` (`asc` or
/// `desc`, the default), `after` (an item id).
pub async fn input_items(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Path(id): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>> {
    let limit = match query.limit.as_deref() {
        None => 20,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("Invalid 'limit': '{text}'; expected an integer from 1 to 100."),
                )
            })?,
    };
    let descending = match query.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "order",
                format!("Invalid 'order': '{other}'; expected 'asc' or 'desc'."),
            ))
        }
    };
    let found = stored(&state, &caller, &id).await?;
    let mut items = match parsed(&found.input_items, "input items")? {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    if descending {
        items.reverse();
    }
    if let Some(after) = &query.after {
        match items.iter().position(|item| item["id"] == after.as_str()) {
            Some(at) => {
                items.drain(..=at);
            }
            None => {
                return Err(ApiError::invalid(
                    "after",
                    format!("Invalid 'after': no input item of '{id}' has the id '{after}'."),
                ))
            }
        }
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    Ok(Json(json!({
        "object": "list",
        "data": items,
        "first_id": items.first().map(|item| item["id"].clone()),
        "last_id": items.last().map(|item| item["id"].clone()),
        "has_more": has_more,
    })))
}
