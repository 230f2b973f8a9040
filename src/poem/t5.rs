//! T5 encoder–decoder for step-by-step sampling, after candle-transformers'
//! `models::t5` (which follows transformers' `modeling_t5.py`).
//!
//! Four changes from candle's model, all for the poet's decoding loop:
//! - the cross-attention keys and values are computed once per encoded batch
//!   and cached, where candle recomputes them from the encoder output at every
//!   step (about nine tenths of a step's work for this model);
//! - the decoder's relative-position buckets are unidirectional, as in
//!   transformers; candle uses the bidirectional buckets in both stacks, which
//!   agree only for distances under 8;
//! - a dense layer ([`Linear`]) multiplies all rows of a batch as one
//!   `(rows, in)` matrix, where candle's `Linear` broadcasts the weight over
//!   the batch and repacks it for every row (8× the work at batch 8); on CPUs
//!   with AVX2 and FMA its weights are held in panels that a kernel of our
//!   own reads in place, since the decoder's products have a row per
//!   candidate and gemm would repack the whole weight for each (in bf16, as
//!   the checkpoint holds them);
//! - the gated feed-forward's activation and its product with the gate are
//!   one pass on the CPU ([`Activation`]).
//!
//! The decoder takes one token per row per step (`decode_step`); its
//! self-attention cache grows by one position each step.
//! The configuration is candle's [`t5::Config`], read from `config.json`.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{embedding, Embedding, VarBuilder};
use candle_transformers::models::t5;

use crate::activation::Activation;
use crate::linear::Linear;

struct LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: VarBuilder, cfg: &t5::Config) -> Result<Self> {
        Ok(Self {
            weight: vb.get(cfg.d_model, "weight")?,
            eps: cfg.layer_norm_epsilon,
        })
    }

    /// T5's RMS norm: no mean subtraction, no bias; computed in f32 whatever
    /// the weights' dtype, as transformers does.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs32 = xs.to_dtype(DType::F32)?;
        let variance = xs32.sqr()?.mean_keepdim(D::Minus1)?;
        xs32.broadcast_div(&(variance + self.eps)?.sqrt()?)?
            .to_dtype(self.weight.dtype())?
            .broadcast_mul(&self.weight)
    }
}

/// The feed-forward block: `wo(act(wi_0 x) * wi_1 x)` when gated, else `wo(act(wi x))`.
struct FeedForward {
    wi: Linear,
    wi_gate: Option<Linear>,
    wo: Linear,
    act: Activation,
    norm: LayerNorm,
}

impl FeedForward {
    fn load(vb: VarBuilder, cfg: &t5::Config) -> Result<Self> {
        let dense = vb.pp("DenseReluDense");
        let (wi, wi_gate) = if cfg.feed_forward_proj.gated {
            (
                Linear::load(dense.pp("wi_0"), cfg.d_model, cfg.d_ff, false)?,
                Some(Linear::load(
                    dense.pp("wi_1"),
                    cfg.d_model,
                    cfg.d_ff,
                    false,
                )?),
            )
        } else {
            (
                Linear::load(dense.pp("wi"), cfg.d_model, cfg.d_ff, false)?,
                None,
            )
        };
        Ok(Self {
            wi,
            wi_gate,
            wo: Linear::load(dense.pp("wo"), cfg.d_ff, cfg.d_model, false)?,
            act: cfg.feed_forward_proj.activation.try_into()?,
            norm: LayerNorm::load(vb.pp("layer_norm"), cfg)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = self.norm.forward(xs)?;
        let hidden = self.wi.forward(&ys)?;
        let hidden = match &self.wi_gate {
            Some(gate) => self.act.forward_gated(&hidden, &gate.forward(&ys)?)?,
            None => self.act.forward(&hidden)?,
        };
        xs + self.wo.forward(&hidden)?
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    d_kv: usize,
    /// Keys and values so far: the decoder's own positions (self-attention),
    /// or the encoded source, computed once (cross-attention).
    cache: Option<(Tensor, Tensor)>,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &t5::Config) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        Ok(Self {
            q: Linear::load(vb.pp("q"), cfg.d_model, inner, false)?,
            k: Linear::load(vb.pp("k"), cfg.d_model, inner, false)?,
            v: Linear::load(vb.pp("v"), cfg.d_model, inner, false)?,
            o: Linear::load(vb.pp("o"), inner, cfg.d_model, false)?,
            heads: cfg.num_heads,
            d_kv: cfg.d_kv,
            cache: None,
        })
    }

    /// `(batch, len, d_model)` → `(batch, heads, len, d_kv)`.
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, len, _) = xs.dims3()?;
        xs.reshape((b, len, self.heads, self.d_kv))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        // T5 does not scale the scores by 1/sqrt(d_kv): that is folded into its init.
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let (b, _, len, _) = q.dims4()?;
        let out = weights
            .matmul(v)?
            .transpose(1, 2)?
            .reshape((b, len, self.heads * self.d_kv))?;
        self.o.forward(&out)
    }

    /// Self-attention over the whole input (the encoder).
    fn forward_full(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let q = self.split_heads(&self.q.forward(xs)?)?;
        let k = self.split_heads(&self.k.forward(xs)?)?;
        let v = self.split_heads(&self.v.forward(xs)?)?;
        self.attend(&q, &k, &v, Some(bias))
    }

    /// Self-attention of one new position over the cached ones (the decoder).
    fn forward_step(&mut self, xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let q = self.split_heads(&self.q.forward(xs)?)?;
        let mut k = self.split_heads(&self.k.forward(xs)?)?;
        let mut v = self.split_heads(&self.v.forward(xs)?)?;
        if let Some((ck, cv)) = &self.cache {
            k = Tensor::cat(&[ck, &k], 2)?;
            v = Tensor::cat(&[cv, &v], 2)?;
        }
        self.cache = Some((k.clone(), v.clone()));
        self.attend(&q, &k, &v, Some(bias))
    }

    /// Attention over the encoded source, whose keys and values are cached;
    /// `padding` masks the padded source positions.
    fn forward_cross(
        &mut self,
        xs: &Tensor,
        encoded: &Tensor,
        padding: Option<&Tensor>,
    ) -> Result<Tensor> {
        if self.cache.is_none() {
            let k = self.split_heads(&self.k.forward(encoded)?)?;
            let v = self.split_heads(&self.v.forward(encoded)?)?;
            self.cache = Some((k, v));
        }
        let q = self.split_heads(&self.q.forward(xs)?)?;
        let (k, v) = self.cache.as_ref().expect("filled above");
        self.attend(&q, k, v, padding)
    }
}

