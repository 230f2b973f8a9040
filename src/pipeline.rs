//! The pipeline without Discord: photo bytes → keywords → poem.
//!
//! [`Matcher`] holds Chinese-CLIP and the keyword index; [`Pipeline`] adds the
//! poet and answers [`Request`]s: a poem from keywords or from a photo (whose
//! candidates are reranked by how close each poem's text lies to the photo),
//! or one line of a poem written anew; each written by the T5 or the LLM, or
//! assembled by the 集句 poet (`PoemOptions::style`). Requests that come together run
//! together ([`Pipeline::run_batch`]): their photos as one Chinese-CLIP batch,
//! their poems' candidates as one T5 batch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;
use serde::Serialize;

use crate::config::Config;
use crate::device::on_cpu_pool;
use crate::device::Placement;
use crate::embedding::{self, ClipModel, ClipSource, ProductPrecision};
use crate::error::{Error, LlmError, PoemError};
use crate::keywords::{dot, EmbeddingCache, KeywordIndex, KeywordList, Scored, Vocabulary};
use crate::photo::{self, PhotoLimits};
#[cfg(feature = "llm")]
use crate::poem::LlmPoet;
use crate::poem::{
    rank, read_own_line, Candidate, Form, JijuPoet, LineRequest, PoemRequest, Poet, PoetChoice,
    Sampling, ScoreWeights, Style,
};

/// Custom keyword lists (channels' own) kept embedded at most.
const CUSTOM_INDEXES: usize = 64;

/// Chinese-CLIP with the keyword vocabulary, embedded.
pub struct Matcher {
    clip: ClipModel,
    index: KeywordIndex,
    cache: EmbeddingCache,
    /// Indexes of channels' lists, by the list.
    custom: HashMap<KeywordList, KeywordIndex>,
    limits: PhotoLimits,
    /// The vision tower's products (`keywords.photo_bf16`).
    photo_precision: ProductPrecision,
}

impl Matcher {
    /// `clip_dir` and `vocabulary` override the settings when given.
    pub fn load(
        config: &Config,
        clip_dir: Option<&Path>,
        vocabulary: Option<&Path>,
        placement: &Placement,
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
        let clip = ClipModel::load(&dir, &placement.device, placement.dtype)?;
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
            photo_precision: config.keywords.photo_precision(),
        })
    }

    /// Decodes and embeds a photo; returns the best keywords of the list.
    pub fn match_photo(
        &mut self,
        bytes: &[u8],
        top_k: usize,
        diverse: bool,
        list: &KeywordList,
    ) -> Result<Vec<Scored>, Error> {
        let feature = self.embed_photos(&[bytes]).swap_remove(0)?;
        self.top_keywords(&feature, top_k, diverse, list)
    }

    /// How many keywords the built-in vocabulary (or `--keywords-file`) holds.
    pub fn vocabulary_size(&self) -> usize {
        self.index.len()
    }

    /// Decodes photos and embeds those that decode as one batch.
    pub(crate) fn embed_photos(&self, photos: &[&[u8]]) -> Vec<Result<Vec<f32>, Error>> {
        // The photos that decode go to the model; the others keep their error.
        let mut images: Vec<DynamicImage> = Vec::new();
        let decoded: Vec<Result<(), Error>> = photos
            .iter()
            .map(|bytes| {
                images.push(photo::decode(bytes, self.limits)?);
                Ok(())
            })
            .collect();
        let mut features = match self.clip.embed_images(&images, self.photo_precision) {
            Ok(features) => features.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => {
                let e = Arc::new(Error::from(e));
                images
                    .iter()
                    .map(|_| Err(Error::Batch(Arc::clone(&e))))
                    .collect()
            }
        }
        .into_iter();
        decoded
            .into_iter()
            .map(|d| d.and_then(|_| features.next().expect("one feature per image")))
            .collect()
    }

    /// The best keywords for a photo feature, from the list.
    pub(crate) fn top_keywords(
        &mut self,
        feature: &[f32],
        top_k: usize,
        diverse: bool,
        list: &KeywordList,
    ) -> Result<Vec<Scored>, Error> {
        let words = match list {
            KeywordList::BuiltIn => return Ok(self.index.top_k(feature, top_k, diverse)),
            KeywordList::Added(words) | KeywordList::Only(words) => words,
        };
        if !self.custom.contains_key(list) {
            if self.custom.len() >= CUSTOM_INDEXES {
                self.custom.clear();
            }
            let vocabulary = Vocabulary::from_words(words);
            let own = KeywordIndex::build(&vocabulary, &self.clip, &mut self.cache)?;
            let built = match list {
                KeywordList::Added(_) => self.index.with(&own),
                _ => own,
            };
            self.custom.insert(list.clone(), built);
        }
        Ok(self.custom[list].top_k(feature, top_k, diverse))
    }
}

