//! The dense layer the poet's T5 and Chinese-CLIP share.
//!
//! Its weight is held once, in the layout its products want. All rows of a
//! batch go through as one `(rows, in)` matrix, where candle's `Linear`
//! broadcasts the weight over the batch and repacks it for every row (8× the
//! work at a batch of 8).
//! - On CPUs with AVX2 and FMA, for weights in f32: panels of 16 columns
//!   (`Wᵀ[:, 16s..16s+16]` one after another), which a kernel of our own
//!   reads where they lie. gemm packs its right-hand side into a scratch
//!   copy on every call: with the poet's decoder (a row per candidate) that
//!   packing was most of the work, as its 67 MB of weights leave the cache
//!   between steps, so each step read them twice and wrote them once. On
//!   Chinese-CLIP's products (197 to 1,576 rows) the kernel measured even
//!   with gemm or a little ahead, so both models hold one layout. Where
//!   the CPU has AVX-512 a kernel of vectors twice as wide takes over, with
//!   the same sums to the bit. A layer whose every weight is a bf16 value
//!   (the poet's checkpoint is saved in bf16) holds its panels in bf16:
//!   half the bytes to read and hold, the same sums, in either kernel.
//! - Elsewhere (a GPU, a model loaded in bf16, other CPUs): `Wᵀ`,
//!   contiguous, for gemm, where
//!   `x · Wᵀ` of the checkpoint's `W` would pack a transposed matrix afresh
//!   on every call.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Result, Shape, Storage, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::cpu_kernels::{avx2_fma, avx512f, contiguous_f32, written_whole, SharedOutput};

#[cfg(target_arch = "x86_64")]
mod amx;

/// Columns in a panel: two AVX2 vectors, one AVX-512 vector.
const PANEL: usize = 16;
/// Parallel tasks per thread in a product: two, so that a thread that
/// finishes early takes another (a product of 24 panels in tasks of 8 had
/// split 2:1 over two cores).
const TASKS_PER_THREAD: usize = 2;

enum Weight {
    /// `Wᵀ`, `(in, out)`, contiguous.
    Transposed(Tensor),
    /// Panel `s` holds `Wᵀ`'s columns `16s..16s+16`, the last one padded
    /// with zeros: in f32, `(⌈out / 16⌉, in, 16)`; in bf16 (where every
    /// weight is a bf16 value, as in a checkpoint saved in bf16),
    /// `(⌈out / 16⌉, ⌈in / 2⌉, 16, 2)`, inputs `2i` and `2i + 1` of a column
    /// side by side in one 32-bit word, the last input of an odd `in` paired
    /// with a zero.
    Panels {
        panels: Tensor,
        d_in: usize,
        d_out: usize,
    },
}

/// How exactly a pass's matrix products are taken on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductPrecision {
    /// Inputs and weights in f32, as the reference.
    F32,
    /// Inputs and f32 weights rounded to bf16, the sums in f32, on AMX
    /// tiles where the CPU has them (Intel Xeons since Sapphire Rapids):
    /// about twice as fast on large products; each input and weight off by
    /// up to 2⁻⁸ of itself. Elsewhere, and for weights held in bf16
    /// panels or for gemm, [`ProductPrecision::F32`] to the bit.
    Bf16OnTiles,
}

impl ProductPrecision {
    /// Whether products asked for in this precision are taken in it on
    /// this machine's CPU: f32 always, bf16 where it has AMX tiles (for
    /// layers in f32 panels; others stay in f32).
    pub fn runs_here(self) -> bool {
        match self {
            Self::F32 => true,
            #[cfg(target_arch = "x86_64")]
            Self::Bf16OnTiles => amx::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Self::Bf16OnTiles => false,
        }
    }
}

/// The kernels this CPU's products run on, in words for the log at start:
/// which panel kernel (or gemm), and whether the `*_bf16` settings' products
/// go to AMX tiles or stay in f32, and why.
pub fn kernels_in_use() -> String {
    let panels = if !avx2_fma() {
        "gemm (no AVX2 and FMA: layers stay in Wᵀ)"
    } else if avx512f() {
        "panels on the AVX-512 kernel"
    } else if crate::cpu_kernels::avx512_held_back() {
        "panels on the AVX2 kernel (AVX-512 held back by YINGSHI_CPU_CAPABILITY)"
    } else {
        "panels on the AVX2 kernel"
    };
    #[cfg(target_arch = "x86_64")]
    let tiles = amx::unavailable_because();
    #[cfg(not(target_arch = "x86_64"))]
    let tiles = Some("not an x86-64 CPU");
    match tiles {
        None => format!("{panels}; *_bf16 products on AMX tiles"),
        Some(why) => format!("{panels}; no AMX tiles ({why}): *_bf16 products in f32"),
    }
}

/// A dense layer `x · Wᵀ + b` over the last dimension, the leading ones
/// flattened into the rows of one product.
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Weight {
    /// The checkpoint's `W` `(out, in)` in the layout its products want:
    /// panels for the kernels of our own where they run (a CPU with AVX2 and
    /// FMA, f32), `Wᵀ` for gemm elsewhere. Either is one copy of `W`; panels
    /// in bf16 half of one, with the same products to the bit, as each
    /// weight converts back to the same f32.
    fn new(weight: &Tensor) -> Result<Self> {
        if !(weight.device().is_cpu() && weight.dtype() == DType::F32 && avx2_fma()) {
            return Ok(Self::Transposed(weight.t()?.contiguous()?));
        }
        let (d_out, d_in) = weight.dims2()?;
        let panels = f32_panels(weight)?;
        let panels = if all_bf16(&panels)? {
            panels
                .pad_with_zeros(1, 0, d_in % 2)?
                .reshape((panels.dim(0)?, d_in.div_ceil(2), 2, PANEL))?
                .to_dtype(DType::BF16)?
                .transpose(2, 3)?
                .contiguous()?
        } else {
            panels
        };
        Ok(Self::Panels {
            panels,
            d_in,
            d_out,
        })
    }

    /// `W`, `(out, in)`, in f32.
    fn weight(&self) -> Result<Tensor> {
        match self {
            Self::Transposed(weight_t) => weight_t.t(),
            Self::Panels {
                panels,
                d_in,
                d_out,
            } => {
                let strips = panels.dim(0)?;
                let panels = match panels.dtype() {
                    DType::BF16 => panels
                        .to_dtype(DType::F32)?
                        .transpose(2, 3)?
                        .reshape((strips, d_in.next_multiple_of(2), PANEL))?
                        .narrow(1, 0, *d_in)?,
                    _ => panels.clone(),
                };
                panels
                    .transpose(1, 2)?
                    .reshape((strips * PANEL, *d_in))?
                    .narrow(0, 0, *d_out)
            }
        }
    }
}

