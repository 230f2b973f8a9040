//! Self-attention, as Chinese-CLIP's two towers share it, with its three
//! input projections as one product.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::cpu_kernels::exp16;
use crate::cpu_kernels::{avx2_fma, avx512f, contiguous_f32, exp, SharedOutput};
use crate::linear::{Linear, ProductPrecision};

/// Multi-head self-attention with its output projection. Unlike candle's
/// Chinese-CLIP (and BERT) attention:
/// - the query, key and value projections are one product against their
///   weights side by side, the query's 1/√head_dim folded into its weights,
///   and the heads of all three are split in one copy (candle: three
///   products, three copies and a scaling pass over the scores);
/// - the weights come from the one-pass `softmax_last_dim` (candle's generic
///   softmax makes five passes over the scores);
/// - only the first `queries` positions need attend;
/// - on the CPU in f32, each head of each batch entry is one task ([`Attend`]):
///   its two products read the query, key and value where the projection
///   wrote them and write the head's columns of the output in place, its
///   softmax one pass over a row in the cache (candle: a copy to split the
///   heads, one product per head with both cores on a 197 × 197 × 64
///   problem, the softmax, and a copy to join the heads).
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
    /// is added to the scores. The projections' products in `precision`.
    pub(super) fn forward(
        &self,
        xs: &Tensor,
        mask: Option<&Tensor>,
        queries: usize,
        precision: ProductPrecision,
    ) -> Result<Tensor> {
        let (batch, len, _) = xs.dims3()?;
        let qkv = self.qkv.forward_in(xs, precision)?;
        let attended = if qkv.device().is_cpu() && qkv.dtype() == DType::F32 {
            let mask = match mask {
                Some(mask) => mask.reshape((batch, len))?,
                None => Tensor::zeros((batch, len), DType::F32, qkv.device())?,
            };
            qkv.apply_op2_no_bwd(
                &mask,
                &Attend {
                    heads: self.heads,
                    queries,
                },
            )?
        } else {
            self.attend_with_candle(&qkv, mask, queries)?
        };
        self.out.forward_in(&attended, precision)
    }

    /// Attention from the projections `(batch, len, 3 · hidden)` to the
    /// heads' outputs side by side, `(batch, queries, hidden)`, in candle's
    /// operations.
    fn attend_with_candle(
        &self,
        qkv: &Tensor,
        mask: Option<&Tensor>,
        queries: usize,
    ) -> Result<Tensor> {
        let (batch, len, width) = qkv.dims3()?;
        let hidden = width / 3;
        // (3, batch, heads, len, head_dim): query, key, value.
        let qkv = qkv
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
        weights
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, queries, hidden))
    }
}

/// Attention on the CPU in f32, from the projections `(batch, len,
/// 3 · hidden)` (the query already scaled) and the mask `(batch, len)` added
/// to each row of scores, to the heads' outputs side by side `(batch,
/// queries, hidden)`.
struct Attend {
    heads: usize,
    queries: usize,
}

