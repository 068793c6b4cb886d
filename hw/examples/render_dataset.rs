//! Render a labelled data set of weld images from the simulated camera.
//!
//! ```text
//! cargo run -p triad-hw --example render_dataset -- --out DIR --count N --seed S \
//!     [--defect-fraction F] [--first-serial K] [--capture-temps LO:HI] [--preview P]
//! ```
//!
//! By default the content is forced: `round(N * F)` frames are defective (half
//! porosity, half crack, porosity gets the odd one), the rest are good, in a
//! shuffled order fixed by the seed. With `--capture-temps LO:HI` the frames
//! come from `Camera::capture` instead, with weld temperatures spread evenly
//! over `[LO, HI]` °C, so the defect rate follows the camera's physics.
//!
//! Frame `i` is the weld `i % 8` of module `K + i / 8` (K = 1 by default).
//! Written to DIR (NumPy `.npy` files, version 1.0, little-endian):
//!
//! | file | dtype, shape | content |
//! |---|---|---|
//! | `images.npy` | uint8 (N, 64, 64) | the ROI crop of each frame, row-major |
//! | `labels.npy` | uint8 (N,) | 0 = good, 1 = porosity, 2 = crack |
//! | `cells.npy` | uint8 (N, 8, 8) | per 8x8-pixel ROI cell: 0 good, 1 porosity, 2 crack, 255 = ambiguous (1-2 defect pixels) |
//! | `boxes.npy` | int32 (M, 6) | one row per truth box: image index, class, x, y, w, h (ROI pixels) |
//! | `temps.npy` | float64 (N,) | the trigger's weld temperature, °C |
//! | `dataset.json` | | the arguments and this description |
//!
//! A cell's label comes from the pixels the defect changed: the frame is
//! rendered again without the defect (same trigger, so same scene and noise)
//! and pixels that differ by at least 10 grey levels are defect pixels; a cell
//! with 3 or more is labelled with the defect's class.
//! `--preview P` also writes the first P full frames as `preview/NNNNN_<class>.pgm`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use triad_hw::sim::SimCamera;
use triad_hw::sim::SimCameraConfig;
use triad_hw::sim::camera::{DEFECT_CLASSES, FRAME_W, ROI_H, ROI_W, ROI_X, ROI_Y};
use triad_hw::{Camera, CaptureTrigger, Frame};

const CELL: usize = 8;
const WELDS_PER_MODULE: u64 = 8;
const DEFECT_PIXEL_DIFF: u8 = 10;
const CELL_MIN_PIXELS: u32 = 3;
const IGNORE: u8 = 255;

struct Args {
    out: PathBuf,
    count: usize,
    seed: u64,
    defect_fraction: f64,
    first_serial: u64,
    capture_temps: Option<(f64, f64)>,
    preview: usize,
}

const USAGE: &str = "usage: render_dataset --out DIR --count N --seed S [--defect-fraction F (0..=1, default 0.5)] \
                     [--first-serial K (default 1)] [--capture-temps LO:HI] [--preview P]";

fn parse_args() -> Result<Args, String> {
    let mut out = None;
    let mut count = None;
    let mut seed = None;
    let mut defect_fraction = 0.5;
    let mut first_serial = 1;
    let mut capture_temps = None;
    let mut preview = 0;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str, what: &str| format!("{flag} {v:?}: expected {what}");
        match flag.as_str() {
            "--out" => out = Some(PathBuf::from(value()?)),
            "--count" => {
                let v = value()?;
                count = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad(&v, "a count > 0"))?,
                );
            }
            "--seed" => {
                let v = value()?;
                seed = Some(v.parse::<u64>().map_err(|_| bad(&v, "an unsigned integer"))?);
            }
            "--defect-fraction" => {
                let v = value()?;
                defect_fraction = v
                    .parse::<f64>()
                    .ok()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or_else(|| bad(&v, "a number in 0..=1"))?;
            }
            "--first-serial" => {
                let v = value()?;
                first_serial = v.parse::<u64>().map_err(|_| bad(&v, "an unsigned integer"))?;
            }
            "--capture-temps" => {
                let v = value()?;
                let parsed = v
                    .split_once(':')
                    .and_then(|(lo, hi)| Some((lo.parse().ok()?, hi.parse().ok()?)));
                capture_temps = Some(
                    parsed
                        .filter(|(lo, hi): &(f64, f64)| lo <= hi)
                        .ok_or_else(|| bad(&v, "LO:HI in °C"))?,
                );
            }
            "--preview" => {
                let v = value()?;
                preview = v.parse::<usize>().map_err(|_| bad(&v, "a count"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        out: out.ok_or_else(|| format!("--out is required\n{USAGE}"))?,
        count: count.ok_or_else(|| format!("--count is required\n{USAGE}"))?,
        seed: seed.ok_or_else(|| format!("--seed is required\n{USAGE}"))?,
        defect_fraction,
        first_serial,
        capture_temps,
        preview,
    })
}

