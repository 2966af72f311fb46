//! Embeddings and reranking on the one serving path: the same admission as a generation
//! (allow-list, model, a bytes bound per input against the model's input limit, then for a
//! tenant the balance check, RPM and the reservation of the bound as prompt tokens with no
//! completion), then the backend's exact token count settles the hold: the response's
//! `prompt_tokens` and the ledger agree.
//!
//! Reranking asks a cross-encoder (rank pooling) for one score per (query, document) pair, or
//! else embeds the query and the documents and scores each document by cosine similarity.

use std::sync::Arc;

use backend::{
    Backend, BackendError, EmbedInput, EmbedRequest, Embeddings, Field, ModelInfo, ModelKind,
};
use tenancy::Principal;

use crate::bound::MAX_BYTES_PER_TOKEN;
use crate::error::ServeError;
use crate::logs::{self, Trail};
use crate::meter::Delivery;
use crate::Serving;

/// A validated rerank request.
#[derive(Debug, Clone, PartialEq)]
pub struct RerankRequest {
    pub request_id: String,
    pub model: String,
    pub query: String,
    pub documents: Vec<String>,
    pub tenant: Option<String>,
}

/// How relevance was scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RerankMethod {
    /// A cross-encoder read each (query, document) pair.
    CrossEncoder,
    /// Cosine similarity of the query's and the document's embeddings.
    EmbeddingCosine,
}

/// One score per document, in the documents' order.
#[derive(Debug, Clone, PartialEq)]
pub struct Reranked {
    pub scores: Vec<f32>,
    pub prompt_tokens: u32,
    pub method: RerankMethod,
}

/// Refuses a generation on a model that does not generate.
pub(crate) fn require_generation(info: &ModelInfo) -> Result<(), ServeError> {
    match info.kind {
        ModelKind::Generate => Ok(()),
        ModelKind::Transcribe => Err(not_for(info, "text generation")),
        _ => Err(ServeError::Backend(BackendError::InvalidRequest {
            message: format!(
                "'{}' is an embedding model: it generates no text. Call /v1/embeddings or \
                 /v1/rerank with it, or use a text-generation model (GET /v1/models lists each \
                 model's capabilities).",
                info.id
            ),
            field: Some(Field::Model),
        })),
    }
}

pub(crate) fn not_for(info: &ModelInfo, api: &str) -> ServeError {
    ServeError::Backend(BackendError::InvalidRequest {
        message: format!(
            "'{}' cannot serve {api}: its capabilities are {}. GET /v1/models lists each \
             model's capabilities.",
            info.id,
            info.kind.capabilities().join(", ")
        ),
        field: Some(Field::Model),
    })
}

impl Serving {
    /// Embeds `request`'s inputs on an embedding model, metered (and logged) for `payer`.
    pub async fn embed(
        &self,
        payer: Option<&Principal>,
        request: EmbedRequest,
    ) -> Result<Embeddings, ServeError> {
        let mut trail = self.trail(payer, &request.request_id, &request.model);
        let result = self.embed_logged(payer, request, &mut trail).await;
        logs::refused(trail, &result);
        result
    }

    async fn embed_logged(
        &self,
        payer: Option<&Principal>,
        request: EmbedRequest,
        trail: &mut Option<Trail>,
    ) -> Result<Embeddings, ServeError> {
        let backend = self.backend_for(payer, &request.model)?;
        let info = backend.info();
        let ModelKind::Embed { dimensions } = info.kind else {
            return Err(not_for(&info, "embeddings"));
        };
        if let Some(asked) = request.dimensions.filter(|d| *d != dimensions) {
            return Err(ServeError::Backend(BackendError::InvalidRequest {
                message: format!(
                    "'{}' makes vectors of {dimensions} dimensions and cannot shorten them (it \
                     was not trained for it), but {asked} were asked for. Leave out \
                     'dimensions' or set it to {dimensions}.",
                    info.id
                ),
                field: Some(Field::Dimensions),
            }));
        }
        self.run_embed(payer, (backend, &info), request, trail)
            .await
    }

    /// Scores `request`'s documents against its query, metered (and logged) for `payer`.
    pub async fn rerank(
        &self,
        payer: Option<&Principal>,
        request: RerankRequest,
    ) -> Result<Reranked, ServeError> {
        let mut trail = self.trail(payer, &request.request_id, &request.model);
        let result = self.rerank_logged(payer, request, &mut trail).await;
        logs::refused(trail, &result);
        result
    }

