//! The feed-forward activations of the poet's T5 and Chinese-CLIP's two towers.
//!
//! On the CPU in f32 each is one pass over the tensor, split across the
//! cores, its exponential a polynomial the compiler vectorises (with AVX2 and
//! FMA where the CPU has them, chosen at run time). candle computes them as
//! three to six passes (quick GELU: scale, sigmoid, product), one core each
//! and a fresh tensor per pass, with libm's `erff`/`tanhf` one element at a
//! time: with 8 photos in a batch, the vision tower's activations took 650 ms
//! of its 4.5 s on a 2-core AMD EPYC. The T5's gated feed-forward also takes
//! its product with the gate in the same pass. Elsewhere (a GPU, bf16) the
//! activations are candle's own.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_kernels::{avx2_fma, contiguous_f32, exp};

/// Elements below which one core does the pass: splitting costs more.
const PARALLEL_FROM: usize = 1 << 15;
/// Elements per parallel task.
const CHUNK: usize = 1 << 13;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// x · Φ(x), with the error function (transformers' `gelu`).
    GeluErf,
    /// 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))) (`gelu_new`, T5's).
    GeluTanh,
    /// x · σ(1.702x) (CLIP's `quick_gelu`).
    QuickGelu,
    /// x · σ(x) (`gated-silu` T5s).
    Silu,
    Relu,
}

impl From<candle_transformers::models::chinese_clip::Activation> for Activation {
    fn from(act: candle_transformers::models::chinese_clip::Activation) -> Self {
        use candle_transformers::models::chinese_clip::Activation as Clip;
        match act {
            Clip::Gelu => Self::GeluErf,
            Clip::GeluNew => Self::GeluTanh,
            Clip::QuickGelu => Self::QuickGelu,
            Clip::Relu => Self::Relu,
        }
    }
}

impl TryFrom<candle_nn::Activation> for Activation {
    type Error = candle_core::Error;

    fn try_from(act: candle_nn::Activation) -> Result<Self> {
        use candle_nn::Activation as Nn;
        match act {
            Nn::Gelu => Ok(Self::GeluErf),
            Nn::NewGelu | Nn::GeluPytorchTanh => Ok(Self::GeluTanh),
            Nn::Silu => Ok(Self::Silu),
            Nn::Relu => Ok(Self::Relu),
            other => candle_core::bail!("the feed-forward activation {other:?} is not supported"),
        }
    }
}

impl Activation {
    /// `act(xs)`.
    pub(crate) fn forward(self, xs: &Tensor) -> Result<Tensor> {
        if self.is_fused_for(xs) {
            xs.contiguous()?.apply_op1_no_bwd(&Pass(self))
        } else {
            self.candle(xs)
        }
    }

    /// `act(xs) · gate`, elementwise, as a gated feed-forward takes it.
    pub(crate) fn forward_gated(self, xs: &Tensor, gate: &Tensor) -> Result<Tensor> {
        if self.is_fused_for(xs) && gate.dtype() == DType::F32 && gate.device().is_cpu() {
            xs.contiguous()?
                .apply_op2_no_bwd(&gate.contiguous()?, &GatedPass(self))
        } else {
            self.candle(xs)? * gate
        }
    }

    fn is_fused_for(self, xs: &Tensor) -> bool {
        xs.device().is_cpu() && xs.dtype() == DType::F32
    }

    /// candle's own ops, as transformers writes each activation.
    fn candle(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::GeluErf => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
            Self::Silu => xs.silu(),
            Self::Relu => xs.relu(),
        }
    }
}

struct Pass(Activation);

