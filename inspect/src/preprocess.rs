//! Crop, hash and normalise the region of interest.

use sha2::{Digest, Sha256};

/// A borrowed grey-scale image (8 bits per pixel, row-major, no padding).
/// Cameras' frames are lent to the inspector as this view.
#[derive(Clone, Copy, Debug)]
pub struct GrayImage<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` bytes.
    pub pixels: &'a [u8],
}

impl GrayImage<'_> {
    /// Is the pixel buffer as long as the geometry says?
    pub fn is_consistent(&self) -> bool {
        self.pixels.len() as u64 == self.width as u64 * self.height as u64
    }
}

/// A rectangle of the frame, in pixels from the top-left corner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roi {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

impl Roi {
    /// Does the ROI fit a `width`×`height` frame?
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.x.checked_add(self.w).is_some_and(|r| r <= width)
            && self.y.checked_add(self.h).is_some_and(|b| b <= height)
    }
}

/// Pixel normalisation: `x = (p / 255 − mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// Mean subtracted after scaling to [0, 1].
    pub mean: f32,
    /// Divisor.
    pub std: f32,
}

/// Write the normalised ROI into `out` (row-major, `roi.w * roi.h` values).
///
/// # Panics
/// If the ROI does not fit the frame or `out` has the wrong length; the
/// [`crate::Inspector`] checks both before calling.
pub fn normalize_roi(frame: &GrayImage<'_>, roi: Roi, norm: Normalization, out: &mut [f32]) {
    assert!(
        roi.fits(frame.width, frame.height),
        "ROI {roi:?} outside {}x{}",
        frame.width,
        frame.height
    );
    assert_eq!(out.len(), (roi.w * roi.h) as usize);
    let scale = 1.0 / (255.0 * norm.std);
    let offset = norm.mean / norm.std;
    for row in 0..roi.h {
        let src = ((roi.y + row) * frame.width + roi.x) as usize;
        let dst = (row * roi.w) as usize;
        for (o, &p) in out[dst..dst + roi.w as usize]
            .iter_mut()
            .zip(&frame.pixels[src..src + roi.w as usize])
        {
            *o = p as f32 * scale - offset;
        }
    }
}

/// SHA-256 of the ROI's pixels (row by row), first 16 bytes as hex: lets an
/// auditor prove which pixels a verdict was based on.
pub fn roi_hash(frame: &GrayImage<'_>, roi: Roi) -> String {
    let mut h = Sha256::new();
    for row in 0..roi.h {
        let src = ((roi.y + row) * frame.width + roi.x) as usize;
        h.update(&frame.pixels[src..src + roi.w as usize]);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixels() -> Vec<u8> {
        (0..(8 * 6)).map(|i| (i * 5) as u8).collect()
    }

    #[test]
    fn crops_and_normalises() {
        let px = pixels();
        let f = GrayImage {
            width: 8,
            height: 6,
            pixels: &px,
        };
        let roi = Roi { x: 2, y: 1, w: 3, h: 2 };
        let mut out = [0.0f32; 6];
        normalize_roi(&f, roi, Normalization { mean: 0.5, std: 0.25 }, &mut out);
        let expect = |p: u8| (p as f32 / 255.0 - 0.5) / 0.25;
        assert!((out[0] - expect(px[8 + 2])).abs() < 1e-6);
        assert!((out[5] - expect(px[2 * 8 + 4])).abs() < 1e-6);
    }

    #[test]
    fn hash_covers_only_the_roi() {
        let mut px = pixels();
        let roi = Roi { x: 2, y: 1, w: 3, h: 2 };
        let hash = |px: &[u8]| {
            roi_hash(
                &GrayImage {
                    width: 8,
                    height: 6,
                    pixels: px,
                },
                roi,
            )
        };
        let h0 = hash(&px);
        px[0] ^= 0xff; // outside the ROI
        assert_eq!(hash(&px), h0);
        px[8 + 3] ^= 0xff; // inside
        assert_ne!(hash(&px), h0);
        assert_eq!(h0.len(), 32);
    }

    #[test]
    fn fits_checks_overflow() {
        assert!(
            Roi {
                x: 16,
                y: 8,
                w: 64,
                h: 64
            }
            .fits(96, 80)
        );
        assert!(
            !Roi {
                x: 40,
                y: 8,
                w: 64,
                h: 64
            }
            .fits(96, 80)
        );
        assert!(
            !Roi {
                x: u32::MAX,
                y: 0,
                w: 2,
                h: 1
            }
            .fits(96, 80)
        );
    }
}
