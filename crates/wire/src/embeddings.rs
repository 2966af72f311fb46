//! `POST /v1/embeddings` as OpenAI documents it, and `POST /v1/rerank` in the Jina/Cohere
//! shape that vLLM, Xinference and LiteLLM use: request parsing into the serving layer's
//! requests, and the response views.

use backend::{EmbedInput, EmbedRequest};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value};
use serving::{RerankMethod, RerankRequest, Reranked};

use crate::error::{ApiError, Result};
use crate::validate::{self, Fields};

/// The most inputs one embeddings request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;
/// The most documents one rerank request may carry.
pub const MAX_DOCUMENTS: usize = 1000;

/// How vectors go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    /// Little-endian f32 bytes, base64.
    Base64,
}

/// A validated embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEmbeddings {
    pub model: String,
    pub inputs: Vec<EmbedInput>,
    pub encoding: Encoding,
    pub dimensions: Option<u32>,
}

impl ValidEmbeddings {
    pub fn embed_request(&self, request_id: String, tenant: Option<String>) -> EmbedRequest {
        EmbedRequest {
            request_id,
            model: self.model.clone(),
            inputs: self.inputs.clone(),
            tenant,
            dimensions: self.dimensions,
            priority: backend::Priority::Interactive,
        }
    }
}

const EMBED_FIELDS: &[&str] = &["model", "input", "encoding_format", "dimensions", "user"];

/// Parses and validates an embeddings request body.
pub fn parse(body: &[u8]) -> Result<ValidEmbeddings> {
    let map = validate::parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(EMBED_FIELDS)?;
    let model = fields.required_string("model")?.to_owned();
    let inputs = inputs(fields.required("input")?)?;
    let encoding = match fields.string("encoding_format")? {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("Invalid 'encoding_format': '{other}'. Use 'float' or 'base64'."),
            ))
        }
    };
    let dimensions = fields
        .integer("dimensions", 1, i64::from(u32::MAX))?
        .map(|d| d as u32);
    fields.string("user")?;
    Ok(ValidEmbeddings {
        model,
        inputs,
        encoding,
        dimensions,
    })
}

fn invalid_input(message: impl Into<String>) -> ApiError {
    ApiError::invalid("input", message)
}

