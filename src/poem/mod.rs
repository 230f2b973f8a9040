//! Keywords → poem: the T5 poet, decoding under the 格律 rules, and the checker.
//!
//! - [`model`]: the character-level T5 on candle (`t5`: the network itself).
//! - [`request`]: what a poet is asked and answers, and the one ranking of candidates.
//! - [`rules`]: the rule engine every poet writes under: which character may come next.
//! - [`decode`]: the T5's line-by-line constrained sampling of N candidates ([`sample`]).
//! - [`ngram`]: the character n-gram the T5's probabilities are mixed with.
//! - `llm` (feature `llm`): a chat LLM on mistral.rs, under the same rules.
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

pub use form::Form;
#[cfg(feature = "llm")]
pub use llm::{LlmPoet, LlmSpec};
pub(crate) use request::{rank, ScoreWeights};
pub use request::{Candidate, LineRequest, PoemRequest, PoetChoice, Sampling};

use crate::error::{ModelError, PoemError};
use rules::{CharTones, Rules};

/// The most candidates a batch may have to be written on the poet's one thread.
const ONE_THREAD_ROWS: usize = 32;

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
    /// On a CPU with AVX-512, a batch of at most [`ONE_THREAD_ROWS`] candidates
    /// is written on one thread of the poet's own: its matrices have a row per
    /// candidate, and splitting such small products across cores cost more
    /// than it saved. On a 2-core AMD EPYC with AVX-512 a 七绝 of 8 candidates
    /// took 288–307 ms on one thread against 365–444 ms on two, and of 32
    /// candidates 878–921 against 982–992 ms; but served photos in batches of
    /// 64 candidates went at 1.27 photos/s on one thread against 1.49 on two.
    /// With AVX2 alone (vectors half as wide) each product takes longer and
    /// the split pays: on a 2-core AMD EPYC (Zen 3), alternating runs of 20
    /// poems, 8 candidates took 642 / 629 / 700 ms on two threads against
    /// 751 / 806 / 686 ms on one.
    one_thread: Option<rayon::ThreadPool>,
}

/// Whether this CPU multiplies a few candidates' rows faster on one thread
/// than split across cores (the measurements are at `Poet::one_thread`).
fn small_products_want_one_thread() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
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
        let one_thread = if device.is_cpu() && small_products_want_one_thread() {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "yingshi-poet".into())
                .build()
                .map_err(ModelError::Thread)?;
            Some(pool)
        } else {
            None
        };
        Ok(Self {
            model,
            tones,
            rules,
            ngram,
            one_thread,
        })
    }

    /// Runs `write` with a decoder for `rows` candidates, on the poet's own
    /// thread where it has one and the batch is small.
    fn decoding<T: Send>(
        &mut self,
        sampling: Sampling,
        rows: usize,
        write: impl FnOnce(decode::Decoder<'_>) -> T + Send,
    ) -> T {
        let decoder = decode::Decoder {
            model: &mut self.model,
            tones: &self.tones,
            rules: &self.rules,
            ngram: self.ngram.as_ref(),
            sampling,
        };
        match &self.one_thread {
            Some(pool) if rows <= ONE_THREAD_ROWS => pool.install(|| write(decoder)),
            _ => write(decoder),
        }
    }

    /// Writes the request's candidates, best first by [`rank`] with
    /// `sampling.keyword_weight`.
    pub fn write(
        &mut self,
        request: &PoemRequest,
        sampling: Sampling,
    ) -> Result<Vec<Candidate>, PoemError> {
        let mut candidates = self.decoding(sampling, request.candidates, |mut decoder| {
            decoder.write(request)
        })?;
        rank(&mut candidates, ScoreWeights::of_poet(sampling));
        Ok(candidates)
    }

    /// [`Poet::write`] for several requests at once, sharing the model calls.
    pub fn write_batch(
        &mut self,
        requests: &[PoemRequest],
        sampling: Sampling,
    ) -> Vec<Result<Vec<Candidate>, PoemError>> {
        let rows = requests.iter().map(|r| r.candidates).sum();
        let mut answers =
            self.decoding(sampling, rows, |mut decoder| decoder.write_batch(requests));
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
        let mut candidates = self.decoding(sampling, request.poem.candidates, |mut decoder| {
            decoder.rewrite(request)
        })?;
        rank(&mut candidates, ScoreWeights::of_poet(sampling));
        Ok(candidates)
    }

    /// Whether a line is in the training corpus, by the shipped line filter.
    pub(crate) fn copies_corpus(&self, line: &str) -> bool {
        self.rules.copies_corpus(line)
    }
}