/// What a poem request asks, whatever its source.
#[derive(Debug, Clone)]
pub struct PoemOptions {
    /// Written by `poet`, or 集句.
    pub style: Style,
    pub poet: PoetChoice,
    pub form: Form,
    pub acrostic: Option<String>,
    pub candidates: usize,
    pub seed: u64,
}

/// What the pipeline can be asked.
#[derive(Debug, Clone)]
pub enum Request {
    /// A poem from the user's keywords.
    Keywords {
        keywords: Vec<String>,
        options: PoemOptions,
    },
    /// A poem from a photo: its top-K keywords (after any the user gave).
    Photo {
        bytes: Vec<u8>,
        keywords: Vec<String>,
        /// The keywords the photo is matched against.
        vocabulary: KeywordList,
        /// How many keywords to take; `None`: `keywords.top_k`.
        top_k: Option<usize>,
        options: PoemOptions,
    },
    /// 换一句: line `line` of a poem written anew, the other lines kept.
    Line {
        keywords: Vec<String>,
        lines: Vec<String>,
        line: usize,
        options: PoemOptions,
    },
    /// Your own line: `text` put at line `line` of a poem, the lines after
    /// it written on so that the poem still scans and rhymes; with
    /// `rewrite_before`, the lines before it are then written anew too.
    OwnLine {
        keywords: Vec<String>,
        lines: Vec<String>,
        line: usize,
        text: String,
        rewrite_before: bool,
        options: PoemOptions,
    },
}

/// Who makes a poem: a poet of the generator, or the 集句 poet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Maker {
    Written(PoetChoice),
    Jiju,
}

impl PoemOptions {
    fn maker(&self) -> Maker {
        match self.style {
            Style::Generate => Maker::Written(self.poet),
            Style::Jiju => Maker::Jiju,
        }
    }
}

impl Request {
    /// The candidate rows the poet writes for it: what it costs a batch.
    pub(crate) fn rows(&self) -> usize {
        self.options().candidates.max(1)
    }

    pub(crate) fn options(&self) -> &PoemOptions {
        match self {
            Request::Keywords { options, .. }
            | Request::Photo { options, .. }
            | Request::Line { options, .. }
            | Request::OwnLine { options, .. } => options,
        }
    }
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
    poet: Poet,
    /// The chat LLM, for requests that choose it.
    #[cfg(feature = "llm")]
    llm: Option<LlmPoet>,
    /// The 集句 poet, for requests that choose it.
    jiju: Option<JijuPoet>,
    matcher: Option<Matcher>,
    sampling: Sampling,
    clip_weight: f64,
    /// The products of the poems' features in the rerank (`poem.rerank_bf16`).
    rerank_precision: ProductPrecision,
    top_k: usize,
    diverse: bool,
}

/// What a photo request asks of the matcher.
struct PhotoAsk<'a> {
    bytes: &'a [u8],
    vocabulary: &'a KeywordList,
    top_k: usize,
}

/// A photo request's progress through a batch.
struct PhotoWork {
    feature: Vec<f32>,
    matched: Vec<Scored>,
}

impl Pipeline {
    pub fn new(config: &Config, poet: Poet, matcher: Option<Matcher>) -> Self {
        Self {
            poet,
            #[cfg(feature = "llm")]
            llm: None,
            jiju: None,
            matcher,
            sampling: config.sampling(),
            clip_weight: config.poem.clip_weight,
            rerank_precision: config.poem.rerank_precision(),
            top_k: config.keywords.top_k,
            diverse: config.keywords.diverse,
        }
    }

    /// Gives the pipeline a chat LLM for requests that choose it.
    #[cfg(feature = "llm")]
    pub fn attach_llm(&mut self, llm: LlmPoet) {
        self.llm = Some(llm);
    }