/// `W` `(out, in)` in f32 panels ([`Weight::Panels`]).
fn f32_panels(weight: &Tensor) -> Result<Tensor> {
    let (d_out, d_in) = weight.dims2()?;
    let strips = d_out.div_ceil(PANEL);
    weight
        .pad_with_zeros(0, 0, strips * PANEL - d_out)?
        .reshape((strips, PANEL, d_in))?
        .transpose(1, 2)?
        .contiguous()
}

/// Whether every element of a contiguous f32 tensor is a bf16 value (its low
/// 16 bits zero), so that bf16 holds it exactly.
fn all_bf16(t: &Tensor) -> Result<bool> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(storage) = &*storage else {
        return Ok(false);
    };
    let values = contiguous_f32(storage, layout, "the bf16 check")?;
    Ok(values.iter().all(|v| v.to_bits() & 0xffff == 0))
}

impl Linear {
    pub(crate) fn load(vb: VarBuilder, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            weight: Weight::new(&vb.get((d_out, d_in), "weight")?)?,
            bias: bias.then(|| vb.get(d_out, "bias")).transpose()?,
        })
    }

    /// The width of its input.
    pub(crate) fn d_in(&self) -> usize {
        match &self.weight {
            Weight::Transposed(weight_t) => weight_t.dims()[0],
            Weight::Panels { d_in, .. } => *d_in,
        }
    }

    /// One layer from several side by side: their `W` in one `(Σ out, in)`
    /// and their biases end to end, each layer's part multiplied by its
    /// factor.
    pub(crate) fn side_by_side(layers: &[(Linear, f64)]) -> Result<Self> {
        let scaled = |t: Tensor, factor: f64| {
            if factor == 1.0 {
                Ok(t)
            } else {
                t.affine(factor, 0.0)
            }
        };
        let weights = layers
            .iter()
            .map(|(l, f)| scaled(l.weight.weight()?, *f))
            .collect::<Result<Vec<_>>>()?;
        let biases = layers
            .iter()
            .filter_map(|(l, f)| l.bias.as_ref().map(|b| scaled(b.clone(), *f)))
            .collect::<Result<Vec<_>>>()?;
        let bias = match biases.len() {
            0 => None,
            n if n == layers.len() => Some(Tensor::cat(&biases, 0)?),
            _ => candle_core::bail!("layers side by side either all have biases or none"),
        };
        Ok(Self {
            weight: Weight::new(&Tensor::cat(&weights, 0)?)?,
            bias,
        })
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_in(xs, ProductPrecision::F32)
    }
}

impl Linear {
    /// [`Module::forward`] with its product taken in `precision`.
    pub(crate) fn forward_in(&self, xs: &Tensor, precision: ProductPrecision) -> Result<Tensor> {
        let mut dims = xs.dims().to_vec();
        let d_in = dims.pop().unwrap_or(1);
        let rows: usize = dims.iter().product();
        let xs = xs.reshape((rows, d_in))?;
        // The panel kernel adds the bias as it stores the sums; after the
        // other products it is a pass of its own.
        let with_bias = |out: Tensor| match &self.bias {
            Some(bias) => out.broadcast_add(bias),
            None => Ok(out),
        };
        let (out, d_out) = match &self.weight {
            Weight::Transposed(weight_t) => (with_bias(xs.matmul(weight_t)?)?, weight_t.dim(1)?),
            Weight::Panels {
                panels,
                d_in: weight_d_in,
                d_out,
            } if precision == ProductPrecision::Bf16OnTiles
                && panels.dtype() == DType::F32
                && precision.runs_here() =>
            {
                let product = TileProduct {
                    d_in: *weight_d_in,
                    d_out: *d_out,
                };
                (
                    with_bias(xs.contiguous()?.apply_op2_no_bwd(panels, &product)?)?,
                    *d_out,
                )
            }
            Weight::Panels {
                panels,
                d_in: weight_d_in,
                d_out,
            } => {
                // Panels are built only for f32 weights on the CPU, and
                // the bias is loaded beside the weight.
                let bias = self.bias.as_ref().map(Tensor::storage_and_layout);
                let bias = match &bias {
                    Some((storage, layout)) => match &**storage {
                        Storage::Cpu(storage) => {
                            Some(contiguous_f32(storage, layout, "panel product's bias")?)
                        }
                        _ => candle_core::bail!("a bias off the CPU for panels on it"),
                    },
                    None => None,
                };
                let product = PanelProduct {
                    d_in: *weight_d_in,
                    d_out: *d_out,
                    bias,
                };
                (xs.contiguous()?.apply_op2_no_bwd(panels, &product)?, *d_out)
            }
        };
        dims.push(d_out);
        out.reshape(dims)
    }
}

/// Runs `task(first, count)` over a product's `strips` panels on the pool's
/// threads, two tasks a thread. Each task's count is even (the last task's
/// may be what is left), so that none ends on a lone panel where the
/// AVX-512 kernel and the tiles take two.
fn in_panel_tasks(strips: usize, task: impl Fn(usize, usize) + Sync) {
    // A layer of no outputs has no panels and no work (and 0 tasks of 0
    // panels would divide by zero below).
    if strips == 0 {
        return;
    }
    let per_task = strips
        .div_ceil(TASKS_PER_THREAD * rayon::current_num_threads())
        .next_multiple_of(2);
    (0..strips.div_ceil(per_task))
        .into_par_iter()
        .for_each(|t| task(t * per_task, per_task.min(strips - t * per_task)));
}

/// Refuses `x` of `(rows, width)` unless its width is the layer's `d_in`
/// (not 0), and panels not of `shape`. The width is checked on its own:
/// bf16 panels hold inputs in pairs, so their shape alone would let an
/// input one column short of an even `d_in`, or past an odd one, through.
fn check_panels(
    panels: &Layout,
    shape: &Shape,
    (rows, width): (usize, usize),
    (d_in, d_out): (usize, usize),
) -> Result<()> {
    if width != d_in || panels.shape() != shape || d_in == 0 {
        candle_core::bail!(
            "({rows}, {width}) times panels {:?} of {d_in} inputs for {d_out} outputs",
            panels.shape(),
        );
    }
    Ok(())
}

