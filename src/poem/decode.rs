//! Constrained decoding: the poet samples each character only from those the
//! rules allow at that place, so every poem it returns has the form.
//!
//! At each step of each line, a character is allowed when
//! - it is a Chinese character of the model's vocabulary with a known tone;
//! - its tone fits the slot of the candidate's template ([`meter`]);
//! - it has not been used in the poem (unless the keywords repeat it);
//! - at the end of a rhyming line, it is in the poem's level-tone rhyme group
//!   (the first rhyme picks among groups wide enough to finish the poem); at
//!   the end of a line that does not rhyme, it has no level reading at all;
//! - in an acrostic, it is the given character at the head of each line;
//! - the line it completes is not a line of the training corpus ([`novelty`]).
//!
//! Keywords are steered, not left to chance: the first character of an unused
//! keyword that fits the remaining slots gets a logit bonus, and once it is
//! drawn the rest of the keyword is written while the rules allow it. A
//! keyword is only opened where it stays one word of the line's rhythm
//! ([`starts_word`]), so it is never split across two words to be placed. A
//! keyword counts as used only inside one line.
//!
//! The N candidates are decoded as one batch, and so are the candidates of
//! several requests of one form ([`Decoder::write_batch`]); each row has its
//! own template (平起/仄起, first line rhymed or not), rules and random stream.
//!
//! 换一句 ([`Decoder::rewrite`]) writes one line of a finished poem again under
//! the template, rhyme and characters of the lines kept, and scores each new
//! line with the kept lines after it, so the poem still reads on.

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::meter::{Slot, Template};
use super::model::PoetModel;
use super::novelty::LineFilter;
use super::rhyme::{RhymeGroup, RhymeTable, Tone};
use super::Form;
use crate::error::{ModelError, PoemError};

/// A rhyme group must have this many characters in the vocabulary to open a
/// poem, so that a 律诗's five rhymes can always be found.
const MIN_RHYME_GROUP: usize = 30;

/// Stands in a failed row's line, which keeps its place in the batch until the end.
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub lines: Vec<String>,
    /// Mean log-probability of the poem's characters under the model (for a
    /// rewritten line: of the new line and the lines after it).
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

    fn char_info(&self, model: &PoetModel, c: char) -> Option<&CharInfo> {
        model
            .id_of(c)
            .and_then(|id| self.info[id as usize].as_ref())
    }
}

/// A request's keywords, acrostic and repeat budget, worked out once.
struct Plan {
    form: Form,
    /// `{form}|{keywords}|`: every line's source starts so.
    source_head: String,
    keywords: Vec<String>,
    keyword_chars: Vec<Vec<char>>,
    acrostic: Option<Vec<char>>,
    /// How often a character may appear: as often as the keywords (or the
    /// acrostic) repeat it, else once.
    budget: HashMap<char, usize>,
    candidates: usize,
    seed: u64,
}

impl Plan {
    fn new(req: &PoemRequest, model: &PoetModel) -> Result<Self, PoemError> {
        let form = req.form;
        let keywords: Vec<String> = req
            .keywords
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        let keyword_chars: Vec<Vec<char>> = keywords.iter().map(|k| k.chars().collect()).collect();
        let acrostic: Option<Vec<char>> = req.acrostic.as_ref().map(|a| a.chars().collect());
        if let Some(a) = &acrostic {
            if a.len() != form.lines() {
                return Err(PoemError::Acrostic(format!(
                    "an acrostic for a {form} needs {} characters, not {}",
                    form.lines(),
                    a.len()
                )));
            }
            if let Some(c) = a.iter().find(|&&c| model.id_of(c).is_none()) {
                return Err(PoemError::Acrostic(format!(
                    "the poet does not know the character 「{c}」"
                )));
            }
        }
        let mut budget: HashMap<char, usize> = HashMap::new();
        for c in keyword_chars.iter().flatten() {
            *budget.entry(*c).or_default() += 1;
        }
        for &c in acrostic.iter().flatten() {
            let in_acrostic = acrostic.iter().flatten().filter(|&&a| a == c).count();
            let entry = budget.entry(c).or_default();
            *entry = (*entry).max(in_acrostic);
        }
        Ok(Self {
            form,
            source_head: format!("{}|{}|", form.name(), req.keywords.join(" ")),
            keywords,
            keyword_chars,
            acrostic,
            budget,
            candidates: req.candidates.max(1),
            seed: req.seed,
        })
    }

