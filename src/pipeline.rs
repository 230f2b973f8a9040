//! The pipeline without Discord: photo bytes → keywords → poem.
//!
//! [`Matcher`] holds Chinese-CLIP and the keyword index; [`Pipeline`] adds the
//! poet and writes poems from keywords or from a photo, reranking a photo's
//! candidates by how close each poem's text lies to the photo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;

use crate::config::Config;
use crate::embedding::{self, ClipModel, ClipSource};
use crate::error::Error;
use crate::keywords::{dot, EmbeddingCache, KeywordIndex, Scored, Vocabulary};
use crate::photo::{self, PhotoLimits};
use crate::poem::{Candidate, Form, PoemRequest, Poet, Sampling};

/// Custom keyword lists (channels' own) kept embedded at most.
const CUSTOM_INDEXES: usize = 64;

/// Chinese-CLIP with the keyword vocabulary, embedded.
pub struct Matcher {
    clip: ClipModel,
    index: KeywordIndex,
    cache: EmbeddingCache,
    /// Indexes of custom lists, by the list.
    custom: HashMap<Vec<String>, KeywordIndex>,
    limits: PhotoLimits,
}

impl Matcher {
    /// `clip_dir` and `vocabulary` override the settings when given.
    pub fn load(
        config: &Config,
        clip_dir: Option<&Path>,
        vocabulary: Option<&Path>,
        device: &Device,
    ) -> Result<Self, Error> {
        let source = match clip_dir.map(Path::to_path_buf).or_else(|| {
            (!config.models.clip_dir.is_empty()).then(|| Config::resolve(&config.models.clip_dir))
        }) {
            Some(dir) => ClipSource::Dir(dir),
            None => ClipSource::Hub {
                repo: config.models.clip_repo.clone(),
                revision: config.models.clip_revision.clone(),
            },
        };
        let dir = embedding::locate(&source)?;
        let clip = ClipModel::load(&dir, device)?;
        let vocab_path = vocabulary
            .map(Path::to_path_buf)
            .unwrap_or_else(|| Config::resolve(&config.keywords.vocabulary));
        let vocabulary = Vocabulary::load(&vocab_path)?;
        let cache_dir = PathBuf::from(&config.models.cache_dir);
        let mut cache = EmbeddingCache::open(Some(&cache_dir), &clip);
        let index = KeywordIndex::build(&vocabulary, &clip, &mut cache)?;
        Ok(Self {
            clip,
            index,
            cache,
            custom: HashMap::new(),
            limits: PhotoLimits {
                max_bytes: config.photo.max_bytes,
                max_megapixels: config.photo.max_megapixels,
            },
        })
    }

    /// Decodes and embeds a photo; returns its feature and the best keywords
    /// of the vocabulary, or of `custom` (a channel's own list) when given.
    pub fn match_photo(
        &mut self,
        bytes: &[u8],
        top_k: usize,
        diverse: bool,
        custom: Option<&[String]>,
    ) -> Result<PhotoMatch, Error> {
        let img = photo::decode(bytes, self.limits)?;
        let feature = self.clip.embed_image(&img).map_err(|e| match e {
            embedding::EmbedError::Photo(p) => Error::Photo(p),
            embedding::EmbedError::Model(m) => Error::Model(m),
        })?;
        let index = match custom.filter(|words| !words.is_empty()) {
            None => &self.index,
            Some(words) => {
                if !self.custom.contains_key(words) {
                    if self.custom.len() >= CUSTOM_INDEXES {
                        self.custom.clear();
                    }
                    let vocabulary = Vocabulary::from_words(words);
                    let built = KeywordIndex::build(&vocabulary, &self.clip, &mut self.cache)?;
                    self.custom.insert(words.to_vec(), built);
                }
                &self.custom[words]
            }
        };
        let keywords = index.top_k(&feature, top_k, diverse);
        Ok(PhotoMatch { feature, keywords })
    }

