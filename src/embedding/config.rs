//! Chinese-CLIP's `config.json` (transformers' `ChineseCLIPConfig`) and
//! tokenizer files, read into candle's configuration structs. Missing keys
//! take transformers' defaults.

use std::path::Path;

use candle_transformers::models::chinese_clip::text_model::{
    ChineseClipTextConfig, PositionEmbeddingType,
};
use candle_transformers::models::chinese_clip::vision_model::ChineseClipVisionConfig;
use candle_transformers::models::chinese_clip::{Activation, ChineseClipConfig};
use serde::Deserialize;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

use crate::error::ModelError;

#[derive(Deserialize)]
struct Clip {
    #[serde(default)]
    text_config: Text,
    #[serde(default)]
    vision_config: Vision,
    #[serde(default = "d512")]
    projection_dim: usize,
    #[serde(default = "logit_scale")]
    logit_scale_init_value: f32,
}

#[derive(Deserialize)]
#[serde(default)]
struct Text {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    pad_token_id: usize,
    position_embedding_type: String,
}

impl Default for Text {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct Vision {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}

impl Default for Vision {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

fn d512() -> usize {
    512
}

fn logit_scale() -> f32 {
    2.6592
}

/// Reads the text of `config.json` (`path`, named in errors).
pub(crate) fn parse(text: &str, path: &Path) -> Result<ChineseClipConfig, ModelError> {
    let c: Clip = serde_json::from_str(text).map_err(|source| ModelError::Json {
        path: path.to_owned(),
        source,
    })?;
    let unsupported = |problem: String| ModelError::Unsupported {
        path: path.to_owned(),
        problem,
    };
    let activation = |name: &str| match name {
        "gelu" => Ok(Activation::Gelu),
        "gelu_new" => Ok(Activation::GeluNew),
        "quick_gelu" => Ok(Activation::QuickGelu),
        "relu" => Ok(Activation::Relu),
        other => Err(unsupported(format!(
            "the activation '{other}' is not supported"
        ))),
    };
    let (t, v) = (c.text_config, c.vision_config);
    for (tower, hidden, heads) in [
        ("text", t.hidden_size, t.num_attention_heads),
        ("vision", v.hidden_size, v.num_attention_heads),
    ] {
        if heads == 0 || hidden % heads != 0 {
            return Err(unsupported(format!(
                "the {tower} tower's hidden_size {hidden} does not split into {heads} attention heads"
            )));
        }
    }
    if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
        return Err(unsupported(format!(
            "image_size {} is not a whole number of patches of {}",
            v.image_size, v.patch_size
        )));
    }
    if t.position_embedding_type != "absolute" {
        return Err(unsupported(format!(
            "text position_embedding_type '{}' is not supported (absolute only)",
            t.position_embedding_type
        )));
    }
    let text_config = ChineseClipTextConfig {
        vocab_size: t.vocab_size,
        hidden_size: t.hidden_size,
        num_hidden_layers: t.num_hidden_layers,
        num_attention_heads: t.num_attention_heads,
        intermediate_size: t.intermediate_size,
        hidden_act: activation(&t.hidden_act)?,
        max_position_embeddings: t.max_position_embeddings,
        type_vocab_size: t.type_vocab_size,
        layer_norm_eps: t.layer_norm_eps,
        pad_token_id: t.pad_token_id,
        position_embedding_type: PositionEmbeddingType::Absolute,
        ..ChineseClipTextConfig::default()
    };
    let vision_config = ChineseClipVisionConfig {
        hidden_size: v.hidden_size,
        intermediate_size: v.intermediate_size,
        projection_dim: c.projection_dim,
        num_hidden_layers: v.num_hidden_layers,
        num_attention_heads: v.num_attention_heads,
        num_channels: v.num_channels,
        image_size: v.image_size,
        patch_size: v.patch_size,
        hidden_act: activation(&v.hidden_act)?,
        layer_norm_eps: v.layer_norm_eps,
        ..ChineseClipVisionConfig::default()
    };
    Ok(ChineseClipConfig {
        image_size: v.image_size,
        text_config,
        vision_config,
        projection_dim: c.projection_dim,
        logit_scale_init_value: c.logit_scale_init_value,
    })
}

/// `tokenizer.json` when the model has one, else BERT's Chinese WordPiece over `vocab.txt`.
pub(crate) fn tokenizer(dir: &Path) -> Result<Tokenizer, ModelError> {
    let json = dir.join("tokenizer.json");
    if json.exists() {
        return Tokenizer::from_file(&json)
            .map_err(|source| ModelError::TokenizerFile { path: json, source });
    }
    let vocab = dir.join("vocab.txt");
    if !vocab.exists() {
        return Err(ModelError::MissingFile {
            path: vocab,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no vocab.txt or tokenizer.json",
            ),
        });
    }
    let wordpiece = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(|source| ModelError::TokenizerFile {
            path: vocab.clone(),
            source,
        })?;
    let mut tokenizer = Tokenizer::new(wordpiece);
    let id = |t: &str| {
        tokenizer
            .token_to_id(t)
            .ok_or_else(|| ModelError::Unsupported {
                path: vocab.clone(),
                problem: format!("it has no {t} token"),
            })
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(json: &str) -> String {
        match parse(json, Path::new("config.json")) {
            Err(ModelError::Unsupported { problem, .. }) => problem,
            Err(other) => panic!("another error: {other}"),
            Ok(_) => panic!("accepted: {json}"),
        }
    }

    #[test]
    fn shapes_the_towers_cannot_take_are_named() {
        assert!(parse("{}", Path::new("config.json")).is_ok());
        let heads = problem(r#"{"text_config": {"num_attention_heads": 0}}"#);
        assert!(
            heads.contains("text tower") && heads.contains("0 attention heads"),
            "{heads}"
        );
        let split =
            problem(r#"{"vision_config": {"hidden_size": 100, "num_attention_heads": 12}}"#);
        assert!(
            split.contains("vision tower") && split.contains("100"),
            "{split}"
        );
        let patches = problem(r#"{"vision_config": {"patch_size": 0}}"#);
        assert!(patches.contains("patches of 0"), "{patches}");
    }
}
