//! A batch's results in OpenAI's JSONL shape, and its output and error files.
//!
//! An output line: `{"id": "batch_req_…", "custom_id", "response": {"status_code": 200,
//! "request_id", "body"}, "error": null}`. An error line is a request that ran and failed (its
//! `response` with the status and the error body), or one that did not run (`response: null`,
//! `error: {"code", "message"}`: refused at validation, `insufficient_quota`,
//! `batch_expired`, `batch_cancelled`).

use bytes::Bytes;
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
    let body = stream::iter(chunks.into_iter().map(Ok));
    let staged = files.stage(&batch.tenant_id, body).await?;
    let new = files::NewFile {
        filename: format!("{}_{kind}.jsonl", batch.id),
        purpose: files::Purpose::BatchOutput,
        expires_after: None,
    };
    let record = files.create(&batch.tenant_id, staged, new).await?;
    Ok(Some(record.id))
}
