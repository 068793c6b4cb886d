//! The node's log on a file or the journal: one event per line, no colour
//! codes; JSON objects with `TRIAD_LOG_FORMAT=json`; no secret in it.

use triad_tests::{TempDir, node_lock, triad};

fn run_logged(dir: &TempDir, format: &str) -> String {
    let state = dir.path().join(format);
    let o = triad(
        &[
            "run",
            "--sim",
            "--scenario",
            "nominal",
            "--duration",
            "2s",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[("TRIAD_LOG", "info"), ("TRIAD_LOG_FORMAT", format)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stderr).expect("UTF-8 log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_log_is_plain_text_or_json_one_event_per_line() {
    let _g = node_lock().await;
    let dir = TempDir::new("logs");
    let text = run_logged(&dir, "text");
    assert!(!text.contains('\u{1b}'), "colour codes in a piped log:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("INFO") && l.contains("triad node running")),
        "{text}"
    );
    assert!(
        text.lines()
            .all(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR ") || l.contains(" DEBUG ")),
        "one event per line:\n{text}"
    );

    let json = run_logged(&dir, "json");
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let running = events
        .iter()
        .find(|e| e["message"] == "triad node running; dashboard at the url")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(running["level"], "INFO");
    assert!(
        running["url"].as_str().unwrap().starts_with("http://127.0.0.1:"),
        "{running}"
    );
}
