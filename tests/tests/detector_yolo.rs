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

use triad_hw::CaptureTrigger;
use triad_hw::sim::{SimCamera, SimCameraConfig};
use triad_inspect::families::letterbox::Letterbox;
use triad_inspect::families::yolo::{self, YoloParams};
use triad_inspect::{GrayImage, ModelManifest, OnnxModel, Roi};
use triad_tests::{TempDir, python, workspace_root};

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
    let mut cam = SimCamera::new(SimCameraConfig {
        seed: 7,
        ..SimCameraConfig::default()
    });
    for (k, defect) in [None, Some("porosity"), Some("crack")].into_iter().enumerate() {
        let trigger = CaptureTrigger {
            module_serial: k as u64 + 1,
            weld_index: 0,
            stamp_ns: 0,
            weld_temp_c: 180.0,
        };
        let frame = cam.render(&trigger, defect);
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
