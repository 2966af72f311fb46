//! Random bodies never panic the request parsers, and whatever they accept is in range.

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{chat, completions, ValidRequest};
use crate::validate::MAX_STOP_SEQUENCES;

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

fn check(result: crate::error::Result<ValidRequest>) {
    match result {
        Ok(req) => {
            let s = &req.sampling;
            assert!((0.0..=2.0).contains(&s.temperature));
            assert!(s.top_p > 0.0 && s.top_p <= 1.0);
            assert!(s.top_k >= 0);
            assert!((0.0..=1.0).contains(&s.min_p));
            assert!(req.max_tokens.is_none_or(|m| m >= 1));
            assert!(req.stop.len() <= MAX_STOP_SEQUENCES && req.stop.iter().all(|s| !s.is_empty()));
            assert!(!req.include_usage || req.stream);
        }
        Err(err) => {
            assert_eq!(err.status().as_u16(), 400);
            assert!(!err.message().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(chat::parse(&bytes));
        check(completions::parse(&bytes));
    }

    #[test]
    fn random_json_never_panics(body in json()) {
        let bytes = body.to_string().into_bytes();
        check(chat::parse(&bytes));
        check(completions::parse(&bytes));
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
        check(chat::parse(&bytes));
        body.remove("messages");
        body.entry("prompt").or_insert_with(|| Value::from("p"));
        let bytes = Value::Object(body).to_string().into_bytes();
        check(completions::parse(&bytes));
    }
}
