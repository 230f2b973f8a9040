//! The 集句 poet: poems made of real lines of the corpus, each credited to its
//! poet and poem, under the same 格律 as the generator's.
//!
//! A request's lines are borrowed first: the lines that hold a keyword as a
//! word of their rhythm ([`starts_word`]), the other lines of those lines'
//! poems, lines that open with an acrostic's characters, and lines drawn at
//! random from the whole index, so that a poem can always be finished. Then a
//! beam search fills the template line by line. A line may stand at a place
//! when
//! - every character has a tone that fits the place's slot, and a line that
//!   does not rhyme ends in a character with no level reading;
//! - a rhyming line ends in the poem's rhyme group (a character counts only by
//!   a reading in that group), so no rhyme character comes twice;
//! - no character of it stands in another line (unless the keywords or the
//!   acrostic repeat it), nor does its poem give another line;
//! - the poem still names at most one season and one time of day ([`scene`]).
//!
//! Among the lines that may stand, the judge of coherence ([`judge`]) scores
//! how each goes on from the lines before; its scores, with a prior for a
//! line that stood at the same kind of place in its own poem (an opening line
//! opens, a closing line closes), make a distribution whose log-probabilities
//! add up along the beam, with a gain for each keyword used.

mod index;
mod judge;
mod scene;

use std::collections::HashSet;
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

pub use index::LineSource;

use self::index::{LineId, LineIndex, LinePool};
use self::judge::{CandidateRead, Judge};
use self::scene::{scene_of, Scene};
use super::meter::{line_slots, Template};
use super::rhyme::RhymeGroup;
use super::rules::{acrostic_of, acrostic_templates, starts_word, CharTones, Verse};
use super::{Candidate, Form, LineRequest, PoemRequest};
use crate::error::{LineIndexError, PoemError};

/// The line index's file in the 集句 poet's directory.
pub const INDEX_FILE: &str = "lines.tsv.gz";

/// Lines borrowed for each keyword (and each acrostic character) at most.
const LINES_PER_KEYWORD: usize = 200;
/// Lines of the keyword lines' own poems borrowed at most: they share the
/// keyword lines' scene and mood, so most of a poem is drawn from them.
const COMPANIONS: usize = 2000;
/// Lines drawn at random from the whole index, for each line of the form, so
/// that the rules can always be met; each retry of a dying beam draws four
/// times as many.
const FILLERS_PER_LINE: usize = 60;
/// What a line loses for each word of its rhythm that hardly any other line
/// of the index uses (萍实, 崖腰, 心天: readers find such lines odd).
const RARE_WORD_PRIOR: f32 = 1.0;
/// A word of the rhythm is rare when fewer lines than this hold it.
const RARE_WORD_LINES: u32 = 3;
/// What a line of a Buddhist 偈颂 or 颂古 loses: teaching verse, not lyric,
/// whose lines read as sermons beside the others' (1.5 % of the index).
const SERMON_PRIOR: f32 = 1.0;
/// A rhyme group may open a poem when this many borrowed lines, for each
/// rhyme the form needs, end in it: a narrow group would starve the later rhymes.
const LINES_PER_RHYME: usize = 10;
/// Drafts kept at each line.
const BEAM: usize = 8;
/// Continuations of one draft considered for the beam.
const BRANCHES: usize = 4;
/// What using one more keyword adds to a draft's summed log-probability.
const KEYWORD_GAIN: f64 = 4.0;
/// The prior for a line that stood at the same kind of place in its own poem
/// (opening, middle, closing), and for one on the same side of a couplet.
const ROLE_PRIOR: f32 = 1.0;
const SIDE_PRIOR: f32 = 0.5;
/// Seeded noise on the first line's prior, so that seeds give different poems.
const OPENING_JITTER: f32 = 0.5;

/// The 集句 poet: the line index and the judge of coherence.
pub struct JijuPoet {
    index: LineIndex,
    judge: Judge,
}

