//! The judge of coherence: how well a candidate line goes on from the lines
//! before it (after Jiuge's context-coherence rewarder, much smaller).
//!
//! Trained by `training/train_judge.py`, whose `Judge` module this mirrors
//! step by step (the scores agree with torch's: `tests/jiju.rs`):
//! - each character is embedded, plus its place in the line and the line's
//!   distance from the candidate (0: the candidate, k: k lines before);
//! - a line is read by a convolution of width 3 inside it:
//!   `h = LayerNorm(x + gelu(conv(x)))`;
//! - the candidate's characters attend over all the characters before (one head);
//! - the means of the candidate's states, of what they read, of their product,
//!   and the candidate's mean times the context's mean go through a hidden
//!   layer, which also takes the slot (line index, +8 for seven characters),
//!   to one score.
//!
//! A candidate's states do not depend on the context, so [`Judge::read_candidate`]
//! runs once a line and [`Judge::score`] only attends and pools.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::LineIndexError;

pub(crate) const JUDGE_FILE: &str = "judge.safetensors";
pub(crate) const JUDGE_CHARS_FILE: &str = "judge_chars.txt";

const DIM: usize = 64;
const PLACES: usize = 7;
const DISTANCES: usize = 8;
const SLOTS: usize = 16;
const LAYER_NORM_EPS: f32 = 1e-5;

pub(crate) struct Judge {
    ids: HashMap<char, usize>,
    embed: Vec<f32>,
    place: Vec<f32>,
    distance: Vec<f32>,
    /// `[tap][in][out]`.
    conv: Vec<f32>,
    conv_bias: Vec<f32>,
    norm_weight: Vec<f32>,
    norm_bias: Vec<f32>,
    /// `[in][out]`, as are the other matrices.
    query: Vec<f32>,
    key: Vec<f32>,
    value: Vec<f32>,
    slot: Vec<f32>,
    hidden: Vec<f32>,
    hidden_bias: Vec<f32>,
    out: Vec<f32>,
    out_bias: f32,
}

/// A candidate line as the judge reads it, whatever comes before.
pub(crate) struct CandidateRead {
    states: Vec<f32>,
    queries: Vec<f32>,
    mean: Vec<f32>,
}

/// The lines before a candidate, read once for all candidates.
pub(crate) struct ContextRead {
    keys: Vec<f32>,
    values: Vec<f32>,
    mean: Vec<f32>,
}

