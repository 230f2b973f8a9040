//! The poet: a character-level T5 ([`super::t5`], after candle-transformers'
//! `models::t5`) that writes one line per call from `{form}|{keywords}|{line1}|…|`.
//!
//! A model directory holds `config.json`, `tokenizer.json` (WordLevel, one token
//! per character) and the weights as `model.safetensors` or shards listed in
//! `model.safetensors.index.json`. The weights load in the dtype asked for
//! (f32 on the CPU; bf16 on a GPU, as f16 overflows), and the logits come back as f32.
//! See `models/poet-t5/card.md` for the format and how the model was trained.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::t5;
use std::str::FromStr;

use tokenizers::Tokenizer;

use super::t5::T5;
use crate::error::ModelError;
use crate::weights::SafetensorsFiles;

/// Token ids below this are specials and separators; characters start here.
pub(crate) const FIRST_CHAR_ID: u32 = 7;

/// Added to the attention scores of padding: far below any real score, and
/// finite in bf16 (f16 takes it as −∞, which the softmax handles as well).
const MASKED: f32 = -1e9;

/// A batch's encoded sources, one row per candidate.
pub struct Encoded {
    states: Tensor,
    /// 0 over tokens, [`MASKED`] over padding, `(rows, 1, 1, len)`; `None`
    /// when no source was padded.
    padding: Option<Tensor>,
}

pub struct PoetModel {
    t5: T5,
    tokenizer: Tokenizer,
    /// The character of each token id (`None` for specials and separators).
    chars: Vec<Option<char>>,
    ids: HashMap<char, u32>,
    eos_id: u32,
    pad_id: u32,
    decoder_start_id: u32,
    device: Device,
    dtype: DType,
}

impl PoetModel {
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|source| ModelError::MissingFile { path, source })
        };
        let config: t5::Config =
            serde_json::from_str(&read("config.json")?).map_err(|source| ModelError::Json {
                path: dir.join("config.json"),
                source,
            })?;
        let tokenizer = Tokenizer::from_str(&read("tokenizer.json")?).map_err(|source| {
            ModelError::TokenizerFile {
                path: dir.join("tokenizer.json"),
                source,
            }
        })?;
        let vocab = tokenizer.get_vocab(true);
        let mut chars = vec![None; config.vocab_size];
        let mut ids = HashMap::new();
        for (token, id) in &vocab {
            let mut cs = token.chars();
            if let (Some(c), None) = (cs.next(), cs.next()) {
                if id >= &FIRST_CHAR_ID && (*id as usize) < chars.len() {
                    chars[*id as usize] = Some(c);
                    ids.insert(c, *id);
                }
            }
        }
        let files = weight_files(dir)?;
        let weights = SafetensorsFiles::open(&files)
            .map_err(|e| ModelError::Weights(dir.to_owned(), Box::new(e)))?;
        let vb = VarBuilder::from_backend(Box::new(weights), dtype, device.clone());
        let t5 =
            T5::load(vb, &config).map_err(|e| ModelError::Weights(dir.to_owned(), Box::new(e)))?;
        Ok(Self {
            t5,
            tokenizer,
            chars,
            ids,
            eos_id: config.eos_token_id as u32,
            pad_id: config.pad_token_id as u32,
            decoder_start_id: config.decoder_start_token_id.unwrap_or(config.pad_token_id) as u32,
            device: device.clone(),
            dtype,
        })
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    pub(crate) fn char_of(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied().flatten()
    }

    pub(crate) fn id_of(&self, c: char) -> Option<u32> {
        self.ids.get(&c).copied()
    }

    pub(crate) fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Token ids of a source string, [EOS] appended by the tokenizer.
    pub fn tokenize(&self, source: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(source, true)
            .map_err(ModelError::Tokenize)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes one source per row and resets the decoder. Rows that share a
    /// source (every candidate's first line) share its encoding; sources of
    /// different lengths are padded and the padding masked.
    pub fn start(&mut self, sources: &[Vec<u32>]) -> Result<Encoded, ModelError> {
        let mut distinct: Vec<&[u32]> = Vec::new();
        let mut index_of: HashMap<&[u32], u32> = HashMap::new();
        let row_of: Vec<u32> = sources
            .iter()
            .map(|source| {
                *index_of.entry(source).or_insert_with(|| {
                    distinct.push(source);
                    distinct.len() as u32 - 1
                })
            })
            .collect();
        let len = distinct.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(distinct.len() * len);
        for s in &distinct {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(self.pad_id, len - s.len()));
        }
        let input = Tensor::from_vec(ids, (distinct.len(), len), &self.device)?;
        let padding = if distinct.iter().any(|s| s.len() < len) {
            let bias: Vec<f32> = distinct
                .iter()
                .flat_map(|s| (0..len).map(move |i| if i < s.len() { 0.0 } else { MASKED }))
                .collect();
            Some(
                Tensor::from_vec(bias, (distinct.len(), 1, 1, len), &self.device)?
                    .to_dtype(self.dtype)?,
            )
        } else {
            None
        };
        let states = self.t5.encode(&input, padding.as_ref())?;
        if row_of.iter().enumerate().all(|(i, &k)| k as usize == i) {
            return Ok(Encoded { states, padding });
        }
        let rows = Tensor::from_vec(row_of, sources.len(), &self.device)?;
        Ok(Encoded {
            states: states.index_select(&rows, 0)?,
            padding: padding.map(|p| p.index_select(&rows, 0)).transpose()?,
        })
    }

    /// One decoder step for every row: feeds the last token of each row and
    /// returns the logits of the next, `[rows][vocab]`. The first step feeds
    /// the decoder start token.
    pub fn step(
        &mut self,
        encoded: &Encoded,
        last: Option<&[u32]>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let rows = encoded.states.dim(0)?;
        let tokens = match last {
            Some(last) => last.to_vec(),
            None => vec![self.decoder_start_id; rows],
        };
        let input = Tensor::from_vec(tokens, (rows, 1), &self.device)?;
        Ok(self
            .t5
            .decode_step(&input, &encoded.states, encoded.padding.as_ref())?
            .to_vec2()?)
    }

    /// Plain greedy decoding of one source up to [EOS] or `max_tokens`, with no
    /// constraints: what `transformers`' `generate(do_sample=False)` does.
    pub fn greedy(&mut self, source: &str, max_tokens: usize) -> Result<Vec<u32>, ModelError> {
        let ids = self.tokenize(source)?;
        let encoded = self.start(&[ids])?;
        let mut out = Vec::new();
        for _ in 0..max_tokens {
            let logits = self.step(&encoded, out.last().map(std::slice::from_ref))?;
            let next = argmax(&logits[0]);
            out.push(next);
            if next == self.eos_id {
                break;
            }
        }
        Ok(out)
    }
}

pub(crate) fn argmax(values: &[f32]) -> u32 {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

/// The weight files of a model directory: one file, or the shards of an index.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let index = std::fs::read_to_string(&index_path).map_err(|source| ModelError::MissingFile {
        path: single.clone(),
        source,
    })?;
    let index: serde_json::Value =
        serde_json::from_str(&index).map_err(|source| ModelError::Json {
            path: index_path.clone(),
            source,
        })?;
    let mut files: Vec<PathBuf> = index["weight_map"]
        .as_object()
        .ok_or_else(|| ModelError::Unsupported {
            path: index_path.clone(),
            problem: "it has no weight_map".into(),
        })?
        .values()
        .filter_map(|v| v.as_str())
        .map(|name| dir.join(name))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
