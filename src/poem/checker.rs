//! The strict checker for 近体诗: form, 平仄 by line, 粘对, rhyme, 孤平, 三平尾.
//!
//! It reads the poem's own structure rather than matching it against one whole
//! template: each line's pattern follows from its own second character, and
//! 粘/对 are checked between neighbours, so a fault is reported once, where it is.
//! A character with readings in both tones fits either (多音字).

use serde::Serialize;

use super::meter::{free_by_position, line_slots, Slot};
use super::rhyme::{is_han, RhymeGroup, RhymeTable, Tone};
use super::Form;

/// A named rule of regulated verse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rule {
    /// Not 4 or 8 lines of 5 or 7 Chinese characters.
    #[serde(rename = "格式")]
    Shape,
    /// A character of the wrong tone where the line's pattern fixes it.
    #[serde(rename = "平仄")]
    Tone,
    #[serde(rename = "孤平")]
    GuPing,
    #[serde(rename = "三平尾")]
    SanPingWei,
    /// The first line of a couplet breaks the 粘 with the line before.
    #[serde(rename = "失粘")]
    ShiNian,
    /// The two lines of a couplet are not opposite at the second character.
    #[serde(rename = "失对")]
    ShiDui,
    /// A rhyming line whose last character is not in the poem's level-tone group.
    #[serde(rename = "出韵")]
    ChuYun,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Shape => "格式",
            Rule::Tone => "平仄",
            Rule::GuPing => "孤平",
            Rule::SanPingWei => "三平尾",
            Rule::ShiNian => "失粘",
            Rule::ShiDui => "失对",
            Rule::ChuYun => "出韵",
        }
    }
}

/// A broken rule at a place: line and character count from 1 (0: the whole line/poem).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub line: usize,
    #[serde(rename = "char")]
    pub char_index: usize,
    pub rule: Rule,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.char_index) {
            (0, _) => write!(f, "{}", self.rule.name()),
            (line, 0) => write!(f, "第{line}句{}", self.rule.name()),
            (line, at) => write!(f, "第{line}句第{at}字{}", self.rule.name()),
        }
    }
}

