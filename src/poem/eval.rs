//! The quality table: poems written for the keyword sets of held-out corpus
//! poems, measured for form, the strict check, keyword use, copies and variety.
//!
//! Form, the strict check, exact copies and repeated characters hold by
//! construction (the decoder allows nothing else); keyword use and near
//! copies are measured, and what the lines mean only blind readers can say
//! ([`super::blind`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::{checker, Candidate, Form, JijuPoet, PoemRequest, Poet, Sampling};
use crate::error::{PoemError, ReadingError};

/// One line of `training/heldout_poems.jsonl`: a held-out corpus poem's
/// form, its keyword set and (for blind reading) its lines.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalCase {
    pub(crate) form: Form,
    pub(crate) keywords: Vec<String>,
    #[serde(default)]
    pub(crate) lines: Vec<String>,
}

impl EvalCase {
    /// Cases `skip..skip + limit` of a held-out set file's text (one JSON
    /// object a line; blank lines skipped); `path` names it in errors.
    pub fn parse_set(
        path: &str,
        text: &str,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<EvalCase>, ReadingError> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .skip(skip)
            .take(limit)
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| ReadingError::Line {
                    path: path.to_owned(),
                    line: i + 1,
                    message: e.to_string(),
                })
            })
            .collect()
    }
}

#[derive(Debug, Default, Serialize)]
pub struct EvalReport {
    pub(crate) poems: usize,
    /// Right number of lines of the right length, Chinese characters only.
    pub(crate) form_ok: f64,
    /// Passing the strict checker, all forms and 绝句 alone.
    pub(crate) strict_pass: f64,
    pub(crate) strict_pass_jueju: f64,
    /// Given keywords found verbatim inside one line, over all given keywords.
    pub(crate) keywords_used: f64,
    /// Lines written.
    pub(crate) lines: usize,
    /// Lines found in the corpus (exact list when given, else the line filter).
    pub(crate) copied_lines: usize,
    /// Lines written that nearly copy a corpus line ([`near_copies`]), a
    /// repeated line each time; measured only with the exact list of corpus lines.
    pub(crate) near_copied_lines: Option<usize>,
    /// Poems that use a character more often than the keywords do (or twice).
    pub(crate) repeated_char_poems: usize,
    /// Distinct characters over all poems written.
    pub(crate) distinct_chars: usize,
    pub(crate) seconds: f64,
}

pub fn evaluate(
    poet: &mut Poet,
    cases: &[EvalCase],
    sampling: Sampling,
    candidates: usize,
    corpus_lines: Option<&HashSet<String>>,
) -> Result<EvalReport, PoemError> {
    let mut written = Vec::new();
    let start = std::time::Instant::now();
    let mut r = EvalReport::default();
    let (mut form_ok, mut pass, mut jue, mut jue_pass) = (0, 0, 0, 0);
    let (mut kw_given, mut kw_used) = (0, 0);
    let mut distinct = HashSet::new();
    let poems = best_poems(poet, cases, sampling, candidates, 0)?;
    for (i, (case, best)) in cases.iter().zip(poems).enumerate() {
        let report = checker::check_lines(&best.lines);
        form_ok += usize::from(report.form == Some(case.form));
        pass += usize::from(report.pass);
        if matches!(case.form, Form::WuJue | Form::QiJue) {
            jue += 1;
            jue_pass += usize::from(report.pass);
        }
        kw_given += case.keywords.len();
        kw_used += best.keywords_used.len();
        let text: String = best.lines.concat();
        let keyword_text: String = case.keywords.concat();
        let count = |s: &str, c: char| s.chars().filter(|&x| x == c).count();
        let repeats = text
            .chars()
            .any(|c| count(&text, c) > count(&keyword_text, c).max(1));
        r.repeated_char_poems += usize::from(repeats);
        distinct.extend(text.chars());
        r.copied_lines += best
            .lines
            .iter()
            .filter(|l| match corpus_lines {
                Some(set) => set.contains(l.as_str()),
                None => poet.copies_corpus(l),
            })
            .count();
        tracing::debug!(poem = i, lines = ?best.lines, "written");
        written.extend(best.lines);
    }
    r.lines = written.len();
    // Counted as copied_lines is: every line written, a repeated line each time.
    r.near_copied_lines = corpus_lines.map(|set| {
        let near = near_copies(&written, set.iter().map(String::as_str));
        written.iter().filter(|l| near.contains(*l)).count()
    });
    let n = cases.len().max(1) as f64;
    r.poems = cases.len();
    r.form_ok = form_ok as f64 / n;
    r.strict_pass = pass as f64 / n;
    r.strict_pass_jueju = jue_pass as f64 / jue.max(1) as f64;
    r.keywords_used = kw_used as f64 / kw_given.max(1) as f64;
    r.distinct_chars = distinct.len();
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// The best candidate for each case, as `yingshi poem` writes it for the
/// case's form and keywords with the seed `seed + i`; the requests run a few
/// at a time as one batch (each answer is what it would be alone).
pub fn best_poems(
    poet: &mut Poet,
    cases: &[EvalCase],
    sampling: Sampling,
    candidates: usize,
    seed: u64,
) -> Result<Vec<Candidate>, PoemError> {
    const BATCH: usize = 16;
    let requests: Vec<PoemRequest> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| PoemRequest {
            form: case.form,
            keywords: case.keywords.clone(),
            acrostic: None,
            candidates,
            seed: seed.wrapping_add(i as u64),
        })
        .collect();
    let mut best = Vec::with_capacity(cases.len());
    for chunk in requests.chunks(BATCH) {
        for answer in poet.write_batch(chunk, sampling) {
            best.push(answer?.swap_remove(0));
        }
    }
    Ok(best)
}

