//! Chinese-CLIP on candle: image and text features, L2-normalised, so a dot
//! product is the cosine similarity the prototype used
//! (`ChineseCLIPModel.get_image_features` / `get_text_features`).
//!
//! The two towers are forward passes of our own (`vision.rs`, `text.rs`,
//! after candle-transformers' model files), for the CPU's sake: one product
//! for attention's three projections, a one-pass softmax, and a last layer
//! that computes only the row the feature is read from.
//!
//! The architecture is read from the model's `config.json` (ViT-B/16 and
//! ViT-L/14 alike); the text side uses its BERT WordPiece vocabulary
//! (`tokenizer.json`, or `vocab.txt` with BERT's Chinese settings) and
//! Chinese-CLIP's context length of 52 tokens.

mod config;
mod hub;
mod layers;
mod text;
mod vision;

pub use crate::linear::ProductPrecision;

use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use image::DynamicImage;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use crate::weights::SafetensorsFiles;
use text::TextTower;
use vision::VisionTower;

pub(crate) use hub::{locate, ClipSource};

use crate::device::on_cpu_pool;
use crate::error::{EmbedError, ModelError};
use crate::photo::Preprocessor;

/// Chinese-CLIP's text context length (its tokenizer's `model_max_length`).
pub(crate) const CONTEXT_LENGTH: usize = 52;
/// Texts embedded per forward pass. 32, not 64: a first start's keyword
/// vocabulary (642 prompts) peaked 18 MB higher in 64s (815 against 797 MB
/// resident, ViT-B/16) and took longer (6.6 against 6.3 s; AMD EPYC, two
/// threads).
const TEXT_BATCH: usize = 32;

pub struct ClipModel {
    vision: VisionTower,
    text: TextTower,
    tokenizer: Tokenizer,
    preprocessor: Preprocessor,
    device: Device,
    dtype: DType,
    /// Names the weights, for the keyword-embedding cache.
    fingerprint: String,
}

