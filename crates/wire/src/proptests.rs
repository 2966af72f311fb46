//! Random bodies never panic the request parsers: whatever they accept is in range, and
//! whatever they refuse is a 400 `invalid_request_error` that names the offending parameter
//! whenever the body is a JSON object.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{chat, completions, ValidRequest};
use crate::validate::{MAX_STOP_BYTES, MAX_STOP_SEQUENCES, MAX_STOP_TOTAL_BYTES};

const KEYS: &[&str] = &[
    "model",
    "messages",
    "prompt",
    "role",
    "content",
    "type",
    "text",
    "name",
    "tool_calls",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "stream",
    "stream_options",
    "include_usage",
    "n",
    "user",
    "logprobs",
    "top_logprobs",
    "store",
    "metadata",
    "echo",
    "suffix",
    "best_of",
    "logit_bias",
    "tools",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_]{0,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-5.0f64..5.0).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(
            &["user", "assistant", "system", "text", "m", "", "image_url"][..]
        )
        .prop_map(Value::from),
        ".{0,6}".prop_map(Value::from),
        // Around the length bounds of stop sequences.
        (0usize..2 * MAX_STOP_BYTES, any::<char>())
            .prop_map(|(n, c)| Value::from(c.to_string().repeat(n))),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn check(bytes: &[u8], result: crate::error::Result<ValidRequest>) {
    match result {
        Ok(req) => {
            let s = &req.sampling;
            assert!((0.0..=2.0).contains(&s.temperature));
            assert!(s.top_p > 0.0 && s.top_p <= 1.0);
            assert!(s.top_k >= 0);
            assert!((0.0..=1.0).contains(&s.min_p));
            assert!(req.max_tokens.is_none_or(|m| m >= 1));
            assert!(req.stop.len() <= MAX_STOP_SEQUENCES && req.stop.iter().all(|s| !s.is_empty()));
            assert!(req.stop.iter().all(|s| s.len() <= MAX_STOP_BYTES));
            assert!(req.stop.iter().map(String::len).sum::<usize>() <= MAX_STOP_TOTAL_BYTES);
            assert!(!req.include_usage || req.stream);
        }
        Err(err) => {
            assert_eq!(err.status().as_u16(), 400);
            assert_eq!(err.code_str(), "invalid_request_error", "{err}");
            assert!(!err.message().is_empty());
            // Only a body that is not a JSON object has no parameter to blame. (An unknown
            // empty key is named as it is: "".)
            let is_object = serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.is_object());
            let param = err.body().error.param;
            assert_eq!(param.is_some(), is_object, "{err} (param {param:?})");
        }
    }
}

fn both(bytes: &[u8]) {
    check(bytes, chat::parse(bytes));
    check(bytes, completions::parse(bytes));
}

/// A valid request body of either endpoint, with long stop sequences now and then.
fn valid_body() -> impl Strategy<Value = Vec<u8>> {
    let stop = prop_oneof![
        Just(Value::Null),
        "[a-z]{1,8}".prop_map(Value::from),
        proptest::collection::vec("[a-z]{1,300}".prop_map(Value::from), 0..20)
            .prop_map(Value::Array),
    ];
    (any::<bool>(), stop, 1u32..100).prop_map(|(chat, stop, max_tokens)| {
        let mut body = Map::new();
        body.insert("model".into(), Value::from("m"));
        if chat {
            body.insert(
                "messages".into(),
                serde_json::json!([{ "role": "user", "content": "Hi" }]),
            );
        } else {
            body.insert("prompt".into(), Value::from("Once"));
        }
        body.insert("stop".into(), stop);
        body.insert("max_tokens".into(), Value::from(max_tokens));
        Value::Object(body).to_string().into_bytes()
    })
}

/// A byte-level change: overwrite, insert or delete one byte at a position (taken modulo the
/// body's length).
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len().max(1);
    match *edit {
        Edit::Set(at, b) if !bytes.is_empty() => bytes[at % len] = b,
        Edit::Insert(at, b) => bytes.insert(at % (bytes.len() + 1), b),
        Edit::Delete(at) if !bytes.is_empty() => {
            bytes.remove(at % len);
        }
        _ => {}
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        proptest::sample::select(&b"{}[]\":,0-9.eE tnfu\\"[..]),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(at, b)| Edit::Set(at, b)),
        (any::<usize>(), byte).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        both(&bytes);
    }

    #[test]
    fn mangled_requests_never_panic(
        body in valid_body(),
        edits in proptest::collection::vec(edit(), 0..6),
    ) {
        let mut bytes = body;
        for e in &edits {
            apply(&mut bytes, e);
        }
        both(&bytes);
    }

    #[test]
    fn random_json_never_panics(body in json()) {
        both(&body.to_string().into_bytes());
    }

    #[test]
    fn random_requests_never_panic(
        fields in proptest::collection::btree_map(key(), json(), 0..8),
        messages in proptest::collection::vec(
            proptest::collection::btree_map(key(), leaf(), 0..4), 0..3),
    ) {
        let mut body: Map<String, Value> = fields.into_iter().collect();
        body.insert("model".into(), Value::from("m"));
        let messages = messages.into_iter().map(|m| Value::Object(m.into_iter().collect())).collect();
        body.insert("messages".into(), Value::Array(messages));
        let bytes = Value::Object(body.clone()).to_string().into_bytes();
        check(&bytes, chat::parse(&bytes));
        body.remove("messages");
        body.entry("prompt").or_insert_with(|| Value::from("p"));
        let bytes = Value::Object(body).to_string().into_bytes();
        check(&bytes, completions::parse(&bytes));
    }
}
