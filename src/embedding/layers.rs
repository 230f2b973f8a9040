//! Self-attention, as Chinese-CLIP's two towers share it, with its three
//! input projections as one product.

use candle_core::{DType, Module, Result, Tensor};

use crate::linear::Linear;

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
        let head_dim = out.d_in() / heads;
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
