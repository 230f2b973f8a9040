//! What the CPU kernels of our own share: the one-pass activations
//! ([`crate::activation`]), the panel product ([`crate::linear`]) and
//! Chinese-CLIP's attention (`embedding::layers`).

use candle_core::{CpuStorage, Layout, Result};

/// Whether this CPU has AVX2 and FMA, the features the kernels' fast paths
/// are compiled for (`is_x86_feature_detected!` caches its answer).
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The environment variable that keeps the kernels to those a CPU without
/// AVX-512 runs, on one that has it: `avx2`, as PyTorch's
/// `ATEN_CPU_CAPABILITY=avx2`. AMX tiles stay unused with it (they need
/// AVX-512 for their inputs), and `bench` limits the Python reference alike,
/// so that the AVX2 kernels of an AMD Zen 3 can be measured on an Intel Xeon.
const CPU_CAPABILITY_VAR: &str = "YINGSHI_CPU_CAPABILITY";

/// Whether this CPU has AVX-512F and [`CPU_CAPABILITY_VAR`] keeps it unused
/// (read once; another value is named in a warning and changes nothing).
pub(crate) fn avx512_held_back() -> bool {
    static HELD_BACK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HELD_BACK.get_or_init(|| {
        let asked = match std::env::var(CPU_CAPABILITY_VAR) {
            Ok(value) if value.eq_ignore_ascii_case("avx2") => true,
            Ok(value) => {
                tracing::warn!("{CPU_CAPABILITY_VAR}={value}: only avx2 is known; ignored");
                false
            }
            Err(_) => false,
        };
        asked && avx512f_on_this_cpu()
    })
}

/// Whether this CPU has AVX-512F, for which the panel product has a kernel
/// of its own (the CPUs that have it have AVX2 and FMA too), and
/// [`CPU_CAPABILITY_VAR`] does not hold it back.
pub(crate) fn avx512f() -> bool {
    avx512f_on_this_cpu() && !avx512_held_back()
}

fn avx512f_on_this_cpu() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The elements of an f32 tensor that lies contiguous in its storage; an
/// error naming the kernel (`kernel`) for any other.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    kernel: &str,
) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        (CpuStorage::F32(_), None) => candle_core::bail!("{kernel} of a strided tensor"),
        _ => candle_core::bail!("{kernel} of a tensor not in f32"),
    }
}

/// eˣ: Cephes' `expf` (a degree-5 polynomial after taking out n·ln 2), within
/// 2 ulp over the clamped range; no branches, so it vectorises.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_LOWEST, EXP_HIGHEST);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_POLYNOMIAL[0];
    for c in &EXP_POLYNOMIAL[1..] {
        p = p * r + c;
    }
    let e = p * r * r + r + 1.0;
    // 2ⁿ from n's bits: n is in −126..=127 after the clamp.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// [`exp`] of 16 floats at once, by the same operations in the same order,
/// so each lane gets [`exp`]'s bits.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let all = _mm512_set1_ps;
    let x = _mm512_min_ps(_mm512_max_ps(x, all(EXP_LOWEST)), all(EXP_HIGHEST));
    let shifted = _mm512_add_ps(_mm512_mul_ps(x, all(std::f32::consts::LOG2_E)), all(ROUND));
    let n = _mm512_sub_ps(shifted, all(ROUND));
    let r = _mm512_sub_ps(
        _mm512_sub_ps(x, _mm512_mul_ps(n, all(LN2_HI))),
        _mm512_mul_ps(n, all(LN2_LO)),
    );
    let mut p = all(EXP_POLYNOMIAL[0]);
    for &c in &EXP_POLYNOMIAL[1..] {
        p = _mm512_add_ps(_mm512_mul_ps(p, r), all(c));
    }
    let e = _mm512_add_ps(
        _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r),
        all(1.0),
    );
    let n_bits = _mm512_sub_epi32(
        _mm512_castps_si512(shifted),
        _mm512_set1_epi32(ROUND.to_bits() as i32),
    );
    let two_to_n = _mm512_slli_epi32::<23>(_mm512_add_epi32(n_bits, _mm512_set1_epi32(127)));
    _mm512_mul_ps(e, _mm512_castsi512_ps(two_to_n))
}

/// [`exp`]'s range: below it eˣ is 0 in f32 (denormals aside), above it ∞.
const EXP_LOWEST: f32 = -87.3;
const EXP_HIGHEST: f32 = 88.3;
/// 1.5 · 2²³: adding it rounds to an integer held in the mantissa's low bits.
const ROUND: f32 = 12_582_912.0;
/// ln 2 in two parts, so that x − n·ln 2 keeps its low bits.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// The polynomial's coefficients, highest degree first.
const EXP_POLYNOMIAL: [f32; 6] = [
    1.987_569_2e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];

/// The output of a kernel whose parallel tasks write it at once, each its
/// own elements.
pub(crate) struct SharedOutput(pub(crate) *mut f32);

// SAFETY: the kernels that share one give each task elements of its own.
unsafe impl Sync for SharedOutput {}

/// `len` floats that `write` writes, without zeroing them first (a pass
/// over the output of its own).
///
/// # Safety
/// `write` writes every one of the `len` floats from the start it is given.
pub(crate) unsafe fn written_whole(len: usize, write: impl FnOnce(&SharedOutput)) -> Vec<f32> {
    let mut out = Vec::<f32>::with_capacity(len);
    write(&SharedOutput(out.as_mut_ptr()));
    // SAFETY: `write` initialised all `len` (the caller's promise), within
    // the capacity.
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        for x in (-87_000..=88_000).map(|i| i as f32 / 1_000.0) {
            let (got, want) = (exp(x), x.exp());
            let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {got}, libm {want}: {ulp} ulp");
        }
        assert_eq!(exp(-1e4), exp(-87.3));
        assert!(exp(1e4).is_finite());
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp16_gives_exps_bits() {
        use std::arch::x86_64::*;
        if !avx512f() {
            eprintln!("no AVX-512 here: exp16 does not run");
            return;
        }
        let xs: Vec<f32> = (-90_000..=90_000)
            .map(|i| i as f32 / 1_000.0)
            .chain([f32::MIN, f32::MAX, -0.0, 1e-30])
            .collect();
        for chunk in xs.chunks(16) {
            let mut lanes = [0f32; 16];
            lanes[..chunk.len()].copy_from_slice(chunk);
            let mut got = [0f32; 16];
            // SAFETY: the CPU has AVX-512F; both arrays hold 16 floats.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp16(_mm512_loadu_ps(lanes.as_ptr()))) };
            for (x, e) in lanes.iter().zip(got) {
                assert_eq!(
                    e.to_bits(),
                    exp(*x).to_bits(),
                    "exp16({x}) = {e}, exp {}",
                    exp(*x)
                );
            }
        }
    }
}