/// `x · Wᵀ + b` for a contiguous `x` `(rows, in)`, `Wᵀ` in panels and the
/// bias `b`, if any, added as the sums are stored (the same bits as adding
/// it after, without another pass over the output).
struct PanelProduct<'a> {
    d_in: usize,
    d_out: usize,
    bias: Option<&'a [f32]>,
}

impl CustomOp2 for PanelProduct<'_> {
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
        let strips = self.d_out.div_ceil(PANEL);
        let panels_shape: Shape = match s2 {
            CpuStorage::BF16(_) => (strips, d_in.div_ceil(2), PANEL, 2).into(),
            _ => (strips, d_in, PANEL).into(),
        };
        check_panels(l2, &panels_shape, (rows, d_in), (self.d_in, self.d_out))?;
        if self.bias.is_some_and(|b| b.len() != self.d_out) {
            candle_core::bail!(
                "a bias of {} for {} outputs",
                self.bias.map_or(0, <[f32]>::len),
                self.d_out
            );
        }
        if rows == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from((0, self.d_out))));
        }
        let x = contiguous_f32(s1, l1, "panel product")?;
        let panels = match (s2, l2.contiguous_offsets()) {
            (CpuStorage::BF16(data), Some((start, end))) => {
                let data = &data[start..end];
                // SAFETY: bf16 is a u16 in memory (`repr(transparent)`).
                PanelElements::Bf16(unsafe {
                    std::slice::from_raw_parts(data.as_ptr().cast(), data.len())
                })
            }
            (CpuStorage::BF16(_), None) => candle_core::bail!("panel product of strided panels"),
            _ => PanelElements::F32(contiguous_f32(s2, l2, "panel product's weight")?),
        };
        let write = |shared: &SharedOutput| {
            in_panel_tasks(strips, |first, count| {
                let columns = first * PANEL..self.d_out.min((first + count) * PANEL);
                let panels = panels.of(first..first + count, d_in);
                // SAFETY: the tasks' column ranges do not overlap, and each
                // lies within the output's `d_out` columns.
                unsafe {
                    multiply_panels(
                        x, rows, d_in, panels, shared, self.d_out, columns, self.bias,
                    )
                }
            })
        };
        // SAFETY: the tasks' columns make up all `d_out`, and each task
        // writes every row of its columns.
        let out = unsafe { written_whole(rows * self.d_out, write) };
        Ok((CpuStorage::F32(out), Shape::from((rows, self.d_out))))
    }
}

/// `x · Wᵀ` for a contiguous `x` `(rows, in)` and `Wᵀ` in f32 panels, both
/// rounded to bf16, on AMX tiles ([`ProductPrecision::Bf16OnTiles`]). Each
/// task rounds its own panels, which then stay in its core's L2 while every
/// row goes through them.
struct TileProduct {
    d_in: usize,
    d_out: usize,
}

impl CustomOp2 for TileProduct {
    fn name(&self) -> &'static str {
        "tile-matmul"
    }

    #[cfg(target_arch = "x86_64")]
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, d_in) = l1.shape().dims2()?;
        let strips = self.d_out.div_ceil(PANEL);
        if !amx::available() {
            candle_core::bail!("a product on AMX tiles where the CPU has none");
        }
        check_panels(
            l2,
            &(strips, d_in, PANEL).into(),
            (rows, d_in),
            (self.d_in, self.d_out),
        )?;
        if rows == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from((0, self.d_out))));
        }
        let x = contiguous_f32(s1, l1, "tile product")?;
        let panels = contiguous_f32(s2, l2, "tile product's weight")?;
        let k = d_in.next_multiple_of(amx::STEP);
        // Rows in bf16, padded to whole pairs of tiles with zeros.
        let mut x_bf16 = vec![0u16; rows.next_multiple_of(amx::ROW_PAIR) * k];
        x_bf16
            .par_chunks_mut(k)
            .zip(x.par_chunks(d_in))
            // SAFETY: `amx::available` checked the CPU's AVX-512 features.
            .for_each(|(to, from)| unsafe { amx::round_row(from, to) });
        let mut out = vec![0f32; rows * self.d_out];
        let shared = SharedOutput(out.as_mut_ptr());
        in_panel_tasks(strips, |first, count| {
            let panels = &panels[first * d_in * PANEL..(first + count) * d_in * PANEL];
            // SAFETY: tiles are available (checked above); the rows and
            // panels are rounded for the same `k`; the tasks' columns do
            // not overlap and lie within `d_out`.
            unsafe {
                let paired = amx::pair_panels(panels, count, d_in, k);
                amx::multiply(
                    &x_bf16,
                    rows,
                    k,
                    &paired,
                    count.div_ceil(2),
                    &shared,
                    self.d_out,
                    first * PANEL,
                );
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, self.d_out))))
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "a product of {} outputs on AMX tiles, which this architecture lacks",
            self.d_out
        )
    }
}

