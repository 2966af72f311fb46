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
}

impl From<ModelInfo> for ModelView {
    fn from(info: ModelInfo) -> Self {
        Self {
            id: info.id,
            object: "model",
            created: info.created,
            owned_by: info.owned_by,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ModelListView {
    pub object: &'static str,
    pub data: Vec<ModelView>,
}

pub async fn list(State(state): State<AppState>, _: Caller) -> Json<ModelListView> {
    Json(ModelListView {
        object: "list",
        data: state
            .backends()
            .map(|(_, backend)| ModelView::from(backend.info()))
            .collect(),
    })
}

pub async fn get(
    State(state): State<AppState>,
    _: Caller,
    Path(id): Path<String>,
) -> Result<Json<ModelView>> {
    let backend = state.backend(&id)?;
    Ok(Json(ModelView::from(backend.info())))
}
