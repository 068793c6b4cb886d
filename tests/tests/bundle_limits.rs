//! Every size a bundle, its manifest or a token declares is checked before
//! anything is allocated from it, and non-finite values are refused where
//! they enter, with the true reason: through the real binary (`triad
//! bundle build`, `sign`, `verify`, `deploy`) and the node's deploy path.

mod model_swap_util;

use model_swap_util::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;
use triad_edge::models::bundle::{self, Bundle, MANIFEST_FILE, SIGNATURE_FILE, SignatureFile};
use triad_edge::trust::keys::{self, SigningKey};
use triad_edge::trust::token::MAX_TOKEN_BYTES;
use triad_tests::{TempDir, triad, workspace_root};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn weld_model() -> String {
    workspace_root()
        .join("inspect/models/weld_seam/model.onnx")
        .display()
        .to_string()
}

/// `triad bundle build --model weld --manifest <manifest edited by f>`.
fn build_with(dir: &Path, f: impl FnOnce(&mut Value), extra: &[&str]) -> Output {
    let mut m: Value = serde_json::from_str(triad_inspect::builtin::WELD_SEAM_MANIFEST).unwrap();
    f(&mut m);
    let mp = dir.join("manifest.json");
    std::fs::write(&mp, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = dir.join("out");
    let model = weld_model();
    let mut args = vec![
        "bundle",
        "build",
        "--model",
        &model,
        "--manifest",
        s(&mp),
        "--target",
        CELL,
        "--version",
        "1.1.0",
        "--out",
        s(&out),
        "--force",
    ];
    args.extend_from_slice(extra);
    triad(&args, &[])
}

fn assert_refused_by(o: &Output, code: i32, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(code), "exit status {:?}:\n{}", o.status, text(o));
    for n in needles {
        assert!(text(o).contains(n), "output does not name {n:?}:\n{}", text(o));
    }
}

#[test]
fn bundle_build_refuses_huge_shapes_counts_and_lengths_before_allocating() {
    let dir = TempDir::new("bl-build");
    // The tried case: 3.6e9 values (14.4 GB) used to abort the build.
    let o = build_with(dir.path(), |m| m["input"]["shape"] = json!([1, 1, 60000, 60000]), &[]);
    assert_refused_by(
        &o,
        3,
        &["input.shape = [1, 1, 60000, 60000] holds 3600000000 values, more than the bound 16777216"],
    );
    assert!(!dir.path().join("out").exists());
    // A product past 2^64 does not wrap or panic.
    let o = build_with(
        dir.path(),
        |m| m["input"]["shape"] = json!([1, 1, 4_294_967_296u64, 4_294_967_296u64]),
        &[],
    );
    assert_refused_by(&o, 3, &["input.shape[2] = 4294967296; the bound is 1 to 65536"]);
    let o = build_with(
        dir.path(),
        |m| m["output"]["shape"] = json!([1, 3, 8, 8, 1, 1, 1, 1, 1]),
        &[],
    );
    assert_refused_by(&o, 3, &["output.shape has 9 dimensions; the bound is 1 to 8"]);
    let o = build_with(
        dir.path(),
        |m| {
            m["output"]["classes"] = json!(vec!["defect"; 1000]);
            m["output"]["shape"] = json!([1, 1000, 8, 8]);
        },
        &[],
    );
    assert_refused_by(&o, 3, &["output.classes has 1000 names; the bound is 256"]);
    let o = build_with(dir.path(), |m| m["name"] = json!("w".repeat(5000)), &[]);
    assert_refused_by(&o, 3, &["name is 5000 bytes long; the bound is 1 to 128 bytes"]);
    let o = build_with(dir.path(), |m| m["input"]["std"] = json!(1e39), &[]);
    assert_refused_by(&o, 2, &["manifest.json: number out of range"]);
    // A manifest file of 2 MiB is refused by its size, before it is read.
    let big = dir.path().join("big.json");
    let mut padded = triad_inspect::builtin::WELD_SEAM_MANIFEST.to_string();
    padded.push_str(&" ".repeat(2 * 1024 * 1024));
    std::fs::write(&big, padded).unwrap();
    let model = weld_model();
    let out = dir.path().join("out");
    let o = triad(
        &[
            "bundle",
            "build",
            "--model",
            &model,
            "--manifest",
            s(&big),
            "--target",
            CELL,
            "--out",
            s(&out),
        ],
        &[],
    );
    assert_refused_by(&o, 2, &["big.json is 2097", "bytes; the bound is 1048576 bytes"]);
}

