//! A tiny CTranslate2 Whisper `model.bin` built here → safetensors directory → read back.

use std::collections::HashMap;
use std::path::Path;

use safetensors::SafeTensors;

use crate::ct2;
use crate::{convert_whisper, ConvertError};

const D: usize = 4;
const VOCAB: usize = 6;
const MELS: usize = 3;

/// f32 values `start, start + 1, …` as bytes.
fn f32s(n: usize, start: f32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (start + i as f32).to_le_bytes())
        .collect()
}

fn var(name: &str, shape: &[usize], start: f32) -> (String, Vec<usize>, u8, Vec<u8>) {
    let n = shape.iter().product();
    (name.to_owned(), shape.to_vec(), 0, f32s(n, start))
}

/// Variables of a 1-encoder-layer, 1-decoder-layer Whisper; fused k biases are zero.
fn whisper_vars() -> Vec<(String, Vec<usize>, u8, Vec<u8>)> {
    let mut v = vec![
        var("encoder/conv1/weight", &[D, MELS, 3], 0.0),
        var("encoder/conv1/bias", &[D], 0.0),
        var("encoder/conv2/weight", &[D, D, 3], 0.0),
        var("encoder/conv2/bias", &[D], 0.0),
        var("encoder/position_encodings/encodings", &[10, D], 0.0),
        var("encoder/layer_norm/gamma", &[D], 1.0),
        var("encoder/layer_norm/beta", &[D], 0.0),
        var("decoder/embeddings/weight", &[VOCAB, D], 0.0),
        var("decoder/position_encodings/encodings", &[8, D], 0.0),
        var("decoder/layer_norm/gamma", &[D], 1.0),
        var("decoder/layer_norm/beta", &[D], 0.0),
        (
            "encoder/num_heads".into(),
            vec![],
            2,
            2i16.to_le_bytes().to_vec(),
        ),
        (
            "decoder/num_heads".into(),
            vec![],
            2,
            2i16.to_le_bytes().to_vec(),
        ),
        ("decoder/pre_norm".into(), vec![], 1, vec![1]),
    ];
    for side in ["encoder", "decoder"] {
        let l = format!("{side}/layer_0");
        // Fused q|k|v: rows 0..4 q (100…), 4..8 k (200…), 8..12 v (300…); bias q 1…, k 0, v 3….
        let mut w = f32s(D * D, 100.0);
        w.extend(f32s(D * D, 200.0));
        w.extend(f32s(D * D, 300.0));
        v.push((
            format!("{l}/self_attention/linear_0/weight"),
            vec![3 * D, D],
            0,
            w,
        ));
        let mut b = f32s(D, 1.0);
        b.extend(vec![0u8; 4 * D]);
        b.extend(f32s(D, 3.0));
        v.push((
            format!("{l}/self_attention/linear_0/bias"),
            vec![3 * D],
            0,
            b,
        ));
        v.push(var(
            &format!("{l}/self_attention/linear_1/weight"),
            &[D, D],
            0.0,
        ));
        v.push(var(&format!("{l}/self_attention/linear_1/bias"), &[D], 0.0));
        v.push(var(
            &format!("{l}/self_attention/layer_norm/gamma"),
            &[D],
            7.0,
        ));
        v.push(var(
            &format!("{l}/self_attention/layer_norm/beta"),
            &[D],
            8.0,
        ));
        v.push(var(&format!("{l}/ffn/linear_0/weight"), &[4 * D, D], 0.0));
        v.push(var(&format!("{l}/ffn/linear_0/bias"), &[4 * D], 0.0));
        v.push(var(&format!("{l}/ffn/linear_1/weight"), &[D, 4 * D], 0.0));
        v.push(var(&format!("{l}/ffn/linear_1/bias"), &[D], 0.0));
        v.push(var(&format!("{l}/ffn/layer_norm/gamma"), &[D], 1.0));
        v.push(var(&format!("{l}/ffn/layer_norm/beta"), &[D], 0.0));
    }
    let l = "decoder/layer_0/attention";
    v.push(var(&format!("{l}/linear_0/weight"), &[D, D], 400.0));
    v.push(var(&format!("{l}/linear_0/bias"), &[D], 4.0));
    let mut w = f32s(D * D, 500.0);
    w.extend(f32s(D * D, 600.0));
    v.push((format!("{l}/linear_1/weight"), vec![2 * D, D], 0, w));
    let mut b = vec![0u8; 4 * D];
    b.extend(f32s(D, 6.0));
    v.push((format!("{l}/linear_1/bias"), vec![2 * D], 0, b));
    v.push(var(&format!("{l}/linear_2/weight"), &[D, D], 0.0));
    v.push(var(&format!("{l}/linear_2/bias"), &[D], 0.0));
    v.push(var(&format!("{l}/layer_norm/gamma"), &[D], 1.0));
    v.push(var(&format!("{l}/layer_norm/beta"), &[D], 0.0));
    v
}

