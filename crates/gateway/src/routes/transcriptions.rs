//! `POST /v1/audio/transcriptions`: a multipart form (`file` and the text fields the wire crate
//! reads), served (decoded, admitted, metered by audio seconds) by `Serving::transcribe`,
//! rendered in the asked format. The body limit of this route alone is the largest audio file
//! plus room for the form.

use axum::extract::multipart::{Field, Multipart, MultipartError, MultipartRejection};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serving::TranscriptionJob;

use super::generate::UNKNOWN_MODEL;
use crate::auth::Inference;
use crate::error::{ApiError, Code, Result};
use crate::metrics::ModelLabel;
use crate::observe::RequestId;
use crate::wire::audio::{self, TranscriptionForm};
use crate::{AppState, AudioLimits};

/// Room for the form around the file: boundaries, part headers, the text fields.
const FORM_OVERHEAD_BYTES: u64 = 64 << 10;
/// The longest text field (a prompt is at most a few hundred tokens).
const MAX_TEXT_FIELD_BYTES: usize = 16 << 10;

pub fn router(limits: AudioLimits) -> Router<AppState> {
    let body_limit =
        usize::try_from(limits.max_bytes.saturating_add(FORM_OVERHEAD_BYTES)).unwrap_or(usize::MAX);
    Router::new().route(
        "/v1/audio/transcriptions",
        post(transcriptions).layer(DefaultBodyLimit::max(body_limit)),
    )
}

fn unreadable(err: &MultipartError, limits: &AudioLimits) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            Code::RequestTooLarge,
            format!(
                "The audio file is larger than {} bytes, the most this server accepts. Send a \
                 shorter or more compressed file.",
                limits.max_bytes
            ),
        )
        .with_param("file")
    } else {
        ApiError::invalid(
            "file",
            format!("The multipart body could not be read: {}", err.body_text()),
        )
    }
}

/// A field's bytes, at most `max`.
async fn read_field(
    mut field: Field<'_>,
    name: &str,
    max: u64,
    limits: &AudioLimits,
) -> Result<Vec<u8>> {
    let mut value = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                if (value.len() + chunk.len()) as u64 > max {
                    return Err(if name == "file" {
                        ApiError::new(
                            Code::RequestTooLarge,
                            format!(
                                "The audio file is larger than {max} bytes, the most this \
                                 server accepts. Send a shorter or more compressed file."
                            ),
                        )
                        .with_param("file")
                    } else {
                        ApiError::invalid(
                            name,
                            format!("The form field '{name}' is longer than {max} bytes."),
                        )
                    });
                }
                value.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(value),
            Err(e) => return Err(unreadable(&e, limits)),
        }
    }
}

pub async fn transcriptions(
    State(state): State<AppState>,
    Inference(caller): Inference,
    Extension(request_id): Extension<RequestId>,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Response {
    let mut label = ModelLabel(UNKNOWN_MODEL.to_string());
    let result = transcribe(&state, &caller, &request_id, multipart, &mut label).await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(label);
    response
}

async fn transcribe(
    state: &AppState,
    caller: &crate::auth::Caller,
    request_id: &RequestId,
    multipart: std::result::Result<Multipart, MultipartRejection>,
    label: &mut ModelLabel,
) -> Result<Response> {
    let limits = state.audio_limits();
    let mut multipart = multipart.map_err(|r| {
        ApiError::invalid(
            "file",
            format!(
                "POST /v1/audio/transcriptions takes a multipart/form-data body with a 'file' \
                 and a 'model' field ({}).",
                r.body_text()
            ),
        )
    })?;
    let mut form = TranscriptionForm::default();
    let mut file: Option<(Vec<u8>, Option<String>)> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(unreadable(&e, &limits)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            if file.is_some() {
                return Err(ApiError::invalid(
                    "file",
                    "The form field 'file' is given twice; send one audio file.",
                ));
            }
            let extension = field
                .file_name()
                .and_then(|n| n.rsplit_once('.'))
                .map(|(_, ext)| ext.to_ascii_lowercase())
                .filter(|e| e.len() <= 8);
            let bytes = read_field(field, "file", limits.max_bytes, &limits).await?;
            file = Some((bytes, extension));
        } else if TranscriptionForm::knows(&name) {
            let bytes = read_field(field, &name, MAX_TEXT_FIELD_BYTES as u64, &limits).await?;
            let value = String::from_utf8(bytes).map_err(|_| {
                ApiError::invalid(&name, format!("The form field '{name}' is not UTF-8."))
            })?;
            form.field(&name, &value)?;
        } else {
            // Refused by name, before anything more is read.
            form.field(&name, "")?;
        }
    }
    let params = form.finish()?;
    let (bytes, extension) = file.ok_or_else(|| {
        ApiError::invalid(
            "file",
            "Missing required parameter: 'file'. Send the audio file as the form field 'file' \
             (WAV, MP3, FLAC or Ogg Vorbis).",
        )
    })?;
    if state.serving().catalog().backend(&params.model).is_some() {
        label.0 = params.model.clone();
        tracing::Span::current().record("model", params.model.as_str());
    }
    let job = TranscriptionJob {
        request_id: format!("stt-{}", request_id.0),
        model: params.model.clone(),
        file: bytes,
        extension,
        language: params.language.clone(),
        prompt: params.prompt.clone(),
        temperature: params.temperature,
        tenant: caller.tenant_id().map(str::to_owned),
        max_seconds: limits.max_seconds,
    };
    let out = state
        .serving()
        .transcribe(caller.principal(), job)
        .await
        .map_err(|err| ApiError::from_serve(err, "file"))?;
    let (body, content_type) = audio::render(
        params.format,
        &out.transcription,
        out.duration_ms,
        out.seconds,
    );
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
