//! 格律: the standard tone templates of 近体诗.
//!
//! Every line is one of four patterns, named by the tone of its second
//! character and of its last. The lines of a poem follow from the first:
//! the two lines of a couplet are opposite at the second character (对), the
//! first line of a couplet repeats the second character's tone of the line
//! before (粘), even lines end level and rhyme, odd lines end oblique unless
//! the first line rhymes (首句入韵).
//!
//! Free positions (一三不论, 一三五不论 in 七言) accept either tone, except where
//! freedom would break the line: the first character of the five-character
//! core of a level-ending line that has a level second character (孤平 — 仄平仄仄平),
//! and the third-from-last of a line ending 仄平平 (三平尾). Those stay fixed.

use super::rhyme::Tone::{self, Ping, Ze};
use super::Form;

/// What a position of a line accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Fixed(Tone),
    Free,
}

/// Which of the standard templates a poem follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Template {
    pub(crate) form: Form,
    /// Tone of the first line's second character (平起 / 仄起).
    pub(crate) first_second: Tone,
    /// Whether the first line rhymes (首句入韵).
    pub(crate) first_rhymes: bool,
}

impl Template {
    /// The four templates of a form.
    pub(crate) fn all(form: Form) -> [Template; 4] {
        [(Ping, true), (Ping, false), (Ze, true), (Ze, false)].map(
            |(first_second, first_rhymes)| Template {
                form,
                first_second,
                first_rhymes,
            },
        )
    }

    /// The tone of line `i`'s second character, by 粘 and 对.
    pub(crate) fn second_tone(&self, i: usize) -> Tone {
        // Pairs of lines (1,2), (3,4), … alternate; line 2k repeats line 2k-1.
        if i.div_ceil(2).is_multiple_of(2) {
            self.first_second
        } else {
            self.first_second.opposite()
        }
    }

    pub(crate) fn end_tone(&self, i: usize) -> Tone {
        if i % 2 == 1 || (i == 0 && self.first_rhymes) {
            Ping
        } else {
            Ze
        }
    }

    /// Whether line `i` ends in the rhyme.
    pub(crate) fn rhymes(&self, i: usize) -> bool {
        self.end_tone(i) == Ping
    }

    /// The slots of line `i`.
    pub(crate) fn line(&self, i: usize) -> Vec<Slot> {
        line_slots(
            self.form.chars_per_line(),
            self.second_tone(i),
            self.end_tone(i),
        )
    }
}

/// 一三(五)不论: the odd-numbered characters but the last accept either tone
/// (counting from 1; `p` counts from 0).
pub(crate) fn free_by_position(p: usize, n: usize) -> bool {
    p.is_multiple_of(2) && p != n - 1
}

/// The slots of a line of `n` characters (5 or 7) with the given second and last tones.
pub(crate) fn line_slots(n: usize, second: Tone, end: Tone) -> Vec<Slot> {
    // The five-character core, keyed by its own second tone and its end.
    let core_second = if n == 7 { second.opposite() } else { second };
    let core: [Tone; 5] = match (core_second, end) {
        (Ze, Ze) => [Ze, Ze, Ping, Ping, Ze],       // 仄仄平平仄
        (Ping, Ping) => [Ping, Ping, Ze, Ze, Ping], // 平平仄仄平
        (Ping, Ze) => [Ping, Ping, Ping, Ze, Ze],   // 平平平仄仄
        (Ze, Ping) => [Ze, Ze, Ze, Ping, Ping],     // 仄仄仄平平
    };
    let mut tones = Vec::with_capacity(n);
    if n == 7 {
        let lead = core[0].opposite();
        tones.extend([lead, lead]);
    }
    tones.extend(core);
    let core_start = n - 5;
    tones
        .iter()
        .enumerate()
        .map(|(p, &tone)| {
            let free = free_by_position(p, n);
            // 孤平: 平平仄仄平 needs its first level character.
            let guards_gu_ping = core == [Ping, Ping, Ze, Ze, Ping] && p == core_start;
            // 三平尾: 仄仄仄平平 keeps its third-from-last oblique.
            let guards_san_ping = core == [Ze, Ze, Ze, Ping, Ping] && p == n - 3;
            if free && !guards_gu_ping && !guards_san_ping {
                Slot::Free
            } else {
                Slot::Fixed(tone)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(slots: &[Slot]) -> String {
        slots
            .iter()
            .map(|s| match s {
                Slot::Fixed(t) => t.as_char(),
                Slot::Free => '中',
            })
            .collect()
    }

    #[test]
    fn wujue_ze_qi_unrhymed_first_line() {
        let t = Template {
            form: Form::WuJue,
            first_second: Ze,
            first_rhymes: false,
        };
        let lines: Vec<String> = (0..4).map(|i| show(&t.line(i))).collect();
        // 仄仄平平仄 / 平平仄仄平 / 平平平仄仄 / 仄仄仄平平, with 一三 free but the guards.
        assert_eq!(
            lines,
            ["中仄中平仄", "平平中仄平", "中平中仄仄", "中仄仄平平"]
        );
    }

    #[test]
    fn qijue_ping_qi_rhymed_first_line() {
        let t = Template {
            form: Form::QiJue,
            first_second: Ping,
            first_rhymes: true,
        };
        let lines: Vec<String> = (0..4).map(|i| show(&t.line(i))).collect();
        // 平平仄仄仄平平 / 仄仄平平仄仄平 / 仄仄平平平仄仄 / 平平仄仄仄平平
        assert_eq!(
            lines,
            [
                "中平中仄仄平平",
                "中仄平平中仄平",
                "中仄中平中仄仄",
                "中平中仄仄平平"
            ]
        );
    }

    #[test]
    fn lushi_alternates_nian_and_dui() {
        let t = Template {
            form: Form::WuLv,
            first_second: Ping,
            first_rhymes: false,
        };
        let seconds: String = (0..8).map(|i| t.second_tone(i).as_char()).collect();
        assert_eq!(seconds, "平仄仄平平仄仄平");
        let ends: String = (0..8).map(|i| t.end_tone(i).as_char()).collect();
        assert_eq!(ends, "仄平仄平仄平仄平");
    }
}