fn write_model(dir: &Path, vars: &[(String, Vec<usize>, u8, Vec<u8>)], spec: &str) {
    let borrowed: Vec<(&str, Vec<usize>, u8, Vec<u8>)> = vars
        .iter()
        .map(|(n, s, t, d)| (n.as_str(), s.clone(), *t, d.clone()))
        .collect();
    let bytes = ct2::write(
        spec,
        &borrowed,
        &[("decoder/projection/weight", "decoder/embeddings/weight")],
    );
    std::fs::write(dir.join("model.bin"), bytes).unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{\"model\": {}}").unwrap();
    std::fs::write(
        dir.join("config.json"),
        br#"{"suppress_ids": [1, 2], "suppress_ids_begin": [3], "lang_ids": [4]}"#,
    )
    .unwrap();
}

fn floats(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("no tensor {name}"));
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), data)
}

fn seq(n: usize, start: f32) -> Vec<f32> {
    (0..n).map(|i| start + i as f32).collect()
}

#[test]
fn splits_fused_attention_and_maps_names() {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out = out.path().join("whisper");
    write_model(src.path(), &whisper_vars(), "WhisperSpec");
    let summary = convert_whisper(src.path(), &out, &mut |_| {}).unwrap();
    assert_eq!((summary.encoder_layers, summary.decoder_layers), (1, 1));
    assert_eq!((summary.d_model, summary.vocab_size), (D, VOCAB));

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let names: HashMap<String, ()> = st.names().into_iter().map(|n| (n.clone(), ())).collect();
    for side in ["encoder", "decoder"] {
        let p = format!("model.{side}.layers.0.self_attn");
        assert_eq!(
            floats(&st, &format!("{p}.q_proj.weight")),
            (vec![D, D], seq(16, 100.0))
        );
        assert_eq!(
            floats(&st, &format!("{p}.k_proj.weight")),
            (vec![D, D], seq(16, 200.0))
        );
        assert_eq!(
            floats(&st, &format!("{p}.v_proj.weight")),
            (vec![D, D], seq(16, 300.0))
        );
        assert_eq!(floats(&st, &format!("{p}.q_proj.bias")).1, seq(4, 1.0));
        assert_eq!(floats(&st, &format!("{p}.v_proj.bias")).1, seq(4, 3.0));
        assert!(
            !names.contains_key(&format!("{p}.k_proj.bias")),
            "Whisper's k has no bias"
        );
        let ln = format!("model.{side}.layers.0.self_attn_layer_norm");
        assert_eq!(floats(&st, &format!("{ln}.weight")).1, seq(4, 7.0));
        assert_eq!(floats(&st, &format!("{ln}.bias")).1, seq(4, 8.0));
        assert!(names.contains_key(&format!("model.{side}.layers.0.fc1.weight")));
        assert!(names.contains_key(&format!("model.{side}.layers.0.final_layer_norm.bias")));
    }
    let x = "model.decoder.layers.0.encoder_attn";
    assert_eq!(floats(&st, &format!("{x}.q_proj.weight")).1, seq(16, 400.0));
    assert_eq!(floats(&st, &format!("{x}.q_proj.bias")).1, seq(4, 4.0));
    assert_eq!(floats(&st, &format!("{x}.k_proj.weight")).1, seq(16, 500.0));
    assert_eq!(floats(&st, &format!("{x}.v_proj.weight")).1, seq(16, 600.0));
    assert_eq!(floats(&st, &format!("{x}.v_proj.bias")).1, seq(4, 6.0));
    assert_eq!(
        floats(&st, "model.decoder.embed_tokens.weight").0,
        vec![VOCAB, D]
    );
    assert_eq!(
        floats(&st, "model.decoder.embed_positions.weight").0,
        vec![8, D]
    );
    assert_eq!(
        floats(&st, "model.encoder.conv1.weight").0,
        vec![D, MELS, 3]
    );

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "whisper");
    assert_eq!(config["num_mel_bins"], MELS);
    assert_eq!(config["encoder_attention_heads"], 2);
    assert_eq!(config["max_source_positions"], 10);
    assert_eq!(config["max_target_positions"], 8);
    assert_eq!(config["suppress_tokens"], serde_json::json!([1, 2]));
    assert_eq!(config["begin_suppress_tokens"], serde_json::json!([3]));
    assert!(out.join("tokenizer.json").is_file());
    assert!(!out.with_extension("part").exists());
}

