//! The dense layer the poet's T5 and Chinese-CLIP share.
//!
//! Its weight is held once, in the layout its products want:
//! - `Wᵀ`, contiguous, for gemm (Chinese-CLIP): `x · Wᵀ` reads a row-major
//!   matrix, where gemm would pack a transposed right-hand side afresh on
//!   every call; this layout cut Chinese-CLIP's products by a third to a half
//!   (a 197 × 3072 × 768 product: 13.2 ms → 5.6 ms on two cores). All rows of
//!   a batch go through as one `(rows, in)` matrix, where candle's `Linear`
//!   broadcasts the weight over the batch and repacks it for every row (8×
//!   the work at a batch of 8).
//! - panels of 16 columns (`Wᵀ[:, 16s..16s+16]` one after another), for the
//!   poet's T5 on CPUs with AVX2 and FMA ([`Linear::load_panels`]): its
//!   decoder's products have a row per candidate, and gemm packs the whole
//!   weight into a scratch copy on every call, which with a few rows is most
//!   of the work (the decoder's 67 MB of weights leave the cache between
//!   steps, so each step read them twice and wrote them once). A kernel of
//!   our own reads the panels where they lie. The encoder's products (a row
//!   per source character) measured even with gemm's, so the T5 holds one
//!   layout.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// Columns in a panel: two AVX vectors.
const PANEL: usize = 16;
/// Parallel tasks per thread in a product: two, so that a thread that
/// finishes early takes another (a product of 24 panels in tasks of 8 had
/// split 2:1 over two cores).
const TASKS_PER_THREAD: usize = 2;

enum Weight {
    /// `Wᵀ`, `(in, out)`, contiguous.
    Transposed(Tensor),
    /// `(⌈out / 16⌉, in, 16)`: panel `s` holds `Wᵀ`'s columns `16s..16s+16`,
    /// the last one padded with zeros.
    Panels { panels: Tensor, d_out: usize },
}

/// A dense layer `x · Wᵀ + b` over the last dimension, the leading ones
/// flattened into the rows of one product.
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    pub(crate) fn load(vb: VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: Weight::Transposed(weight_t(&vb, d_in, d_out)?),
            bias: bias.then(|| vb.get(d_out, "bias")).transpose()?,
        })
    }

    /// A layer held in panels for the kernel of our own, where it runs (a CPU
    /// with AVX2 and FMA, f32); elsewhere as [`Linear::load`].
    pub(crate) fn load_panels(
        vb: VarBuilder,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight_t = weight_t(&vb, d_in, d_out)?;
        let weight = if weight_t.device().is_cpu()
            && weight_t.dtype() == DType::F32
            && panel_kernel_runs()
        {
            let strips = d_out.div_ceil(PANEL);
            let panels = weight_t
                .pad_with_zeros(1, 0, strips * PANEL - d_out)?
                .reshape((d_in, strips, PANEL))?
                .transpose(0, 1)?
                .contiguous()?;
            Weight::Panels { panels, d_out }
        } else {
            Weight::Transposed(weight_t)
        };
        Ok(Self {
            weight,
            bias: bias.then(|| vb.get(d_out, "bias")).transpose()?,
        })
    }

    /// The width of its input.
    pub(crate) fn d_in(&self) -> usize {
        match &self.weight {
            Weight::Transposed(weight_t) => weight_t.dims()[0],
            Weight::Panels { panels, .. } => panels.dims()[1],
        }
    }

    /// The layers' `Wᵀ` side by side, `(in, Σ out)`, and their biases end to
    /// end, each layer's part multiplied by its factor. Layers loaded with
    /// [`Linear::load`].
    pub(crate) fn side_by_side(layers: &[(Linear, f64)]) -> Result<Self> {
        let scaled = |t: &Tensor, factor: f64| {
            if factor == 1.0 {
                Ok(t.clone())
            } else {
                t.affine(factor, 0.0)
            }
        };
        let weights = layers
            .iter()
            .map(|(l, f)| match &l.weight {
                Weight::Transposed(weight_t) => scaled(weight_t, *f),
                Weight::Panels { .. } => candle_core::bail!("layers in panels side by side"),
            })
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
            weight: Weight::Transposed(Tensor::cat(&weights, 1)?),
            bias,
        })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut dims = xs.dims().to_vec();
        let d_in = dims.pop().unwrap_or(1);
        let rows: usize = dims.iter().product();
        let xs = xs.reshape((rows, d_in))?;
        let (mut out, d_out) = match &self.weight {
            Weight::Transposed(weight_t) => (xs.matmul(weight_t)?, weight_t.dim(1)?),
            Weight::Panels { panels, d_out } => (
                xs.contiguous()?
                    .apply_op2_no_bwd(panels, &PanelProduct { d_out: *d_out })?,
                *d_out,
            ),
        };
        if let Some(bias) = &self.bias {
            out = out.broadcast_add(bias)?;
        }
        dims.push(d_out);
        out.reshape(dims)
    }
}