/// `input`: a string, an array of strings, an array of token ids, or an array of arrays of
/// token ids; never empty, at most [`MAX_INPUTS`] inputs.
fn inputs(value: &Value) -> Result<Vec<EmbedInput>> {
    let items = match value {
        Value::String(s) => return Ok(vec![text(s, None)?]),
        Value::Array(items) => items,
        other => {
            return Err(invalid_input(format!(
                "Invalid type for 'input': expected a string or an array, but got {} instead.",
                validate::kind(other)
            )))
        }
    };
    if items.is_empty() {
        return Err(invalid_input(
            "Invalid 'input': empty array. Send at least one string or token.",
        ));
    }
    if items.iter().all(Value::is_number) {
        return Ok(vec![EmbedInput::Tokens(token_ids(items, "input")?)]);
    }
    if items.len() > MAX_INPUTS {
        return Err(invalid_input(format!(
            "Invalid 'input': {} inputs, more than the {MAX_INPUTS} one request may carry; \
             split them across requests.",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => text(s, Some(i)),
            Value::Array(ids) if !ids.is_empty() => {
                Ok(EmbedInput::Tokens(token_ids(ids, &format!("input[{i}]"))?))
            }
            Value::Array(_) => Err(invalid_input(format!(
                "Invalid 'input[{i}]': empty array of tokens."
            ))),
            other => Err(invalid_input(format!(
                "Invalid type for 'input[{i}]': expected a string or an array of token ids, \
                 but got {} instead.",
                validate::kind(other)
            ))),
        })
        .collect()
}

fn text(s: &str, index: Option<usize>) -> Result<EmbedInput> {
    if s.is_empty() {
        let at = index.map_or_else(|| "'input'".to_owned(), |i| format!("'input[{i}]'"));
        return Err(invalid_input(format!(
            "Invalid {at}: empty string. Send text to embed."
        )));
    }
    Ok(EmbedInput::Text(s.to_owned()))
}

fn token_ids(items: &[Value], at: &str) -> Result<Vec<u32>> {
    items
        .iter()
        .enumerate()
        .map(|(j, v)| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    invalid_input(format!(
                        "Invalid '{at}[{j}]': token ids are non-negative integers, but got {v}."
                    ))
                })
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct EmbeddingsView {
    pub object: &'static str,
    pub data: Vec<EmbeddingView>,
    pub model: String,
    pub usage: EmbeddingUsageView,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingView {
    pub object: &'static str,
    pub index: usize,
    pub embedding: Value,
}

#[derive(Debug, Serialize)]
pub struct EmbeddingUsageView {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

impl EmbeddingsView {
    pub fn new(
        model: String,
        vectors: Vec<Vec<f32>>,
        prompt_tokens: u32,
        encoding: Encoding,
    ) -> Self {
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(index, v)| EmbeddingView {
                object: "embedding",
                index,
                embedding: encode(&v, encoding),
            })
            .collect();
        Self {
            object: "list",
            data,
            model,
            usage: EmbeddingUsageView {
                prompt_tokens,
                total_tokens: prompt_tokens,
            },
        }
    }
}

fn encode(v: &[f32], encoding: Encoding) -> Value {
    match encoding {
        Encoding::Float => Value::Array(
            v.iter()
                .map(|x| {
                    serde_json::Number::from_f64(f64::from(*x)).map_or(Value::Null, Value::Number)
                })
                .collect(),
        ),
        Encoding::Base64 => {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
    }
}

/// A validated rerank request, with what the response should carry.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidRerank {
    pub model: String,
    pub query: String,
    pub documents: Vec<String>,
    pub top_n: Option<usize>,
    pub return_documents: bool,
}

impl ValidRerank {
    pub fn rerank_request(&self, request_id: String, tenant: Option<String>) -> RerankRequest {
        RerankRequest {
            request_id,
            model: self.model.clone(),
            query: self.query.clone(),
            documents: self.documents.clone(),
            tenant,
        }
    }
}

const RERANK_FIELDS: &[&str] = &[
    "model",
    "query",
    "documents",
    "top_n",
    "return_documents",
    "user",
];

/// Parses and validates a rerank request body.
pub fn parse_rerank(body: &[u8]) -> Result<ValidRerank> {
    let map = validate::parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(RERANK_FIELDS)?;
    let model = fields.required_string("model")?.to_owned();
    let query = fields.required_string("query")?.to_owned();
    if query.is_empty() {
        return Err(ApiError::invalid("query", "Invalid 'query': empty string."));
    }
    let items = fields.required_array("documents")?;
    if items.is_empty() {
        return Err(ApiError::invalid(
            "documents",
            "Invalid 'documents': empty array. Send at least one document.",
        ));
    }
    if items.len() > MAX_DOCUMENTS {
        return Err(ApiError::invalid(
            "documents",
            format!(
                "Invalid 'documents': {} documents, more than the {MAX_DOCUMENTS} one request may carry.",
                items.len()
            ),
        ));
    }
    let documents = items
        .iter()
        .enumerate()
        .map(|(i, item)| document(item, i))
        .collect::<Result<Vec<_>>>()?;
    let top_n = fields
        .integer("top_n", 1, i64::from(u32::MAX))?
        .map(|n| n as usize);
    let return_documents = fields.bool("return_documents")?.unwrap_or(true);
    fields.string("user")?;
    Ok(ValidRerank {
        model,
        query,
        documents,
        top_n,
        return_documents,
    })
}

fn document(item: &Value, i: usize) -> Result<String> {
    let text = match item {
        Value::String(s) => s.clone(),
        Value::Object(map) => match map.get("text") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(ApiError::invalid(
                    format!("documents[{i}].text"),
                    format!("Invalid 'documents[{i}]': a document object needs a string 'text'."),
                ))
            }
        },
        other => {
            return Err(ApiError::invalid(
                format!("documents[{i}]"),
                format!(
                    "Invalid type for 'documents[{i}]': expected a string or an object with \
                     'text', but got {} instead.",
                    validate::kind(other)
                ),
            ))
        }
    };
    if text.is_empty() {
        return Err(ApiError::invalid(
            format!("documents[{i}]"),
            format!("Invalid 'documents[{i}]': empty text."),
        ));
    }
    Ok(text)
}

/// The rerank response: results by descending relevance, at most `top_n`.
pub fn rerank_view(id: String, request: &ValidRerank, out: &Reranked) -> Value {
    let mut order: Vec<usize> = (0..out.scores.len()).collect();
    order.sort_by(|&a, &b| out.scores[b].total_cmp(&out.scores[a]).then(a.cmp(&b)));
    order.truncate(request.top_n.unwrap_or(order.len()));
    let results: Vec<Value> = order
        .into_iter()
        .map(|i| {
            let mut r = Map::new();
            r.insert("index".into(), i.into());
            r.insert(
                "relevance_score".into(),
                serde_json::Number::from_f64(f64::from(out.scores[i]))
                    .map_or(Value::Null, Value::Number),
            );
            if request.return_documents {
                if let Some(text) = request.documents.get(i) {
                    r.insert("document".into(), serde_json::json!({ "text": text }));
                }
            }
            Value::Object(r)
        })
        .collect();
    let method = match out.method {
        RerankMethod::CrossEncoder => "cross-encoder",
        RerankMethod::EmbeddingCosine => "embedding-cosine",
    };
    serde_json::json!({
        "id": id,
        "model": request.model,
        "results": results,
        "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
        "meta": {
            "method": method,
            "billed_units": {"input_tokens": out.prompt_tokens},
        },
    })
}

#[cfg(test)]
mod tests;
