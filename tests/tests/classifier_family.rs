//! A `classifier` model through the Inspector: a small RGB classifier
//! (written here with `onnx.helper`: mean of each channel, then a linear
//! layer to three logits) on the simulated camera's ROI. The Inspector's
//! input tensor must be the normalised ROI in all three channels; its
//! verdict and defect scores must be onnxruntime's logits through a numpy
//! softmax, with the rule "Pass iff the top class is the ok class".

use std::sync::Arc;
use triad_hw::CaptureTrigger;
use triad_hw::sim::camera::{ROI_H, ROI_W, ROI_X, ROI_Y};
use triad_hw::sim::{SimCamera, SimCameraConfig};
use triad_inspect::{GrayImage, Inspector, InspectorConfig, ModelManifest, OnnxModel, Roi};
use triad_schemas::Verdict;
use triad_tests::{TempDir, python};

const MEAN: f32 = 0.5;
const STD: f32 = 0.25;

/// Logits: `good = g (m - t)`, `porosity = 0.5`, `crack = g/2 (t - m)`,
/// where `m` is the mean of the normalised input over all channels (`g` is
/// chosen so that no probability underflows f32).
const WRITER: &str = r#"
import sys, numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
out, t, g, h, w = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
W = np.array([[g, 0.0, -g / 2]] * 3, np.float32) / 3
b = np.array([-g * t, 0.5, g / 2 * t], np.float32)
nodes = [
    helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
    helper.make_node("MatMul", ["m", "W"], ["l"]),
    helper.make_node("Add", ["l", "b"], ["y"]),
]
g = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, w])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 8
onnx.checker.check_model(m)
onnx.save(m, out)
"#;

/// onnxruntime's logits for `input`, softmaxed by numpy.
const REFERENCE: &str = r#"
import sys, json, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.fromfile(sys.argv[2], dtype="<f4").reshape(1, 3, int(sys.argv[3]), int(sys.argv[4]))
y = s.run(None, {"x": x})[0][0].astype(np.float64)
p = np.exp(y - y.max()); p /= p.sum()
print(json.dumps([float(v) for v in p]))
"#;

fn frames() -> Vec<Vec<u8>> {
    let mut cam = SimCamera::new(SimCameraConfig {
        seed: 5,
        ..SimCameraConfig::default()
    });
    (0..8u64)
        .map(|k| {
            let defect = [None, Some("porosity"), Some("crack")][k as usize % 3];
            let t = CaptureTrigger {
                module_serial: k + 1,
                weld_index: (k % 8) as u32,
                stamp_ns: 0,
                weld_temp_c: 180.0,
            };
            cam.render(&t, defect).pixels
        })
        .collect()
}