impl CustomOp1 for Pass {
    fn name(&self) -> &'static str {
        "activation"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(storage, layout, "activation")?;
        let mut out = vec![0f32; xs.len()];
        match self.0 {
            Activation::GeluErf => apply(&mut out, xs, xs, |x, _| gelu_erf(x)),
            Activation::GeluTanh => apply(&mut out, xs, xs, |x, _| gelu_tanh(x)),
            Activation::QuickGelu => apply(&mut out, xs, xs, |x, _| quick_gelu(x)),
            Activation::Silu => apply(&mut out, xs, xs, |x, _| x * sigmoid(x)),
            Activation::Relu => apply(&mut out, xs, xs, |x, _| x.max(0.0)),
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

struct GatedPass(Activation);

impl CustomOp2 for GatedPass {
    fn name(&self) -> &'static str {
        "gated-activation"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!("gate {:?} for activations {:?}", l2.shape(), l1.shape());
        }
        let (xs, gate) = (
            contiguous_f32(s1, l1, "activation")?,
            contiguous_f32(s2, l2, "activation's gate")?,
        );
        let mut out = vec![0f32; xs.len()];
        match self.0 {
            Activation::GeluErf => apply(&mut out, xs, gate, |x, g| gelu_erf(x) * g),
            Activation::GeluTanh => apply(&mut out, xs, gate, |x, g| gelu_tanh(x) * g),
            Activation::QuickGelu => apply(&mut out, xs, gate, |x, g| quick_gelu(x) * g),
            Activation::Silu => apply(&mut out, xs, gate, |x, g| x * sigmoid(x) * g),
            Activation::Relu => apply(&mut out, xs, gate, |x, g| x.max(0.0) * g),
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `out[i] = f(a[i], b[i])`, split across the cores when long enough.
fn apply(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Copy) {
    if out.len() < PARALLEL_FROM {
        map(out, a, b, f);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(out, (a, b))| map(out, a, b, f));
    }
}

/// One chunk, in the widest vectors this CPU has.
fn map(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { map_avx2(out, a, b, f) };
    }
    map_portable(out, a, b, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn map_avx2(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    map_portable(out, a, b, f)
}

#[inline(always)]
fn map_portable(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Copy) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn quick_gelu(x: f32) -> f32 {
    x * sigmoid(1.702 * x)
}

/// 0.5x(1 + tanh(u)) = x · σ(2u): the same function, without a tanh.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const TWO_SQRT_TWO_OVER_PI: f32 = 1.595_769_1;
    x * sigmoid(TWO_SQRT_TWO_OVER_PI * (x + 0.044715 * x * x * x))
}

/// x · Φ(x) = x · (1 − ½erfc(x/√2)) for x ≥ 0, x · ½erfc(|x|/√2) below, so
/// that neither side loses digits to a difference. erfc after Numerical
/// Recipes' `erfcc` (a Chebyshev fit, relative error under 1.2e-7 in exact
/// arithmetic); in f32 the rounding of z² adds about z² · 6e-8 relative
/// error in the far negative tail (1e-5 at x = −13, where GELU is 1e-37).
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_9;
    p = p * t - 1.135_203_98;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_68;
    p = p * t - 1.265_512_23;
    let half_erfc = 0.5 * t * exp(-z * z + p);
    let phi = if x >= 0.0 { 1.0 - half_erfc } else { half_erfc };
    x * phi
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    /// erfc(a) for a ≥ 0 in f64 (Abramowitz & Stegun 7.1.26 is too coarse
    /// for a reference): 1 − erf's Maclaurin series below 3, the continued
    /// fraction above, which keeps its relative accuracy far into the tail.
    fn erfc64(a: f64) -> f64 {
        if a < 3.0 {
            let (mut term, mut sum) = (a, a);
            for n in 1..200 {
                term *= -a * a / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            1.0 - sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut fraction = 0.0;
            for k in (1..120).rev() {
                fraction = (k as f64 / 2.0) / (a + fraction);
            }
            (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + fraction)
        }
    }

    /// x · Φ(x), from erfc on each side as the fused version, so that the
    /// reference itself does not cancel in the negative tail.
    fn gelu_erf64(x: f64) -> f64 {
        let half_erfc = 0.5 * erfc64(x.abs() / std::f64::consts::SQRT_2);
        x * if x >= 0.0 { 1.0 - half_erfc } else { half_erfc }
    }

    fn sigmoid64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn grid() -> Vec<f32> {
        let mut xs: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 / 2_000.0).collect();
        xs.extend([
            -1e4, -300.0, -90.0, -88.0, 0.0, -0.0, 1e-30, 88.0, 90.0, 300.0, 1e4,
        ]);
        xs
    }

    /// Each fused activation against its definition in f64: within 2e-6 of
    /// the value where it is above 1 in size, within 2e-6 absolute below,
    /// and for erf GELU's negative tail down to x = −10 (values down to
    /// 1e-22) within 1e-5 relative; NaN stays NaN.
    #[test]
    fn activations_match_their_definitions() {
        let sqrt_two_over_pi = (2.0 / std::f64::consts::PI).sqrt();
        let cases: [(&str, fn(f32) -> f32, fn(f64, f64) -> f64); 4] = [
            ("gelu_erf", gelu_erf, |x, _| gelu_erf64(x)),
            ("gelu_tanh", gelu_tanh, |x, c| {
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }),
            ("quick_gelu", quick_gelu, |x, _| x * sigmoid64(1.702 * x)),
            ("silu", |x| x * sigmoid(x), |x, _| x * sigmoid64(x)),
        ];
        for (name, fused, exact) in cases {
            for x in grid() {
                let want = exact(x as f64, sqrt_two_over_pi);
                let got = fused(x) as f64;
                assert!(
                    (got - want).abs() <= 2e-6 * want.abs().max(1.0),
                    "{name}({x}) = {got}, not {want}"
                );
            }
            assert!(fused(f32::NAN).is_nan(), "{name}(NaN)");
        }
        for x in (-10_000..0).map(|i| i as f32 / 1_000.0) {
            let want = gelu_erf64(x as f64);
            let got = gelu_erf(x) as f64;
            assert!(
                (got - want).abs() <= 1e-5 * want.abs(),
                "gelu_erf({x}) = {got}, not {want}"
            );
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar())
            .unwrap()
    }

    /// The passes, split across threads or not, gated or not, equal candle's
    /// own ops to within float rounding, and keep the shape.
    #[test]
    fn passes_agree_with_candle() {
        let all = [
            Activation::GeluErf,
            Activation::GeluTanh,
            Activation::QuickGelu,
            Activation::Silu,
            Activation::Relu,
        ];
        for len in [7, PARALLEL_FROM + 3 * CHUNK + 5] {
            let xs = Tensor::randn(0f32, 3.0, (len,), &Device::Cpu).unwrap();
            let gate = Tensor::randn(0f32, 1.0, (len,), &Device::Cpu).unwrap();
            for act in all {
                let want = act.candle(&xs).unwrap();
                let diff = max_diff(&act.forward(&xs).unwrap(), &want);
                assert!(diff < 1e-5, "{act:?}, {len} elements: off by {diff}");
                let gated = act.forward_gated(&xs, &gate).unwrap();
                let diff = max_diff(&gated, &(want * &gate).unwrap());
                assert!(diff < 1e-5, "{act:?} gated, {len} elements: off by {diff}");
            }
        }
        // A transposed (strided) input is read in its logical order.
        let matrix = Tensor::randn(0f32, 1.0, (3, 5), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        let out = Activation::GeluErf.forward(&matrix).unwrap();
        assert_eq!(out.dims(), &[5, 3]);
        let want = Activation::GeluErf
            .candle(&matrix.contiguous().unwrap())
            .unwrap();
        assert!(max_diff(&out, &want) < 1e-5);
    }
}
