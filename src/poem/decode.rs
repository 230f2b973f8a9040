//! The T5 poet's decoding: each character is sampled only from those the
//! rules allow at its place ([`rules`](super::rules)), so every poem it
//! returns has the form.
//!
//! The N candidates of a request are decoded as one batch, and so are the
//! candidates of several requests of one form ([`Decoder::write_batch`]);
//! each row has its own template (平起/仄起, first line rhymed or not), verse
//! and random stream. An unused keyword that can open at a place gets a score
//! bonus, and once it is drawn the rest of it is written while the rules allow.
//!
//! Where the poet has a character n-gram ([`ngram`](super::ngram)) and
//! `poem.ngram_weight` is above 0, each character is drawn from the mixture
//! of the T5's probabilities and the n-gram's given the line so far, and the
//! poem is scored by the same mixture.
//!
//! 换一句 ([`Decoder::rewrite`]) writes one line of a finished poem again under
//! the template, rhyme and characters of the lines kept, and scores each new
//! line with the kept lines after it, so the poem still reads on.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::checker::own_line_faults;
use super::model::PoetModel;
use super::ngram::CharNgram;
use super::rules::{CharTones, Plan, Rules, Verse};
use super::sample::{log_softmax, sample};
use super::{Candidate, Form, LineRequest, PoemRequest, Sampling};
use crate::error::{ModelError, PoemError};

/// Stands in a failed row's line, which keeps its place in the batch until the end.
const FILLER: char = '□';

/// The tones of each vocabulary entry (`None`: not a character with a known tone).
pub(crate) fn vocab_tones(model: &PoetModel) -> Vec<Option<CharTones>> {
    (0..model.vocab_size() as u32)
        .map(|id| model.char_of(id).and_then(CharTones::of))
        .collect()
}

/// A request as the T5 sees it: its plan, the head of every line's source,
/// how many candidates and from which seed.
struct Job {
    plan: Plan,
    /// `{form}|{keywords}|`: every line's source starts so.
    source_head: String,
    candidates: usize,
    seed: u64,
}

impl Job {
    fn new(req: &PoemRequest, model: &PoetModel) -> Result<Self, PoemError> {
        let plan = Plan::new(req, |c| model.id_of(c).is_some())?;
        Ok(Self {
            source_head: format!("{}|{}|", plan.form.name(), plan.keywords.join(" ")),
            plan,
            candidates: req.candidates.max(1),
            seed: req.seed,
        })
    }

    /// Its candidates' rows, each from `verse` (a poem begun or being
    /// rewritten), each with its own random stream from the job's seed.
    fn rows_from(&self, verse: &Verse) -> Vec<Row> {
        let mut seed_rng = StdRng::seed_from_u64(self.seed);
        (0..self.candidates)
            .map(|_| Row {
                job: 0,
                verse: verse.clone(),
                logprob: 0.0,
                rng: StdRng::seed_from_u64(seed_rng.random()),
                failed: false,
            })
            .collect()
    }

    fn candidate(&self, lines: Vec<String>, logprob: f64, scored_chars: usize) -> Candidate {
        let used = self.plan.keywords_used(&lines);
        Candidate::new(
            lines,
            logprob / scored_chars as f64,
            used,
            self.plan.keywords.len(),
        )
    }
}

/// One candidate being written.
struct Row {
    /// Which request (job) of the batch it belongs to.
    job: usize,
    verse: Verse,
    logprob: f64,
    rng: StdRng,
    failed: bool,
}

pub(crate) struct Decoder<'a> {
    pub(crate) model: &'a mut PoetModel,
    /// [`vocab_tones`] of the model.
    pub(crate) tones: &'a [Option<CharTones>],
    pub(crate) rules: &'a Rules,
    /// Mixed in by `sampling.ngram_weight`.
    pub(crate) ngram: Option<&'a CharNgram>,
    pub(crate) sampling: Sampling,
}

