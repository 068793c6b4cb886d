//! Signed model hot-swap through the real `triad` binary, as the people who
//! ship and deploy models use it: `triad keys gen`, `bundle build`, `bundle
//! sign`, `bundle verify`, `token issue`, `deploy` and `rollback` against a
//! running node (`triad run --sim`) over its HTTP API. Also: replay across a
//! node restart, the NaN fuse on the running line, anonymous requests,
//! tokens made and checked by Python's PyJWT, and the twin's model shipped,
//! swapped and rolled back the same way.

mod model_swap_util;

use model_swap_util::py;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use triad_tests::{TempDir, free_port, node_lock, python, triad, triad_bin, workspace_root};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(args: &[&str]) -> String {
    let o = triad(args, &[]);
    assert!(o.status.success(), "triad {args:?} failed:\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Keys, config and bundles of one scenario.
struct Setup {
    dir: TempDir,
    device: String,
}

impl Setup {
    fn new(name: &str) -> Self {
        Self::build(name, "edge-01", "")
    }

    /// A node with id `device`; `bus` (a `[bus]` table) replaces the embedded bus.
    fn build(name: &str, device: &str, bus: &str) -> Self {
        let dir = TempDir::new(name);
        let keys = dir.path().join("keys");
        for (name, uses) in [
            ("release-2025", "bundle"),
            ("release-2024", "bundle"),
            ("ops", "deploy,command"),
        ] {
            let out = ok(&["keys", "gen", "--name", name, "--uses", uses, "--out", s(&keys)]);
            assert!(out.contains("[[security.keys]]"), "{out}");
        }
        // The private key file is not readable by others.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("ops.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "private key mode {mode:o}");
        let base = include_str!("../../edge/src/config/default.toml")
            .replace("clock_skew_s = 60", "clock_skew_s = 5")
            .replace("probation_s = 60", "probation_s = 2")
            .replace("probation_min_frames = 50", "probation_min_frames = 3")
            .replace("max_bundle_mb = 64", "max_bundle_mb = 1")
            .replace("\"edge-01\"", &format!("\"{device}\""));
        let mut cfg = if bus.is_empty() {
            base
        } else {
            format!("{}\n{bus}", base.replace("[bus]\nbackend = \"embedded\"\n", ""))
        };
        for (name, uses, revoked) in [
            ("release-2025", "\"bundle\"", false),
            ("release-2024", "\"bundle\"", true),
            ("ops", "\"deploy\", \"command\"", false),
        ] {
            cfg.push_str(&format!(
                "\n[[security.keys]]\nname = \"{name}\"\npublic_key_file = \"{}\"\nuses = [{uses}]\nrevoked = {revoked}\n",
                s(&keys.join(format!("{name}.pub")))
            ));
        }
        std::fs::write(dir.path().join("node.toml"), cfg).unwrap();
        let out = ok(&["check-config", s(&dir.path().join("node.toml"))]);
        assert!(out.contains(": ok"), "{out}");
        Self {
            dir,
            device: device.into(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn key(&self, name: &str) -> PathBuf {
        self.p(&format!("keys/{name}.key"))
    }

    /// `triad bundle build SOURCE… --target T --version V --out DIR EXTRA…`,
    /// then `bundle sign` with `signer`'s key. Returns the bundle and what
    /// `build` printed.
    fn build_signed(
        &self,
        name: &str,
        source: &[&str],
        target: &str,
        version: &str,
        extra: &[&str],
        signer: &str,
    ) -> (PathBuf, String) {
        let out = self.p(name);
        let mut args = vec!["bundle", "build"];
        args.extend_from_slice(source);
        args.extend_from_slice(&["--target", target, "--version", version, "--out", s(&out)]);
        args.extend_from_slice(extra);
        let built = ok(&args);
        assert!(built.contains(&format!(" {version} for {target}")), "{built}");
        let signed = ok(&["bundle", "sign", s(&out), "--key", s(&self.key(signer))]);
        assert!(signed.contains(&format!("with key \"{signer}\"")), "{signed}");
        (out, built)
    }

    /// A signed bundle of the weld model (or another ONNX file with its manifest) for `cell_2245`.
    fn bundle(&self, name: &str, version: &str, onnx: Option<&Path>, extra: &[&str], signer: &str) -> PathBuf {
        let weld = workspace_root().join("inspect/models/weld_seam");
        let manifest = weld.join("manifest.json");
        let source = match onnx {
            None => vec!["--from", s(&weld)],
            Some(m) => vec!["--model", s(m), "--manifest", s(&manifest)],
        };
        let (out, built) = self.build_signed(name, &source, "cell_2245", version, extra, signer);
        assert!(built.contains(&format!("weld_seam {version} for cell_2245")), "{built}");
        out
    }

    /// A bundle of the model directory `from` for `target`, signed with `release-2025`.
    fn bundle_from(&self, name: &str, from: &Path, target: &str, version: &str, extra: &[&str]) -> PathBuf {
        self.build_signed(name, &["--from", s(from)], target, version, extra, "release-2025")
            .0
    }

    fn token(&self, args: &[&str]) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.p(&format!("token-{n}.jwt"));
        let key = self.key("ops");
        let mut a = vec![
            "token",
            "issue",
            "--key",
            s(&key),
            "--issuer",
            "alice@plant",
            "--device",
            &self.device,
            "--out",
            s(&path),
        ];
        a.extend_from_slice(args);
        let o = triad(&a, &[]);
        assert!(o.status.success(), "{}", text(&o));
        path
    }
}

struct Node {
    child: Child,
    url: String,
}

impl Node {
    async fn start(setup: &Setup) -> Self {
        let port = free_port();
        let child = Command::new(triad_bin())
            .args([
                "run",
                "--sim",
                "--scenario",
                "nominal",
                "--config",
                s(&setup.p("node.toml")),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--state-dir",
                s(&setup.p("state")),
            ])
            .current_dir(workspace_root())
            .env("TRIAD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if reqwest::get(format!("{url}/api/models"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(Instant::now() < deadline, "node did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, url }
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The status of model target `id` (`GET /api/models`).
    async fn target(&self, id: &str) -> Value {
        let m = self.get("/api/models").await;
        m.as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no target {id} in {m}"))
    }

    /// The inspection cell's model version and status.
    async fn running(&self) -> (String, Value) {
        let cell = self.target("cell_2245").await;
        (cell["current"]["version"].as_str().unwrap().to_string(), cell)
    }

    async fn audit(&self) -> Vec<Value> {
        self.get("/api/audit?limit=500").await.as_array().unwrap().clone()
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn deploy(node: &Node, bundle: &Path, token: &Path) -> Output {
    triad(
        &[
            "deploy",
            "--node",
            &node.url,
            "--bundle",
            s(bundle),
            "--token-file",
            s(token),
        ],
        &[],
    )
}

fn rollback(node: &Node, target: &str, token: &Path) -> Output {
    triad(
        &[
            "rollback",
            "--node",
            &node.url,
            "--target",
            target,
            "--token-file",
            s(token),
        ],
        &[],
    )
}

#[tokio::test]
async fn ship_deploy_restart_replay_rollback_and_the_nan_fuse_through_the_binary() {
    let _g = node_lock().await;
    let setup = Setup::new("e2e-swap");
    let b11 = setup.bundle("weld-1.1.0", "1.1.0", None, &[], "release-2025");
    // Offline verification against the node's configuration.
    let v = ok(&["bundle", "verify", s(&b11), "--config", s(&setup.p("node.toml"))]);
    assert!(
        v.contains("ok: weld_seam 1.1.0") && v.contains("4 golden case(s) pass"),
        "{v}"
    );
    // A bundle signed by the revoked key fails verification offline too.
    let old = setup.bundle("weld-old", "1.1.0", None, &[], "release-2024");
    let o = triad(
        &["bundle", "verify", s(&old), "--config", s(&setup.p("node.toml"))],
        &[],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("bundle_signer_revoked"), "{}", text(&o));

    let mut node = Node::start(&setup).await;
    assert_eq!(node.running().await.0, "1.0.0");

    // Nothing anonymous: a deploy without a token.
    let archive = setup.p("weld-1.1.0.tar.gz");
    ok(&["bundle", "pack", s(&b11), "--out", s(&archive)]);
    let r = reqwest::Client::new()
        .post(format!("{}/api/models/cell_2245/deploy", node.url))
        .body(std::fs::read(&archive).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "token_missing", "{body}");
    // An oversized bundle (incompressible, over the node's 1 MiB) is refused
    // from its Content-Length before it is received; `triad deploy` finds the
    // reason in the audit log when the node closes the connection early.
    let big = setup.p("weld-big");
    std::fs::create_dir_all(&big).unwrap();
    for f in std::fs::read_dir(&b11).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), big.join(f.file_name())).unwrap();
        }
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(big.join("padding.bin"), noise).unwrap();
    let tok_big = setup.token(&["--use", "deploy", "--bundle", s(&b11)]);
    let o = deploy(&node, &big, &tok_big);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("bundle_too_large") && text(&o).contains("max_bundle_mb"),
        "{}",
        text(&o)
    );
    // A forged token is refused before the body is read.
    let r = reqwest::Client::new()
        .post(format!("{}/api/models/cell_2245/deploy", node.url))
        .bearer_auth("eyJhbGciOiJub25lIn0.e30.")
        .body(std::fs::read(&archive).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "token_algorithm", "{body}");
    assert_eq!(node.running().await.0, "1.0.0");

    // The main path: token for this bundle, deploy from the packed archive.
    let tok = setup.token(&["--use", "deploy", "--bundle", s(&b11), "--ttl", "10m"]);
    let o = deploy(&node, &archive, &tok);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("weld_seam 1.1.0 runs on cell_2245 (was 1.0.0)"),
        "{}",
        text(&o)
    );
    let (v, st) = node.running().await;
    assert_eq!(v, "1.1.0", "{st}");
    assert_eq!(st["previous"]["version"], "1.0.0");
    let state = node.get("/api/state").await;
    assert!(
        state["inspection"]["model"]
            .as_str()
            .unwrap()
            .starts_with("weld_seam 1.1.0"),
        "{}",
        state["inspection"]["model"]
    );
    // The same token again.
    let o = deploy(&node, &b11, &tok);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("token_replayed"), "{}", text(&o));

    // Restart: the deployed model comes back, the token stays used.
    node.stop();
    let node2 = Node::start(&setup).await;
    node = node2;
    assert_eq!(node.running().await.0, "1.1.0");
    let o = deploy(&node, &b11, &tok);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("token_replayed") && text(&o).contains("already used"),
        "{}",
        text(&o)
    );
    assert_eq!(node.running().await.0, "1.1.0");

    // Rollback needs a rollback token.
    let dtok = setup.token(&["--use", "deploy", "--bundle", s(&b11)]);
    let o = rollback(&node, "cell_2245", &dtok);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("token_wrong_use"), "{}", text(&o));
    let rtok = setup.token(&["--use", "rollback", "--target", "cell_2245"]);
    let o = rollback(&node, "cell_2245", &rtok);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(node.running().await.0, "1.0.0");

    // A model that outputs NaN on real frames (its golden input is black).
    let nan_onnx = setup.p("nan.onnx");
    py(
        "make_models.py",
        &[
            "nan",
            s(&workspace_root().join("inspect/models/weld_seam/model.onnx")),
            s(&nan_onnx),
        ],
    );
    let black = setup.p("black.f32");
    std::fs::write(
        &black,
        (0..4096).flat_map(|_| (-2.0f32).to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    let bnan = setup.bundle(
        "weld-nan",
        "1.2.0",
        Some(&nan_onnx),
        &["--golden-input", s(&black)],
        "release-2025",
    );
    let o = deploy(&node, &bnan, &setup.token(&["--use", "deploy", "--bundle", s(&bnan)]));
    assert!(o.status.success(), "{}", text(&o));
    let auto = wait_audit(&node, "the fuse did not roll the NaN model back", |a| {
        a["action"] == "auto_rollback"
    })
    .await;
    assert_eq!(auto["code"], "fuse_non_finite", "{auto}");
    assert_eq!(
        (auto["from_version"].as_str(), auto["to_version"].as_str()),
        (Some("1.2.0"), Some("1.0.0"))
    );
    assert_eq!(node.running().await.0, "1.0.0");
    let state = node.get("/api/state").await;
    assert_eq!(
        state["inspection"]["errors"], 0,
        "a frame was lost: {}",
        state["inspection"]
    );

    // Every decision is in the audit file, and no token is.
    node.stop();
    let audit = std::fs::read_to_string(setup.p("state/audit.jsonl")).unwrap();
    for needle in [
        "\"code\":\"token_missing\"",
        "\"action\":\"deploy\",\"outcome\":\"accepted\"",
        "\"code\":\"token_replayed\"",
        "\"action\":\"load_at_start\",\"outcome\":\"accepted\"",
        "\"action\":\"rollback\",\"outcome\":\"accepted\"",
        "\"code\":\"fuse_non_finite\"",
    ] {
        assert!(audit.contains(needle), "{needle} not in the audit log:\n{audit}");
    }
    assert!(!audit.contains("eyJ"), "a token leaked into the audit log");
}

#[tokio::test]
async fn pyjwt_tokens_are_accepted_where_valid_and_the_nodes_tokens_verify_in_pyjwt() {
    let _g = node_lock().await;
    let setup = Setup::new("e2e-pyjwt");
    let b11 = setup.bundle("weld-1.1.0", "1.1.0", None, &[], "release-2025");
    let bv = setup.bundle("weld-1.2.0", "1.2.0", None, &[], "release-2025");
    let digest = |b: &Path| {
        let v = ok(&[
            "bundle",
            "verify",
            s(b),
            "--config",
            s(&setup.p("node.toml")),
            "--skip-golden",
        ]);
        v.rsplit("digest ").next().unwrap().trim().to_string()
    };
    let node = Node::start(&setup).await;
    let claims = |b: &Path, version: &str, jti: &str| {
        serde_json::json!({
            "iss": "bob@plant (PyJWT)", "sub": "cell_2245", "aud": "edge-01",
            "nbf": "-10", "exp": "+600", "iat": "-10", "jti": jti, "use": "deploy",
            "bundle_digest": digest(b), "bundle_version": version,
        })
        .to_string()
    };
    let key = setup.key("ops");
    let write = |name: &str, t: String| {
        let p = setup.p(name);
        std::fs::write(&p, t.trim()).unwrap();
        p
    };
    // alg none and HS256 made by PyJWT are refused.
    let none = write(
        "none.jwt",
        py(
            "jwt_interop.py",
            &["issue", s(&key), &claims(&b11, "1.1.0", "py-0"), "--alg", "none"],
        ),
    );
    let o = deploy(&node, &b11, &none);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("token_algorithm") && text(&o).contains("\"none\""),
        "{}",
        text(&o)
    );
    let hs = write(
        "hs.jwt",
        py(
            "jwt_interop.py",
            &[
                "issue",
                s(&setup.p("keys/ops.pub")),
                &claims(&b11, "1.1.0", "py-1"),
                "--alg",
                "HS256",
                "--kid",
                "ops",
            ],
        ),
    );
    let o = deploy(&node, &b11, &hs);
    assert!(
        text(&o).contains("token_algorithm") && text(&o).contains("HS256"),
        "{}",
        text(&o)
    );
    assert_eq!(node.running().await.0, "1.0.0");
    // A valid PyJWT EdDSA token with a kid, then one without a kid.
    let t1 = write(
        "py1.jwt",
        py(
            "jwt_interop.py",
            &["issue", s(&key), &claims(&b11, "1.1.0", "py-2"), "--kid", "ops"],
        ),
    );
    let o = deploy(&node, &b11, &t1);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(node.running().await.0, "1.1.0");
    let t2 = write(
        "py2.jwt",
        py("jwt_interop.py", &["issue", s(&key), &claims(&bv, "1.2.0", "py-3")]),
    );
    let o = deploy(&node, &bv, &t2);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(node.running().await.0, "1.2.0");
    let audit = node.audit().await;
    assert!(
        audit
            .iter()
            .any(|a| a["action"] == "deploy" && a["outcome"] == "accepted" && a["actor"] == "bob@plant (PyJWT)"),
        "{audit:?}"
    );
    // A PyJWT token for another device is refused with its reason.
    let other = claims(&bv, "1.2.0", "py-4").replace("\"aud\":\"edge-01\"", "\"aud\":\"edge-99\"");
    let t3 = write(
        "py3.jwt",
        py("jwt_interop.py", &["issue", s(&key), &other, "--kid", "ops"]),
    );
    let o = deploy(&node, &bv, &t3);
    assert!(text(&o).contains("token_audience"), "{}", text(&o));

    // The node's tokens verify in PyJWT (deploy and command tokens).
    for args in [
        vec!["--use", "deploy", "--bundle", s(&bv)],
        vec![
            "--use",
            "command",
            "--axis",
            "axis_07",
            "--actions",
            "SetRate,Derate",
            "--min-ppm",
            "5",
            "--max-ppm",
            "12",
        ],
    ] {
        let tok = std::fs::read_to_string(setup.token(&args)).unwrap();
        let out = py(
            "jwt_interop.py",
            &["verify", s(&setup.p("keys/ops.pub")), tok.trim(), "edge-01"],
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["header"]["alg"], "EdDSA");
        assert_eq!(v["header"]["kid"], "ops");
        assert_eq!(v["claims"]["iss"], "alice@plant");
        assert_eq!(v["claims"]["aud"], "edge-01");
        assert!(v["claims"]["jti"].as_str().unwrap().len() >= 16);
        assert!(v["claims"]["exp"].as_i64().unwrap() > v["claims"]["nbf"].as_i64().unwrap());
    }
    // PyJWT refuses the node's token for another audience too.
    let tok = std::fs::read_to_string(setup.token(&["--use", "rollback", "--target", "cell_2245"])).unwrap();
    let o = Command::new(triad_tests::python())
        .arg(workspace_root().join("tests/python/jwt_interop.py"))
        .args(["verify", s(&setup.p("keys/ops.pub")), tok.trim(), "edge-02"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("InvalidAudience"),
        "{}",
        text(&o)
    );
}

/// `twin/training/export_thermal_onnx.py --out DIR ARGS…`: a twin model directory.
fn export_thermal(out: &Path, args: &[&str]) {
    let o = Command::new(python())
        .arg(workspace_root().join("twin/training/export_thermal_onnx.py"))
        .args(["--out", s(out)])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "export_thermal_onnx.py failed: {}", text(&o));
}

