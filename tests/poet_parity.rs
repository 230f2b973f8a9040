//! The Rust T5 against Python transformers on a tiny random-weight model
//! (tests/fixtures/t5-tiny, written by tools/make_fixtures.py).

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use common::{max_abs_diff, placement, scale, tolerance};
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

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/t5-tiny")
}

fn fixture() -> (PoetModel, Vec<Case>) {
    let dir = fixture_dir();
    let at = placement();
    let model = PoetModel::load(&dir, &at.device, at.dtype).unwrap();
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
    if placement().dtype != DType::F32 {
        // Rounding can swap two near-equal logits; the logits test bounds it.
        eprintln!("greedy ids are compared in f32 only");
        return;
    }
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
        let scale = scale(&case.last_logits);
        let max_diff = max_abs_diff(&logits[0], &case.last_logits);
        assert!(
            max_diff <= tolerance(placement().dtype) * scale,
            "{}: max |Δlogit| {max_diff} (scale {scale})",
            case.source
        );
    }
}

#[test]
fn a_padded_batch_decodes_like_single_rows() {
    let (mut model, _) = fixture();
    // Sources of different lengths, one repeated: the batch pads and masks,
    // and every row's logits over several steps equal its own run's.
    let sources: Vec<Vec<u32>> = [
        "七绝|春风 明月|",
        "五绝|秋|",
        "七绝|春风 明月|",
        "七律|孤舟 寒江 落日|白日依山尽|",
    ]
    .iter()
    .map(|s| model.tokenize(s).unwrap())
    .collect();
    assert!(sources[1].len() < sources[0].len() && sources[3].len() > sources[0].len());
    let feed: [u32; 3] = [10, 11, 12];
    let run = |model: &mut PoetModel, sources: &[Vec<u32>]| {
        let encoded = model.start(sources).unwrap();
        let mut steps = vec![model.step(&encoded, None).unwrap()];
        for &t in &feed {
            steps.push(
                model
                    .step(&encoded, Some(vec![t; sources.len()].as_slice()))
                    .unwrap(),
            );
        }
        steps
    };
    let batch = run(&mut model, &sources);
    let limit = tolerance(placement().dtype) * 10.0;
    for (row, source) in sources.iter().enumerate() {
        let single = run(&mut model, std::slice::from_ref(source));
        for (step, (b, s)) in batch.iter().zip(&single).enumerate() {
            let diff = max_abs_diff(&b[row], &s[0]);
            assert!(
                diff <= limit * scale(&s[0]),
                "row {row} step {step}: {diff}"
            );
        }
    }
}

#[test]
fn half_precision_gives_nearly_the_f32_logits() {
    // Reduced precision as on a GPU, in f16: candle's CPU matmul has no bf16.
    let mut f32_model = PoetModel::load(&fixture_dir(), &Device::Cpu, DType::F32).unwrap();
    let mut f16_model = PoetModel::load(&fixture_dir(), &Device::Cpu, DType::F16).unwrap();
    let ids = f32_model.tokenize("七绝|春风 明月|").unwrap();
    let logits = |model: &mut PoetModel| {
        let encoded = model.start(std::slice::from_ref(&ids)).unwrap();
        model.step(&encoded, None).unwrap();
        model.step(&encoded, Some(&[20])).unwrap().remove(0)
    };
    let (a, b) = (logits(&mut f32_model), logits(&mut f16_model));
    let diff = max_abs_diff(&a, &b);
    assert!(diff > 0.0, "f16 changed nothing: not f16?");
    assert!(
        diff <= tolerance(DType::F16) * scale(&a),
        "max |Δlogit| {diff}"
    );
}
