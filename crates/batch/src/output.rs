//! A batch's results in OpenAI's JSONL shape, and its output and error files.
//!
//! An output line: `{"id": "batch_req_…", "custom_id", "response": {"status_code": 200,
//! "request_id", "body"}, "error": null}`. An error line is a request that ran and failed (its
//! `response` with the status and the error body), or one that did not run (`response: null`,
//! `error: {"code", "message"}`: refused at validation, `insufficient_quota`,
//! `batch_expired`, `batch_cancelled`).

use bytes::Bytes;
use files::FilesError;
use futures::stream;
use serde_json::{json, Value};
use store::{BatchLine, BatchRecord, LineState};

use crate::error::Result;
use crate::{Inner, LineOutcome};

/// Lines read from the store at a time while writing the files.
const PAGE: i64 = 512;

/// The `id` of a line's result.
pub fn line_id(batch_id: &str, line_no: i64) -> String {
    let batch = batch_id.strip_prefix("batch_").unwrap_or(batch_id);
    format!("batch_req_{batch}_{line_no}")
}

/// The result of a line that ran.
pub fn ran(batch_id: &str, line: &BatchLine, request_id: &str, outcome: &LineOutcome) -> String {
    json!({
        "id": line_id(batch_id, line.line_no),
        "custom_id": line.custom_id,
        "response": {
            "status_code": outcome.status_code,
            "request_id": request_id,
            "body": outcome.body,
        },
        "error": null,
    })
    .to_string()
}

/// The error line of a line that did not run.
pub fn not_run(batch_id: &str, line: &BatchLine) -> String {
    json!({
        "id": line_id(batch_id, line.line_no),
        "custom_id": (!line.custom_id.is_empty()).then_some(line.custom_id.as_str()),
        "response": null,
        "error": {
            "code": line.error_code.as_deref().unwrap_or("internal_error"),
            "message": line.error_message.as_deref().unwrap_or("This request did not run."),
        },
    })
    .to_string()
}

/// OpenAI's `errors` of a batch that failed validation: the refused lines, at most 100.
pub fn validation_errors(lines: &[BatchLine]) -> String {
    let data: Vec<Value> = lines
        .iter()
        .filter(|l| l.state == LineState::Failed)
        .take(100)
        .map(|l| {
            json!({
                "code": l.error_code,
                "message": l.error_message,
                "param": null,
                "line": l.line_no + 1,
            })
        })
        .collect();
    json!({"object": "list", "data": data}).to_string()
}

/// Writes the batch's output file (lines that succeeded) and error file (the others) from
/// its lines, in input order, each only if it has a line; their ids.
pub(crate) async fn write_files(
    inner: &Inner,
    batch: &BatchRecord,
) -> Result<(Option<String>, Option<String>)> {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut after = -1;
    loop {
        let lines = inner.store.batch_lines(&batch.id, after, PAGE).await?;
        let Some(last) = lines.last() else { break };
        after = last.line_no;
        for line in &lines {
            let (text, into) = match (line.state, &line.result) {
                (LineState::Done, Some(result)) => (result.clone(), &mut out),
                (LineState::Failed, Some(result)) => (result.clone(), &mut err),
                (LineState::Failed, None) => (not_run(&batch.id, line), &mut err),
                // Still pending: finalize failed its pending lines first; nothing to write.
                _ => continue,
            };
            into.push(Bytes::from(text + "\n"));
        }
    }
    let output = file(inner, batch, "output", out).await?;
    let error = file(inner, batch, "error", err).await?;
    Ok((output, error))
}

/// The id of batch `batch_id`'s output or error file (`kind`): fixed before it is written, so
/// a finish that ran again (the process died between writing a file and recording it on the
/// batch, or the batch changed status meanwhile) finds the file it wrote instead of leaving
/// it behind unreferenced.
pub fn file_id(batch_id: &str, kind: &str) -> String {
    let batch = batch_id.strip_prefix("batch_").unwrap_or(batch_id);
    format!("file-{batch}-{kind}")
}

/// Writes one of the batch's files, or finds it written by an earlier finish. Its content is
/// the same either way: a batch is finished only once no line is pending, and a line that
/// is not pending never changes. A crash between moving the bytes into the blob store and
/// recording the file leaves a blob that this write names again (same bytes, same blob).
async fn file(
    inner: &Inner,
    batch: &BatchRecord,
    kind: &str,
    chunks: Vec<Bytes>,
) -> Result<Option<String>> {
    if chunks.is_empty() {
        return Ok(None);
    }
    let files = &inner.files;
    let id = file_id(&batch.id, kind);
    match files.get(&batch.tenant_id, &id).await {
        Ok(_) => {
            tracing::info!(batch = %batch.id, file = %id, "found the batch's {kind} file written before; recording it");
            return Ok(Some(id));
        }
        Err(FilesError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let body = stream::iter(chunks.into_iter().map(Ok));
    let staged = files.stage(&batch.tenant_id, body).await?;
    let new = files::NewFile {
        filename: format!("{}_{kind}.jsonl", batch.id),
        purpose: files::Purpose::BatchOutput,
        expires_after: None,
    };
    match files
        .create_as(&batch.tenant_id, staged, new, id.clone())
        .await
    {
        Ok(record) => Ok(Some(record.id)),
        // Written meanwhile by another finish of the same batch: the same file.
        Err(FilesError::Store(store::StoreError::Conflict(_))) => Ok(Some(id)),
        Err(e) => Err(e.into()),
    }
}
