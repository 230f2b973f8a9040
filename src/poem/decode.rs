//! Constrained decoding: the poet samples each character only from those the
//! rules allow at that place, so every poem it returns has the form.
//!
//! At each step of each line, a character is allowed when
//! - it is a Chinese character of the model's vocabulary with a known tone;
//! - its tone fits the slot of the candidate's template ([`meter`]);
//! - it has not been used in the poem (unless the keywords repeat it);
//! - at the end of a rhyming line, it is in the poem's level-tone rhyme group
//!   (the first rhyme picks among groups wide enough to finish the poem);
//! - in an acrostic, it is the given character at the head of each line;
//! - the line it completes is not a line of the training corpus ([`novelty`]).
//!
//! Keywords are steered, not left to chance: the first character of an unused
//! keyword that fits the remaining slots gets a logit bonus, and once it is
//! drawn the rest of the keyword is written while the rules allow it.
//!
//! The N candidates are decoded as one batch; each has its own template
//! (平起/仄起, first line rhymed or not) and random stream.

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::meter::{Slot, Template};
use super::model::PoetModel;
use super::novelty::LineFilter;
use super::rhyme::{RhymeGroup, RhymeTable, Tone};
use super::Form;
use crate::error::PoemError;

/// A rhyme group must have this many characters in the vocabulary to open a
/// poem, so that a 律诗's five rhymes can always be found.
const MIN_RHYME_GROUP: usize = 30;

/// Stands in a failed row's line so that the batch's sources keep one length.
const FILLER: char = '□';

#[derive(Debug, Clone)]
pub struct PoemRequest {
    pub form: Form,
    pub keywords: Vec<String>,
    /// 藏头: line i starts with the i-th character.
    pub acrostic: Option<String>,
    pub candidates: usize,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    /// 0 picks the most likely allowed character (greedy).
    pub temperature: f64,
    pub top_p: f64,
    pub keyword_bonus: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub lines: Vec<String>,
    /// Mean log-probability of the poem's characters under the model.
    pub mean_logprob: f64,
    pub keywords_used: Vec<String>,
    /// Share of the request's keywords the poem contains (1 when none were given).
    pub keyword_share: f64,
    /// The rerank score; the best candidate has the highest.
    pub score: f64,
}

/// What the rules need to know of one vocabulary entry.
struct CharInfo {
    c: char,
    ping: bool,
    ze: bool,
    level_groups: Vec<RhymeGroup>,
}

/// Per-vocabulary tables, built once per model.
pub struct Rules {
    info: Vec<Option<CharInfo>>,
    /// Level-tone groups wide enough to open a poem.
    wide: Vec<bool>,
}

impl Rules {
    pub fn new(model: &PoetModel) -> Self {
        let table = RhymeTable::get();
        let info: Vec<Option<CharInfo>> = (0..model.vocab_size() as u32)
            .map(|id| {
                let c = model.char_of(id)?;
                let (ping, ze) = (table.can_be(c, Tone::Ping), table.can_be(c, Tone::Ze));
                (ping || ze).then(|| CharInfo {
                    c,
                    ping,
                    ze,
                    level_groups: table.level_groups(c).collect(),
                })
            })
            .collect();
        let mut sizes = vec![0usize; table.group_count()];
        for ci in info.iter().flatten() {
            for g in &ci.level_groups {
                sizes[g.0 as usize] += 1;
            }
        }
        // A small vocabulary may have no group that wide: then its widest open poems.
        let threshold = MIN_RHYME_GROUP
            .min(sizes.iter().copied().max().unwrap_or(0))
            .max(1);
        Self {
            info,
            wide: sizes.into_iter().map(|s| s >= threshold).collect(),
        }
    }
}

/// One candidate poem being written.
struct Row {
    template: Template,
    lines: Vec<String>,
    current: Vec<char>,
    used: HashMap<char, usize>,
    /// The groups the rhymes so far share; `None` before the first rhyme.
    rhyme: Option<Vec<RhymeGroup>>,
    /// The rest of a keyword being written.
    pending: VecDeque<char>,
    logprob: f64,
    rng: StdRng,
    failed: bool,
}

