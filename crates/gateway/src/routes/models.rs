//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::extract::{Path, State};
use axum::Json;
use backend::ModelInfo;
use serde::Serialize;

use crate::auth::Caller;
use crate::error::Result;
use crate::AppState;

#[derive(Debug, Serialize)]
pub struct ModelView {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
    /// The APIs the model serves (`chat`, `completions`, `embeddings`, `rerank`).
    pub capabilities: &'static [&'static str],
    /// The length of an embedding model's vectors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

impl From<ModelInfo> for ModelView {
    fn from(info: ModelInfo) -> Self {
        Self {
            id: info.id,
            object: "model",
            created: info.created,
            owned_by: info.owned_by,
            capabilities: info.kind.capabilities(),
            dimensions: match info.kind {
                backend::ModelKind::Embed { dimensions } => Some(dimensions),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ModelListView {
    pub object: &'static str,
    pub data: Vec<ModelView>,
}

/// Whether the caller's key may use `model` (its allow-list, if any, names it, or names the
/// group an alias stands for).
/// A fine-tuned model is private to its tenant and allowed where its base model is.
fn allowed(state: &AppState, caller: &Caller, model: &str) -> bool {
    let catalog = state.serving().catalog();
    if !catalog.visible(model, caller.tenant_id()) {
        return false;
    }
    caller.principal().is_none_or(|p| {
        p.require_model(model).is_ok()
            || p.require_model(&catalog.canonical(model)).is_ok()
            || catalog
                .private(model)
                .is_some_and(|private| p.require_model(&private.base).is_ok())
    })
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> Json<ModelListView> {
    Json(ModelListView {
        object: "list",
        data: state
            .serving()
            .catalog()
            .models_for(caller.tenant_id())
            .into_iter()
            .filter(|info| allowed(&state, &caller, &info.id))
            .map(ModelView::from)
            .collect(),
    })
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ModelView>> {
    if !allowed(&state, &caller, &id) {
        return Err(crate::error::ApiError::new(
            crate::error::Code::ModelNotFound,
            format!("The model '{id}' does not exist or this API key may not use it."),
        )
        .with_param("model"));
    }
    let backend = state.backend(&id)?;
    // An alias is listed under its own name.
    let mut view = ModelView::from(backend.info());
    view.id = id;
    Ok(Json(view))
}
