//! The simulated weld camera of cell `cell_2245`.
//!
//! Every weld of a battery module passes the camera, which takes one grey-scale
//! frame of [`FRAME_W`] x [`FRAME_H`] pixels. The inspection model only looks at
//! the region of interest (ROI), the [`ROI_W`] x [`ROI_H`] square at
//! ([`ROI_X`], [`ROI_Y`]); the weld bead always lies inside it.
//!
//! # What a frame shows
//!
//! - **Background**: brushed metal with a linear illumination gradient, row
//!   streaks, and a darker heat-affected zone along both edges of the bead.
//! - **Bead**: a bright horizontal seam with a rounded cross-section, a
//!   specular highlight and the chevron ripples of a travelling weld pool. Its
//!   height, width, slope, waviness and brightness vary from weld to weld.
//! - **Defects** (only inside the bead): *porosity* is 1 to 4 dark round pores
//!   of radius 1.5 to 4 px; a *crack* is a thin dark line, 1 to 2 px wide and
//!   10 to 30 px long, along the bead or slanted across it.
//! - **Harmless distractors** (on any weld): bright spatter dots and small
//!   dark specks of dirt on the background, a faint scratch in the background
//!   (much lighter than a crack), and a faint, diffuse oxide blotch on the bead.
//! - **Optics and sensor**: a slight defocus blur, exposure gain jitter and
//!   additive noise.
//!
//! # Physics
//!
//! Whether a weld is defective follows [`SimCameraConfig::defect_probability`]:
//! a weld made hotter than nominal is more likely to be porous or cracked. This
//! is the correlation the closed-loop analysis finds in the inspection history.
//!
//! # Determinism
//!
//! A frame depends only on the camera seed and the trigger's
//! `(module_serial, weld_index)` (plus its temperature, for the defect
//! decision). The scene, the distractors, the defect geometry and the sensor
//! noise come from separate [`SimRng::derive`] sub-streams, so
//! [`SimCamera::render`] of the same trigger with and without a defect gives
//! frames that differ only where the defect was drawn. The defect decision
//! uses only integer draws and `f64` arithmetic; the pixels use `f32`
//! `sin`/`cos`/`exp`, whose last bit may differ between CPU architectures, so a
//! pixel may differ by one grey level across platforms, never in content.

use crate::camera::{Camera, CameraError, CaptureTrigger, Frame, FrameTruth, TruthBox};
use crate::rng::SimRng;

/// Frame width in pixels.
pub const FRAME_W: u32 = 96;
/// Frame height in pixels.
pub const FRAME_H: u32 = 80;
/// Left edge of the region of interest the model sees, in frame pixels.
pub const ROI_X: u32 = 16;
/// Top edge of the region of interest, in frame pixels.
pub const ROI_Y: u32 = 8;
/// Width of the region of interest in pixels.
pub const ROI_W: u32 = 64;
/// Height of the region of interest in pixels.
pub const ROI_H: u32 = 64;
/// The defect classes the camera draws, in the model's class order (class 0 is
/// a good weld, class 1 is `DEFECT_CLASSES[0]`, class 2 is `DEFECT_CLASSES[1]`).
pub const DEFECT_CLASSES: [&str; 2] = ["porosity", "crack"];

// The ROI must lie inside the frame, and the model's 8x8-pixel cells must tile it.
const _: () =
    assert!(ROI_X + ROI_W <= FRAME_W && ROI_Y + ROI_H <= FRAME_H && ROI_W.is_multiple_of(8) && ROI_H.is_multiple_of(8));

const W: usize = FRAME_W as usize;
const H: usize = FRAME_H as usize;
const ROI_X0: f32 = ROI_X as f32;
const ROI_X1: f32 = (ROI_X + ROI_W) as f32;

// Sub-stream tags for `SimRng::derive(seed, &[serial, weld, tag])`.
const STREAM_DECIDE: u64 = 0;
const STREAM_SCENE: u64 = 1;
const STREAM_DISTRACT: u64 = 2;
const STREAM_DEFECT: u64 = 3;
const STREAM_NOISE: u64 = 4;

/// Settings of the simulated camera and of the weld physics it images.
#[derive(Clone, Debug, PartialEq)]
pub struct SimCameraConfig {
    /// Seed of every frame; the same seed and trigger give the same frame.
    pub seed: u64,
    /// Weld temperature in °C at which the process runs as designed.
    pub nominal_temp_c: f64,
    /// Probability that a weld made at (or below) nominal temperature is defective.
    pub base_defect_rate: f64,
    /// Probability that a weld made far too hot is defective.
    pub max_defect_rate: f64,
    /// Excess over nominal, in °C, at which the defect rate is half-way between
    /// `base_defect_rate` and `max_defect_rate`.
    pub excess_mid_c: f64,
    /// Width of the transition, in °C: the rate goes from about 12 % to 88 % of
    /// the way within `excess_mid_c ± 2 * excess_scale_c`. Must be positive.
    pub excess_scale_c: f64,
}