/// The elements of some whole panels, in either dtype ([`Weight::Panels`]).
#[derive(Clone, Copy)]
enum PanelElements<'a> {
    F32(&'a [f32]),
    /// bf16 values as their bits.
    Bf16(&'a [u16]),
}

impl<'a> PanelElements<'a> {
    /// Elements in one panel of `d_in` inputs.
    fn panel_len(self, d_in: usize) -> usize {
        match self {
            Self::F32(_) => d_in * PANEL,
            Self::Bf16(_) => d_in.next_multiple_of(2) * PANEL,
        }
    }

    fn len(self) -> usize {
        match self {
            Self::F32(p) => p.len(),
            Self::Bf16(p) => p.len(),
        }
    }

    /// Where the first panel's bytes start, and how many bytes a panel of
    /// `d_in` inputs takes.
    #[cfg(target_arch = "x86_64")]
    fn bytes(self, d_in: usize) -> (*const u8, usize) {
        match self {
            Self::F32(p) => (p.as_ptr().cast(), 4 * self.panel_len(d_in)),
            Self::Bf16(p) => (p.as_ptr().cast(), 2 * self.panel_len(d_in)),
        }
    }

    /// Panels `range` of these.
    fn of(self, range: std::ops::Range<usize>, d_in: usize) -> Self {
        let n = self.panel_len(d_in);
        match self {
            Self::F32(p) => Self::F32(&p[range.start * n..range.end * n]),
            Self::Bf16(p) => Self::Bf16(&p[range.start * n..range.end * n]),
        }
    }
}

/// `out[:, columns] = x · [panels side by side] (+ bias[columns])`,
/// `columns` being those of the panels (the last panel's padding left out).
///
/// # Safety
/// `out` holds `rows × d_out` floats; no other thread touches `columns`.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_panels(
    x: &[f32],
    rows: usize,
    d_in: usize,
    panels: PanelElements,
    out: &SharedOutput,
    d_out: usize,
    columns: std::ops::Range<usize>,
    bias: Option<&[f32]>,
) {
    let count = panels.len() / panels.panel_len(d_in);
    assert!(x.len() == rows * d_in && panels.len() == count * panels.panel_len(d_in));
    assert!(
        columns.end <= d_out
            && columns.len() > PANEL * (count - 1)
            && columns.len() <= PANEL * count
            && bias.is_none_or(|b| b.len() == d_out)
    );
    let bias = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
    #[cfg(target_arch = "x86_64")]
    if avx512f() {
        // SAFETY: the CPU has AVX-512F; the lengths were checked above.
        unsafe {
            avx512::multiply_panels(
                x,
                rows,
                d_in,
                panels,
                count,
                out.0,
                d_out,
                columns.start,
                bias,
            )
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; the lengths were checked above.
        unsafe {
            avx2::multiply_panels(
                x,
                rows,
                d_in,
                panels,
                count,
                out.0,
                d_out,
                columns.start,
                bias,
            )
        };
        return;
    }
    unreachable!("panels are built only where their kernel runs");
}

/// Where column `column`'s bias lies: null for no bias.
///
/// # Safety
/// `bias` is null or holds more than `column` floats.
#[cfg(target_arch = "x86_64")]
unsafe fn at_column(bias: *const f32, column: usize) -> *const f32 {
    if bias.is_null() {
        bias
    } else {
        bias.add(column)
    }
}

/// Rows of a block in a kernel whose tiles take `tile_rows` rows: as many as
/// [`BLOCK_BYTES`] of inputs hold, in blocks of even size, whole tiles each.
/// A block stays in the cache while it goes through all of a task's panels,
/// and every block reads those panels: the ViT's 197 rows had been blocks of
/// 96, 96 and 5, three reads of each weight for each product.
#[cfg(target_arch = "x86_64")]
fn rows_per_block(rows: usize, d_in: usize, tile_rows: usize) -> usize {
    let most = (BLOCK_BYTES / (4 * d_in)).max(tile_rows) / tile_rows * tile_rows;
    let blocks = rows.div_ceil(most).max(1);
    rows.div_ceil(blocks).next_multiple_of(tile_rows)
}

/// At most this many bytes of inputs to a block of rows ([`rows_per_block`]):
/// half the L2 of a core of the Intel Xeon measured (2 MiB). A photo 200 →
/// 190 ms with AVX-512 against blocks of 96 rows, 235 → 227 ms with the AVX2
/// kernel. A Zen 3 has 512 KiB of L2, so there a block of more than 512 KiB
/// (the ViT's 197 rows of 768 inputs are 605 KB) is read from L3 for each
/// panel: not measured on one.
#[cfg(target_arch = "x86_64")]
const BLOCK_BYTES: usize = 1 << 20;

/// `step(i)` for each `i` in `0..n`, in order, `N` to a turn of the loop:
/// a tile's loop over its inputs had counted and compared between each
/// input's products. Four f32 inputs a turn took the ViT's and the text
/// tower's products from 186–210 to 194–237 GFLOPS with AVX2 and from
/// 281–305 to 312–334 with AVX-512 (two threads, Intel Xeon); two bf16
/// pairs a turn gave the AVX2 tile 2–15 %. The AVX-512 bf16 tile is left
/// as it is: its 12 rows of sums spilled when turned so.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn in_turns_of<const N: usize>(n: usize, mut step: impl FnMut(usize)) {
    let whole = n / N * N;
    for turn in (0..whole).step_by(N) {
        for i in turn..turn + N {
            step(i);
        }
    }
    for i in whole..n {
        step(i);
    }
}

