//! Log-probabilities as an OpenAI-compatible server reports them, into [`TokenLogprob`]s: chat's
//! `logprobs.content` entries, or the legacy completions' parallel arrays.

use backend::{Logprob, TokenLogprob};
use serde_json::Value;

/// What a request sends to ask for them: chat's `logprobs` + `top_logprobs`, or the
/// completions API's `logprobs` count.
pub fn request_fields(top: u8, chat: bool, body: &mut serde_json::Map<String, Value>) {
    if chat {
        body.insert("logprobs".into(), Value::Bool(true));
        body.insert("top_logprobs".into(), top.into());
    } else {
        body.insert("logprobs".into(), top.into());
    }
}

fn logprob(entry: &Value) -> Option<Logprob> {
    let token = entry.get("token")?.as_str()?.to_owned();
    let bytes = match entry.get("bytes").and_then(Value::as_array) {
        Some(bytes) => bytes
            .iter()
            .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect(),
        None => token.as_bytes().to_vec(),
    };
    Some(Logprob {
        token,
        bytes,
        logprob: entry.get("logprob")?.as_f64()? as f32,
    })
}

/// The log-probabilities of a chat or completion choice (or its delta), if it has any.
pub fn of_choice(choice: &Value) -> Option<Vec<TokenLogprob>> {
    let logprobs = choice.get("logprobs").filter(|l| !l.is_null())?;
    if let Some(content) = logprobs.get("content").and_then(Value::as_array) {
        let tokens = content
            .iter()
            .filter_map(|entry| {
                let top = entry
                    .get("top_logprobs")
                    .and_then(Value::as_array)
                    .map(|top| top.iter().filter_map(logprob).collect())
                    .unwrap_or_default();
                Some(TokenLogprob {
                    chosen: logprob(entry)?,
                    top,
                })
            })
            .collect();
        return Some(tokens);
    }
    let tokens = logprobs.get("tokens")?.as_array()?;
    let values = logprobs.get("token_logprobs")?.as_array()?;
    let tops = logprobs.get("top_logprobs").and_then(Value::as_array);
    let entries = tokens
        .iter()
        .zip(values)
        .enumerate()
        .filter_map(|(i, (token, value))| {
            let token = token.as_str()?.to_owned();
            let top = tops
                .and_then(|t| t.get(i))
                .and_then(Value::as_object)
                .map(|alternatives| {
                    let mut top: Vec<Logprob> = alternatives
                        .iter()
                        .filter_map(|(t, v)| {
                            Some(Logprob {
                                token: t.clone(),
                                bytes: t.as_bytes().to_vec(),
                                logprob: v.as_f64()? as f32,
                            })
                        })
                        .collect();
                    top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
                    top
                })
                .unwrap_or_default();
            Some(TokenLogprob {
                chosen: Logprob {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob: value.as_f64().unwrap_or(f64::NEG_INFINITY) as f32,
                },
                top,
            })
        })
        .collect();
    Some(entries)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn chat_and_completion_shapes() {
        let chat = json!({ "logprobs": { "content": [
            { "token": "Hi", "logprob": -0.5, "bytes": [72, 105],
              "top_logprobs": [{ "token": "Hi", "logprob": -0.5, "bytes": [72, 105] }] }
        ] } });
        let got = of_choice(&chat).expect("logprobs");
        assert_eq!(got[0].chosen.token, "Hi");
        assert_eq!(got[0].chosen.bytes, b"Hi");
        assert_eq!(got[0].top.len(), 1);
        let legacy = json!({ "logprobs": {
            "tokens": ["a", "b"], "token_logprobs": [-1.0, -2.0],
            "top_logprobs": [{ "a": -1.0, "c": -0.5 }, {}], "text_offset": [0, 1]
        } });
        let got = of_choice(&legacy).expect("logprobs");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].top[0].token, "c");
        assert_eq!(got[1].chosen.logprob, -2.0);
        assert!(of_choice(&json!({ "logprobs": null })).is_none());
        assert!(of_choice(&json!({ "logprobs": { "content": "x" } })).is_none());
    }
}