impl Default for SimCameraConfig {
    fn default() -> Self {
        Self {
            seed: 2245,
            nominal_temp_c: 180.0,
            base_defect_rate: 0.02,
            max_defect_rate: 0.85,
            excess_mid_c: 12.0,
            excess_scale_c: 3.0,
        }
    }
}

impl SimCameraConfig {
    /// Probability that a weld made at `weld_temp_c` is defective:
    /// `base + (max - base) * sigmoid((weld_temp_c - nominal - excess_mid) / excess_scale)`,
    /// clamped to `[0, 1]`. A NaN temperature gives `base_defect_rate`.
    pub fn defect_probability(&self, weld_temp_c: f64) -> f64 {
        let z = (weld_temp_c - self.nominal_temp_c - self.excess_mid_c) / self.excess_scale_c;
        let s = 1.0 / (1.0 + (-z).exp());
        let p = self.base_defect_rate + (self.max_defect_rate - self.base_defect_rate) * s;
        if p.is_nan() {
            self.base_defect_rate.clamp(0.0, 1.0)
        } else {
            p.clamp(0.0, 1.0)
        }
    }
}

/// The simulated weld camera; see the [module documentation](self).
#[derive(Clone, Debug)]
pub struct SimCamera {
    cfg: SimCameraConfig,
}

impl SimCamera {
    /// A camera with the given settings.
    pub fn new(cfg: SimCameraConfig) -> Self {
        Self { cfg }
    }

    /// The camera's settings.
    pub fn config(&self) -> &SimCameraConfig {
        &self.cfg
    }

    /// Probability that a weld made at `weld_temp_c` is defective; see
    /// [`SimCameraConfig::defect_probability`].
    pub fn defect_probability(&self, weld_temp_c: f64) -> f64 {
        self.cfg.defect_probability(weld_temp_c)
    }

    /// Render the frame of `trigger` with forced content: `None` for a good
    /// weld, `Some("porosity")` or `Some("crack")` for a defective one. Used by
    /// [`Camera::capture`] and to generate training data. The truth of the
    /// returned frame lists one box per drawn defect (an empty list for a good
    /// weld), in frame coordinates and inside the ROI.
    ///
    /// # Panics
    /// If `defect` names a class other than those in [`DEFECT_CLASSES`].
    pub fn render(&mut self, trigger: &CaptureTrigger, defect: Option<&str>) -> Frame {
        let kind = match defect {
            None => None,
            Some("porosity") => Some(DefectKind::Porosity),
            Some("crack") => Some(DefectKind::Crack),
            Some(other) => panic!("unknown defect class {other:?}; the simulated camera draws {DEFECT_CLASSES:?}"),
        };
        let key = |tag| {
            SimRng::derive(
                self.cfg.seed,
                &[trigger.module_serial, u64::from(trigger.weld_index), tag],
            )
        };
        let scene = Scene::draw(&mut key(STREAM_SCENE));
        let distract = Distractors::draw(&mut key(STREAM_DISTRACT), &scene);
        let defect = match kind {
            None => Defect::None,
            Some(DefectKind::Porosity) => Defect::porosity(&mut key(STREAM_DEFECT), &scene),
            Some(DefectKind::Crack) => Defect::crack(&mut key(STREAM_DEFECT), &scene),
        };
        let pixels = paint(&scene, &distract, &defect, &mut key(STREAM_NOISE));
        Frame {
            width: FRAME_W,
            height: FRAME_H,
            pixels,
            trigger: *trigger,
            truth: Some(FrameTruth {
                defects: defect.truth(),
            }),
        }
    }
}

impl Camera for SimCamera {
    fn geometry(&self) -> (u32, u32) {
        (FRAME_W, FRAME_H)
    }

    /// Decide from the weld temperature whether the weld is defective (and, if
    /// so, porosity or crack with equal odds), then [`SimCamera::render`] it.
    /// Never fails.
    fn capture(&mut self, trigger: &CaptureTrigger) -> Result<Frame, CameraError> {
        let mut rng = SimRng::derive(
            self.cfg.seed,
            &[trigger.module_serial, u64::from(trigger.weld_index), STREAM_DECIDE],
        );
        let p = self.cfg.defect_probability(trigger.weld_temp_c);
        let defect = if rng.chance(p) {
            Some(DEFECT_CLASSES[usize::from(rng.chance(0.5))])
        } else {
            None
        };
        Ok(self.render(trigger, defect))
    }
}