/// `Wᵀ`, `(in, out)`, contiguous, from the checkpoint's `weight` `(out, in)`.
fn weight_t(vb: &VarBuilder, d_in: usize, d_out: usize) -> Result<Tensor> {
    vb.get((d_out, d_in), "weight")?.t()?.contiguous()
}

fn panel_kernel_runs() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `x · Wᵀ` for a contiguous `x` `(rows, in)` and `Wᵀ` in panels.
struct PanelProduct {
    d_out: usize,
}

impl CustomOp2 for PanelProduct {
    fn name(&self) -> &'static str {
        "panel-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, d_in) = l1.shape().dims2()?;
        let (strips, panel_in, width) = l2.shape().dims3()?;
        if (strips, panel_in, width) != (self.d_out.div_ceil(PANEL), d_in, PANEL) || d_in == 0 {
            candle_core::bail!(
                "({rows}, {d_in}) times {strips} panels ({panel_in}, {width}) for {} outputs",
                self.d_out
            );
        }
        if rows == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from((0, self.d_out))));
        }
        let (x, panels) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        // Each task writes the block of its panels' columns, `(rows, 16 · panels)`;
        // the blocks are then laid side by side.
        let per_task = strips.div_ceil(TASKS_PER_THREAD * rayon::current_num_threads());
        let task_len = rows * PANEL * per_task;
        let mut blocks = vec![0f32; rows * PANEL * strips];
        blocks
            .par_chunks_mut(task_len)
            .zip(panels.par_chunks(d_in * PANEL * per_task))
            .for_each(|(block, panels)| multiply_panels(x, rows, d_in, panels, block));
        let mut out = vec![0f32; rows * self.d_out];
        for (task, block) in blocks.chunks(task_len).enumerate() {
            let width = block.len() / rows;
            let first = task * PANEL * per_task;
            let kept = width.min(self.d_out - first);
            for (r, part) in block.chunks(width).enumerate() {
                out[r * self.d_out + first..][..kept].copy_from_slice(&part[..kept]);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, self.d_out))))
    }
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("panel product of a strided or non-f32 tensor"),
    }
}