/// A borrowed line, with all the rules and the judge need of it.
struct Borrowed {
    text: Vec<char>,
    tones: Vec<CharTones>,
    poem: u32,
    place: u8,
    last: bool,
    scene: Scene,
    /// The request's keywords it holds as words, one bit each.
    keywords: u32,
    /// Words of its rhythm that fewer than `RARE_WORD_LINES` lines of the index hold.
    rare_words: u32,
    /// Whether its poem is a 偈颂 or 颂古.
    sermon: bool,
    read: CandidateRead,
}

impl Borrowed {
    /// Whether it may stand at line `i` of a draft whose rhyming lines share
    /// the groups `rhyme` (`None`: any) and end in `rhymes`: the template's
    /// tones, the ending it needs, a rhyme of the poem's group not used before.
    fn fits_at(
        &self,
        template: &Template,
        i: usize,
        rhyme: Option<&[RhymeGroup]>,
        rhymes: &[char],
    ) -> bool {
        let end = &self.tones[self.tones.len() - 1];
        self.fits(template, i)
            && (!template.rhymes(i)
                || (!rhymes.contains(&end.c)
                    && rhyme
                        .is_none_or(|groups| end.level_groups.iter().any(|g| groups.contains(g)))))
    }

    /// Whether it fits line `i` of the template by tone, and ends as that line must.
    fn fits(&self, template: &Template, i: usize) -> bool {
        let slots = line_slots(
            self.text.len(),
            template.second_tone(i),
            template.end_tone(i),
        );
        let end = &self.tones[self.tones.len() - 1];
        slots.iter().zip(&self.tones).all(|(&s, ct)| ct.fits(s))
            && if template.rhymes(i) {
                !end.level_groups.is_empty()
            } else {
                !end.ping
            }
    }

    /// The prior for standing at line `i` of `count`: the same kind of place
    /// it had in its own poem.
    fn prior(&self, i: usize, count: usize) -> f32 {
        let role = |first: bool, last: bool| (first as u8) | (last as u8) << 1;
        let mut prior = -RARE_WORD_PRIOR * self.rare_words as f32;
        if self.sermon {
            prior -= SERMON_PRIOR;
        }
        if role(self.place == 0, self.last) == role(i == 0, i + 1 == count) {
            prior += ROLE_PRIOR;
        }
        if self.place % 2 == (i % 2) as u8 {
            prior += SIDE_PRIOR;
        }
        prior
    }
}

/// The request's constraints beyond the template.
struct Ask<'a> {
    form: Form,
    keywords: &'a [Vec<char>],
    acrostic: Option<Vec<char>>,
}

impl Ask<'_> {
    /// How many lines may hold `c`: as many as the keywords or the acrostic repeat it, else one.
    fn budget(&self, c: char) -> usize {
        let in_keywords = self.keywords.iter().flatten().filter(|&&k| k == c).count();
        let in_acrostic = self.acrostic.iter().flatten().filter(|&&a| a == c).count();
        in_keywords.max(in_acrostic).max(1)
    }
}

/// A poem being filled.
#[derive(Clone)]
struct Draft {
    template: Template,
    /// Indexes into the borrowed lines.
    lines: Vec<usize>,
    rhyme: Option<Vec<RhymeGroup>>,
    scene: Scene,
    keywords: u32,
    /// The judge's log-probabilities of the lines after the first.
    logprob: f64,
    /// What the beam sorts by: the log-probabilities, the first line's prior and the keyword gains.
    objective: f64,
}

impl JijuPoet {
    /// The line index and the judge from `dir` (`models/jiju`).
    pub fn load(dir: &Path) -> Result<Self, LineIndexError> {
        let index = LineIndex::load(&dir.join(INDEX_FILE))?;
        let judge = Judge::load(dir)?;
        Ok(Self { index, judge })
    }

