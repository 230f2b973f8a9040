//! The shipped poet under the decoder's rules: every poem it returns passes
//! the strict checker, repeats no character, honours acrostics and keywords.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device};
use yingshi::error::PoemError;
use yingshi::poem::rhyme::{RhymeTable, Tone};
use yingshi::poem::{checker, Candidate, Form, LineRequest, PoemRequest, Poet, Sampling};

static POET: Mutex<Option<Poet>> = Mutex::new(None);

const SAMPLING: Sampling = Sampling {
    temperature: 0.8,
    top_p: 0.9,
    keyword_bonus: 4.0,
    keyword_weight: 2.0,
    ngram_weight: 0.3,
};

fn with_poet<T>(f: impl FnOnce(&mut Poet) -> T) -> T {
    let mut guard = POET.lock().unwrap_or_else(|e| e.into_inner());
    let poet = guard.get_or_insert_with(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/poet-t5");
        Poet::load(&dir, &Device::Cpu, DType::F32).unwrap()
    });
    f(poet)
}

fn request(form: Form, keywords: &[&str], acrostic: Option<&str>, seed: u64) -> PoemRequest {
    PoemRequest {
        form,
        keywords: keywords.iter().map(|s| s.to_string()).collect(),
        acrostic: acrostic.map(str::to_owned),
        candidates: 4,
        seed,
    }
}

fn write(form: Form, keywords: &[&str], acrostic: Option<&str>, seed: u64) -> Vec<Candidate> {
    let request = request(form, keywords, acrostic, seed);
    with_poet(|poet| poet.write(&request, SAMPLING).unwrap())
}

fn rewrite(poem: PoemRequest, lines: &[String], line: usize) -> Result<Vec<Candidate>, PoemError> {
    let request = LineRequest {
        poem,
        lines: lines.to_vec(),
        line,
    };
    with_poet(|poet| poet.rewrite(&request, SAMPLING))
}

fn assert_strict_and_unrepeated(lines: &[String]) {
    let report = checker::check_lines(lines);
    assert!(report.pass, "{lines:?}: {:?}", report.violations);
    let chars: Vec<char> = lines.concat().chars().collect();
    let distinct: HashSet<char> = chars.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        chars.len(),
        "repeated character in {lines:?}"
    );
}

/// Lines 3, 5, 7 never rhyme: the poet ends them in a character with no level
/// reading, which cannot be heard as a rhyme gone wrong.
fn assert_unrhymed_lines_end_oblique(lines: &[String]) {
    let table = RhymeTable::get();
    for line in lines.iter().skip(2).step_by(2) {
        let end = line.chars().last().unwrap();
        assert!(
            !table.can_be(end, Tone::Ping),
            "{line} ends in a level-capable {end}"
        );
    }
}

#[test]
fn every_form_passes_the_strict_check() {
    for (form, keywords) in [
        (Form::WuJue, &["孤舟", "明月"][..]),
        (Form::QiJue, &["春风", "杨柳"][..]),
        (Form::WuLv, &["秋风", "落叶"][..]),
        (Form::QiLv, &["青山", "白云"][..]),
    ] {
        for candidate in write(form, keywords, None, 7) {
            let report = checker::check_lines(&candidate.lines);
            assert_eq!(report.form, Some(form), "{:?}", candidate.lines);
            assert_strict_and_unrepeated(&candidate.lines);
            assert_unrhymed_lines_end_oblique(&candidate.lines);
        }
    }
}

#[test]
fn keywords_are_written_into_the_poem() {
    let ranked = write(Form::QiJue, &["春风", "明月"], None, 3);
    let best = &ranked[0];
    assert_eq!(best.keywords_used.len(), 2, "{:?}", best.lines);
    let text = best.lines.concat();
    assert!(text.contains("春风") && text.contains("明月"), "{text}");
}

#[test]
fn acrostic_heads_each_line() {
    let ranked = write(Form::QiJue, &["江南"], Some("春江花月"), 11);
    for c in &ranked {
        let heads: String = c.lines.iter().filter_map(|l| l.chars().next()).collect();
        assert_eq!(heads, "春江花月");
        assert!(checker::check_lines(&c.lines).pass, "{:?}", c.lines);
    }
}

