//! The layers Chinese-CLIP's two towers share: a dense layer that multiplies
//! all rows as one matrix, and self-attention with its three input
//! projections as one product.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// A dense layer `x · Wᵀ + b` over the last dimension, the leading ones
/// flattened into the rows of one product.
pub(super) struct Linear {
    /// `Wᵀ`, `(in, out)`: contiguous on the CPU, where the weights are handed
    /// out as transposed views of a contiguous `Wᵀ`.
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub(super) fn load(vb: VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight_t: vb.get((d_out, d_in), "weight")?.t()?,
            bias: bias.then(|| vb.get(d_out, "bias")).transpose()?,
        })
    }

    /// The layers' `Wᵀ` side by side, `(in, Σ out)`, and their biases end to
    /// end, each layer's part multiplied by its factor.
    fn side_by_side(layers: &[(Linear, f64)]) -> Result<Self> {
        let scaled = |t: &Tensor, factor: f64| {
            if factor == 1.0 {
                Ok(t.clone())
            } else {
                t.affine(factor, 0.0)
            }
        };
        let weights = layers
            .iter()
            .map(|(l, f)| scaled(&l.weight_t, *f))
            .collect::<Result<Vec<_>>>()?;
        let biases = layers
            .iter()
            .filter_map(|(l, f)| l.bias.as_ref().map(|b| scaled(b, *f)))
            .collect::<Result<Vec<_>>>()?;
        let bias = match biases.len() {
            0 => None,
            n if n == layers.len() => Some(Tensor::cat(&biases, 0)?),
            _ => candle_core::bail!("layers side by side either all have biases or none"),
        };
        Ok(Self {
            weight_t: Tensor::cat(&weights, 1)?,
            bias,
        })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut dims = xs.dims().to_vec();
        let d_in = dims.pop().unwrap_or(1);
        let rows: usize = dims.iter().product();
        let mut out = xs.reshape((rows, d_in))?.matmul(&self.weight_t)?;
        if let Some(bias) = &self.bias {
            out = out.broadcast_add(bias)?;
        }
        dims.push(self.weight_t.dim(1)?);
        out.reshape(dims)
    }
}

/// Multi-head self-attention with its output projection. Unlike candle's
/// Chinese-CLIP (and BERT) attention:
/// - the query, key and value projections are one product against their
///   weights side by side, the query's 1/√head_dim folded into its weights,
///   and the heads of all three are split in one copy (candle: three
///   products, three copies and a scaling pass over the scores);
/// - the weights come from the one-pass `softmax_last_dim` (candle's generic
///   softmax makes five passes over the scores);
/// - only the first `queries` positions need attend.
pub(super) struct SelfAttention {
    /// Query (scaled), key and value projections side by side.
    qkv: Linear,
    out: Linear,
    heads: usize,
}

impl SelfAttention {
    /// From the query, key and value projections, in that order.
    pub(super) fn new(qkv: [Linear; 3], out: Linear, heads: usize) -> Result<Self> {
        let head_dim = out.weight_t.dim(0)? / heads;
        let [q, k, v] = qkv;
        Ok(Self {
            qkv: Linear::side_by_side(&[(q, (head_dim as f64).powf(-0.5)), (k, 1.0), (v, 1.0)])?,
            out,
            heads,
        })
    }

    /// `(batch, len, hidden)` → `(batch, queries, hidden)`: the first
    /// `queries` positions attend to all; `mask`, f32 `(batch, 1, 1, len)`,
    /// is added to the scores.
    pub(super) fn forward(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        queries: usize,
    ) -> Result<Tensor> {
        let (batch, len, hidden) = xs.dims3()?;
        // (3, batch, heads, len, head_dim): query, key, value.
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((batch, len, 3, self.heads, hidden / self.heads))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let q = qkv.get(0)?.narrow(2, 0, queries)?;
        let (k, v) = (qkv.get(1)?, qkv.get(2)?);
        let scores = q.matmul(&k.t()?)?;
        // The softmax in f32 whatever the dtype, as transformers computes it.
        let mut scores32 = scores.to_dtype(DType::F32)?;
        if let Some(mask) = mask {
            scores32 = scores32.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores32)?.to_dtype(scores.dtype())?;
        let attended = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, queries, hidden))?;
        self.out.forward(&attended)
    }
}