#[derive(Clone, Copy)]
enum DefectKind {
    Porosity,
    Crack,
}

fn rf(rng: &mut SimRng, lo: f32, hi: f32) -> f32 {
    rng.range(f64::from(lo), f64::from(hi)) as f32
}

fn sign(rng: &mut SimRng) -> f32 {
    if rng.chance(0.5) { 1.0 } else { -1.0 }
}

/// Background, bead geometry and appearance, sensor settings of one frame.
struct Scene {
    /// Background grey level at the frame centre and its gradient per pixel.
    bg_level: f32,
    bg_gx: f32,
    bg_gy: f32,
    /// Brushed-metal streak offset of each row.
    streak: [f32; H],
    /// Bead centre line and half width per column.
    yc: [f32; W],
    hw: [f32; W],
    /// Nominal bead centre row and half width (before slope and waviness).
    yc0: f32,
    hw0: f32,
    /// Bead brightness on its crown, and the fraction of it left at its edges.
    bead_peak: f32,
    bead_floor: f32,
    /// Ripple contrast, wave number (rad/px), chevron bend at the bead edge (px, signed) and phase.
    ripple_amp: f32,
    ripple_k: f32,
    ripple_chevron: f32,
    ripple_phase: f32,
    /// Specular highlight: brightness, offset from the centre (in half widths) and 1 / width.
    spec_gain: f32,
    spec_off: f32,
    spec_w: f32,
    /// Heat-affected zone beside the bead: width (px) and relative darkening.
    haz_w: f32,
    haz_depth: f32,
    /// Weight of each neighbour in the 3-tap defocus blur (0 = sharp).
    blur: f32,
    /// Exposure gain and sensor noise (grey levels, standard deviation).
    gain: f32,
    noise_sigma: f32,
}

impl Scene {
    fn draw(r: &mut SimRng) -> Self {
        use std::f32::consts::TAU;
        let streak_amp = rf(r, 1.0, 4.0);
        let mut streak = [0.0; H];
        let mut prev = 0.0;
        for s in &mut streak {
            // Mildly correlated rows, like the marks of a brushing or rolling tool.
            prev = 0.5 * prev + streak_amp * (r.uniform() as f32 * 2.0 - 1.0);
            *s = prev;
        }
        let yc0 = 40.0 + rf(r, -4.0, 4.0);
        let hw0 = rf(r, 8.0, 12.0);
        let slope = rf(r, -0.04, 0.04);
        let (wa, wk, wp) = (rf(r, 0.2, 1.0), TAU / rf(r, 20.0, 50.0), rf(r, 0.0, TAU));
        let (ha, hk, hp) = (rf(r, 0.2, 0.9), TAU / rf(r, 15.0, 40.0), rf(r, 0.0, TAU));
        let mut yc = [0.0; W];
        let mut hw = [0.0; W];
        for x in 0..W {
            let fx = x as f32;
            yc[x] = yc0 + slope * (fx - 48.0) + wa * (wk * fx + wp).sin();
            hw[x] = hw0 + ha * (hk * fx + hp).sin();
        }
        let ripple_amp = rf(r, 0.05, 0.15);
        let ripple_k = TAU / rf(r, 3.0, 5.5);
        let ripple_chevron = sign(r) * rf(r, 2.5, 6.0);
        let ripple_phase = rf(r, 0.0, TAU);
        Self {
            bg_level: rf(r, 60.0, 110.0),
            bg_gx: rf(r, -0.45, 0.45),
            bg_gy: rf(r, -0.35, 0.35),
            streak,
            yc,
            hw,
            yc0,
            hw0,
            bead_peak: rf(r, 165.0, 220.0),
            bead_floor: rf(r, 0.45, 0.65),
            ripple_amp,
            ripple_k,
            ripple_chevron,
            ripple_phase,
            spec_gain: rf(r, 10.0, 40.0),
            spec_off: rf(r, -0.5, -0.1),
            spec_w: 1.0 / rf(r, 0.12, 0.25),
            haz_w: rf(r, 2.0, 5.0),
            haz_depth: rf(r, 0.08, 0.28),
            blur: rf(r, 0.0, 0.2),
            gain: rf(r, 0.85, 1.12),
            noise_sigma: rf(r, 2.5, 5.5),
        }
    }

    /// Bead centre and half width at column `x` (clamped to the frame).
    fn bead_at(&self, x: f32) -> (f32, f32) {
        let i = (x.round().max(0.0) as usize).min(W - 1);
        (self.yc[i], self.hw[i])
    }
}

