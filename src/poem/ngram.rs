//! A character n-gram of the training lines, mixed with the T5's
//! probabilities as the poet writes: on held-out poems the shipped trigram
//! mixed in at 0.3 predicts the next character 0.33 nats better than the T5
//! alone (`training/README.md`), the T5 bringing the keywords and the lines before,
//! the n-gram the common phrases of the line being written.
//!
//! Interpolated Kneser–Ney within a line, in the poet tokenizer's ids.
//! File format (`char_ngram.bin`, written by `training/ngram.py`, which
//! documents it): the 8 bytes `YSNGRAM1`, the vocabulary size and the order
//! (u32 LE), the first-order distribution (f32 × vocabulary), then per order
//! n ≥ 2 its contexts (the n−1 previous ids, 16 bits each, the nearest lowest),
//! each context's backoff weight and followers with their shares.

use std::path::Path;

use crate::error::ModelError;

const MAGIC: &[u8; 8] = b"YSNGRAM1";
/// File of the n-gram, beside the poet's weights.
pub(crate) const NGRAM_FILE: &str = "char_ngram.bin";
/// Stands before a line's first character in a context.
const LINE_START: u32 = 0xFFFF;

/// The contexts of one order and what follows each.
struct Order {
    /// Sorted keys of the n−1 previous ids.
    contexts: Vec<u32>,
    /// The share of probability left to the order below, per context.
    backoff: Vec<f32>,
    /// `followers[start[i]..start[i + 1]]` follow `contexts[i]`.
    start: Vec<u32>,
    followers: Vec<u16>,
    /// (count − discount) / the context's total, per follower.
    shares: Vec<f32>,
}

pub(crate) struct CharNgram {
    unigram: Vec<f32>,
    /// Orders 2, 3, … in turn.
    orders: Vec<Order>,
}