    /// The best poems for the request, best first (at most `request.candidates`).
    pub fn write(&self, request: &PoemRequest) -> Result<Vec<Candidate>, PoemError> {
        let keywords = keyword_chars(&request.keywords);
        let ask = ask_of(request, &keywords)?;
        let pool = self.index.pool(ask.form.chars_per_line());
        let count = ask.form.lines();
        // A beam that dies (rare: a 律诗's eight lines may leave no line that
        // shares no character with them) starts again with more lines to borrow.
        for fillers in [1, 4, 16].map(|times| times * FILLERS_PER_LINE * count) {
            let mut rng = StdRng::seed_from_u64(request.seed);
            let borrowed = self.borrow(pool, &ask, &[], fillers, &mut rng);
            let Some(drafts) = self.fill(&borrowed, &ask, request.candidates, &mut rng) else {
                continue;
            };
            let mut seen = HashSet::new();
            return Ok(drafts
                .into_iter()
                .filter(|d| seen.insert(d.lines.clone()))
                .take(request.candidates.max(1))
                .map(|d| {
                    let lines: Vec<&Borrowed> = d.lines.iter().map(|&b| &borrowed[b]).collect();
                    self.candidate(
                        &lines,
                        d.logprob / (count - 1) as f64,
                        &request.keywords,
                        &keywords,
                    )
                })
                .collect());
        }
        Err(PoemError::NoPoem)
    }

    /// The beam over the borrowed lines: the finished drafts, best first, or
    /// `None` when no draft could be finished.
    fn fill(
        &self,
        borrowed: &[Borrowed],
        ask: &Ask,
        candidates: usize,
        rng: &mut StdRng,
    ) -> Option<Vec<Draft>> {
        let count = ask.form.lines();
        let opening_noise: Vec<f32> = (0..borrowed.len())
            .map(|_| rng.random::<f32>() * OPENING_JITTER)
            .collect();
        let opening_rhymes = wide_rhymes(borrowed, ask.form);
        let mut drafts: Vec<Draft> = acrostic_templates(ask.form, ask.acrostic.as_deref())
            .into_iter()
            .map(|template| Draft {
                template,
                lines: Vec::new(),
                rhyme: opening_rhymes.clone(),
                scene: Scene::default(),
                keywords: 0,
                logprob: 0.0,
                objective: 0.0,
            })
            .collect();
        for i in 0..count {
            let mut next: Vec<Draft> = drafts
                .par_iter()
                .flat_map_iter(|draft| {
                    self.extend(draft, borrowed, ask, i, &opening_noise)
                        .into_iter()
                })
                .collect();
            next.sort_by(|a, b| b.objective.total_cmp(&a.objective));
            drafts = next.into_iter().take(BEAM.max(candidates)).collect();
            if drafts.is_empty() {
                return None;
            }
        }
        Some(drafts)
    }

