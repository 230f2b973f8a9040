//! The panel product on AMX tiles (Intel Xeons since Sapphire Rapids), for
//! products whose inputs may be rounded to bf16: both sides rounded to
//! bf16, the sums taken in f32. A tile product multiplies 16 rows of 32
//! inputs by 32 inputs of 16 columns in one instruction, where the
//! AVX-512 kernel takes 32 fused multiply-adds of 16 lanes for one row.
//!
//! Rust has no stable AMX intrinsics; the few instructions are inline
//! assembly, one block for each 32 × 32 block of sums, from loading the
//! tile layout to releasing the tiles.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::PANEL;
use crate::cpu_kernels::SharedOutput;

/// Rows (and f32 columns) of a tile.
const TILE: usize = 16;
/// Rows of a block of sums, two tiles high: the rows of `x` are padded to
/// a multiple of it.
pub(super) const ROW_PAIR: usize = 2 * TILE;
/// Inputs a tile product takes: 32 bf16, a tile row of 64 bytes.
pub(super) const STEP: usize = 32;
/// Rows taken through all of a task's panels before the next rows: 64 rows
/// of 3,072 bf16 inputs are 384 KiB, beside a task's panels in a core's L2.
const ROWS_PER_BLOCK: usize = 64;

const _: () = assert!(PANEL == TILE && STEP == 32 && ROWS_PER_BLOCK.is_multiple_of(ROW_PAIR));

/// Whether this CPU has AMX tiles with bf16 products (and the AVX-512
/// conversions the inputs go through, not held back by
/// `YINGSHI_CPU_CAPABILITY`), the OS has enabled their state, and Linux
/// lets this process use them: see [`unavailable_because`].
pub(super) fn available() -> bool {
    unavailable_because().is_none()
}

/// Why the tiles are not used here, `None` when they are (asked once).
pub(super) fn unavailable_because() -> Option<&'static str> {
    static WHY: OnceLock<Option<&'static str>> = OnceLock::new();
    *WHY.get_or_init(|| {
        // CPUID leaf 7 (where the CPU has it), EDX; leaf 1, ECX bit 27 OSXSAVE.
        let leaf_7_edx = (__get_cpuid_max(0).0 >= 7).then(|| __cpuid_count(7, 0).edx);
        let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
        // SAFETY: xgetbv is available where OSXSAVE is set, checked first.
        let xcr0 = osxsave.then(|| unsafe { _xgetbv(0) });
        tiles_usable(leaf_7_edx, xcr0, bf16_conversions(), tile_state_granted).err()
    })
}

/// Whether the AVX-512 features [`round_row`] and [`pair_panels`] need are
/// there and not held back by `YINGSHI_CPU_CAPABILITY`.
fn bf16_conversions() -> bool {
    crate::cpu_kernels::avx512f()
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bf16")
}

/// The decision, from what the CPU and the OS report: CPUID leaf 7's EDX
/// (bit 22 AMX-BF16, bit 24 AMX-TILE), XCR0 (`None` without OSXSAVE; bits
/// 17 and 18, the tile configuration and data, enabled by the OS), whether
/// the AVX-512 features the inputs need are there, and, asked last, whether
/// Linux grants this process the tile data.
fn tiles_usable(
    leaf_7_edx: Option<u32>,
    xcr0: Option<u64>,
    avx512: bool,
    granted: impl FnOnce() -> bool,
) -> Result<(), &'static str> {
    const TILE_STATE: u64 = (1 << 17) | (1 << 18);
    match leaf_7_edx {
        Some(edx) if edx & (1 << 22) != 0 && edx & (1 << 24) != 0 => {}
        _ => return Err("the CPU has no AMX-TILE and AMX-BF16"),
    }
    if !avx512 {
        return Err("AVX-512 (F, BW, VL, bf16) is missing or held back");
    }
    if xcr0.is_none_or(|xcr0| xcr0 & TILE_STATE != TILE_STATE) {
        return Err("the OS has not enabled the tile state (XCR0)");
    }
    if !granted() {
        return Err("Linux did not grant this process the tile data (arch_prctl)");
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn tile_state_granted() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only asks for a permission.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn tile_state_granted() -> bool {
    false
}

/// The layout of the eight tiles (`ldtilecfg`'s 64 bytes): all 16 rows of
/// 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const ALL_FULL: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// One row of inputs in bf16: `to[..from.len()]` rounded from `from` (to
/// nearest, ties to even, denormals to zero, as `vcvtneps2bf16` does), the
/// rest of `to` zero.
///
/// # Safety
/// The CPU has AVX-512F, BW, VL and bf16; `to` is at least as long as
/// `from`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn round_row(from: &[f32], to: &mut [u16]) {
    for i in (0..from.len()).step_by(TILE) {
        // The last 16 inputs may be fewer: the rest of the vector is zero.
        let mask = u16::MAX >> (TILE - (from.len() - i).min(TILE));
        let rounded = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, from.as_ptr().add(i)));
        let rounded = std::mem::transmute::<__m256bh, __m256i>(rounded);
        _mm256_mask_storeu_epi16(to.as_mut_ptr().add(i).cast(), mask, rounded);
    }
    to[from.len()..].fill(0);
}