impl ClipModel {
    /// Loads a directory in the Hugging Face layout, the weights in `dtype`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ModelError> {
        if dtype == DType::F16 {
            // Checked against the reference in f32 and bf16 only.
            return Err(ModelError::ClipF16);
        }
        let config_path = dir.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|source| ModelError::MissingFile {
                path: config_path.clone(),
                source,
            })?;
        let config = config::parse(&config_text, &config_path)?;
        let tokenizer = config::tokenizer(dir)?;
        let preprocessor = Preprocessor::load(dir)?;
        let weights = weights_file(dir)?;
        let weights_error = |e| ModelError::Weights(dir.to_owned(), Box::new(e));
        let text_config = &config.text_config;
        // On the CPU the word table (65 MB for a ViT-B/16) stays in a
        // safetensors file, its rows read as texts need them.
        let (stored, words_in_file): (Box<dyn SimpleBackend>, _) =
            if weights.extension().is_some_and(|e| e == "safetensors") {
                let files = SafetensorsFiles::open(std::slice::from_ref(&weights))
                    .map_err(weights_error)?;
                let words = device
                    .is_cpu()
                    .then(|| {
                        let shape = (text_config.vocab_size, text_config.hidden_size);
                        files.rows_in_file(text::WORD_TABLE, shape, dtype)
                    })
                    .transpose()
                    .map_err(weights_error)?;
                (Box::new(files), words)
            } else {
                let tensors = PthTensors::new(&weights, None).map_err(weights_error)?;
                (Box::new(tensors), None)
            };
        let vb = VarBuilder::from_backend(stored, dtype, device.clone());
        // The text tower first: a word table it holds is read into a buffer
        // before it becomes a tensor, and that moment's peak stays under the
        // final size only while the vision tower is not yet loaded.
        let text = TextTower::load(
            vb.clone(),
            text_config,
            config.projection_dim,
            words_in_file,
        )
        .map_err(weights_error)?;
        let vision = VisionTower::load(vb, &config.vision_config, config.projection_dim)
            .map_err(weights_error)?;
        Ok(Self {
            vision,
            text,
            tokenizer,
            preprocessor,
            device: device.clone(),
            dtype,
            fingerprint: fingerprint(&config_text, &weights, dtype)?,
        })
    }

    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Projected features `(batch, dim)` of f32 pixel tensors `(batch, 3, side, side)`,
    /// as `get_image_features` returns them (not normalised), in f32.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor, ModelError> {
        self.image_features_in(pixels, ProductPrecision::F32)
    }

    /// [`ClipModel::image_features`] with the vision tower's products in
    /// `precision`.
    pub fn image_features_in(
        &self,
        pixels: &Tensor,
        precision: ProductPrecision,
    ) -> Result<Tensor, ModelError> {
        let pixels = pixels.to_device(&self.device)?.to_dtype(self.dtype)?;
        Ok(on_cpu_pool(|| self.vision.forward(&pixels, precision))?.to_dtype(DType::F32)?)
    }

    /// Normalised features of a batch of decoded photos, the vision tower's
    /// products in `precision`.
    pub(crate) fn embed_images(
        &self,
        images: &[DynamicImage],
        precision: ProductPrecision,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let pixels: Vec<Tensor> = images
            .iter()
            .map(|img| self.preprocessor.pixels(img, &self.device))
            .collect::<Result<_, _>>()?;
        let batch = Tensor::stack(&pixels, 0).map_err(ModelError::from)?;
        let features = self.image_features_in(&batch, precision)?;
        Ok(normalize(&features)
            .and_then(|f| f.to_vec2())
            .map_err(ModelError::from)?)
    }

    /// The normalised feature of one decoded photo.
    pub fn embed_image(&self, img: &DynamicImage) -> Result<Vec<f32>, EmbedError> {
        self.embed_image_in(img, ProductPrecision::F32)
    }

    /// [`ClipModel::embed_image`] with the vision tower's products in
    /// `precision`.
    pub fn embed_image_in(
        &self,
        img: &DynamicImage,
        precision: ProductPrecision,
    ) -> Result<Vec<f32>, EmbedError> {
        Ok(self
            .embed_images(std::slice::from_ref(img), precision)?
            .swap_remove(0))
    }

    /// Token ids of a text: `[CLS] … [SEP]`, at most [`CONTEXT_LENGTH`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(ModelError::Tokenize)?;
        let mut ids = encoding.get_ids().to_vec();
        if ids.len() > CONTEXT_LENGTH {
            // Keep [SEP] at the end, as the reference truncation does.
            let sep = *ids.last().expect("not empty");
            ids.truncate(CONTEXT_LENGTH - 1);
            ids.push(sep);
        }
        Ok(ids)
    }

    /// Projected features `(texts, dim)`, as `get_text_features` returns them
    /// for a padded batch with its attention mask (not normalised), in f32.
    pub fn text_features(&self, texts: &[String]) -> Result<Tensor, ModelError> {
        self.text_features_in(texts, ProductPrecision::F32)
    }

    /// [`ClipModel::text_features`] with the text tower's products in
    /// `precision`.
    pub fn text_features_in(
        &self,
        texts: &[String],
        precision: ProductPrecision,
    ) -> Result<Tensor, ModelError> {
        let mut out = Vec::new();
        for chunk in texts.chunks(TEXT_BATCH) {
            let ids: Vec<Vec<u32>> = chunk
                .iter()
                .map(|t| self.tokenize(t))
                .collect::<Result<_, _>>()?;
            let len = ids.iter().map(Vec::len).max().unwrap_or(1);
            let mut flat = Vec::with_capacity(ids.len() * len);
            let mut mask = Vec::with_capacity(ids.len() * len);
            for row in &ids {
                flat.extend(
                    row.iter()
                        .copied()
                        .chain(std::iter::repeat_n(0, len - row.len())),
                );
                mask.extend((0..len).map(|i| u32::from(i < row.len())));
            }
            let input = Tensor::from_vec(flat, (ids.len(), len), &self.device)?;
            let mask = Tensor::from_vec(mask, (ids.len(), len), &self.device)?;
            let features = on_cpu_pool(|| self.text.forward(&input, &mask, precision))?;
            out.push(features.to_dtype(DType::F32)?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    /// Normalised features of texts.
    pub fn embed_texts(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.embed_texts_in(texts, ProductPrecision::F32)
    }

    /// [`ClipModel::embed_texts`] with the text tower's products in `precision`.
    pub fn embed_texts_in(
        &self,
        texts: &[String],
        precision: ProductPrecision,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(normalize(&self.text_features_in(texts, precision)?)?.to_vec2()?)
    }
}

fn normalize(features: &Tensor) -> candle_core::Result<Tensor> {
    let norm = features.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    features.broadcast_div(&norm)
}

/// `model.safetensors`, else `pytorch_model.bin`.
fn weights_file(dir: &Path) -> Result<PathBuf, ModelError> {
    ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.exists())
        .ok_or_else(|| ModelError::MissingFile {
            path: dir.join("model.safetensors"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither model.safetensors nor pytorch_model.bin is there",
            ),
        })
}

/// A hash of the config, of the weights file's size and first mebibyte, and
/// of the dtype they run in: cheap, and different for different weights in practice.
fn fingerprint(config: &str, weights: &Path, dtype: DType) -> Result<String, ModelError> {
    use std::io::Read;
    let io = |source| ModelError::MissingFile {
        path: weights.to_owned(),
        source,
    };
    let file = std::fs::File::open(weights).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut head = Vec::with_capacity(1 << 20);
    file.take(1 << 20).read_to_end(&mut head).map_err(io)?;
    let mut h = Sha256::new();
    h.update(config.as_bytes());
    h.update(len.to_le_bytes());
    h.update(&head);
    h.update(dtype.as_str());
    Ok(h.finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect())
}
