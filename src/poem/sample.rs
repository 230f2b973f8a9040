//! Choosing a token from the allowed ones: temperature and nucleus (top-p)
//! sampling, and the log-probabilities a choice is scored with.

use rand::rngs::StdRng;
use rand::Rng;

use super::Sampling;

/// Log-softmax of the full logits: the model's own log-probability of each
/// token, whatever the rules allow.
pub(crate) fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let shift = max + sum.ln();
    logits.iter().map(|&l| (l as f64 - shift) as f32).collect()
}

/// Draws one of the allowed `(id, logit)` pairs; `None` when there are none.
pub(crate) fn sample(
    scores: &[(usize, f32)],
    sampling: Sampling,
    rng: &mut StdRng,
) -> Option<usize> {
    if scores.is_empty() {
        return None;
    }
    if sampling.temperature <= 0.0 {
        return scores
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|&(id, _)| id);
    }
    let max = scores.iter().map(|s| s.1).fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = scores
        .iter()
        .map(|&(id, s)| (id, ((s as f64 - max) / sampling.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if kept >= sampling.top_p {
            cut = i + 1;
            break;
        }
    }
    probs.truncate(cut);
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.random::<f64>() * mass;
    for &(id, p) in &probs {
        if r < p {
            return Some(id);
        }
        r -= p;
    }
    probs.last().map(|p| p.0)
}