    /// Gives the pipeline the 集句 poet for requests that choose it.
    pub fn attach_jiju(&mut self, jiju: JijuPoet) {
        self.jiju = Some(jiju);
    }

    /// Whether the 集句 poet is loaded.
    pub(crate) fn has_jiju(&self) -> bool {
        self.jiju.is_some()
    }

    /// Whether a chat LLM is loaded for requests that choose it.
    pub(crate) fn has_llm(&self) -> bool {
        #[cfg(feature = "llm")]
        return self.llm.is_some();
        #[cfg(not(feature = "llm"))]
        false
    }

    pub fn run(&mut self, request: &Request) -> Result<PoemResult, Error> {
        self.run_batch(std::slice::from_ref(request))
            .pop()
            .expect("one answer per request")
    }

    /// Answers requests together, in their order; each answer is what
    /// [`Pipeline::run`] gives for that request alone.
    pub fn run_batch(&mut self, requests: &[Request]) -> Vec<Result<PoemResult, Error>> {
        let photos = self.match_photos(requests);
        let mut answers: Vec<Option<Result<PoemResult, Error>>> =
            requests.iter().map(|_| None).collect();
        // The poems to write, and whose each is: the request's index and its photo, if any.
        let mut to_write: Vec<PoemRequest> = Vec::new();
        let mut owners: Vec<(usize, Option<PhotoWork>)> = Vec::new();
        for (i, (request, photo)) in requests.iter().zip(photos).enumerate() {
            match request {
                Request::Keywords { keywords, options } => {
                    to_write.push(poem_request(keywords, options));
                    owners.push((i, None));
                }
                Request::Photo {
                    keywords, options, ..
                } => match photo.expect("photo requests are matched") {
                    Ok(work) => {
                        let mut keywords = keywords.clone();
                        for s in &work.matched {
                            if !keywords.contains(&s.keyword) {
                                keywords.push(s.keyword.clone());
                            }
                        }
                        to_write.push(poem_request(&keywords, options));
                        owners.push((i, Some(work)));
                    }
                    Err(e) => answers[i] = Some(Err(e)),
                },
                Request::Line {
                    keywords,
                    lines,
                    line,
                    options,
                } => {
                    let request = LineRequest {
                        poem: poem_request(keywords, options),
                        lines: lines.clone(),
                        line: *line,
                    };
                    let answer = self.rewrite(&request, options.maker());
                    answers[i] = Some(without_photo(answer, keywords, options));
                }
                Request::OwnLine {
                    keywords,
                    lines,
                    line,
                    text,
                    rewrite_before,
                    options,
                } => {
                    let answer =
                        self.own_line(keywords, lines, *line, text, *rewrite_before, options);
                    answers[i] = Some(without_photo(answer, keywords, options));
                }
            }
        }

        let makers: Vec<Maker> = owners
            .iter()
            .map(|(i, _)| requests[*i].options().maker())
            .collect();
        let written = self.write(&to_write, &makers);
        // Each written poem, with its photo's feature for the rerank.
        let mut finished: Vec<(usize, PoemResult, Option<Vec<f32>>)> = Vec::new();
        for ((request, (i, photo)), candidates) in to_write.into_iter().zip(owners).zip(written) {
            match candidates {
                Ok(candidates) => {
                    let (feature, matched) = match photo {
                        Some(work) => (Some(work.feature), work.matched),
                        None => (None, Vec::new()),
                    };
                    let result = PoemResult {
                        form: request.form,
                        keywords: request.keywords,
                        matched,
                        candidates,
                    };
                    finished.push((i, result, feature));
                }
                Err(e) => answers[i] = Some(Err(e.into())),
            }
        }
        self.rerank_by_photo(&mut finished);
        for (i, result, _) in finished {
            answers[i].get_or_insert(Ok(result));
        }
        answers
            .into_iter()
            .map(|a| a.expect("every request is answered"))
            .collect()
    }