/// A `.npy` (format 1.0) header for a C-order array.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + dict + '\n' is padded to a multiple of 64.
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h
}

fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) -> Result<(), String> {
    let mut f = fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(&npy_header(descr, shape))
        .and_then(|()| f.write_all(data))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn class_index(name: &str) -> u8 {
    1 + DEFECT_CLASSES
        .iter()
        .position(|c| *c == name)
        .expect("camera draws only DEFECT_CLASSES") as u8
}

fn class_name(label: u8) -> &'static str {
    if label == 0 {
        "good"
    } else {
        DEFECT_CLASSES[usize::from(label - 1)]
    }
}

/// The ROI of a frame, row-major.
fn roi(frame: &Frame, out: &mut Vec<u8>) {
    for y in ROI_Y..ROI_Y + ROI_H {
        let start = (y * FRAME_W + ROI_X) as usize;
        out.extend_from_slice(&frame.pixels[start..start + ROI_W as usize]);
    }
}

/// Cell labels of one frame from the pixels that differ from its defect-free twin.
fn cell_labels(frame: &Frame, good: &Frame, label: u8) -> [u8; 64] {
    let mut counts = [0u32; 64];
    for y in 0..ROI_H {
        for x in 0..ROI_W {
            let (fx, fy) = (x + ROI_X, y + ROI_Y);
            if frame.pixel(fx, fy).abs_diff(good.pixel(fx, fy)) >= DEFECT_PIXEL_DIFF {
                counts[(y as usize / CELL) * 8 + x as usize / CELL] += 1;
            }
        }
    }
    counts.map(|c| match c {
        0 => 0,
        c if c >= CELL_MIN_PIXELS => label,
        _ => IGNORE,
    })
}

