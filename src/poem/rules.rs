//! The rules as a poet applies them while writing: which character may come
//! next, given the request and the poem so far. Every poet asks this one
//! engine: the T5 decoder for each entry of its vocabulary, the LLM poet for
//! each character of each token.
//!
//! A character is allowed at a place when
//! - it has a known tone ([`CharTones`]) that fits the slot of the poem's
//!   template ([`meter`](super::meter));
//! - it has not been used in the poem (unless the keywords repeat it);
//! - at the end of a rhyming line, it is in the poem's level-tone rhyme group
//!   (the first rhyme picks among groups wide enough to finish the poem); at
//!   the end of a line that does not rhyme, it has no level reading at all;
//! - in an acrostic, it is the given character at the head of each line;
//! - the line it completes is not a line of the training corpus
//!   ([`novelty`](super::novelty)), nor the line being rewritten.
//!
//! Keywords are steered: [`Verse::keyword_openings`] names the first
//! characters of unused keywords that fit the slots ahead as one word of the
//! line's rhythm ([`starts_word`]), so a keyword is never split across two
//! words to be placed; once one is opened its rest is written while the
//! rules allow it. A keyword counts as used only inside one line.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::meter::{Slot, Template};
use super::novelty::LineFilter;
use super::rhyme::{RhymeGroup, RhymeTable, Tone};
use super::{Form, PoemRequest};
use crate::error::PoemError;

/// A rhyme group must have this many characters a poet can write to open a
/// poem, so that a 律诗's five rhymes can always be found.
const MIN_RHYME_GROUP: usize = 30;

/// What the rules need to know of one character.
#[derive(Debug, Clone)]
pub(crate) struct CharTones {
    pub(crate) c: char,
    pub(crate) ping: bool,
    pub(crate) ze: bool,
    pub(crate) level_groups: Vec<RhymeGroup>,
}

impl CharTones {
    /// `None` for a character the 平水韵 table does not hold.
    pub(crate) fn of(c: char) -> Option<Self> {
        let table = RhymeTable::get();
        let (ping, ze) = (table.can_be(c, Tone::Ping), table.can_be(c, Tone::Ze));
        (ping || ze).then(|| Self {
            c,
            ping,
            ze,
            level_groups: table.level_groups(c).collect(),
        })
    }

    /// Whether the character's tone fits a slot.
    pub(crate) fn fits(&self, slot: Slot) -> bool {
        match slot {
            Slot::Fixed(Tone::Ping) => self.ping,
            Slot::Fixed(Tone::Ze) => self.ze,
            Slot::Free => true,
        }
    }
}

/// What depends on the characters a poet can write: the rhyme groups wide
/// enough to open a poem, and the corpus lines it must not copy.
pub(crate) struct Rules {
    wide: Vec<bool>,
    novelty: Option<LineFilter>,
}

impl Rules {
    pub(crate) fn new<'a>(
        writable: impl IntoIterator<Item = &'a CharTones>,
        novelty: Option<LineFilter>,
    ) -> Self {
        let mut sizes = vec![0usize; RhymeTable::get().group_count()];
        for ct in writable {
            for g in &ct.level_groups {
                sizes[g.0 as usize] += 1;
            }
        }
        // A small vocabulary may have no group that wide: then its widest open poems.
        let threshold = MIN_RHYME_GROUP
            .min(sizes.iter().copied().max().unwrap_or(0))
            .max(1);
        Self {
            wide: sizes.into_iter().map(|s| s >= threshold).collect(),
            novelty,
        }
    }

    fn wide(&self, group: RhymeGroup) -> bool {
        self.wide[group.0 as usize]
    }

    /// Whether a line is in the training corpus, by the line filter.
    pub(crate) fn copies_corpus(&self, line: &str) -> bool {
        self.novelty.as_ref().is_some_and(|f| f.contains(line))
    }
}

/// A request's keywords, acrostic and repeat budget, worked out once.
pub(crate) struct Plan {
    pub(crate) form: Form,
    pub(crate) keywords: Vec<String>,
    keyword_chars: Vec<Vec<char>>,
    acrostic: Option<Vec<char>>,
    /// How often a character may appear: as often as the keywords (or the
    /// acrostic) repeat it, else once.
    budget: HashMap<char, usize>,
}

