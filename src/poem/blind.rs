//! Blind reading (`shared/JUDGING.md`): rule checks cannot see whether a line
//! means anything, so poems are read by readers who do not know who wrote
//! them. [`make_sheet`] shuffles the corpus poems of held-out keyword sets
//! among ours under random ids and keeps the key apart; [`Key::parse`] and
//! [`parse_scores`] read the key and the readers' score files back, and
//! [`summarize`] gives each source's mean per axis, per reader and overall.

use std::collections::{BTreeMap, HashMap, HashSet};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::eval::EvalCase;
use crate::error::ReadingError;

/// The source name of the corpus poems (the persons') in a key.
pub(crate) const CORPUS: &str = "corpus";

/// Ids are three digits, so a sheet holds at most this many poems.
const MAX_POEMS: usize = 900;

/// The four axes, in a score file's column order.
pub(crate) const AXES: [&str; 4] = ["fluency", "coherence", "relevance", "overall"];

/// A sheet for the readers and the key that stays with us.
#[derive(Debug)]
pub struct Sheet {
    pub text: String,
    pub key: String,
}

/// Writes a sheet: for each case the corpus poem (left out of about a third
/// of the sets at random, so that a reader cannot find it by elimination
/// within a set) and each variant's poem for it; all shuffled under random
/// three-digit ids. `variants`: a name and one poem per case, in case order.
/// `skipped`: the sets of the set file before `cases[0]`, so that the key
/// numbers each set as the file does.
pub fn make_sheet(
    cases: &[EvalCase],
    skipped: usize,
    variants: &[(String, Vec<Vec<String>>)],
    seed: u64,
) -> Result<Sheet, ReadingError> {
    if let Some((name, _)) = variants.iter().find(|(name, _)| !valid_name(name)) {
        return Err(ReadingError::Sheet(format!(
            "the variant name 「{name}」: use letters, digits, - and _ (and not {CORPUS})"
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut entries: Vec<(&str, usize, &[String])> = Vec::new();
    for (set, case) in cases.iter().enumerate() {
        if case.lines.is_empty() {
            return Err(ReadingError::Sheet(format!(
                "keyword set {} has no corpus poem: use a set file with \"lines\" (training/heldout_poems.jsonl)",
                skipped + set + 1
            )));
        }
        if rng.random_ratio(2, 3) {
            entries.push((CORPUS, set, case.lines.as_slice()));
        }
        for (name, poems) in variants {
            entries.push((name.as_str(), set, poems[set].as_slice()));
        }
    }
    if entries.len() > MAX_POEMS {
        return Err(ReadingError::Sheet(format!(
            "{} poems do not fit one sheet of three-digit ids (at most {MAX_POEMS}): take fewer sets or variants",
            entries.len()
        )));
    }
    entries.shuffle(&mut rng);
    let mut ids: Vec<u32> = (100..1000).collect();
    ids.shuffle(&mut rng);

    let mut text = String::new();
    let mut key = String::from("# id\tsource\tset\tform\tkeywords\n");
    for ((source, set, lines), id) in entries.into_iter().zip(ids) {
        let case = &cases[set];
        let keywords = if case.keywords.is_empty() {
            "（无）".to_owned()
        } else {
            case.keywords.join("、")
        };
        text.push_str(&format!("#{id} 【{}】关键词：{keywords}\n", case.form));
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        text.push('\n');
        key.push_str(&format!(
            "{id}\t{source}\t{}\t{}\t{}\n",
            skipped + set + 1,
            case.form,
            case.keywords.join(" ")
        ));
    }
    Ok(Sheet { text, key })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != CORPUS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A sheet's key: which source wrote each id.
#[derive(Debug)]
pub struct Key {
    sources: HashMap<u32, String>,
}

impl Key {
    /// Reads a key written by [`make_sheet`]; `path` names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Self, ReadingError> {
        let mut sources = HashMap::new();
        for (n, line) in numbered(text) {
            let bad = |message: &str| ReadingError::line(path, n, message);
            let mut fields = line.split('\t');
            let id = fields
                .next()
                .and_then(|f| f.parse::<u32>().ok())
                .ok_or_else(|| bad("expected an id, then the source"))?;
            let source = fields.next().ok_or_else(|| bad("no source"))?;
            if sources.insert(id, source.to_owned()).is_some() {
                return Err(bad(&format!("#{id} appears twice")));
            }
        }
        if sources.is_empty() {
            return Err(ReadingError::Sheet(format!("{path} holds no ids")));
        }
        Ok(Self { sources })
    }
}

/// One reader's scores of one poem, on the four [`AXES`], and whether the
/// reader took it for a person's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub(crate) axes: [u8; 4],
    pub(crate) guessed_person: Option<bool>,
}

/// Reads one reader's score file:
/// `id<TAB>fluency<TAB>coherence<TAB>relevance<TAB>overall[<TAB>H|M[<TAB>comment]]`,
/// `#` before the id allowed, a header line starting with `id` skipped. Every
/// id of the key must be scored once, each score an integer 1–5.
pub fn parse_scores(
    path: &str,
    text: &str,
    key: &Key,
) -> Result<HashMap<u32, Score>, ReadingError> {
    let mut scores = HashMap::new();
    for (n, line) in numbered(text) {
        if line.to_ascii_lowercase().starts_with("id") {
            continue;
        }
        let bad = |message: String| ReadingError::line(path, n, &message);
        let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
        let id: u32 = fields[0]
            .trim_start_matches('#')
            .parse()
            .map_err(|_| bad(format!("「{}」 is not a poem id", fields[0])))?;
        if !key.sources.contains_key(&id) {
            return Err(bad(format!("#{id} is not on the sheet")));
        }
        if fields.len() < 5 {
            return Err(bad(format!(
                "#{id} needs four scores (fluency, coherence, relevance, overall)"
            )));
        }
        let mut axes = [0u8; 4];
        for (axis, (slot, field)) in AXES.iter().zip(axes.iter_mut().zip(&fields[1..5])) {
            *slot = field
                .parse::<u8>()
                .ok()
                .filter(|s| (1..=5).contains(s))
                .ok_or_else(|| bad(format!("#{id} {axis} 「{field}」: expected 1 to 5")))?;
        }
        let guessed_person = match fields.get(5).copied().unwrap_or("") {
            "H" | "h" => Some(true),
            "M" | "m" => Some(false),
            "" => None,
            other => return Err(bad(format!("#{id} guess 「{other}」: expected H or M"))),
        };
        if scores
            .insert(
                id,
                Score {
                    axes,
                    guessed_person,
                },
            )
            .is_some()
        {
            return Err(bad(format!("#{id} is scored twice")));
        }
    }
    let mut missing: Vec<u32> = key
        .sources
        .keys()
        .filter(|id| !scores.contains_key(id))
        .copied()
        .collect();
    if !missing.is_empty() {
        missing.sort_unstable();
        let shown: Vec<String> = missing.iter().take(10).map(|id| format!("#{id}")).collect();
        return Err(ReadingError::Missing {
            path: path.to_owned(),
            count: missing.len(),
            ids: shown.join(" "),
        });
    }
    Ok(scores)
}

/// Lines worth reading, numbered from 1: blank lines and `#` comments (a key's
/// header) are skipped. A score line may start with `#123`, so only `# ` counts.
fn numbered(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with("# "))
}

/// One source's means over the poems a reader (or all readers) scored.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceMeans {
    pub(crate) reader: String,
    pub(crate) source: String,
    pub(crate) poems: usize,
    /// Mean of each of the [`AXES`].
    pub(crate) means: [f64; 4],
    /// Share of the poems guessed to be a person's, of those guessed at all.
    pub(crate) guessed_person: Option<f64>,
}

/// Each source's means per axis for every reader, then over all readers
/// (`reader` = "all"); sources in name order, the corpus first.
/// Poems written elsewhere for the cases: one JSON object a line with its
/// "lines" (as `yingshi poem --json` prints), each of its case's form, at
/// least one per case; `path` names the file in errors.
pub fn parse_poems(
    path: &str,
    text: &str,
    cases: &[EvalCase],
) -> Result<Vec<Vec<String>>, ReadingError> {
    #[derive(serde::Deserialize)]
    struct Written {
        lines: Vec<String>,
    }
    let mut poems = Vec::new();
    for ((n, line), case) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .zip(cases)
    {
        let at = |message: String| ReadingError::Line {
            path: path.to_owned(),
            line: n + 1,
            message,
        };
        let written: Written = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
        if super::checker::check_lines(&written.lines).form != Some(case.form) {
            return Err(at(format!(
                "not a {} ({})",
                case.form,
                written.lines.join(" ")
            )));
        }
        poems.push(written.lines);
    }
    if poems.len() < cases.len() {
        return Err(ReadingError::Short {
            path: path.to_owned(),
            poems: poems.len(),
            sets: cases.len(),
        });
    }
    Ok(poems)
}

/// The means as a tab-separated table, one row per reader and source.
pub fn table(rows: &[SourceMeans]) -> String {
    let mut out =
        String::from("reader\tsource\tpoems\tfluency\tcoherence\trelevance\toverall\tguessed-H\n");
    for r in rows {
        let [f, c, rel, o] = r.means;
        let guessed = r
            .guessed_person
            .map(|g| format!("{:.0} %", g * 100.0))
            .unwrap_or_else(|| "–".into());
        out.push_str(&format!(
            "{}\t{}\t{}\t{f:.2}\t{c:.2}\t{rel:.2}\t{o:.2}\t{guessed}\n",
            r.reader, r.source, r.poems
        ));
    }
    out
}

/// The means as JSON: one object per reader and source, means to 0.01.
pub fn json(rows: &[SourceMeans]) -> serde_json::Value {
    rows.iter()
        .map(|r| {
            let mut row = serde_json::json!({
                "reader": r.reader, "source": r.source, "poems": r.poems,
                "guessed_person": r.guessed_person,
            });
            for (axis, mean) in AXES.iter().zip(r.means) {
                row[axis] = serde_json::json!((mean * 100.0).round() / 100.0);
            }
            row
        })
        .collect()
}

pub fn summarize(key: &Key, readers: &[(String, HashMap<u32, Score>)]) -> Vec<SourceMeans> {
    let mut sources: Vec<&str> = key
        .sources
        .values()
        .map(String::as_str)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    sources.sort_by_key(|s| (*s != CORPUS, *s));
    let mut rows = Vec::new();
    let all: Vec<&HashMap<u32, Score>> = readers.iter().map(|(_, s)| s).collect();
    let groups = readers
        .iter()
        .map(|(name, scores)| (name.clone(), vec![scores]))
        .chain((readers.len() > 1).then(|| ("all".to_owned(), all)));
    for (reader, scored) in groups {
        for &source in &sources {
            let mut sums = [0u64; 4];
            let mut poems = 0;
            let mut guesses: BTreeMap<bool, usize> = BTreeMap::new();
            for scores in &scored {
                for (id, score) in scores.iter() {
                    if key.sources.get(id).map(String::as_str) != Some(source) {
                        continue;
                    }
                    poems += 1;
                    for (sum, &s) in sums.iter_mut().zip(&score.axes) {
                        *sum += u64::from(s);
                    }
                    if let Some(g) = score.guessed_person {
                        *guesses.entry(g).or_default() += 1;
                    }
                }
            }
            let guessed: usize = guesses.values().sum();
            rows.push(SourceMeans {
                reader: reader.clone(),
                source: source.to_owned(),
                poems,
                means: sums.map(|s| s as f64 / poems.max(1) as f64),
                guessed_person: (guessed > 0)
                    .then(|| guesses.get(&true).copied().unwrap_or(0) as f64 / guessed as f64),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poem::Form;

    fn case(form: Form, keywords: &[&str], lines: &[&str]) -> EvalCase {
        EvalCase {
            form,
            keywords: keywords.iter().map(|s| s.to_string()).collect(),
            lines: lines.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn cases(n: usize) -> Vec<EvalCase> {
        (0..n)
            .map(|i| {
                let person = format!("人{i:03}甲乙");
                case(
                    Form::WuJue,
                    &["明月"],
                    &[&person, "二二二二二", "三三三三三", "四四四四四"],
                )
            })
            .collect()
    }

    fn ours(name: &str, n: usize) -> (String, Vec<Vec<String>>) {
        let poems = (0..n)
            .map(|i| (0..4).map(|l| format!("{name}{i:03}{l}")).collect())
            .collect();
        (name.to_owned(), poems)
    }

    /// The sheet's entries as (id, first line), in sheet order.
    fn entries(text: &str) -> Vec<(u32, String)> {
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let mut lines = e.lines();
                let head = lines.next().unwrap();
                let id = head[1..4].parse().unwrap();
                (id, lines.next().unwrap().to_owned())
            })
            .collect()
    }

    #[test]
    fn a_sheet_hides_its_sources_and_the_key_names_them() {
        let cases = cases(30);
        let variants = [ours("a", 30), ours("b", 30)];
        let sheet = make_sheet(&cases, 0, &variants, 7).unwrap();
        assert!(!sheet.text.contains("corpus") && !sheet.text.contains('\t'));
        let key = Key::parse("key", &sheet.key).unwrap();
        let shown = entries(&sheet.text);
        assert_eq!(shown.len(), key.sources.len());
        // Every id's poem is the one its source wrote for its set.
        for (id, first_line) in &shown {
            let source = &key.sources[id];
            let expected = if source == CORPUS {
                "人"
            } else {
                source.as_str()
            };
            assert!(
                first_line.starts_with(expected),
                "#{id} {source}: {first_line}"
            );
        }
        // Both variants are there for every set; the corpus poem for about two thirds.
        let count = |s: &str| key.sources.values().filter(|v| *v == s).count();
        assert_eq!((count("a"), count("b")), (30, 30));
        assert!((12..=28).contains(&count(CORPUS)), "{}", count(CORPUS));
        // Shuffled: sources do not come in set order.
        let first_sources: Vec<&str> = shown[..6]
            .iter()
            .map(|(id, _)| key.sources[id].as_str())
            .collect();
        assert_ne!(first_sources, ["corpus", "a", "b", "corpus", "a", "b"]);
        // The same seed gives the same sheet; another seed another.
        assert_eq!(
            make_sheet(&cases, 0, &variants, 7).unwrap().text,
            sheet.text
        );
        assert_ne!(
            make_sheet(&cases, 0, &variants, 8).unwrap().text,
            sheet.text
        );
    }

    #[test]
    fn a_sheet_needs_corpus_poems_and_fitting_names() {
        let mut no_lines = cases(2);
        no_lines[1].lines.clear();
        let err = make_sheet(&no_lines, 10, &[ours("a", 2)], 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("set 12") && err.contains("heldout_poems"),
            "{err}"
        );
        for bad in ["corpus", "a b", ""] {
            assert!(
                make_sheet(&cases(2), 0, &[ours(bad, 2)], 1).is_err(),
                "{bad:?}"
            );
        }
        let many: Vec<_> = (0..4).map(|v| ours(&format!("v{v}"), 300)).collect();
        let err = make_sheet(&cases(300), 0, &many, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("900"), "{err}");
    }

    fn key_of(ids: &[(u32, &str)]) -> Key {
        let text: String = ids
            .iter()
            .map(|(id, s)| format!("{id}\t{s}\t1\t五绝\t月\n"))
            .collect();
        Key::parse("key.tsv", &format!("# id\tsource\n{text}")).unwrap()
    }

    #[test]
    fn scores_are_averaged_per_source_and_reader() {
        let key = key_of(&[(101, CORPUS), (102, "ours"), (103, "ours")]);
        let one = "id\tfluency\tcoherence\trelevance\toverall\tguess\tcomment\n\
                   #101\t5\t5\t4\t5\tH\tfine\n102\t2\t1\t3\t2\tM\n103\t4\t3\t3\t2\tH\t好\n";
        let two = "101\t4\t4\t4\t4\n102\t1\t1\t1\t1\n103\t3\t3\t3\t3\n";
        let readers = vec![
            (
                "one".to_owned(),
                parse_scores("one.tsv", one, &key).unwrap(),
            ),
            (
                "two".to_owned(),
                parse_scores("two.tsv", two, &key).unwrap(),
            ),
        ];
        let rows = summarize(&key, &readers);
        let row = |reader: &str, source: &str| {
            rows.iter()
                .find(|r| r.reader == reader && r.source == source)
                .unwrap()
                .clone()
        };
        assert_eq!(row("one", "ours").means, [3.0, 2.0, 3.0, 2.0]);
        assert_eq!(row("one", "ours").guessed_person, Some(0.5));
        assert_eq!(row("two", "ours").guessed_person, None);
        assert_eq!(row("all", "ours").poems, 4);
        assert_eq!(row("all", "ours").means, [2.5, 2.0, 2.5, 2.0]);
        assert_eq!(row("all", CORPUS).means, [4.5, 4.5, 4.0, 4.5]);
        assert_eq!(rows[0].source, CORPUS);
    }

    #[test]
    fn a_bad_score_file_names_the_line() {
        let key = key_of(&[(101, CORPUS), (102, "ours")]);
        for (text, line, words) in [
            ("101\t5\t5\t5\t5\n102\t5\t6\t5\t5\n", 2, "coherence 「6」"),
            ("101\t5\t5\t5\t5\n102\t5\t0\t5\t5\n", 2, "expected 1 to 5"),
            (
                "101\t5\t5\t5\t5\n\n999\t5\t5\t5\t5\n",
                3,
                "#999 is not on the sheet",
            ),
            ("abc\t5\t5\t5\t5\n", 1, "not a poem id"),
            ("101\t5\t5\t5\n", 1, "four scores"),
            ("101\t5\t5\t5\t5\tX\n", 1, "H or M"),
            ("101\t5\t5\t5\t5\n101\t4\t4\t4\t4\n", 2, "twice"),
            ("101\t5\t5\t5\t4.5\n", 1, "overall"),
        ] {
            let err = parse_scores("r.tsv", text, &key).unwrap_err().to_string();
            assert!(
                err.contains(&format!("r.tsv line {line}")),
                "{text:?}: {err}"
            );
            assert!(err.contains(words), "{text:?}: {err}");
        }
        let err = parse_scores("r.tsv", "101\t5\t5\t5\t5\n", &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("#102") && err.contains("r.tsv"), "{err}");
    }
}
