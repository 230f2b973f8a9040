//! Chinese-CLIP's vision tower (a CLIP ViT), after candle-transformers'
//! `models::chinese_clip::vision_model`, which follows transformers'
//! `modeling_chinese_clip.py`.
//!
//! It differs from candle's in its attention ([`SelfAttention`]) and in the
//! last layer, which computes its attention output and MLP for the class
//! token alone, the only row the image feature is taken from: a quarter of a
//! layer's work instead of all of it.

use candle_core::{Module, Result, Tensor};
use candle_nn::{layer_norm, Conv2d, Conv2dConfig, LayerNorm, VarBuilder};
use candle_transformers::models::chinese_clip::vision_model::ChineseClipVisionConfig;

use super::layers::SelfAttention;
use crate::activation::Activation;
use crate::linear::{Linear, ProductPrecision};

struct Embeddings {
    patch: Conv2d,
    class: Tensor,
    /// `(positions, hidden)`.
    position: Tensor,
}

impl Embeddings {
    fn load(vb: VarBuilder, c: &ChineseClipVisionConfig) -> Result<Self> {
        let positions = (c.image_size / c.patch_size).pow(2) + 1;
        let patch = candle_nn::conv2d_no_bias(
            c.num_channels,
            c.hidden_size,
            c.patch_size,
            Conv2dConfig {
                stride: c.patch_size,
                ..Default::default()
            },
            vb.pp("patch_embedding"),
        )?;
        Ok(Self {
            patch,
            class: vb.get(c.hidden_size, "class_embedding")?,
            position: vb.get((positions, c.hidden_size), "position_embedding.weight")?,
        })
    }

    /// `(batch, channels, side, side)` → `(batch, 1 + patches, hidden)`.
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let patches = self
            .patch
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let (batch, _, hidden) = patches.dims3()?;
        let class = self.class.reshape((1, 1, hidden))?.repeat((batch, 1, 1))?;
        Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position)
    }
}

struct Layer {
    norm1: LayerNorm,
    attention: SelfAttention,
    norm2: LayerNorm,
    fc1: Linear,
    act: Activation,
    fc2: Linear,
}

impl Layer {
    fn load(vb: VarBuilder, c: &ChineseClipVisionConfig) -> Result<Self> {
        let d = c.hidden_size;
        let norm = |name: &str| layer_norm(d, c.layer_norm_eps, vb.pp(name));
        let mlp = vb.pp("mlp");
        Ok(Self {
            norm1: norm("layer_norm1")?,
            attention: {
                let attn = vb.pp("self_attn");
                let proj = |name: &str| Linear::load(attn.pp(name), d, d, true);
                SelfAttention::new(
                    [proj("q_proj")?, proj("k_proj")?, proj("v_proj")?],
                    proj("out_proj")?,
                    c.num_attention_heads,
                )?
            },
            norm2: norm("layer_norm2")?,
            fc1: Linear::load(mlp.pp("fc1"), c.hidden_size, c.intermediate_size, true)?,
            act: c.hidden_act.into(),
            fc2: Linear::load(mlp.pp("fc2"), c.intermediate_size, c.hidden_size, true)?,
        })
    }

    /// The first `rows` positions of the layer's output, its products in
    /// `precision`.
    fn forward(&self, xs: &Tensor, rows: usize, precision: ProductPrecision) -> Result<Tensor> {
        let attended = self
            .attention
            .forward(&self.norm1.forward(xs)?, None, rows, precision)?;
        let xs = (xs.narrow(1, 0, rows)? + attended)?;
        let hidden = self
            .act
            .forward(&self.fc1.forward_in(&self.norm2.forward(&xs)?, precision)?)?;
        xs + self.fc2.forward_in(&hidden, precision)?
    }
}

/// The vision tower and its projection: `get_image_features`.
pub(super) struct VisionTower {
    embeddings: Embeddings,
    pre_norm: LayerNorm,
    layers: Vec<Layer>,
    post_norm: LayerNorm,
    projection: Linear,
}

impl VisionTower {
    /// `vb` at the model's root (`vision_model.*`, `visual_projection.*`).
    pub(super) fn load(
        vb: VarBuilder,
        c: &ChineseClipVisionConfig,
        projection_dim: usize,
    ) -> Result<Self> {
        let model = vb.pp("vision_model");
        let norm = |name: &str| layer_norm(c.hidden_size, c.layer_norm_eps, model.pp(name));
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::load(model.pp("encoder.layers").pp(i.to_string()), c))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings: Embeddings::load(model.pp("embeddings"), c)?,
            // transformers' own spelling of the key.
            pre_norm: norm("pre_layrnorm")?,
            layers,
            post_norm: norm("post_layernorm")?,
            projection: Linear::load(
                vb.pp("visual_projection"),
                c.hidden_size,
                projection_dim,
                false,
            )?,
        })
    }

    /// Projected features `(batch, projection_dim)` of pixels `(batch, 3,
    /// side, side)`, the encoder layers' products in `precision`.
    pub(super) fn forward(&self, pixels: &Tensor, precision: ProductPrecision) -> Result<Tensor> {
        let mut xs = self.pre_norm.forward(&self.embeddings.forward(pixels)?)?;
        let (_, len, _) = xs.dims3()?;
        let last = self.layers.len().saturating_sub(1);
        for (i, layer) in self.layers.iter().enumerate() {
            // Only the class token's row is read after the last layer.
            xs = layer.forward(&xs, if i == last { 1 } else { len }, precision)?;
        }
        let class = xs.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?;
        self.projection.forward(&self.post_norm.forward(&class)?)
    }
}