/// Panels of f32 weights (`count` × `d_in` × 16) as the tile product reads
/// them: `count` rounded up to even (a zero panel after an odd last), each
/// `k / 2` rows of 16 pairs, inputs `2i` and `2i + 1` of a column side by
/// side in bf16, zero from `d_in` to `k`.
///
/// # Safety
/// As [`round_row`]; `panels` holds `count`
/// panels of `d_in` inputs; `k` is even and at least `d_in`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn pair_panels(panels: &[f32], count: usize, d_in: usize, k: usize) -> Vec<u16> {
    let panel_len = k * TILE;
    let mut out = vec![0u16; count.next_multiple_of(2) * panel_len];
    // Words 2c and 2c + 1 of the result: column c of the even and of the
    // odd input (`_mm512_cvtne2ps_pbh(odd, even)` puts the even row's 16
    // columns first, then the odd row's).
    let interleave = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
        19, 3, 18, 2, 17, 1, 16, 0,
    );
    for p in 0..count {
        let panel = panels.as_ptr().add(p * d_in * TILE);
        let row = |i: usize| {
            if i < d_in {
                _mm512_loadu_ps(panel.add(i * TILE))
            } else {
                _mm512_setzero_ps()
            }
        };
        for pair in 0..d_in.div_ceil(2) {
            let both = _mm512_cvtne2ps_pbh(row(2 * pair + 1), row(2 * pair));
            let both = std::mem::transmute::<__m512bh, __m512i>(both);
            _mm512_storeu_si512(
                out.as_mut_ptr().add(p * panel_len + pair * 2 * TILE).cast(),
                _mm512_permutexvar_epi16(interleave, both),
            );
        }
    }
    out
}

/// `out[r][first + c]` for every row `r < rows` and the columns `c` of
/// `pairs` pairs of panels (those below `d_out`): the rows of `x` times the
/// panels, each 32 × 32 block of sums in four tiles.
///
/// # Safety
/// [`available`] is true; `x` holds `rows.next_multiple_of(ROW_PAIR)` rows
/// of `k` bf16 inputs (the rows past `rows` anything finite), `k` a
/// multiple of [`STEP`]; `panels` holds `2 · pairs` panels from
/// [`pair_panels`] of the same `k`; `out` holds `rows × d_out`, the pairs'
/// columns start below `d_out`, and no other thread writes them.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn multiply(
    x: &[u16],
    rows: usize,
    k: usize,
    panels: &[u16],
    pairs: usize,
    out: &SharedOutput,
    d_out: usize,
    first: usize,
) {
    let panel_len = k * TILE;
    each_block(rows, pairs, out, d_out, first, |r, pair, sums, stride| {
        let left = panels.as_ptr().add(2 * pair * panel_len);
        // One block of asm from the tile layout to the stored sums (tiles
        // released), so that no tile state lives between blocks or across
        // a call.
        asm!(
            "ldtilecfg [{config}]",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{top} + {x_stride} * 1]",
            "tileloadd tmm5, [{bottom} + {x_stride} * 1]",
            "tileloadd tmm6, [{left} + {panel_stride} * 1]",
            "tileloadd tmm7, [{right} + {panel_stride} * 1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            // The next 32 inputs: 64 bytes along a row of `x`, 16 rows of
            // 64 bytes down a panel.
            "add {top}, 64",
            "add {bottom}, 64",
            "add {left}, 1024",
            "add {right}, 1024",
            "dec {steps}",
            "jnz 2b",
            "tilestored [{sums} + {sum_stride} * 1], tmm0",
            "tilestored [{sums} + {sum_stride} * 1 + 64], tmm1",
            "add {sums}, {down}",
            "tilestored [{sums} + {sum_stride} * 1], tmm2",
            "tilestored [{sums} + {sum_stride} * 1 + 64], tmm3",
            "tilerelease",
            config = in(reg) &ALL_FULL,
            top = inout(reg) x.as_ptr().add(r * k) => _,
            bottom = inout(reg) x.as_ptr().add((r + TILE) * k) => _,
            left = inout(reg) left => _,
            right = inout(reg) left.add(panel_len) => _,
            steps = inout(reg) k / STEP => _,
            x_stride = in(reg) 2 * k,
            panel_stride = in(reg) 4 * TILE,
            sums = inout(reg) sums => _,
            sum_stride = in(reg) 4 * stride,
            down = in(reg) 4 * TILE * stride,
            out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
            out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
            options(nostack),
        );
    });
}