/// A straight segment with a unit direction, used for cracks and scratches.
#[derive(Clone, Copy, Default)]
struct Segment {
    x0: f32,
    y0: f32,
    ux: f32,
    uy: f32,
    len: f32,
    /// Bounding box (inclusive) for a quick reject.
    bx0: f32,
    by0: f32,
    bx1: f32,
    by1: f32,
}

impl Segment {
    fn new(x0: f32, y0: f32, x1: f32, y1: f32, margin: f32) -> Self {
        let len = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt().max(1e-3);
        Self {
            x0,
            y0,
            ux: (x1 - x0) / len,
            uy: (y1 - y0) / len,
            len,
            bx0: x0.min(x1) - margin,
            by0: y0.min(y1) - margin,
            bx1: x0.max(x1) + margin,
            by1: y0.max(y1) + margin,
        }
    }

    fn contains_box(&self, x: f32, y: f32) -> bool {
        x >= self.bx0 && x <= self.bx1 && y >= self.by0 && y <= self.by1
    }

    /// Position along the segment and signed distance across it.
    fn local(&self, x: f32, y: f32) -> (f32, f32) {
        let (rx, ry) = (x - self.x0, y - self.y0);
        (rx * self.ux + ry * self.uy, ry * self.ux - rx * self.uy)
    }

    fn truth_box(&self, class: &str) -> TruthBox {
        // One pixel of margin: the defocus blur spreads the line's edge.
        let x0 = self.bx0.floor().max(ROI_X0 + 1.0) - 1.0;
        let y0 = self.by0.floor().max(ROI_Y as f32 + 1.0) - 1.0;
        let x1 = self.bx1.ceil().min(ROI_X1 - 2.0) + 1.0;
        let y1 = self.by1.ceil().min((ROI_Y + ROI_H) as f32 - 2.0) + 1.0;
        TruthBox {
            class: class.to_owned(),
            x: x0 as u32,
            y: y0 as u32,
            w: (x1 - x0) as u32 + 1,
            h: (y1 - y0) as u32 + 1,
        }
    }
}

/// A round spot: a pore, a spatter dot, a speck or an oxide blotch.
#[derive(Clone, Copy, Default)]
struct Spot {
    cx: f32,
    cy: f32,
    r: f32,
    /// Darkening (pore, speck, blotch) or target brightness (spatter).
    level: f32,
}

impl Spot {
    fn truth_box(&self, class: &str) -> TruthBox {
        // One pixel of margin: the defocus blur spreads the spot's edge.
        let x0 = (self.cx - self.r).floor().max(ROI_X0 + 1.0) - 1.0;
        let y0 = (self.cy - self.r).floor().max(ROI_Y as f32 + 1.0) - 1.0;
        let x1 = (self.cx + self.r).ceil().min(ROI_X1 - 2.0) + 1.0;
        let y1 = (self.cy + self.r).ceil().min((ROI_Y + ROI_H) as f32 - 2.0) + 1.0;
        TruthBox {
            class: class.to_owned(),
            x: x0 as u32,
            y: y0 as u32,
            w: (x1 - x0) as u32 + 1,
            h: (y1 - y0) as u32 + 1,
        }
    }
}

/// Harmless features that a good weld may show.
struct Distractors {
    spatter: [Spot; 3],
    n_spatter: usize,
    specks: [Spot; 3],
    n_specks: usize,
    scratch: Option<(Segment, f32, f32)>,
    blotch: Option<Spot>,
}