#[test]
fn a_classifier_passes_on_its_ok_class_like_onnxruntime_and_a_softmax() {
    use triad_hw::sim::camera::{FRAME_H, FRAME_W};
    let roi = Roi {
        x: ROI_X,
        y: ROI_Y,
        w: ROI_W,
        h: ROI_H,
    };
    let frames = frames();
    // The normalised mean of each ROI; the threshold in the widest gap
    // between the 2nd and the 7th, so that some frames pass and some fail.
    let mean = |px: &[u8]| {
        let mut s = 0.0f64;
        for y in roi.y..roi.y + roi.h {
            for x in roi.x..roi.x + roi.w {
                s += f64::from(px[(y * FRAME_W + x) as usize]);
            }
        }
        (s / f64::from(roi.w * roi.h) / 255.0 - f64::from(MEAN)) / f64::from(STD)
    };
    let mut means: Vec<f64> = frames.iter().map(|f| mean(f)).collect();
    means.sort_by(f64::total_cmp);
    let split = (1..6)
        .max_by(|&a, &b| (means[a + 1] - means[a]).total_cmp(&(means[b + 1] - means[b])))
        .unwrap();
    let t = (means[split] + means[split + 1]) / 2.0;
    // The largest logit at most 60 (e^-60 is far from f32's underflow); the
    // frames nearest the threshold at least 2 from porosity's 0.5.
    let g = 60.0 / means.iter().map(|m| (m - t).abs()).fold(0.0, f64::max);
    assert!(
        g / 2.0 * (means[split + 1] - means[split]) / 2.0 > 2.5,
        "ROI means too close: {means:?}"
    );

    let dir = TempDir::new("classifier");
    let model_path = dir.path().join("model.onnx");
    let st = std::process::Command::new(python())
        .args(["-c", WRITER])
        .arg(&model_path)
        .args([t.to_string(), g.to_string(), ROI_H.to_string(), ROI_W.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "the classifier writer failed");
    let manifest: ModelManifest = serde_json::from_value(serde_json::json!({
        "name": "weld_cls", "version": "0.2.0", "kind": "inspection", "family": "classifier",
        "classifier": {"ok_class": "good", "top_k": 2},
        "input": {"name": "x", "shape": [1, 3, ROI_H, ROI_W], "mean": MEAN, "std": STD},
        "output": {"name": "y", "shape": [1, 3], "classes": ["good", "porosity", "crack"]},
    }))
    .unwrap();
    let model = Arc::new(OnnxModel::load(&std::fs::read(&model_path).unwrap(), manifest).unwrap());
    let mut insp = Inspector::new(InspectorConfig { roi, threshold: 0.5 }, &model).unwrap();
    let mut verdicts = [0usize; 2];
    for (k, px) in frames.iter().enumerate() {
        let image = GrayImage {
            width: FRAME_W,
            height: FRAME_H,
            pixels: px,
        };
        let r = insp.inspect(&image).unwrap();
        // The input: the normalised ROI, the same in each of the 3 channels.
        let input = insp.last_input();
        let plane = (ROI_W * ROI_H) as usize;
        assert_eq!(input.len(), 3 * plane);
        for (i, v) in input[..plane].iter().enumerate() {
            let (y, x) = (roi.y + i as u32 / roi.w, roi.x + i as u32 % roi.w);
            let p = f32::from(px[(y * FRAME_W + x) as usize]);
            assert!((v - (p / 255.0 - MEAN) / STD).abs() < 1e-5, "frame {k} input {i}");
        }
        assert_eq!(&input[..plane], &input[plane..2 * plane]);
        assert_eq!(&input[..plane], &input[2 * plane..]);
        // The reference.
        let inp = dir.path().join(format!("in{k}.f32"));
        std::fs::write(&inp, input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let out = std::process::Command::new(python())
            .args(["-c", REFERENCE])
            .arg(&model_path)
            .arg(&inp)
            .args([ROI_H.to_string(), ROI_W.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let p: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
        let top = (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert!(
            p.iter().enumerate().all(|(c, v)| c == top || p[top] - v > 1e-3),
            "frame {k}: {p:?} too close to call"
        );
        if top == 0 {
            assert_eq!((r.verdict, r.defects.len()), (Verdict::Pass, 0), "frame {k}: {p:?}");
            verdicts[0] += 1;
        } else {
            assert_eq!(r.verdict, Verdict::Fail, "frame {k}: {p:?}");
            verdicts[1] += 1;
            // top_k 2: the top class, and the second if it is a defect class.
            let mut ranked: Vec<usize> = vec![0, 1, 2];
            ranked.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let expect: Vec<usize> = ranked[..2].iter().copied().filter(|&c| c != 0).collect();
            let names = ["good", "porosity", "crack"];
            assert_eq!(r.defects.len(), expect.len(), "frame {k}: {:?} vs {p:?}", r.defects);
            for (d, c) in r.defects.iter().zip(expect) {
                assert_eq!(d.class, names[c]);
                assert!((d.score - p[c]).abs() < 1e-4, "frame {k}: {} vs {}", d.score, p[c]);
                assert_eq!(
                    (d.x, d.y, d.w, d.h),
                    (ROI_X as i32, ROI_Y as i32, ROI_W as i32, ROI_H as i32)
                );
            }
        }
        assert_eq!((r.model_name.as_str(), r.model_version.as_str()), ("weld_cls", "0.2.0"));
    }
    assert_eq!(verdicts, [7 - split, split + 1], "the threshold splits the frames");
    // A classifier needs the ROI at its input size.
    let off = Roi { w: ROI_W - 8, ..roi };
    assert!(
        Inspector::new(
            InspectorConfig {
                roi: off,
                threshold: 0.5
            },
            &model
        )
        .is_err()
    );
}
