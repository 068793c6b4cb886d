//! A YOLOv8n-layout detector (the published architecture, written by
//! `inspect/training/yolov8n_layout.py`) through triad's detector family:
//! letterbox, tract, decoding and class-wise NMS, checked against
//! onnxruntime and an independent Python reference of Ultralytics'
//! post-processing on the same frames.
//!
//! The graph is untrained: its class scores lie close together, so a box
//! list decoded from tract's output may differ from onnxruntime's where two
//! scores differ by less than the engines do (~1e-6). The engines are
//! compared on the raw tensor; the decoding on the same tensor.
//!
//! The second test takes the same architecture at 160x160 the way a plant
//! would: `triad bundle build`, `sign` and `verify` (golden cases run with
//! tract) on a `"family": "detector-yolo"` manifest, then the bundle loaded
//! into the [`Inspector`], which letterboxes the simulated camera's ROI,
//! runs tract, decodes and maps the boxes into the frame; its boxes are
//! compared with onnxruntime plus the Python reference on the Inspector's
//! own input tensor.
//!
//! The third puts the detector on probation in a cell's worker that ran
//! the grid model: it passes, or, with a latency bound it cannot meet, the
//! fuse trips and the worker rolls back, as for any model.

use triad_hw::CaptureTrigger;
use triad_hw::sim::{SimCamera, SimCameraConfig};
use triad_inspect::families::letterbox::Letterbox;
use triad_inspect::families::yolo::{self, YoloParams};
use triad_inspect::families::{Detection, ModelFamily};
use triad_inspect::{GrayImage, Inspector, InspectorConfig, ModelManifest, OnnxModel, Roi};
use triad_schemas::Verdict;
use triad_tests::{TempDir, python, triad, workspace_root};

/// The simulated camera's weld frames, seeded: one good, one with porosity,
/// one with a crack.
fn welds(seed: u64) -> Vec<triad_hw::Frame> {
    let mut cam = SimCamera::new(SimCameraConfig {
        seed,
        ..SimCameraConfig::default()
    });
    [None, Some("porosity"), Some("crack")]
        .into_iter()
        .enumerate()
        .map(|(k, defect)| {
            let trigger = CaptureTrigger {
                module_serial: k as u64 + 1,
                weld_index: 0,
                stamp_ns: 0,
                weld_temp_c: 180.0,
            };
            cam.render(&trigger, defect)
        })
        .collect()
}

const SIZE: u32 = 640;
const CLASSES: usize = 80;
const ANCHORS: usize = 8400;

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn manifest() -> ModelManifest {
    let classes: Vec<String> = (0..CLASSES).map(|c| format!("class_{c}")).collect();
    serde_json::from_value(serde_json::json!({
        "name": "yolov8n_layout", "version": "0.1.0", "kind": "inspection", "family": "detector-yolo",
        "input": {"name": "images", "shape": [1, 3, SIZE, SIZE], "mean": 0.0, "std": 1.0},
        "output": {"name": "output0", "shape": [1, 4 + CLASSES, ANCHORS], "classes": classes},
    }))
    .expect("manifest")
}

