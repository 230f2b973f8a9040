//! The poet: a character-level T5 ([`super::t5`], after candle-transformers'
//! `models::t5`) that writes one line per call from `{form}|{keywords}|{line1}|…|`.
//!
//! A model directory holds `config.json`, `tokenizer.json` (WordLevel, one token
//! per character) and the weights as `model.safetensors` or shards listed in
//! `model.safetensors.index.json`. The weights load as f32 on the CPU.
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

/// Token ids below this are specials and separators; characters start here.
pub const FIRST_CHAR_ID: u32 = 7;

pub struct PoetModel {
    t5: T5,
    tokenizer: Tokenizer,
    /// The character of each token id (`None` for specials and separators).
    chars: Vec<Option<char>>,
    ids: HashMap<char, u32>,
    eos_id: u32,
    decoder_start_id: u32,
    device: Device,
}

impl PoetModel {
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|source| ModelError::MissingFile { path, source })
        };
        let config: t5::Config = serde_json::from_str(&read("config.json")?)
            .map_err(|e| ModelError::Format(format!("{}/config.json: {e}", dir.display())))?;
        let tokenizer = Tokenizer::from_str(&read("tokenizer.json")?)
            .map_err(|e| ModelError::Format(format!("{}/tokenizer.json: {e}", dir.display())))?;
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
        // SAFETY: the files are memory-mapped read-only and not changed while loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device) }
            .map_err(|e| ModelError::Weights(dir.to_owned(), Box::new(e)))?;
        let t5 =
            T5::load(vb, &config).map_err(|e| ModelError::Weights(dir.to_owned(), Box::new(e)))?;
        Ok(Self {
            t5,
            tokenizer,
            chars,
            ids,
            eos_id: config.eos_token_id as u32,
            decoder_start_id: config.decoder_start_token_id.unwrap_or(config.pad_token_id) as u32,
            device: device.clone(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    pub fn char_of(&self, id: u32) -> Option<char> {
        self.chars.get(id as usize).copied().flatten()
    }

    pub fn id_of(&self, c: char) -> Option<u32> {
        self.ids.get(&c).copied()
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Token ids of a source string, [EOS] appended by the tokenizer.
    pub fn tokenize(&self, source: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(source, true)
            .map_err(|e| ModelError::Format(format!("tokenizer: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes a batch of sources of equal token length, and resets the decoder.
    pub fn start(&mut self, sources: &[Vec<u32>]) -> Result<Tensor, ModelError> {
        let len = sources.first().map_or(0, Vec::len);
        if sources.iter().any(|s| s.len() != len) {
            return Err(ModelError::Format(
                "sources of a batch differ in length".into(),
            ));
        }
        // The first line of every candidate has the same source: encode it once.
        let rows = sources.len();
        let distinct = if sources.iter().all(|s| s == &sources[0]) {
            &sources[..1]
        } else {
            sources
        };
        let input = Tensor::from_vec(distinct.concat(), (distinct.len(), len), &self.device)?;
        let encoded = self.t5.encode(&input)?;
        if distinct.len() == rows {
            return Ok(encoded);
        }
        let (_, len, dim) = encoded.dims3()?;
        Ok(encoded.broadcast_as((rows, len, dim))?.contiguous()?)
    }

    /// One decoder step for every row: feeds the last token of each row and
    /// returns the logits of the next, `[rows][vocab]`. The first step feeds
    /// the decoder start token.
    pub fn step(
        &mut self,
        encoded: &Tensor,
        last: Option<&[u32]>,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let rows = encoded.dim(0)?;
        let tokens = match last {
            Some(last) => last.to_vec(),
            None => vec![self.decoder_start_id; rows],
        };
        let input = Tensor::from_vec(tokens, (rows, 1), &self.device)?;
        Ok(self.t5.decode_step(&input, encoded)?.to_vec2()?)
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

pub fn argmax(values: &[f32]) -> u32 {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

/// The weight files of a model directory: one file, or the shards of an index.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let index = std::fs::read_to_string(&index_path).map_err(|source| ModelError::MissingFile {
        path: single.clone(),
        source,
    })?;
    let index: serde_json::Value = serde_json::from_str(&index)
        .map_err(|e| ModelError::Format(format!("{}: {e}", index_path.display())))?;
    let mut files: Vec<PathBuf> = index["weight_map"]
        .as_object()
        .ok_or_else(|| ModelError::Format(format!("{}: no weight_map", index_path.display())))?
        .values()
        .filter_map(|v| v.as_str())
        .map(|name| dir.join(name))
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}