/// Reads little-endian numbers off the file's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u32s(&mut self, n: usize) -> Option<Vec<u32>> {
        let b = self.take(n.checked_mul(4)?)?;
        Some(
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    }

    fn f32s(&mut self, n: usize) -> Option<Vec<f32>> {
        let b = self.take(n.checked_mul(4)?)?;
        Some(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    }

    fn u16s(&mut self, n: usize) -> Option<Vec<u16>> {
        let b = self.take(n.checked_mul(2)?)?;
        Some(
            b.chunks_exact(2)
                .map(|c| u16::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        )
    }

    fn order(&mut self, vocab: usize) -> Option<Order> {
        let [contexts, followers] = self.u32s(2)?[..] else {
            return None;
        };
        let (n_ctx, n_fol) = (contexts as usize, followers as usize);
        let order = Order {
            contexts: self.u32s(n_ctx)?,
            backoff: self.f32s(n_ctx)?,
            start: self.u32s(n_ctx + 1)?,
            followers: self.u16s(n_fol)?,
            shares: self.f32s(n_fol)?,
        };
        let starts_ok = order.start.first() == Some(&0)
            && order.start.last() == Some(&followers)
            && order.start.windows(2).all(|w| w[0] <= w[1]);
        let sorted = order.contexts.windows(2).all(|w| w[0] < w[1]);
        let ids_ok = order.followers.iter().all(|&f| (f as usize) < vocab);
        (starts_ok && sorted && ids_ok).then_some(order)
    }
}

impl CharNgram {
    pub(crate) fn load(path: &Path, vocab: usize) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::MissingFile {
            path: path.to_owned(),
            source,
        })?;
        let problem = |problem: String| ModelError::Unsupported {
            path: path.to_owned(),
            problem,
        };
        if bytes.get(..8) != Some(MAGIC) {
            return Err(problem("it is not a yingshi character n-gram".into()));
        }
        let mut reader = Reader { bytes: &bytes[8..] };
        let damaged = || problem("it is cut short or damaged; run training/ngram.py again".into());
        let [file_vocab, order] = reader.u32s(2).ok_or_else(damaged)?[..] else {
            return Err(damaged());
        };
        if file_vocab as usize != vocab {
            return Err(problem(format!(
                "it was counted for a vocabulary of {file_vocab}, the poet's has {vocab}; \
                 run training/ngram.py for this poet"
            )));
        }
        if !(2..=3).contains(&order) {
            return Err(problem(format!("order {order}; orders 2 and 3 are read")));
        }
        let unigram = reader.f32s(vocab).ok_or_else(damaged)?;
        let orders = (2..=order)
            .map(|_| reader.order(vocab).ok_or_else(damaged))
            .collect::<Result<Vec<_>, _>>()?;
        if !reader.bytes.is_empty() {
            return Err(damaged());
        }
        Ok(Self { unigram, orders })
    }

    /// The probability of every id following `before`, the ids written so far
    /// in the line. `None`, a character out of the vocabulary (only a failed
    /// row's filler reaches here), is read as the line's start.
    pub(crate) fn next(&self, before: &[Option<u32>]) -> Vec<f32> {
        let mut p = self.unigram.clone();
        for (k, order) in self.orders.iter().enumerate() {
            // Order k + 2 looks at the k + 1 previous ids.
            let mut key = 0u32;
            for back in (1..=k + 1).rev() {
                let id = match before.len().checked_sub(back) {
                    Some(i) => before[i].unwrap_or(LINE_START),
                    None => LINE_START,
                };
                key = (key << 16) | id;
            }
            let Ok(i) = order.contexts.binary_search(&key) else {
                continue;
            };
            let backoff = order.backoff[i];
            p.iter_mut().for_each(|x| *x *= backoff);
            let span = order.start[i] as usize..order.start[i + 1] as usize;
            for (&f, &share) in order.followers[span.clone()]
                .iter()
                .zip(&order.shares[span])
            {
                p[f as usize] += share;
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn json(path: &str) -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The shipped n-gram and the poet's vocabulary it counts in.
    fn shipped() -> (CharNgram, HashMap<String, u32>) {
        let tokenizer = json("models/poet-t5/tokenizer.json");
        let ids: HashMap<String, u32> = tokenizer["model"]["vocab"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(token, id)| (token.clone(), id.as_u64().unwrap() as u32))
            .collect();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/poet-t5");
        (
            CharNgram::load(&dir.join(NGRAM_FILE), ids.len()).unwrap(),
            ids,
        )
    }

    #[test]
    fn a_cut_or_foreign_file_is_refused_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let (_, ids) = shipped();
        let shipped_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/poet-t5")
            .join(NGRAM_FILE);
        let bytes = std::fs::read(shipped_path).unwrap();
        let path = dir.path().join(NGRAM_FILE);
        for (bytes, vocab, says) in [
            (&bytes[..bytes.len() - 3], ids.len(), "cut short"),
            (&bytes[..], ids.len() + 1, "vocabulary of"),
            (
                &b"YSBLOOM1...."[..],
                ids.len(),
                "not a yingshi character n-gram",
            ),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let message = CharNgram::load(&path, vocab).err().unwrap().to_string();
            assert!(message.contains(says), "{message}");
        }
    }

    /// The held-out loss per character that `training/ngram.py` computed
    /// with its own (numpy, f64) lookups, recorded beside the model.
    #[test]
    fn held_out_loss_matches_the_python_reference() {
        let (ngram, ids) = shipped();
        let expected = json("models/poet-t5/train_info.json")["char_ngram"]
            ["heldout_loss_per_char"]
            .as_f64()
            .unwrap();
        let poems = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("training/heldout_poems.jsonl"),
        )
        .unwrap();
        // As ngram.py counts: a character out of the vocabulary is [UNK].
        let id_of = |c: char| ids.get(&c.to_string()).copied().unwrap_or(ids["[UNK]"]);
        let (mut sum, mut count) = (0.0f64, 0usize);
        for poem in poems.lines().filter(|l| !l.trim().is_empty()).take(300) {
            let poem: serde_json::Value = serde_json::from_str(poem).unwrap();
            for line in poem["lines"].as_array().unwrap() {
                let line: Vec<u32> = line.as_str().unwrap().chars().map(id_of).collect();
                let before: Vec<Option<u32>> = line.iter().copied().map(Some).collect();
                for (i, &id) in line.iter().enumerate() {
                    let p = ngram.next(&before[..i])[id as usize];
                    sum -= (p as f64).ln();
                    count += 1;
                }
            }
        }
        let loss = sum / count as f64;
        assert!((loss - expected).abs() < 1e-4, "{loss} vs {expected}");
    }

    /// Every distribution sums to one: the first order's, and at each stored
    /// context the backoff weight plus its followers' shares (each order's
    /// distribution is backoff × the one below + shares); and `next` puts
    /// them together so, at a context of each order and at the line start.
    #[test]
    fn each_distribution_sums_to_one() {
        let (ngram, _) = shipped();
        let unigram: f64 = ngram.unigram.iter().map(|&p| p as f64).sum();
        assert!((unigram - 1.0).abs() < 1e-4, "{unigram}");
        for (k, order) in ngram.orders.iter().enumerate() {
            for (i, &backoff) in order.backoff.iter().enumerate() {
                let span = order.start[i] as usize..order.start[i + 1] as usize;
                let shares: f64 = order.shares[span].iter().map(|&s| s as f64).sum();
                let total = backoff as f64 + shares;
                assert!(
                    (total - 1.0).abs() < 1e-5,
                    "order {}, context {i}: {total}",
                    k + 2
                );
            }
        }
        let trigram = ngram.orders[1].contexts[ngram.orders[1].contexts.len() / 2];
        for before in [
            vec![],
            vec![Some(ngram.orders[0].contexts[7])],
            vec![Some(trigram >> 16), Some(trigram & 0xFFFF)],
        ] {
            let total: f64 = ngram.next(&before).iter().map(|&p| p as f64).sum();
            assert!((total - 1.0).abs() < 1e-4, "{before:?}: {total}");
        }
    }
}
