//! The 集句 poet with the shipped line index and judge: every poem regular
//! verse made of real lines of different poems, credited; the CLI's answers
//! to missing or damaged files.

use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use assert_cmd::Command;
use yingshi::poem::checker::check_lines;
use yingshi::poem::{Form, JijuPoet, LineRequest, PoemRequest};

fn poet() -> &'static JijuPoet {
    static POET: OnceLock<JijuPoet> = OnceLock::new();
    POET.get_or_init(|| {
        JijuPoet::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/jiju")).unwrap()
    })
}

fn request(form: Form, keywords: &[&str], seed: u64) -> PoemRequest {
    PoemRequest {
        form,
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        acrostic: None,
        candidates: 4,
        seed,
    }
}

/// Whether `word` stands in `line` as one word of its rhythm (2|3, 2|2|3).
fn holds_as_word(line: &str, word: &str) -> bool {
    let line: Vec<char> = line.chars().collect();
    let word: Vec<char> = word.chars().collect();
    let n = line.len();
    (0..=n.saturating_sub(word.len())).any(|p| {
        line[p..p + word.len()] == word[..]
            && match word.len() {
                1 => true,
                2 => p % 2 == 0 || p + 2 == n,
                _ => p == 0 || p + word.len() == n,
            }
    })
}

/// What every 集句 poem must be, whatever was asked.
fn assert_regular_jiju(lines: &[String], sources: &[yingshi::poem::LineSource], keywords: &[&str]) {
    let report = check_lines(lines);
    assert!(report.pass, "{lines:?}: {:?}", report.violations);
    assert_eq!(sources.len(), lines.len());
    let credited: HashSet<(&str, &str)> = sources
        .iter()
        .map(|s| (s.poet.as_str(), s.title.as_str()))
        .collect();
    assert!(sources
        .iter()
        .all(|s| !s.poet.is_empty() && !s.dynasty.is_empty()));
    // Different poems: titles by one poet may repeat (其一, 其二 …), so count credits loosely.
    assert!(credited.len() >= lines.len() - 1, "{sources:?}");
    for (i, line) in lines.iter().enumerate() {
        let found = poet().sources_of(std::slice::from_ref(line));
        assert!(!found[0].poet.is_empty(), "{line} is not a corpus line");
        for c in line.chars() {
            let holding = lines.iter().filter(|l| l.contains(c)).count();
            let allowed = keywords
                .iter()
                .flat_map(|k| k.chars())
                .filter(|&k| k == c)
                .count()
                .max(1);
            assert!(
                holding <= allowed,
                "「{c}」 of line {} stands in {holding} lines: {lines:?}",
                i + 1
            );
        }
    }
    let n = lines[0].chars().count();
    let rhymes: Vec<char> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, l)| l.chars().nth(n - 1).unwrap())
        .collect();
    let distinct: HashSet<&char> = rhymes.iter().collect();
    assert_eq!(distinct.len(), rhymes.len(), "a rhyme repeated: {lines:?}");
}

#[test]
fn every_form_gives_regular_verse_of_credited_real_lines() {
    for (form, keywords) in [
        (Form::WuJue, &["明月", "孤舟"][..]),
        (Form::QiJue, &["春风", "杨柳"][..]),
        (Form::WuLv, &["秋雨", "寒山"][..]),
        (Form::QiLv, &["落日", "故人", "长江"][..]),
    ] {
        let candidates = poet().write(&request(form, keywords, 7)).unwrap();
        assert!(!candidates.is_empty());
        for c in &candidates {
            assert_eq!(c.lines.len(), form.lines());
            assert_regular_jiju(&c.lines, &c.sources, keywords);
            for used in &c.keywords_used {
                assert!(
                    c.lines.iter().any(|l| holds_as_word(l, used)),
                    "{used} in {:?}",
                    c.lines
                );
            }
        }
        assert!(
            !candidates[0].keywords_used.is_empty(),
            "{form}: none of {keywords:?} in {:?}",
            candidates[0].lines
        );
    }
}

#[test]
fn seeds_give_other_poems_and_the_same_seed_the_same() {
    let a = poet().write(&request(Form::QiJue, &["白云"], 1)).unwrap();
    let again = poet().write(&request(Form::QiJue, &["白云"], 1)).unwrap();
    let b = poet().write(&request(Form::QiJue, &["白云"], 2)).unwrap();
    assert_eq!(a[0].lines, again[0].lines);
    assert_ne!(a[0].lines, b[0].lines);
}