    /// Each poem by the maker its request chose: the T5's as one batch, the
    /// LLM's as another, the 集句 poet's one by one.
    fn write(
        &mut self,
        poems: &[PoemRequest],
        makers: &[Maker],
    ) -> Vec<Result<Vec<Candidate>, PoemError>> {
        let mut answers: Vec<Option<Result<Vec<Candidate>, PoemError>>> =
            poems.iter().map(|_| None).collect();
        for maker in [
            Maker::Written(PoetChoice::T5),
            Maker::Written(PoetChoice::Llm),
            Maker::Jiju,
        ] {
            let (at, group): (Vec<usize>, Vec<PoemRequest>) = poems
                .iter()
                .zip(makers)
                .enumerate()
                .filter(|(_, (_, &m))| m == maker)
                .map(|(i, (poem, _))| (i, poem.clone()))
                .unzip();
            if group.is_empty() {
                continue;
            }
            let written = match maker {
                Maker::Written(PoetChoice::T5) => self.poet.write_batch(&group, self.sampling),
                Maker::Written(PoetChoice::Llm) => self.write_llm(&group),
                Maker::Jiju => self.write_jiju(&group),
            };
            for (i, answer) in at.into_iter().zip(written) {
                answers[i] = Some(answer);
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every poem has a poet"))
            .collect()
    }

    #[cfg(feature = "llm")]
    fn write_llm(&mut self, poems: &[PoemRequest]) -> Vec<Result<Vec<Candidate>, PoemError>> {
        match self.llm.as_mut() {
            Some(llm) => llm.write_batch(poems, self.sampling),
            None => poems
                .iter()
                .map(|_| Err(LlmError::NotLoaded.into()))
                .collect(),
        }
    }

    #[cfg(not(feature = "llm"))]
    fn write_llm(&mut self, poems: &[PoemRequest]) -> Vec<Result<Vec<Candidate>, PoemError>> {
        poems
            .iter()
            .map(|_| Err(LlmError::NotBuilt.into()))
            .collect()
    }

    /// 集句 poems, ranked as the poets' are.
    fn write_jiju(&self, poems: &[PoemRequest]) -> Vec<Result<Vec<Candidate>, PoemError>> {
        let Some(jiju) = &self.jiju else {
            return poems.iter().map(|_| Err(PoemError::NoJiju)).collect();
        };
        let weights = ScoreWeights::of_poet(self.sampling);
        on_cpu_pool(|| {
            poems
                .iter()
                .map(|poem| {
                    let mut candidates = jiju.write(poem)?;
                    rank(&mut candidates, weights);
                    Ok(candidates)
                })
                .collect()
        })
    }

    fn rewrite(
        &mut self,
        request: &LineRequest,
        maker: Maker,
    ) -> Result<Vec<Candidate>, PoemError> {
        match maker {
            Maker::Written(PoetChoice::T5) => self.poet.rewrite(request, self.sampling),
            #[cfg(feature = "llm")]
            Maker::Written(PoetChoice::Llm) => match self.llm.as_mut() {
                Some(llm) => llm.rewrite(request, self.sampling),
                None => Err(LlmError::NotLoaded.into()),
            },
            #[cfg(not(feature = "llm"))]
            Maker::Written(PoetChoice::Llm) => Err(LlmError::NotBuilt.into()),
            Maker::Jiju => {
                let jiju = self.jiju.as_ref().ok_or(PoemError::NoJiju)?;
                let mut candidates = on_cpu_pool(|| jiju.rewrite(request))?;
                rank(&mut candidates, ScoreWeights::of_poet(self.sampling));
                Ok(candidates)
            }
        }
    }

    /// Your own line at `line`, the lines after it written on by the T5
    /// poet; with `rewrite_before`, each line before it then written anew
    /// in turn (换一句), the best kept each time.
    fn own_line(
        &mut self,
        keywords: &[String],
        lines: &[String],
        line: usize,
        text: &str,
        rewrite_before: bool,
        options: &PoemOptions,
    ) -> Result<Vec<Candidate>, PoemError> {
        match options.maker() {
            Maker::Written(PoetChoice::T5) => {}
            Maker::Written(PoetChoice::Llm) => {
                return Err(PoemError::OwnLineUnsupported(
                    "this channel's poet is the LLM",
                ))
            }
            Maker::Jiju => {
                return Err(PoemError::OwnLineUnsupported(
                    "a 集句 is made of old poets' lines only",
                ))
            }
        }
        let mut poem = lines.to_vec();
        if line >= poem.len() {
            return Err(PoemError::Lines(format!(
                "there is no line {} in a {}",
                line + 1,
                options.form
            )));
        }
        poem[line] = read_own_line(options.form, text)?;
        let request = LineRequest {
            poem: poem_request(keywords, options),
            lines: poem,
            line,
        };
        let mut candidates = self.poet.continue_poem(&request, self.sampling)?;
        if rewrite_before {
            for before in 0..line {
                let request = LineRequest {
                    poem: poem_request(keywords, options),
                    lines: candidates[0].lines.clone(),
                    line: before,
                };
                candidates = self.poet.rewrite(&request, self.sampling)?;
            }
        }
        Ok(candidates)
    }

    /// The photos of a batch, embedded together, and their keywords; `None`
    /// for requests without a photo.
    fn match_photos(&mut self, requests: &[Request]) -> Vec<Option<Result<PhotoWork, Error>>> {
        let photos: Vec<PhotoAsk> = requests
            .iter()
            .filter_map(|r| match r {
                Request::Photo {
                    bytes,
                    vocabulary,
                    top_k,
                    ..
                } => Some(PhotoAsk {
                    bytes,
                    vocabulary,
                    top_k: top_k.unwrap_or(self.top_k),
                }),
                _ => None,
            })
            .collect();
        let mut matched = match self.matcher.as_mut() {
            _ if photos.is_empty() => Vec::new(),
            None => photos
                .iter()
                .map(|_| {
                    Err(Error::Internal(
                        "a photo request reached a pipeline without Chinese-CLIP",
                    ))
                })
                .collect(),
            Some(matcher) => {
                let bytes: Vec<&[u8]> = photos.iter().map(|p| p.bytes).collect();
                let features = matcher.embed_photos(&bytes);
                features
                    .into_iter()
                    .zip(&photos)
                    .map(|(feature, photo)| {
                        let feature = feature?;
                        let matched = matcher.top_keywords(
                            &feature,
                            photo.top_k,
                            self.diverse,
                            photo.vocabulary,
                        )?;
                        Ok(PhotoWork { feature, matched })
                    })
                    .collect()
            }
        }
        .into_iter();
        requests
            .iter()
            .map(|r| {
                matches!(r, Request::Photo { .. }).then(|| matched.next().expect("one per photo"))
            })
            .collect()
    }

    /// Gives photo poems' candidates their poem–photo similarity (all poems'
    /// texts embedded together) and ranks them again with it. The poems'
    /// features may take their products in bf16 (`poem.rerank_bf16`): the
    /// similarity only orders a photo's candidates, and the keywords' own
    /// scores stay in f32.
    fn rerank_by_photo(&self, finished: &mut [(usize, PoemResult, Option<Vec<f32>>)]) {
        let Some(matcher) = &self.matcher else {
            return;
        };
        let texts: Vec<String> = finished
            .iter()
            .filter(|f| f.2.is_some())
            .flat_map(|f| f.1.candidates.iter().map(|c| c.lines.join("，")))
            .collect();
        if texts.is_empty() {
            return;
        }
        let features = match matcher.clip.embed_texts_in(&texts, self.rerank_precision) {
            Ok(features) => features,
            Err(e) => {
                // The poems stand as the poet ranked them.
                tracing::warn!("poem–photo similarity failed: {e}");
                return;
            }
        };
        let mut features = features.iter();
        for (_, result, photo) in finished.iter_mut() {
            let Some(photo) = photo else { continue };
            for c in &mut result.candidates {
                let text = features.next().expect("one feature per poem");
                c.photo_similarity = Some(dot(text, photo) as f64);
            }
            let weights = ScoreWeights {
                keyword_share: self.sampling.keyword_weight,
                photo_similarity: self.clip_weight,
            };
            rank(&mut result.candidates, weights);
        }
    }
}

/// The answer to a request about a poem already written (换一句, your own line).
fn without_photo(
    written: Result<Vec<Candidate>, PoemError>,
    keywords: &[String],
    options: &PoemOptions,
) -> Result<PoemResult, Error> {
    let candidates = written?;
    Ok(PoemResult {
        form: options.form,
        keywords: keywords.to_vec(),
        matched: Vec::new(),
        candidates,
    })
}

fn poem_request(keywords: &[String], options: &PoemOptions) -> PoemRequest {
    PoemRequest {
        form: options.form,
        keywords: keywords.to_vec(),
        acrostic: options.acrostic.clone(),
        candidates: options.candidates,
        seed: options.seed,
    }
}