/// The panel product with AVX2: a panel's row is two 8-float vectors, and a
/// tile holds six rows of one panel, 12 of the 16 registers (five rows for
/// panels in bf16, which become f32 in registers as in [`avx512`]).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{at_column, in_turns_of, rows_per_block, PanelElements, PANEL};

    // The tile holds a panel's row in two 8-float vectors.
    const _: () = assert!(PANEL == 16);

    /// Rows in a tile: six rows of a panel are 12 sums in registers; each
    /// step loads two vectors of weights and six inputs for 12 products.
    const TILE_ROWS: usize = 6;
    /// Rows in a tile of bf16 panels: its weights take four registers (a
    /// step's two words, then each input's weights from them), so five rows
    /// fill the 16; at six the sums spilled to the stack in every step
    /// (50–110 GFLOPS against 139–215 at five on the poet's and the ViT's
    /// shapes, two threads, Intel Xeon).
    const BF16_TILE_ROWS: usize = 5;

    /// A tile's kernel: `(x, d_in, panel, out, d_out, columns, bias)`.
    type Tile = unsafe fn(*const f32, usize, *const u8, *mut f32, usize, usize, *const f32);

    /// [`super::multiply_panels`] from column `first` on.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `x` holds `rows × d_in`, `panels` `count`
    /// panels of `d_in` inputs, `out` `rows × d_out`, `bias` null or `d_out`
    /// floats, and `first + 16·count` passes `d_out` by less than a panel.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn multiply_panels(
        x: &[f32],
        rows: usize,
        d_in: usize,
        panels: PanelElements,
        count: usize,
        out: *mut f32,
        d_out: usize,
        first: usize,
        bias: *const f32,
    ) {
        let (base, panel_bytes) = panels.bytes(d_in);
        let most = match panels {
            PanelElements::F32(_) => TILE_ROWS,
            PanelElements::Bf16(_) => BF16_TILE_ROWS,
        };
        let block = rows_per_block(rows, d_in, most);
        for first_row in (0..rows).step_by(block) {
            let end = (first_row + block).min(rows);
            for s in 0..count {
                let column = first + s * PANEL;
                let columns = (d_out - column).min(PANEL);
                let mut r = first_row;
                while r < end {
                    // Tiles of equal size, to a row: the poet's 8 rows as
                    // 4 and 4, where 6 and 2 left the second tile loading
                    // two vectors of weights for four products.
                    let tiles = (end - r).div_ceil(most);
                    let tile_rows = (end - r).div_ceil(tiles);
                    let tile = match panels {
                        PanelElements::F32(_) => tile_of::<false>(tile_rows),
                        PanelElements::Bf16(_) => tile_of::<true>(tile_rows),
                    };
                    tile(
                        x.as_ptr().add(r * d_in),
                        d_in,
                        base.add(s * panel_bytes),
                        out.add(r * d_out + column),
                        d_out,
                        columns,
                        at_column(bias, column),
                    );
                    r += tile_rows;
                }
            }
        }
    }

    /// The tile of a panel in bf16 or f32 for `rows` rows (1 to
    /// [`TILE_ROWS`], to [`BF16_TILE_ROWS`] in bf16).
    fn tile_of<const BF16: bool>(rows: usize) -> Tile {
        debug_assert!(rows <= if BF16 { BF16_TILE_ROWS } else { TILE_ROWS });
        match rows {
            1 => tile::<BF16, 1>,
            2 => tile::<BF16, 2>,
            3 => tile::<BF16, 3>,
            4 => tile::<BF16, 4>,
            5 => tile::<BF16, 5>,
            _ => tile::<BF16, TILE_ROWS>,
        }
    }

    /// `ROWS` rows of `x` times one panel, the sums held in registers: each
    /// step loads the panel's 16 weights once and uses them for every row.
    /// Writes the first `columns` sums of each row (all 16 but in the last,
    /// padded panel), each plus its column's `bias` where that is not null.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const BF16: bool, const ROWS: usize>(
        x: *const f32,
        d_in: usize,
        panel: *const u8,
        out: *mut f32,
        d_out: usize,
        columns: usize,
        bias: *const f32,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
        let step = |acc: &mut [[__m256; 2]; ROWS], w: [__m256; 2], p: usize| {
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = _mm256_set1_ps(*x.add(r * d_in + p));
                acc[0] = _mm256_fmadd_ps(xv, w[0], acc[0]);
                acc[1] = _mm256_fmadd_ps(xv, w[1], acc[1]);
            }
        };
        if BF16 {
            let panel = panel.cast::<u32>();
            let high = _mm256_set1_epi32(0xffff_0000_u32 as i32);
            let words = |pair: usize| -> [__m256i; 2] {
                std::array::from_fn(|i| _mm256_loadu_si256(panel.add(pair * PANEL + 8 * i).cast()))
            };
            let first =
                |w: [__m256i; 2]| w.map(|w| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w)));
            let pairs = d_in / 2;
            in_turns_of::<2>(pairs, |pair| {
                let words = words(pair);
                step(&mut acc, first(words), 2 * pair);
                let second = words.map(|w| _mm256_castsi256_ps(_mm256_and_si256(w, high)));
                step(&mut acc, second, 2 * pair + 1);
            });
            if d_in % 2 == 1 {
                // The last input's pair is this input and a zero.
                step(&mut acc, first(words(pairs)), d_in - 1);
            }
        } else {
            let panel = panel.cast::<f32>();
            in_turns_of::<4>(d_in, |p| {
                let w = std::array::from_fn(|i| _mm256_loadu_ps(panel.add(p * PANEL + 8 * i)));
                step(&mut acc, w, p);
            });
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = out.add(r * d_out);
            if columns == PANEL {
                let (mut low, mut high) = (acc[0], acc[1]);
                if !bias.is_null() {
                    low = _mm256_add_ps(low, _mm256_loadu_ps(bias));
                    high = _mm256_add_ps(high, _mm256_loadu_ps(bias.add(8)));
                }
                _mm256_storeu_ps(row, low);
                _mm256_storeu_ps(row.add(8), high);
            } else {
                let mut sums = [0f32; PANEL];
                _mm256_storeu_ps(sums.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(sums.as_mut_ptr().add(8), acc[1]);
                if !bias.is_null() {
                    for (c, sum) in sums[..columns].iter_mut().enumerate() {
                        *sum += *bias.add(c);
                    }
                }
                std::ptr::copy_nonoverlapping(sums.as_ptr(), row, columns);
            }
        }
    }
}