#[test]
fn yolov8n_boxes_match_onnxruntime_and_a_reference_nms() {
    let dir = TempDir::new("yolo");
    let model_path = dir.path().join("yolov8n_layout.onnx");
    let st = std::process::Command::new(python())
        .arg(workspace_root().join("inspect/training/yolov8n_layout.py"))
        .arg(&model_path)
        .args([
            "--classes",
            &CLASSES.to_string(),
            "--size",
            &SIZE.to_string(),
            "--class-bias",
            "-3",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "yolov8n_layout.py failed");
    let model = std::sync::Arc::new(OnnxModel::load(&std::fs::read(&model_path).unwrap(), manifest()).unwrap());
    let mut session = model.session().unwrap();
    let params = YoloParams {
        classes: CLASSES,
        confidence: 0.03,
        iou: 0.45,
        max_detections: 300,
    };
    for (k, frame) in welds(7).iter().enumerate() {
        let image = GrayImage {
            width: frame.width,
            height: frame.height,
            pixels: &frame.pixels,
        };
        // A ROI that is neither square nor at the origin.
        let roi = Roi {
            x: 8,
            y: 4,
            w: frame.width - 16,
            h: frame.height - 20,
        };
        let lb = Letterbox::new(roi.w, roi.h, SIZE, SIZE);
        let mut input = vec![0.0f32; lb.input_len(3)];
        lb.fill(&image, roi, 3, &mut input);
        let mut tract_out = Vec::new();
        session.infer(&input, &mut tract_out).unwrap();

        let (inp, raw, dets) = (
            dir.path().join(format!("in{k}.f32")),
            dir.path().join(format!("raw{k}.f32")),
            dir.path().join(format!("dets{k}.json")),
        );
        std::fs::write(&inp, input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let st = std::process::Command::new(python())
            .arg(workspace_root().join("tests/python/yolo_reference.py"))
            .args([&model_path, &inp, &raw, &dets])
            .args([
                "--classes",
                &CLASSES.to_string(),
                "--conf",
                "0.03",
                "--iou",
                "0.45",
                "--max-det",
                "300",
            ])
            .args(["--src", &roi.w.to_string(), &roi.h.to_string()])
            .args(["--dst", &SIZE.to_string(), &SIZE.to_string()])
            .args(["--roi", &roi.x.to_string(), &roi.y.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "yolo_reference.py failed");
        let ort_out = f32s(&std::fs::read(&raw).unwrap());
        assert_eq!(ort_out.len(), tract_out.len());

        // 1. The engines agree on the raw output: boxes in input pixels, scores.
        let (boxes, scores) = (4 * ANCHORS, tract_out.len());
        let diff = |r: std::ops::Range<usize>| r.map(|i| (tract_out[i] - ort_out[i]).abs()).fold(0.0f32, f32::max);
        let (db, ds) = (diff(0..boxes), diff(boxes..scores));
        assert!(
            db <= 1e-2 && ds <= 1e-5,
            "tract vs onnxruntime: boxes {db} px, scores {ds}"
        );

        // 2. Decoding + NMS + letterbox on onnxruntime's output match the reference.
        let ours = yolo::decode(&ort_out, ANCHORS, &params, &lb, roi).unwrap();
        let reference: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&dets).unwrap()).unwrap();
        let candidates = (0..ANCHORS)
            .filter(|&n| (0..CLASSES).any(|c| ort_out[(4 + c) * ANCHORS + n] > params.confidence))
            .count();
        assert!(
            ours.len() >= 5 && candidates > ours.len(),
            "frame {k}: {candidates} candidates, {} kept: the case must exercise NMS",
            ours.len()
        );
        assert_eq!(ours.len(), reference.len(), "frame {k}: box count");
        for (d, r) in ours.iter().zip(&reference) {
            let rb: Vec<f32> = r["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(d.class as u64, r["class"].as_u64().unwrap(), "frame {k}: class");
            assert!((f64::from(d.score) - r["score"].as_f64().unwrap()).abs() < 1e-6);
            let err = [d.x0, d.y0, d.x1, d.y1]
                .iter()
                .zip(&rb)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err <= 1e-3, "frame {k}: box {d:?} vs reference {rb:?} ({err} px)");
        }
    }
}

/// A reference box: class, score, `[x0, y0, x1, y1]` in frame pixels.
type RefBox = (usize, f32, [f32; 4]);

/// Run `tests/python/yolo_reference.py` on `input` (written to `dir`):
/// onnxruntime's raw output and the reference's boxes.
#[allow(clippy::too_many_arguments)]
fn reference(
    dir: &std::path::Path,
    tag: &str,
    model: &std::path::Path,
    input: &[f32],
    classes: usize,
    (conf, iou, max_det): (f32, f32, usize),
    roi: Roi,
    size: u32,
) -> (Vec<f32>, Vec<RefBox>) {
    let (inp, raw, dets) = (
        dir.join(format!("in{tag}.f32")),
        dir.join(format!("raw{tag}.f32")),
        dir.join(format!("dets{tag}.json")),
    );
    std::fs::write(&inp, input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let st = std::process::Command::new(python())
        .arg(workspace_root().join("tests/python/yolo_reference.py"))
        .args([model, &inp, &raw, &dets])
        .args(["--classes", &classes.to_string()])
        .args(["--conf", &conf.to_string(), "--iou", &iou.to_string()])
        .args(["--max-det", &max_det.to_string()])
        .args(["--src", &roi.w.to_string(), &roi.h.to_string()])
        .args(["--dst", &size.to_string(), &size.to_string()])
        .args(["--roi", &roi.x.to_string(), &roi.y.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "yolo_reference.py failed");
    let list: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(&dets).unwrap()).unwrap();
    let boxes = list
        .iter()
        .map(|r| {
            let b: Vec<f32> = r["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            (
                r["class"].as_u64().unwrap() as usize,
                r["score"].as_f64().unwrap() as f32,
                [b[0], b[1], b[2], b[3]],
            )
        })
        .collect();
    (f32s(&std::fs::read(&raw).unwrap()), boxes)
}

#[test]
fn a_detector_bundle_built_by_the_cli_runs_in_the_inspector_like_the_reference() {
    use triad_hw::sim::camera::{FRAME_H, FRAME_W};
    const SIZE: u32 = 160;
    const ANCHORS: usize = 20 * 20 + 10 * 10 + 5 * 5;
    const CONF: f32 = 0.27;
    const IOU: f32 = 0.45;
    const MAX_DET: usize = 50;
    let classes = ["porosity", "crack"];
    let dir = TempDir::new("yolo-bundle");
    let model_path = dir.path().join("model.onnx");
    let st = std::process::Command::new(python())
        .arg(workspace_root().join("inspect/training/yolov8n_layout.py"))
        .arg(&model_path)
        .args(["--classes", "2", "--size", &SIZE.to_string(), "--class-bias", "-1"])
        .status()
        .unwrap();
    assert!(st.success(), "yolov8n_layout.py failed");
    let manifest_path = dir.path().join("manifest.json");
    let manifest = serde_json::json!({
        "name": "weld_yolo", "version": "0.1.0", "kind": "inspection", "family": "detector-yolo",
        "detector": {"confidence": CONF, "iou": IOU, "max_detections": MAX_DET},
        "input": {"name": "images", "shape": [1, 3, SIZE, SIZE], "mean": 0.0, "std": 1.0},
        "output": {"name": "output0", "shape": [1, 6, ANCHORS], "classes": classes},
    });
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();

    // The CLI path: keys, build (golden outputs computed with tract), sign, verify.
    let s = |p: &std::path::Path| p.display().to_string();
    let ok = |args: &[&str]| {
        let out = triad(args, &[]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "triad {args:?} failed:\n{text}");
        text
    };
    let (keys, bundle) = (dir.path().join("keys"), dir.path().join("bundle"));
    ok(&[
        "keys",
        "gen",
        "--name",
        "release",
        "--uses",
        "bundle",
        "--out",
        &s(&keys),
    ]);
    ok(&[
        "bundle",
        "build",
        "--model",
        &s(&model_path),
        "--manifest",
        &s(&manifest_path),
        "--target",
        "cell_2245",
        "--tolerance",
        "1e-3",
        "--out",
        &s(&bundle),
    ]);
    ok(&["bundle", "sign", &s(&bundle), "--key", &s(&keys.join("release.key"))]);
    let verified = ok(&[
        "bundle",
        "verify",
        &s(&bundle),
        "--trust",
        &s(&keys.join("release.pub")),
    ]);
    assert!(verified.contains("4 golden case(s) pass"), "{verified}");
    // A golden output that the model does not reproduce is refused, for a
    // detector as for the grid: the check compares raw tensors.
    let wrong = dir.path().join("wrong.out.f32");
    let mut y = f32s(&std::fs::read(bundle.join("golden/0.out.f32")).unwrap());
    y[7] += 0.01;
    std::fs::write(&wrong, y.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let bad = dir.path().join("bad");
    ok(&[
        "bundle",
        "build",
        "--model",
        &s(&model_path),
        "--manifest",
        &s(&manifest_path),
        "--target",
        "cell_2245",
        "--golden-input",
        &s(&bundle.join("golden/0.in.f32")),
        "--golden-output",
        &s(&wrong),
        "--tolerance",
        "1e-3",
        "--out",
        &s(&bad),
    ]);
    ok(&["bundle", "sign", &s(&bad), "--key", &s(&keys.join("release.key"))]);
    let out = triad(
        &["bundle", "verify", &s(&bad), "--trust", &s(&keys.join("release.pub"))],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("golden_mismatch"), "{text}");

    // The bundle in the Inspector, on the simulated camera's frames.
    let model = std::sync::Arc::new(OnnxModel::load_dir(&bundle).unwrap());
    assert_eq!(model.manifest().family, ModelFamily::DetectorYolo);
    assert_eq!(model.manifest().target.as_deref(), Some("cell_2245"));
    // A ROI that is neither square nor at the origin, nor the input's size.
    let roi = Roi {
        x: 8,
        y: 4,
        w: FRAME_W - 16,
        h: FRAME_H - 20,
    };
    let mut insp = Inspector::new(InspectorConfig { roi, threshold: 0.5 }, &model).unwrap();
    let mut kept_total = 0;
    for (k, frame) in welds(11).iter().enumerate() {
        let image = GrayImage {
            width: frame.width,
            height: frame.height,
            pixels: &frame.pixels,
        };
        let r = insp.inspect(&image).unwrap();
        let ours: Vec<Detection> = insp.last_detections().to_vec();
        let (ort_out, reference) = reference(
            dir.path(),
            &format!("b{k}"),
            &model_path,
            insp.last_input(),
            classes.len(),
            (CONF, IOU, MAX_DET),
            roi,
            SIZE,
        );
        let tract_out = insp.last_output();
        // The case is not ambiguous between the engines: no class score
        // within 1e-4 of the threshold, no anchor's two scores within 1e-4.
        let at = |o: &[f32], row: usize, n: usize| o[row * ANCHORS + n];
        let candidates = (0..ANCHORS)
            .filter(|&n| at(tract_out, 4, n).max(at(tract_out, 5, n)) > CONF)
            .count();
        for n in 0..ANCHORS {
            let (a, b) = (at(tract_out, 4, n), at(tract_out, 5, n));
            assert!(
                (a.max(b) - CONF).abs() > 1e-4 && (a - b).abs() > 1e-4,
                "frame {k} anchor {n}: scores {a} {b} too close to call; change the seed or threshold"
            );
            for row in 0..6 {
                let d = (at(tract_out, row, n) - at(&ort_out, row, n)).abs();
                assert!(
                    d <= 1e-3,
                    "frame {k}: tract vs onnxruntime differ by {d} at ({row}, {n})"
                );
            }
        }
        assert!(
            !reference.is_empty() && candidates > reference.len(),
            "frame {k}: {candidates} candidates, {} kept: the case must exercise NMS",
            reference.len()
        );
        assert_eq!(ours.len(), reference.len(), "frame {k}: {ours:?} vs {reference:?}");
        for (d, (class, score, rb)) in ours.iter().zip(&reference) {
            assert_eq!(d.class, *class, "frame {k}: class");
            assert!(
                (d.score - score).abs() < 1e-4,
                "frame {k}: score {} vs {score}",
                d.score
            );
            let err = [d.x0, d.y0, d.x1, d.y1]
                .iter()
                .zip(rb)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(err <= 1e-3, "frame {k}: box {d:?} vs reference {rb:?} ({err} px)");
            // Inside the ROI, in frame pixels.
            assert!(d.x0 >= roi.x as f32 && d.x1 <= (roi.x + roi.w) as f32, "{d:?}");
            assert!(d.y0 >= roi.y as f32 && d.y1 <= (roi.y + roi.h) as f32, "{d:?}");
        }
        // The result: a Fail with one DefectBox per kept box, rounded outwards.
        assert_eq!(r.verdict, Verdict::Fail);
        assert_eq!(
            (r.model_name.as_str(), r.model_version.as_str()),
            ("weld_yolo", "0.1.0")
        );
        let expect: Vec<_> = ours
            .iter()
            .map(|d| d.to_defect_box(&model.manifest().output.classes))
            .collect();
        assert_eq!(r.defects, expect);
        assert!(r.defects.iter().all(|b| classes.contains(&b.class.as_str())));
        kept_total += ours.len();
    }
    assert!(kept_total >= 3, "{kept_total} boxes over three frames");
}

/// Probation and the fuse judge a detector as they judge the grid: the
/// cell's worker swaps from the built-in grid model to a detector (same
/// cell ROI: a detector letterboxes any ROI), inspects with it, and passes
/// probation; with a latency bound it cannot meet, the fuse trips on the
/// first frame, the worker goes back to the grid model and re-inspects that
/// same frame with it.
#[test]
fn probation_and_the_fuse_treat_a_detector_like_the_grid() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use triad_edge::models::fuse::FuseConfig;
    use triad_edge::models::slot::{Deployed, ModelInfo, ModelSlot, WorkerModels, WorkerReport};
    use triad_hw::sim::camera::{ROI_H, ROI_W, ROI_X, ROI_Y};
    const SIZE: u32 = 160;
    let dir = TempDir::new("yolo-fuse");
    let model_path = dir.path().join("model.onnx");
    let st = std::process::Command::new(python())
        .arg(workspace_root().join("inspect/training/yolov8n_layout.py"))
        .arg(&model_path)
        .args(["--classes", "2", "--size", &SIZE.to_string(), "--class-bias", "-1"])
        .status()
        .unwrap();
    assert!(st.success(), "yolov8n_layout.py failed");
    let manifest: ModelManifest = serde_json::from_value(serde_json::json!({
        "name": "weld_yolo", "version": "0.1.0", "kind": "inspection", "family": "detector-yolo",
        "detector": {"confidence": 0.27, "iou": 0.45},
        "input": {"name": "images", "shape": [1, 3, SIZE, SIZE], "mean": 0.0, "std": 1.0},
        "output": {"name": "output0", "shape": [1, 6, 525], "classes": ["porosity", "crack"]},
    }))
    .unwrap();
    let detector = Arc::new(OnnxModel::load(&std::fs::read(&model_path).unwrap(), manifest).unwrap());
    let grid = Arc::new(triad_inspect::builtin::weld_seam().unwrap());
    let cfg = InspectorConfig {
        roi: Roi {
            x: ROI_X,
            y: ROI_Y,
            w: ROI_W,
            h: ROI_H,
        },
        threshold: 0.5,
    };
    let mut cam = SimCamera::new(SimCameraConfig::default());
    let frames: Vec<_> = (0..4u64)
        .map(|k| {
            let t = CaptureTrigger {
                module_serial: k + 1,
                weld_index: 0,
                stamp_ns: 0,
                weld_temp_c: 180.0,
            };
            cam.render(&t, None)
        })
        .collect();
    let image = |k: usize| GrayImage {
        width: frames[k].width,
        height: frames[k].height,
        pixels: &frames[k].pixels,
    };

    let run = |fuse: FuseConfig| {
        let slot = Arc::new(ModelSlot::new(
            "cell_2245",
            cfg.clone(),
            grid.clone(),
            ModelInfo::default(),
        ));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let r = reports.clone();
        let mut worker: WorkerModels = slot
            .worker(
                fuse,
                Box::new(move |w: WorkerReport| r.lock().unwrap().push(format!("{w:?}"))),
            )
            .unwrap();
        for k in 0..4 {
            assert_eq!(worker.inspect(&image(k)).unwrap().model_name, "weld_seam");
        }
        let info = ModelInfo {
            name: "weld_yolo".into(),
            version: "0.1.0".into(),
            ..ModelInfo::default()
        };
        slot.publish(Deployed::new(
            2,
            detector.clone(),
            Arc::new(info),
            Some(grid.clone()),
            true,
            Vec::new(),
        ));
        assert!(worker.poll_swap());
        assert!(worker.on_probation());
        let results: Vec<_> = (0..4).map(|k| worker.inspect(&image(k)).unwrap()).collect();
        let reports = reports.lock().unwrap().clone();
        (results, reports, worker.on_probation())
    };

    // No bound it can miss: the detector judges every frame and passes.
    let (results, reports, armed) = run(FuseConfig {
        probation: Duration::ZERO,
        min_frames: 3,
        max_slowdown: 1e9,
        ..FuseConfig::default()
    });
    assert!(results.iter().all(|r| r.model_name == "weld_yolo"), "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| (r.verdict == Verdict::Fail) != r.defects.is_empty())
    );
    assert!(!armed);
    assert!(
        reports
            .iter()
            .any(|r| r.starts_with("ProbationPassed(cell_2245#0 gen 2, 3 frames")),
        "{reports:?}"
    );

    // A bound no model meets: the first detector frame trips the fuse, and
    // the same frame is judged again by the grid model.
    let (results, reports, armed) = run(FuseConfig {
        probation: Duration::from_secs(60),
        max_inference: Some(Duration::from_nanos(1)),
        slow_frames: 1,
        ..FuseConfig::default()
    });
    assert!(results.iter().all(|r| r.model_name == "weld_seam"), "{results:?}");
    assert!(!armed);
    assert!(
        reports.iter().any(|r| r.starts_with("FuseTripped(cell_2245#0 gen 2")
            && r.contains("above the bound")
            && r.ends_with("rolled back true)")),
        "{reports:?}"
    );
}