#[test]
fn same_seed_same_poem_other_seed_other_poem() {
    let a = write(Form::WuJue, &["梅花", "雪"], None, 42);
    let b = write(Form::WuJue, &["梅花", "雪"], None, 42);
    let c = write(Form::WuJue, &["梅花", "雪"], None, 43);
    assert_eq!(a[0].lines, b[0].lines);
    assert_ne!(a[0].lines, c[0].lines);
}

#[test]
fn the_ngram_weight_changes_the_poems_and_keeps_the_rules() {
    let request = request(Form::QiJue, &["春风", "杨柳"], None, 9);
    let write_with = |ngram_weight| {
        let sampling = Sampling {
            ngram_weight,
            ..SAMPLING
        };
        with_poet(|poet| poet.write(&request, sampling).unwrap())
    };
    let (t5, ngram) = (write_with(0.0), write_with(1.0));
    for candidate in t5.iter().chain(&ngram) {
        assert_strict_and_unrepeated(&candidate.lines);
    }
    let poems = |c: &[Candidate]| c.iter().map(|c| c.lines.clone()).collect::<Vec<_>>();
    assert_ne!(poems(&t5), poems(&ngram));
}

#[test]
fn unseen_keyword_still_gives_a_poem() {
    // 咖啡 is not in the poet's training keywords; the poem still has the form.
    let ranked = write(Form::WuJue, &["咖啡"], None, 5);
    assert!(checker::check_lines(&ranked[0].lines).pass);
}

