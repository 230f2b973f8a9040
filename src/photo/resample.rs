//! Bicubic resizing that reproduces Pillow's `Image.resize(…, BICUBIC)` on
//! 8-bit images bit for bit: the image processor of the reference pipeline
//! resizes with Pillow, and CLIP features are sensitive to the difference
//! between resamplers (the `image` crate's Catmull-Rom filters vertically first
//! and rounds differently).
//!
//! Pillow (`libImaging/Resample.c`): a cubic kernel with a = -0.5, support
//! widened by the scale when shrinking, coefficients normalised and held in
//! fixed point (22 fractional bits); a horizontal pass, then a vertical one,
//! each rounding to 8 bits.

use image::{Rgb, RgbImage};

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output position: the first input index and the fixed-point weights.
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let scaled = w * (1u64 << PRECISION_BITS) as f64;
                    (if w < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i64
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes to `width × height` as Pillow's bicubic resize does.
pub(crate) fn resize_bicubic(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = src.dimensions();
    let mut img = src.clone();
    if width != w {
        let coeffs = coefficients(w, width);
        img = RgbImage::from_fn(width, h, |x, y| {
            let (start, k) = &coeffs[x as usize];
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &weight) in k.iter().enumerate() {
                let px = src.get_pixel((start + i) as u32, y);
                for c in 0..3 {
                    acc[c] += px[c] as i64 * weight;
                }
            }
            Rgb(acc.map(clip8))
        });
    }
    if height != h {
        let coeffs = coefficients(h, height);
        let horizontal = img;
        img = RgbImage::from_fn(width, height, |x, y| {
            let (start, k) = &coeffs[y as usize];
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, &weight) in k.iter().enumerate() {
                let px = horizontal.get_pixel(x, (start + i) as u32);
                for c in 0..3 {
                    acc[c] += px[c] as i64 * weight;
                }
            }
            Rgb(acc.map(clip8))
        });
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_identity_keeps_pixels() {
        for (i, o) in [(640, 224), (224, 640), (300, 224), (7, 3)] {
            for (_, k) in coefficients(i, o) {
                let sum: i64 = k.iter().sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{i}->{o}: {sum}"
                );
            }
        }
        let img = RgbImage::from_fn(9, 5, |x, y| Rgb([(x * 20) as u8, (y * 40) as u8, 7]));
        assert_eq!(resize_bicubic(&img, 9, 5), img);
        // A flat image stays flat at any size.
        let flat = RgbImage::from_pixel(31, 17, Rgb([90, 120, 200]));
        assert!(resize_bicubic(&flat, 12, 40)
            .pixels()
            .all(|p| *p == Rgb([90, 120, 200])));
    }
}