impl Distractors {
    fn draw(r: &mut SimRng, s: &Scene) -> Self {
        let mut spatter = [Spot::default(); 3];
        let mut n_spatter = 0;
        if r.chance(0.35) {
            n_spatter = r.int_range(1, 3) as usize;
            for sp in &mut spatter[..n_spatter] {
                let cx = rf(r, 2.0, W as f32 - 3.0);
                let (yc, hw) = s.bead_at(cx);
                let gap = rf(r, 2.5, 14.0);
                let cy = if r.chance(0.5) { yc - hw - gap } else { yc + hw + gap };
                *sp = Spot {
                    cx,
                    cy,
                    r: rf(r, 0.7, 1.8),
                    level: rf(r, 170.0, 245.0),
                };
            }
        }
        let mut specks = [Spot::default(); 3];
        let mut n_specks = 0;
        if r.chance(0.3) {
            n_specks = r.int_range(1, 3) as usize;
            for sp in &mut specks[..n_specks] {
                let cx = rf(r, 2.0, W as f32 - 3.0);
                let (yc, hw) = s.bead_at(cx);
                let gap = rf(r, 3.0, 16.0);
                let cy = if r.chance(0.5) { yc - hw - gap } else { yc + hw + gap };
                *sp = Spot {
                    cx,
                    cy,
                    r: rf(r, 0.8, 2.2),
                    level: rf(r, 0.25, 0.6),
                };
            }
        }
        let scratch = if r.chance(0.3) {
            // Two points in the band above or below the bead: the segment stays in the band.
            let above = r.chance(0.5);
            let (lo, hi) = if above {
                (1.0, s.yc0 - s.hw0 - 7.0)
            } else {
                (s.yc0 + s.hw0 + 7.0, H as f32 - 2.0)
            };
            let len = rf(r, 15.0, 50.0);
            let x0 = rf(r, 1.0, W as f32 - 2.0 - len.min(W as f32 - 4.0));
            let x1 = x0 + len * rf(r, 0.7, 1.0);
            let seg = Segment::new(x0, rf(r, lo, hi), x1, rf(r, lo, hi), 2.0);
            let contrast = sign(r) * rf(r, 6.0, 16.0);
            Some((seg, rf(r, 0.3, 0.6), contrast))
        } else {
            None
        };
        let blotch = if r.chance(0.2) {
            let cx = rf(r, ROI_X0 + 4.0, ROI_X1 - 4.0);
            let (yc, hw) = s.bead_at(cx);
            let cy = yc + rf(r, -0.5, 0.5) * hw;
            Some(Spot {
                cx,
                cy,
                r: rf(r, 3.0, 6.0),
                level: rf(r, 0.04, 0.12),
            })
        } else {
            None
        };
        Self {
            spatter,
            n_spatter,
            specks,
            n_specks,
            scratch,
            blotch,
        }
    }

    /// Distractors on the background (hidden where the bead covers them).
    fn apply_background(&self, mut v: f32, x: f32, y: f32) -> f32 {
        if let Some((seg, half_w, contrast)) = &self.scratch
            && seg.contains_box(x, y)
        {
            let (t, d) = seg.local(x, y);
            let beyond = (t - t.clamp(0.0, seg.len)).abs();
            let dist = (d * d + beyond * beyond).sqrt();
            v += contrast * (half_w + 0.5 - dist).clamp(0.0, 1.0);
        }
        for sp in &self.spatter[..self.n_spatter] {
            let (dx, dy) = (x - sp.cx, y - sp.cy);
            if dx.abs() < sp.r + 1.0 && dy.abs() < sp.r + 1.0 {
                let cover = (sp.r + 0.5 - (dx * dx + dy * dy).sqrt()).clamp(0.0, 1.0);
                v += (sp.level - v) * cover;
            }
        }
        for sp in &self.specks[..self.n_specks] {
            let (dx, dy) = (x - sp.cx, y - sp.cy);
            if dx.abs() < sp.r + 1.0 && dy.abs() < sp.r + 1.0 {
                let cover = (sp.r + 0.5 - (dx * dx + dy * dy).sqrt()).clamp(0.0, 1.0);
                v *= 1.0 - sp.level * cover;
            }
        }
        v
    }

    /// Distractors on the bead surface.
    fn apply_bead(&self, v: f32, x: f32, y: f32) -> f32 {
        match &self.blotch {
            Some(b) if (x - b.cx).abs() < 2.0 * b.r && (y - b.cy).abs() < 2.0 * b.r => {
                let d2 = ((x - b.cx).powi(2) + (y - b.cy).powi(2)) / (b.r * b.r);
                v * (1.0 - b.level * (-d2).exp())
            }
            _ => v,
        }
    }
}

enum Defect {
    None,
    Porosity {
        pores: [Spot; 4],
        n: usize,
    },
    /// `wobble`: two sine components (amplitude, wave number, phase) of the crack's jagged path.
    Crack {
        seg: Segment,
        half_w: f32,
        depth: f32,
        wobble: [(f32, f32, f32); 2],
    },
}

impl Defect {
    fn porosity(r: &mut SimRng, s: &Scene) -> Self {
        let mut pores = [Spot::default(); 4];
        let want = r.int_range(1, 4) as usize;
        let mut n = 0;
        for attempt in 0..4 * want {
            if n == want {
                break;
            }
            let rad = rf(r, 1.5, 4.0);
            let cx = rf(r, ROI_X0 + 5.0 + rad, ROI_X1 - 6.0 - rad);
            let (yc, hw) = s.bead_at(cx);
            let cy = yc + rf(r, -1.0, 1.0) * (hw - rad - 1.5).max(0.0);
            let p = Spot {
                cx,
                cy,
                r: rad,
                level: rf(r, 0.35, 0.85),
            };
            let clear = pores[..n]
                .iter()
                .all(|q| (q.cx - p.cx).hypot(q.cy - p.cy) > q.r + p.r + 1.5);
            // The first pore is always placed; later ones only where they do not overlap.
            if clear || (n == 0 && attempt == 0) {
                pores[n] = p;
                n += 1;
            }
        }
        Defect::Porosity { pores, n }
    }