    /// The templates an acrostic's characters fit (all four without one, or when none fits).
    fn templates(&self, rules: &Rules, model: &PoetModel) -> Vec<Template> {
        let all = Template::all(self.form);
        let Some(a) = &self.acrostic else {
            return all.to_vec();
        };
        let fitting: Vec<Template> = all
            .into_iter()
            .filter(|t| {
                a.iter().enumerate().all(|(i, &c)| {
                    rules
                        .char_info(model, c)
                        .is_some_and(|ci| fits(t.line(i)[0], ci))
                })
            })
            .collect();
        if fitting.is_empty() {
            all.to_vec()
        } else {
            fitting
        }
    }

    fn candidate(&self, lines: Vec<String>, logprob: f64, scored_chars: usize) -> Candidate {
        let used: Vec<String> = self
            .keywords
            .iter()
            .filter(|k| lines.iter().any(|l| l.contains(k.as_str())))
            .cloned()
            .collect();
        let share = if self.keywords.is_empty() {
            1.0
        } else {
            used.len() as f64 / self.keywords.len() as f64
        };
        let mean = logprob / scored_chars as f64;
        Candidate {
            lines,
            mean_logprob: mean,
            keywords_used: used,
            keyword_share: share,
            score: mean,
        }
    }
}

/// One candidate being written.
struct Row {
    /// Which request (plan) of the batch it belongs to.
    plan: usize,
    template: Template,
    /// The lines before the one being written.
    lines: Vec<String>,
    current: Vec<char>,
    /// The kept lines after it, when one line is rewritten.
    rest: Vec<String>,
    /// The line being rewritten, which must not come out again.
    refused: Option<String>,
    used: HashMap<char, usize>,
    /// The groups the rhymes so far share; `None` before the first rhyme.
    rhyme: Option<Vec<RhymeGroup>>,
    /// The rest of a keyword being written.
    pending: VecDeque<char>,
    logprob: f64,
    rng: StdRng,
    failed: bool,
}

impl Row {
    fn new(plan: usize, template: Template, rng: StdRng) -> Self {
        Self {
            plan,
            template,
            lines: Vec::new(),
            current: Vec::new(),
            rest: Vec::new(),
            refused: None,
            used: HashMap::new(),
            rhyme: None,
            pending: VecDeque::new(),
            logprob: 0.0,
            rng,
            failed: false,
        }
    }
}

pub struct Decoder<'a> {
    pub model: &'a mut PoetModel,
    pub rules: &'a Rules,
    pub novelty: Option<&'a LineFilter>,
    pub sampling: Sampling,
}