impl Plan {
    /// `writable`: whether the poet can write a character (the acrostic's must be).
    pub(crate) fn new(
        req: &PoemRequest,
        writable: impl Fn(char) -> bool,
    ) -> Result<Self, PoemError> {
        let form = req.form;
        let keywords: Vec<String> = req
            .keywords
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        let keyword_chars: Vec<Vec<char>> = keywords.iter().map(|k| k.chars().collect()).collect();
        let acrostic = acrostic_of(form, req.acrostic.as_deref())?;
        if let Some(a) = &acrostic {
            if let Some(c) = a.iter().find(|&&c| !writable(c)) {
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
            keywords,
            keyword_chars,
            acrostic,
            budget,
        })
    }

    /// The templates an acrostic's characters fit (all four without one, or when none fits).
    pub(crate) fn templates(&self) -> Vec<Template> {
        acrostic_templates(self.form, self.acrostic.as_deref())
    }

    /// The keywords a poem's lines contain, each inside one line.
    pub(crate) fn keywords_used(&self, lines: &[String]) -> Vec<String> {
        self.keywords
            .iter()
            .filter(|k| lines.iter().any(|l| l.contains(k.as_str())))
            .cloned()
            .collect()
    }
}

/// One poem being written under the rules: the lines so far, the characters
/// used, the rhyme chosen, a keyword under way.
#[derive(Debug, Clone)]
pub(crate) struct Verse {
    pub(crate) template: Template,
    /// The template's slots, line by line, worked out once.
    slots: Arc<Vec<Vec<Slot>>>,
    /// The lines before the one being written.
    pub(crate) lines: Vec<String>,
    pub(crate) current: Vec<char>,
    /// The kept lines after it, when one line is rewritten.
    pub(crate) rest: Vec<String>,
    /// The line being rewritten, which must not come out again.
    refused: Option<String>,
    used: HashMap<char, usize>,
    /// The groups the rhymes so far share; `None` before the first rhyme.
    rhyme: Option<Vec<RhymeGroup>>,
    /// The rest of a keyword being written.
    pending: VecDeque<char>,
}

impl Verse {
    pub(crate) fn new(template: Template) -> Self {
        Self {
            template,
            slots: slots_of(template),
            lines: Vec::new(),
            current: Vec::new(),
            rest: Vec::new(),
            refused: None,
            used: HashMap::new(),
            rhyme: None,
            pending: VecDeque::new(),
        }
    }

    /// 换一句: the poem with line `line` to be written again. The template is
    /// the one the kept lines follow, the rhyme the groups its kept rhyming
    /// lines share. A first line that ends in a character of both tones fits
    /// a rhyming and a non-rhyming first line alike, so the template taken is
    /// the first under which the kept rhyming lines share a group — one the
    /// old line follows too, if any.
    pub(crate) fn rewriting(form: Form, lines: &[String], line: usize) -> Result<Self, PoemError> {
        let count = form.lines();
        let poem = TonedPoem::of(form, lines, line)?;
        let kept = || (0..count).filter(|&i| i != line);
        let (old_fits, kept_fit): (Vec<Template>, Vec<Template>) = Template::all(form)
            .into_iter()
            .filter(|t| kept().all(|i| poem.follows(t, i)))
            .partition(|t| poem.follows(t, line));
        if old_fits.is_empty() && kept_fit.is_empty() {
            return Err(PoemError::Lines(
                "this poem follows none of the 格律 templates".into(),
            ));
        }
        let (template, rhyme) = old_fits
            .into_iter()
            .chain(kept_fit)
            .find_map(|t| Some((t, poem.shared_rhyme(&t, kept())?)))
            .ok_or_else(|| PoemError::Lines("this poem does not keep to one rhyme".into()))?;
        let used = char_uses(kept().map(|i| &lines[i]));
        Ok(Self {
            template,
            slots: slots_of(template),
            lines: lines[..line].to_vec(),
            current: Vec::new(),
            rest: lines[line + 1..].to_vec(),
            refused: Some(lines[line].clone()),
            used,
            rhyme,
            pending: VecDeque::new(),
        })
    }