pub struct Decoder<'a> {
    pub model: &'a mut PoetModel,
    pub rules: &'a Rules,
    pub novelty: Option<&'a LineFilter>,
    pub sampling: Sampling,
}

impl Decoder<'_> {
    pub fn write(&mut self, req: &PoemRequest) -> Result<Vec<Candidate>, PoemError> {
        let form = req.form;
        let n = form.chars_per_line();
        let keywords: Vec<Vec<char>> = req
            .keywords
            .iter()
            .map(|k| k.chars().collect::<Vec<_>>())
            .filter(|k| !k.is_empty())
            .collect();
        let acrostic: Option<Vec<char>> = req.acrostic.as_ref().map(|a| a.chars().collect());
        if let Some(a) = &acrostic {
            if a.len() != form.lines() {
                return Err(PoemError::Acrostic(format!(
                    "an acrostic for a {form} needs {} characters, not {}",
                    form.lines(),
                    a.len()
                )));
            }
            if let Some(c) = a.iter().find(|&&c| self.model.id_of(c).is_none()) {
                return Err(PoemError::Acrostic(format!(
                    "the poet does not know the character 「{c}」"
                )));
            }
        }
        // A character may repeat only as often as the keywords (or the acrostic) repeat it.
        let mut budget: HashMap<char, usize> = HashMap::new();
        for c in keywords.iter().flatten() {
            *budget.entry(*c).or_default() += 1;
        }
        for &c in acrostic.iter().flatten() {
            let in_acrostic = acrostic.iter().flatten().filter(|&&a| a == c).count();
            let entry = budget.entry(c).or_default();
            *entry = (*entry).max(in_acrostic);
        }
        let templates: Vec<Template> = Template::all(form)
            .into_iter()
            .filter(|t| acrostic_fits(t, acrostic.as_deref(), self.rules, self.model))
            .collect();
        let templates = if templates.is_empty() {
            Template::all(form).to_vec()
        } else {
            templates
        };

        let mut seed_rng = StdRng::seed_from_u64(req.seed);
        let mut rows: Vec<Row> = (0..req.candidates.max(1))
            .map(|_| {
                let rng = StdRng::seed_from_u64(seed_rng.random());
                Row {
                    template: templates[seed_rng.random_range(0..templates.len())],
                    lines: Vec::new(),
                    current: Vec::new(),
                    used: HashMap::new(),
                    rhyme: None,
                    pending: VecDeque::new(),
                    logprob: 0.0,
                    rng,
                    failed: false,
                }
            })
            .collect();
        let keyword_field = req.keywords.join(" ");

        for line in 0..form.lines() {
            let sources: Vec<Vec<u32>> = rows
                .iter()
                .map(|row| {
                    let mut s = format!("{}|{}|", form.name(), keyword_field);
                    for l in &row.lines {
                        s.push_str(l);
                        s.push('|');
                    }
                    self.model.tokenize(&s)
                })
                .collect::<Result<_, _>>()?;
            let encoded = self.model.start(&sources)?;
            let mut last: Option<Vec<u32>> = None;
            for pos in 0..n {
                let logits = self.model.step(&encoded, last.as_deref())?;
                let mut chosen = Vec::with_capacity(rows.len());
                for (row, logits) in rows.iter_mut().zip(logits) {
                    let ctx = Place {
                        line,
                        pos,
                        n,
                        acrostic: acrostic.as_deref(),
                        keywords: &keywords,
                        budget: &budget,
                    };
                    let id = self.choose(row, &ctx, &logits);
                    chosen.push(id);
                }
                last = Some(chosen);
            }
            for row in &mut rows {
                let text: String = row.current.drain(..).collect();
                row.lines.push(text);
                row.pending.clear();
            }
        }

        let candidates: Vec<Candidate> = rows
            .into_iter()
            .filter(|r| !r.failed)
            .map(|r| {
                let text: String = r.lines.concat();
                let used: Vec<String> = req
                    .keywords
                    .iter()
                    .filter(|k| !k.is_empty() && text.contains(k.as_str()))
                    .cloned()
                    .collect();
                let share = if keywords.is_empty() {
                    1.0
                } else {
                    used.len() as f64 / keywords.len() as f64
                };
                let mean = r.logprob / (form.lines() * n) as f64;
                Candidate {
                    lines: r.lines,
                    mean_logprob: mean,
                    keywords_used: used,
                    keyword_share: share,
                    score: mean,
                }
            })
            .collect();
        if candidates.is_empty() {
            return Err(PoemError::NoPoem);
        }
        Ok(candidates)
    }

    /// Picks the next character of a row and records it; returns its token id.
    fn choose(&self, row: &mut Row, place: &Place, logits: &[f32]) -> u32 {
        let slots = row.template.line(place.line);
        let rhymes_here = place.pos == place.n - 1 && row.template.rhymes(place.line);
        let allowed = |row: &Row, id: usize, pos: usize, extra: &[char]| -> bool {
            let Some(ci) = &self.rules.info[id] else {
                return false;
            };
            self.allows(
                row,
                ci,
                &slots,
                place,
                pos,
                rhymes_here && pos == place.n - 1,
                extra,
            )
        };

        // Continue a keyword being written, if the rules let it.
        if let Some(&next) = row.pending.front() {
            let id = self.model.id_of(next).map(|i| i as usize);
            match id {
                Some(id)
                    if allowed(row, id, place.pos, &[]) && !self.copies_corpus(row, place, id) =>
                {
                    row.pending.pop_front();
                    self.commit(row, id, logits, rhymes_here);
                    return id as u32;
                }
                _ => row.pending.clear(),
            }
        }

        let mut scores: Vec<(usize, f32)> = (0..logits.len())
            .filter(|&id| allowed(row, id, place.pos, &[]))
            .map(|id| (id, logits[id]))
            .collect();
        // Bonus for opening an unused keyword that fits the slots ahead.
        let text_so_far: String = row.lines.concat() + &row.current.iter().collect::<String>();
        let mut opens: HashMap<usize, Vec<char>> = HashMap::new();
        for kw in place.keywords {
            let kw_text: String = kw.iter().collect();
            if text_so_far.contains(&kw_text) || place.pos + kw.len() > place.n {
                continue;
            }
            let Some(ids) = kw
                .iter()
                .map(|&c| self.model.id_of(c).map(|i| i as usize))
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            let fits = ids
                .iter()
                .enumerate()
                .all(|(j, &id)| allowed(row, id, place.pos + j, &kw[..j]));
            if fits {
                opens.entry(ids[0]).or_insert_with(|| kw[1..].to_vec());
            }
        }
        for (id, score) in &mut scores {
            if opens.contains_key(id) {
                *score += self.sampling.keyword_bonus;
            }
        }

        loop {
            let Some(id) = sample(&scores, self.sampling, &mut row.rng) else {
                // Keep the batch in step (sources of equal length); the row is dropped at the end.
                row.failed = true;
                row.current.push(FILLER);
                return self.model.eos_id();
            };
            if self.copies_corpus(row, place, id) {
                scores.retain(|&(i, _)| i != id);
                continue;
            }
            if let Some(rest) = opens.get(&id) {
                row.pending = rest.iter().copied().collect();
            }
            self.commit(row, id, logits, rhymes_here);
            return id as u32;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn allows(
        &self,
        row: &Row,
        ci: &CharInfo,
        slots: &[Slot],
        place: &Place,
        pos: usize,
        rhyme_slot: bool,
        planned: &[char],
    ) -> bool {
        let tone_ok = match slots[pos] {
            Slot::Fixed(Tone::Ping) => ci.ping,
            Slot::Fixed(Tone::Ze) => ci.ze,
            Slot::Free => true,
        };
        if !tone_ok {
            return false;
        }
        // Heads of later acrostic lines are kept for them.
        let reserved = place.acrostic.map_or(0, |a| {
            a[place.line + 1..].iter().filter(|&&c| c == ci.c).count()
        });
        let used = row.used.get(&ci.c).copied().unwrap_or(0)
            + planned.iter().filter(|&&c| c == ci.c).count()
            + reserved;
        if used >= place.budget.get(&ci.c).copied().unwrap_or(1).max(1) {
            return false;
        }
        if let Some(a) = place.acrostic {
            if pos == 0 && a[place.line] != ci.c {
                return false;
            }
        }
        if rhyme_slot {
            return match &row.rhyme {
                Some(groups) => ci.level_groups.iter().any(|g| groups.contains(g)),
                None => ci
                    .level_groups
                    .iter()
                    .any(|g| self.rules.wide[g.0 as usize]),
            };
        }
        true
    }

    /// Whether `id` would complete a line of the training corpus.
    fn copies_corpus(&self, row: &Row, place: &Place, id: usize) -> bool {
        let Some(filter) = self.novelty else {
            return false;
        };
        if place.pos != place.n - 1 {
            return false;
        }
        let mut line: String = row.current.iter().collect();
        line.extend(self.rules.info[id].as_ref().map(|ci| ci.c));
        filter.contains(&line)
    }

    fn commit(&self, row: &mut Row, id: usize, logits: &[f32], rhymes_here: bool) {
        let ci = self.rules.info[id]
            .as_ref()
            .expect("only known characters are allowed");
        row.current.push(ci.c);
        *row.used.entry(ci.c).or_default() += 1;
        row.logprob += log_softmax_at(logits, id);
        if rhymes_here {
            let groups: Vec<RhymeGroup> = match &row.rhyme {
                Some(gs) => ci
                    .level_groups
                    .iter()
                    .copied()
                    .filter(|g| gs.contains(g))
                    .collect(),
                None => ci
                    .level_groups
                    .iter()
                    .copied()
                    .filter(|g| self.rules.wide[g.0 as usize])
                    .collect(),
            };
            row.rhyme = Some(groups);
        }
    }
}

/// Where in the poem a step is, and what the request asks.
struct Place<'a> {
    line: usize,
    pos: usize,
    n: usize,
    acrostic: Option<&'a [char]>,
    keywords: &'a [Vec<char>],
    budget: &'a HashMap<char, usize>,
}

