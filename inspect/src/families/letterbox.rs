//! The letterbox: fit a frame (or its ROI) into a detector's square input
//! without distorting it, and map the detector's boxes back.
//!
//! The geometry is Ultralytics' `LetterBox` (centred, scale-up allowed) and
//! `scale_boxes`, so a YOLOv8 model sees what it saw in training:
//!
//! - `r = min(dst_w / src_w, dst_h / src_h)`;
//! - the image is resized to `round(src_w · r) × round(src_h · r)`
//!   (round half to even, as Python's `round`), bilinearly with pixel
//!   centres aligned (OpenCV's `INTER_LINEAR`);
//! - it is padded with grey 114 to `dst_w × dst_h`, `left = round(dw/2 − 0.1)`
//!   and `top = round(dh/2 − 0.1)` pixels before it;
//! - a point `(x, y)` of the model's input is `((x − left) / r, (y − top) / r)`
//!   in the source, clipped to the source's bounds.
//!
//! Pixel values become `p / 255` in [0, 1]; a grey frame is repeated into
//! every channel of a 3-channel (RGB) model.

use crate::preprocess::{GrayImage, Roi};

/// The grey YOLO pads with (114 of 255).
pub const PAD_GREY: u8 = 114;

/// How a source rectangle sits in a detector's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    /// Source width, px.
    pub src_w: u32,
    /// Source height, px.
    pub src_h: u32,
    /// Model input width, px.
    pub dst_w: u32,
    /// Model input height, px.
    pub dst_h: u32,
    /// Scale from source to input pixels.
    pub gain: f64,
    /// Width of the resized image, px.
    pub new_w: u32,
    /// Height of the resized image, px.
    pub new_h: u32,
    /// Padding left of the image, px.
    pub left: u32,
    /// Padding above the image, px.
    pub top: u32,
}

impl Letterbox {
    /// The letterbox of a `src_w × src_h` source in a `dst_w × dst_h` input.
    /// All sizes must be non-zero (the caller checks shapes at load).
    pub fn new(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Self {
        assert!(src_w > 0 && src_h > 0 && dst_w > 0 && dst_h > 0, "empty letterbox");
        let gain = (f64::from(dst_h) / f64::from(src_h)).min(f64::from(dst_w) / f64::from(src_w));
        let new_w = ((f64::from(src_w) * gain).round_ties_even() as u32).clamp(1, dst_w);
        let new_h = ((f64::from(src_h) * gain).round_ties_even() as u32).clamp(1, dst_h);
        let dw = f64::from(dst_w - new_w) / 2.0;
        let dh = f64::from(dst_h - new_h) / 2.0;
        Self {
            src_w,
            src_h,
            dst_w,
            dst_h,
            gain,
            new_w,
            new_h,
            left: (dw - 0.1).round_ties_even().max(0.0) as u32,
            top: (dh - 0.1).round_ties_even().max(0.0) as u32,
        }
    }

    /// A point of the model's input in source pixels, clipped to the source.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = (f64::from(x) - f64::from(self.left)) / self.gain;
        let sy = (f64::from(y) - f64::from(self.top)) / self.gain;
        (
            sx.clamp(0.0, f64::from(self.src_w)) as f32,
            sy.clamp(0.0, f64::from(self.src_h)) as f32,
        )
    }

    /// Values of the input tensor for `channels` channels (`[C, H, W]`).
    pub fn input_len(&self, channels: usize) -> usize {
        channels * self.dst_w as usize * self.dst_h as usize
    }