/// `block = x · [panels side by side]`, `(rows, 16 · panels)`.
fn multiply_panels(x: &[f32], rows: usize, d_in: usize, panels: &[f32], block: &mut [f32]) {
    let count = panels.len() / (d_in * PANEL);
    assert!(x.len() == rows * d_in && panels.len() == count * d_in * PANEL);
    assert!(block.len() == rows * PANEL * count);
    #[cfg(target_arch = "x86_64")]
    if panel_kernel_runs() {
        // SAFETY: the CPU has AVX2 and FMA; the lengths were checked above.
        unsafe { avx2::multiply_panels(x, rows, d_in, panels, count, block) };
        return;
    }
    unreachable!("panels are built only where their kernel runs");
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::PANEL;

    // The tile holds a panel's row in two 8-float vectors.
    const _: () = assert!(PANEL == 16);

    /// Rows taken through all of a task's panels before the next rows: 96
    /// rows of 384 inputs are 144 KiB, which stay in a core's L2.
    const ROWS_PER_BLOCK: usize = 96;

    /// [`super::multiply_panels`].
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `x` holds `rows × d_in`, `panels`
    /// `count × d_in × 16`, `block` `rows × 16·count`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn multiply_panels(
        x: &[f32],
        rows: usize,
        d_in: usize,
        panels: &[f32],
        count: usize,
        block: &mut [f32],
    ) {
        let width = PANEL * count;
        // A block of rows stays in the cache while it goes through every panel.
        for first in (0..rows).step_by(ROWS_PER_BLOCK) {
            let end = (first + ROWS_PER_BLOCK).min(rows);
            for s in 0..count {
                let panel = panels.as_ptr().add(s * d_in * PANEL);
                let mut r = first;
                while r < end {
                    let tile = match end - r {
                        1 => tile::<1>,
                        2 => tile::<2>,
                        3 => tile::<3>,
                        4 => tile::<4>,
                        5 => tile::<5>,
                        _ => tile::<6>,
                    };
                    tile(
                        x.as_ptr().add(r * d_in),
                        d_in,
                        panel,
                        block.as_mut_ptr().add(r * width + s * PANEL),
                        width,
                    );
                    r += (end - r).min(6);
                }
            }
        }
    }

    /// `ROWS` rows of `x` times one panel, the sums held in registers
    /// (12 of the 16 at six rows): each step loads the panel's 16 weights
    /// once and uses them for every row.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const ROWS: usize>(
        x: *const f32,
        d_in: usize,
        panel: *const f32,
        out: *mut f32,
        width: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
        for p in 0..d_in {
            let w0 = _mm256_loadu_ps(panel.add(p * PANEL));
            let w1 = _mm256_loadu_ps(panel.add(p * PANEL + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = _mm256_set1_ps(*x.add(r * d_in + p));
                acc[0] = _mm256_fmadd_ps(xv, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(xv, w1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * width), acc[0]);
            _mm256_storeu_ps(out.add(r * width + 8), acc[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use candle_nn::VarBuilder;

    use super::*;

    /// A layer in panels gives gemm's product (with its bias) to within float
    /// rounding: row counts on both sides of a tile and of a block of rows, column counts that are
    /// and are not multiples of a panel or of a task's share, leading dims kept.
    #[test]
    fn panel_product_matches_gemm() {
        if !panel_kernel_runs() {
            eprintln!("no AVX2 and FMA here: layers stay in Wᵀ, nothing to compare");
            return;
        }
        let device = Device::Cpu;
        for (d_in, d_out) in [(384, 1024), (37, 300), (5, 7), (64, 129)] {
            let mut tensors = std::collections::HashMap::new();
            tensors.insert(
                "weight".to_string(),
                Tensor::randn(0f32, 1.0, (d_out, d_in), &device).unwrap(),
            );
            tensors.insert(
                "bias".to_string(),
                Tensor::randn(0f32, 1.0, d_out, &device).unwrap(),
            );
            let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
            let plain = Linear::load(vb.clone(), d_in, d_out, true).unwrap();
            let panels = Linear::load_panels(vb, d_in, d_out, true).unwrap();
            assert!(matches!(panels.weight, Weight::Panels { .. }));
            assert_eq!(panels.d_in(), d_in);
            for rows in [0, 1, 2, 5, 6, 7, 8, 13, 64, 200] {
                let xs = Tensor::randn(0f32, 1.0, (rows, 1, d_in), &device).unwrap();
                let got = panels.forward(&xs).unwrap();
                assert_eq!(got.dims(), &[rows, 1, d_out]);
                if rows == 0 {
                    continue;
                }
                let want = plain.forward(&xs).unwrap();
                let diff: f32 = (got - want)
                    .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar())
                    .unwrap();
                assert!(
                    diff < 1e-4,
                    "({rows}, {d_in}) × ({d_in}, {d_out}): off by {diff}"
                );
            }
        }
    }
}