impl Decoder<'_> {
    pub(crate) fn write(&mut self, req: &PoemRequest) -> Result<Vec<Candidate>, PoemError> {
        self.write_batch(std::slice::from_ref(req))
            .pop()
            .expect("one answer per request")
    }

    /// Writes several requests' candidates together: the rows of all requests
    /// of one form share each model call. Answers are in the requests' order,
    /// and each is what [`Decoder::write`] gives for that request alone.
    pub(crate) fn write_batch(
        &mut self,
        reqs: &[PoemRequest],
    ) -> Vec<Result<Vec<Candidate>, PoemError>> {
        let mut answers: Vec<Option<Result<Vec<Candidate>, PoemError>>> =
            reqs.iter().map(|_| None).collect();
        for form in Form::ALL {
            let mut members = Vec::new();
            let mut jobs = Vec::new();
            for (i, req) in reqs.iter().enumerate().filter(|(_, r)| r.form == form) {
                match Job::new(req, self.model) {
                    Ok(job) => {
                        members.push(i);
                        jobs.push(job);
                    }
                    Err(e) => answers[i] = Some(Err(e)),
                }
            }
            if jobs.is_empty() {
                continue;
            }
            match self.write_group(&jobs) {
                Ok(per_job) => {
                    for (i, candidates) in members.into_iter().zip(per_job) {
                        answers[i] = Some(if candidates.is_empty() {
                            Err(PoemError::NoPoem)
                        } else {
                            Ok(candidates)
                        });
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for i in members {
                        answers[i] = Some(Err(ModelError::Batch(Arc::clone(&e)).into()));
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
    fn write_group(&mut self, jobs: &[Job]) -> Result<Vec<Vec<Candidate>>, ModelError> {
        let form = jobs[0].plan.form;
        let mut rows = Vec::new();
        for (j, job) in jobs.iter().enumerate() {
            let templates = job.plan.templates();
            let mut seed_rng = StdRng::seed_from_u64(job.seed);
            for _ in 0..job.candidates {
                let rng = StdRng::seed_from_u64(seed_rng.random());
                let template = templates[seed_rng.random_range(0..templates.len())];
                rows.push(Row {
                    job: j,
                    verse: Verse::new(template),
                    logprob: 0.0,
                    rng,
                    failed: false,
                });
            }
        }
        for _ in 0..form.lines() {
            self.write_line(&mut rows, jobs)?;
        }
        let mut out: Vec<Vec<Candidate>> = jobs.iter().map(|_| Vec::new()).collect();
        let chars = form.lines() * form.chars_per_line();
        for row in rows.into_iter().filter(|r| !r.failed) {
            out[row.job].push(jobs[row.job].candidate(row.verse.lines, row.logprob, chars));
        }
        Ok(out)
    }

    /// Rewrites one line: each candidate is a new line that keeps the poem's
    /// template, rhyme and unrepeated characters, and is scored by the
    /// poet's log-probability of it and of the kept lines after it, so that
    /// the poem still reads on. Candidates are distinct and differ from the old line.
    pub(crate) fn rewrite(&mut self, req: &LineRequest) -> Result<Vec<Candidate>, PoemError> {
        let job = Job::new(&req.poem, self.model)?;
        let form = job.plan.form;
        let verse = Verse::rewriting(form, &req.lines, req.line)?;
        // The kept lines are fed to the model to score the new line.
        if let Some(line) = req
            .lines
            .iter()
            .find(|l| l.chars().any(|c| self.model.id_of(c).is_none()))
        {
            return Err(PoemError::Lines(format!(
                "「{line}」 has a character the poet does not know"
            )));
        }
        let mut rows = job.rows_from(&verse);
        let jobs = std::slice::from_ref(&job);
        self.write_line(&mut rows, jobs)?;
        // Score the kept lines after the new one, each under its new context.
        for _ in req.line + 1..form.lines() {
            for row in &mut rows {
                let next = row.verse.rest.remove(0);
                row.verse.current = next.chars().collect();
            }
            self.score_current(&mut rows, jobs)?;
        }

        let mut candidates: Vec<Candidate> = Vec::new();
        let scored = (form.lines() - req.line) * form.chars_per_line();
        for row in rows.into_iter().filter(|r| !r.failed) {
            if candidates.iter().any(|c| c.lines == row.verse.lines) {
                continue;
            }
            candidates.push(job.candidate(row.verse.lines, row.logprob, scored));
        }
        if candidates.is_empty() {
            return Err(PoemError::NoPoem);
        }
        Ok(candidates)
    }

    /// Your own line: `req.lines[req.line]` is kept with the lines before
    /// it, and the lines after it are written under a template and rhyme
    /// the kept lines share. Each candidate is scored by the poet's
    /// log-probability of the lines it wrote.
    pub(crate) fn continue_poem(&mut self, req: &LineRequest) -> Result<Vec<Candidate>, PoemError> {
        let job = Job::new(&req.poem, self.model)?;
        let form = job.plan.form;
        let Some(verse) = Verse::continuing(form, &req.lines, req.line)? else {
            return Err(PoemError::OwnLine(own_line_faults(&req.lines, req.line)));
        };
        // Only a line someone typed can hold a character the poet never learnt.
        if let Some(c) = req.lines[..=req.line]
            .iter()
            .flat_map(|l| l.chars())
            .find(|&c| self.model.id_of(c).is_none())
        {
            return Err(PoemError::OwnLine(format!(
                "「{c}」这个字诗人没有学过，接不下去；换一个字试试。"
            )));
        }
        let mut rows = job.rows_from(&verse);
        let jobs = std::slice::from_ref(&job);
        for _ in req.line + 1..form.lines() {
            self.write_line(&mut rows, jobs)?;
        }
        let written = ((form.lines() - req.line - 1) * form.chars_per_line()).max(1);
        let mut candidates: Vec<Candidate> = Vec::new();
        for row in rows.into_iter().filter(|r| !r.failed) {
            if candidates.iter().all(|c| c.lines != row.verse.lines) {
                candidates.push(job.candidate(row.verse.lines, row.logprob, written));
            }
        }
        if candidates.is_empty() {
            return Err(PoemError::NoPoem);
        }
        Ok(candidates)
    }

    /// The source of a row's next line: `{form}|{keywords}|{line1}|…|`.
    fn sources(&self, rows: &[Row], jobs: &[Job]) -> Result<Vec<Vec<u32>>, ModelError> {
        rows.iter()
            .map(|row| {
                let mut s = jobs[row.job].source_head.clone();
                for l in &row.verse.lines {
                    s.push_str(l);
                    s.push('|');
                }
                self.model.tokenize(&s)
            })
            .collect()
    }

    /// Writes the next line of every row under the rules.
    fn write_line(&mut self, rows: &mut [Row], jobs: &[Job]) -> Result<(), ModelError> {
        self.run_line(rows, jobs, |decoder, row, _, logits| {
            decoder.choose(row, &jobs[row.job].plan, logits)
        })
    }

    /// Adds each row's log-probability of its `current` line, given its
    /// lines before it (teacher forcing), and appends the line.
    fn score_current(&mut self, rows: &mut [Row], jobs: &[Job]) -> Result<(), ModelError> {
        self.run_line(rows, jobs, |decoder, row, pos, logits| {
            let id = decoder
                .model
                .id_of(row.verse.current[pos])
                .expect("kept lines were checked against the vocabulary");
            let logprobs = decoder.next_logprobs(&row.verse.current[..pos], logits);
            row.logprob += logprobs[id as usize] as f64;
            id
        })
    }

    /// One line of every row through the model: encodes each row's source,
    /// then at each position feeds back the token `pick` returns for the row
    /// (given the position and the logits), and ends each row's line.
    fn run_line(
        &mut self,
        rows: &mut [Row],
        jobs: &[Job],
        pick: impl Fn(&Self, &mut Row, usize, &[f32]) -> u32 + Sync,
    ) -> Result<(), ModelError> {
        let n = jobs[0].plan.form.chars_per_line();
        let sources = self.sources(rows, jobs)?;
        let encoded = self.model.start(&sources)?;
        let mut last: Option<Vec<u32>> = None;
        for pos in 0..n {
            let logits = self.model.step(&encoded, last.as_deref())?;
            // Each row draws from its own random stream, so the rows can
            // pick on all cores and the poems stay what one core writes.
            let this = &*self;
            let fed = rows
                .par_iter_mut()
                .zip(logits)
                .map(|(row, logits)| pick(this, row, pos, &logits))
                .collect();
            last = Some(fed);
        }
        for row in rows.iter_mut() {
            row.verse.end_line();
        }
        Ok(())
    }

    fn tones_of(&self, c: char) -> Option<&CharTones> {
        self.model
            .id_of(c)
            .and_then(|id| self.tones[id as usize].as_ref())
    }

    /// The log-probability of every token next, after `before` in the line:
    /// the T5's, or its mixture with the n-gram's.
    fn next_logprobs(&self, before: &[char], logits: &[f32]) -> Vec<f32> {
        let t5 = log_softmax(logits);
        // Config checks the range; a library caller's value is held to it.
        let weight = self.sampling.ngram_weight.clamp(0.0, 1.0);
        let Some(ngram) = self.ngram.filter(|_| weight > 0.0) else {
            return t5;
        };
        let ids: Vec<Option<u32>> = before.iter().map(|&c| self.model.id_of(c)).collect();
        t5.into_iter()
            .zip(ngram.next(&ids))
            .map(|(lp, p)| ((1.0 - weight) * lp.exp() + weight * p).ln())
            .collect()
    }

    /// Picks the next character of a row and writes it; returns its token id.
    fn choose(&self, row: &mut Row, plan: &Plan, logits: &[f32]) -> u32 {
        let logprobs = self.next_logprobs(&row.verse.current, logits);
        let verse = &row.verse;
        let pos = verse.current.len();
        // Continue a keyword being written, if the rules let it.
        if let Some(next) = verse.keyword_next() {
            match self.tones_of(next) {
                Some(ct)
                    if verse.allows(plan, self.rules, ct, pos, &[])
                        && !verse.refuses(plan, self.rules, ct.c) =>
                {
                    let id = self
                        .model
                        .id_of(next)
                        .expect("tones come from the vocabulary");
                    self.commit(row, id as usize, &logprobs, None);
                    return id;
                }
                _ => row.verse.drop_keyword(),
            }
        }

        let verse = &row.verse;
        let openings = verse.keyword_openings(plan, self.rules, |c| self.tones_of(c));
        let mut scores: Vec<(usize, f32)> = self
            .tones
            .iter()
            .enumerate()
            .filter_map(|(id, ct)| {
                let ct = ct.as_ref()?;
                verse.allows(plan, self.rules, ct, pos, &[]).then(|| {
                    let bonus = if openings.contains_key(&ct.c) {
                        self.sampling.keyword_bonus
                    } else {
                        0.0
                    };
                    (id, logprobs[id] + bonus)
                })
            })
            .collect();
        loop {
            let Some(id) = sample(&scores, self.sampling, &mut row.rng) else {
                // The row stays in the batch's step and is dropped at the end.
                row.failed = true;
                row.verse.current.push(FILLER);
                return self.model.eos_id();
            };
            let c = self.tones[id]
                .as_ref()
                .expect("only known characters are allowed")
                .c;
            if row.verse.refuses(plan, self.rules, c) {
                scores.retain(|&(i, _)| i != id);
                continue;
            }
            self.commit(row, id, &logprobs, openings.get(&c).map(Vec::as_slice));
            return id as u32;
        }
    }

    fn commit(&self, row: &mut Row, id: usize, logprobs: &[f32], keyword_rest: Option<&[char]>) {
        let ct = self.tones[id]
            .as_ref()
            .expect("only known characters are allowed");
        row.verse.push(self.rules, ct, keyword_rest);
        row.logprob += logprobs[id] as f64;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use candle_core::{DType, Device};

    use super::*;
    use crate::poem::ngram::NGRAM_FILE;

    /// The distribution a character is drawn from is (1 − w)·softmax(logits)
    /// + w·n-gram given the line so far, and a distribution.
    #[test]
    fn the_next_character_is_drawn_from_the_mixture() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/poet-t5");
        let mut model = PoetModel::load(&dir, &Device::Cpu, DType::F32).unwrap();
        let ngram = CharNgram::load(&dir.join(NGRAM_FILE), model.vocab_size()).unwrap();
        let tones = vocab_tones(&model);
        let rules = Rules::new(tones.iter().flatten(), None);
        let before: Vec<char> = "春风".chars().collect();
        let ids: Vec<Option<u32>> = before.iter().map(|&c| model.id_of(c)).collect();
        let from_ngram = ngram.next(&ids);
        let logits: Vec<f32> = (0..model.vocab_size())
            .map(|i| ((i * 37) % 101) as f32 / 10.0)
            .collect();
        let from_t5 = log_softmax(&logits);
        for weight in [0.0f32, 0.3, 1.0] {
            let decoder = Decoder {
                model: &mut model,
                tones: &tones,
                rules: &rules,
                ngram: Some(&ngram),
                sampling: Sampling {
                    temperature: 0.3,
                    top_p: 0.9,
                    keyword_bonus: 0.0,
                    keyword_weight: 0.0,
                    ngram_weight: weight,
                },
            };
            let mixed = decoder.next_logprobs(&before, &logits);
            let total: f64 = mixed.iter().map(|&lp| (lp as f64).exp()).sum();
            assert!(
                (total - 1.0).abs() < 1e-4,
                "weight {weight}: sums to {total}"
            );
            for id in [0, 17, 1000, model_id(&decoder, '月')] {
                let expected = (1.0 - weight) * from_t5[id].exp() + weight * from_ngram[id];
                let got = mixed[id].exp();
                assert!(
                    (got - expected).abs() <= 1e-5 * expected.max(1e-3),
                    "weight {weight}, id {id}: {got} vs {expected}"
                );
            }
        }
    }

    fn model_id(decoder: &Decoder<'_>, c: char) -> usize {
        decoder.model.id_of(c).unwrap() as usize
    }
}
