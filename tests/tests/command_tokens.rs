//! Control commands from outside carry a signed token with a scope (axis,
//! actions, rate limits). An unsigned, forged, replayed or out-of-scope
//! command is refused with its reason, audited, and never reaches the
//! control thread. In process against the command gate (with a stand-in
//! control loop that counts what reaches it), then through a running node's
//! HTTP API.

mod model_swap_util;

use model_swap_util::{DEVICE, Keys, now_s};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use triad_edge::clock::SystemClock;
use triad_edge::commands::{CommandAuth, CommandError, CommandGate, Origin};
use triad_edge::control::ControlEvent;
use triad_edge::control::rings::control_rings;
use triad_edge::metrics::Metrics;
use triad_edge::trust::SecurityConfig;
use triad_edge::trust::audit::AuditLog;
use triad_edge::trust::keys::SigningKey;
use triad_edge::trust::replay::MemoryReplay;
use triad_edge::trust::token::{self, Audience, Claims, CommandScope, TokenPolicy, TokenUse};
use triad_schemas::codec::SCHEMA_VERSION;
use triad_schemas::{AxisMode, ClockState, CommandAction, ControlCommand, Envelope};
use triad_tests::TempDir;

struct GateRig {
    _dir: TempDir,
    gate: Arc<CommandGate>,
    reached: Arc<AtomicUsize>,
    audit: Arc<AuditLog>,
    keys: Keys,
}