/// The walk of [`multiply`] over its blocks of sums, for the tiles and for
/// [`multiply_model`] alike: `block(r, pair, sums, stride)` writes the 32 ×
/// 32 sums of rows `r..r + 32` and pair `pair` at `sums`, a row every
/// `stride` floats; a block inside `out` is written there, one that runs
/// past the last row or column into an edge buffer whose part inside is
/// then copied out.
///
/// # Safety
/// As [`multiply`]'s for `out`, `d_out` and `first`; `block` writes 32
/// rows of 32 floats at `sums`, a row every `stride`.
unsafe fn each_block(
    rows: usize,
    pairs: usize,
    out: &SharedOutput,
    d_out: usize,
    first: usize,
    mut block: impl FnMut(usize, usize, *mut f32, usize),
) {
    let padded_rows = rows.next_multiple_of(ROW_PAIR);
    let mut edge = [0f32; ROW_PAIR * 2 * TILE];
    for start in (0..padded_rows).step_by(ROWS_PER_BLOCK) {
        for pair in 0..pairs {
            let column = first + pair * 2 * TILE;
            for r in (start..padded_rows.min(start + ROWS_PER_BLOCK)).step_by(ROW_PAIR) {
                let whole = r + ROW_PAIR <= rows && column + 2 * TILE <= d_out;
                if whole {
                    block(r, pair, out.0.add(r * d_out + column), d_out);
                    continue;
                }
                block(r, pair, edge.as_mut_ptr(), 2 * TILE);
                let columns = (d_out - column).min(2 * TILE);
                for i in 0..(rows.saturating_sub(r)).min(ROW_PAIR) {
                    std::ptr::copy_nonoverlapping(
                        edge.as_ptr().add(i * 2 * TILE),
                        out.0.add((r + i) * d_out + column),
                        columns,
                    );
                }
            }
        }
    }
}

/// What [`multiply`] computes, in plain Rust on any CPU: the same walk
/// ([`each_block`]), and each block's sums read from `x` and `panels` at
/// the places the asm's tile loads read them (a tile row of `x`: 32 inputs
/// of a row; a tile row of a panel: 16 columns' pairs of inputs 2i, 2i + 1),
/// summed in f32 pair by pair as `tdpbf16ps` does (its rounding of the
/// pair's sum may differ in the last bits). Tests hold the asm to it where
/// AMX exists, and it to the product everywhere.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(super) fn multiply_model(
    x: &[u16],
    rows: usize,
    k: usize,
    panels: &[u16],
    pairs: usize,
    out: &mut [f32],
    d_out: usize,
    first: usize,
) {
    assert!(out.len() == rows * d_out && x.len() >= rows.next_multiple_of(ROW_PAIR) * k);
    assert!(k.is_multiple_of(STEP) && panels.len() >= 2 * pairs * k * TILE);
    let bf16 = |v: u16| f32::from_bits((v as u32) << 16);
    let panel_len = k * TILE;
    let shared = SharedOutput(out.as_mut_ptr());
    // SAFETY: `out` holds `rows × d_out` (asserted) and the block writes
    // 32 rows of 32 at `sums`, a row every `stride`.
    unsafe {
        each_block(
            rows,
            pairs,
            &shared,
            d_out,
            first,
            |r, pair, sums, stride| {
                for (half, panel) in [2 * pair, 2 * pair + 1].into_iter().enumerate() {
                    let panel = &panels[panel * panel_len..(panel + 1) * panel_len];
                    for i in 0..ROW_PAIR {
                        let row = &x[(r + i) * k..(r + i + 1) * k];
                        for c in 0..TILE {
                            let mut sum = 0f32;
                            for p in 0..k / 2 {
                                let pair_of = &panel[p * 2 * TILE + 2 * c..][..2];
                                sum += bf16(row[2 * p]) * bf16(pair_of[0])
                                    + bf16(row[2 * p + 1]) * bf16(pair_of[1]);
                            }
                            *sums.add(i * stride + half * TILE + c) = sum;
                        }
                    }
                }
            },
        );
    }
}