    /// 换一句: other real lines for line `request.line`, the others kept, best first.
    pub fn rewrite(&self, request: &LineRequest) -> Result<Vec<Candidate>, PoemError> {
        let keywords = keyword_chars(&request.poem.keywords);
        let ask = ask_of(&request.poem, &keywords)?;
        let verse = Verse::rewriting(ask.form, &request.lines, request.line)?;
        let k = request.line;
        let count = ask.form.lines();
        let pool = self.index.pool(ask.form.chars_per_line());
        let kept: Vec<Vec<char>> = request.lines.iter().map(|l| l.chars().collect()).collect();
        // Each line found in the index once (the first poem that has it): the
        // kept lines' own poems may not give the new line, their other lines
        // may; and the lines are credited by what was found.
        let found: Vec<Option<LineId>> = kept.iter().map(|l| pool.find(l).next()).collect();
        let kept_ids: Vec<LineId> = found
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != k)
            .filter_map(|(_, id)| *id)
            .collect();
        let sources: Vec<LineSource> = found
            .iter()
            .map(|id| match id {
                Some(id) => self.index.source(pool.entry(*id).poem).clone(),
                None => LineSource::unknown(),
            })
            .collect();
        let kept_poems: HashSet<u32> = kept_ids.iter().map(|&id| pool.entry(id).poem).collect();
        let mut rng = StdRng::seed_from_u64(request.poem.seed);
        let borrowed = self.borrow(pool, &ask, &kept_ids, FILLERS_PER_LINE * count, &mut rng);
        let others: Vec<&[char]> = kept
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != k)
            .map(|(_, l)| l.as_slice())
            .collect();
        let scene = others
            .iter()
            .try_fold(Scene::default(), |s, l| s.join(scene_of(l)))
            .unwrap_or_default();
        let rhymes: Vec<char> = kept
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != k && verse.template.rhymes(j))
            .map(|(_, l)| l[l.len() - 1])
            .collect();
        let keywords_kept = others
            .iter()
            .fold(0, |mask, l| mask | keyword_mask(l, &keywords));
        let before: Vec<&[char]> = kept[..k].iter().map(Vec::as_slice).collect();
        let context = (!before.is_empty()).then(|| self.judge.read_context(&before));
        let n = ask.form.chars_per_line();
        let after = (k + 1 < count).then(|| self.judge.read_candidate(&kept[k + 1]));
        let mut scored: Vec<(f32, &Borrowed)> = borrowed
            .par_iter()
            .filter(|b| {
                b.text != kept[k]
                    && !kept_poems.contains(&b.poem)
                    && b.fits_at(&verse.template, k, verse.rhyme(), &rhymes)
                    && ask.acrostic.as_ref().is_none_or(|a| b.text[0] == a[k])
                    && chars_fit(&ask, &others, &b.text, &[])
                    && scene.join(b.scene).is_some()
            })
            .map(|b| {
                let mut logit = b.prior(k, count);
                if let Some(context) = &context {
                    logit += self.judge.score(context, &b.read, k, n);
                }
                if let Some(after) = &after {
                    let mut with: Vec<&[char]> = before.clone();
                    with.push(&b.text);
                    logit += self
                        .judge
                        .score(&self.judge.read_context(&with), after, k + 1, n);
                }
                let gained = (b.keywords & !keywords_kept).count_ones() as f32;
                (logit + gained * KEYWORD_GAIN as f32, b)
            })
            .collect();
        if scored.is_empty() {
            return Err(PoemError::NoPoem);
        }
        let logits: Vec<f32> = scored.iter().map(|s| s.0).collect();
        let normaliser = log_sum_exp(&logits);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ok(scored
            .into_iter()
            .take(request.poem.candidates.max(1))
            .map(|(logit, b)| {
                let mut lines = request.lines.clone();
                lines[k] = b.text.iter().collect();
                let mut candidate = Candidate::new(
                    lines.clone(),
                    (logit - normaliser) as f64,
                    used_keywords(&lines, &request.poem.keywords),
                    request.poem.keywords.len(),
                );
                candidate.sources = sources.clone();
                candidate.sources[k] = self.index.source(b.poem).clone();
                candidate
            })
            .collect())
    }

    /// Whether some line of `n` characters holds `word` as a word of its rhythm.
    pub fn holds_as_word(&self, word: &str, n: usize) -> bool {
        let word: Vec<char> = word.chars().collect();
        let pool = self.index.pool(n);
        pool.ids().any(|id| holds_word(pool.text(id), &word))
    }

    /// Each line's source, found by its text (an unknown line: an empty source).
    pub fn sources_of(&self, lines: &[String]) -> Vec<LineSource> {
        lines
            .iter()
            .map(|l| {
                self.index
                    .source_of(l)
                    .cloned()
                    .unwrap_or_else(LineSource::unknown)
            })
            .collect()
    }

    /// The lines a request may take: keyword lines, their poems' other lines,
    /// acrostic openings, the lines of `neighbours`' poems, and random fillers;
    /// each once, each with known tones, each read by the judge.
    fn borrow(
        &self,
        pool: &LinePool,
        ask: &Ask,
        neighbours: &[LineId],
        fillers: usize,
        rng: &mut StdRng,
    ) -> Vec<Borrowed> {
        let n = ask.form.chars_per_line();
        let mut by_keyword: Vec<Vec<LineId>> = vec![Vec::new(); ask.keywords.len()];
        let heads: Vec<char> = ask.acrostic.clone().unwrap_or_default();
        let mut by_head: Vec<Vec<LineId>> = vec![Vec::new(); heads.len()];
        for id in pool.ids() {
            let text = pool.text(id);
            for (k, keyword) in ask.keywords.iter().enumerate() {
                if holds_word(text, keyword) {
                    by_keyword[k].push(id);
                }
            }
            for (h, &head) in heads.iter().enumerate() {
                if text[0] == head {
                    by_head[h].push(id);
                }
            }
        }
        let mut chosen: Vec<LineId> = Vec::new();
        for lines in by_keyword.iter_mut().chain(by_head.iter_mut()) {
            lines.shuffle(rng);
            chosen.extend(lines.iter().take(LINES_PER_KEYWORD));
        }
        let mut companions: Vec<LineId> = chosen
            .iter()
            .chain(neighbours)
            .flat_map(|&id| pool.poem_lines(id))
            .collect();
        companions.shuffle(rng);
        chosen.extend(companions.into_iter().take(COMPANIONS));
        chosen.extend((0..fillers).map(|_| LineId(rng.random_range(0..pool.len() as u32))));
        chosen.sort_unstable();
        chosen.dedup();
        let uses = word_uses(pool, chosen.iter().map(|&id| pool.text(id)));
        chosen
            .into_par_iter()
            .filter_map(|id| {
                let text = pool.text(id).to_vec();
                let tones: Vec<CharTones> = text
                    .iter()
                    .map(|&c| CharTones::of(c))
                    .collect::<Option<_>>()?;
                debug_assert_eq!(tones.len(), n);
                let entry = pool.entry(id);
                Some(Borrowed {
                    scene: scene_of(&text),
                    keywords: keyword_mask(&text, ask.keywords),
                    rare_words: rhythm_words(&text)
                        .filter(|w| uses.get(w).copied().unwrap_or(0) < RARE_WORD_LINES)
                        .count() as u32,
                    sermon: is_sermon(&self.index.source(entry.poem).title),
                    read: self.judge.read_candidate(&text),
                    poem: entry.poem,
                    place: entry.place,
                    last: entry.last,
                    tones,
                    text,
                })
            })
            .collect()
    }

    /// The drafts one line longer that `draft` can become, its best `BRANCHES`.
    fn extend(
        &self,
        draft: &Draft,
        borrowed: &[Borrowed],
        ask: &Ask,
        i: usize,
        opening_noise: &[f32],
    ) -> Vec<Draft> {
        let count = ask.form.lines();
        let n = ask.form.chars_per_line();
        let lines: Vec<&[char]> = draft
            .lines
            .iter()
            .map(|&b| borrowed[b].text.as_slice())
            .collect();
        let poems: Vec<u32> = draft.lines.iter().map(|&b| borrowed[b].poem).collect();
        let reserved: Vec<char> = ask
            .acrostic
            .as_ref()
            .map(|a| a[i + 1..].to_vec())
            .unwrap_or_default();
        let rhymes: Vec<char> = lines
            .iter()
            .enumerate()
            .filter(|&(j, _)| draft.template.rhymes(j))
            .map(|(_, l)| l[l.len() - 1])
            .collect();
        let context = (i > 0).then(|| self.judge.read_context(&lines));
        let mut options: Vec<(f32, usize)> = borrowed
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                b.fits_at(&draft.template, i, draft.rhyme.as_deref(), &rhymes)
                    && !poems.contains(&b.poem)
                    && ask.acrostic.as_ref().is_none_or(|a| b.text[0] == a[i])
                    && chars_fit(ask, &lines, &b.text, &reserved)
                    && draft.scene.join(b.scene).is_some()
            })
            .map(|(at, b)| {
                let logit = match &context {
                    Some(context) => b.prior(i, count) + self.judge.score(context, &b.read, i, n),
                    None => b.prior(i, count) + opening_noise[at],
                };
                (logit, at)
            })
            .collect();
        if options.is_empty() {
            return Vec::new();
        }
        let logits: Vec<f32> = options.iter().map(|o| o.0).collect();
        let normaliser = log_sum_exp(&logits);
        let gain = |b: &Borrowed| (b.keywords & !draft.keywords).count_ones() as f64 * KEYWORD_GAIN;
        // Keyword gains first decide which continuations are worth keeping.
        options.sort_by(|a, b| {
            let key = |o: &(f32, usize)| o.0 as f64 + gain(&borrowed[o.1]);
            key(b).total_cmp(&key(a))
        });
        options
            .into_iter()
            .take(BRANCHES)
            .map(|(logit, at)| {
                let b = &borrowed[at];
                let mut next = draft.clone();
                next.lines.push(at);
                next.scene = draft.scene.join(b.scene).expect("filtered above");
                next.keywords |= b.keywords;
                if draft.template.rhymes(i) {
                    next.rhyme = Some(shared_rhyme(b, draft.rhyme.as_deref()));
                }
                let step = if i == 0 {
                    logit as f64
                } else {
                    let logprob = (logit - normaliser) as f64;
                    next.logprob += logprob;
                    logprob
                };
                next.objective += step + gain(b);
                next
            })
            .collect()
    }

    fn candidate(
        &self,
        lines: &[&Borrowed],
        mean_logprob: f64,
        keywords: &[String],
        keyword_chars: &[Vec<char>],
    ) -> Candidate {
        let mask = lines.iter().fold(0, |m, b| m | b.keywords);
        let used: Vec<String> = keywords
            .iter()
            .zip(keyword_chars)
            .enumerate()
            .filter(|(k, (_, chars))| !chars.is_empty() && mask & (1 << k) != 0)
            .map(|(_, (k, _))| k.clone())
            .collect();
        let texts: Vec<String> = lines.iter().map(|b| b.text.iter().collect()).collect();
        let mut candidate = Candidate::new(texts, mean_logprob, used, keywords.len());
        candidate.sources = lines
            .iter()
            .map(|b| self.index.source(b.poem).clone())
            .collect();
        candidate
    }
}