/// The 集句 poet's quality table. The strict check, one line a poem, distinct
/// rhyme characters and keywords only as words hold by construction (the
/// beam allows nothing else): counted here so that a change that breaks one
/// shows. Keyword use is measured, over the keywords some line of the index
/// holds as a word at that length (the others cannot be used).
#[derive(Debug, Default, Serialize)]
pub struct JijuReport {
    pub(crate) poems: usize,
    pub(crate) strict_pass: f64,
    /// Given keywords used (as words of a line's rhythm), over all given keywords.
    pub(crate) keywords_used: f64,
    /// The same over the keywords some line of the index holds as a word.
    pub(crate) keywords_used_where_found: f64,
    pub(crate) keywords_found: usize,
    /// Poems in which two lines carry the same credit (poet, title, dynasty).
    pub(crate) poems_crediting_one_poem_twice: usize,
    /// Poems whose rhyming lines end in one character twice.
    pub(crate) poems_repeating_a_rhyme: usize,
    pub(crate) ms_per_poem: f64,
}

pub fn evaluate_jiju(
    jiju: &JijuPoet,
    cases: &[EvalCase],
    sampling: Sampling,
    candidates: usize,
) -> Result<JijuReport, PoemError> {
    let start = std::time::Instant::now();
    let poems = best_jiju_poems(jiju, cases, sampling, candidates, 0)?;
    let seconds = start.elapsed().as_secs_f64();
    let mut r = JijuReport::default();
    let (mut pass, mut given, mut used, mut used_found) = (0, 0, 0, 0);
    for (case, best) in cases.iter().zip(&poems) {
        pass += usize::from(checker::check_lines(&best.lines).pass);
        given += case.keywords.len();
        used += best.keywords_used.len();
        for k in &case.keywords {
            if jiju.holds_as_word(k, case.form.chars_per_line()) {
                r.keywords_found += 1;
                used_found += usize::from(best.keywords_used.contains(k));
            }
        }
        let credits: HashSet<_> = best.sources.iter().collect();
        r.poems_crediting_one_poem_twice += usize::from(credits.len() < best.sources.len());
        let rhymes: Vec<char> = best
            .lines
            .iter()
            .skip(1)
            .step_by(2)
            .filter_map(|l| l.chars().last())
            .collect();
        let distinct: HashSet<&char> = rhymes.iter().collect();
        r.poems_repeating_a_rhyme += usize::from(distinct.len() < rhymes.len());
    }
    let n = cases.len().max(1) as f64;
    r.poems = cases.len();
    r.strict_pass = pass as f64 / n;
    r.keywords_used = used as f64 / given.max(1) as f64;
    r.keywords_used_where_found = used_found as f64 / r.keywords_found.max(1) as f64;
    r.ms_per_poem = seconds * 1000.0 / n;
    Ok(r)
}