    fn crack(r: &mut SimRng, s: &Scene) -> Self {
        use std::f32::consts::TAU;
        let along = r.chance(0.5);
        let mut angle = if along { rf(r, 0.0, 20.0) } else { rf(r, 25.0, 65.0) }.to_radians();
        let mut len = rf(r, 10.0, 30.0);
        // Keep the crack inside the bead: its vertical extent must fit the usable bead height.
        let span = 2.0 * 0.8 * s.hw0 - 2.0;
        if len * angle.sin() > span {
            len = (span / angle.sin()).max(10.0);
            if len * angle.sin() > span {
                angle = (span / len).asin();
            }
        }
        let angle = angle * sign(r);
        let (c, sn) = (angle.cos(), angle.sin());
        let horiz = len * c;
        let xc = rf(r, ROI_X0 + 5.0 + horiz / 2.0, ROI_X1 - 6.0 - horiz / 2.0);
        let (yc, _) = s.bead_at(xc);
        let slack = ((span - len * sn.abs()) / 2.0).max(0.0);
        let ycr = yc + rf(r, -slack, slack) * 0.8;
        let half_w = rf(r, 0.5, 1.0);
        let wobble = [
            (rf(r, 0.2, 0.7), TAU / rf(r, 6.0, 14.0), rf(r, 0.0, TAU)),
            (rf(r, 0.1, 0.35), TAU / rf(r, 2.5, 4.0), rf(r, 0.0, TAU)),
        ];
        let margin = half_w + wobble[0].0 + wobble[1].0 + 0.5;
        let seg = Segment::new(
            xc - horiz / 2.0,
            ycr - len * sn / 2.0,
            xc + horiz / 2.0,
            ycr + len * sn / 2.0,
            margin,
        );
        Defect::Crack {
            seg,
            half_w,
            depth: rf(r, 0.35, 0.75),
            wobble,
        }
    }

    fn apply(&self, mut v: f32, x: f32, y: f32) -> f32 {
        match self {
            Defect::None => v,
            Defect::Porosity { pores, n } => {
                for p in &pores[..*n] {
                    let (dx, dy) = (x - p.cx, y - p.cy);
                    if dx.abs() > p.r + 1.0 || dy.abs() > p.r + 1.0 {
                        continue;
                    }
                    let d = (dx * dx + dy * dy).sqrt();
                    let cover = (p.r + 0.5 - d).clamp(0.0, 1.0);
                    let rel = (d / p.r).min(1.0);
                    v *= 1.0 - cover * p.level * (1.0 - 0.3 * rel * rel);
                    if p.r > 2.5 && dy > 0.0 {
                        // Light from above catches the far inner wall of a large pore.
                        let rim = (1.0 - (d - (p.r - 0.7)).abs() / 0.7).clamp(0.0, 1.0) * (dy / p.r);
                        v += 40.0 * rim;
                    }
                }
                v
            }
            Defect::Crack {
                seg,
                half_w,
                depth,
                wobble,
            } => {
                if !seg.contains_box(x, y) {
                    return v;
                }
                let (t, d) = seg.local(x, y);
                let tc = t.clamp(0.0, seg.len);
                let path: f32 = wobble.iter().map(|(a, k, p)| a * (k * t + p).sin()).sum();
                let across = d - path;
                let beyond = t - tc;
                let dist = (across * across + beyond * beyond).sqrt();
                let cover = (half_w + 0.5 - dist).clamp(0.0, 1.0);
                // A crack fades out towards its tips.
                let taper = (tc.min(seg.len - tc) / 3.0 + 0.35).min(1.0);
                v * (1.0 - cover * depth * taper)
            }
        }
    }

    fn truth(&self) -> Vec<TruthBox> {
        match self {
            Defect::None => Vec::new(),
            Defect::Porosity { pores, n } => pores[..*n].iter().map(|p| p.truth_box(DEFECT_CLASSES[0])).collect(),
            Defect::Crack { seg, .. } => vec![seg.truth_box(DEFECT_CLASSES[1])],
        }
    }
}

/// Approximately standard normal from one 64-bit draw (Irwin–Hall of four 16-bit uniforms).
fn fast_normal(bits: u64) -> f32 {
    let sum = (bits & 0xFFFF) + ((bits >> 16) & 0xFFFF) + ((bits >> 32) & 0xFFFF) + (bits >> 48);
    (sum as f32 / 65536.0 - 2.0) * 1.732_050_8
}