impl CustomOp2 for Attend {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (batch, len, width) = l1.shape().dims3()?;
        let (hidden, heads, queries) = (width / 3, self.heads, self.queries);
        if width % (3 * heads) != 0 || l2.shape().dims2()? != (batch, len) || queries > len {
            candle_core::bail!(
                "attention of {queries} queries, {heads} heads over projections {:?}, mask {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let head_dim = hidden / heads;
        let qkv = contiguous_f32(s1, l1, "attention")?;
        let mask = contiguous_f32(s2, l2, "attention's mask")?;
        let mut out = vec![0f32; batch * queries * hidden];
        let shared = &SharedOutput(out.as_mut_ptr());
        (0..batch * heads).into_par_iter().for_each(|task| {
            let (b, h) = (task / heads, task % heads);
            let q = qkv[b * len * width + h * head_dim..].as_ptr();
            // SAFETY: the key's and value's columns of this head lie `hidden`
            // and `2 · hidden` after the query's, within each row.
            let (k, v) = unsafe { (q.add(hidden), q.add(2 * hidden)) };
            let mut scores = vec![0f32; queries * len];
            // SAFETY (both products): the operands' rows stride through
            // `qkv` (`len` rows of `width`), the scores are `queries × len`,
            // and this task alone writes its head's columns of its entry's
            // rows of `out`, `(batch, queries, hidden)`.
            unsafe {
                // scores = q · kᵀ
                gemm::gemm(
                    queries,
                    len,
                    head_dim,
                    scores.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    q,
                    1,
                    width as isize,
                    k,
                    width as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            softmax_rows(&mut scores, &mask[b * len..][..len]);
            unsafe {
                // out = weights · v
                gemm::gemm(
                    queries,
                    head_dim,
                    len,
                    shared.0.add(b * queries * hidden + h * head_dim),
                    1,
                    hidden as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    len as isize,
                    v,
                    1,
                    width as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((batch, queries, hidden))))
    }
}

/// Each row of `scores` (rows as long as `mask`) becomes
/// `softmax(row + mask)`.
fn softmax_rows(scores: &mut [f32], mask: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512f() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { softmax_rows_avx512(scores, mask) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { softmax_rows_avx2(scores, mask) };
    }
    softmax_rows_portable(scores, mask)
}

/// [`softmax_rows_portable`]'s bits, its exponentials 16 at a time (the
/// compiler keeps them at 8, the width of the sums): the sums still take
/// each row's elements in order, eight partial sums, the upper half of each
/// 16 after the lower.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_rows_avx512(scores: &mut [f32], mask: &[f32]) {
    use std::arch::x86_64::*;
    const _: () = assert!(LANES == 8);
    let len = mask.len();
    let whole = len - len % 16;
    for row in scores.chunks_exact_mut(len) {
        let at = row.as_mut_ptr();
        let mut tops = _mm512_set1_ps(f32::MIN);
        for i in (0..whole).step_by(16) {
            let s = _mm512_add_ps(
                _mm512_loadu_ps(at.add(i)),
                _mm512_loadu_ps(mask.as_ptr().add(i)),
            );
            _mm512_storeu_ps(at.add(i), s);
            tops = _mm512_max_ps(tops, s);
        }
        // The largest is the largest in any order.
        let mut top = _mm512_reduce_max_ps(tops);
        for i in whole..len {
            row[i] += mask[i];
            top = top.max(row[i]);
        }
        let at = row.as_mut_ptr();
        let mut lower = _mm256_setzero_ps();
        for i in (0..whole).step_by(16) {
            let e = exp16(_mm512_sub_ps(
                _mm512_loadu_ps(at.add(i)),
                _mm512_set1_ps(top),
            ));
            _mm512_storeu_ps(at.add(i), e);
            lower = _mm256_add_ps(lower, _mm512_castps512_ps256(e));
            let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e)));
            lower = _mm256_add_ps(lower, upper);
        }
        let mut sums = [0f32; LANES];
        _mm256_storeu_ps(sums.as_mut_ptr(), lower);
        for i in whole..len {
            row[i] = exp(row[i] - top);
            sums[i % LANES] += row[i];
        }
        let scale = 1.0 / sums.iter().sum::<f32>();
        let at = row.as_mut_ptr();
        for i in (0..whole).step_by(16) {
            let scaled = _mm512_mul_ps(_mm512_loadu_ps(at.add(i)), _mm512_set1_ps(scale));
            _mm512_storeu_ps(at.add(i), scaled);
        }
        for s in &mut row[whole..] {
            *s *= scale;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(scores: &mut [f32], mask: &[f32]) {
    softmax_rows_portable(scores, mask)
}

/// Lanes of the running maximum and sum: eight partial results, so that the
/// compiler may keep them in one vector.
const LANES: usize = 8;

#[inline(always)]
fn softmax_rows_portable(scores: &mut [f32], mask: &[f32]) {
    for row in scores.chunks_exact_mut(mask.len()) {
        let mut top = [f32::MIN; LANES];
        for (i, (s, &m)) in row.iter_mut().zip(mask).enumerate() {
            *s += m;
            top[i % LANES] = top[i % LANES].max(*s);
        }
        let top = top.iter().copied().fold(f32::MIN, f32::max);
        let mut sums = [0f32; LANES];
        for (i, s) in row.iter_mut().enumerate() {
            *s = exp(*s - top);
            sums[i % LANES] += *s;
        }
        let scale = 1.0 / sums.iter().sum::<f32>();
        for s in row.iter_mut() {
            *s *= scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use candle_nn::VarBuilder;

    use super::*;

    fn projection(d: usize, device: &Device) -> Linear {
        let tensors = [
            ("weight", Tensor::randn(0f32, 1.0, (d, d), device).unwrap()),
            ("bias", Tensor::randn(0f32, 1.0, d, device).unwrap()),
        ]
        .map(|(name, t)| (name.to_string(), t))
        .into_iter()
        .collect();
        Linear::load(
            VarBuilder::from_tensors(tensors, DType::F32, device),
            d,
            d,
            true,
        )
        .unwrap()
    }

    /// Where the CPU has AVX-512, its softmax gives the portable one's bits:
    /// rows shorter and longer than 16, with and without masked positions.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_softmax_gives_the_portable_bits() {
        if !avx512f() {
            eprintln!("no AVX-512 here: one softmax, nothing to compare");
            return;
        }
        for len in (1..=40).chain([197, 203]) {
            let rows = 3;
            let scores: Vec<f32> = Tensor::randn(0f32, 4.0, rows * len, &Device::Cpu)
                .unwrap()
                .to_vec1()
                .unwrap();
            let mask: Vec<f32> = (0..len)
                .map(|i| if i % 7 == 3 { f32::MIN } else { 0.0 })
                .collect();
            let (mut portable, mut avx512) = (scores.clone(), scores);
            softmax_rows_portable(&mut portable, &mask);
            // SAFETY: the CPU has AVX-512F.
            unsafe { softmax_rows_avx512(&mut avx512, &mask) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&avx512), bits(&portable), "rows of {len}");
        }
    }

    /// The CPU's attention kernel gives candle's attention to within float
    /// rounding: with and without a mask (padding at f32's lowest, as the
    /// text tower's), all queries or only the first, one head or several.
    #[test]
    fn attention_kernel_matches_candle() {
        let device = Device::Cpu;
        for (heads, hidden, len) in [(3, 24, 11), (1, 8, 5), (4, 64, 40)] {
            let attention = SelfAttention::new(
                [0, 1, 2].map(|_| projection(hidden, &device)),
                projection(hidden, &device),
                heads,
            )
            .unwrap();
            let batch = 2;
            let qkv = Tensor::randn(0f32, 2.0, (batch, len, 3 * hidden), &device).unwrap();
            let padding: Vec<f32> = (0..batch * len)
                .map(|i| {
                    if i % len >= len - i / len * 2 {
                        f32::MIN
                    } else {
                        0.0
                    }
                })
                .collect();
            let padding = Tensor::from_vec(padding, (batch, 1, 1, len), &device).unwrap();
            for mask in [None, Some(&padding)] {
                for queries in [len, 1] {
                    let want = attention.attend_with_candle(&qkv, mask, queries).unwrap();
                    let mask2 = match mask {
                        Some(m) => m.reshape((batch, len)).unwrap(),
                        None => Tensor::zeros((batch, len), DType::F32, &device).unwrap(),
                    };
                    let got = qkv
                        .apply_op2_no_bwd(&mask2, &Attend { heads, queries })
                        .unwrap();
                    assert_eq!(got.dims(), &[batch, queries, hidden]);
                    let diff: f32 = (got - want)
                        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar())
                        .unwrap();
                    assert!(
                        diff < 1e-5,
                        "{heads} heads, {len} long, {queries} queries, mask {}: off by {diff}",
                        mask.is_some()
                    );
                }
            }
        }
    }
}
