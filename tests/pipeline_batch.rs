//! Requests run together give what each gives alone: photos embedded in one
//! Chinese-CLIP batch, poems of several requests (and forms) in one T5 batch,
//! a 换一句 and a bad photo among them. Tiny test models, so it takes seconds.

use std::path::Path;

use yingshi::config::Config;
use yingshi::keywords::KeywordList;
use yingshi::pipeline::{Pipeline, PoemOptions, PoemResult, Request};
use yingshi::poem::{Form, Poet, PoetChoice, Style};

fn pipeline(cache: &Path) -> Pipeline {
    let env = [
        ("YINGSHI_MODELS__CLIP_DIR", "tests/fixtures/clip-tiny"),
        ("YINGSHI_MODELS__POET_DIR", "tests/fixtures/t5-tiny"),
        ("YINGSHI_MODELS__CACHE_DIR", cache.to_str().unwrap()),
    ];
    let config = Config::load_with_env(
        None,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .unwrap();
    let placement = config.placement().unwrap();
    let poet = Poet::load(
        &Config::resolve(&config.models.poet_dir),
        &placement.device,
        placement.dtype,
    )
    .unwrap();
    let matcher = yingshi::pipeline::Matcher::load(&config, None, None, &placement).unwrap();
    Pipeline::new(&config, poet, Some(matcher))
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/photos")
            .join(name),
    )
    .unwrap()
}

fn options(form: Form, seed: u64) -> PoemOptions {
    PoemOptions {
        style: Style::Generate,
        poet: PoetChoice::T5,
        form,
        acrostic: None,
        candidates: 3,
        seed,
    }
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| w.to_string()).collect()
}

fn assert_same(alone: &PoemResult, batched: &PoemResult) {
    assert_eq!(alone.keywords, batched.keywords);
    let matched = |r: &PoemResult| {
        r.matched
            .iter()
            .map(|s| s.keyword.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(matched(alone), matched(batched));
    for (a, b) in alone.matched.iter().zip(&batched.matched) {
        assert!(
            (a.score - b.score).abs() < 1e-4,
            "{} {} vs {}",
            a.keyword,
            a.score,
            b.score
        );
    }
    assert_eq!(alone.candidates.len(), batched.candidates.len());
    for (a, b) in alone.candidates.iter().zip(&batched.candidates) {
        assert_eq!(a.lines, b.lines);
        assert!(
            (a.score - b.score).abs() < 1e-4,
            "{} vs {}",
            a.score,
            b.score
        );
    }
}

#[test]
fn a_batch_answers_each_request_as_if_alone() {
    let cache = tempfile::tempdir().unwrap();
    let mut pipeline = pipeline(cache.path());
    let poem = pipeline
        .run(&Request::Keywords {
            keywords: words(&["明月"]),
            options: options(Form::WuJue, 9),
        })
        .unwrap()
        .candidates
        .remove(0)
        .lines;
    let requests = vec![
        Request::Photo {
            bytes: photo("chelsea.png"),
            keywords: Vec::new(),
            vocabulary: KeywordList::BuiltIn,
            top_k: None,
            options: options(Form::WuJue, 1),
        },
        Request::Keywords {
            keywords: words(&["春风", "杨柳"]),
            options: options(Form::QiJue, 2),
        },
        Request::Photo {
            bytes: photo("rocket.jpg"),
            keywords: words(&["孤舟"]),
            vocabulary: KeywordList::Only(words(&["狸奴", "渔舟", "烽火", "明月"])),
            top_k: Some(2),
            options: options(Form::WuJue, 3),
        },
        Request::Photo {
            bytes: b"not a photo".to_vec(),
            keywords: Vec::new(),
            vocabulary: KeywordList::BuiltIn,
            top_k: None,
            options: options(Form::WuJue, 4),
        },
        Request::Line {
            keywords: words(&["明月"]),
            lines: poem.clone(),
            line: 1,
            options: options(Form::WuJue, 5),
        },
        Request::Photo {
            bytes: photo("coffee.png"),
            keywords: Vec::new(),
            vocabulary: KeywordList::BuiltIn,
            top_k: Some(5),
            options: options(Form::QiLv, 6),
        },
    ];
    let batched = pipeline.run_batch(&requests);
    assert_eq!(batched.len(), requests.len());
    for (i, (request, batched)) in requests.iter().zip(&batched).enumerate() {
        match (pipeline.run(request), batched) {
            (Ok(alone), Ok(batched)) => assert_same(&alone, batched),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("request {i}: alone {a:?}, batched {b:?}"),
        }
    }
    // What the requests asked for reached them.
    let ok = |i: usize| batched[i].as_ref().unwrap();
    assert_eq!(ok(0).matched.len(), 4);
    assert_eq!(ok(2).keywords[0], "孤舟");
    assert!(ok(2)
        .matched
        .iter()
        .all(|s| ["狸奴", "渔舟", "烽火", "明月"].contains(&s.keyword.as_str())));
    assert_eq!(ok(2).matched.len(), 2);
    assert!(batched[3]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("not an image"));
    let rewritten = &ok(4).candidates[0].lines;
    assert_eq!((&rewritten[0], &rewritten[2..]), (&poem[0], &poem[2..]));
    assert_ne!(rewritten[1], poem[1]);
    assert_eq!(ok(5).matched.len(), 5);
    assert_eq!(ok(5).candidates[0].lines.len(), 8);
}
