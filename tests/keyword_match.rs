//! The matcher end to end on the tiny Chinese-CLIP: photo → top-K keywords,
//! scored as the prototype scored them, with embeddings cached on disk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::Deserialize;
use yingshi::config::Config;
use yingshi::embedding::{ClipModel, ProductPrecision};
use yingshi::keywords::{EmbeddingCache, KeywordIndex, KeywordList, Vocabulary};
use yingshi::photo::{self, PhotoLimits};
use yingshi::pipeline::Matcher;

#[derive(Deserialize)]
struct Reference {
    photos: HashMap<String, Vec<f32>>,
    texts: HashMap<String, Vec<f32>>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn plain_list_scores_are_the_prototypes_cosines() {
    let dir = fixtures().join("clip-tiny");
    let clip = ClipModel::load(&dir, &Device::Cpu, DType::F32).unwrap();
    let reference: Reference =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let words: Vec<String> = reference.texts.keys().cloned().collect();
    let vocabulary = Vocabulary::parse(&words.join("\n")).unwrap();
    let mut cache = EmbeddingCache::open(None, &clip);
    let index = KeywordIndex::build(&vocabulary, &clip, &mut cache).unwrap();
    let limits = PhotoLimits {
        max_bytes: 25 << 20,
        max_megapixels: 40.0,
    };
    for (name, photo_feature) in &reference.photos {
        let img = photo::decode(
            &std::fs::read(fixtures().join("photos").join(name)).unwrap(),
            limits,
        )
        .unwrap();
        let feature = clip.embed_image(&img).unwrap();
        let top = index.top_k(&feature, 5, false);
        assert_eq!(top.len(), 5);
        assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
        // The prototype: cosine of get_image_features and get_text_features, top-K.
        let mut expected: Vec<(String, f32)> = words
            .iter()
            .map(|w| (w.clone(), cosine(photo_feature, &reference.texts[w])))
            .collect();
        expected.sort_by(|a, b| b.1.total_cmp(&a.1));
        // PNG pixels decode alike everywhere; JPEG decoders differ slightly,
        // so those scores agree to a few thousandths only.
        let tolerance = if name.ends_with(".png") { 1e-3 } else { 5e-3 };
        for ours in &top {
            let theirs = cosine(photo_feature, &reference.texts[&ours.keyword]);
            assert!(
                (ours.score - theirs).abs() < tolerance,
                "{name}: {} {} vs {theirs}",
                ours.keyword,
                ours.score
            );
        }
        // The prototype's top five, in its order: a keyword may stand in
        // another's place only when their scores are within both tolerances.
        for (place, (ours, theirs)) in top.iter().zip(&expected).enumerate() {
            let ours_there = cosine(photo_feature, &reference.texts[&ours.keyword]);
            assert!(
                ours.keyword == theirs.0 || (ours_there - theirs.1).abs() < 2.0 * tolerance,
                "{name}: place {}: {} ({ours_there}) where the prototype has {} ({})",
                place + 1,
                ours.keyword,
                theirs.0,
                theirs.1
            );
        }
    }
}

#[test]
fn embeddings_are_cached_and_only_new_texts_are_embedded() {
    let clip = ClipModel::load(&fixtures().join("clip-tiny"), &Device::Cpu, DType::F32).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let vocabulary =
        Vocabulary::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("keywords/default.txt"))
            .unwrap();
    let prompts: usize = {
        let mut all: Vec<&String> = vocabulary
            .keywords
            .iter()
            .flat_map(|k| &k.prompts)
            .collect();
        all.sort();
        all.dedup();
        all.len()
    };

    let mut cache = EmbeddingCache::open(Some(dir.path()), &clip);
    assert!(cache.is_empty());
    let first = KeywordIndex::build(&vocabulary, &clip, &mut cache).unwrap();
    assert_eq!(cache.len(), prompts);

    // A restart reads them back, and the same features come out.
    let mut reopened = EmbeddingCache::open(Some(dir.path()), &clip);
    assert_eq!(reopened.len(), prompts);
    let again = KeywordIndex::build(&vocabulary, &clip, &mut reopened).unwrap();
    let probe = clip
        .embed_texts(&["江上的一只小船".to_string()])
        .unwrap()
        .remove(0);
    assert_eq!(first.top_k(&probe, 5, true), again.top_k(&probe, 5, true));

    // A custom list adds only its new words.
    let custom = Vocabulary::from_words(&["孤舟".to_string(), "咖啡馆".to_string()]);
    KeywordIndex::build(&custom, &clip, &mut reopened).unwrap();
    assert_eq!(reopened.len(), prompts + 2);
    assert_eq!(
        EmbeddingCache::open(Some(dir.path()), &clip).len(),
        prompts + 2
    );
}

#[test]
fn photo_bf16_setting_decides_the_vision_towers_products() {
    // keywords.photo_bf16 reaches the photo's feature: with AMX tiles the
    // scores move (by rounding, not by much); without, they are f32's bits.
    let cache = tempfile::tempdir().unwrap();
    let scores = |bf16: &str| {
        let env = [
            ("YINGSHI_MODELS__CLIP_DIR", "tests/fixtures/clip-tiny"),
            ("YINGSHI_MODELS__CACHE_DIR", cache.path().to_str().unwrap()),
            ("YINGSHI_KEYWORDS__PHOTO_BF16", bf16),
        ];
        let config = Config::load_with_env(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        let mut matcher = Matcher::load(&config, None, None, &config.placement().unwrap()).unwrap();
        let bytes = std::fs::read(fixtures().join("photos/chelsea.png")).unwrap();
        matcher
            .match_photo(&bytes, 8, false, &KeywordList::BuiltIn)
            .unwrap()
    };
    let (f32, bf16) = (scores("false"), scores("true"));
    if ProductPrecision::Bf16OnTiles.runs_here() {
        assert_ne!(f32, bf16, "the photo's products were not taken in bf16");
        for s in &bf16 {
            let f32_score = f32.iter().find(|t| t.keyword == s.keyword);
            if let Some(t) = f32_score {
                assert!(
                    (s.score - t.score).abs() < 0.02,
                    "{}: {} vs {}",
                    s.keyword,
                    s.score,
                    t.score
                );
            }
        }
    } else {
        assert_eq!(f32, bf16, "f32 products where the CPU has no AMX tiles");
    }
}