/// Why line `line` (from 0), just put in by a person, cannot stand with the
/// lines before it: the strict check's faults in it and between it and
/// them, as a sentence. The lines after it do not count: they are rewritten.
pub(crate) fn own_line_faults(lines: &[String], line: usize) -> String {
    let faults: Vec<String> = check_lines(lines)
        .violations
        .iter()
        .filter(|v| (1..=line + 1).contains(&v.line))
        .map(Violation::to_string)
        .collect();
    if faults.is_empty() {
        format!(
            "第{}句与前面的诗句合不成一首格律诗：平仄与韵不能同时相合",
            line + 1
        )
    } else {
        format!("第{}句放不进这首诗：{}", line + 1, faults.join("，"))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LineReport {
    pub text: String,
    /// 平, 仄, or 中 (either reading, or not in the table) for each character.
    pub tones: String,
    /// The rhyme group of the last character, for lines that rhyme.
    pub rhyme: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub form: Option<Form>,
    pub pass: bool,
    pub violations: Vec<Violation>,
    pub lines: Vec<LineReport>,
    /// The poem's rhyme group.
    pub rhyme_group: Option<String>,
}

/// Splits a poem at line breaks, punctuation and spaces.
pub fn split_lines(poem: &str) -> Vec<String> {
    poem.split(|c: char| c.is_whitespace() || "，。！？；、,.!?;/|".contains(c))
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Most characters a poem to check may have (a 七律 has 56).
pub const MAX_POEM_CHARS: usize = 200;

/// Why `lines` cannot be a 近体诗, in a sentence for the person who typed
/// them; `None` when their shape is one (4 or 8 lines, all of 5 or all of 7
/// Chinese characters).
pub fn shape_problem(lines: &[String]) -> Option<String> {
    let total: usize = lines.iter().map(|l| l.chars().count()).sum();
    if total == 0 {
        return Some("没有诗句：请贴上一首五言或七言的绝句或律诗。".into());
    }
    if total > MAX_POEM_CHARS {
        return Some(format!(
            "太长了：一首诗最多 {MAX_POEM_CHARS} 字，这里有 {total} 字。"
        ));
    }
    let foreign: String = lines
        .iter()
        .flat_map(|l| l.chars())
        .filter(|&c| !is_han(c))
        .take(8)
        .collect();
    if !foreign.is_empty() {
        return Some(format!("诗句里只能有汉字，这里有「{foreign}」。"));
    }
    if lines.len() != 4 && lines.len() != 8 {
        return Some(format!(
            "绝句四句、律诗八句，这里有 {} 句（句与句之间用标点、空格或换行分开）。",
            lines.len()
        ));
    }
    let n = lines[0].chars().count();
    if n != 5 && n != 7 {
        return Some(format!("每句五字或七字，第1句有 {n} 字。"));
    }
    lines.iter().position(|l| l.chars().count() != n).map(|i| {
        format!(
            "每句字数要一样：第1句 {n} 字，第{}句 {} 字。",
            i + 1,
            lines[i].chars().count()
        )
    })
}

pub fn check(poem: &str) -> Report {
    check_lines(&split_lines(poem))
}

pub fn check_lines(lines: &[String]) -> Report {
    let table = RhymeTable::get();
    // Traditional characters are read by their simplified forms; the report
    // shows the poem as typed.
    let chars: Vec<Vec<char>> = lines
        .iter()
        .map(|l| l.chars().map(|c| table.for_rules(c)).collect())
        .collect();
    let tones_shown = |cs: &[char]| -> String {
        cs.iter()
            .map(|&c| table.tone(c).map_or('中', Tone::as_char))
            .collect()
    };
    let mut line_reports: Vec<LineReport> = lines
        .iter()
        .zip(&chars)
        .map(|(text, cs)| LineReport {
            text: text.clone(),
            tones: tones_shown(cs),
            rhyme: None,
        })
        .collect();

    let form = Form::from_shape(chars.len(), chars.first().map_or(0, Vec::len))
        .filter(|f| chars.iter().all(|cs| cs.len() == f.chars_per_line()));
    let shape_ok = form.is_some() && chars.iter().flatten().all(|&c| is_han(c));
    let Some(form) = form.filter(|_| shape_ok) else {
        return Report {
            form: None,
            pass: false,
            violations: vec![Violation {
                line: 0,
                char_index: 0,
                rule: Rule::Shape,
            }],
            lines: line_reports,
            rhyme_group: None,
        };
    };

    let n = form.chars_per_line();
    let fits = |c: char, tone: Tone| table.can_be(c, tone) || table.groups(c).is_empty();
    let mut violations = Vec::new();

    // 粘 and 对 at the second character.
    for i in 1..chars.len() {
        let (a, b) = (chars[i - 1][1], chars[i][1]);
        let opposite_possible = [Tone::Ping, Tone::Ze]
            .iter()
            .any(|&t| fits(a, t) && fits(b, t.opposite()));
        let same_possible = [Tone::Ping, Tone::Ze]
            .iter()
            .any(|&t| fits(a, t) && fits(b, t));
        if i % 2 == 1 && !opposite_possible {
            violations.push(Violation {
                line: i + 1,
                char_index: 2,
                rule: Rule::ShiDui,
            });
        }
        if i % 2 == 0 && !same_possible {
            violations.push(Violation {
                line: i + 1,
                char_index: 2,
                rule: Rule::ShiNian,
            });
        }
    }

    // The rhyme: the level group most rhyming lines fit; the first line rhymes
    // when its last character can be level and fits that group.
    let first_end = chars[0][n - 1];
    let mut ends: Vec<char> = (1..chars.len())
        .step_by(2)
        .map(|i| chars[i][n - 1])
        .collect();
    if table.can_be(first_end, Tone::Ping) {
        ends.push(first_end);
    }
    let group: Option<RhymeGroup> = (0..table.group_count() as u8)
        .map(RhymeGroup)
        .filter(|&g| table.tone_of_group(g) == Tone::Ping)
        .map(|g| (ends.iter().filter(|&&c| table.rhymes_with(c, g)).count(), g))
        .filter(|&(count, _)| count > 0)
        .max_by_key(|&(count, g)| (count, std::cmp::Reverse(g)))
        .map(|(_, g)| g);
    let first_rhymes = group.is_some_and(|g| table.rhymes_with(first_end, g))
        || table.tone(first_end) == Some(Tone::Ping);

    for (i, cs) in chars.iter().enumerate() {
        let end_tone = if i % 2 == 1 || (i == 0 && first_rhymes) {
            Tone::Ping
        } else {
            Tone::Ze
        };
        if end_tone == Tone::Ping {
            let rhymes = group.is_some_and(|g| table.rhymes_with(cs[n - 1], g));
            if rhymes {
                line_reports[i].rhyme = group.map(|g| table.name(g).to_owned());
            } else {
                violations.push(Violation {
                    line: i + 1,
                    char_index: n,
                    rule: Rule::ChuYun,
                });
            }
        }
        // The line's pattern follows from its own second character; where that
        // reads both ways, the reading with fewer faults counts.
        let faults = |second: Tone| -> Vec<Violation> {
            let slots = line_slots(n, second, end_tone);
            let mut found = Vec::new();
            for (p, (&c, slot)) in cs.iter().zip(&slots).enumerate() {
                let Slot::Fixed(tone) = *slot else { continue };
                if p == 1 || fits(c, tone) || (p == n - 1 && end_tone == Tone::Ping) {
                    continue;
                }
                let rule = guard_rule(&slots, p, n).unwrap_or(Rule::Tone);
                found.push(Violation {
                    line: i + 1,
                    char_index: p + 1,
                    rule,
                });
            }
            found
        };
        let readings: Vec<Vec<Violation>> = [Tone::Ping, Tone::Ze]
            .into_iter()
            .filter(|&t| fits(cs[1], t))
            .map(faults)
            .collect();
        if let Some(best) = readings.into_iter().min_by_key(Vec::len) {
            violations.extend(best);
        }
    }
    violations.sort_by_key(|v| (v.line, v.char_index));

    Report {
        form: Some(form),
        pass: violations.is_empty(),
        violations,
        lines: line_reports,
        rhyme_group: group.map(|g| table.name(g).to_owned()),
    }
}

/// Names the fault at a position that [`line_slots`] keeps fixed only to guard
/// against 孤平 or 三平尾.
fn guard_rule(slots: &[Slot], p: usize, n: usize) -> Option<Rule> {
    if !free_by_position(p, n) {
        return None;
    }
    match slots[n - 1] {
        Slot::Fixed(Tone::Ping) if p == n - 3 => Some(Rule::SanPingWei),
        Slot::Fixed(Tone::Ping) => Some(Rule::GuPing),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(poem: &str) -> Vec<(usize, usize, &'static str)> {
        check(poem)
            .violations
            .iter()
            .map(|v| (v.line, v.char_index, v.rule.name()))
            .collect()
    }

    #[test]
    fn famous_regulated_quatrains_pass() {
        for poem in [
            "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。", // 登鹳雀楼
            "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。", // 早发白帝城
            "两个黄鹂鸣翠柳，一行白鹭上青天。窗含西岭千秋雪，门泊东吴万里船。", // 绝句·杜甫
        ] {
            let r = check(poem);
            assert!(r.pass, "{poem}: {:?}", r.violations);
        }
        let r = check("朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。");
        assert_eq!(r.form, Some(Form::QiJue));
        assert_eq!(r.rhyme_group.as_deref(), Some("上平十五删"));
    }

    #[test]
    fn regulated_octave_passes() {
        // 杜甫《春望》
        let r = check("国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。");
        assert_eq!(r.form, Some(Form::WuLv));
        assert!(r.pass, "{:?}", r.violations);
    }

    #[test]
    fn ancient_quatrains_fail() {
        // 静夜思: 失粘 at line 3, 失对 at line 4.
        let v = rules("床前明月光，疑是地上霜。举头望明月，低头思故乡。");
        assert!(
            v.contains(&(3, 2, "失粘")) && v.contains(&(4, 2, "失对")),
            "{v:?}"
        );
        // 春晓 rhymes on oblique tones.
        let v = rules("春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。");
        assert!(
            v.contains(&(2, 5, "出韵")) && v.contains(&(4, 5, "出韵")),
            "{v:?}"
        );
    }

    #[test]
    fn planted_faults_are_named() {
        // 还 → 来 (上平十灰, where 间 and 山 are 十五删): 出韵 at line 2.
        assert_eq!(
            rules("朝辞白帝彩云间，千里江陵一日来。两岸猿声啼不住，轻舟已过万重山。"),
            [(2, 7, "出韵")]
        );
        // 黄河入海流 → 仄河入海流 (仄平仄仄平): 孤平.
        assert_eq!(
            rules("白日依山尽，白河入海流。欲穷千里目，更上一层楼。"),
            [(2, 1, "孤平")]
        );
        // 更上一层楼 → 更上平层楼 (仄仄平平平): 三平尾.
        assert_eq!(
            rules("白日依山尽，黄河入海流。欲穷千里目，更上千层楼。"),
            [(4, 3, "三平尾")]
        );
        // Line 3 second character 穷 → 去 (仄): 失粘 with line 2 (and line 4 then is no 对 either? 上 is 仄: 失对).
        let v = rules("白日依山尽，黄河入海流。欲去千里目，更上一层楼。");
        assert!(v.contains(&(3, 2, "失粘")), "{v:?}");
        // Fourth character against the line's pattern: 平仄.
        assert_eq!(
            rules("白日依山尽，黄河入天流。欲穷千里目，更上一层楼。"),
            [(2, 4, "平仄")]
        );
    }

    #[test]
    fn traditional_characters_are_read_as_simplified() {
        let traditional = check("朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。");
        assert!(traditional.pass, "{:?}", traditional.violations);
        assert_eq!(traditional.rhyme_group.as_deref(), Some("上平十五删"));
        assert_eq!(traditional.lines[1].text, "千里江陵一日還");
        assert_eq!(
            traditional.lines[2].tones,
            check("两岸猿声啼不住").lines[0].tones
        );
    }

    #[test]
    fn a_wrong_shape_is_said_in_a_sentence() {
        let problem = |poem: &str| shape_problem(&split_lines(poem));
        assert_eq!(
            problem("白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"),
            None
        );
        assert!(problem("").unwrap().contains("没有诗句"));
        assert!(problem("hello world").unwrap().contains("「hellowor」"));
        assert!(problem("白日依山尽，黄河入海流。")
            .unwrap()
            .contains("这里有 2 句"));
        assert!(problem("白日依山，黄河入海，欲穷千里，更上一层")
            .unwrap()
            .contains("第1句有 4 字"));
        assert!(
            problem("白日依山尽，黄河入海流。欲穷千里目，更上一层楼啊。")
                .unwrap()
                .contains("第4句 6 字")
        );
        assert!(problem(&"春".repeat(MAX_POEM_CHARS + 1))
            .unwrap()
            .contains("太长了"));
    }

    #[test]
    fn shape_is_checked() {
        assert_eq!(rules("白日依山尽，黄河入海流。"), [(0, 0, "格式")]);
        assert_eq!(
            rules("白日依山尽，黄河入海流。欲穷千里目，更上一层楼啊。"),
            [(0, 0, "格式")]
        );
        assert_eq!(
            rules("白日依山尽，黄河入海流。欲穷千里目，更上一层A。"),
            [(0, 0, "格式")]
        );
    }
}