fn keyword_chars(keywords: &[String]) -> Vec<Vec<char>> {
    // Only the first 32 keywords are tracked (a bit each); a request has far fewer.
    keywords
        .iter()
        .take(32)
        .map(|k| k.chars().collect())
        .collect()
}

fn ask_of<'a>(request: &PoemRequest, keywords: &'a [Vec<char>]) -> Result<Ask<'a>, PoemError> {
    let form = request.form;
    let acrostic = acrostic_of(form, request.acrostic.as_deref())?;
    Ok(Ask {
        form,
        keywords,
        acrostic,
    })
}

/// Whether a title names a Buddhist teaching verse: 偈颂, 颂古, 颂.
fn is_sermon(title: &str) -> bool {
    title.contains('偈') || title.contains("颂古") || title.starts_with('颂')
}

/// The two-character words of a line's rhythm: 2|2 for five characters, 2|2|2 for seven.
fn rhythm_words(line: &[char]) -> impl Iterator<Item = [char; 2]> + '_ {
    line.chunks_exact(2).map(|w| [w[0], w[1]])
}

/// How many lines of the pool hold each of the rhythm words of `lines` among their own.
fn word_uses<'a>(
    pool: &LinePool,
    lines: impl Iterator<Item = &'a [char]>,
) -> std::collections::HashMap<[char; 2], u32> {
    let mut uses: std::collections::HashMap<[char; 2], u32> =
        lines.flat_map(rhythm_words).map(|w| (w, 0)).collect();
    for id in pool.ids() {
        for w in rhythm_words(pool.text(id)) {
            if let Some(count) = uses.get_mut(&w) {
                *count += 1;
            }
        }
    }
    uses
}