impl Judge {
    pub(crate) fn load(dir: &Path) -> Result<Self, LineIndexError> {
        let weights_path = dir.join(JUDGE_FILE);
        let chars_path = dir.join(JUDGE_CHARS_FILE);
        let corrupt = |path: &Path, problem: String| LineIndexError::Corrupt {
            path: path.to_owned(),
            problem,
        };
        let chars =
            std::fs::read_to_string(&chars_path).map_err(|source| LineIndexError::Read {
                path: chars_path.clone(),
                source,
            })?;
        // Ids 0 and 1 are padding and unknown characters.
        let ids: HashMap<char, usize> = chars
            .lines()
            .filter_map(|l| l.chars().next())
            .enumerate()
            .map(|(i, c)| (c, i + 2))
            .collect();
        if !weights_path.exists() {
            return Err(LineIndexError::Read {
                path: weights_path,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(|e| corrupt(&weights_path, e.to_string()))?;
        let take = |name: &str, shape: &[usize]| -> Result<Vec<f32>, LineIndexError> {
            let t: &Tensor = tensors
                .get(name)
                .ok_or_else(|| corrupt(&weights_path, format!("no tensor {name}")))?;
            if t.dims() != shape {
                return Err(corrupt(
                    &weights_path,
                    format!("{name} is {:?}, expected {shape:?}", t.dims()),
                ));
            }
            t.flatten_all()
                .and_then(|t| t.to_dtype(candle_core::DType::F32))
                .and_then(|t| t.to_vec1())
                .map_err(|e| corrupt(&weights_path, e.to_string()))
        };
        // torch's Linear keeps [out][in]: turned to [in][out] for the loops below.
        let linear = |name: &str, inputs: usize, outputs: usize| {
            take(name, &[outputs, inputs]).map(|w| transpose(&w, outputs, inputs))
        };
        let conv_torch = take("conv.weight", &[DIM, DIM, 3])?;
        let mut conv = vec![0.0; 3 * DIM * DIM];
        for o in 0..DIM {
            for i in 0..DIM {
                for tap in 0..3 {
                    conv[(tap * DIM + i) * DIM + o] = conv_torch[(o * DIM + i) * 3 + tap];
                }
            }
        }
        let vocab = ids.len() + 2;
        Ok(Self {
            embed: take("embed.weight", &[vocab, DIM])?,
            place: take("place.weight", &[PLACES, DIM])?,
            distance: take("distance.weight", &[DISTANCES, DIM])?,
            conv,
            conv_bias: take("conv.bias", &[DIM])?,
            norm_weight: take("norm.weight", &[DIM])?,
            norm_bias: take("norm.bias", &[DIM])?,
            query: linear("query.weight", DIM, DIM)?,
            key: linear("key.weight", DIM, DIM)?,
            value: linear("value.weight", DIM, DIM)?,
            slot: take("slot.weight", &[SLOTS, DIM])?,
            hidden: linear("hidden.weight", 4 * DIM, DIM)?,
            hidden_bias: take("hidden.bias", &[DIM])?,
            out: take("out.weight", &[1, DIM])?,
            out_bias: take("out.bias", &[1])?[0],
            ids,
        })
    }

    /// A line's states: `[n][DIM]`.
    fn encode(&self, line: &[char], distance: usize) -> Vec<f32> {
        let n = line.len();
        let mut x = vec![0.0f32; n * DIM];
        for (p, c) in line.iter().enumerate() {
            let id = self.ids.get(c).copied().unwrap_or(1);
            let row = &mut x[p * DIM..(p + 1) * DIM];
            for (d, v) in row.iter_mut().enumerate() {
                *v = self.embed[id * DIM + d]
                    + self.place[p * DIM + d]
                    + self.distance[distance.min(DISTANCES - 1) * DIM + d];
            }
        }
        let mut h = vec![0.0f32; n * DIM];
        for p in 0..n {
            let conv = &mut h[p * DIM..(p + 1) * DIM];
            conv.copy_from_slice(&self.conv_bias);
            for tap in 0..3 {
                // Tap 0 reads the character before, 2 the one after (zero padding).
                let Some(q) = (p + tap).checked_sub(1).filter(|&q| q < n) else {
                    continue;
                };
                let input = &x[q * DIM..(q + 1) * DIM];
                let weights = &self.conv[tap * DIM * DIM..(tap + 1) * DIM * DIM];
                add_product(conv, input, weights);
            }
            for (v, &x) in conv.iter_mut().zip(&x[p * DIM..(p + 1) * DIM]) {
                *v = x + gelu(*v);
            }
            layer_norm(conv, &self.norm_weight, &self.norm_bias);
        }
        h
    }

    pub(crate) fn read_candidate(&self, line: &[char]) -> CandidateRead {
        let states = self.encode(line, 0);
        let queries = project(&states, &self.query);
        let mean = mean_rows(&states);
        CandidateRead {
            states,
            queries,
            mean,
        }
    }

    /// The lines before the candidate, the last one nearest; at least one.
    pub(crate) fn read_context(&self, lines: &[&[char]]) -> ContextRead {
        let count = lines.len();
        let states: Vec<f32> = lines
            .iter()
            .enumerate()
            .flat_map(|(j, line)| self.encode(line, count - j))
            .collect();
        ContextRead {
            keys: project(&states, &self.key),
            values: project(&states, &self.value),
            mean: mean_rows(&states),
        }
    }

    /// How well the candidate goes on from the context, writing line `index`
    /// (from 0) of a poem of `n`-character lines.
    pub(crate) fn score(
        &self,
        context: &ContextRead,
        candidate: &CandidateRead,
        index: usize,
        n: usize,
    ) -> f32 {
        let keys = context.keys.len() / DIM;
        let scale = 1.0 / (DIM as f32).sqrt();
        let mut read_mean = vec![0.0f32; DIM];
        let mut product_mean = vec![0.0f32; DIM];
        let mut weights = vec![0.0f32; keys];
        let mut read = vec![0.0f32; DIM];
        let rows = candidate.states.len() / DIM;
        for r in 0..rows {
            let q = &candidate.queries[r * DIM..(r + 1) * DIM];
            for (w, k) in weights.iter_mut().zip(context.keys.chunks_exact(DIM)) {
                *w = dot(q, k) * scale;
            }
            softmax(&mut weights);
            read.iter_mut().for_each(|v| *v = 0.0);
            for (&w, v) in weights.iter().zip(context.values.chunks_exact(DIM)) {
                for (r, &v) in read.iter_mut().zip(v) {
                    *r += w * v;
                }
            }
            let state = &candidate.states[r * DIM..(r + 1) * DIM];
            for d in 0..DIM {
                read_mean[d] += read[d] / rows as f32;
                product_mean[d] += state[d] * read[d] / rows as f32;
            }
        }
        let mut features = Vec::with_capacity(4 * DIM);
        features.extend_from_slice(&candidate.mean);
        features.extend_from_slice(&read_mean);
        features.extend_from_slice(&product_mean);
        features.extend(candidate.mean.iter().zip(&context.mean).map(|(a, b)| a * b));
        let slot = (index + if n == 7 { 8 } else { 0 }).min(SLOTS - 1);
        let mut hidden: Vec<f32> = self
            .hidden_bias
            .iter()
            .zip(&self.slot[slot * DIM..(slot + 1) * DIM])
            .map(|(b, s)| b + s)
            .collect();
        add_product(&mut hidden, &features, &self.hidden);
        self.out_bias
            + hidden
                .iter()
                .zip(&self.out)
                .map(|(&h, w)| gelu(h) * w)
                .sum::<f32>()
    }
}

/// `out += input · weights`, weights `[input.len()][out.len()]`.
fn add_product(out: &mut [f32], input: &[f32], weights: &[f32]) {
    for (&x, row) in input.iter().zip(weights.chunks_exact(out.len())) {
        for (o, &w) in out.iter_mut().zip(row) {
            *o += x * w;
        }
    }
}

/// Each `DIM`-wide row times `[DIM][DIM]` weights.
fn project(rows: &[f32], weights: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; rows.len()];
    for (o, x) in out.chunks_exact_mut(DIM).zip(rows.chunks_exact(DIM)) {
        add_product(o, x, weights);
    }
    out
}

fn mean_rows(rows: &[f32]) -> Vec<f32> {
    let count = (rows.len() / DIM) as f32;
    let mut mean = vec![0.0f32; DIM];
    for row in rows.chunks_exact(DIM) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= count);
    mean
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    v.iter_mut().for_each(|x| *x /= sum);
}

/// torch's `gelu(approximate="tanh")`.
fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

fn layer_norm(row: &mut [f32], weight: &[f32], bias: &[f32]) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + LAYER_NORM_EPS).sqrt();
    for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
        *v = (*v - mean) * inv * w + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Case {
        context: Vec<String>,
        candidates: Vec<String>,
        scores: Vec<f32>,
    }

    /// tests/fixtures/judge_reference.json: held-out lines scored by torch
    /// with the shipped weights (`train_judge.py --reference`).
    #[test]
    fn scores_as_torch_does() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let judge = Judge::load(&root.join("models/jiju")).unwrap();
        let text =
            std::fs::read_to_string(root.join("tests/fixtures/judge_reference.json")).unwrap();
        let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() >= 3);
        let chars = |l: &String| l.chars().collect::<Vec<char>>();
        for case in &cases {
            let context: Vec<Vec<char>> = case.context.iter().map(chars).collect();
            let context: Vec<&[char]> = context.iter().map(Vec::as_slice).collect();
            let read = judge.read_context(&context);
            let n = context[0].len();
            let got: Vec<f32> = case
                .candidates
                .iter()
                .map(|c| judge.score(&read, &judge.read_candidate(&chars(c)), context.len(), n))
                .collect();
            for (g, want) in got.iter().zip(&case.scores) {
                assert!(
                    (g - want).abs() < 1e-4,
                    "{:?}: {got:?} against {:?}",
                    case.context,
                    case.scores
                );
            }
            // Scores that hardly depend on their input would pass the check above by luck.
            let (lo, hi) = case
                .scores
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| {
                    (lo.min(s), hi.max(s))
                });
            assert!(hi - lo > 0.05, "{:?}", case.scores);
        }
    }
}