    async fn rerank_logged(
        &self,
        payer: Option<&Principal>,
        request: RerankRequest,
        trail: &mut Option<Trail>,
    ) -> Result<Reranked, ServeError> {
        let backend = self.backend_for(payer, &request.model)?;
        let info = backend.info();
        let (method, inputs) = match info.kind {
            ModelKind::Rank => (
                RerankMethod::CrossEncoder,
                request
                    .documents
                    .iter()
                    .map(|d| EmbedInput::Pair(request.query.clone(), d.clone()))
                    .collect(),
            ),
            ModelKind::Embed { .. } => (
                RerankMethod::EmbeddingCosine,
                std::iter::once(&request.query)
                    .chain(&request.documents)
                    .map(|t| EmbedInput::Text(t.clone()))
                    .collect(),
            ),
            ModelKind::Generate | ModelKind::Transcribe => return Err(not_for(&info, "rerank")),
        };
        let embed = EmbedRequest {
            request_id: request.request_id,
            model: request.model,
            inputs,
            tenant: request.tenant,
            dimensions: None,
            priority: backend::Priority::Interactive,
        };
        let out = self
            .run_embed(payer, (backend, &info), embed, trail)
            .await?;
        let scores = match method {
            RerankMethod::CrossEncoder => out
                .vectors
                .iter()
                .map(|v| v.first().copied().unwrap_or(f32::NAN))
                .collect(),
            RerankMethod::EmbeddingCosine => {
                let (query, documents) = out.vectors.split_first().ok_or_else(|| {
                    ServeError::Backend(BackendError::Internal("no query embedding".into()))
                })?;
                documents.iter().map(|d| cosine(query, d)).collect()
            }
        };
        Ok(Reranked {
            scores,
            prompt_tokens: out.prompt_tokens,
            method,
        })
    }

    async fn run_embed(
        &self,
        payer: Option<&Principal>,
        (backend, info): (Arc<dyn Backend>, &ModelInfo),
        request: EmbedRequest,
        trail: &mut Option<Trail>,
    ) -> Result<Embeddings, ServeError> {
        // No input whose bytes alone prove it longer than the model's input limit.
        if let Some(limit) = info.context_length {
            for input in &request.inputs {
                let bytes = match input {
                    EmbedInput::Text(t) => t.len(),
                    EmbedInput::Pair(q, d) => q.len() + d.len(),
                    EmbedInput::Tokens(_) => 0,
                };
                let at_least =
                    u32::try_from(bytes.div_ceil(MAX_BYTES_PER_TOKEN)).unwrap_or(u32::MAX);
                if at_least > limit {
                    return Err(ServeError::PromptTooLong {
                        prompt_bytes: bytes,
                        at_least,
                        context_length: limit,
                    });
                }
            }
        }
        let bound = request.max_prompt_tokens();
        let _registration = payer.map(|p| self.running.register(&p.tenant.id, &request.request_id));
        // A batch's line: priced as `batch/<model>` and outside the RPM/TPM windows, as a
        // generation's (see the crate's docs).
        let batch = request.priority == backend::Priority::Batch;
        let priced_as = if batch {
            tenancy::batch_model(&request.model)
        } else {
            request.model.clone()
        };
        let mut meter = match payer {
            Some(principal) => Some(
                self.admit(
                    principal,
                    (&request.request_id, &priced_as),
                    (bound, 0),
                    (Delivery::Whole, batch),
                )
                .await?,
            ),
            None => None,
        };
        if let Some(meter) = &mut meter {
            meter.take_trail(trail);
        }
        match backend.embed(request).await {
            Ok(out) => {
                if let Some(meter) = &mut meter {
                    meter.settle_whole(out.prompt_tokens).await?;
                }
                Ok(out)
            }
            Err(err) => {
                let err = ServeError::Backend(err);
                if let Some(meter) = &mut meter {
                    meter.fail(&err);
                    meter.release().await;
                }
                Err(err)
            }
        }
    }
}

/// Cosine similarity (0 for a zero vector).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

#[cfg(test)]
mod tests {
    use super::cosine;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-6);
        assert!((cosine(&[1.0, 1.0], &[-1.0, -1.0]) + 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