#[test]
fn golden_files_of_the_wrong_size_or_not_finite_are_refused_by_name() {
    let dir = TempDir::new("bl-golden");
    let gi = dir.path().join("in.f32");
    std::fs::write(&gi, [0u8; 100]).unwrap();
    let o = build_with(dir.path(), |_| {}, &["--golden-input", s(&gi)]);
    assert_refused_by(
        &o,
        2,
        &["in.f32 is 100 bytes, but the manifest's shape [1, 1, 64, 64] declares 4096 f32 values (16384 bytes)"],
    );
    let mut x = vec![0.0f32; 4096];
    x[5] = f32::NAN;
    std::fs::write(&gi, bundle::f32_bytes(&x)).unwrap();
    let o = build_with(dir.path(), |_| {}, &["--golden-input", s(&gi)]);
    assert_refused_by(&o, 2, &["in.f32 holds NaN at element 5: golden values must be finite"]);
    let go = dir.path().join("out.f32");
    let mut y = vec![0.0f32; 192];
    y[7] = f32::INFINITY;
    std::fs::write(&gi, bundle::f32_bytes(&[0.0; 4096])).unwrap();
    std::fs::write(&go, bundle::f32_bytes(&y)).unwrap();
    let o = build_with(
        dir.path(),
        |_| {},
        &["--golden-input", s(&gi), "--golden-output", s(&go)],
    );
    assert_refused_by(&o, 2, &["out.f32 holds inf at element 7"]);
}

#[test]
fn bundle_build_says_the_model_outputs_nan() {
    let dir = TempDir::new("bl-nan-build");
    // Every input gives NaN (the threshold is below any normalised pixel).
    let onnx = model_variant(dir.path(), "nan", &["-100"]);
    let model = dir.path().join("nan.onnx");
    std::fs::write(&model, onnx).unwrap();
    let mp = dir.path().join("manifest.json");
    std::fs::write(&mp, triad_inspect::builtin::WELD_SEAM_MANIFEST).unwrap();
    let out = dir.path().join("out");
    let o = triad(
        &[
            "bundle",
            "build",
            "--model",
            s(&model),
            "--manifest",
            s(&mp),
            "--target",
            CELL,
            "--version",
            "1.1.0",
            "--out",
            s(&out),
        ],
        &[],
    );
    assert_refused_by(
        &o,
        3,
        &["the model outputs NaN (output grid, element 0) on golden input 0: a model must output finite values"],
    );
    assert!(!out.exists(), "no bundle is written");
}

/// Edit `b`'s manifest with `f`, refresh every file's SHA-256 and sign the
/// result directly (as a careless or compromised release pipeline could),
/// bypassing the checks of `triad bundle sign`.
fn resign(b: &mut Bundle, key: &SigningKey, f: impl FnOnce(&mut Value)) {
    let mut m: Value = serde_json::from_slice(b.get(MANIFEST_FILE).unwrap()).unwrap();
    f(&mut m);
    let paths: Vec<String> = b
        .paths()
        .filter(|p| *p != MANIFEST_FILE && *p != SIGNATURE_FILE)
        .map(str::to_string)
        .collect();
    for p in paths {
        m["files"][&p] = json!(bundle::sha256_hex(b.get(&p).unwrap()));
    }
    b.insert(MANIFEST_FILE, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let sig = key.sign(&bundle::canonical_json(&m));
    let file = SignatureFile {
        alg: "Ed25519".into(),
        key_id: key.name().into(),
        signature: base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig),
    };
    b.insert(SIGNATURE_FILE, serde_json::to_vec(&file).unwrap()).unwrap();
}

