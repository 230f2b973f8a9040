//! What several test files share: the device and precision the parity tests
//! run on (CPU and f32 unless `YINGSHI_TEST_DEVICE` (`cuda:0`) and
//! `YINGSHI_TEST_DTYPE` (`bf16`) say otherwise, as tools/gpu_check.sh does on
//! a GPU), and a decompression bomb.

// Each test file uses a part of this module.
#![allow(dead_code)]

use candle_core::DType;
use yingshi::device::Placement;

pub fn placement() -> Placement {
    let device = std::env::var("YINGSHI_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let dtype = std::env::var("YINGSHI_TEST_DTYPE").unwrap_or_else(|_| "f32".into());
    Placement::parse(&device, &dtype).unwrap()
}

/// How far a result may stray from transformers' f32 one, relative to the
/// result's scale: bf16 keeps 8 bits of mantissa and f16 11, and the
/// rounding of every layer adds up.
pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-4,
        DType::F16 => 1e-2,
        _ => 5e-2,
    }
}

/// The least cosine to the f32 reference a feature vector may have.
pub fn min_cosine(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 0.999,
        _ => 0.99,
    }
}

/// The largest |a − b| over two vectors; NaN if any difference is NaN, so
/// that a `diff <= limit` check fails on it (`f32::max` would skip it).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| if d.is_nan() { d } else { m.max(d) })
}

/// The largest |x|, at least 1: the scale a relative tolerance is taken of.
pub fn scale(values: &[f32]) -> f32 {
    values.iter().fold(1f32, |m, x| m.max(x.abs()))
}

/// A PNG whose header claims `width × height` gray pixels, with a few bytes
/// of data: a decompression bomb as a decoder first sees it.
pub fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
        out
    };
    let mut header = width.to_be_bytes().to_vec();
    header.extend(height.to_be_bytes());
    header.extend([8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &header));
    // zlib of a few zero bytes.
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}
