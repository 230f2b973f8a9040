//! What a poet is asked and what it answers: requests, sampling settings,
//! candidates, and the one place a candidate's score is computed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Form, LineSource};

/// Which poet writes: the embedded T5, or a chat LLM hosted by mistral.rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoetChoice {
    #[default]
    T5,
    Llm,
}

impl PoetChoice {
    pub(crate) fn name(self) -> &'static str {
        match self {
            PoetChoice::T5 => "t5",
            PoetChoice::Llm => "llm",
        }
    }
}

impl fmt::Display for PoetChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PoetChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "t5" => Ok(PoetChoice::T5),
            "llm" => Ok(PoetChoice::Llm),
            _ => Err(format!("unknown poet '{s}': expected t5 or llm")),
        }
    }
}

/// How a poem is made: written character by character by a poet (the T5 or
/// the LLM), or 集句, assembled from real lines of the corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    #[default]
    Generate,
    Jiju,
}

impl Style {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Style::Generate => "generate",
            Style::Jiju => "jiju",
        }
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Style {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "generate" => Ok(Style::Generate),
            "jiju" | "集句" => Ok(Style::Jiju),
            _ => Err(format!(
                "unknown style '{s}': expected generate or jiju (集句)"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PoemRequest {
    pub form: Form,
    pub keywords: Vec<String>,
    /// 藏头: line i starts with the i-th character.
    pub acrostic: Option<String>,
    pub candidates: usize,
    pub seed: u64,
}

/// 换一句: write line `line` of a finished poem anew, the other lines kept.
#[derive(Debug, Clone)]
pub struct LineRequest {
    /// The poem's form, keywords, acrostic; the number of new lines to try and the seed.
    pub poem: PoemRequest,
    pub lines: Vec<String>,
    pub line: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// 0 picks the most likely allowed character (greedy).
    pub temperature: f64,
    pub top_p: f64,
    pub keyword_bonus: f32,
    /// The weight of the share of keywords used in a poem's score.
    pub keyword_weight: f64,
    /// The T5 poet's mixture: this share of each character's probability
    /// comes from the character n-gram, the rest from the T5 (0: the T5 alone;
    /// held to 0–1).
    pub ngram_weight: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub lines: Vec<String>,
    /// Mean log-probability of the poem's characters under the poet (the T5's
    /// mixture with its n-gram, or the LLM; for a
    /// rewritten line: of the new line and the lines after it).
    pub mean_logprob: f64,
    pub keywords_used: Vec<String>,
    /// Share of the request's keywords the poem contains (1 when none were given).
    pub(crate) keyword_share: f64,
    /// Cosine similarity of the poem's text to the photo it was written for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) photo_similarity: Option<f64>,
    /// The rerank score, set by [`rank`]; the best candidate has the highest.
    pub score: f64,
    /// 集句: where each line comes from (empty for a written poem).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<LineSource>,
}

impl Candidate {
    pub(crate) fn new(
        lines: Vec<String>,
        mean_logprob: f64,
        keywords_used: Vec<String>,
        keywords: usize,
    ) -> Self {
        let keyword_share = if keywords == 0 {
            1.0
        } else {
            keywords_used.len() as f64 / keywords as f64
        };
        Self {
            lines,
            mean_logprob,
            keywords_used,
            keyword_share,
            photo_similarity: None,
            score: mean_logprob,
            sources: Vec::new(),
        }
    }
}

/// How much each part of a candidate weighs in its score beside its mean log-probability.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScoreWeights {
    pub(crate) keyword_share: f64,
    pub(crate) photo_similarity: f64,
}

impl ScoreWeights {
    /// The poet's own ranking: the photo's similarity is added later, where the photo is.
    pub(crate) fn of_poet(sampling: Sampling) -> Self {
        Self {
            keyword_share: sampling.keyword_weight,
            photo_similarity: 0.0,
        }
    }
}

/// Scores the candidates — mean log-probability + the weighted keyword share
/// and photo similarity — and sorts them best first.
pub(crate) fn rank(candidates: &mut [Candidate], weights: ScoreWeights) {
    for c in candidates.iter_mut() {
        c.score = c.mean_logprob
            + weights.keyword_share * c.keyword_share
            + weights.photo_similarity * c.photo_similarity.unwrap_or(0.0);
    }
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
}