    /// Your own line: `lines[line]` is the new one, the lines before it are
    /// kept, the lines after it are to be written. The template is one the
    /// kept lines follow (the old poem's if it still does, so that as little
    /// moves as can), the rhyme the groups the kept rhyming lines share.
    /// `Ok(None)` when no template and rhyme hold the kept lines.
    pub(crate) fn continuing(
        form: Form,
        lines: &[String],
        line: usize,
    ) -> Result<Option<Self>, PoemError> {
        let poem = TonedPoem::of(form, lines, line)?;
        let mut templates: Vec<Template> = Template::all(form)
            .into_iter()
            .filter(|t| (0..=line).all(|i| poem.follows(t, i)))
            .collect();
        // The old poem's template first: the lines after keep its shape.
        templates.sort_by_key(|t| !(line + 1..form.lines()).all(|i| poem.follows(t, i)));
        let Some((template, rhyme)) = templates
            .into_iter()
            .find_map(|t| Some((t, poem.shared_rhyme(&t, 0..=line)?)))
        else {
            return Ok(None);
        };
        let used = char_uses(&lines[..=line]);
        Ok(Some(Self {
            template,
            slots: slots_of(template),
            lines: lines[..=line].to_vec(),
            current: Vec::new(),
            rest: Vec::new(),
            refused: None,
            used,
            rhyme,
            pending: VecDeque::new(),
        }))
    }

    /// The groups the rhymes so far share; `None` before the first rhyme.
    pub(crate) fn rhyme(&self) -> Option<&[RhymeGroup]> {
        self.rhyme.as_deref()
    }

    /// The index of the line being written.
    pub(crate) fn line(&self) -> usize {
        self.lines.len()
    }

    /// Whether `ct` may stand at place `pos` of the current line, after the
    /// current characters and then `planned` (the characters a keyword would
    /// put between them).
    pub(crate) fn allows(
        &self,
        plan: &Plan,
        rules: &Rules,
        ct: &CharTones,
        pos: usize,
        planned: &[char],
    ) -> bool {
        let line = self.line();
        let n = plan.form.chars_per_line();
        if pos >= n || !ct.fits(self.slots[line][pos]) {
            return false;
        }
        let end = pos == n - 1;
        // A line that does not rhyme ends in a character that cannot be read
        // level: one that can (深, 中, 看 …) sounds like a rhyme gone wrong.
        if end && !self.template.rhymes(line) && ct.ping {
            return false;
        }
        // Heads of later acrostic lines are kept for them while a poem is
        // written from the start (when a line is rewritten, the later lines
        // are kept and counted as used already).
        let reserved = match &plan.acrostic {
            Some(a) if self.rest.is_empty() => a
                .get(line + 1..)
                .unwrap_or(&[])
                .iter()
                .filter(|&&c| c == ct.c)
                .count(),
            _ => 0,
        };
        let used = self.used.get(&ct.c).copied().unwrap_or(0)
            + planned.iter().filter(|&&c| c == ct.c).count()
            + reserved;
        if used >= plan.budget.get(&ct.c).copied().unwrap_or(1).max(1) {
            return false;
        }
        if let Some(a) = &plan.acrostic {
            if pos == 0 && a[line] != ct.c {
                return false;
            }
        }
        if end && self.template.rhymes(line) {
            return match &self.rhyme {
                Some(groups) => ct.level_groups.iter().any(|g| groups.contains(g)),
                None => ct.level_groups.iter().any(|&g| rules.wide(g)),
            };
        }
        true
    }

    /// Whether `c` would complete a line of the training corpus, or the line
    /// being rewritten.
    pub(crate) fn refuses(&self, plan: &Plan, rules: &Rules, c: char) -> bool {
        if self.current.len() + 1 != plan.form.chars_per_line() {
            return false;
        }
        let mut line: String = self.current.iter().collect();
        line.push(c);
        self.refused.as_deref() == Some(line.as_str()) || rules.copies_corpus(&line)
    }

