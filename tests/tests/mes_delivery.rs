//! Work orders reach the MES whatever it does: errors are retried from the
//! outbox, an unreachable MES is waited for (across a node restart), and a
//! refusal is kept as a dead letter, never silently dropped.

use triad_tests::{RecordingMes, TempDir, free_port, node_lock, run_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mes_errors_are_retried_until_accepted() {
    let _serial = node_lock().await;
    let mes = RecordingMes::start("127.0.0.1:0".parse().unwrap(), vec![503, 503, 500]).await;
    let dir = TempDir::new("mes-retry");
    let url = mes.url();
    let r = run_scenario("weld-drift", "18s", dir.path(), &["--mes-url", &url]).await;
    let got = mes.received();
    assert_eq!(
        got.iter().map(|q| q.answered).collect::<Vec<_>>(),
        vec![503, 503, 500, 201],
        "{got:?}"
    );
    let key = got[0].idempotency_key.clone().unwrap();
    assert!(
        got.iter().all(|q| q.idempotency_key.as_deref() == Some(key.as_str())),
        "retries carry the same key"
    );
    assert!(got.iter().all(|q| q.body == got[0].body), "retries carry the same body");
    let wo = &r["work_orders"][0];
    assert!(wo["delivered_ns"].as_i64().is_some(), "{wo}");
    assert_eq!(wo["attempts"], 4);
    assert_eq!(r["outbox_pending_mes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_mes_gets_the_work_order_after_a_restart() {
    let _serial = node_lock().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/workorders");
    let dir = TempDir::new("mes-down");
    // Nothing listens on the port: the work order waits in the outbox.
    let first = run_scenario("weld-drift", "17s", dir.path(), &["--mes-url", &url]).await;
    assert_eq!(first["outbox_pending_mes"], 1, "{}", first["work_orders"]);
    let wo = &first["work_orders"][0];
    assert!(
        wo["delivered_ns"].is_null() && wo["attempts"].as_u64().unwrap() >= 2,
        "{wo}"
    );
    assert!(wo["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{wo}");
    let id = wo["work_order_id"].as_str().unwrap().to_string();

    // The MES comes up; the node restarts on the same state directory.
    let mes = RecordingMes::start(format!("127.0.0.1:{port}").parse().unwrap(), vec![]).await;
    let second = run_scenario("nominal", "4s", dir.path(), &["--mes-url", &url]).await;
    let got = mes.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body["work_order_id"], id.as_str());
    assert_eq!(second["outbox_pending_mes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_work_order_is_kept_as_a_dead_letter() {
    let _serial = node_lock().await;
    let mes = RecordingMes::start("127.0.0.1:0".parse().unwrap(), vec![422]).await;
    let dir = TempDir::new("mes-refuse");
    let url = mes.url();
    let r = run_scenario("weld-drift", "16s", dir.path(), &["--mes-url", &url]).await;
    assert_eq!(mes.received().len(), 1, "a refusal is not retried");
    let wo = &r["work_orders"][0];
    assert_eq!(wo["refused"], true, "{wo}");
    assert!(wo["last_error"].as_str().unwrap().contains("422"), "{wo}");
    assert_eq!(r["outbox_dead_letters"], 1);
    assert_eq!(r["outbox_pending_mes"], 0);
}
