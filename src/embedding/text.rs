//! Chinese-CLIP's text tower (a BERT encoder, post-norm), after
//! candle-transformers' `models::chinese_clip::text_model`, which follows
//! transformers' `modeling_chinese_clip.py`.
//!
//! It differs from candle's in its attention ([`SelfAttention`]), in the last
//! layer, which computes its attention output and feed-forward block for the
//! `[CLS]` token alone (the only row the text feature is taken from), and in
//! its padding mask, which stays in f32 (candle's turns to NaN in bf16). No
//! pooler: transformers' `get_text_features` takes the `[CLS]` row of the
//! last hidden state.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};
use candle_transformers::models::chinese_clip::text_model::ChineseClipTextConfig;

use super::layers::SelfAttention;
use crate::activation::Activation;
use crate::linear::{Linear, ProductPrecision};
use crate::weights::RowsInFile;

/// The word table's name in the checkpoint.
pub(super) const WORD_TABLE: &str = "text_model.embeddings.word_embeddings.weight";

/// The word table: held in memory, or read a row at a time from the weights
/// file (a pass reads a few hundred of its rows at most).
enum Words {
    Held(Embedding),
    InFile(RowsInFile),
}

impl Words {
    /// Token ids `(batch, len)` → `(batch, len, hidden)`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Held(table) => table.forward(ids),
            Self::InFile(rows) => {
                let (batch, len) = ids.dims2()?;
                let rows = rows.get(&ids.flatten_all()?.to_vec1::<u32>()?)?;
                let hidden = rows.dim(1)?;
                rows.to_device(ids.device())?.reshape((batch, len, hidden))
            }
        }
    }
}

struct Embeddings {
    words: Words,
    /// `(max_positions, hidden)`.
    positions: Tensor,
    /// The token type 0 row, `(hidden)`: every text is one segment.
    segment: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(
        vb: VarBuilder,
        c: &ChineseClipTextConfig,
        words_in_file: Option<RowsInFile>,
    ) -> Result<Self> {
        let words = match words_in_file {
            Some(rows) => Words::InFile(rows),
            None => Words::Held(embedding(
                c.vocab_size,
                c.hidden_size,
                vb.pp("word_embeddings"),
            )?),
        };
        let types = vb.get(
            (c.type_vocab_size, c.hidden_size),
            "token_type_embeddings.weight",
        )?;
        Ok(Self {
            words,
            positions: vb.get(
                (c.max_position_embeddings, c.hidden_size),
                "position_embeddings.weight",
            )?,
            segment: types.get(0)?,
            norm: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    /// Token ids `(batch, len)` → `(batch, len, hidden)`.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let summed = self
            .words
            .forward(ids)?
            .broadcast_add(&self.segment)?
            .broadcast_add(&self.positions.narrow(0, 0, len)?)?;
        self.norm.forward(&summed)
    }
}

struct Layer {
    attention: SelfAttention,
    attention_norm: LayerNorm,
    intermediate: Linear,
    act: Activation,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn load(vb: VarBuilder, c: &ChineseClipTextConfig) -> Result<Self> {
        let d = c.hidden_size;
        let attention = vb.pp("attention");
        let input = |name: &str| Linear::load(attention.pp("self").pp(name), d, d, true);
        let norm = |vb: VarBuilder| layer_norm(d, c.layer_norm_eps, vb.pp("LayerNorm"));
        Ok(Self {
            attention: SelfAttention::new(
                [input("query")?, input("key")?, input("value")?],
                Linear::load(attention.pp("output.dense"), d, d, true)?,
                c.num_attention_heads,
            )?,
            attention_norm: norm(attention.pp("output"))?,
            intermediate: Linear::load(vb.pp("intermediate.dense"), d, c.intermediate_size, true)?,
            act: c.hidden_act.into(),
            output: Linear::load(vb.pp("output.dense"), c.intermediate_size, d, true)?,
            output_norm: norm(vb.pp("output"))?,
        })
    }

    /// The first `rows` positions of the layer's output, its products in
    /// `precision`.
    fn forward(
        &self,
        xs: &Tensor,
        mask: &Tensor,
        rows: usize,
        precision: ProductPrecision,
    ) -> Result<Tensor> {
        let attended = self.attention.forward(xs, Some(mask), rows, precision)?;
        let xs = self
            .attention_norm
            .forward(&(attended + xs.narrow(1, 0, rows)?)?)?;
        let hidden = self
            .act
            .forward(&self.intermediate.forward_in(&xs, precision)?)?;
        self.output_norm
            .forward(&(self.output.forward_in(&hidden, precision)? + xs)?)
    }
}

/// The text tower and its projection: `get_text_features`.
pub(super) struct TextTower {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    projection: Linear,
}

impl TextTower {
    /// `vb` at the model's root (`text_model.*`, `text_projection.*`); the
    /// word table from `vb` unless it is read from the file
    /// ([`WORD_TABLE`]).
    pub(super) fn load(
        vb: VarBuilder,
        c: &ChineseClipTextConfig,
        projection_dim: usize,
        words_in_file: Option<RowsInFile>,
    ) -> Result<Self> {
        let model = vb.pp("text_model");
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(model.pp("encoder.layer").pp(i.to_string()), c))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings: Embeddings::load(model.pp("embeddings"), c, words_in_file)?,
            layers,
            projection: Linear::load(
                vb.pp("text_projection"),
                c.hidden_size,
                projection_dim,
                false,
            )?,
        })
    }

    /// Projected features `(batch, projection_dim)` of token ids `(batch, len)`
    /// whose attention `mask` (`(batch, len)`, 1 over tokens, 0 over padding)
    /// says which positions are padding; the layers' products in
    /// `precision` (the projection's, one row a text, in f32).
    pub(super) fn forward(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        precision: ProductPrecision,
    ) -> Result<Tensor> {
        let mut xs = self.embeddings.forward(ids)?;
        let (batch, len, _) = xs.dims3()?;
        // Added to the scores in f32: 0 over tokens, f32's lowest over
        // padding, as transformers' extended attention mask. (In bf16 f32::MIN
        // rounds to −∞, and 0 × −∞ would make every score NaN.)
        let mask = mask
            .to_dtype(DType::F32)?
            .affine(f32::MAX as f64, f32::MIN as f64)?
            .reshape((batch, 1, 1, len))?;
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            // Only the [CLS] row is read after the last layer.
            xs = layer.forward(&xs, &mask, if i == last { 1 } else { len }, precision)?;
        }
        let cls = xs.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?;
        self.projection.forward(&cls)
    }
}