    /// The first character of each unused keyword that can open here as one
    /// word of the line and be written to its end under the rules, with the
    /// keyword's other characters. `tones` gives what the poet can write.
    pub(crate) fn keyword_openings<'t>(
        &self,
        plan: &Plan,
        rules: &Rules,
        tones: impl Fn(char) -> Option<&'t CharTones>,
    ) -> HashMap<char, Vec<char>> {
        let pos = self.current.len();
        let n = plan.form.chars_per_line();
        let current: String = self.current.iter().collect();
        let mut openings: HashMap<char, Vec<char>> = HashMap::new();
        for (text, kw) in plan.keywords.iter().zip(&plan.keyword_chars) {
            let used = self
                .lines
                .iter()
                .chain(&self.rest)
                .chain(std::iter::once(&current))
                .any(|l| l.contains(text.as_str()));
            if used || !starts_word(pos, kw.len(), n) {
                continue;
            }
            let fits = kw.iter().enumerate().all(|(j, &c)| {
                tones(c).is_some_and(|ct| self.allows(plan, rules, ct, pos + j, &kw[..j]))
            });
            if fits {
                openings.entry(kw[0]).or_insert_with(|| kw[1..].to_vec());
            }
        }
        openings
    }

    /// The next character of a keyword under way, if one is.
    pub(crate) fn keyword_next(&self) -> Option<char> {
        self.pending.front().copied()
    }

    /// Gives up the keyword under way (the rules no longer let it go on).
    pub(crate) fn drop_keyword(&mut self) {
        self.pending.clear();
    }

    /// Writes `ct` at the next place. `keyword_rest`: the characters still to
    /// come when `ct` opens a keyword.
    pub(crate) fn push(&mut self, rules: &Rules, ct: &CharTones, keyword_rest: Option<&[char]>) {
        match keyword_rest {
            Some(rest) => self.pending = rest.iter().copied().collect(),
            None if self.pending.front() == Some(&ct.c) => {
                self.pending.pop_front();
            }
            None => self.pending.clear(),
        }
        let n = self.template.form.chars_per_line();
        let rhymes_here = self.current.len() == n - 1 && self.template.rhymes(self.line());
        self.current.push(ct.c);
        *self.used.entry(ct.c).or_default() += 1;
        if rhymes_here {
            let groups: Vec<RhymeGroup> = ct
                .level_groups
                .iter()
                .copied()
                .filter(|&g| match &self.rhyme {
                    Some(gs) => gs.contains(&g),
                    None => rules.wide(g),
                })
                .collect();
            self.rhyme = Some(groups);
        }
    }

    /// Ends the current line.
    pub(crate) fn end_line(&mut self) {
        let text: String = self.current.drain(..).collect();
        self.lines.push(text);
        self.pending.clear();
    }
}

/// An acrostic's characters, one a line of `form`.
pub(crate) fn acrostic_of(
    form: Form,
    acrostic: Option<&str>,
) -> Result<Option<Vec<char>>, PoemError> {
    let Some(a) = acrostic else {
        return Ok(None);
    };
    let chars: Vec<char> = a.chars().collect();
    if chars.len() != form.lines() {
        return Err(PoemError::Acrostic(format!(
            "an acrostic for a {form} needs {} characters, not {}",
            form.lines(),
            chars.len()
        )));
    }
    Ok(Some(chars))
}

/// The templates of `form` whose line heads an acrostic's characters fit
/// (all four without one, or when none fits).
pub(crate) fn acrostic_templates(form: Form, acrostic: Option<&[char]>) -> Vec<Template> {
    let all = Template::all(form);
    let Some(a) = acrostic else {
        return all.to_vec();
    };
    let fitting: Vec<Template> = all
        .into_iter()
        .filter(|t| {
            a.iter()
                .enumerate()
                .all(|(i, &c)| CharTones::of(c).is_some_and(|ct| ct.fits(t.line(i)[0])))
        })
        .collect();
    if fitting.is_empty() {
        all.to_vec()
    } else {
        fitting
    }
}