fn write_pgm(path: &Path, frame: &Frame) -> Result<(), String> {
    let mut data = format!("P5\n{} {}\n255\n", frame.width, frame.height).into_bytes();
    data.extend_from_slice(&frame.pixels);
    fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn run(args: &Args) -> Result<(), String> {
    fs::create_dir_all(&args.out).map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    if args.preview > 0 {
        fs::create_dir_all(args.out.join("preview")).map_err(|e| format!("cannot create preview dir: {e}"))?;
    }
    let n = args.count;
    let mut camera = SimCamera::new(SimCameraConfig {
        seed: args.seed,
        ..SimCameraConfig::default()
    });

    // Forced labels: balanced, shuffled deterministically.
    let n_def = (n as f64 * args.defect_fraction).round() as usize;
    let n_por = n_def.div_ceil(2);
    let mut plan: Vec<u8> = (0..n)
        .map(|i| {
            if i < n_por {
                1
            } else if i < n_def {
                2
            } else {
                0
            }
        })
        .collect();
    let mut shuffle = triad_hw::rng::SimRng::derive(args.seed, &[0x5348_5546]);
    for i in (1..n).rev() {
        plan.swap(i, shuffle.int_range(0, i as i64) as usize);
    }

    let mut images = Vec::with_capacity(n * (ROI_W * ROI_H) as usize);
    let mut labels = Vec::with_capacity(n);
    let mut cells = Vec::with_capacity(n * 64);
    let mut boxes: Vec<u8> = Vec::new();
    let mut n_boxes = 0;
    let mut temps = Vec::with_capacity(n * 8);
    let mut render_s = 0.0;
    for (i, &planned) in plan.iter().enumerate() {
        let temp = match args.capture_temps {
            Some((lo, hi)) if n > 1 => lo + (hi - lo) * i as f64 / (n - 1) as f64,
            Some((lo, _)) => lo,
            None => 180.0,
        };
        let trigger = CaptureTrigger {
            module_serial: args.first_serial + i as u64 / WELDS_PER_MODULE,
            weld_index: (i as u64 % WELDS_PER_MODULE) as u32,
            stamp_ns: i as i64 * 1_000_000_000,
            weld_temp_c: temp,
        };
        let t0 = Instant::now();
        let frame = match args.capture_temps {
            Some(_) => camera.capture(&trigger).map_err(|e| e.to_string())?,
            None => camera.render(&trigger, (planned > 0).then(|| class_name(planned))),
        };
        render_s += t0.elapsed().as_secs_f64();
        let truth = frame.truth.as_ref().expect("simulated frames carry truth");
        let label = truth.defects.first().map_or(0, |b| class_index(&b.class));
        roi(&frame, &mut images);
        labels.push(label);
        if label == 0 {
            cells.extend_from_slice(&[0; 64]);
        } else {
            let good = camera.render(&trigger, None);
            cells.extend_from_slice(&cell_labels(&frame, &good, label));
        }
        for b in &truth.defects {
            let row = [
                i as i32,
                i32::from(class_index(&b.class)),
                (b.x - ROI_X) as i32,
                (b.y - ROI_Y) as i32,
            ];
            for v in row.into_iter().chain([b.w as i32, b.h as i32]) {
                boxes.extend_from_slice(&v.to_le_bytes());
            }
            n_boxes += 1;
        }
        temps.extend_from_slice(&temp.to_le_bytes());
        if i < args.preview {
            write_pgm(
                &args.out.join(format!("preview/{i:05}_{}.pgm", class_name(label))),
                &frame,
            )?;
        }
    }

    let side = ROI_W as usize;
    write_npy(&args.out.join("images.npy"), "|u1", &[n, side, side], &images)?;
    write_npy(&args.out.join("labels.npy"), "|u1", &[n], &labels)?;
    write_npy(&args.out.join("cells.npy"), "|u1", &[n, 8, 8], &cells)?;
    write_npy(&args.out.join("boxes.npy"), "<i4", &[n_boxes, 6], &boxes)?;
    write_npy(&args.out.join("temps.npy"), "<f8", &[n], &temps)?;

    let counts: Vec<usize> = (0..3u8).map(|c| labels.iter().filter(|&&l| l == c).count()).collect();
    let mode = match args.capture_temps {
        Some((lo, hi)) => format!("{{\"capture\": {{\"temp_lo_c\": {lo}, \"temp_hi_c\": {hi}}}}}"),
        None => format!("{{\"forced\": {{\"defect_fraction\": {}}}}}", args.defect_fraction),
    };
    let json = format!(
        "{{\n  \"generator\": \"triad-hw example render_dataset\",\n  \"seed\": {},\n  \"count\": {n},\n  \
         \"first_serial\": {},\n  \"welds_per_module\": {WELDS_PER_MODULE},\n  \"mode\": {mode},\n  \
         \"roi\": {{\"x\": {ROI_X}, \"y\": {ROI_Y}, \"w\": {ROI_W}, \"h\": {ROI_H}}},\n  \
         \"classes\": [\"good\", \"{}\", \"{}\"],\n  \"class_counts\": [{}, {}, {}],\n  \"boxes\": {n_boxes},\n  \
         \"cell_size\": {CELL},\n  \"cell_ignore\": {IGNORE},\n  \"cell_rule\": \"class if >= {CELL_MIN_PIXELS} \
         pixels differ by >= {DEFECT_PIXEL_DIFF} from the defect-free render, ignore if 1-2, good if 0\",\n  \
         \"files\": {{\"images.npy\": \"uint8 (N,64,64)\", \"labels.npy\": \"uint8 (N,)\", \
         \"cells.npy\": \"uint8 (N,8,8)\", \"boxes.npy\": \"int32 (M,6) image,class,x,y,w,h in ROI pixels\", \
         \"temps.npy\": \"float64 (N,)\"}}\n}}\n",
        args.seed, args.first_serial, DEFECT_CLASSES[0], DEFECT_CLASSES[1], counts[0], counts[1], counts[2],
    );
    fs::write(args.out.join("dataset.json"), json).map_err(|e| format!("cannot write dataset.json: {e}"))?;
    eprintln!(
        "wrote {n} images to {} (good {}, porosity {}, crack {}, {n_boxes} boxes); {:.1} µs per frame render",
        args.out.display(),
        counts[0],
        counts[1],
        counts[2],
        render_s * 1e6 / n as f64
    );
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render_dataset: {e}");
            ExitCode::from(2)
        }
    }
}
