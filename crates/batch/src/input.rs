//! A batch's input file, read and checked up front, line by line: each line must be
//! `{"custom_id", "method": "POST", "url": <the batch's endpoint>, "body": {…, "model"}}`
//! with a `custom_id` not seen before and the model of the batch's first good line. A line
//! that is not is kept as a failed line (it goes to the error file with its `custom_id` when
//! it has one); the good ones run. Bodies are checked further only when they run, by the same
//! parsers the interactive routes use (a bad body is an error line with a 400, as OpenAI's).

use std::collections::HashSet;
use std::io::BufRead;

use serde_json::Value;
use store::{BatchLine, LineState};

use crate::error::{BatchError, Result};
use crate::Endpoint;

/// Error codes of lines refused at validation.
pub const INVALID_REQUEST: &str = "invalid_request";
pub const WRONG_URL: &str = "invalid_url";
pub const DUPLICATE_CUSTOM_ID: &str = "duplicate_custom_id";
pub const MODEL_MISMATCH: &str = "model_mismatch";

/// The lines of an input file.
#[derive(Debug, Default)]
pub struct Input {
    pub lines: Vec<BatchLine>,
    /// The model of the first good line.
    pub model: Option<String>,
    /// How many lines were refused.
    pub refused: i64,
}

/// Reads `reader` (a JSONL file) into lines, at most `max_lines` of them.
pub fn read<R: BufRead>(reader: R, endpoint: Endpoint, max_lines: usize) -> Result<Input> {
    let mut input = Input::default();
    let mut seen = HashSet::new();
    for (n, text) in reader.lines().enumerate() {
        let text = text.map_err(|e| {
            BatchError::invalid(
                "input_file_id",
                format!(
                    "The input file cannot be read as UTF-8 text at line {}: {e}",
                    n + 1
                ),
            )
        })?;
        if text.trim().is_empty() {
            continue;
        }
        if input.lines.len() >= max_lines {
            return Err(BatchError::invalid(
                "input_file_id",
                format!(
                    "The input file has more than {max_lines} requests, the most one batch may \
                     have. Split it into several batches."
                ),
            ));
        }
        let line_no = input.lines.len() as i64;
        let line = check_line(&text, line_no, endpoint, &mut seen, &mut input.model);
        if line.state == LineState::Failed {
            input.refused += 1;
        }
        input.lines.push(line);
    }
    if input.lines.is_empty() {
        return Err(BatchError::invalid(
            "input_file_id",
            "The input file has no requests: it must hold one JSON request per line.",
        ));
    }
    Ok(input)
}

/// Checks each pending line's body with the executor's parser for `endpoint`; a body it
/// refuses becomes a failed line (`invalid_request`, its message) and counts as refused.
pub fn check_bodies(mut input: Input, endpoint: Endpoint, executor: &dyn crate::Executor) -> Input {
    for line in &mut input.lines {
        let Some(body) = line.body.as_deref() else {
            continue;
        };
        if let Err(message) = executor.check(endpoint, body) {
            let at = line.line_no + 1;
            let custom_id = std::mem::take(&mut line.custom_id);
            *line = refused(
                line.line_no,
                custom_id,
                INVALID_REQUEST,
                format!("Line {at}: {message}"),
            );
            input.refused += 1;
        }
    }
    input
}

fn refused(line_no: i64, custom_id: String, code: &str, message: String) -> BatchLine {
    BatchLine {
        line_no,
        custom_id,
        body: None,
        state: LineState::Failed,
        attempt: 0,
        result: None,
        error_code: Some(code.to_owned()),
        error_message: Some(message),
        est_tokens: 0,
    }
}

/// A line's tokens estimated before it runs, for the tenant's enqueued-token limit: its
/// request body's bytes / 4 (rounded up; about 4 bytes per token for English text, and the
/// body's JSON only adds to it) plus the completion it may ask for (`max_completion_tokens`
/// or `max_tokens`, when set). Exact counts need the model's tokenizer, which a deployment
/// at zero replicas does not have loaded; this needs nothing.
pub fn estimate_tokens(body: &Value, body_bytes: usize) -> i64 {
    let prompt = i64::try_from(body_bytes.div_ceil(4)).unwrap_or(i64::MAX);
    let completion = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_u64))
        .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
    prompt.saturating_add(completion)
}