#[test]
fn a_rewritten_line_keeps_the_poem_and_its_rules() {
    for (form, keywords, acrostic) in [
        (Form::QiJue, &["孤舟", "明月"][..], None),
        (Form::WuLv, &["秋风", "落叶"][..], None),
        (Form::WuJue, &["江南"][..], Some("春江花月")),
    ] {
        let poem = write(form, keywords, acrostic, 21).remove(0).lines;
        // The first line (its rhyme decides the template), an even (rhyming) line, the last.
        for line in [0, 1, form.lines() - 1] {
            let candidates = rewrite(request(form, keywords, acrostic, 5), &poem, line).unwrap();
            let mut new_lines = HashSet::new();
            for c in &candidates {
                for (i, (new, old)) in c.lines.iter().zip(&poem).enumerate() {
                    if i == line {
                        assert_ne!(new, old, "line {} came back unchanged", i + 1);
                    } else {
                        assert_eq!(new, old, "line {} changed", i + 1);
                    }
                }
                assert_strict_and_unrepeated(&c.lines);
                if let Some(a) = acrostic {
                    assert!(c.lines[line].starts_with(a.chars().nth(line).unwrap()));
                }
                assert!(new_lines.insert(c.lines[line].clone()), "candidates repeat");
            }
            assert!(candidates.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }
}

#[test]
fn a_first_line_ending_in_a_two_toned_character_need_not_rhyme() {
    // 行 is level (庚, 阳) and oblique (敬): line 1 fits the template whose
    // first line rhymes and the one whose first line does not; only the
    // second keeps the rhyme of 流 and 楼 (尤).
    let poem: Vec<String> = [
        "孤舟江上海头行",
        "无复浪题雨中流",
        "归去白云不自难",
        "十分明月在空楼",
    ]
    .map(String::from)
    .to_vec();
    assert!(checker::check_lines(&poem).pass);
    for line in [1, 3] {
        let candidates = rewrite(
            request(Form::QiJue, &["孤舟", "明月"], None, 3),
            &poem,
            line,
        )
        .unwrap_or_else(|e| panic!("line {}: {e}", line + 1));
        for c in &candidates {
            for (i, (new, old)) in c.lines.iter().zip(&poem).enumerate() {
                assert_eq!(i == line, new != old, "line {}: {new} / {old}", i + 1);
            }
            assert_strict_and_unrepeated(&c.lines);
        }
    }
}

#[test]
fn a_poem_the_rules_cannot_work_with_is_refused_plainly() {
    let poem = write(Form::WuJue, &["梅花"], None, 2).remove(0).lines;
    let wrong = [
        (poem[..3].to_vec(), 0, "4 lines"),
        (poem.clone(), 4, "no line 5"),
        (
            vec![
                poem[0].clone(),
                "咖啡拿铁香".into(),
                poem[2].clone(),
                poem[3].clone(),
            ],
            0,
            "the poet knows",
        ),
    ];
    for (lines, line, says) in wrong {
        let err = rewrite(request(Form::WuJue, &["梅花"], None, 1), &lines, line).unwrap_err();
        assert!(matches!(err, PoemError::Lines(_)), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[test]
fn a_batch_writes_what_each_request_writes_alone() {
    let requests = vec![
        request(Form::QiJue, &["春风", "杨柳"], None, 1),
        request(Form::WuJue, &["孤舟"], None, 2),
        request(Form::QiJue, &["秋风", "落叶", "寒江"], None, 3),
        request(Form::WuJue, &["明月"], Some("春江花月"), 4),
        request(Form::QiJue, &["白云"], Some("不够"), 5),
        request(Form::WuLv, &["青山"], None, 6),
    ];
    let batched = with_poet(|poet| poet.write_batch(&requests, SAMPLING));
    assert_eq!(batched.len(), requests.len());
    for (request, batched) in requests.iter().zip(batched) {
        let alone = with_poet(|poet| poet.write(request, SAMPLING));
        match (alone, batched) {
            (Ok(alone), Ok(batched)) => {
                assert_eq!(alone.len(), batched.len());
                for (a, b) in alone.iter().zip(&batched) {
                    assert_eq!(a.lines, b.lines, "{request:?}");
                    assert!((a.mean_logprob - b.mean_logprob).abs() < 1e-4);
                }
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("{request:?}: alone {a:?}, batched {b:?}"),
        }
    }
}

/// Your own line, at every place of a poem of each form: the line at that
/// place of another poem. Kept, it stands with the lines before it and the
/// lines after are written on to pass the strict check; refused, the check
/// finds faults in it or between it and the lines before, and the refusal
/// names them.
#[test]
fn your_own_line_is_kept_and_written_on_or_refused_with_its_faults() {
    let (mut kept, mut refused) = (0, 0);
    for form in [Form::WuJue, Form::QiJue, Form::WuLv, Form::QiLv] {
        let poem = write(form, &["明月"], None, 31).remove(0).lines;
        let other = write(form, &["秋风"], None, 32).remove(0).lines;
        for line in 0..form.lines() {
            let mut lines = poem.clone();
            lines[line] = other[line].clone();
            let request = LineRequest {
                poem: request(form, &["明月"], None, 7),
                lines: lines.clone(),
                line,
            };
            match with_poet(|poet| poet.continue_poem(&request, SAMPLING)) {
                Ok(candidates) => {
                    for c in &candidates {
                        assert_eq!(c.lines[..=line], lines[..=line], "{form} line {}", line + 1);
                        let report = checker::check_lines(&c.lines);
                        assert!(report.pass, "{:?}: {:?}", c.lines, report.violations);
                    }
                    assert!(candidates.windows(2).all(|w| w[0].score >= w[1].score));
                    kept += 1;
                }
                Err(PoemError::OwnLine(why)) => {
                    let faults: Vec<String> = checker::check_lines(&lines)
                        .violations
                        .iter()
                        .filter(|v| (1..=line + 1).contains(&v.line))
                        .map(|v| v.to_string())
                        .collect();
                    assert!(!faults.is_empty(), "{form} line {}: {why}", line + 1);
                    assert!(
                        faults.iter().all(|f| why.contains(f.as_str())),
                        "{why} / {faults:?}"
                    );
                    refused += 1;
                }
                Err(e) => panic!("{form} line {}: {e}", line + 1),
            }
        }
    }
    assert!(kept >= 4 && refused >= 4, "{kept} kept, {refused} refused");
}