/// What [`pair_panels`] writes, in plain Rust: word `2c + j` of row `pair`
/// of panel `p` is input `2 · pair + j` of column `c`, rounded to bf16 to
/// nearest, ties to even.
#[cfg(test)]
pub(super) fn pair_panels_model(panels: &[f32], count: usize, d_in: usize, k: usize) -> Vec<u16> {
    let panel_len = k * TILE;
    let mut out = vec![0u16; count.next_multiple_of(2) * panel_len];
    for p in 0..count {
        for input in 0..d_in {
            for c in 0..TILE {
                let v = panels[p * d_in * TILE + input * TILE + c];
                out[p * panel_len + (input / 2) * 2 * TILE + 2 * c + input % 2] = round_bf16(v);
            }
        }
    }
    out
}

/// `v` in bf16 to nearest, ties to even, denormals to zero (as
/// `vcvtneps2bf16`); finite inputs only.
#[cfg(test)]
fn round_bf16(v: f32) -> u16 {
    let bits = if v.is_subnormal() {
        v.to_bits() & 0x8000_0000
    } else {
        v.to_bits()
    };
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values exactly in bf16 (seven bits), varied.
    fn on_the_grid(i: usize) -> f32 {
        ((i * 7919 + 13) % 97) as f32 / 16.0 - 3.0
    }

    /// Values that bf16 rounds, ties included.
    fn off_the_grid(i: usize) -> f32 {
        match i % 7 {
            0 => 1.0 + 2f32.powi(-8),       // a tie, to even: 1.0
            1 => 1.0 + 3.0 * 2f32.powi(-8), // a tie, to even: up
            2 => f32::from_bits(1),         // a denormal: zero
            _ => (i as f32 * 0.123_456).sin() * 100.0,
        }
    }

    /// `count` panels of `d_in` inputs for a layer of `d_out` outputs (the
    /// columns past it zero, as the panels pad them), and `W` `(d_out, d_in)`.
    fn layer(count: usize, d_in: usize, d_out: usize) -> (Vec<f32>, Vec<Vec<f32>>) {
        let w: Vec<Vec<f32>> = (0..d_out)
            .map(|o| (0..d_in).map(|i| on_the_grid(o * d_in + i + 5)).collect())
            .collect();
        let mut panels = vec![0f32; count * d_in * TILE];
        for (o, row) in w.iter().enumerate() {
            for (i, &v) in row.iter().enumerate() {
                panels[(o / TILE) * d_in * TILE + i * TILE + o % TILE] = v;
            }
        }
        (panels, w)
    }

    /// Rows of `x` as the tiles take them: bf16, `k` a row, padded rows zero.
    fn rows_in_bf16(x: &[Vec<f32>], k: usize) -> Vec<u16> {
        let mut out = vec![0u16; x.len().next_multiple_of(ROW_PAIR) * k];
        for (r, row) in x.iter().enumerate() {
            for (i, &v) in row.iter().enumerate() {
                out[r * k + i] = round_bf16(v);
            }
        }
        out
    }

    /// The model's sums are the product of the bf16 values, for rows and
    /// columns on both sides of a block and of its edge, and with the
    /// columns split between two calls as the tasks split them: the walk,
    /// the edge copy and the layout the tiles read are held to the product
    /// on any CPU, AMX or not.
    #[test]
    fn the_tile_model_is_the_product_in_bf16() {
        for (rows, d_in, d_out) in [
            (1, 5usize, 7usize),
            (31, 37, 20),
            (32, 64, 32),
            (33, 33, 48),
            (65, 96, 129),
            (97, 64, 60),
        ] {
            let k = d_in.next_multiple_of(STEP);
            let count = d_out.div_ceil(TILE);
            let (panels, w) = layer(count, d_in, d_out);
            let paired = pair_panels_model(&panels, count, d_in, k);
            let x: Vec<Vec<f32>> = (0..rows)
                .map(|r| (0..d_in).map(|i| on_the_grid(r * 31 + i)).collect())
                .collect();
            let x_bf16 = rows_in_bf16(&x, k);
            let mut out = vec![f32::NAN; rows * d_out];
            // Pairs 0 and 1 in one call, the rest from column 64 in another.
            let pairs = count.div_ceil(2);
            let split = pairs.min(2);
            multiply_model(&x_bf16, rows, k, &paired, split, &mut out, d_out, 0);
            multiply_model(
                &x_bf16,
                rows,
                k,
                &paired[split * 2 * k * TILE..],
                pairs - split,
                &mut out,
                d_out,
                split * 2 * TILE,
            );
            for r in 0..rows {
                for (c, w) in w.iter().enumerate() {
                    let want: f64 = x[r].iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let got = out[r * d_out + c];
                    assert!(
                        (got as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "({rows}, {d_in}) × {d_out}, row {r}, column {c}: {got} against {want}"
                    );
                }
            }
        }
    }

    /// The AVX-512 conversions write what their models write, to the bit:
    /// the panels paired and rounded, the rows rounded (ties to even,
    /// denormals to zero).
    #[test]
    fn panels_and_rows_are_rounded_as_the_models_round_them() {
        if !bf16_conversions() {
            eprintln!("no AVX-512 bf16 here: the conversions cannot run");
            return;
        }
        for (count, d_in) in [(1, 5usize), (2, 32), (3, 37), (4, 64), (1, 1)] {
            let k = d_in.next_multiple_of(STEP);
            let panels: Vec<f32> = (0..count * d_in * TILE).map(off_the_grid).collect();
            // SAFETY: the features are there (checked above); `panels` holds
            // `count` panels of `d_in`, `k` is even and at least `d_in`.
            let real = unsafe { pair_panels(&panels, count, d_in, k) };
            assert_eq!(
                real,
                pair_panels_model(&panels, count, d_in, k),
                "{count} × {d_in}"
            );
            let row: Vec<f32> = (0..d_in).map(|i| off_the_grid(i + 3)).collect();
            let mut rounded = vec![u16::MAX; k];
            // SAFETY: as above; `rounded` is longer than `row`.
            unsafe { round_row(&row, &mut rounded) };
            let mut want: Vec<u16> = row.iter().map(|&v| round_bf16(v)).collect();
            want.resize(k, 0);
            assert_eq!(rounded, want, "a row of {d_in}");
        }
    }

    /// Where AMX exists, the asm's sums are the model's (to the rounding of
    /// each pair's sum).
    #[test]
    fn the_tiles_compute_what_the_model_computes() {
        if !available() {
            eprintln!("no AMX tiles here: {}", unavailable_because().unwrap_or(""));
            return;
        }
        for (rows, d_in, d_out) in [(1, 5usize, 7usize), (33, 33, 48), (97, 96, 129)] {
            let k = d_in.next_multiple_of(STEP);
            let count = d_out.div_ceil(TILE);
            let (panels, _) = layer(count, d_in, d_out);
            let x: Vec<Vec<f32>> = (0..rows)
                .map(|r| (0..d_in).map(|i| off_the_grid(r * 31 + i)).collect())
                .collect();
            let x_bf16 = rows_in_bf16(&x, k);
            // SAFETY: tiles are available (checked above); as for the model.
            let paired = unsafe { pair_panels(&panels, count, d_in, k) };
            let mut want = vec![0f32; rows * d_out];
            multiply_model(
                &x_bf16,
                rows,
                k,
                &paired,
                count.div_ceil(2),
                &mut want,
                d_out,
                0,
            );
            let mut got = vec![f32::NAN; rows * d_out];
            let shared = SharedOutput(got.as_mut_ptr());
            // SAFETY: as [`multiply`] asks, checked above.
            unsafe {
                multiply(
                    &x_bf16,
                    rows,
                    k,
                    &paired,
                    count.div_ceil(2),
                    &shared,
                    d_out,
                    0,
                )
            };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "element {i}: {g} against {w}"
                );
            }
        }
    }

    /// AMX in CPUID is not enough: the OS must have enabled the tile state
    /// in XCR0 before Linux is even asked for it, and each missing part is
    /// named.
    #[test]
    fn tiles_need_the_cpu_the_os_and_linux() {
        let amx = Some((1 << 22) | (1 << 24));
        let tile_state = Some((1u64 << 17) | (1 << 18) | 0xe7);
        let never_asked = || -> bool { panic!("Linux asked before the rest held") };
        assert!(tiles_usable(amx, tile_state, true, || true).is_ok());
        for (edx, xcr0, avx512, says) in [
            (Some(1 << 24), tile_state, true, "AMX-BF16"),
            (None, tile_state, true, "AMX-TILE"),
            (amx, Some(0xe7), true, "XCR0"),
            (amx, None, true, "XCR0"),
            (amx, Some(0xe7 | (1 << 17)), true, "XCR0"),
            (amx, tile_state, false, "AVX-512"),
        ] {
            let why = tiles_usable(edx, xcr0, avx512, never_asked).unwrap_err();
            assert!(why.contains(says), "{why}");
        }
        assert!(tiles_usable(amx, tile_state, true, || false)
            .unwrap_err()
            .contains("arch_prctl"));
    }
}