/// The panel product with AVX-512: a panel's row is one 16-float vector, and
/// with 32 registers a tile holds twelve rows of two panels. Panels in bf16
/// become f32 in registers: a 32-bit word holds two inputs' weights, the
/// first in its low half (shifted up, it is that weight in f32) and the
/// second in its high half (masked, likewise).
///
/// Each sum is taken over the inputs in the same order, by the same fused
/// multiply-adds, as in [`avx2`]: the two give the same bits, and so do
/// panels in bf16 and the same weights in f32.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{at_column, in_turns_of, rows_per_block, PanelElements, PANEL};

    const _: () = assert!(PANEL == 16);

    /// Rows in a tile: twelve rows of two panels are 24 sums in registers;
    /// each step loads two panel rows and twelve inputs for 24 products.
    const TILE_ROWS: usize = 12;
    /// A tile's kernel: `(x, d_in, first panel, out, d_out, columns, bias)`.
    type Tile = unsafe fn(*const f32, usize, *const u8, *mut f32, usize, usize, *const f32);

    /// [`super::multiply_panels`] from column `first` on.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds `rows × d_in`, `panels` `count`
    /// panels of `d_in` inputs, `out` `rows × d_out`, `bias` null or `d_out`
    /// floats, and `first + 16·count` passes `d_out` by less than a panel.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn multiply_panels(
        x: &[f32],
        rows: usize,
        d_in: usize,
        panels: PanelElements,
        count: usize,
        out: *mut f32,
        d_out: usize,
        first: usize,
        bias: *const f32,
    ) {
        let (base, panel_bytes) = panels.bytes(d_in);
        let block = rows_per_block(rows, d_in, TILE_ROWS);
        for first_row in (0..rows).step_by(block) {
            let end = (first_row + block).min(rows);
            let mut s = 0;
            while s < count {
                let pair = count - s >= 2;
                let column = first + s * PANEL;
                let columns = (d_out - column).min(if pair { 2 * PANEL } else { PANEL });
                let mut r = first_row;
                while r < end {
                    let tile_rows = (end - r).min(TILE_ROWS);
                    let tile = match (panels, pair) {
                        (PanelElements::F32(_), true) => tile_of::<false, 2>(tile_rows),
                        (PanelElements::F32(_), false) => tile_of::<false, 1>(tile_rows),
                        (PanelElements::Bf16(_), true) => tile_of::<true, 2>(tile_rows),
                        (PanelElements::Bf16(_), false) => tile_of::<true, 1>(tile_rows),
                    };
                    tile(
                        x.as_ptr().add(r * d_in),
                        d_in,
                        base.add(s * panel_bytes),
                        out.add(r * d_out + column),
                        d_out,
                        columns,
                        at_column(bias, column),
                    );
                    r += tile_rows;
                }
                s += if pair { 2 } else { 1 };
            }
        }
    }

    /// The tile of `PANELS` panels (in bf16 or f32) for `rows` rows (1 to
    /// [`TILE_ROWS`]).
    fn tile_of<const BF16: bool, const PANELS: usize>(rows: usize) -> Tile {
        match rows {
            1 => tile::<BF16, PANELS, 1>,
            2 => tile::<BF16, PANELS, 2>,
            3 => tile::<BF16, PANELS, 3>,
            4 => tile::<BF16, PANELS, 4>,
            5 => tile::<BF16, PANELS, 5>,
            6 => tile::<BF16, PANELS, 6>,
            7 => tile::<BF16, PANELS, 7>,
            8 => tile::<BF16, PANELS, 8>,
            9 => tile::<BF16, PANELS, 9>,
            10 => tile::<BF16, PANELS, 10>,
            11 => tile::<BF16, PANELS, 11>,
            _ => tile::<BF16, PANELS, TILE_ROWS>,
        }
    }

    /// `ROWS` rows of `x` times `PANELS` adjacent panels, the sums held in
    /// registers. Writes the first `columns` sums of each row (all but the
    /// padding of a last panel), the partial panel by a masked store, each
    /// plus its column's `bias` where that is not null.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const BF16: bool, const PANELS: usize, const ROWS: usize>(
        x: *const f32,
        d_in: usize,
        panel: *const u8,
        out: *mut f32,
        d_out: usize,
        columns: usize,
        bias: *const f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); PANELS]; ROWS];
        let step = |acc: &mut [[__m512; PANELS]; ROWS], w: &[__m512; PANELS], p: usize| {
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*x.add(r * d_in + p));
                for (acc, w) in acc.iter_mut().zip(w) {
                    *acc = _mm512_fmadd_ps(xv, *w, *acc);
                }
            }
        };
        if BF16 {
            let panel = panel.cast::<u32>();
            let pairs = d_in.div_ceil(2);
            let high = _mm512_set1_epi32(0xffff_0000_u32 as i32);
            for pair in 0..pairs {
                let words: [__m512i; PANELS] = std::array::from_fn(|i| {
                    _mm512_loadu_si512(panel.add((i * pairs + pair) * PANEL).cast())
                });
                let w = words.map(|w| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(w)));
                step(&mut acc, &w, 2 * pair);
                if 2 * pair + 1 < d_in {
                    let w = words.map(|w| _mm512_castsi512_ps(_mm512_and_si512(w, high)));
                    step(&mut acc, &w, 2 * pair + 1);
                }
            }
        } else {
            let panel = panel.cast::<f32>();
            in_turns_of::<4>(d_in, |p| {
                let w = std::array::from_fn(|i| _mm512_loadu_ps(panel.add((i * d_in + p) * PANEL)));
                step(&mut acc, &w, p);
            });
        }
        // Each panel's columns that exist: at least one, as a pair's second
        // panel is never all padding.
        let lanes: [u16; PANELS] = std::array::from_fn(|i| match columns - i * PANEL {
            n if n >= PANEL => u16::MAX,
            n => (1u16 << n) - 1,
        });
        let biases: [__m512; PANELS] = std::array::from_fn(|i| {
            if bias.is_null() {
                _mm512_setzero_ps()
            } else {
                _mm512_maskz_loadu_ps(lanes[i], bias.add(i * PANEL))
            }
        });
        for (r, acc) in acc.iter().enumerate() {
            let row = out.add(r * d_out);
            for (i, acc) in acc.iter().enumerate() {
                let sums = if bias.is_null() {
                    *acc
                } else {
                    _mm512_add_ps(*acc, biases[i])
                };
                match lanes[i] {
                    u16::MAX => _mm512_storeu_ps(row.add(i * PANEL), sums),
                    lanes => _mm512_mask_storeu_ps(row.add(i * PANEL), lanes, sums),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use candle_nn::VarBuilder;

    use super::*;

    fn layer(d_in: usize, d_out: usize) -> (Linear, Tensor, Tensor) {
        let device = Device::Cpu;
        let weight = Tensor::randn(0f32, 1.0, (d_out, d_in), &device).unwrap();
        let bias = Tensor::randn(0f32, 1.0, d_out, &device).unwrap();
        let tensors = [("weight", &weight), ("bias", &bias)]
            .map(|(name, t)| (name.to_string(), t.clone()))
            .into_iter()
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        (Linear::load(vb, d_in, d_out, true).unwrap(), weight, bias)
    }

    fn largest_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar())
            .unwrap()
    }

    /// An input whose width is not the layer's is refused, on bf16 panels
    /// too, where inputs are held in pairs: a width one short of an even
    /// `d_in`, or one past an odd one, makes the same number of pairs.
    #[test]
    fn an_input_of_the_wrong_width_is_refused() {
        if !avx2_fma() {
            eprintln!("no AVX2 and FMA here: layers stay in Wᵀ, which gemm checks");
            return;
        }
        for d_in in [6, 5] {
            let weight = Tensor::randn(0f32, 1.0, (20, d_in), &Device::Cpu)
                .and_then(|w| w.to_dtype(DType::BF16)?.to_dtype(DType::F32))
                .unwrap();
            let layer = Linear {
                weight: Weight::new(&weight).unwrap(),
                bias: None,
            };
            assert!(
                matches!(&layer.weight, Weight::Panels { panels, .. } if panels.dtype() == DType::BF16)
            );
            for width in [d_in - 1, d_in + 1, 0] {
                let xs = Tensor::randn(0f32, 1.0, (3, width), &Device::Cpu).unwrap();
                assert!(
                    layer.forward(&xs).is_err(),
                    "(3, {width}) through a layer of {d_in} inputs"
                );
            }
            let xs = Tensor::randn(0f32, 1.0, (3, d_in), &Device::Cpu).unwrap();
            assert_eq!(layer.forward(&xs).unwrap().dims(), &[3, 20]);
        }
    }

    /// A layer of no outputs gives its rows of nothing, in panels as in `Wᵀ`.
    #[test]
    fn a_layer_of_no_outputs_gives_empty_rows() {
        let (layer, _, _) = layer(8, 0);
        let xs = Tensor::randn(0f32, 1.0, (4, 8), &Device::Cpu).unwrap();
        assert_eq!(layer.forward(&xs).unwrap().dims(), &[4, 0]);
    }

    /// A layer in panels gives gemm's product (with its bias) to within float
    /// rounding: row counts on both sides of a tile and of a block of rows,
    /// column counts that are and are not multiples of a panel or of a
    /// task's share, leading dims kept; its panels give back `W` exactly.
    #[test]
    fn panel_product_matches_gemm() {
        if !avx2_fma() {
            eprintln!("no AVX2 and FMA here: layers stay in Wᵀ, nothing to compare");
            return;
        }
        // 3,072 inputs: 200 rows are several blocks.
        for (d_in, d_out) in [(384, 1024), (37, 300), (5, 7), (64, 129), (3072, 40)] {
            let (panels, weight, bias) = layer(d_in, d_out);
            assert!(matches!(panels.weight, Weight::Panels { .. }));
            assert_eq!(panels.d_in(), d_in);
            assert_eq!(
                largest_difference(&panels.weight.weight().unwrap(), &weight),
                0.0
            );
            let plain = Linear {
                weight: Weight::Transposed(weight.t().unwrap().contiguous().unwrap()),
                bias: Some(bias),
            };
            for rows in [0, 1, 2, 5, 6, 7, 8, 13, 64, 200] {
                let xs = Tensor::randn(0f32, 1.0, (rows, 1, d_in), &Device::Cpu).unwrap();
                let got = panels.forward(&xs).unwrap();
                assert_eq!(got.dims(), &[rows, 1, d_out]);
                if rows == 0 {
                    continue;
                }
                let diff = largest_difference(&got, &plain.forward(&xs).unwrap());
                // Rounding grows with the terms of a sum, in either order.
                let limit = 1e-4 * (d_in as f32 / 384.0).max(1.0);
                assert!(
                    diff < limit,
                    "({rows}, {d_in}) × ({d_in}, {d_out}): off by {diff}"
                );
            }
        }
    }

    /// Every kernel this CPU has gives the AVX2 kernel's bits on f32
    /// panels, and so does each on bf16 panels of the same weights (bf16
    /// values): row counts on both sides of each tile (six and five rows in
    /// AVX2, twelve in AVX-512) and of a block, pairs of panels and a lone
    /// one, a padded last panel, odd inputs.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernels_give_the_avx2_kernels_bits_on_f32_and_bf16_panels() {
        if !avx2_fma() {
            eprintln!("no AVX2 and FMA here: layers stay in Wᵀ for gemm");
            return;
        }
        // 20 and 60 outputs: a pair whose second panel is partly padding;
        // 3,072 inputs: 97 and 200 rows are more than one block.
        for (d_in, d_out) in [
            (3072, 40),
            (384, 1024),
            (37, 300),
            (5, 7),
            (64, 129),
            (3, 40),
            (7, 20),
            (64, 60),
        ] {
            let weight = Tensor::randn(0f32, 1.0, (d_out, d_in), &Device::Cpu)
                .and_then(|w| w.to_dtype(DType::BF16)?.to_dtype(DType::F32))
                .unwrap();
            let f32_panels = f32_panels(&weight).unwrap().flatten_all().unwrap();
            let f32_panels = f32_panels.to_vec1::<f32>().unwrap();
            let Weight::Panels { panels, .. } = Weight::new(&weight).unwrap() else {
                panic!("a layer in f32 on a CPU with AVX2 is held in panels");
            };
            assert_eq!(panels.dtype(), DType::BF16, "bf16 values, bf16 panels");
            let bf16_panels: Vec<u16> = panels
                .to_dtype(DType::F32)
                .and_then(|p| p.flatten_all()?.to_vec1::<f32>())
                .unwrap()
                .iter()
                .map(|v| (v.to_bits() >> 16) as u16)
                .collect();
            let count = d_out.div_ceil(PANEL);
            for rows in [1, 5, 6, 7, 8, 10, 11, 12, 13, 97, 200] {
                let x = Tensor::randn(0f32, 1.0, rows * d_in, &Device::Cpu)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let bias: Vec<f32> = (0..d_out).map(|c| c as f32 * 0.37 - 5.0).collect();
                for bias in [std::ptr::null(), bias.as_ptr()] {
                    let product = |avx512: bool, panels: PanelElements| {
                        let mut out = vec![f32::NAN; rows * d_out];
                        let kernel = if avx512 {
                            avx512::multiply_panels
                        } else {
                            avx2::multiply_panels
                        };
                        // SAFETY: the CPU has the kernel's features; the
                        // output holds `rows × d_out`, the panels are `W`'s,
                        // the bias `d_out` floats.
                        unsafe {
                            kernel(
                                &x,
                                rows,
                                d_in,
                                panels,
                                count,
                                out.as_mut_ptr(),
                                d_out,
                                0,
                                bias,
                            )
                        };
                        assert!(
                            out.iter().all(|v| v.is_finite()),
                            "({rows}, {d_in}) × {d_out}: a sum left unwritten"
                        );
                        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                    };
                    let want = product(false, PanelElements::F32(&f32_panels));
                    let kernels: &[bool] = if avx512f() { &[false, true] } else { &[false] };
                    for &avx512 in kernels {
                        for panels in [
                            PanelElements::F32(&f32_panels),
                            PanelElements::Bf16(&bf16_panels),
                        ] {
                            assert!(
                                product(avx512, panels) == want,
                                "({rows}, {d_in}) × {d_out}: avx512 {avx512}, bf16 {}: \
                                 other bits",
                                matches!(panels, PanelElements::Bf16(_))
                            );
                        }
                    }
                }
            }
        }
    }

    /// A layer in panels adds its bias as it stores the sums: the bits of
    /// the product without the bias, then the bias added (one row, a tile,
    /// a padded last panel).
    #[test]
    fn bias_added_in_the_kernel_is_the_bias_added_after() {
        if !avx2_fma() {
            eprintln!("no AVX2 and FMA here: layers stay in Wᵀ, the bias added after");
            return;
        }
        for (d_in, d_out) in [(64, 129), (37, 20), (384, 1024)] {
            let (with_bias, weight, bias) = layer(d_in, d_out);
            let without_bias = Linear {
                weight: Weight::new(&weight).unwrap(),
                bias: None,
            };
            for rows in [1, 13, 64] {
                let xs = Tensor::randn(0f32, 1.0, (rows, d_in), &Device::Cpu).unwrap();
                let bits = |t: Tensor| -> Vec<u32> {
                    t.flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                };
                let fused = with_bias.forward(&xs).unwrap();
                let after = without_bias
                    .forward(&xs)
                    .unwrap()
                    .broadcast_add(&bias)
                    .unwrap();
                assert_eq!(bits(fused), bits(after), "({rows}, {d_in}) × {d_out}");
            }
        }
    }

    /// A layer whose weights are all bf16 values holds them in bf16 panels,
    /// gives them back exactly, and its products are those of the same
    /// weights in f32 panels to the bit (odd and even input widths, a padded
    /// last panel); one weight that is not a bf16 value keeps the layer in
    /// f32.
    #[test]
    fn bf16_panels_give_the_f32_panels_bits() {
        if !avx2_fma() {
            eprintln!("no AVX2 and FMA here: layers stay in Wᵀ for gemm");
            return;
        }
        for (d_in, d_out) in [(384, 1024), (37, 300), (5, 7), (1, 20)] {
            let weight = Tensor::randn(0f32, 1.0, (d_out, d_in), &Device::Cpu)
                .and_then(|w| w.to_dtype(DType::BF16)?.to_dtype(DType::F32))
                .unwrap();
            let bf16 = Weight::new(&weight).unwrap();
            assert!(
                matches!(&bf16, Weight::Panels { panels, .. } if panels.dtype() == DType::BF16)
            );
            assert_eq!(largest_difference(&bf16.weight().unwrap(), &weight), 0.0);
            let f32 = Weight::Panels {
                panels: f32_panels(&weight).unwrap(),
                d_in,
                d_out,
            };
            let [bf16, f32] = [bf16, f32].map(|weight| Linear { weight, bias: None });
            for rows in [1, 8, 13, 200] {
                let xs = Tensor::randn(0f32, 1.0, (rows, d_in), &Device::Cpu).unwrap();
                let [got, want, asked_bf16] = [
                    (&bf16, ProductPrecision::F32),
                    (&f32, ProductPrecision::F32),
                    (&bf16, ProductPrecision::Bf16OnTiles),
                ]
                .map(|(l, precision)| {
                    l.forward_in(&xs, precision)
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                });
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "({rows}, {d_in}) × {d_out}: bf16 and f32 panels differ"
                );
                // Weights held in bf16 stay on the f32 kernel even when bf16
                // products are asked for.
                let same = got
                    .iter()
                    .zip(&asked_bf16)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "({rows}, {d_in}) × {d_out}: bf16 panels left the f32 kernel"
                );
            }
            let mut values = weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let middle = values.len() / 2;
            values[middle] = f32::from_bits(values[middle].to_bits() | 1);
            let weight = Tensor::from_vec(values, (d_out, d_in), &Device::Cpu).unwrap();
            let kept = Weight::new(&weight).unwrap();
            assert!(matches!(&kept, Weight::Panels { panels, .. } if panels.dtype() == DType::F32));
        }
    }

    /// In [`ProductPrecision::Bf16OnTiles`], where the CPU has AMX tiles, a
    /// layer's product is that of its inputs and weights rounded to bf16,
    /// summed in f32 (to within the sums' rounding), plus the bias: rows on
    /// both sides of a pair of tiles and of a block of rows, an odd panel
    /// count, a padded last panel, input widths that are and are not whole
    /// tile steps. Elsewhere it is the f32 product, to the bit.
    #[test]
    fn tile_product_is_the_product_in_bf16() {
        for (d_in, d_out) in [
            (384, 1024),
            (37, 300),
            (5, 7),
            (64, 129),
            (96, 48),
            (33, 20),
        ] {
            let (linear, weight, bias) = layer(d_in, d_out);
            let in_bf16 = |t: &Tensor| {
                t.to_dtype(DType::BF16)
                    .and_then(|t| t.to_dtype(DType::F32)?.to_vec2::<f32>())
                    .unwrap()
            };
            let w = in_bf16(&weight);
            let bias = bias.to_vec1::<f32>().unwrap();
            for rows in [1, 5, 31, 32, 33, 64, 65, 97] {
                let xs = Tensor::randn(0f32, 1.0, (rows, d_in), &Device::Cpu).unwrap();
                let got = linear
                    .forward_in(&xs, ProductPrecision::Bf16OnTiles)
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                if !ProductPrecision::Bf16OnTiles.runs_here() {
                    let want = linear.forward(&xs).unwrap().to_vec2::<f32>().unwrap();
                    assert_eq!(got, want, "({rows}, {d_in}) × {d_out}: not the f32 product");
                    continue;
                }
                let x = in_bf16(&xs);
                for (r, (got, x)) in got.iter().zip(&x).enumerate() {
                    for (c, (&got, w)) in got.iter().zip(&w).enumerate() {
                        let terms = x.iter().zip(w).map(|(&x, &w)| x as f64 * w as f64);
                        let want: f64 = terms.clone().sum::<f64>() + bias[c] as f64;
                        let size: f64 = terms.map(f64::abs).sum::<f64>() + bias[c].abs() as f64;
                        assert!(
                            (got as f64 - want).abs() <= 1e-5 * size,
                            "({rows}, {d_in}) × {d_out}, row {r}, column {c}: {got} against {want}"
                        );
                    }
                }
            }
        }
    }

    /// Layers side by side give each layer's output, times its factor, one
    /// after another.
    #[test]
    fn side_by_side_is_the_layers_outputs_end_to_end() {
        let (d_in, widths, factors) = (48, [37, 16, 300], [0.125, 1.0, -2.0]);
        let layers: Vec<(Linear, f64)> = widths
            .iter()
            .zip(factors)
            .map(|(&d_out, factor)| (layer(d_in, d_out).0, factor))
            .collect();
        let xs = Tensor::randn(0f32, 1.0, (2, 9, d_in), &Device::Cpu).unwrap();
        let want = layers
            .iter()
            .map(|(l, factor)| l.forward(&xs).and_then(|out| out.affine(*factor, 0.0)))
            .collect::<Result<Vec<_>>>()
            .and_then(|outs| Tensor::cat(&outs, 2))
            .unwrap();
        let got = Linear::side_by_side(&layers).unwrap().forward(&xs).unwrap();
        assert_eq!(got.dims(), &[2, 9, 353]);
        let diff = largest_difference(&got, &want);
        assert!(diff < 1e-4, "off by {diff}");
    }
}
