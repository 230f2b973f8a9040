//! Keywords → poem: the T5 poet, decoding under the 格律 rules, and the checker.
//!
//! - [`model`]: the character-level T5 on candle (`t5`: the network itself).
//! - [`decode`]: line-by-line constrained sampling of N candidates, reranked.
//! - [`rhyme`]: the 平水韵 table (tones and rhyme groups).
//! - [`meter`]: the tone templates of the four forms.
//! - [`novelty`]: the training corpus's lines, so no line is copied.
//! - [`checker`]: the strict verdict on any poem.
//! - [`eval`]: the quality table over held-out keyword sets.
//! - [`blind`]: sheets for blind readers and their scores read back.

pub mod blind;
pub mod checker;
pub mod decode;
pub mod eval;
mod form;
pub mod meter;
pub mod model;
pub mod novelty;
pub mod rhyme;
mod t5;

use std::path::Path;

use candle_core::{DType, Device};

pub use decode::{Candidate, LineRequest, PoemRequest, Sampling};
pub use form::Form;

use crate::error::{ModelError, PoemError};

/// File of the training corpus's lines, beside the model's weights.
pub const LINE_FILTER_FILE: &str = "train_lines.bloom";

/// The poem model with its rule tables, ready to write.
pub struct Poet {
    model: model::PoetModel,
    rules: decode::Rules,
    novelty: Option<novelty::LineFilter>,
}

impl Poet {
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let model = model::PoetModel::load(dir, device, dtype)?;
        let rules = decode::Rules::new(&model);
        let filter_path = dir.join(LINE_FILTER_FILE);
        let novelty = if filter_path.exists() {
            Some(novelty::LineFilter::load(&filter_path)?)
        } else {
            tracing::warn!(
                "{} has no {LINE_FILTER_FILE}: lines copied from the corpus cannot be refused",
                dir.display()
            );
            None
        };
        Ok(Self {
            model,
            rules,
            novelty,
        })
    }

    fn decoder(&mut self, sampling: Sampling) -> decode::Decoder<'_> {
        decode::Decoder {
            model: &mut self.model,
            rules: &self.rules,
            novelty: self.novelty.as_ref(),
            sampling,
        }
    }

    /// Writes the request's candidates, best first by the rerank score:
    /// mean log-probability + `sampling.keyword_weight` × share of keywords used.
    pub fn write(
        &mut self,
        request: &PoemRequest,
        sampling: Sampling,
    ) -> Result<Vec<Candidate>, PoemError> {
        let candidates = self.decoder(sampling).write(request)?;
        Ok(rank(candidates, sampling.keyword_weight))
    }

    /// [`Poet::write`] for several requests at once, sharing the model calls.
    pub fn write_batch(
        &mut self,
        requests: &[PoemRequest],
        sampling: Sampling,
    ) -> Vec<Result<Vec<Candidate>, PoemError>> {
        self.decoder(sampling)
            .write_batch(requests)
            .into_iter()
            .map(|answer| answer.map(|c| rank(c, sampling.keyword_weight)))
            .collect()
    }

    /// 换一句: the poem with one line written anew, best first, as [`Poet::write`] ranks.
    pub fn rewrite(
        &mut self,
        request: &LineRequest,
        sampling: Sampling,
    ) -> Result<Vec<Candidate>, PoemError> {
        let candidates = self.decoder(sampling).rewrite(request)?;
        Ok(rank(candidates, sampling.keyword_weight))
    }

    /// Whether a line is in the training corpus, by the shipped line filter.
    pub fn copies_corpus(&self, line: &str) -> bool {
        self.novelty.as_ref().is_some_and(|f| f.contains(line))
    }
}

fn rank(mut candidates: Vec<Candidate>, keyword_weight: f64) -> Vec<Candidate> {
    for c in &mut candidates {
        c.score = c.mean_logprob + keyword_weight * c.keyword_share;
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates
}