    /// Cosine of each poem's text to a photo feature.
    pub fn poem_similarity(
        &self,
        feature: &[f32],
        poems: &[Vec<String>],
    ) -> Result<Vec<f32>, Error> {
        let texts: Vec<String> = poems.iter().map(|lines| lines.join("，")).collect();
        Ok(self
            .clip
            .embed_texts(&texts)?
            .iter()
            .map(|t| dot(t, feature))
            .collect())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PhotoMatch {
    #[serde(skip)]
    pub feature: Vec<f32>,
    pub keywords: Vec<Scored>,
}

/// What a poem request asks, whatever its source.
#[derive(Debug, Clone)]
pub struct PoemOptions {
    pub form: Form,
    pub acrostic: Option<String>,
    pub candidates: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoemResult {
    pub form: Form,
    pub keywords: Vec<String>,
    /// The photo's keywords with their scores, for photo requests.
    pub matched: Vec<Scored>,
    /// Best first.
    pub candidates: Vec<Candidate>,
}

pub struct Pipeline {
    pub poet: Poet,
    pub matcher: Option<Matcher>,
    sampling: Sampling,
    keyword_weight: f64,
    clip_weight: f64,
    top_k: usize,
    diverse: bool,
}

impl Pipeline {
    pub fn new(config: &Config, poet: Poet, matcher: Option<Matcher>) -> Self {
        Self {
            poet,
            matcher,
            sampling: Sampling {
                temperature: config.poem.temperature,
                top_p: config.poem.top_p,
                keyword_bonus: config.poem.keyword_bonus,
            },
            keyword_weight: config.poem.keyword_weight,
            clip_weight: config.poem.clip_weight,
            top_k: config.keywords.top_k,
            diverse: config.keywords.diverse,
        }
    }

    /// A poem from the user's keywords.
    pub fn poem_from_keywords(
        &mut self,
        keywords: Vec<String>,
        options: &PoemOptions,
    ) -> Result<PoemResult, Error> {
        let candidates = self.write(&keywords, options)?;
        Ok(PoemResult {
            form: options.form,
            keywords,
            matched: Vec::new(),
            candidates,
        })
    }

    /// A poem from a photo: its top-K keywords (after any the user gave) from
    /// the vocabulary or the given list, and the candidates reranked with
    /// `clip_weight` × poem–photo similarity.
    pub fn poem_from_photo(
        &mut self,
        bytes: &[u8],
        extra_keywords: Vec<String>,
        vocabulary: Option<&[String]>,
        options: &PoemOptions,
    ) -> Result<PoemResult, Error> {
        let matcher = self
            .matcher
            .as_mut()
            .ok_or_else(|| Error::Input("no photo matcher loaded".into()))?;
        let matched = matcher.match_photo(bytes, self.top_k, self.diverse, vocabulary)?;
        let mut keywords = extra_keywords;
        for s in &matched.keywords {
            if !keywords.contains(&s.keyword) {
                keywords.push(s.keyword.clone());
            }
        }
        let mut candidates = self.write(&keywords, options)?;
        let matcher = self.matcher.as_ref().expect("checked above");
        let poems: Vec<Vec<String>> = candidates.iter().map(|c| c.lines.clone()).collect();
        let similarity = matcher.poem_similarity(&matched.feature, &poems)?;
        for (c, s) in candidates.iter_mut().zip(similarity) {
            c.score += self.clip_weight * s as f64;
        }
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(PoemResult {
            form: options.form,
            keywords,
            matched: matched.keywords,
            candidates,
        })
    }

    fn write(
        &mut self,
        keywords: &[String],
        options: &PoemOptions,
    ) -> Result<Vec<Candidate>, Error> {
        let request = PoemRequest {
            form: options.form,
            keywords: keywords.to_vec(),
            acrostic: options.acrostic.clone(),
            candidates: options.candidates,
            seed: options.seed,
        };
        Ok(self
            .poet
            .write(&request, self.sampling, self.keyword_weight)?)
    }
}