/// Whether every acrostic character fits the first slot of its line.
fn acrostic_fits(
    t: &Template,
    acrostic: Option<&[char]>,
    rules: &Rules,
    model: &PoetModel,
) -> bool {
    let Some(a) = acrostic else { return true };
    a.iter().enumerate().all(|(i, &c)| {
        let Some(ci) = model
            .id_of(c)
            .and_then(|id| rules.info[id as usize].as_ref())
        else {
            return false;
        };
        match t.line(i)[0] {
            Slot::Fixed(Tone::Ping) => ci.ping,
            Slot::Fixed(Tone::Ze) => ci.ze,
            Slot::Free => true,
        }
    })
}

fn log_softmax_at(logits: &[f32], id: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    logits[id] as f64 - max - sum.ln()
}

/// Temperature and nucleus (top-p) sampling over the allowed scores.
fn sample(scores: &[(usize, f32)], sampling: Sampling, rng: &mut StdRng) -> Option<usize> {
    if scores.is_empty() {
        return None;
    }
    if sampling.temperature <= 0.0 {
        return scores
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|&(id, _)| id);
    }
    let max = scores.iter().map(|s| s.1).fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> = scores
        .iter()
        .map(|&(id, s)| (id, ((s as f64 - max) / sampling.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let mut cut = probs.len();
    for (i, p) in probs.iter().enumerate() {
        kept += p.1 / total;
        if kept >= sampling.top_p {
            cut = i + 1;
            break;
        }
    }
    probs.truncate(cut);
    let mass: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.random::<f64>() * mass;
    for &(id, p) in &probs {
        if r < p {
            return Some(id);
        }
        r -= p;
    }
    probs.last().map(|p| p.0)
}
