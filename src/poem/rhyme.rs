//! The 平水韵 rhyme table: 106 groups, each level (平) or oblique (仄).
//!
//! `data/pingshuiyun.txt` holds a heading line per group (`上平一东`, `入声十七洽`),
//! then its characters; `[..]` and `<..>` note a reading and are skipped. A character may
//! stand in several groups (several readings): it fits a tone or a rhyme when
//! any of its readings does.

use std::collections::HashMap;
use std::sync::OnceLock;

const TABLE: &str = include_str!("data/pingshuiyun.txt");
/// Traditional characters and their simplified forms (`tools/make_t2s.py`).
const TRADITIONAL: &str = include_str!("data/t2s.txt");

/// A character's tone class in regulated verse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tone {
    /// 平: the 上平 and 下平 groups.
    Ping,
    /// 仄: the 上声, 去声 and 入声 groups.
    Ze,
}

impl Tone {
    pub(crate) fn opposite(self) -> Tone {
        match self {
            Tone::Ping => Tone::Ze,
            Tone::Ze => Tone::Ping,
        }
    }

    pub(crate) fn as_char(self) -> char {
        match self {
            Tone::Ping => '平',
            Tone::Ze => '仄',
        }
    }
}

/// One of the 106 groups, by its index in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RhymeGroup(pub(crate) u8);

pub struct RhymeTable {
    /// Group names, e.g. `上平一东`, indexed by [`RhymeGroup`].
    names: Vec<String>,
    tones: Vec<Tone>,
    groups_of: HashMap<char, Vec<RhymeGroup>>,
    /// Simplified forms of traditional characters the table lacks.
    simplified: HashMap<char, char>,
}

impl RhymeTable {
    /// The table shipped with the crate, parsed once.
    pub fn get() -> &'static RhymeTable {
        static TABLE_CELL: OnceLock<RhymeTable> = OnceLock::new();
        TABLE_CELL.get_or_init(|| RhymeTable::parse(TABLE))
    }

    fn parse(text: &str) -> RhymeTable {
        let mut table = RhymeTable {
            names: Vec::new(),
            tones: Vec::new(),
            groups_of: HashMap::new(),
            simplified: HashMap::new(),
        };
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        while let (Some(heading), Some(chars)) = (lines.next(), lines.next()) {
            let group = RhymeGroup(table.names.len() as u8);
            let tone = if heading.starts_with("上平") || heading.starts_with("下平") {
                Tone::Ping
            } else {
                Tone::Ze
            };
            table.names.push(heading.to_owned());
            table.tones.push(tone);
            let mut in_note = false;
            for c in chars.chars() {
                match c {
                    '[' | '<' | '(' | '（' => in_note = true,
                    ']' | '>' | ')' | '）' => in_note = false,
                    _ if in_note || !is_han(c) => {}
                    _ => {
                        let groups = table.groups_of.entry(c).or_default();
                        if !groups.contains(&group) {
                            groups.push(group);
                        }
                    }
                }
            }
        }
        table.simplified = TRADITIONAL
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut pair = l.chars();
                Some((pair.next()?, pair.next()?))
            })
            .filter(|(t, s)| !table.groups_of.contains_key(t) && table.groups_of.contains_key(s))
            .collect();
        table
    }

    /// The character the rules read for `c`: its simplified form where the
    /// table lacks `c` and has that (風 → 风), else `c`. The poets write from
    /// the table's own characters; this is for poems people type.
    pub fn for_rules(&self, c: char) -> char {
        self.simplified.get(&c).copied().unwrap_or(c)
    }

    pub(crate) fn group_count(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn name(&self, group: RhymeGroup) -> &str {
        &self.names[group.0 as usize]
    }

    pub(crate) fn tone_of_group(&self, group: RhymeGroup) -> Tone {
        self.tones[group.0 as usize]
    }

    /// Every group the character stands in (empty when it is not in the table).
    pub(crate) fn groups(&self, c: char) -> &[RhymeGroup] {
        self.groups_of.get(&c).map_or(&[], Vec::as_slice)
    }

    /// Whether some reading of `c` has this tone.
    pub fn can_be(&self, c: char, tone: Tone) -> bool {
        self.groups(c)
            .iter()
            .any(|&g| self.tone_of_group(g) == tone)
    }

    /// The tone when every reading agrees; `None` for unknown or ambiguous characters.
    pub(crate) fn tone(&self, c: char) -> Option<Tone> {
        match (self.can_be(c, Tone::Ping), self.can_be(c, Tone::Ze)) {
            (true, false) => Some(Tone::Ping),
            (false, true) => Some(Tone::Ze),
            _ => None,
        }
    }

    /// The level-tone groups of `c` (the groups a rhyming line can end in).
    pub(crate) fn level_groups(&self, c: char) -> impl Iterator<Item = RhymeGroup> + '_ {
        self.groups(c)
            .iter()
            .copied()
            .filter(|&g| self.tone_of_group(g) == Tone::Ping)
    }

    /// Every character of the table (the LLM poet's vocabulary filter).
    #[cfg(feature = "llm")]
    pub(crate) fn characters(&self) -> impl Iterator<Item = char> + '_ {
        self.groups_of.keys().copied()
    }

    pub(crate) fn rhymes_with(&self, c: char, group: RhymeGroup) -> bool {
        self.groups(c).contains(&group)
    }
}

/// CJK unified ideographs (the basic block and extension A).
pub(crate) fn is_han(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_106_groups_30_level() {
        let t = RhymeTable::get();
        assert_eq!(t.group_count(), 106);
        let level = (0..106)
            .filter(|&g| t.tone_of_group(RhymeGroup(g)) == Tone::Ping)
            .count();
        assert_eq!(level, 30);
    }

    #[test]
    fn tones_and_readings() {
        let t = RhymeTable::get();
        assert_eq!(t.tone('东'), Some(Tone::Ping));
        assert_eq!(t.tone('月'), Some(Tone::Ze));
        // 看 has a level (寒) and an oblique (翰) reading.
        assert!(t.can_be('看', Tone::Ping) && t.can_be('看', Tone::Ze));
        assert_eq!(t.tone('看'), None);
        // Notes are not characters of the group: 中[中间] in 东, 参<人参> in 侵.
        assert!(t.level_groups('人').all(|g| t.name(g) == "上平十一真"));
        let dong = t.groups('东')[0];
        assert_eq!(t.name(dong), "上平一东");
        assert!(t.rhymes_with('中', dong) && t.rhymes_with('风', dong));
        assert!(!t.rhymes_with('间', dong));
    }
}
