//! Keywords → poem: the T5 poet, decoding under the 格律 rules, and the checker.
//!
//! - [`model`]: the character-level T5 on candle (`t5`: the network itself).
//! - [`request`]: what a poet is asked and answers, and the one ranking of candidates.
//! - [`rules`]: the rule engine every poet writes under: which character may come next.
//! - [`decode`]: the T5's line-by-line constrained sampling of N candidates ([`sample`]).
//! - [`ngram`]: the character n-gram the T5's probabilities are mixed with.
//! - `llm` (feature `llm`): a chat LLM on mistral.rs, under the same rules.
//! - [`jiju`]: 集句, poems of real corpus lines, credited, chosen by a judge of coherence.
//! - [`rhyme`]: the 平水韵 table (tones and rhyme groups).
//! - [`meter`]: the tone templates of the four forms.
//! - [`novelty`]: the training corpus's lines, so no line is copied.
//! - [`checker`]: the strict verdict on any poem.
//! - [`eval`]: the quality table over held-out keyword sets.
//! - [`blind`]: sheets for blind readers and their scores read back.

pub mod blind;
pub mod checker;
mod decode;
pub mod eval;
mod form;
pub mod jiju;
#[cfg(feature = "llm")]
mod llm;
pub(crate) mod meter;
pub mod model;
mod ngram;
pub(crate) mod novelty;
mod request;
pub mod rhyme;
mod rules;
mod sample;
mod t5;

use std::path::Path;

use candle_core::{DType, Device};

use crate::device::on_cpu_pool;

pub use form::Form;
pub use jiju::{JijuPoet, LineSource};
#[cfg(feature = "llm")]
pub use llm::{LlmPoet, LlmSpec};
pub(crate) use request::{rank, ScoreWeights};
pub use request::{Candidate, LineRequest, PoemRequest, PoetChoice, Sampling, Style};

use crate::error::{ModelError, PoemError};
pub(crate) use rules::read_own_line;
use rules::{CharTones, Rules};

/// File of the training corpus's lines, beside the model's weights.
pub const LINE_FILTER_FILE: &str = "train_lines.bloom";

/// The poem model with its rule tables, ready to write.
pub struct Poet {
    model: model::PoetModel,
    /// The tones of each vocabulary entry.
    tones: Vec<Option<CharTones>>,
    rules: Rules,
    /// The character n-gram beside the weights, where there is one.
    ngram: Option<ngram::CharNgram>,
}

impl Poet {
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let model = model::PoetModel::load(dir, device, dtype)?;
        let tones = decode::vocab_tones(&model);
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
        let rules = Rules::new(tones.iter().flatten(), novelty);
        let ngram_path = dir.join(ngram::NGRAM_FILE);
        let ngram = if ngram_path.exists() {
            Some(ngram::CharNgram::load(&ngram_path, model.vocab_size())?)
        } else {
            tracing::warn!(
                "{} has no {}: poem.ngram_weight has no effect",
                dir.display(),
                ngram::NGRAM_FILE
            );
            None
        };
        Ok(Self {
            model,
            tones,
            rules,
            ngram,
        })
    }

    fn decoder(&mut self, sampling: Sampling) -> decode::Decoder<'_> {
        decode::Decoder {
            model: &mut self.model,
            tones: &self.tones,
            rules: &self.rules,
            ngram: self.ngram.as_ref(),
            sampling,
        }
    }

    /// Writes the request's candidates, best first by [`rank`] with
    /// `sampling.keyword_weight`.
    pub fn write(
        &mut self,
        request: &PoemRequest,
        sampling: Sampling,
    ) -> Result<Vec<Candidate>, PoemError> {
        let mut candidates = on_cpu_pool(|| self.decoder(sampling).write(request))?;
        rank(&mut candidates, ScoreWeights::of_poet(sampling));
        Ok(candidates)
    }

    /// [`Poet::write`] for several requests at once, sharing the model calls.
    pub fn write_batch(
        &mut self,
        requests: &[PoemRequest],
        sampling: Sampling,
    ) -> Vec<Result<Vec<Candidate>, PoemError>> {
        let mut answers = on_cpu_pool(|| self.decoder(sampling).write_batch(requests));
        for candidates in answers.iter_mut().flatten() {
            rank(candidates, ScoreWeights::of_poet(sampling));
        }
        answers
    }

    /// 换一句: the poem with one line written anew, best first, as [`Poet::write`] ranks.
    pub fn rewrite(
        &mut self,
        request: &LineRequest,
        sampling: Sampling,
    ) -> Result<Vec<Candidate>, PoemError> {
        let mut candidates = on_cpu_pool(|| self.decoder(sampling).rewrite(request))?;
        rank(&mut candidates, ScoreWeights::of_poet(sampling));
        Ok(candidates)
    }

    /// Your own line: `request.lines[request.line]` kept with the lines
    /// before it, the lines after it written on, best first as [`Poet::write`] ranks.
    pub fn continue_poem(
        &mut self,
        request: &LineRequest,
        sampling: Sampling,
    ) -> Result<Vec<Candidate>, PoemError> {
        let mut candidates = on_cpu_pool(|| self.decoder(sampling).continue_poem(request))?;
        rank(&mut candidates, ScoreWeights::of_poet(sampling));
        Ok(candidates)
    }

    /// Whether a line is in the training corpus, by the shipped line filter.
    pub(crate) fn copies_corpus(&self, line: &str) -> bool {
        self.rules.copies_corpus(line)
    }
}
