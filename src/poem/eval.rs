//! The quality table: poems written for the keyword sets of held-out corpus
//! poems, measured for form, the strict check, keyword use, copies and variety.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{checker, Form, PoemRequest, Poet, Sampling};
use crate::error::PoemError;

/// One line of `training/heldout_keywords.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct EvalCase {
    pub form: Form,
    pub keywords: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct EvalReport {
    pub poems: usize,
    /// Right number of lines of the right length, Chinese characters only.
    pub form_ok: f64,
    /// Passing the strict checker, all forms and 绝句 alone.
    pub strict_pass: f64,
    pub strict_pass_jueju: f64,
    /// Given keywords found verbatim in the poem, over all given keywords.
    pub keywords_used: f64,
    /// Lines found in the corpus (exact list when given, else the line filter).
    pub copied_lines: usize,
    /// Poems that use a character more often than the keywords do (or twice).
    pub repeated_char_poems: usize,
    /// Distinct characters over all poems written.
    pub distinct_chars: usize,
    pub seconds: f64,
}

pub fn evaluate(
    poet: &mut Poet,
    cases: &[EvalCase],
    sampling: Sampling,
    keyword_weight: f64,
    candidates: usize,
    corpus_lines: Option<&HashSet<String>>,
) -> Result<EvalReport, PoemError> {
    let start = std::time::Instant::now();
    let mut r = EvalReport::default();
    let (mut form_ok, mut pass, mut jue, mut jue_pass) = (0, 0, 0, 0);
    let (mut kw_given, mut kw_used) = (0, 0);
    let mut distinct = HashSet::new();
    for (i, case) in cases.iter().enumerate() {
        let request = PoemRequest {
            form: case.form,
            keywords: case.keywords.clone(),
            acrostic: None,
            candidates,
            seed: i as u64,
        };
        let best = poet
            .write(&request, sampling, keyword_weight)?
            .swap_remove(0);
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
    }
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