impl Decoder<'_> {
    pub fn write(&mut self, req: &PoemRequest) -> Result<Vec<Candidate>, PoemError> {
        self.write_batch(std::slice::from_ref(req))
            .pop()
            .expect("one answer per request")
    }

    /// Writes several requests' candidates together: the rows of all requests
    /// of one form share each model call. Answers are in the requests' order,
    /// and each is what [`Decoder::write`] gives for that request alone.
    pub fn write_batch(&mut self, reqs: &[PoemRequest]) -> Vec<Result<Vec<Candidate>, PoemError>> {
        let mut answers: Vec<Option<Result<Vec<Candidate>, PoemError>>> =
            reqs.iter().map(|_| None).collect();
        for form in Form::ALL {
            let mut members = Vec::new();
            let mut plans = Vec::new();
            for (i, req) in reqs.iter().enumerate().filter(|(_, r)| r.form == form) {
                match Plan::new(req, self.model) {
                    Ok(plan) => {
                        members.push(i);
                        plans.push(plan);
                    }
                    Err(e) => answers[i] = Some(Err(e)),
                }
            }
            if plans.is_empty() {
                continue;
            }
            match self.write_group(&plans) {
                Ok(per_plan) => {
                    for (i, candidates) in members.into_iter().zip(per_plan) {
                        answers[i] = Some(if candidates.is_empty() {
                            Err(PoemError::NoPoem)
                        } else {
                            Ok(candidates)
                        });
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for i in members {
                        answers[i] = Some(Err(ModelError::Format(message.clone()).into()));
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every request belongs to one form"))
            .collect()
    }

    /// The candidates of requests of one form, per request.
    fn write_group(&mut self, plans: &[Plan]) -> Result<Vec<Vec<Candidate>>, ModelError> {
        let form = plans[0].form;
        let mut rows = Vec::new();
        for (p, plan) in plans.iter().enumerate() {
            let templates = plan.templates(self.rules, self.model);
            let mut seed_rng = StdRng::seed_from_u64(plan.seed);
            for _ in 0..plan.candidates {
                let rng = StdRng::seed_from_u64(seed_rng.random());
                let template = templates[seed_rng.random_range(0..templates.len())];
                rows.push(Row::new(p, template, rng));
            }
        }
        for line in 0..form.lines() {
            self.write_line(&mut rows, plans, line, true)?;
        }
        let mut out: Vec<Vec<Candidate>> = plans.iter().map(|_| Vec::new()).collect();
        let chars = form.lines() * form.chars_per_line();
        for row in rows.into_iter().filter(|r| !r.failed) {
            out[row.plan].push(plans[row.plan].candidate(row.lines, row.logprob, chars));
        }
        Ok(out)
    }

    /// Rewrites one line: each candidate is a new line that keeps the poem's
    /// template, rhyme and unrepeated characters, and is scored by the
    /// model's log-probability of it and of the kept lines after it, so that
    /// the poem still reads on. Candidates are distinct and differ from the old line.
    pub fn rewrite(&mut self, req: &LineRequest) -> Result<Vec<Candidate>, PoemError> {
        let plan = Plan::new(&req.poem, self.model)?;
        let form = plan.form;
        let (count, n) = (form.lines(), form.chars_per_line());
        if req.lines.len() != count {
            return Err(PoemError::Lines(format!(
                "a {form} has {count} lines; this poem has {}",
                req.lines.len()
            )));
        }
        if req.line >= count {
            return Err(PoemError::Lines(format!(
                "there is no line {} in a {form}",
                req.line + 1
            )));
        }
        let mut lines: Vec<Vec<&CharInfo>> = Vec::with_capacity(count);
        for line in &req.lines {
            let infos: Option<Vec<&CharInfo>> = line
                .chars()
                .map(|c| self.rules.char_info(self.model, c))
                .collect();
            match infos {
                Some(infos) if infos.len() == n => lines.push(infos),
                _ => {
                    return Err(PoemError::Lines(format!(
                        "「{line}」 is not a line of {n} characters the poet knows"
                    )))
                }
            }
        }
        // The template the kept lines follow, and the rhyme groups its kept
        // rhyming lines share (`None`: no kept line rhymes). A first line that
        // ends in a character of both tones fits a rhyming and a non-rhyming
        // first line alike, so the template taken is the first under which the
        // kept rhyming lines share a group — one the old line follows too, if any.
        let follows = |t: &Template, i: usize| {
            t.line(i)
                .iter()
                .zip(&lines[i])
                .all(|(&slot, ci)| fits(slot, ci))
        };
        let kept_rhyme = |t: &Template| {
            let mut shared: Option<Vec<RhymeGroup>> = None;
            for i in (0..count).filter(|&i| i != req.line && t.rhymes(i)) {
                let groups = &lines[i][n - 1].level_groups;
                shared = Some(match shared {
                    None => groups.clone(),
                    Some(shared) => shared.into_iter().filter(|g| groups.contains(g)).collect(),
                });
            }
            shared
        };
        let (old_fits, kept_fit): (Vec<Template>, Vec<Template>) = Template::all(form)
            .into_iter()
            .filter(|t| (0..count).filter(|&i| i != req.line).all(|i| follows(t, i)))
            .partition(|t| follows(t, req.line));
        if old_fits.is_empty() && kept_fit.is_empty() {
            return Err(PoemError::Lines(
                "this poem follows none of the 格律 templates".into(),
            ));
        }
        let (template, rhyme) = old_fits
            .into_iter()
            .chain(kept_fit)
            .map(|t| (t, kept_rhyme(&t)))
            .find(|(_, rhyme)| !rhyme.as_ref().is_some_and(Vec::is_empty))
            .ok_or_else(|| PoemError::Lines("this poem does not keep to one rhyme".into()))?;
        let mut used: HashMap<char, usize> = HashMap::new();
        for (i, line) in req.lines.iter().enumerate() {
            if i != req.line {
                for c in line.chars() {
                    *used.entry(c).or_default() += 1;
                }
            }
        }

        let mut seed_rng = StdRng::seed_from_u64(plan.seed);
        let mut rows: Vec<Row> = (0..plan.candidates)
            .map(|_| {
                let mut row = Row::new(0, template, StdRng::seed_from_u64(seed_rng.random()));
                row.lines = req.lines[..req.line].to_vec();
                row.rest = req.lines[req.line + 1..].to_vec();
                row.refused = Some(req.lines[req.line].clone());
                row.used = used.clone();
                row.rhyme = rhyme.clone();
                row
            })
            .collect();
        let plans = std::slice::from_ref(&plan);
        self.write_line(&mut rows, plans, req.line, false)?;
        // Score the kept lines after the new one, each under its new context.
        for _ in req.line + 1..count {
            for row in &mut rows {
                let next = row.rest.remove(0);
                row.current = next.chars().collect();
            }
            self.score_current(&mut rows, plans)?;
        }

        let mut candidates: Vec<Candidate> = Vec::new();
        for row in rows.into_iter().filter(|r| !r.failed) {
            if candidates.iter().any(|c| c.lines == row.lines) {
                continue;
            }
            candidates.push(plan.candidate(row.lines, row.logprob, (count - req.line) * n));
        }
        if candidates.is_empty() {
            return Err(PoemError::NoPoem);
        }
        Ok(candidates)
    }

    /// The source of a row's next line: `{form}|{keywords}|{line1}|…|`.
    fn sources(&self, rows: &[Row], plans: &[Plan]) -> Result<Vec<Vec<u32>>, ModelError> {
        rows.iter()
            .map(|row| {
                let mut s = plans[row.plan].source_head.clone();
                for l in &row.lines {
                    s.push_str(l);
                    s.push('|');
                }
                self.model.tokenize(&s)
            })
            .collect()
    }

    /// Writes line `line` of every row under the rules. `reserve_heads`: keep
    /// the acrostic's later characters for the lines still to come.
    fn write_line(
        &mut self,
        rows: &mut [Row],
        plans: &[Plan],
        line: usize,
        reserve_heads: bool,
    ) -> Result<(), ModelError> {
        let n = plans[0].form.chars_per_line();
        self.run_line(rows, plans, |decoder, row, pos, logits| {
            let place = Place {
                plan: &plans[row.plan],
                line,
                pos,
                n,
                reserve_heads,
            };
            decoder.choose(row, &place, logits)
        })
    }

    /// Adds each row's log-probability of its `current` line, given its
    /// lines before it (teacher forcing), and appends the line.
    fn score_current(&mut self, rows: &mut [Row], plans: &[Plan]) -> Result<(), ModelError> {
        self.run_line(rows, plans, |decoder, row, pos, logits| {
            let id = decoder
                .model
                .id_of(row.current[pos])
                .expect("kept lines were checked against the vocabulary");
            row.logprob += log_softmax_at(logits, id as usize);
            id
        })
    }

    /// One line of every row through the model: encodes each row's source,
    /// then at each position feeds back the token `pick` returns for the row
    /// (given the position and the logits), and appends the row's `current`
    /// characters to its lines.
    fn run_line(
        &mut self,
        rows: &mut [Row],
        plans: &[Plan],
        pick: impl Fn(&Self, &mut Row, usize, &[f32]) -> u32,
    ) -> Result<(), ModelError> {
        let n = plans[0].form.chars_per_line();
        let sources = self.sources(rows, plans)?;
        let encoded = self.model.start(&sources)?;
        let mut last: Option<Vec<u32>> = None;
        for pos in 0..n {
            let logits = self.model.step(&encoded, last.as_deref())?;
            let fed = rows
                .iter_mut()
                .zip(logits)
                .map(|(row, logits)| pick(self, row, pos, &logits))
                .collect();
            last = Some(fed);
        }
        for row in rows.iter_mut() {
            let text: String = row.current.drain(..).collect();
            row.lines.push(text);
            row.pending.clear();
        }
        Ok(())
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
                Some(id) if allowed(row, id, place.pos, &[]) && !self.refused(row, place, id) => {
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
        // Bonus for opening an unused keyword that fits the slots ahead as one word.
        let current: String = row.current.iter().collect();
        let mut opens: HashMap<usize, Vec<char>> = HashMap::new();
        for (kw_text, kw) in place.plan.keywords.iter().zip(&place.plan.keyword_chars) {
            let used = row
                .lines
                .iter()
                .chain(&row.rest)
                .chain(std::iter::once(&current))
                .any(|l| l.contains(kw_text.as_str()));
            if used || !starts_word(place.pos, kw.len(), place.n) {
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
                // The row stays in the batch's step and is dropped at the end.
                row.failed = true;
                row.current.push(FILLER);
                return self.model.eos_id();
            };
            if self.refused(row, place, id) {
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
        if !fits(slots[pos], ci) {
            return false;
        }
        // A line that does not rhyme ends in a character that cannot be read
        // level: one that can (深, 中, 看 …) sounds like a rhyme gone wrong.
        if pos == place.n - 1 && !row.template.rhymes(place.line) && ci.ping {
            return false;
        }
        let acrostic = place.plan.acrostic.as_deref();
        // Heads of later acrostic lines are kept for them.
        let reserved = match acrostic {
            Some(a) if place.reserve_heads => {
                a[place.line + 1..].iter().filter(|&&c| c == ci.c).count()
            }
            _ => 0,
        };
        let used = row.used.get(&ci.c).copied().unwrap_or(0)
            + planned.iter().filter(|&&c| c == ci.c).count()
            + reserved;
        if used >= place.plan.budget.get(&ci.c).copied().unwrap_or(1).max(1) {
            return false;
        }
        if let Some(a) = acrostic {
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

    /// Whether `id` would complete a line of the training corpus, or the line
    /// being rewritten.
    fn refused(&self, row: &Row, place: &Place, id: usize) -> bool {
        if place.pos != place.n - 1 {
            return false;
        }
        let mut line: String = row.current.iter().collect();
        line.extend(self.rules.info[id].as_ref().map(|ci| ci.c));
        row.refused.as_deref() == Some(line.as_str())
            || self.novelty.is_some_and(|filter| filter.contains(&line))
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

/// Where in the poem a step is, and what its request asks.
struct Place<'a> {
    plan: &'a Plan,
    line: usize,
    pos: usize,
    n: usize,
    reserve_heads: bool,
}

/// Whether a word of `len` characters may start at `pos` of a line of `n`
/// without straddling the line's rhythm: 2|3 for five characters and 2|2|3
/// for seven, the closing three read as 2+1 or 1+2. Two characters start at
/// an even place or make the last two; three open the line or close it;
/// longer ones fill its head or its tail.
fn starts_word(pos: usize, len: usize, n: usize) -> bool {
    if pos + len > n {
        return false;
    }
    match len {
        0 | 1 => true,
        2 => pos.is_multiple_of(2) || pos + 2 == n,
        _ => pos == 0 || pos + len == n,
    }
}

/// Whether a character's tone fits a slot.
fn fits(slot: Slot, ci: &CharInfo) -> bool {
    match slot {
        Slot::Fixed(Tone::Ping) => ci.ping,
        Slot::Fixed(Tone::Ze) => ci.ze,
        Slot::Free => true,
    }
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

#[cfg(test)]
mod tests {
    use super::starts_word;

    #[test]
    fn words_start_where_the_rhythm_breaks() {
        let starts = |len, n| {
            (0..n)
                .filter(|&p| starts_word(p, len, n))
                .collect::<Vec<_>>()
        };
        assert_eq!(starts(2, 5), [0, 2, 3]);
        assert_eq!(starts(2, 7), [0, 2, 4, 5]);
        assert_eq!(starts(3, 5), [0, 2]);
        assert_eq!(starts(3, 7), [0, 4]);
        assert_eq!(starts(4, 7), [0, 3]);
        assert_eq!(starts(1, 5), [0, 1, 2, 3, 4]);
        assert_eq!(starts(6, 5), Vec::<usize>::new());
    }
}
