//! A broker that requires a JWT (token authentication and authorisation on)
//! and also serves TLS: the node and its tools get in with the token from a
//! file, and without it they are refused with an error that says so — while
//! the node keeps running and holds its messages in the outbox. Over
//! `pulsar+ssl://` the node verifies the broker against the configured CA;
//! without that CA it does not connect, says why, and loses nothing.

use std::process::Command;
use triad_tests::{TempDir, node_lock, pulsar_bus, pulsar_read, triad, unique, unique_config, workspace_root};

struct Broker {
    run_dir: TempDir,
    env: std::collections::HashMap<String, String>,
}

impl Broker {
    fn start() -> Self {
        let run_dir = TempDir::new("pulsar-auth");
        let out = Command::new(workspace_root().join("deploy/pulsar/standalone"))
            .args(["start", "--auth-token", "--tls"])
            .env("TRIAD_PULSAR_RUN_DIR", run_dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "token broker did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        Broker { run_dir, env }
    }
    fn get(&self, k: &str) -> &str {
        self.env
            .get(k)
            .unwrap_or_else(|| panic!("standalone did not print {k}"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new(workspace_root().join("deploy/pulsar/standalone"))
            .arg("stop")
            .env("TRIAD_PULSAR_RUN_DIR", self.run_dir.path())
            .output();
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run the node for 8 s with `config` against a broker that will not let it
/// in; it must run on regardless. Returns what it logged and its report,
/// after checking that its results waited in the outbox.
fn run_refused(config: &std::path::Path, state: &std::path::Path) -> (String, serde_json::Value) {
    let report = state.join("r.json");
    let o = triad(
        &[
            "run",
            "--sim",
            "--scenario",
            "nominal",
            "--duration",
            "8s",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        &[("TRIAD_LOG", "warn")],
    );
    let said = text(&o);
    assert!(o.status.success(), "the node must run without the broker: {said}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        r["outbox_pending_bus"].as_u64().unwrap() > 10,
        "results wait in the outbox: {}",
        r["outbox_pending_bus"]
    );
    (said, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authentication_and_tls_let_the_node_in_and_keep_strangers_out() {
    let _serial = node_lock().await;
    let broker = Broker::start();
    let (service, admin, token) = (
        broker.get("PULSAR_SERVICE_URL").to_string(),
        broker.get("PULSAR_ADMIN_URL").to_string(),
        broker.get("PULSAR_ADMIN_TOKEN_FILE").to_string(),
    );
    assert_eq!(broker.get("PULSAR_AUTH"), "token");
    let id = unique("a");
    let dir = TempDir::new("pulsar-auth-node");

    // Tools: refused without the token, accepted with it.
    let base_cfg = dir.path().join("plain.toml");
    std::fs::write(&base_cfg, unique_config(&id, "")).unwrap();
    let o = triad(
        &[
            "schemas",
            "check",
            "--admin-url",
            &admin,
            "--config",
            base_cfg.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("refused the credentials (HTTP 401)"), "{}", text(&o));
    let o = triad(
        &[
            "schemas",
            "push",
            "--admin-url",
            &admin,
            "--config",
            base_cfg.to_str().unwrap(),
            "--token-file",
            &token,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));

    // The node with its token: everything reaches the broker.
    let with_token = dir.path().join("token.toml");
    let bus = pulsar_bus(&service, &admin, &[format!("token_file = \"{token}\"")]);
    std::fs::write(&with_token, unique_config(&id, &bus)).unwrap();
    let state = TempDir::new("pulsar-auth-state");
    let r = triad_tests::run_scenario(
        "nominal",
        "8s",
        state.path(),
        &["--config", with_token.to_str().unwrap()],
    )
    .await;
    assert_eq!(r["outbox_pending_bus"], 0, "all delivered with the token");
    let frames = r["inspection"]["frames"].as_u64().unwrap() as usize;
    assert!(frames > 10, "{r:#}");
    let topic = format!("persistent://public/default/insp.cell_{id}.result");
    let msgs = pulsar_read(
        &service,
        &topic,
        "inspection_result.avsc",
        Some(frames),
        Some(std::path::Path::new(&token)),
    );
    assert_eq!(msgs.len(), frames);

    // Without a token the broker refuses the node; the node runs on and keeps
    // its results in the outbox.
    let id2 = unique("n");
    let no_token = dir.path().join("anon.toml");
    let bus = pulsar_bus(&service, &admin, &[]);
    std::fs::write(&no_token, unique_config(&id2, &bus)).unwrap();
    let state2 = TempDir::new("pulsar-auth-anon");
    let (said, r) = run_refused(&no_token, state2.path());
    assert!(r["control"]["cycles"].as_u64().unwrap() > 6000, "control ran");
    assert!(
        said.contains("Pulsar") && (said.contains("401") || said.to_lowercase().contains("auth")),
        "{said}"
    );

    // TLS: the node over pulsar+ssl://, verifying the broker with the CA of
    // the configuration (and authenticating with its token inside the
    // channel). What it publishes is read back over the plain port.
    let (tls_url, ca) = (
        broker.get("PULSAR_SERVICE_URL_TLS").to_string(),
        broker.get("PULSAR_TLS_CA_FILE").to_string(),
    );
    assert!(tls_url.starts_with("pulsar+ssl://127.0.0.1:"), "{tls_url}");
    let id3 = unique("t");
    let tls_cfg = dir.path().join("tls.toml");
    let bus = pulsar_bus(
        &tls_url,
        &admin,
        &[format!("token_file = \"{token}\""), format!("tls_ca_file = \"{ca}\"")],
    );
    std::fs::write(&tls_cfg, unique_config(&id3, &bus)).unwrap();
    let state3 = TempDir::new("pulsar-tls-state");
    let r = triad_tests::run_scenario("nominal", "8s", state3.path(), &["--config", tls_cfg.to_str().unwrap()]).await;
    assert_eq!(r["outbox_pending_bus"], 0, "all delivered over TLS: {r:#}");
    let frames = r["inspection"]["frames"].as_u64().unwrap() as usize;
    assert!(frames > 10, "{r:#}");
    let msgs = pulsar_read(
        &service,
        &format!("persistent://public/default/insp.cell_{id3}.result"),
        "inspection_result.avsc",
        Some(frames),
        Some(std::path::Path::new(&token)),
    );
    assert_eq!(msgs.len(), frames, "every result sent over TLS is on the topic");

    // Without the CA the broker's certificate is not trusted: no connection,
    // a log line that says why, results kept in the outbox.
    let id4 = unique("u");
    let untrusted = dir.path().join("untrusted.toml");
    let bus = pulsar_bus(&tls_url, &admin, &[format!("token_file = \"{token}\"")]);
    std::fs::write(&untrusted, unique_config(&id4, &bus)).unwrap();
    let state4 = TempDir::new("pulsar-tls-untrusted");
    let (said, _) = run_refused(&untrusted, state4.path());
    assert!(
        said.contains("UnknownIssuer") && said.contains("set [bus] tls_ca_file"),
        "the log must say the certificate is not trusted and what to set: {said}"
    );
}