async fn wait_audit(node: &Node, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(a) = node.audit().await.into_iter().find(|a| pred(a)) {
            return a;
        }
        assert!(Instant::now() < deadline, "no audit record: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_twin_model_is_shipped_swapped_fused_and_reloaded_like_an_inspection_model() {
    let _g = node_lock().await;
    let setup = Setup::new("e2e-twin");
    let mut node = Node::start(&setup).await;
    let t = node.target("battery_pack_89").await;
    assert_eq!(t["kind"], "twin", "{t}");
    assert_eq!(
        (t["current"]["name"].as_str(), t["current"]["version"].as_str()),
        (Some("weld_thermal"), Some("1.0.0")),
        "{t}"
    );

    // A re-fitted model (2 % more heat gain), exported by the project's script.
    let refit = setup.p("thermal-1.1.0");
    export_thermal(&refit, &["--version", "1.1.0", "--gain-scale", "1.02"]);
    let b11 = setup.bundle_from("twin-1.1.0", &refit, "battery_pack_89", "1.1.0", &[]);
    let v = ok(&["bundle", "verify", s(&b11), "--config", s(&setup.p("node.toml"))]);
    assert!(
        v.contains("ok: weld_thermal 1.1.0 (Twin) for battery_pack_89") && v.contains("4 golden case(s) pass"),
        "{v}"
    );
    let o = deploy(&node, &b11, &setup.token(&["--use", "deploy", "--bundle", s(&b11)]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("weld_thermal 1.1.0 runs on battery_pack_89 (was 1.0.0)")
            && text(&o).contains("taken by 1/1 worker"),
        "{}",
        text(&o)
    );
    // The twin thread judged it through probation (2 s, at least 3 samples).
    let passed = wait_audit(&node, "twin probation passed", |a| {
        a["action"] == "probation_passed" && a["target"] == "battery_pack_89"
    })
    .await;
    assert_eq!(passed["to_version"], "1.1.0", "{passed}");
    let state = node.get("/api/state").await;
    assert_eq!(state["twin"]["model"], "weld_thermal 1.1.0", "{}", state["twin"]);
    // The inspection cell is untouched.
    assert_eq!(node.running().await.0, "1.0.0");

    // An inspection model is not a twin model, whatever its manifest's target says.
    let wrong = setup.bundle_from(
        "weld-for-twin",
        &workspace_root().join("inspect/models/weld_seam"),
        "battery_pack_89",
        "1.3.0",
        &[],
    );
    let o = deploy(&node, &wrong, &setup.token(&["--use", "deploy", "--bundle", s(&wrong)]));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("bundle_kind"), "{}", text(&o));

    // A model that outputs NaN at a running weld's temperature; its golden
    // case is a cold start, which it gets right. The fuse rolls it back on
    // the first sample, and that sample is predicted again by 1.1.0.
    let broken = setup.p("thermal-nan");
    export_thermal(&broken, &["--version", "1.2.0", "--nan-above", "100"]);
    let cold = setup.p("cold.f32");
    std::fs::write(
        &cold,
        [25.0f32, 0.05, 12.0, 5000.0, 25.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let bnan = setup.bundle_from(
        "twin-nan",
        &broken,
        "battery_pack_89",
        "1.2.0",
        &["--golden-input", s(&cold)],
    );
    let o = deploy(&node, &bnan, &setup.token(&["--use", "deploy", "--bundle", s(&bnan)]));
    assert!(o.status.success(), "{}", text(&o));
    let auto = wait_audit(&node, "twin auto rollback", |a| {
        a["action"] == "auto_rollback" && a["target"] == "battery_pack_89"
    })
    .await;
    assert_eq!(auto["code"], "fuse_non_finite", "{auto}");
    assert_eq!(
        (auto["from_version"].as_str(), auto["to_version"].as_str()),
        (Some("1.2.0"), Some("1.1.0")),
        "{auto}"
    );
    assert_eq!(node.target("battery_pack_89").await["current"]["version"], "1.1.0");
    let state = node.get("/api/state").await;
    let predicted = state["twin"]["predicted_c"].as_f64().unwrap();
    assert!(
        (150.0..210.0).contains(&predicted),
        "prediction {predicted} after the rollback"
    );
    assert!(
        state["alerts"].as_array().unwrap().is_empty(),
        "a swap raised an alert: {}",
        state["alerts"]
    );

    // Restart: the deployed twin model is re-verified and comes back.
    node.stop();
    node = Node::start(&setup).await;
    assert_eq!(node.target("battery_pack_89").await["current"]["version"], "1.1.0");
    let audit = node.audit().await;
    assert!(
        audit
            .iter()
            .any(|a| a["action"] == "load_at_start" && a["target"] == "battery_pack_89" && a["outcome"] == "accepted"),
        "{audit:?}"
    );
}

/// Publish a `ModelRequest` on the node's request topic with the Python
/// client (an independent sender, as a fleet manager or an MES would be).
fn publish_model_request(service: &str, device: &str, record: &Value, bundle: Option<&Path>) {
    let mut c = Command::new(python());
    c.arg(workspace_root().join("tests/python/pulsar_publish.py"))
        .args([
            "--service",
            service,
            "--topic",
            &format!("persistent://public/default/models.{device}.request"),
            "--record",
            &record.to_string(),
        ])
        .arg("--schema")
        .arg(workspace_root().join("schemas/avro/model_request.avsc"));
    if let Some(b) = bundle {
        c.arg("--bytes-field").arg(format!("bundle={}", s(b)));
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "pulsar_publish.py failed: {}", text(&o));
}

fn model_request(device: &str, id: &str, action: &str, token: &Path) -> Value {
    serde_json::json!({
        "envelope": {"schema_version": 1, "node": "fleet-manager", "sequence": 1, "stamp_ns": triad_tests::now_ns(), "clock": "FreeRunning", "clock_offset_ns": null},
        "request_id": id, "target": "cell_2245", "action": action,
        "token": std::fs::read_to_string(token).unwrap().trim(),
        "bundle": null, "issued_by": format!("python-pulsar-client for {device}"),
    })
}

#[tokio::test]
async fn models_are_deployed_and_rolled_back_over_pulsar_by_a_python_client() {
    let _g = node_lock().await;
    let (service, admin) = triad_tests::pulsar_env();
    let device = format!("edge-{}", triad_tests::unique("m"));
    let bus = triad_tests::pulsar_bus(&service, &admin, &[]);
    let setup = Setup::build("e2e-bus-deploy", &device, &bus);
    let node = Node::start(&setup).await;
    // The node's subscription exists before anything is sent.
    triad_tests::wait_for_subscription(
        &admin,
        &format!("persistent://public/default/models.{device}.request"),
        "triad-node-models",
    )
    .await;
    let origin = |id: &str| format!("bus models/{device}/request {id}");
    let decision = |id: String| {
        let node = &node;
        async move { wait_audit(node, &format!("decision on {id}"), |a| a["origin"] == id.as_str()).await }
    };

    // Deploy: the archive travels in the message.
    let b11 = setup.bundle("weld-1.1.0", "1.1.0", None, &[], "release-2025");
    let archive = setup.p("weld-1.1.0.tar.gz");
    ok(&["bundle", "pack", s(&b11), "--out", s(&archive)]);
    let tok = setup.token(&["--use", "deploy", "--bundle", s(&b11)]);
    publish_model_request(
        &service,
        &device,
        &model_request(&device, "req-1", "Deploy", &tok),
        Some(&archive),
    );
    let a = decision(origin("req-1")).await;
    assert_eq!(
        (a["action"].as_str(), a["outcome"].as_str()),
        (Some("deploy"), Some("accepted")),
        "{a}"
    );
    assert_eq!(node.running().await.0, "1.1.0");

    // The same token again: refused, nothing changes.
    publish_model_request(
        &service,
        &device,
        &model_request(&device, "req-2", "Deploy", &tok),
        Some(&archive),
    );
    let a = decision(origin("req-2")).await;
    assert_eq!(a["code"], "token_replayed", "{a}");
    // A deploy without its bundle: refused before the token is used.
    let tok3 = setup.token(&["--use", "deploy", "--bundle", s(&b11)]);
    publish_model_request(
        &service,
        &device,
        &model_request(&device, "req-3", "Deploy", &tok3),
        None,
    );
    let a = decision(origin("req-3")).await;
    assert_eq!(a["code"], "bundle_missing_file", "{a}");
    assert_eq!(node.running().await.0, "1.1.0");

    // Rollback over the bus.
    let rtok = setup.token(&["--use", "rollback", "--target", "cell_2245"]);
    publish_model_request(
        &service,
        &device,
        &model_request(&device, "req-4", "Rollback", &rtok),
        None,
    );
    let a = decision(origin("req-4")).await;
    assert_eq!(
        (a["action"].as_str(), a["outcome"].as_str()),
        (Some("rollback"), Some("accepted")),
        "{a}"
    );
    assert_eq!(node.running().await.0, "1.0.0");

    // The sender reads the decisions on the audit topic, with the Python client.
    let events = triad_tests::pulsar_read(
        &service,
        &format!("persistent://public/default/audit.{device}.event"),
        "audit_event.avsc",
        None,
        None,
    );
    let on_topic: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["record"]["origin"].as_str().is_some_and(|o| o.starts_with("bus ")))
        .map(|e| {
            (
                e["record"]["origin"]
                    .as_str()
                    .unwrap()
                    .rsplit(' ')
                    .next()
                    .unwrap()
                    .to_string(),
                e["record"]["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, code) in [
        ("req-1", "ok"),
        ("req-2", "token_replayed"),
        ("req-3", "bundle_missing_file"),
        ("req-4", "ok"),
    ] {
        assert!(
            on_topic.contains(&(id.to_string(), code.to_string())),
            "{id} {code} not on the audit topic: {on_topic:?}"
        );
    }
}