#[test]
fn an_acrostic_opens_each_line() {
    let mut ask = request(Form::QiJue, &["春"], 3);
    ask.acrostic = Some("春江花月".into());
    let candidates = poet().write(&ask).unwrap();
    for c in &candidates {
        let heads: String = c.lines.iter().map(|l| l.chars().next().unwrap()).collect();
        assert_eq!(heads, "春江花月");
        assert_regular_jiju(&c.lines, &c.sources, &["春", "春", "江", "花", "月"]);
    }
    let mut wrong = request(Form::WuJue, &[], 3);
    wrong.acrostic = Some("春江".into());
    let e = poet().write(&wrong).unwrap_err().to_string();
    assert!(e.contains("needs 4 characters"), "{e}");
}

#[test]
fn keywords_no_line_holds_still_give_a_poem() {
    let candidates = poet()
        .write(&request(Form::WuJue, &["量子计算", "明月"], 5))
        .unwrap();
    let best = &candidates[0];
    assert!(!best.keywords_used.contains(&"量子计算".to_string()));
    assert!(
        best.keywords_used.contains(&"明月".to_string()),
        "{:?}",
        best.lines
    );
    assert_regular_jiju(&best.lines, &best.sources, &["量子计算", "明月"]);
}

#[test]
fn a_line_rewritten_is_another_real_line_in_its_place() {
    let poem = &poet().write(&request(Form::QiJue, &["孤雁"], 11)).unwrap()[0];
    for line in 0..4 {
        let rewritten = poet()
            .rewrite(&LineRequest {
                poem: request(Form::QiJue, &["孤雁"], 12),
                lines: poem.lines.clone(),
                line,
            })
            .unwrap();
        let best = &rewritten[0];
        for (i, (old, new)) in poem.lines.iter().zip(&best.lines).enumerate() {
            assert_eq!(old == new, i != line, "line {}: {old} → {new}", i + 1);
        }
        assert_regular_jiju(&best.lines, &best.sources, &["孤雁"]);
        assert_ne!(best.sources[line].title, "");
    }
}

fn yingshi() -> Command {
    let mut cmd = Command::cargo_bin("yingshi").unwrap();
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

#[test]
fn the_cli_credits_each_line_and_names_unused_keywords() {
    let out = yingshi()
        .args([
            "poem",
            "--style",
            "jiju",
            "--keywords",
            "明月",
            "量子计算",
            "--form",
            "五绝",
            "--seed",
            "4",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let poem: Vec<&str> = text.lines().filter(|l| l.contains('《')).collect();
    assert_eq!(poem.len(), 4, "{text}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("not used: 量子计算"), "{err}");

    let out = yingshi()
        .args([
            "poem",
            "--style",
            "jiju",
            "--keywords",
            "白云",
            "--seed",
            "4",
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), v["lines"].as_array().unwrap().len());
    assert!(sources
        .iter()
        .all(|s| s["poet"].is_string() && s["title"].is_string() && s["dynasty"].is_string()));
}

#[test]
fn a_missing_or_damaged_index_exits_2_naming_it_while_the_generator_works() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("jiju.toml");
    std::fs::write(
        &config,
        format!("[models]\njiju_dir = \"{}\"\n", dir.path().display()),
    )
    .unwrap();
    let jiju = |cmd: &mut Command| {
        cmd.args([
            "--config",
            config.to_str().unwrap(),
            "poem",
            "--keywords",
            "明月",
            "--seed",
            "1",
        ])
        .output()
        .unwrap()
    };
    let out = jiju(
        yingshi()
            .args([] as [&str; 0])
            .env("YINGSHI_POEM__STYLE", "jiju"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("lines.tsv.gz"), "{err}");

    std::fs::write(dir.path().join("lines.tsv.gz"), b"not gzip at all").unwrap();
    let out = jiju(yingshi().env("YINGSHI_POEM__STYLE", "jiju"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("lines.tsv.gz") && err.contains("damaged"),
        "{err}"
    );

    // The same settings write a poem with the generator.
    let out = jiju(&mut yingshi());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn no_held_out_poem_lends_a_line() {
    // So that a blind sheet's 集句 never borrows a line of that set's own corpus poem.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("training/heldout_poems.jsonl"),
    )
    .unwrap();
    let mut lines = Vec::new();
    for row in text.lines().take(60) {
        let poem: serde_json::Value = serde_json::from_str(row).unwrap();
        lines.extend(
            poem["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_owned()),
        );
    }
    assert!(lines.len() > 200);
    let sources = poet().sources_of(&lines);
    let lent: Vec<&String> = lines
        .iter()
        .zip(&sources)
        .filter(|(_, s)| !s.poet.is_empty())
        .map(|(l, _)| l)
        .collect();
    assert!(lent.is_empty(), "{lent:?}");
    // And the index does find lines it holds.
    let poem = &poet().write(&request(Form::WuJue, &["青山"], 9)).unwrap()[0];
    assert!(poet()
        .sources_of(&poem.lines)
        .iter()
        .all(|s| !s.poet.is_empty()));
}