fn paint(s: &Scene, dis: &Distractors, defect: &Defect, noise: &mut SimRng) -> Vec<u8> {
    // Scene radiance, on the stack: the only heap allocation is the returned pixel buffer.
    let mut img = [0.0f32; W * H];
    for (y, row) in img.chunks_exact_mut(W).enumerate() {
        let fy = y as f32;
        for (x, out) in row.iter_mut().enumerate() {
            let fx = x as f32;
            let (yc, hw) = (s.yc[x], s.hw[x]);
            let dy = fy - yc;
            let ady = dy.abs();
            let mut bg = s.bg_level + s.bg_gx * (fx - 48.0) + s.bg_gy * (fy - 40.0) + s.streak[y];
            if ady > hw && ady < hw + s.haz_w {
                bg *= 1.0 - s.haz_depth * (1.0 - (ady - hw) / s.haz_w);
            }
            bg = dis.apply_background(bg, fx, fy);
            let a = ((hw + 0.8 - ady) / 1.6).clamp(0.0, 1.0);
            let v = if a > 0.0 {
                let t = (dy / hw).clamp(-1.0, 1.0);
                let prof = (1.0 - t * t).max(0.0).sqrt();
                let phase = (fx + s.ripple_chevron * t * t) * s.ripple_k + s.ripple_phase;
                let ripple = 1.0 + s.ripple_amp * phase.cos() * (0.4 + 0.6 * prof);
                let sp = (t - s.spec_off) * s.spec_w;
                let bead = s.bead_peak * (s.bead_floor + (1.0 - s.bead_floor) * prof) * ripple
                    + s.spec_gain * (-sp * sp).exp();
                bg + (dis.apply_bead(bead, fx, fy) - bg) * a
            } else {
                bg
            };
            *out = defect.apply(v, fx, fy);
        }
    }
    blur3(&mut img, s.blur);
    let mut pixels = vec![0u8; W * H];
    for (out, v) in pixels.iter_mut().zip(img.iter()) {
        let value = v * s.gain + s.noise_sigma * fast_normal(noise.next_u64());
        *out = value.round().clamp(0.0, 255.0) as u8;
    }
    pixels
}

