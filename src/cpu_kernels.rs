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

/// Whether this CPU has AVX-512F, for which the panel product has a kernel
/// of its own (the CPUs that have it have AVX2 and FMA too).
pub(crate) fn avx512f() -> bool {
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
    // 1.5 · 2²³: adding it rounds to an integer held in the mantissa's low bits.
    const ROUND: f32 = 12_582_912.0;
    // ln 2 in two parts, so that x − n·ln 2 keeps its low bits.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    // 2ⁿ from n's bits: n is in −126..=127 after the clamp.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// The output of a kernel whose parallel tasks write it at once, each its
/// own elements.
pub(crate) struct SharedOutput(pub(crate) *mut f32);

// SAFETY: the kernels that share one give each task elements of its own.
unsafe impl Sync for SharedOutput {}

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
}