/// Whether `line` holds `word` as one word of its rhythm.
fn holds_word(line: &[char], word: &[char]) -> bool {
    !word.is_empty()
        && line
            .windows(word.len())
            .enumerate()
            .any(|(p, w)| w == word && starts_word(p, word.len(), line.len()))
}

fn keyword_mask(line: &[char], keywords: &[Vec<char>]) -> u32 {
    keywords
        .iter()
        .enumerate()
        .filter(|(_, k)| holds_word(line, k))
        .fold(0, |m, (k, _)| m | 1 << k)
}

/// The keywords the lines hold as words, in the request's order.
fn used_keywords(lines: &[String], keywords: &[String]) -> Vec<String> {
    let chars: Vec<Vec<char>> = lines.iter().map(|l| l.chars().collect()).collect();
    keywords
        .iter()
        .filter(|k| {
            let k: Vec<char> = k.chars().collect();
            chars.iter().any(|l| holds_word(l, &k))
        })
        .cloned()
        .collect()
}

/// The groups a poem's first rhyme may take: those enough borrowed lines end
/// in (`None`, any group, when none is that wide).
fn wide_rhymes(borrowed: &[Borrowed], form: Form) -> Option<Vec<RhymeGroup>> {
    let rhymes = form.lines() / 2 + 1;
    let mut counts: std::collections::HashMap<RhymeGroup, usize> = Default::default();
    for b in borrowed {
        for &g in &b.tones[b.tones.len() - 1].level_groups {
            *counts.entry(g).or_default() += 1;
        }
    }
    let mut wide: Vec<RhymeGroup> = counts
        .into_iter()
        .filter(|&(_, n)| n >= LINES_PER_RHYME * rhymes)
        .map(|(g, _)| g)
        .collect();
    wide.sort();
    (!wide.is_empty()).then_some(wide)
}

