//! Bad photos get clear errors, never a panic; phone photos come upright;
//! animations give their first frame.

mod common;

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use yingshi::error::PhotoError;
use yingshi::photo::{decode, PhotoLimits};

const LIMITS: PhotoLimits = PhotoLimits {
    max_bytes: 25 << 20,
    max_megapixels: 40.0,
};

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

fn photo() -> RgbImage {
    RgbImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    })
}

#[test]
fn empty_not_an_image_and_truncated() {
    assert!(matches!(decode(&[], LIMITS), Err(PhotoError::Empty)));
    assert!(matches!(
        decode(b"just some text, no picture", LIMITS),
        Err(PhotoError::NotAnImage)
    ));
    for format in [ImageFormat::Png, ImageFormat::Jpeg] {
        let bytes = encode(&photo(), format);
        let cut = &bytes[..bytes.len() / 2];
        let err = decode(cut, LIMITS).unwrap_err();
        assert!(
            matches!(err, PhotoError::Unreadable(_)),
            "{format:?}: {err:?}"
        );
    }
}

#[test]
fn unsupported_format() {
    // A Photoshop file: recognised by its signature, but no decoder is built in.
    let mut psd = b"8BPS\x00\x01".to_vec();
    psd.extend([0u8; 40]);
    let err = decode(&psd, LIMITS).unwrap_err();
    assert!(
        matches!(err, PhotoError::NotAnImage | PhotoError::Unsupported(_)),
        "{err:?}"
    );
}

#[test]
fn too_many_bytes_or_pixels() {
    let bytes = encode(&photo(), ImageFormat::Png);
    let small = PhotoLimits {
        max_bytes: 10,
        ..LIMITS
    };
    assert!(matches!(
        decode(&bytes, small),
        Err(PhotoError::TooLarge { .. })
    ));
    let tiny = PhotoLimits {
        max_megapixels: 0.0005,
        ..LIMITS
    };
    assert!(matches!(
        decode(&bytes, tiny),
        Err(PhotoError::TooManyPixels {
            width: 40,
            height: 20,
            ..
        })
    ));
}

#[test]
fn decompression_bomb_is_refused_before_decoding() {
    // A PNG header that claims 60000 × 60000 pixels (3.6 gigapixels).
    let png = common::png_claiming(60_000, 60_000);
    let err = decode(&png, LIMITS).unwrap_err();
    assert!(
        matches!(err, PhotoError::TooManyPixels { width: 60000, .. }),
        "{err:?}"
    );
}

#[test]
fn exif_orientation_turns_the_photo_upright() {
    let jpeg = encode(&photo(), ImageFormat::Jpeg);
    // APP1 Exif segment: little-endian TIFF, one IFD entry, Orientation (0x0112) = 6 (rotate 90° clockwise).
    let mut tiff = b"II*\x00\x08\x00\x00\x00".to_vec();
    tiff.extend(1u16.to_le_bytes());
    tiff.extend(0x0112u16.to_le_bytes());
    tiff.extend(3u16.to_le_bytes());
    tiff.extend(1u32.to_le_bytes());
    tiff.extend(6u16.to_le_bytes());
    tiff.extend(0u16.to_le_bytes());
    tiff.extend(0u32.to_le_bytes());
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend(&tiff);
    let mut with_exif = jpeg[..2].to_vec();
    with_exif.extend([0xFF, 0xE1]);
    with_exif.extend(((app1.len() + 2) as u16).to_be_bytes());
    with_exif.extend(&app1);
    with_exif.extend(&jpeg[2..]);

    let plain = decode(&jpeg, LIMITS).unwrap();
    assert_eq!((plain.width(), plain.height()), (40, 20));
    let upright = decode(&with_exif, LIMITS).unwrap().to_rgb8();
    assert_eq!((upright.width(), upright.height()), (20, 40));
    // Rotated clockwise: the left (red) half is now on top.
    let top = upright.get_pixel(10, 5);
    let bottom = upright.get_pixel(10, 35);
    assert!(top[0] > 200 && top[2] < 60, "{top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "{bottom:?}");
}

#[test]
fn animation_gives_its_first_frame() {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame, Rgba, RgbaImage};
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new(&mut bytes);
        for color in [[0, 200, 0, 255], [200, 0, 0, 255]] {
            let frame = Frame::from_parts(
                RgbaImage::from_pixel(8, 8, Rgba(color)),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            );
            enc.encode_frame(frame).unwrap();
        }
    }
    let img = decode(&bytes, LIMITS).unwrap().to_rgb8();
    let p = img.get_pixel(4, 4);
    assert!(p[1] > 150 && p[0] < 50, "{p:?}");
}
