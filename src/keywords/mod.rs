//! The keyword vocabulary, its cached embeddings, and the top-K match of a photo.
//!
//! Two file formats: the default vocabulary's (`keywords/default.txt`:
//! `# 类别` headings, `[主题] 关键词:提示语;提示语 | …` lines) and a plain list,
//! one keyword a line, each scored by its own text as the prototype did.
//! A keyword's embedding is the normalised mean of its prompts' embeddings
//! (prompt ensembling, as in the CLIP paper).

mod cache;

use std::path::Path;

use serde::Serialize;

pub use cache::EmbeddingCache;

use crate::embedding::ClipModel;
use crate::error::{KeywordError, ModelError, VocabularyError};

#[derive(Debug, Clone, PartialEq)]
pub struct Keyword {
    pub(crate) word: String,
    /// The diverse top-K takes at most one keyword of a topic.
    pub(crate) topic: String,
    pub(crate) category: String,
    pub prompts: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    pub keywords: Vec<Keyword>,
}

impl Vocabulary {
    pub fn load(path: &Path) -> Result<Self, KeywordError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeywordError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|problem| KeywordError::Format {
            path: path.to_owned(),
            problem,
        })
    }

    /// Reads either format: a file with `[主题]` lines is the vocabulary format.
    pub fn parse(text: &str) -> Result<Self, VocabularyError> {
        let structured = text.lines().any(|l| l.trim_start().starts_with('['));
        let mut keywords = Vec::new();
        let mut category = String::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(heading) = line.strip_prefix('#') {
                // A heading is one short word; longer `#` lines are comments.
                let heading = heading.trim();
                if !heading.is_empty() && heading.chars().count() <= 8 && !heading.contains(' ') {
                    category = heading.to_owned();
                }
                continue;
            }
            if !structured {
                keywords.push(Keyword {
                    word: line.to_owned(),
                    topic: line.to_owned(),
                    category: String::new(),
                    prompts: vec![line.to_owned()],
                });
                continue;
            }
            let (topic, body) = line
                .strip_prefix('[')
                .and_then(|l| l.split_once(']'))
                .ok_or(VocabularyError::NotAnEntry(n + 1))?;
            for entry in body.split('|').map(str::trim).filter(|e| !e.is_empty()) {
                let (word, prompts) = match entry.split_once(':') {
                    Some((w, p)) => (
                        w.trim(),
                        p.split(';')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    ),
                    None => (entry, Vec::new()),
                };
                if word.is_empty() {
                    return Err(VocabularyError::EmptyKeyword(n + 1));
                }
                let prompts = if prompts.is_empty() {
                    vec![word.to_owned()]
                } else {
                    prompts
                };
                keywords.push(Keyword {
                    word: word.to_owned(),
                    topic: topic.trim().to_owned(),
                    category: category.clone(),
                    prompts,
                });
            }
        }
        if keywords.is_empty() {
            return Err(VocabularyError::NoKeywords);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = keywords.iter().find(|k| !seen.insert(k.word.as_str())) {
            return Err(VocabularyError::Twice(dup.word.clone()));
        }
        Ok(Self { keywords })
    }

    /// A vocabulary of the given words, each its own prompt and topic.
    pub fn from_words(words: &[String]) -> Self {
        Self {
            keywords: words
                .iter()
                .map(|w| Keyword {
                    word: w.clone(),
                    topic: w.clone(),
                    category: String::new(),
                    prompts: vec![w.clone()],
                })
                .collect(),
        }
    }
}

/// Which keywords a photo is matched against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum KeywordList {
    /// The built-in vocabulary.
    #[default]
    BuiltIn,
    /// The built-in vocabulary and these words.
    Added(Vec<String>),
    /// Only these words.
    Only(Vec<String>),
}

impl KeywordList {
    /// A channel's list: its own words, alone or beside the built-in ones.
    pub(crate) fn of_channel(words: Option<&[String]>, only: bool) -> Self {
        match words.filter(|w| !w.is_empty()) {
            None => KeywordList::BuiltIn,
            Some(w) if only => KeywordList::Only(w.to_vec()),
            Some(w) => KeywordList::Added(w.to_vec()),
        }
    }
}

/// A keyword with its cosine score against a photo.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Scored {
    pub keyword: String,
    pub score: f32,
    pub(crate) topic: String,
}

/// A vocabulary with one normalised embedding per keyword.
pub struct KeywordIndex {
    keywords: Vec<Keyword>,
    embeddings: Vec<Vec<f32>>,
}

impl KeywordIndex {
    /// How many keywords it holds.
    pub fn len(&self) -> usize {
        self.keywords.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keywords.is_empty()
    }

    /// Embeds the vocabulary's prompts, reusing the cache for texts seen before.
    pub fn build(
        vocabulary: &Vocabulary,
        clip: &ClipModel,
        cache: &mut EmbeddingCache,
    ) -> Result<Self, ModelError> {
        let prompts: Vec<String> = vocabulary
            .keywords
            .iter()
            .flat_map(|k| k.prompts.iter().cloned())
            .collect();
        let prompt_embeddings = cache.embed(clip, &prompts)?;
        let mut at = 0;
        let embeddings = vocabulary
            .keywords
            .iter()
            .map(|k| {
                let rows = &prompt_embeddings[at..at + k.prompts.len()];
                at += k.prompts.len();
                mean_normalized(rows)
            })
            .collect();
        Ok(Self {
            keywords: vocabulary.keywords.clone(),
            embeddings,
        })
    }