/// The best 集句 poem for each case, as `yingshi poem --style jiju` makes it
/// for the case's form and keywords with the seed `seed + i`.
pub fn best_jiju_poems(
    jiju: &JijuPoet,
    cases: &[EvalCase],
    sampling: Sampling,
    candidates: usize,
    seed: u64,
) -> Result<Vec<Candidate>, PoemError> {
    cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let request = PoemRequest {
                form: case.form,
                keywords: case.keywords.clone(),
                acrostic: None,
                candidates,
                seed: seed.wrapping_add(i as u64),
            };
            let mut poems = crate::device::on_cpu_pool(|| jiju.write(&request))?;
            super::rank(&mut poems, super::ScoreWeights::of_poet(sampling));
            Ok(poems.swap_remove(0))
        })
        .collect()
}

/// The lines of `ours` that nearly copy a line of `corpus`: a 7-character
/// line that shares 5 characters in place with a corpus line, or whose first
/// or last 5 characters are a 5-character corpus line; a 5-character line
/// that shares 4 in place, or is the first or last 5 characters of a
/// 7-character corpus line. (An exact copy counts too.)
pub(crate) fn near_copies<'a>(
    ours: &[String],
    corpus: impl Iterator<Item = &'a str>,
) -> HashSet<String> {
    // Our lines' patterns (kept positions and their characters, hashed), so
    // that the corpus is read once, whatever its size.
    let mut patterns: HashMap<u64, Vec<&str>> = HashMap::new();
    // Five characters (a 5-character line, or the head or tail of a
    // 7-character one) → our lines that hold them so.
    let mut fives: HashMap<String, Vec<&str>> = HashMap::new();
    for line in ours {
        let chars: Vec<char> = line.chars().collect();
        for p in kept_patterns(&chars) {
            patterns.entry(p).or_default().push(line);
        }
        for five in ends_of_seven(&chars) {
            fives.entry(five).or_default().push(line);
        }
    }
    let short: HashSet<&str> = ours
        .iter()
        .map(String::as_str)
        .filter(|l| l.chars().count() == 5)
        .collect();
    let mut found = HashSet::new();
    for corpus_line in corpus {
        let chars: Vec<char> = corpus_line.chars().collect();
        for p in kept_patterns(&chars) {
            if let Some(lines) = patterns.get(&p) {
                found.extend(lines.iter().map(|l| l.to_string()));
            }
        }
        if let Some(lines) = fives.get(corpus_line) {
            found.extend(lines.iter().map(|l| l.to_string()));
        }
        for five in ends_of_seven(&chars) {
            if short.contains(five.as_str()) {
                found.insert(five);
            }
        }
    }
    found
}

/// A 7-character line's first and last five characters (none for other lengths).
fn ends_of_seven(chars: &[char]) -> Vec<String> {
    if chars.len() != 7 {
        return Vec::new();
    }
    vec![chars[..5].iter().collect(), chars[2..].iter().collect()]
}

/// Every way to keep 5 of a 7-character line's characters (4 of a
/// 5-character line's) in place, each hashed with the positions kept.
fn kept_patterns(chars: &[char]) -> Vec<u64> {
    let n = chars.len();
    let keep = match n {
        5 => 4,
        7 => 5,
        _ => return Vec::new(),
    };
    (0u32..1 << n)
        .filter(|mask| mask.count_ones() == keep)
        .map(|mask| {
            let mut h = DefaultHasher::new();
            (n, mask).hash(&mut h);
            for (i, c) in chars.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    c.hash(&mut h);
                }
            }
            h.finish()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_copies_share_most_characters_in_place_or_a_whole_short_line() {
        let corpus = ["白日依山尽", "春风又绿江南岸", "明月何时照我还", "江南岸"];
        let ours: Vec<String> = [
            "白日依山远",     // 4 of 5 in place
            "白月依山远",     // 3 of 5
            "秋风又绿江南水", // 5 of 7 in place
            "秋雨又绿江北水", // 4 of 7
            "今宵白日依山尽", // ends in a 5-character corpus line
            "明月何时照",     // the first five of a 7-character corpus line
            "何时照我行",     // 3 of the last five
            "江南岸上行人",   // 6 characters: never a near copy
        ]
        .map(String::from)
        .to_vec();
        let found = near_copies(&ours, corpus.into_iter());
        let mut found: Vec<&str> = found.iter().map(String::as_str).collect();
        found.sort();
        let mut expected = vec![
            "白日依山远",
            "秋风又绿江南水",
            "今宵白日依山尽",
            "明月何时照",
        ];
        expected.sort();
        assert_eq!(found, expected);
    }
}