/// Separable 3-tap blur `[a, 1 - 2a, a]` in place, edges replicated.
fn blur3(img: &mut [f32; W * H], a: f32) {
    if a <= 0.0 {
        return;
    }
    let c = 1.0 - 2.0 * a;
    for row in img.chunks_exact_mut(W) {
        let mut prev = row[0];
        for x in 0..W {
            let cur = row[x];
            let next = row[(x + 1).min(W - 1)];
            row[x] = a * (prev + next) + c * cur;
            prev = cur;
        }
    }
    let mut prev = [0.0f32; W];
    prev.copy_from_slice(&img[..W]);
    for y in 0..H {
        let below = (y + 1).min(H - 1) * W;
        for x in 0..W {
            let cur = img[y * W + x];
            img[y * W + x] = a * (prev[x] + img[below + x]) + c * cur;
            prev[x] = cur;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trig(serial: u64, weld: u32, temp: f64) -> CaptureTrigger {
        CaptureTrigger {
            module_serial: serial,
            weld_index: weld,
            stamp_ns: 0,
            weld_temp_c: temp,
        }
    }

    fn cam(seed: u64) -> SimCamera {
        SimCamera::new(SimCameraConfig {
            seed,
            ..SimCameraConfig::default()
        })
    }

    #[test]
    fn geometry_and_frame_shape() {
        let mut c = cam(1);
        assert_eq!(c.geometry(), (FRAME_W, FRAME_H));
        let f = c.capture(&trig(1, 0, 180.0)).unwrap();
        assert_eq!(
            (f.width, f.height, f.pixels.len()),
            (FRAME_W, FRAME_H, (FRAME_W * FRAME_H) as usize)
        );
        assert_eq!(f.trigger, trig(1, 0, 180.0));
    }

    #[test]
    fn deterministic_per_seed_serial_and_weld() {
        let mut a = cam(7);
        let mut b = cam(7);
        for (s, w) in [(1, 0), (1, 1), (2, 0), (99, 5)] {
            for t in [180.0, 200.0] {
                assert_eq!(a.capture(&trig(s, w, t)).unwrap(), b.capture(&trig(s, w, t)).unwrap());
            }
        }
        let f = a.capture(&trig(1, 0, 180.0)).unwrap().pixels;
        assert_ne!(f, a.capture(&trig(1, 1, 180.0)).unwrap().pixels, "another weld");
        assert_ne!(f, a.capture(&trig(2, 0, 180.0)).unwrap().pixels, "another module");
        assert_ne!(f, cam(8).capture(&trig(1, 0, 180.0)).unwrap().pixels, "another seed");
    }

    #[test]
    fn defect_probability_follows_the_curve() {
        let c = SimCameraConfig::default();
        let p0 = c.defect_probability(180.0);
        assert!((p0 - (0.02 + 0.83 / (1.0 + 4f64.exp()))).abs() < 1e-12, "{p0}");
        assert!((c.defect_probability(192.0) - (0.02 + 0.83 / 2.0)).abs() < 1e-12);
        assert!((c.defect_probability(1e6) - 0.85).abs() < 1e-12);
        assert!((c.defect_probability(-1e6) - 0.02).abs() < 1e-12);
        assert_eq!(c.defect_probability(f64::NAN), 0.02);
        let mut last = 0.0;
        for t in 150..230 {
            let p = c.defect_probability(f64::from(t));
            assert!(p >= last);
            last = p;
        }
    }

    #[test]
    fn defect_rate_follows_defect_probability() {
        let mut c = cam(11);
        let n = 2000u32;
        for (temp, serial0) in [(180.0, 1_000u64), (200.0, 1_000_000u64)] {
            let p = c.defect_probability(temp);
            let mut defective = 0;
            let mut cracks = 0;
            for i in 0..n {
                let f = c.capture(&trig(serial0 + u64::from(i / 8), i % 8, temp)).unwrap();
                let truth = f.truth.unwrap();
                if !truth.defects.is_empty() {
                    defective += 1;
                    cracks += usize::from(truth.defects[0].class == "crack");
                }
            }
            let rate = f64::from(defective) / f64::from(n);
            let tol = 4.5 * (p * (1.0 - p) / f64::from(n)).sqrt();
            assert!(
                (rate - p).abs() < tol,
                "at {temp} °C: rate {rate}, expected {p} ± {tol}"
            );
            if defective > 200 {
                let share = cracks as f64 / f64::from(defective);
                assert!((share - 0.5).abs() < 0.1, "crack share {share}");
            }
        }
    }

    #[test]
    fn forced_render_gives_the_requested_class_with_boxes_inside_the_roi() {
        let mut c = cam(3);
        for i in 0..300u32 {
            let t = trig(5 + u64::from(i), i % 8, 180.0);
            let good = c.render(&t, None);
            assert!(good.truth.as_ref().unwrap().defects.is_empty());
            for class in DEFECT_CLASSES {
                let f = c.render(&t, Some(class));
                let defects = &f.truth.as_ref().unwrap().defects;
                let max = if class == "porosity" { 4 } else { 1 };
                assert!((1..=max).contains(&defects.len()), "{class}: {} boxes", defects.len());
                for b in defects {
                    assert_eq!(b.class, class);
                    assert!(b.w > 0 && b.h > 0);
                    assert!(b.x >= ROI_X && b.x + b.w <= ROI_X + ROI_W, "{b:?}");
                    assert!(b.y >= ROI_Y && b.y + b.h <= ROI_Y + ROI_H, "{b:?}");
                }
                // The defect is drawn, and only inside its boxes.
                let mut changed = 0;
                for y in 0..FRAME_H {
                    for x in 0..FRAME_W {
                        let d = f.pixel(x, y).abs_diff(good.pixel(x, y));
                        if d == 0 {
                            continue;
                        }
                        changed += usize::from(d > 20);
                        let inside = defects
                            .iter()
                            .any(|b| x >= b.x && x < b.x + b.w && y >= b.y && y < b.y + b.h);
                        assert!(inside, "{class}: pixel ({x},{y}) changed outside {defects:?}");
                    }
                }
                assert!(changed >= 3, "{class}: only {changed} pixels visibly changed");
            }
        }
    }

    #[test]
    fn bead_is_bright_and_inside_the_roi() {
        let mut c = cam(4);
        for i in 0..50u64 {
            let f = c.render(&trig(i, 0, 180.0), None);
            let row_mean = |y: u32| (0..FRAME_W).map(|x| f64::from(f.pixel(x, y))).sum::<f64>() / f64::from(FRAME_W);
            let brightest = (0..FRAME_H)
                .max_by(|&a, &b| row_mean(a).total_cmp(&row_mean(b)))
                .unwrap();
            assert!(
                (ROI_Y + 12..ROI_Y + ROI_H - 12).contains(&brightest),
                "bead row {brightest}"
            );
            assert!(row_mean(brightest) > row_mean(ROI_Y) + 40.0);
        }
    }

    #[test]
    #[should_panic(expected = "unknown defect class")]
    fn unknown_class_panics() {
        cam(1).render(&trig(1, 0, 180.0), Some("burn"));
    }
}