    /// Write `roi` of `frame` into `out` (`[channels, dst_h, dst_w]`,
    /// channel-major), letterboxed and scaled to [0, 1].
    ///
    /// # Panics
    /// If the ROI is not this letterbox's source size or does not fit the
    /// frame, or `out` is not [`Letterbox::input_len`] long; the inspector
    /// checks all three before it calls.
    pub fn fill(&self, frame: &GrayImage<'_>, roi: Roi, channels: usize, out: &mut [f32]) {
        assert!(
            roi.fits(frame.width, frame.height) && frame.is_consistent(),
            "ROI outside the frame"
        );
        assert_eq!(
            (roi.w, roi.h),
            (self.src_w, self.src_h),
            "ROI is not the letterbox's source"
        );
        assert_eq!(out.len(), self.input_len(channels), "input tensor length");
        let plane = self.dst_w as usize * self.dst_h as usize;
        let (first, rest) = out.split_at_mut(plane);
        first.fill(f32::from(PAD_GREY) / 255.0);
        let px = |x: u32, y: u32| f32::from(frame.pixels[((roi.y + y) * frame.width + roi.x + x) as usize]);
        // OpenCV's INTER_LINEAR: pixel centres aligned, edges clamped.
        let axis = |d: u32, new: u32, src: u32| {
            let s = ((f64::from(d) + 0.5) * f64::from(src) / f64::from(new) - 0.5).max(0.0);
            let i0 = (s.floor() as u32).min(src - 1);
            let i1 = (i0 + 1).min(src - 1);
            (i0, i1, (s - f64::from(i0)).clamp(0.0, 1.0) as f32)
        };
        for dy in 0..self.new_h {
            let (y0, y1, fy) = axis(dy, self.new_h, self.src_h);
            let row = (self.top + dy) as usize * self.dst_w as usize;
            for dx in 0..self.new_w {
                let (x0, x1, fx) = axis(dx, self.new_w, self.src_w);
                let top = px(x0, y0) * (1.0 - fx) + px(x1, y0) * fx;
                let bottom = px(x0, y1) * (1.0 - fx) + px(x1, y1) * fx;
                first[row + (self.left + dx) as usize] = (top * (1.0 - fy) + bottom * fy) / 255.0;
            }
        }
        for c in rest.chunks_exact_mut(plane) {
            c.copy_from_slice(first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_frame_is_padded_above_and_below() {
        // 640×480 into 640×640: gain 1, 80 px of grey above and below.
        let lb = Letterbox::new(640, 480, 640, 640);
        assert_eq!((lb.gain, lb.new_w, lb.new_h, lb.left, lb.top), (1.0, 640, 480, 0, 80));
        assert_eq!(lb.to_source(100.0, 80.0), (100.0, 0.0));
        assert_eq!(lb.to_source(100.0, 0.0), (100.0, 0.0), "clipped to the source");
    }

    #[test]
    fn a_small_roi_is_scaled_up_and_centred() {
        // 64×48 into 640×640: gain 10, 640×480, 80 px above.
        let lb = Letterbox::new(64, 48, 640, 640);
        assert_eq!((lb.gain, lb.new_w, lb.new_h, lb.left, lb.top), (10.0, 640, 480, 0, 80));
        assert_eq!(lb.to_source(320.0, 320.0), (32.0, 24.0));
    }

    #[test]
    fn odd_padding_follows_ultralytics_rounding() {
        // 100×61 into 64×64: gain 0.64, 64×39 (39.04), dh = 12.5:
        // top = round(12.4) = 12, bottom gets 13.
        let lb = Letterbox::new(100, 61, 64, 64);
        assert_eq!((lb.new_w, lb.new_h, lb.left, lb.top), (64, 39, 0, 12));
    }

    #[test]
    fn the_tensor_has_grey_bars_and_the_image_in_every_channel() {
        // A 4×2 ROI (values 0..8 ×10) inside a 6×4 frame, into 8×8, 3 channels.
        let mut pixels = vec![255u8; 24];
        for y in 0..2 {
            for x in 0..4 {
                pixels[(1 + y) * 6 + 1 + x] = (10 * (y * 4 + x)) as u8;
            }
        }
        let frame = GrayImage {
            width: 6,
            height: 4,
            pixels: &pixels,
        };
        let roi = Roi { x: 1, y: 1, w: 4, h: 2 };
        let lb = Letterbox::new(4, 2, 8, 8);
        assert_eq!((lb.gain, lb.new_w, lb.new_h, lb.left, lb.top), (2.0, 8, 4, 0, 2));
        let mut out = vec![0.0; lb.input_len(3)];
        lb.fill(&frame, roi, 3, &mut out);
        let grey = 114.0 / 255.0;
        assert!(out[..16].iter().all(|&v| v == grey), "two grey rows above");
        assert!(out[48..64].iter().all(|&v| v == grey), "two grey rows below");
        // Top-left output pixel centre maps to source (-0.25, -0.25) -> clamped to pixel (0,0).
        assert_eq!(out[16], 0.0);
        // Output (1, 0) maps to source x = 0.25: 0.75·0 + 0.25·10.
        assert!((out[17] - 2.5 / 255.0).abs() < 1e-6);
        // Bottom-right image pixel: source (3, 1) = 70.
        assert!((out[47] - 70.0 / 255.0).abs() < 1e-6);
        assert_eq!(&out[..64], &out[64..128]);
        assert_eq!(&out[..64], &out[128..]);
    }
}