#[test]
fn refuses_what_it_cannot_convert() {
    let src = tempfile::tempdir().unwrap();
    let out = src.path().join("out");
    let msg = |e: ConvertError| e.to_string();

    // Not Whisper.
    write_model(src.path(), &whisper_vars(), "TransformerSpec");
    let e = msg(convert_whisper(src.path(), &out, &mut |_| {}).unwrap_err());
    assert!(e.contains("not Whisper"), "{e}");

    // Quantized to int8.
    let mut vars = whisper_vars();
    let q = vars
        .iter_mut()
        .find(|v| v.0 == "encoder/layer_0/ffn/linear_0/weight")
        .unwrap();
    q.2 = 1;
    q.3 = vec![0; 4 * D * D];
    write_model(src.path(), &vars, "WhisperSpec");
    let e = msg(convert_whisper(src.path(), &out, &mut |_| {}).unwrap_err());
    assert!(e.contains("quantized"), "{e}");

    // A nonzero key bias is not Whisper's.
    let mut vars = whisper_vars();
    let b = vars
        .iter_mut()
        .find(|v| v.0 == "encoder/layer_0/self_attention/linear_0/bias")
        .unwrap();
    b.3[4 * D] = 1;
    write_model(src.path(), &vars, "WhisperSpec");
    let e = msg(convert_whisper(src.path(), &out, &mut |_| {}).unwrap_err());
    assert!(e.contains("key bias"), "{e}");

    // Truncated: every prefix is refused, none panics.
    write_model(src.path(), &whisper_vars(), "WhisperSpec");
    let whole = std::fs::read(src.path().join("model.bin")).unwrap();
    for cut in [0, 3, 10, 40, whole.len() / 2, whole.len() - 1] {
        assert!(ct2::parse(&whole[..cut]).is_err(), "prefix of {cut} bytes");
    }
    assert!(!out.exists());
}

#[test]
fn reads_scalars_and_aliases() {
    let bytes = ct2::write(
        "WhisperSpec",
        &[
            ("a", vec![2], 4, vec![0, 0x3c, 0, 0x40]),
            ("n", vec![], 2, 8i16.to_le_bytes().to_vec()),
        ],
        &[("b", "a")],
    );
    let m = ct2::parse(&bytes).unwrap();
    assert_eq!(m.spec, "WhisperSpec");
    assert_eq!(m.variables["n"].int(), Some(8));
    assert_eq!(m.variables["b"], m.variables["a"]);
    assert_eq!(m.variables["a"].dtype, ct2::DType::F16);
    let bad = ct2::write("X", &[("a", vec![2], 4, vec![0; 3])], &[]);
    assert!(ct2::parse(&bad).is_err());
}