/// `triad bundle verify` of `b` written to a folder.
fn verify_dir(root: &Path, name: &str, b: &Bundle, key: &SigningKey) -> Output {
    let dir = root.join(name);
    b.write_dir(&dir).unwrap();
    let public = root.join(format!("{}.pub", key.name()));
    std::fs::write(&public, keys::public_pem(key.public())).unwrap();
    triad(&["bundle", "verify", s(&dir), "--trust", s(&public)], &[])
}

fn nan_output_bundle(key: &SigningKey) -> Bundle {
    let mut b = weld_bundle("1.1.0", key);
    let mut y = bundle::f32_values(b.get("golden/0.out.f32").unwrap()).unwrap();
    y[3] = f32::NAN;
    b.insert("golden/0.out.f32", bundle::f32_bytes(&y)).unwrap();
    resign(&mut b, key, |_| {});
    b
}

#[test]
fn signed_manifests_declaring_too_much_are_refused_at_verify_and_deploy() {
    let rig = Rig::new("bl-signed");
    let root = TempDir::new("bl-signed-files");
    let key = &rig.keys.release;
    type Edit<'a> = Box<dyn Fn(&mut Bundle) + 'a>;
    let cases: Vec<(&str, Edit<'_>, &str, &str)> = vec![
        (
            "cases",
            Box::new(|b: &mut Bundle| {
                resign(b, key, |m| {
                    let one = m["golden"]["cases"][0].clone();
                    m["golden"]["cases"] = json!(vec![one; 1000]);
                })
            }),
            "bundle_manifest",
            "golden.cases has 1000 cases; the bound is 256",
        ),
        (
            "shape",
            Box::new(|b: &mut Bundle| resign(b, key, |m| m["input"]["shape"] = json!([1, 1, 60000, 60000]))),
            "bundle_manifest",
            "holds 3600000000 values, more than the bound 16777216",
        ),
        (
            "empty-name",
            Box::new(|b: &mut Bundle| resign(b, key, |m| m["name"] = json!(""))),
            "bundle_manifest",
            "name is 0 bytes long",
        ),
        (
            "golden-size",
            Box::new(|b: &mut Bundle| {
                b.insert("golden/1.in.f32", vec![0u8; 1000]).unwrap();
                resign(b, key, |_| {})
            }),
            "golden_size",
            "golden/1.in.f32 (golden case 1 input) is 1000 bytes, but the input shape declares 4096 f32 values (16384 bytes)",
        ),
        (
            "golden-nan",
            Box::new(|b: &mut Bundle| *b = nan_output_bundle(key)),
            "golden_non_finite",
            "golden/0.out.f32 (golden case 0 output) holds NaN at element 3: golden values must be finite",
        ),
    ];
    for (name, edit, code, needle) in cases {
        let mut b = weld_bundle("1.1.0", key);
        edit(&mut b);
        let o = verify_dir(root.path(), name, &b, key);
        assert_refused_by(&o, 3, &[&format!("refused ({code})"), needle]);
        let tok = rig.token(&deploy_claims_unchecked(&b));
        rig.assert_refused(rig.deploy(&b, &tok), code, needle, 1);
    }
    // A manifest.json of 2 MiB is refused by its size before it is parsed.
    let mut b = weld_bundle("1.1.0", key);
    let mut text = b.get(MANIFEST_FILE).unwrap().to_vec();
    text.extend(std::iter::repeat_n(b' ', 2 * 1024 * 1024));
    b.insert(MANIFEST_FILE, text).unwrap();
    let o = verify_dir(root.path(), "padded", &b, key);
    assert_refused_by(
        &o,
        3,
        &["bundle manifest.json is invalid: it is 2", "the bound is 1048576 bytes"],
    );
}