fn shared_rhyme(b: &Borrowed, rhyme: Option<&[RhymeGroup]>) -> Vec<RhymeGroup> {
    let end = &b.tones[b.tones.len() - 1];
    end.level_groups
        .iter()
        .copied()
        .filter(|g| rhyme.is_none_or(|r| r.contains(g)))
        .collect()
}

/// Whether `line` may join `lines`: none of its characters stands in more
/// lines than the request allows (`reserved`: characters later acrostic lines need).
fn chars_fit(ask: &Ask, lines: &[&[char]], line: &[char], reserved: &[char]) -> bool {
    let mut seen: Vec<char> = Vec::with_capacity(line.len());
    for &c in line {
        if seen.contains(&c) {
            continue;
        }
        seen.push(c);
        let holding = lines.iter().filter(|l| l.contains(&c)).count();
        let later = reserved.iter().filter(|&&r| r == c).count();
        if holding + 1 + later > ask.budget(c) {
            return false;
        }
    }
    true
}

fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + values.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_count_only_as_words_of_the_rhythm() {
        let line: Vec<char> = "荒凉月色照孤村".chars().collect();
        assert!(!holds_word(&line, &['凉', '月']));
        assert!(holds_word(&line, &['孤', '村']));
        let line: Vec<char> = "孤村落日残霞".chars().collect();
        assert!(!holds_word(&line, &['村', '落']));
        assert!(holds_word(&line, &['落', '日']));
        assert!(!holds_word(&line, &[]));
    }

    #[test]
    fn a_character_stands_in_one_line_unless_the_keywords_repeat_it() {
        let keywords = vec!["明月".chars().collect::<Vec<_>>(), "月".chars().collect()];
        let ask = Ask {
            form: Form::WuJue,
            keywords: &keywords,
            acrostic: None,
        };
        let before: Vec<char> = "床前明月光".chars().collect();
        let lines = [before.as_slice()];
        let again: Vec<char> = "举头望明月".chars().collect();
        // 月 twice in the keywords: two lines may hold it; 明 once: only one.
        assert!(!chars_fit(&ask, &lines, &again, &[]));
        let moon: Vec<char> = "举头望山月".chars().collect();
        assert!(chars_fit(&ask, &lines, &moon, &[]));
        assert!(!chars_fit(&ask, &lines, &moon, &['月']));
        let repeat: Vec<char> = "低头思故乡".chars().collect();
        assert!(chars_fit(&ask, &lines, &repeat, &[]));
        assert!(!chars_fit(
            &ask,
            &lines,
            &"疑是地上光".chars().collect::<Vec<_>>(),
            &[]
        ));
    }
}