fn check_line(
    text: &str,
    line_no: i64,
    endpoint: Endpoint,
    seen: &mut HashSet<String>,
    model: &mut Option<String>,
) -> BatchLine {
    let at = line_no + 1;
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            let message = format!("Line {at} is not valid JSON: {e}.");
            return refused(line_no, String::new(), INVALID_REQUEST, message);
        }
    };
    let Some(object) = value.as_object() else {
        let message = format!("Line {at} is not a JSON object.");
        return refused(line_no, String::new(), INVALID_REQUEST, message);
    };
    let custom_id = match object.get("custom_id") {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 512 => id.clone(),
        _ => {
            let message = format!(
                "Line {at} has no 'custom_id': every request needs a string 'custom_id' (1 to \
                 512 characters) unique in the file."
            );
            return refused(line_no, String::new(), INVALID_REQUEST, message);
        }
    };
    let fail = |code: &str, message: String| refused(line_no, custom_id.clone(), code, message);
    if object.get("method").and_then(Value::as_str) != Some("POST") {
        return fail(
            INVALID_REQUEST,
            format!("Line {at}: 'method' must be \"POST\"."),
        );
    }
    let url = object.get("url").and_then(Value::as_str).unwrap_or("");
    if url != endpoint.as_str() {
        return fail(
            WRONG_URL,
            format!(
                "Line {at}: 'url' is '{}', but this batch's endpoint is '{}'. Every line must \
                 use the batch's endpoint.",
                url.chars().take(100).collect::<String>(),
                endpoint.as_str()
            ),
        );
    }
    let Some(body) = object.get("body").filter(|b| b.is_object()) else {
        return fail(
            INVALID_REQUEST,
            format!("Line {at}: 'body' must be a JSON object, the request."),
        );
    };
    let Some(line_model) = body.get("model").and_then(Value::as_str) else {
        return fail(
            INVALID_REQUEST,
            format!("Line {at}: the body has no 'model'."),
        );
    };
    match model {
        Some(model) if model != line_model => {
            return fail(
                MODEL_MISMATCH,
                format!(
                    "Line {at}: model '{}' differs from the batch's model '{model}'; one batch \
                     runs one model.",
                    line_model.chars().take(100).collect::<String>()
                ),
            )
        }
        Some(_) => {}
        None => *model = Some(line_model.to_owned()),
    }
    if !seen.insert(custom_id.clone()) {
        return fail(
            DUPLICATE_CUSTOM_ID,
            format!("Line {at}: 'custom_id' '{custom_id}' was used by an earlier line."),
        );
    }
    let text = body.to_string();
    BatchLine {
        line_no,
        custom_id,
        est_tokens: estimate_tokens(body, text.len()),
        body: Some(text),
        state: LineState::Pending,
        attempt: 0,
        result: None,
        error_code: None,
        error_message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, url: &str, model: &str) -> String {
        serde_json::json!({"custom_id": id, "method": "POST", "url": url,
            "body": {"model": model, "messages": []}})
        .to_string()
    }

    #[test]
    fn bad_lines_are_kept_as_failed_and_good_ones_pending() {
        let chat = "/v1/chat/completions";
        let text = [
            line("a", chat, "m"),
            "not json".to_owned(),
            line("b", "/v1/completions", "m"),
            line("a", chat, "m"),
            line("c", chat, "other"),
            String::new(),
            r#"{"method":"POST"}"#.to_owned(),
            line("d", chat, "m"),
        ]
        .join("\n");
        let input = read(text.as_bytes(), Endpoint::Chat, 100).expect("read");
        let states: Vec<_> = input
            .lines
            .iter()
            .map(|l| (l.custom_id.as_str(), l.state, l.error_code.as_deref()))
            .collect();
        assert_eq!(
            states,
            [
                ("a", LineState::Pending, None),
                ("", LineState::Failed, Some(INVALID_REQUEST)),
                ("b", LineState::Failed, Some(WRONG_URL)),
                ("a", LineState::Failed, Some(DUPLICATE_CUSTOM_ID)),
                ("c", LineState::Failed, Some(MODEL_MISMATCH)),
                ("", LineState::Failed, Some(INVALID_REQUEST)),
                ("d", LineState::Pending, None),
            ]
        );
        assert_eq!(input.refused, 5);
        assert_eq!(input.model.as_deref(), Some("m"));
        let pending = &input.lines[0];
        let bytes = pending.body.as_deref().map_or(0, str::len) as i64;
        assert_eq!(pending.est_tokens, (bytes + 3) / 4);
        assert!(
            input.lines[1].est_tokens == 0,
            "a refused line holds no tokens"
        );
    }

    #[test]
    fn estimates_count_the_completion_asked_for() {
        let body = serde_json::json!({"model": "m", "prompt": "abcd", "max_tokens": 100});
        assert_eq!(estimate_tokens(&body, 8), 102);
        let body = serde_json::json!({"model": "m", "max_completion_tokens": 7, "max_tokens": 100});
        assert_eq!(estimate_tokens(&body, 1), 8);
        assert_eq!(estimate_tokens(&serde_json::json!({"input": "x"}), 0), 0);
    }

    #[test]
    fn too_many_lines_and_empty_files_are_refused() {
        let chat = "/v1/chat/completions";
        let text = [line("a", chat, "m"), line("b", chat, "m")].join("\n");
        assert!(matches!(
            read(text.as_bytes(), Endpoint::Chat, 1),
            Err(BatchError::Invalid { .. })
        ));
        assert!(matches!(
            read("\n\n".as_bytes(), Endpoint::Chat, 1),
            Err(BatchError::Invalid { .. })
        ));
    }
}
