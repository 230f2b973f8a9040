//! The Rust T5 against Python transformers on a tiny random-weight model
//! (tests/fixtures/t5-tiny, written by tools/make_fixtures.py).

use std::path::Path;

use candle_core::Device;
use serde::Deserialize;
use yingshi::poem::model::PoetModel;

#[derive(Deserialize)]
struct Case {
    source: String,
    input_ids: Vec<u32>,
    /// transformers' greedy `generate`, decoder start token first.
    generated: Vec<u32>,
    /// Logits after feeding all of `generated`.
    last_logits: Vec<f32>,
}

fn fixture() -> (PoetModel, Vec<Case>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/t5-tiny");
    let model = PoetModel::load(&dir, &Device::Cpu).unwrap();
    let cases = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
        .unwrap();
    (model, cases)
}

#[test]
fn tokenizer_matches_reference() {
    let (model, cases) = fixture();
    for case in &cases {
        assert_eq!(
            model.tokenize(&case.source).unwrap(),
            case.input_ids,
            "{}",
            case.source
        );
    }
}

#[test]
fn greedy_decoding_matches_transformers_generate() {
    let (mut model, cases) = fixture();
    for case in &cases {
        let ours = model.greedy(&case.source, 8).unwrap();
        assert_eq!(ours, case.generated[1..], "{}", case.source);
    }
}

#[test]
fn logits_match_within_tolerance() {
    let (mut model, cases) = fixture();
    for case in &cases {
        let ids = model.tokenize(&case.source).unwrap();
        let encoded = model.start(&[ids]).unwrap();
        let mut logits = model.step(&encoded, None).unwrap();
        for &token in &case.generated[1..] {
            logits = model.step(&encoded, Some(&[token])).unwrap();
        }
        let scale = case.last_logits.iter().fold(1f32, |m, x| m.max(x.abs()));
        let max_diff = logits[0]
            .iter()
            .zip(&case.last_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff <= 1e-4 * scale,
            "{}: max |Δlogit| {max_diff} (scale {scale})",
            case.source
        );
    }
}

#[test]
fn a_batch_decodes_like_single_rows() {
    let (mut model, cases) = fixture();
    // Two sources of equal length: batched logits equal the single-row ones.
    let a = model.tokenize("七绝|春风 明月|").unwrap();
    let b = model.tokenize("七绝|秋风 落叶|").unwrap();
    let enc = model.start(&[a.clone(), b.clone()]).unwrap();
    let batch = model.step(&enc, None).unwrap();
    for (row, ids) in [a, b].into_iter().enumerate() {
        let enc = model.start(&[ids]).unwrap();
        let single = model.step(&enc, None).unwrap();
        let diff = single[0]
            .iter()
            .zip(&batch[row])
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-3, "row {row}: {diff}");
    }
    assert!(!cases.is_empty());
}
