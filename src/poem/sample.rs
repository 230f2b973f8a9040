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

/// How many of the heaviest tokens a draw puts in order first.
const NUCLEUS_GUESS: usize = 64;

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
    // (position in `scores`, id, weight)
    let mut probs: Vec<(usize, usize, f64)> = scores
        .iter()
        .enumerate()
        .map(|(i, &(id, s))| (i, id, ((s as f64 - max) / sampling.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.2).sum();
    // Heaviest first, equal weights in the order of `scores`: the order a
    // stable sort by weight gives, and a total one.
    let heaviest_first =
        |a: &(usize, usize, f64), b: &(usize, usize, f64)| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0));
    // Only the heaviest few are put in order unless the nucleus reaches past
    // them: ordering every allowed token (thousands) for every row at every
    // step was most of the sampling's time.
    let ordered = probs.len().min(NUCLEUS_GUESS);
    if ordered < probs.len() {
        probs.select_nth_unstable_by(ordered - 1, heaviest_first);
    }
    probs[..ordered].sort_unstable_by(heaviest_first);
    let mut kept = 0.0;
    let mut cut = probs.len();
    for i in 0..probs.len() {
        if i == ordered {
            probs[ordered..].sort_unstable_by(heaviest_first);
        }
        kept += probs[i].2 / total;
        if kept >= sampling.top_p {
            cut = i + 1;
            break;
        }
    }
    probs.truncate(cut);
    let mass: f64 = probs.iter().map(|p| p.2).sum();
    let mut r = rng.random::<f64>() * mass;
    for &(_, id, p) in &probs {
        if r < p {
            return Some(id);
        }
        r -= p;
    }
    probs.last().map(|p| p.1)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// The draw as it was, every allowed token put in order by a stable sort.
    fn sample_sorting_all(scores: &[(usize, f32)], sampling: Sampling, rng: &mut StdRng) -> usize {
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
                return id;
            }
            r -= p;
        }
        probs.last().unwrap().0
    }

    /// The same token as ordering them all, for the same random stream:
    /// nuclei inside and past the heaviest few, ties, flat and peaked logits.
    #[test]
    fn ordering_the_heaviest_few_draws_as_ordering_all() {
        let mut make = StdRng::seed_from_u64(7);
        let mut past_the_guess = 0;
        for count in [1, 2, 5, 63, 64, 65, 200, 3000] {
            for (temperature, top_p) in [(1.0, 0.9), (0.7, 0.5), (2.0, 0.99), (1.0, 1.0)] {
                for spread in [0.1f32, 3.0, 12.0] {
                    // Logits rounded to a coarse grid, so that many tie.
                    let scores: Vec<(usize, f32)> = (0..count)
                        .map(|i| {
                            let l = (make.random::<f32>() * spread * 4.0).round() / 4.0;
                            (count - i + 1000, l)
                        })
                        .collect();
                    let sampling = Sampling {
                        temperature,
                        top_p,
                        keyword_bonus: 0.0,
                        keyword_weight: 0.0,
                        ngram_weight: 0.0,
                    };
                    for seed in 0..20 {
                        let [mut a, mut b] = [seed, seed].map(StdRng::seed_from_u64);
                        let want = sample_sorting_all(&scores, sampling, &mut a);
                        assert_eq!(sample(&scores, sampling, &mut b), Some(want));
                    }
                    past_the_guess += usize::from(top_p == 1.0 && count > NUCLEUS_GUESS);
                }
            }
        }
        assert!(
            past_the_guess > 0,
            "no nucleus reached past the heaviest few"
        );
    }
}