    /// This index with another's keywords after its own (those it lacks).
    pub(crate) fn with(&self, other: &KeywordIndex) -> KeywordIndex {
        let mut joined = KeywordIndex {
            keywords: self.keywords.clone(),
            embeddings: self.embeddings.clone(),
        };
        for (k, e) in other.keywords.iter().zip(&other.embeddings) {
            if !joined.keywords.iter().any(|j| j.word == k.word) {
                joined.keywords.push(k.clone());
                joined.embeddings.push(e.clone());
            }
        }
        joined
    }

    /// The `k` best keywords for a normalised photo feature, best first; with
    /// `diverse`, at most one a topic.
    pub fn top_k(&self, image: &[f32], k: usize, diverse: bool) -> Vec<Scored> {
        let scores: Vec<f32> = self.embeddings.iter().map(|e| dot(e, image)).collect();
        top_k(&self.keywords, &scores, k, diverse)
    }
}

/// Ranks keywords by score (pure; the index's `top_k` supplies the scores).
pub(crate) fn top_k(keywords: &[Keyword], scores: &[f32], k: usize, diverse: bool) -> Vec<Scored> {
    let mut order: Vec<usize> = (0..keywords.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut topics = std::collections::HashSet::new();
    order
        .into_iter()
        .filter(|&i| !diverse || topics.insert(keywords[i].topic.as_str()))
        .take(k)
        .map(|i| Scored {
            keyword: keywords[i].word.clone(),
            score: scores[i],
            topic: keywords[i].topic.clone(),
        })
        .collect()
}

/// Keywords as people type them: separated by any space (the ideographic
/// space U+3000 too, which the bot's replies put between keywords) or by
/// commas, 、 or semicolons.
pub fn split_keywords(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '，' | '、' | ';' | '；'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn mean_normalized(rows: &[Vec<f32>]) -> Vec<f32> {
    let dim = rows.first().map_or(0, Vec::len);
    let mut mean = vec![0f32; dim];
    for row in rows {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x;
        }
    }
    let norm = dot(&mean, &mean).sqrt().max(f32::MIN_POSITIVE);
    mean.iter_mut().for_each(|m| *m /= norm);
    mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_split_at_every_kind_of_space_and_comma() {
        let expected = ["孤舟", "明月", "春风", "杨柳", "江南", "细雨"];
        assert_eq!(split_keywords("孤舟　明月 春风,杨柳，江南、细雨"), expected);
        assert_eq!(
            split_keywords(" 孤舟\t明月；春风;杨柳　　江南\n细雨 "),
            expected
        );
        assert!(split_keywords("　 ，").is_empty());
    }

    #[test]
    fn parses_the_vocabulary_format() {
        let v = Vocabulary::parse(
            "# 说明文字：这一行是注释，不是类别\n# 天文\n[月] 明月:夜空中的月亮;满月 | 残月\n# 器物\n[舟] 孤舟:江上的一只小船\n",
        )
        .unwrap();
        assert_eq!(v.keywords.len(), 3);
        assert_eq!(v.keywords[0].prompts, ["夜空中的月亮", "满月"]);
        assert_eq!(v.keywords[1].prompts, ["残月"]);
        assert_eq!(
            (
                v.keywords[2].topic.as_str(),
                v.keywords[2].category.as_str()
            ),
            ("舟", "器物")
        );
    }

    #[test]
    fn parses_a_plain_list_and_rejects_bad_files() {
        let v = Vocabulary::parse("春风\n\n明月\n").unwrap();
        assert_eq!(
            v.keywords
                .iter()
                .map(|k| k.word.as_str())
                .collect::<Vec<_>>(),
            ["春风", "明月"]
        );
        let problem = |text| Vocabulary::parse(text).unwrap_err();
        assert_eq!(problem("\n# 只有注释\n"), VocabularyError::NoKeywords);
        assert_eq!(
            problem("[月] 明月 | 明月"),
            VocabularyError::Twice("明月".into())
        );
        assert_eq!(problem("[月] 明月\n孤舟"), VocabularyError::NotAnEntry(2));
        assert_eq!(
            problem("[月] 明月 | :月光"),
            VocabularyError::EmptyKeyword(1)
        );
    }

    #[test]
    fn shipped_vocabulary_is_large_and_categorised() {
        let v =
            Vocabulary::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("keywords/default.txt"))
                .unwrap();
        assert!(v.keywords.len() >= 600, "{}", v.keywords.len());
        let categories: std::collections::HashSet<_> =
            v.keywords.iter().map(|k| k.category.as_str()).collect();
        for c in [
            "天文", "时令", "地理", "花木", "鸟兽", "人物", "器物", "居处",
        ] {
            assert!(categories.contains(c), "{c}");
        }
        assert!(v
            .keywords
            .iter()
            .all(|k| (1..=3).contains(&k.prompts.len())));
    }

    #[test]
    fn top_k_is_sorted_and_diverse_keeps_one_per_topic() {
        let v = Vocabulary::parse("[月] 明月 | 残月\n[舟] 孤舟\n[山] 青山").unwrap();
        let scores = [0.9, 0.8, 0.3, 0.5];
        let plain: Vec<_> = top_k(&v.keywords, &scores, 3, false)
            .into_iter()
            .map(|s| s.keyword)
            .collect();
        assert_eq!(plain, ["明月", "残月", "青山"]);
        let diverse: Vec<_> = top_k(&v.keywords, &scores, 3, true)
            .into_iter()
            .map(|s| s.keyword)
            .collect();
        assert_eq!(diverse, ["明月", "青山", "孤舟"]);
        assert_eq!(top_k(&v.keywords, &scores, 10, true).len(), 3);
    }
}
