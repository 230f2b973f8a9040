//! The shipped poet under the decoder's rules: every poem it returns passes
//! the strict checker, repeats no character, honours acrostics and keywords.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use candle_core::Device;
use yingshi::poem::{checker, Form, PoemRequest, Poet, Sampling};

static POET: Mutex<Option<Poet>> = Mutex::new(None);

const SAMPLING: Sampling = Sampling {
    temperature: 0.8,
    top_p: 0.9,
    keyword_bonus: 4.0,
};

fn write(
    form: Form,
    keywords: &[&str],
    acrostic: Option<&str>,
    seed: u64,
) -> Vec<yingshi::poem::Candidate> {
    let mut guard = POET.lock().unwrap_or_else(|e| e.into_inner());
    let poet = guard.get_or_insert_with(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/poet-t5");
        Poet::load(&dir, &Device::Cpu).unwrap()
    });
    let request = PoemRequest {
        form,
        keywords: keywords.iter().map(|s| s.to_string()).collect(),
        acrostic: acrostic.map(str::to_owned),
        candidates: 4,
        seed,
    };
    poet.write(&request, SAMPLING, 2.0).unwrap()
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
            assert!(
                report.pass,
                "{:?}: {:?}",
                candidate.lines, report.violations
            );
            let chars: Vec<char> = candidate.lines.concat().chars().collect();
            let distinct: HashSet<char> = chars.iter().copied().collect();
            assert_eq!(
                distinct.len(),
                chars.len(),
                "repeated character in {:?}",
                candidate.lines
            );
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
fn unseen_keyword_still_gives_a_poem() {
    // 咖啡 is not in the poet's training keywords; the poem still has the form.
    let ranked = write(Form::WuJue, &["咖啡"], None, 5);
    assert!(checker::check_lines(&ranked[0].lines).pass);
}