/// A line a person typed for line of a `form`, as the rules read it:
/// punctuation and spaces dropped, traditional characters simplified.
/// Refused, in a sentence for that person, when it is not as many Chinese
/// characters as the form's lines have, each with a tone in 平水韵.
pub(crate) fn read_own_line(form: Form, typed: &str) -> Result<String, PoemError> {
    let table = RhymeTable::get();
    let text: String = super::checker::split_lines(typed)
        .concat()
        .chars()
        .map(|c| table.for_rules(c))
        .collect();
    let (n, count) = (form.chars_per_line(), text.chars().count());
    if let Some(c) = text.chars().find(|&c| !super::rhyme::is_han(c)) {
        return Err(PoemError::OwnLine(format!("诗句只能是汉字，「{c}」不是。")));
    }
    if count != n {
        return Err(PoemError::OwnLine(format!(
            "这首是{form}：你的句子要 {n} 个字，「{text}」有 {count} 个。"
        )));
    }
    if let Some(c) = text.chars().find(|&c| CharTones::of(c).is_none()) {
        return Err(PoemError::OwnLine(format!(
            "「{c}」不在平水韵里，定不了平仄；换一个字试试。"
        )));
    }
    Ok(text)
}

/// A poem's lines with their characters' tones, read so that line `line`
/// can be worked on under one of its form's templates.
struct TonedPoem {
    tones: Vec<Vec<CharTones>>,
}

impl TonedPoem {
    /// Refused when the poem's shape is not the form's, there is no line
    /// `line`, or a character has no tone the rules know.
    fn of(form: Form, lines: &[String], line: usize) -> Result<Self, PoemError> {
        let (count, n) = (form.lines(), form.chars_per_line());
        if lines.len() != count {
            return Err(PoemError::Lines(format!(
                "a {form} has {count} lines; this poem has {}",
                lines.len()
            )));
        }
        if line >= count {
            return Err(PoemError::Lines(format!(
                "there is no line {} in a {form}",
                line + 1
            )));
        }
        let tones = lines
            .iter()
            .map(|text| match text.chars().map(CharTones::of).collect::<Option<Vec<_>>>() {
                Some(cts) if cts.len() == n => Ok(cts),
                _ => Err(PoemError::Lines(format!(
                    "「{text}」 is not a line of {n} characters the poet knows (each with a tone in 平水韵)"
                ))),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { tones })
    }

    /// Whether line `i` follows the template's tones.
    fn follows(&self, template: &Template, i: usize) -> bool {
        template
            .line(i)
            .iter()
            .zip(&self.tones[i])
            .all(|(&slot, ct)| ct.fits(slot))
    }

    /// The level groups that the lines of `lines` that rhyme under the
    /// template all end in: `Some(None)` when none of them rhymes, `None`
    /// when they share no group.
    fn shared_rhyme(
        &self,
        template: &Template,
        lines: impl Iterator<Item = usize>,
    ) -> Option<Option<Vec<RhymeGroup>>> {
        let mut shared: Option<Vec<RhymeGroup>> = None;
        for i in lines.filter(|&i| template.rhymes(i)) {
            let groups = &self.tones[i][self.tones[i].len() - 1].level_groups;
            shared = Some(match shared {
                None => groups.clone(),
                Some(shared) => shared.into_iter().filter(|g| groups.contains(g)).collect(),
            });
        }
        match shared {
            Some(groups) if groups.is_empty() => None,
            shared => Some(shared),
        }
    }
}

/// How many times each character stands in `lines`.
fn char_uses<'a>(lines: impl IntoIterator<Item = &'a String>) -> HashMap<char, usize> {
    let mut used = HashMap::new();
    for c in lines.into_iter().flat_map(|l| l.chars()) {
        *used.entry(c).or_default() += 1;
    }
    used
}

fn slots_of(template: Template) -> Arc<Vec<Vec<Slot>>> {
    Arc::new(
        (0..template.form.lines())
            .map(|i| template.line(i))
            .collect(),
    )
}

/// Whether a word of `len` characters may start at `pos` of a line of `n`
/// without straddling the line's rhythm: 2|3 for five characters and 2|2|3
/// for seven, the closing three read as 2+1 or 1+2. Two characters start at
/// an even place or make the last two; three open the line or close it;
/// longer ones fill its head or its tail.
pub(crate) fn starts_word(pos: usize, len: usize, n: usize) -> bool {
    if pos + len > n {
        return false;
    }
    match len {
        0 | 1 => true,
        2 => pos.is_multiple_of(2) || pos + 2 == n,
        _ => pos == 0 || pos + len == n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
