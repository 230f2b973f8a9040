//! The line index: every line of the corpus poems the 集句 poet may borrow,
//! with the poem it comes from.
//!
//! `training/prepare.py` writes it (`models/jiju/lines.tsv.gz`): gzip'd rows
//! `poet<TAB>title<TAB>dynasty<TAB>line line …`, one poem a row, all lines of
//! a row of one length (5 or 7). Lines are kept by length in two pools of
//! fixed-width character runs, so a line is an index and its text a slice.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde::Serialize;

use crate::error::LineIndexError;

/// Where a borrowed line comes from: shown beside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct LineSource {
    pub poet: String,
    pub title: String,
    pub dynasty: String,
}

impl LineSource {
    /// The source of a line the index does not hold: empty fields.
    pub(crate) fn unknown() -> Self {
        Self {
            poet: String::new(),
            title: String::new(),
            dynasty: String::new(),
        }
    }
}

/// A line of the index: its pool (by length) and place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LineId(pub(crate) u32);

/// What is known of a line besides its text.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineEntry {
    pub(crate) poem: u32,
    /// Its place in its poem (0: the first line).
    pub(crate) place: u8,
    /// Whether it ends its poem.
    pub(crate) last: bool,
}

/// The lines of one length.
pub(crate) struct LinePool {
    n: usize,
    chars: Vec<char>,
    entries: Vec<LineEntry>,
}

impl LinePool {
    fn new(n: usize) -> Self {
        Self {
            n,
            chars: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn text(&self, id: LineId) -> &[char] {
        let start = id.0 as usize * self.n;
        &self.chars[start..start + self.n]
    }

    pub(crate) fn entry(&self, id: LineId) -> LineEntry {
        self.entries[id.0 as usize]
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = LineId> {
        (0..self.entries.len() as u32).map(LineId)
    }

    /// The lines of the same poem as `id`, itself included (a poem's lines are adjacent).
    pub(crate) fn poem_lines(&self, id: LineId) -> impl Iterator<Item = LineId> + '_ {
        let entry = self.entry(id);
        let first = id.0 - entry.place as u32;
        (first..self.entries.len() as u32)
            .map(LineId)
            .take_while(move |&l| self.entry(l).poem == entry.poem)
    }

    /// The lines whose text is `line`.
    pub(crate) fn find<'a>(&'a self, line: &'a [char]) -> impl Iterator<Item = LineId> + 'a {
        self.chars
            .chunks_exact(self.n)
            .enumerate()
            .filter(move |(_, text)| *text == line)
            .map(|(i, _)| LineId(i as u32))
    }
}

pub(crate) struct LineIndex {
    sources: Vec<LineSource>,
    five: LinePool,
    seven: LinePool,
}

impl LineIndex {
    pub(crate) fn load(path: &Path) -> Result<Self, LineIndexError> {
        let file = std::fs::File::open(path).map_err(|source| LineIndexError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::read(BufReader::new(GzDecoder::new(file)), path)
    }

    fn read(reader: impl BufRead, path: &Path) -> Result<Self, LineIndexError> {
        let corrupt = |row: usize, problem: &str| LineIndexError::Corrupt {
            path: PathBuf::from(path),
            problem: format!("row {row}: {problem}"),
        };
        let mut index = LineIndex {
            sources: Vec::new(),
            five: LinePool::new(5),
            seven: LinePool::new(7),
        };
        for (i, row) in reader.lines().enumerate() {
            let row = row.map_err(|e| corrupt(i + 1, &e.to_string()))?;
            let fields: Vec<&str> = row.split('\t').collect();
            let [poet, title, dynasty, lines] = fields[..] else {
                return Err(corrupt(i + 1, "expected poet, title, dynasty and lines"));
            };
            let lines: Vec<Vec<char>> = lines.split(' ').map(|l| l.chars().collect()).collect();
            let n = lines[0].len();
            let pool = match n {
                5 => &mut index.five,
                7 => &mut index.seven,
                _ => return Err(corrupt(i + 1, "lines must have 5 or 7 characters")),
            };
            if lines.len() > u8::MAX as usize || lines.iter().any(|l| l.len() != n) {
                return Err(corrupt(i + 1, "the lines of a poem differ in length"));
            }
            let poem = index.sources.len() as u32;
            for (place, line) in lines.iter().enumerate() {
                pool.chars.extend(line);
                pool.entries.push(LineEntry {
                    poem,
                    place: place as u8,
                    last: place + 1 == lines.len(),
                });
            }
            index.sources.push(LineSource {
                poet: poet.to_owned(),
                title: title.to_owned(),
                dynasty: dynasty.to_owned(),
            });
        }
        if index.sources.is_empty() {
            return Err(corrupt(0, "no poems"));
        }
        Ok(index)
    }

    /// The pool of lines of `n` characters.
    pub(crate) fn pool(&self, n: usize) -> &LinePool {
        if n == 5 {
            &self.five
        } else {
            &self.seven
        }
    }

    pub(crate) fn source(&self, poem: u32) -> &LineSource {
        &self.sources[poem as usize]
    }

    /// The source of a line found by its text (the first poem that has it).
    pub(crate) fn source_of(&self, line: &str) -> Option<&LineSource> {
        let chars: Vec<char> = line.chars().collect();
        if chars.len() != 5 && chars.len() != 7 {
            return None;
        }
        let pool = self.pool(chars.len());
        let found = pool.find(&chars).next()?;
        Some(self.source(pool.entry(found).poem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(text: &str) -> Result<LineIndex, LineIndexError> {
        LineIndex::read(text.as_bytes(), Path::new("lines.tsv.gz"))
    }

    #[test]
    fn rows_become_lines_with_their_poem() {
        let index = index(
            "王之涣\t登鹳雀楼\t唐\t白日依山尽 黄河入海流 欲穷千里目 更上一层楼\n\
             李白\t早发白帝城\t唐\t朝辞白帝彩云间 千里江陵一日还 两岸猿声啼不住 轻舟已过万重山\n",
        )
        .unwrap();
        let five = index.pool(5);
        assert_eq!(five.len(), 4);
        let third = LineId(2);
        assert_eq!(five.text(third).iter().collect::<String>(), "欲穷千里目");
        assert_eq!(five.poem_lines(third).count(), 4);
        assert!(five.entry(LineId(3)).last && !five.entry(third).last);
        let seven = index.pool(7);
        assert_eq!(seven.entry(LineId(1)).place, 1);
        assert_eq!(
            index.source_of("轻舟已过万重山").unwrap().title,
            "早发白帝城"
        );
        assert!(index.source_of("轻舟已过千重山").is_none());
    }

    #[test]
    fn a_damaged_index_is_refused_by_row() {
        let e = index("李白\t静夜思\t唐\n").err().unwrap().to_string();
        assert!(e.contains("row 1"), "{e}");
        let e = index("李白\t静夜思\t唐\t床前明月光 疑是地上霜啊\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("differ in length"), "{e}");
        assert!(index("").is_err());
    }
}