impl GateRig {
    fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        let keys = Keys::new();
        let audit = Arc::new(AuditLog::open(&dir.path().join("audit.jsonl"), DEVICE).unwrap());
        let auth = Arc::new(CommandAuth {
            device: DEVICE.into(),
            security: SecurityConfig {
                keyring: keys.keyring(),
                policy: TokenPolicy::default(),
            },
            replay: Arc::new(Mutex::new(MemoryReplay::default())),
            audit: audit.clone(),
            clock: Arc::new(SystemClock),
        });
        let (mut rings, endpoints) = control_rings();
        let gate = Arc::new(
            CommandGate::new(
                "axis_07".into(),
                1.0,
                15.0,
                endpoints.requests,
                Arc::new(Metrics::new()),
            )
            .with_auth(auth),
        );
        // A stand-in control loop: counts and applies every request that reaches it.
        let reached = Arc::new(AtomicUsize::new(0));
        let (g, n) = (gate.clone(), reached.clone());
        tokio::spawn(async move {
            loop {
                while let Ok(req) = rings.requests.pop() {
                    n.fetch_add(1, Ordering::SeqCst);
                    g.handle_event(
                        1,
                        &ControlEvent::Applied {
                            handle: req.handle,
                            action: req.action,
                            from_ppm: 12.0,
                            to_ppm: req.value,
                            mode: AxisMode::Running,
                        },
                    );
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Self {
            _dir: dir,
            gate,
            reached,
            audit,
            keys,
        }
    }

    fn claims(&self, actions: &[CommandAction]) -> Claims {
        let now = now_s();
        Claims {
            iss: "operator-hmi".into(),
            sub: "axis_07".into(),
            aud: Audience::One(DEVICE.into()),
            nbf: now - 5,
            exp: now + 60,
            iat: None,
            jti: token::new_jti(),
            use_: TokenUse::Command,
            bundle_digest: None,
            bundle_version: None,
            scope: Some(CommandScope {
                axis: "axis_07".into(),
                actions: actions.to_vec(),
                min_ppm: Some(5.0),
                max_ppm: Some(12.0),
            }),
        }
    }

    fn token(&self, c: &Claims) -> String {
        token::issue(c, &self.keys.ops)
    }

    /// Submit from outside; on refusal assert its code and reason, that
    /// nothing reached the control loop, and that it was audited.
    async fn refused(&self, cmd: ControlCommand, code: &str, needle: &str) {
        let before = self.reached.load(Ordering::SeqCst);
        let e = self.gate.submit(&cmd, Origin::External).await.unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().contains(needle), "{e} does not name {needle:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            self.reached.load(Ordering::SeqCst),
            before,
            "a refused command reached the control loop"
        );
        let last = self.audit.recent(1).pop().unwrap();
        assert_eq!(
            (last.action.as_str(), last.outcome.as_str(), last.code.as_str()),
            ("command", "refused", code)
        );
        assert_eq!(last.target, "axis_07");
    }
}

fn command(action: CommandAction, value: Option<f64>, token: Option<String>) -> ControlCommand {
    ControlCommand {
        envelope: Envelope {
            schema_version: SCHEMA_VERSION,
            node: "hmi".into(),
            sequence: 1,
            stamp_ns: 0,
            clock: ClockState::FreeRunning,
            clock_offset_ns: None,
        },
        command_id: format!("C-{}", token::new_jti()),
        axis: "axis_07".into(),
        action,
        value,
        reason: "test".into(),
        issued_by: "hmi-3".into(),
        token,
    }
}

#[tokio::test]
async fn unsigned_forged_replayed_and_out_of_scope_commands_change_nothing() {
    let rig = GateRig::new("cmd-gate");
    use CommandAction::*;
    // Unsigned.
    rig.refused(
        command(SetRate, Some(10.0), None),
        "command_unsigned",
        "need a signed command token",
    )
    .await;
    // Forged: signed by a key nobody trusts; or a valid token with a changed claim.
    let stranger = SigningKey::generate("ops").unwrap().0; // same name, other key
    rig.refused(
        command(
            SetRate,
            Some(10.0),
            Some(token::issue(&rig.claims(&[SetRate]), &stranger)),
        ),
        "token_signature",
        "does not verify",
    )
    .await;
    let good = rig.token(&rig.claims(&[SetRate]));
    let mut c = rig.claims(&[SetRate, SkipReinspection]);
    c.jti = "x".into();
    let parts: Vec<&str> = good.split('.').collect();
    use base64::Engine;
    let widened = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap()),
        parts[2]
    );
    rig.refused(
        command(SkipReinspection, None, Some(widened)),
        "token_signature",
        "altered",
    )
    .await;
    // Out of scope: "skip re-inspection" with a token that only allows rates.
    rig.refused(
        command(SkipReinspection, None, Some(rig.token(&rig.claims(&[SetRate, Derate])))),
        "command_out_of_scope",
        "SkipReinspection is not among the allowed actions",
    )
    .await;
    // A rate inside the axis limits (15) but outside the token's (12).
    rig.refused(
        command(SetRate, Some(14.0), Some(rig.token(&rig.claims(&[SetRate])))),
        "command_out_of_scope",
        "outside the token's 5..=12 PPM",
    )
    .await;
    // Another axis' token.
    let mut other = rig.claims(&[SetRate]);
    other.sub = "axis_08".into();
    other.scope.as_mut().unwrap().axis = "axis_08".into();
    rig.refused(
        command(SetRate, Some(10.0), Some(rig.token(&other))),
        "command_out_of_scope",
        "the token is for axis \"axis_08\"",
    )
    .await;
    // Expired, and a deploy token.
    let mut old = rig.claims(&[SetRate]);
    old.exp = now_s() - 120;
    rig.refused(
        command(SetRate, Some(10.0), Some(rig.token(&old))),
        "token_expired",
        "expired",
    )
    .await;
    let mut dep = rig.claims(&[SetRate]);
    dep.use_ = TokenUse::Deploy;
    dep.scope = None;
    dep.bundle_digest = Some("sha256:00".into());
    dep.bundle_version = Some("1.0.0".into());
    rig.refused(
        command(SetRate, Some(10.0), Some(rig.token(&dep))),
        "token_wrong_use",
        "deploy token",
    )
    .await;
    // alg none.
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&rig.claims(&[SetRate])).unwrap())
    );
    rig.refused(
        command(SetRate, Some(10.0), Some(none)),
        "token_algorithm",
        "only EdDSA",
    )
    .await;
    assert_eq!(rig.reached.load(Ordering::SeqCst), 0);

    // A valid command is applied once; the same token again is a replay.
    let tok = rig.token(&rig.claims(&[SetRate]));
    let (_, ev) = rig
        .gate
        .submit(&command(SetRate, Some(10.0), Some(tok.clone())), Origin::External)
        .await
        .unwrap();
    assert!(matches!(ev, ControlEvent::Applied { to_ppm, .. } if to_ppm == 10.0));
    assert_eq!(rig.reached.load(Ordering::SeqCst), 1);
    let last = rig.audit.recent(1).pop().unwrap();
    assert_eq!(
        (last.outcome.as_str(), last.actor.as_deref(), last.key_id.as_deref()),
        ("accepted", Some("operator-hmi"), Some("ops"))
    );
    rig.refused(
        command(SetRate, Some(10.0), Some(tok)),
        "token_replayed",
        "already used",
    )
    .await;
    // The node's own rules need no token.
    rig.gate
        .submit(&command(Derate, Some(8.0), None), Origin::Internal)
        .await
        .unwrap();
    assert_eq!(rig.reached.load(Ordering::SeqCst), 2);
    // The axis limits still apply to a token that allows more.
    let mut wide = rig.claims(&[SetRate]);
    wide.scope.as_mut().unwrap().max_ppm = Some(100.0);
    let e = rig
        .gate
        .submit(&command(SetRate, Some(50.0), Some(rig.token(&wide))), Origin::External)
        .await
        .unwrap_err();
    assert!(matches!(e, CommandError::OutOfRange { .. }), "{e}");
    assert_eq!(rig.reached.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn commands_through_the_nodes_http_api_need_a_scoped_token() {
    use std::process::{Command, Stdio};
    use std::time::Instant;
    use triad_tests::{free_port, node_lock, triad, triad_bin, workspace_root};
    let _g = node_lock().await;
    let dir = TempDir::new("cmd-http");
    let keys = dir.path().join("keys");
    let o = triad(
        &[
            "keys",
            "gen",
            "--name",
            "hmi",
            "--uses",
            "command",
            "--out",
            keys.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success());
    let cfg = format!(
        "{}\n[[security.keys]]\nname = \"hmi\"\npublic_key_file = \"{}\"\nuses = [\"command\"]\n",
        include_str!("../../edge/src/config/default.toml"),
        keys.join("hmi.pub").display()
    );
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let port = free_port();
    let mut child = Command::new(triad_bin())
        .args([
            "run",
            "--sim",
            "--scenario",
            "nominal",
            "--config",
            cfg_path.to_str().unwrap(),
        ])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--state-dir",
            dir.path().join("state").to_str().unwrap(),
        ])
        .current_dir(workspace_root())
        .env("TRIAD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{url}/api/state")).send().await.is_err() {
        assert!(Instant::now() < deadline, "node did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = |actions: &str| triad_tests::command_token(&keys.join("hmi.key"), actions, "2m");
    let post = |body: Value, tok: Option<String>| {
        let mut r = http.post(format!("{url}/api/axes/axis_07/commands")).json(&body);
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let setpoint = || async {
        let s: Value = http
            .get(format!("{url}/api/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        s["axis"]["ppm_setpoint"].as_f64().unwrap()
    };
    // Wait for the line to run at its nominal rate.
    let deadline = Instant::now() + Duration::from_secs(10);
    while setpoint().await != 12.0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = post(serde_json::json!({"action": "SetRate", "value": 9.0}), None)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = post(
        serde_json::json!({"action": "SkipReinspection", "reason": "rush order"}),
        Some(token("SetRate")),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "command_out_of_scope", "{v}");
    assert_eq!(setpoint().await, 12.0);
    let tok = token("SetRate");
    let r = post(
        serde_json::json!({"action": "SetRate", "value": 9.0, "reason": "material shortage"}),
        Some(tok.clone()),
    )
    .await
    .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["outcome"], "applied", "{v}");
    assert_eq!(v["to_ppm"], 9.0);
    let r = post(serde_json::json!({"action": "SetRate", "value": 11.0}), Some(tok))
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "token_replayed", "{v}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(setpoint().await, 9.0);
    let audit: Value = http
        .get(format!("{url}/api/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "command")
        .map(|a| a["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["command_unsigned", "command_out_of_scope", "ok", "token_replayed"],
        "{audit}"
    );
    let _ = Command::new("kill").arg("-INT").arg(child.id().to_string()).status();
    let _ = child.wait();
}