/// Deploy claims for a bundle whose manifest the checks refuse: its digest
/// is that of the canonical manifest, computed without validating it.
fn deploy_claims_unchecked(b: &Bundle) -> triad_edge::trust::token::Claims {
    let v: Value = serde_json::from_slice(b.get(MANIFEST_FILE).unwrap()).unwrap();
    let mut c = deploy_claims(&weld_bundle("1.1.0", &SigningKey::generate("x").unwrap().0));
    c.bundle_digest = Some(bundle::sha256_digest(&bundle::canonical_json(&v)));
    c
}

#[test]
fn non_finite_golden_values_are_refused_at_sign_verify_and_deploy_with_their_own_code() {
    let rig = Rig::new("bl-nan");
    let root = TempDir::new("bl-nan-files");
    let key = &rig.keys.release;
    // `triad bundle sign` refuses to sign NaN golden outputs.
    let b = nan_output_bundle(key);
    let dir = root.path().join("unsigned");
    b.write_dir(&dir).unwrap();
    let kp = root.path().join("release-2025.key");
    let seed_key = SigningKey::generate("release-2025").unwrap();
    std::fs::write(&kp, keys::private_pem(&seed_key.1)).unwrap();
    let o = triad(&["bundle", "sign", s(&dir), "--key", s(&kp)], &[]);
    assert_refused_by(
        &o,
        3,
        &["golden/0.out.f32 (golden case 0 output) holds NaN at element 3"],
    );
    // A model that outputs NaN where the bundle expects finite values: the
    // true reason, not a golden mismatch.
    let onnx = model_variant(root.path(), "nan", &["-100"]);
    let m = weld_manifest();
    let (n_in, n_out) = (m.input_values().unwrap(), m.output_values().unwrap());
    let mut b = build(&onnx, "1.1.0", vec![vec![0.0; n_in]], Some(vec![vec![0.0; n_out]]));
    bundle::sign(&mut b, key).unwrap();
    let o = verify_dir(root.path(), "nan-model", &b, key);
    assert_refused_by(
        &o,
        3,
        &["refused (model_non_finite): golden case 0 fails: the model outputs NaN (output grid, element 0)"],
    );
    let tok = rig.token(&deploy_claims(&b));
    rig.assert_refused(
        rig.deploy(&b, &tok),
        "model_non_finite",
        "the model outputs NaN (output grid, element 0)",
        1,
    );
}

#[test]
fn tokens_are_bounded_before_decoding_and_their_claims_by_length() {
    let rig = Rig::new("bl-token");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    // Longer than a token can be: refused before any decoding.
    let long = format!("{}.{}.{}", "a".repeat(MAX_TOKEN_BYTES), "b", "c");
    rig.assert_refused(
        rig.deploy(&b, &long),
        "token_malformed",
        "it is 16388 bytes; the bound is 16384 bytes",
        1,
    );
    let mut c = deploy_claims(&b);
    c.iss = "i".repeat(300);
    rig.assert_refused(
        rig.deploy(&b, &rig.token(&c)),
        "token_claims",
        "iss is 300 bytes long; the bound is 1 to 256 bytes",
        1,
    );
    let mut c = deploy_claims(&b);
    c.aud = triad_edge::trust::token::Audience::Many(vec![DEVICE.into(); 100]);
    rig.assert_refused(
        rig.deploy(&b, &rig.token(&c)),
        "token_claims",
        "aud names 100 devices; the bound is 1 to 16",
        1,
    );
    // `triad deploy` reads at most a token's worth of its token file.
    let dir = TempDir::new("bl-token-file");
    let tf = dir.path().join("token.jwt");
    std::fs::write(&tf, vec![b'a'; 1024 * 1024]).unwrap();
    let bd = dir.path().join("b");
    b.write_dir(&bd).unwrap();
    let o = triad(
        &[
            "deploy",
            "--node",
            "http://127.0.0.1:9",
            "--bundle",
            s(&bd),
            "--token-file",
            s(&tf),
        ],
        &[],
    );
    assert_refused_by(&o, 2, &["holds more than 17408 bytes; a token is at most 16384 bytes"]);
}