struct Block {
    self_attn: Attention,
    self_norm: LayerNorm,
    cross: Option<(Attention, LayerNorm)>,
    ff: FeedForward,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &t5::Config, decoder: bool) -> Result<Self> {
        let vb = vb.pp("layer");
        let cross = if decoder {
            Some((
                Attention::load(vb.pp("1").pp("EncDecAttention"), cfg)?,
                LayerNorm::load(vb.pp("1").pp("layer_norm"), cfg)?,
            ))
        } else {
            None
        };
        Ok(Self {
            self_attn: Attention::load(vb.pp("0").pp("SelfAttention"), cfg)?,
            self_norm: LayerNorm::load(vb.pp("0").pp("layer_norm"), cfg)?,
            ff: FeedForward::load(vb.pp(if decoder { "2" } else { "1" }), cfg)?,
            cross,
        })
    }
}

/// Relative position → bucket, as transformers' `_relative_position_bucket`.
fn bucket(relative: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> u32 {
    let mut buckets = num_buckets as i64;
    let mut offset = 0;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            offset = buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = buckets / 2;
    let b = if distance < max_exact {
        distance
    } else {
        let large = max_exact
            + ((distance as f64 / max_exact as f64).ln()
                / (max_distance as f64 / max_exact as f64).ln()
                * (buckets - max_exact) as f64) as i64;
        large.min(buckets - 1)
    };
    (offset + b) as u32
}

struct Stack {
    blocks: Vec<Block>,
    relative_bias: Embedding,
    final_norm: LayerNorm,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
}

impl Stack {
    fn load(vb: VarBuilder, cfg: &t5::Config, layers: usize, decoder: bool) -> Result<Self> {
        let blocks = (0..layers)
            .map(|i| Block::load(vb.pp(format!("block.{i}")), cfg, decoder))
            .collect::<Result<Vec<_>>>()?;
        let relative_bias = embedding(
            cfg.relative_attention_num_buckets,
            cfg.num_heads,
            vb.pp("block.0.layer.0.SelfAttention.relative_attention_bias"),
        )?;
        Ok(Self {
            blocks,
            relative_bias,
            final_norm: LayerNorm::load(vb.pp("final_layer_norm"), cfg)?,
            bidirectional: !decoder,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        })
    }

    /// The position bias `(1, heads, queries, keys)` for query positions
    /// `first_query..first_query + queries` over keys `0..keys`.
    fn position_bias(
        &self,
        first_query: usize,
        queries: usize,
        keys: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let ids: Vec<u32> = (first_query..first_query + queries)
            .flat_map(|i| {
                (0..keys).map(move |j| {
                    bucket(
                        j as i64 - i as i64,
                        self.bidirectional,
                        self.num_buckets,
                        self.max_distance,
                    )
                })
            })
            .collect();
        let ids = Tensor::from_vec(ids, (queries, keys), device)?;
        self.relative_bias
            .forward(&ids)?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }

    fn clear_cache(&mut self) {
        for block in &mut self.blocks {
            block.self_attn.cache = None;
            if let Some((cross, _)) = &mut block.cross {
                cross.cache = None;
            }
        }
    }
}

pub(crate) struct T5 {
    shared: Embedding,
    encoder: Stack,
    decoder: Stack,
    lm_head: Linear,
    /// Positions the decoder has taken so far.
    decoded: usize,
}

impl T5 {
    /// Loads an untied model (`tie_word_embeddings: false`, an `lm_head.weight`).
    pub(crate) fn load(vb: VarBuilder, cfg: &t5::Config) -> Result<Self> {
        if cfg.tie_word_embeddings {
            candle_core::bail!(
                "config.json says tie_word_embeddings: true; the poet expects an untied, unscaled \
                 lm_head (see models/poet-t5/card.md)"
            );
        }
        let shared = embedding(cfg.vocab_size, cfg.d_model, vb.pp("shared"))?;
        let decoder_layers = cfg.num_decoder_layers.unwrap_or(cfg.num_layers);
        Ok(Self {
            shared,
            encoder: Stack::load(vb.pp("encoder"), cfg, cfg.num_layers, false)?,
            decoder: Stack::load(vb.pp("decoder"), cfg, decoder_layers, true)?,
            lm_head: Linear::load(vb.pp("lm_head"), cfg.d_model, cfg.vocab_size, false)?,
            decoded: 0,
        })
    }

    /// Encodes `(batch, len)` token ids and resets the decoder's caches;
    /// `padding` (`(batch, 1, 1, len)`, added to the scores) masks padded positions.
    pub(crate) fn encode(
        &mut self,
        input_ids: &Tensor,
        padding: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.decoder.clear_cache();
        self.decoded = 0;
        let (_, len) = input_ids.dims2()?;
        let mut bias = self
            .encoder
            .position_bias(0, len, len, input_ids.device())?;
        if let Some(padding) = padding {
            bias = bias.broadcast_add(padding)?;
        }
        let mut xs = self.shared.forward(input_ids)?;
        for block in &self.encoder.blocks {
            let ys = block
                .self_attn
                .forward_full(&block.self_norm.forward(&xs)?, &bias)?;
            xs = block.ff.forward(&(xs + ys)?)?;
        }
        self.encoder.final_norm.forward(&xs)
    }

    /// Feeds one token per row, `(batch, 1)`, and returns the next token's
    /// logits `(batch, vocab)` as f32; `padding` as for [`T5::encode`].
    pub(crate) fn decode_step(
        &mut self,
        tokens: &Tensor,
        encoded: &Tensor,
        padding: Option<&Tensor>,
    ) -> Result<Tensor> {
        let position = self.decoded;
        let bias = self
            .decoder
            .position_bias(position, 1, position + 1, tokens.device())?;
        let mut xs = self.shared.forward(tokens)?;
        for block in &mut self.decoder.blocks {
            let ys = block
                .self_attn
                .forward_step(&block.self_norm.forward(&xs)?, &bias)?;
            xs = (xs + ys)?;
            let (cross, norm) = block
                .cross
                .as_mut()
                .expect("decoder blocks attend to the source");
            let ys = cross.forward_cross(&norm.forward(&xs)?, encoded, padding)?;
            xs = block.ff.forward(&(xs + ys)?)?;
        }
        self.decoded += 1;
        let xs = self.decoder.final_norm.forward(&xs)?;
        self.lm_head.forward(&xs)?.squeeze(1)?.to_dtype(DType::F32)
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_match_transformers() {
        // transformers' _relative_position_bucket, 32 buckets, max distance 128.
        let uni: Vec<u32> = [0, -1, -7, -8, -15, -16, -20, -40, -200, 3]
            .iter()
            .map(|&r| bucket(r, false, 32, 128))
            .collect();
        assert_eq!(uni, [0, 1, 7, 8, 15, 16, 17, 23, 31, 0]);
        let bi: Vec<u32> = [0, -1, 1, -7, -8, 8, -20, 200]
            .iter()
            .map(|&r| bucket(r, true, 32, 128))
            .collect();
        assert_eq!(bi, [0, 1, 17, 7, 8, 24, 10, 31]);
    }
}
