use backend::EmbedInput;
use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{json, Value};
use serving::{RerankMethod, Reranked};

use super::*;

fn parse_json(v: Value) -> Result<ValidEmbeddings> {
    parse(v.to_string().as_bytes())
}

fn refused_param(v: Value) -> String {
    let err = parse_json(v).expect_err("refused");
    assert_eq!(err.status().as_u16(), 400);
    err.body().error.param.unwrap_or_default().to_owned()
}

#[test]
fn every_documented_input_shape_parses() {
    let one = parse_json(json!({"model": "m", "input": "hello"})).unwrap();
    assert_eq!(one.inputs, [EmbedInput::Text("hello".into())]);
    assert_eq!(one.encoding, Encoding::Float);
    let many = parse_json(
        json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "user": "u"}),
    )
    .unwrap();
    assert_eq!(many.inputs.len(), 2);
    assert_eq!(many.encoding, Encoding::Base64);
    let tokens = parse_json(json!({"model": "m", "input": [101, 7, 102]})).unwrap();
    assert_eq!(tokens.inputs, [EmbedInput::Tokens(vec![101, 7, 102])]);
    let lists =
        parse_json(json!({"model": "m", "input": [[1, 2], [3]], "dimensions": 384})).unwrap();
    assert_eq!(
        lists.inputs,
        [EmbedInput::Tokens(vec![1, 2]), EmbedInput::Tokens(vec![3])]
    );
    assert_eq!(lists.dimensions, Some(384));
}

#[test]
fn bad_inputs_name_their_parameter() {
    assert_eq!(refused_param(json!({"model": "m", "input": ""})), "input");
    assert_eq!(refused_param(json!({"model": "m", "input": []})), "input");
    assert_eq!(
        refused_param(json!({"model": "m", "input": ["a", ""]})),
        "input"
    );
    assert_eq!(refused_param(json!({"model": "m", "input": [[]]})), "input");
    assert_eq!(
        refused_param(json!({"model": "m", "input": [1, -2]})),
        "input"
    );
    assert_eq!(
        refused_param(json!({"model": "m", "input": ["a", 3]})),
        "input"
    );
    assert_eq!(
        refused_param(json!({"model": "m", "input": {"a": 1}})),
        "input"
    );
    assert_eq!(refused_param(json!({"model": "m"})), "input");
    assert_eq!(refused_param(json!({"input": "x"})), "model");
    let too_many: Vec<Value> = (0..=MAX_INPUTS).map(|_| json!("x")).collect();
    assert_eq!(
        refused_param(json!({"model": "m", "input": too_many})),
        "input"
    );
    assert_eq!(
        refused_param(json!({"model": "m", "input": "x", "encoding_format": "int8"})),
        "encoding_format"
    );
    assert_eq!(
        refused_param(json!({"model": "m", "input": "x", "dimensions": 0})),
        "dimensions"
    );
    assert_eq!(
        refused_param(json!({"model": "m", "input": "x", "dimensions": "8"})),
        "dimensions"
    );
    assert_eq!(
        refused_param(json!({"model": "m", "input": "x", "truncate": true})),
        "truncate"
    );
}

#[test]
fn vectors_encode_as_floats_or_little_endian_base64() {
    let view = EmbeddingsView::new("m".into(), vec![vec![1.0, -0.5]], 3, Encoding::Base64);
    let v = serde_json::to_value(&view).unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "embedding");
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let b64 = v["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(
        bytes,
        [1.0f32.to_le_bytes(), (-0.5f32).to_le_bytes()].concat()
    );
    let floats = serde_json::to_value(EmbeddingsView::new(
        "m".into(),
        vec![vec![0.25]],
        1,
        Encoding::Float,
    ))
    .unwrap();
    assert_eq!(floats["data"][0]["embedding"], json!([0.25]));
}

#[test]
fn rerank_parses_strings_and_text_objects_and_orders_results() {
    let r = parse_rerank(
        json!({"model": "m", "query": "q", "documents": ["a", {"text": "b"}, "c"], "top_n": 2, "return_documents": true})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.documents, ["a", "b", "c"]);
    let out = Reranked {
        scores: vec![0.1, 0.9, 0.5],
        prompt_tokens: 12,
        method: RerankMethod::EmbeddingCosine,
    };
    let v = rerank_view("rerank-1".into(), &r, &out);
    let order: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["index"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [1, 2]);
    assert_eq!(v["results"][0]["document"]["text"], "b");
    assert_eq!(v["meta"]["method"], "embedding-cosine");
    assert_eq!(v["usage"]["total_tokens"], 12);

    for (body, param) in [
        (
            json!({"model": "m", "query": "", "documents": ["a"]}),
            "query",
        ),
        (
            json!({"model": "m", "query": "q", "documents": []}),
            "documents",
        ),
        (
            json!({"model": "m", "query": "q", "documents": [1]}),
            "documents[0]",
        ),
        (
            json!({"model": "m", "query": "q", "documents": [{"txt": "a"}]}),
            "documents[0].text",
        ),
        (
            json!({"model": "m", "query": "q", "documents": ["a"], "top_n": 0}),
            "top_n",
        ),
    ] {
        let err = parse_rerank(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.body().error.param, Some(param), "{body}");
    }
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        proptest::sample::select(&["m", "", "float", "base64", "text"][..]).prop_map(Value::from),
        ".{0,6}".prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => proptest::sample::select(&["model", "input", "encoding_format", "dimensions", "user",
            "query", "documents", "top_n", "return_documents", "text"][..]).prop_map(str::to_string),
        1 => "[a-z_]{0,8}",
    ];
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check<T>(bytes: &[u8], result: Result<T>) {
    if let Err(err) = result {
        assert_eq!(err.status().as_u16(), 400);
        assert_eq!(err.code_str(), "invalid_request_error", "{err}");
        let is_object = serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.is_object());
        assert_eq!(err.body().error.param.is_some(), is_object, "{err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes, parse(&bytes));
        check(&bytes, parse_rerank(&bytes));
    }

    #[test]
    fn random_json_never_panics(body in json_value(), input in json_value()) {
        let bytes = body.to_string().into_bytes();
        check(&bytes, parse(&bytes));
        check(&bytes, parse_rerank(&bytes));
        let with_input = json!({"model": "m", "input": input, "query": "q", "documents": input});
        let bytes = with_input.to_string().into_bytes();
        if let Ok(valid) = parse(&bytes) {
            prop_assert!(!valid.inputs.is_empty() && valid.inputs.len() <= MAX_INPUTS);
        }
        check(&bytes, parse(&bytes));
        check(&bytes, parse_rerank(&bytes));
    }
}
