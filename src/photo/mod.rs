//! Photo bytes → the pixel tensor Chinese-CLIP takes.
//!
//! Decoding is bounded (`image::Limits`, a megapixel cap checked from the
//! header before any pixel is decoded), applies the EXIF orientation (phone
//! photos), and takes the first frame of an animation. Preprocessing follows
//! `ChineseCLIPImageProcessor`, read from the model's `preprocessor_config.json`:
//! RGB, shortest side resized to 224 (bicubic, as Pillow computes it), centre crop 224 × 224, × 1/255,
//! normalised with CLIP's mean and standard deviation, channels first.

use std::io::Cursor;
use std::path::Path;

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits};
use serde::Deserialize;

use crate::error::{ModelError, PhotoError};

mod resample;

/// What a photo may cost to decode.
#[derive(Debug, Clone, Copy)]
pub struct PhotoLimits {
    pub max_bytes: u64,
    pub max_megapixels: f64,
}

/// Decodes a photo within the limits, upright, first frame.
pub fn decode(bytes: &[u8], limits: PhotoLimits) -> Result<DynamicImage, PhotoError> {
    if bytes.is_empty() {
        return Err(PhotoError::Empty);
    }
    if bytes.len() as u64 > limits.max_bytes {
        return Err(PhotoError::TooLarge {
            bytes: bytes.len() as u64,
            max: limits.max_bytes,
        });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PhotoError::Unreadable(e.to_string()))?;
    if reader.format().is_none() {
        return Err(PhotoError::NotAnImage);
    }
    let mut decoder = reader.into_decoder().map_err(classify)?;
    let (w, h) = decoder.dimensions();
    let megapixels = w as f64 * h as f64 / 1e6;
    if megapixels > limits.max_megapixels {
        return Err(PhotoError::TooManyPixels {
            width: w,
            height: h,
            max_megapixels: limits.max_megapixels,
        });
    }
    let mut bounds = Limits::default();
    bounds.max_image_width = Some(w);
    bounds.max_image_height = Some(h);
    // RGBA in 16 bits a channel at most, plus the decoder's own buffers.
    bounds.max_alloc = Some((limits.max_megapixels * 1e6 * 8.0) as u64 + (64 << 20));
    decoder.set_limits(bounds).map_err(classify)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(classify)?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn classify(e: image::ImageError) -> PhotoError {
    match e {
        image::ImageError::Unsupported(u) => PhotoError::Unsupported(u.to_string()),
        image::ImageError::Limits(l) => {
            PhotoError::Unreadable(format!("over the decoding limits: {l}"))
        }
        other => PhotoError::Unreadable(other.to_string()),
    }
}

/// `preprocessor_config.json`; missing keys take `ChineseCLIPImageProcessor`'s defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Preprocessor {
    pub(crate) do_resize: bool,
    pub(crate) size: Size,
    pub(crate) do_center_crop: bool,
    pub(crate) crop_size: Size,
    pub(crate) rescale_factor: f32,
    pub(crate) do_normalize: bool,
    pub(crate) image_mean: [f32; 3],
    pub(crate) image_std: [f32; 3],
}

/// `{"shortest_edge": 224}` or `{"height": 224, "width": 224}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Size {
    pub(crate) shortest_edge: Option<u32>,
    pub(crate) height: Option<u32>,
    pub(crate) width: Option<u32>,
}

impl Default for Preprocessor {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: Size {
                shortest_edge: Some(224),
                ..Size::default()
            },
            do_center_crop: true,
            crop_size: Size {
                shortest_edge: None,
                height: Some(224),
                width: Some(224),
            },
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
        }
    }
}

impl Preprocessor {
    /// Reads `preprocessor_config.json` from a model directory, or the defaults when absent.
    pub(crate) fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("preprocessor_config.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|source| ModelError::Json { path, source })
            }
            Err(_) => Ok(Self::default()),
        }
    }

    /// `(3, side, side)` pixels, normalised.
    pub fn pixels(&self, img: &DynamicImage, device: &Device) -> Result<Tensor, ModelError> {
        let mut rgb = img.to_rgb8();
        if self.do_resize {
            let (w, h) = rgb.dimensions();
            let (nw, nh) = match (self.size.shortest_edge, self.size.height, self.size.width) {
                (Some(short), _, _) => {
                    // transformers: new_long = int(short * long / old_short)
                    if w <= h {
                        (short, (short as u64 * h as u64 / w as u64) as u32)
                    } else {
                        ((short as u64 * w as u64 / h as u64) as u32, short)
                    }
                }
                (None, Some(height), Some(width)) => (width, height),
                _ => (w, h),
            };
            if (nw, nh) != (w, h) {
                rgb = resample::resize_bicubic(&rgb, nw.max(1), nh.max(1));
            }
        }
        if self.do_center_crop {
            let (ch, cw) = (
                self.crop_size.height.unwrap_or(224),
                self.crop_size.width.unwrap_or(224),
            );
            let (w, h) = rgb.dimensions();
            let top = h.saturating_sub(ch) / 2;
            let left = w.saturating_sub(cw) / 2;
            rgb = image::imageops::crop_imm(&rgb, left, top, cw.min(w), ch.min(h)).to_image();
        }
        let (w, h) = rgb.dimensions();
        let plane = (w * h) as usize;
        let mut data = vec![0f32; 3 * plane];
        for (i, px) in rgb.pixels().enumerate() {
            for c in 0..3 {
                let mut v = px[c] as f32 * self.rescale_factor;
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                data[c * plane + i] = v;
            }
        }
        Ok(Tensor::from_vec(data, (3, h as usize, w as usize), device)?)
    }
}
