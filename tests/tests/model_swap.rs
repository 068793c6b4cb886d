//! Signed model hot-swap, in process: the model service with a live
//! inspection worker. Each attack asserts the refusal, its reason, that the
//! running model (the built-in weld_seam 1.0.0) stays in place on the slot
//! and on the worker's frames, and that the refusal is audited. Then the
//! main path (deploy, swap between frames, rollback), replay across a
//! restart, and the fuse rolling back a NaN model and a slow model without
//! losing a frame.

mod model_swap_util;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use model_swap_util::*;
use triad_edge::models::bundle::test_support::raw_tar;
use triad_edge::models::bundle::{self, BundleLimits, MANIFEST_FILE, MODEL_FILE};
use triad_edge::models::manager::{BundlePayload, ModelsSettings};
use triad_edge::trust::token::{self, Audience};

#[test]
fn a_flipped_byte_in_the_model_is_refused() {
    let rig = Rig::new("ms-flip");
    let mut b = weld_bundle("1.1.0", &rig.keys.release);
    let tok = rig.token(&deploy_claims(&b));
    let m = b.get_mut(MODEL_FILE).unwrap();
    let at = m.len() / 2;
    m[at] ^= 0x01;
    rig.assert_refused(
        rig.deploy(&b, &tok),
        "bundle_digest",
        "model.onnx does not match its SHA-256",
        1,
    );
}

#[test]
fn an_edited_manifest_is_refused() {
    let rig = Rig::new("ms-edit");
    let mut b = weld_bundle("1.1.0", &rig.keys.release);
    let tok = rig.token(&deploy_claims(&b));
    // Loosen the golden tolerance after signing.
    let text = String::from_utf8(b.get(MANIFEST_FILE).unwrap().to_vec()).unwrap();
    let edited = text.replace("0.0001", "0.5");
    assert_ne!(text, edited);
    b.insert(MANIFEST_FILE, edited.into_bytes()).unwrap();
    rig.assert_refused(
        rig.deploy(&b, &tok),
        "bundle_signature",
        "manifest.json was changed after signing",
        1,
    );
}

#[test]
fn a_bundle_signed_by_an_unknown_key_is_refused() {
    let rig = Rig::new("ms-unknown");
    let b = weld_bundle("1.1.0", &rig.keys.stranger);
    let tok = rig.token(&deploy_claims(&b));
    rig.assert_refused(
        rig.deploy(&b, &tok),
        "bundle_unknown_signer",
        "unknown key \"stranger\"",
        1,
    );
}

#[test]
fn a_bundle_signed_by_a_revoked_key_is_refused() {
    let rig = Rig::new("ms-revoked");
    let b = weld_bundle("1.1.0", &rig.keys.old_release);
    let tok = rig.token(&deploy_claims(&b));
    rig.assert_refused(
        rig.deploy(&b, &tok),
        "bundle_signer_revoked",
        "revoked key \"release-2024\"",
        1,
    );
}

#[test]
fn an_unsigned_bundle_is_refused() {
    let rig = Rig::new("ms-unsigned");
    let b = build(triad_inspect::builtin::WELD_SEAM_ONNX, "1.1.0", vec![], None);
    let tok = rig.token(&deploy_claims(&b));
    rig.assert_refused(rig.deploy(&b, &tok), "bundle_unsigned", "unsigned models never run", 1);
}

#[test]
fn an_expired_token_is_refused() {
    let rig = Rig::new("ms-expired");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let mut c = deploy_claims(&b);
    c.nbf = now_s() - 900;
    c.exp = now_s() - 120;
    rig.assert_refused(rig.deploy(&b, &rig.token(&c)), "token_expired", "token expired at", 1);
}

#[test]
fn a_not_yet_valid_token_is_refused() {
    let rig = Rig::new("ms-nbf");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let mut c = deploy_claims(&b);
    c.nbf = now_s() + 600;
    c.exp = now_s() + 900;
    rig.assert_refused(
        rig.deploy(&b, &rig.token(&c)),
        "token_not_yet_valid",
        "not valid before",
        1,
    );
}

#[test]
fn a_token_for_another_device_is_refused() {
    let rig = Rig::new("ms-aud");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let mut c = deploy_claims(&b);
    c.aud = Audience::One("edge-02".into());
    rig.assert_refused(
        rig.deploy(&b, &rig.token(&c)),
        "token_audience",
        "for device [\"edge-02\"]",
        1,
    );
}

#[test]
fn a_token_for_another_target_is_refused() {
    let rig = Rig::new("ms-sub");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let mut c = deploy_claims(&b);
    c.sub = "cell_9".into();
    rig.assert_refused(rig.deploy(&b, &rig.token(&c)), "token_target", "target \"cell_9\"", 1);
}

#[test]
fn a_deploy_or_rollback_for_an_unknown_target_is_refused_before_the_token_is_used() {
    let rig = Rig::new("ms-unknown");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let mut c = deploy_claims(&b);
    c.sub = "cell_9".into();
    let tok = rig.token(&c);
    let r = rig
        .service
        .deploy_blocking("cell_9", &tok, BundlePayload::Archive(b.to_archive()), "test");
    let e = r.expect_err("no such target");
    assert_eq!(e.code(), "unknown_target", "{e}");
    assert!(
        e.to_string().contains("cell_2245"),
        "the refusal names the known targets: {e}"
    );
    let mut rc = rollback_claims();
    rc.sub = "cell_9".into();
    let e = rig
        .service
        .rollback_blocking("cell_9", &rig.token(&rc), "test")
        .expect_err("no such target");
    assert_eq!(e.code(), "unknown_target", "{e}");
    let last: Vec<_> = rig
        .audit
        .recent(2)
        .into_iter()
        .map(|a| (a.action, a.code, a.target))
        .collect();
    assert_eq!(
        last,
        [
            ("deploy".to_string(), "unknown_target".to_string(), "cell_9".to_string()),
            (
                "rollback".to_string(),
                "unknown_target".to_string(),
                "cell_9".to_string()
            )
        ]
    );
    // The token was not used up: it is refused for its target, not as a replay.
    let e = rig
        .service
        .deploy_blocking("cell_9", &tok, BundlePayload::Archive(b.to_archive()), "test")
        .expect_err("still no such target");
    assert_eq!(e.code(), "unknown_target", "{e}");
    assert_eq!(rig.running(), ("1.0.0".to_string(), 1));
}

#[test]
fn a_token_for_another_digest_is_refused() {
    let rig = Rig::new("ms-digest");
    let authorised = weld_bundle("1.1.0", &rig.keys.release);
    let tok = rig.token(&deploy_claims(&authorised));
    // A different, properly signed bundle of the same version.
    let mut other = build(&model_variant(rig.dir.path(), "scale", &[]), "1.1.0", vec![], None);
    bundle::sign(&mut other, &rig.keys.release).unwrap();
    assert_ne!(digest(&other), digest(&authorised));
    rig.assert_refused(
        rig.deploy(&other, &tok),
        "token_digest",
        &format!("token authorises bundle {}", digest(&authorised)),
        1,
    );
}

#[test]
fn alg_none_and_hs256_tokens_are_refused() {
    let rig = Rig::new("ms-alg");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&deploy_claims(&b)).unwrap());
    let none = format!("{}.{claims}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#));
    rig.assert_refused(
        rig.deploy(&b, &none),
        "token_algorithm",
        "unsigned tokens are never accepted",
        1,
    );
    // HS256 with the public key as the shared secret: the classic confusion.
    let hs = format!(
        "{}.{claims}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT","kid":"ops"}"#),
        URL_SAFE_NO_PAD.encode([7u8; 32])
    );
    rig.assert_refused(rig.deploy(&b, &hs), "token_algorithm", "shared-secret (HMAC)", 1);
}

#[test]
fn a_token_signed_by_an_unknown_issuer_or_for_the_wrong_use_is_refused() {
    let rig = Rig::new("ms-issuer");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let forged = token::issue(&deploy_claims(&b), &rig.keys.stranger);
    rig.assert_refused(
        rig.deploy(&b, &forged),
        "token_unknown_key",
        "unknown key \"stranger\"",
        1,
    );
    // The release key signs bundles, not tokens.
    let wrong_key = token::issue(&deploy_claims(&b), &rig.keys.release);
    rig.assert_refused(
        rig.deploy(&b, &wrong_key),
        "token_key_not_allowed",
        "not trusted for deploy",
        1,
    );
    rig.assert_refused(
        rig.deploy(&b, &rig.token(&rollback_claims())),
        "token_wrong_use",
        "rollback token",
        1,
    );
}

#[test]
fn an_archive_with_dotdot_paths_is_refused_and_nothing_is_written() {
    let rig = Rig::new("ms-dotdot");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let tok = rig.token(&deploy_claims(&b));
    let mut files: Vec<(String, u8, Vec<u8>)> = entries(&b).into_iter().map(|(p, d)| (p, b'0', d)).collect();
    files.push(("../../../tmp/triad-owned".into(), b'0', b"pwned".to_vec()));
    let refs: Vec<(&str, u8, &[u8])> = files.iter().map(|(p, k, d)| (p.as_str(), *k, d.as_slice())).collect();
    rig.assert_refused(
        rig.deploy_archive(raw_tar(&refs), &tok),
        "bundle_unsafe_path",
        "\"../../../tmp/triad-owned\" is refused: it climbs out of the bundle",
        1,
    );
    assert!(!std::path::Path::new("/tmp/triad-owned").exists());
    // A symbolic link is refused as well.
    let tok = rig.token(&deploy_claims(&b));
    let mut files: Vec<(String, u8, Vec<u8>)> = entries(&b).into_iter().map(|(p, d)| (p, b'0', d)).collect();
    files.push(("golden/link".into(), b'2', Vec::new()));
    let refs: Vec<(&str, u8, &[u8])> = files.iter().map(|(p, k, d)| (p.as_str(), *k, d.as_slice())).collect();
    rig.assert_refused(
        rig.deploy_archive(raw_tar(&refs), &tok),
        "bundle_not_a_file",
        "symbolic link",
        1,
    );
}

#[test]
fn an_oversized_bundle_is_refused() {
    let small = ModelsSettings {
        limits: BundleLimits {
            max_total_bytes: 1024 * 1024,
            max_files: 64,
        },
        ..settings()
    };
    let rig = Rig::with("ms-big", small, Keys::new());
    let mut b = weld_bundle("1.1.0", &rig.keys.release);
    let tok = rig.token(&deploy_claims(&b));
    // 2 MiB of padding: stored raw it is too large; gzip shrinks the archive
    // to a few KiB, so the limit must hold on the unpacked contents too.
    b.insert("padding.bin", vec![0u8; 2 * 1024 * 1024]).unwrap();
    let archive = b.to_archive();
    assert!(archive.len() < 100 * 1024);
    rig.assert_refused(
        rig.deploy_archive(archive, &tok),
        "bundle_too_large",
        "larger than 1048576 bytes",
        1,
    );
}

#[test]
fn an_unlisted_file_is_refused() {
    let rig = Rig::new("ms-unlisted");
    let mut b = weld_bundle("1.1.0", &rig.keys.release);
    let tok = rig.token(&deploy_claims(&b));
    b.insert("golden/extra.f32", vec![0u8; 16]).unwrap();
    rig.assert_refused(
        rig.deploy(&b, &tok),
        "bundle_unlisted_file",
        "golden/extra.f32 is not listed",
        1,
    );
}

#[test]
fn a_golden_mismatch_is_refused() {
    let rig = Rig::new("ms-golden");
    // Properly signed, but the expected outputs are not what the model gives.
    let m = weld_manifest();
    let n_in: usize = m.input.shape.iter().product();
    let n_out: usize = m.output.shape.iter().product();
    let mut b = build(
        triad_inspect::builtin::WELD_SEAM_ONNX,
        "1.1.0",
        vec![vec![0.0; n_in]],
        Some(vec![vec![1.0 / 3.0; n_out]]),
    );
    bundle::sign(&mut b, &rig.keys.release).unwrap();
    let tok = rig.token(&deploy_claims(&b));
    rig.assert_refused(rig.deploy(&b, &tok), "golden_mismatch", "golden case 0 fails", 1);
}

#[test]
fn a_downgrade_is_refused() {
    let rig = Rig::new("ms-downgrade");
    // Same version as the running model.
    let same = weld_bundle("1.0.0", &rig.keys.release);
    rig.assert_refused(
        rig.deploy(&same, &rig.token(&deploy_claims(&same))),
        "downgrade",
        "version 1.0.0 is not newer than 1.0.0",
        1,
    );
    let older = weld_bundle("0.9.9", &rig.keys.release);
    rig.assert_refused(
        rig.deploy(&older, &rig.token(&deploy_claims(&older))),
        "downgrade",
        "version 0.9.9 is not newer than 1.0.0",
        1,
    );
}

#[test]
fn deploy_swaps_between_frames_keeps_the_previous_model_and_rolls_back() {
    let rig = Rig::new("ms-main");
    rig.worker().next(5);
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let rep = rig.deploy(&b, &rig.token(&deploy_claims(&b))).expect("deploy accepted");
    assert_eq!(rep.model.version, "1.1.0");
    assert_eq!(rep.from_version, "1.0.0");
    assert_eq!((rep.swapped_workers, rep.workers), (1, 1), "{rep:?}");
    assert_eq!(rep.model.digest.as_deref(), Some(digest(&b).as_str()));
    assert_eq!(rep.model.signer.as_deref(), Some("release-2025"));
    println!(
        "verify {:.1} ms, load {:.1} ms, warm-up {:.1} ms, golden {:.1} ms, swap {:?} ns",
        rep.timings.verify_ms, rep.timings.load_ms, rep.timings.warmup_ms, rep.timings.golden_ms, rep.swap_ns_max
    );
    assert!(
        rep.swap_ns_max.unwrap() < 1_000_000,
        "the swap took {:?} ns",
        rep.swap_ns_max
    );
    // Every frame was judged, by one model or the other, never by none;
    // once the deploy has returned, every frame is judged by the new one
    // (frames queued while the deploy ran are drained first: on a loaded
    // machine they are many, all judged by 1.0.0).
    let during = rig.worker().drain();
    assert!(during.iter().all(|f| f.result.is_ok()), "{during:?}");
    let frames = rig.worker().next(20);
    assert!(frames.iter().all(|f| f.result.as_deref() == Ok("1.1.0")), "{frames:?}");
    let st = &rig.service.status()[0];
    assert_eq!(st.previous.as_ref().map(|p| p.version.as_str()), Some("1.0.0"));
    // Rollback with a rollback token.
    let rb = rig
        .service
        .rollback_blocking(CELL, &rig.token(&rollback_claims()), "test")
        .unwrap();
    assert_eq!(
        (rb.outcome, rb.model.version.as_str(), rb.from_version.as_str()),
        ("rolled_back", "1.0.0", "1.1.0")
    );
    rig.worker().drain();
    let frames = rig.worker().next(5);
    assert!(frames.iter().all(|f| f.result.as_deref() == Ok("1.0.0")), "{frames:?}");
    // Nothing left to roll back to.
    let e = rig
        .service
        .rollback_blocking(CELL, &rig.token(&rollback_claims()), "test")
        .unwrap_err();
    assert_eq!(e.code(), "nothing_to_roll_back");
    // A rollback without a valid token changes nothing.
    let e = rig.service.rollback_blocking(CELL, "not.a.token", "test").unwrap_err();
    assert_eq!(e.code(), "token_malformed");
    let actions: Vec<(String, String)> = rig
        .audit_records()
        .iter()
        .map(|r| (r.action.clone(), r.outcome.clone()))
        .collect();
    for want in [
        ("deploy", "accepted"),
        ("rollback", "accepted"),
        ("rollback", "refused"),
    ] {
        assert!(
            actions.contains(&(want.0.into(), want.1.into())),
            "{want:?} not audited: {actions:?}"
        );
    }
    let dep = rig.audit_records().into_iter().find(|r| r.action == "deploy").unwrap();
    assert_eq!(dep.actor.as_deref(), Some("alice@plant"));
    assert_eq!(dep.key_id.as_deref(), Some("ops"));
    assert_eq!(dep.bundle_signer.as_deref(), Some("release-2025"));
    assert_eq!(
        (dep.from_version.as_deref(), dep.to_version.as_deref()),
        (Some("1.0.0"), Some("1.1.0"))
    );
    // Tokens never reach the audit file.
    let text = std::fs::read_to_string(rig.dir.path().join("audit.jsonl")).unwrap();
    assert!(!text.contains("eyJ"), "a token leaked into the audit log");
}

#[test]
fn a_replayed_token_is_refused_also_after_a_restart() {
    let mut rig = Rig::new("ms-replay");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    let tok = rig.token(&deploy_claims(&b));
    rig.deploy(&b, &tok).expect("first use accepted");
    let e = rig.deploy(&weld_bundle("1.2.0", &rig.keys.release), &tok).unwrap_err();
    assert_eq!(e.code(), "token_replayed", "{e}");
    assert_eq!(rig.running().0, "1.1.0");
    // Restart: the deployed model comes back (re-verified), the token stays used.
    rig.restart(settings());
    let (version, expected_gen) = rig.running();
    assert_eq!(version, "1.1.0");
    let f = rig.worker().next(3);
    assert!(f.iter().all(|f| f.result.as_deref() == Ok("1.1.0")), "{f:?}");
    let e = rig.deploy(&weld_bundle("1.2.0", &rig.keys.release), &tok).unwrap_err();
    assert_eq!(e.code(), "token_replayed", "{e}");
    assert!(e.to_string().contains("was already used"), "{e}");
    assert_eq!(rig.running(), ("1.1.0".to_string(), expected_gen));
    let starts: Vec<_> = rig
        .audit_records()
        .into_iter()
        .filter(|r| r.action == "load_at_start")
        .collect();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0].outcome, "accepted");
    // The previous model (the built-in one) is still there to roll back to.
    let rb = rig
        .service
        .rollback_blocking(CELL, &rig.token(&rollback_claims()), "test")
        .unwrap();
    assert_eq!(rb.model.version, "1.0.0");
}

#[test]
fn a_stored_bundle_whose_signer_was_revoked_is_not_loaded_at_start() {
    let mut rig = Rig::new("ms-revoke-later");
    let b = weld_bundle("1.1.0", &rig.keys.release);
    rig.deploy(&b, &rig.token(&deploy_claims(&b))).unwrap();
    // The release key is revoked in the configuration; restart.
    rig.stop();
    let keys = std::mem::replace(&mut rig.keys, Keys::new());
    let mut ring = keys.keyring();
    let mut ks = ring.keys().to_vec();
    ks[0].revoked = true;
    ring = triad_edge::trust::keyring::Keyring::new(ks);
    assert!(
        ring.lookup("release-2025", triad_edge::trust::keyring::KeyUse::Bundle)
            .is_err()
    );
    // Start a service by hand with the revoked keyring.
    let audit = std::sync::Arc::new(
        triad_edge::trust::audit::AuditLog::open(&rig.dir.path().join("audit.jsonl"), DEVICE).unwrap(),
    );
    let replay: triad_edge::trust::SharedReplay = std::sync::Arc::new(std::sync::Mutex::new(
        triad_edge::trust::replay::RedbReplay::open(&rig.dir.path().join("replay.redb"), Default::default(), now_s())
            .unwrap(),
    ));
    let svc = triad_edge::models::ModelService::start(triad_edge::models::ServiceOptions {
        device: DEVICE.into(),
        state_dir: rig.dir.path().to_path_buf(),
        keyring: ring,
        policy: Default::default(),
        settings: settings(),
        targets: vec![triad_edge::models::manager::TargetSpec {
            id: CELL.into(),
            kind: triad_inspect::ModelKind::Inspection,
            inspector: inspector_config(),
            initial: triad_edge::models::manager::InitialModel::Builtin,
        }],
        clock: std::sync::Arc::new(triad_edge::clock::SystemClock),
        audit: audit.clone(),
        replay,
        notify: None,
    })
    .unwrap();
    assert_eq!(svc.status()[0].current.version, "1.0.0");
    let last = audit.recent(1).pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.code.as_str()),
        ("load_at_start", "bundle_signer_revoked")
    );
    svc.stop();
    rig.keys = keys;
}

#[test]
fn the_fuse_rolls_back_a_model_that_outputs_nan_without_losing_a_frame() {
    let rig = Rig::new("ms-nan");
    // Golden input: a black frame (-2.0), on which the NaN model is fine.
    let m = weld_manifest();
    let n_in: usize = m.input.shape.iter().product();
    let mut b = build(
        &model_variant(rig.dir.path(), "nan", &[]),
        "1.1.0",
        vec![vec![-2.0; n_in]],
        None,
    );
    bundle::sign(&mut b, &rig.keys.release).unwrap();
    rig.worker().drain();
    let rep = rig
        .deploy(&b, &rig.token(&deploy_claims(&b)))
        .expect("the NaN model passes its golden case");
    assert_eq!(rep.model.version, "1.1.0");
    // Real frames make it output NaN: the fuse trips at the first one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let auto = loop {
        if let Some(r) = rig.audit_records().into_iter().find(|r| r.action == "auto_rollback") {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no automatic rollback");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(
        (auto.outcome.as_str(), auto.code.as_str()),
        ("accepted", "fuse_non_finite")
    );
    assert!(auto.reason.contains("NaN"), "{}", auto.reason);
    assert_eq!(
        (auto.from_version.as_deref(), auto.to_version.as_deref()),
        (Some("1.1.0"), Some("1.0.0"))
    );
    assert_eq!(auto.actor.as_deref(), Some("node:fuse"));
    assert_eq!(rig.running().0, "1.0.0");
    // No frame was lost: the one that gave NaN was judged again by 1.0.0.
    let frames: Vec<_> = rig.worker().drain().into_iter().chain(rig.worker().next(5)).collect();
    let errors: Vec<_> = frames.iter().filter(|f| f.result.is_err()).collect();
    assert!(errors.is_empty(), "frames lost: {errors:?}");
    assert!(frames.iter().all(|f| f.result.as_deref() == Ok("1.0.0")), "{frames:?}");
    // Nothing to roll back to any more; the bad model is not kept.
    assert!(rig.service.status()[0].previous.is_none());
}

#[test]
fn the_fuse_rolls_back_a_model_that_gets_too_slow() {
    let rig = Rig::new("ms-slow");
    rig.worker().next(20); // a latency baseline of the running model
    let mut b = build(&model_variant(rig.dir.path(), "slow", &["40"]), "1.1.0", vec![], None);
    bundle::sign(&mut b, &rig.keys.release).unwrap();
    rig.deploy(&b, &rig.token(&deploy_claims(&b)))
        .expect("the slow model is valid");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let auto = loop {
        if let Some(r) = rig.audit_records().into_iter().find(|r| r.action == "auto_rollback") {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no automatic rollback");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(auto.code, "fuse_too_slow", "{auto:?}");
    assert!(auto.reason.contains("above the bound"), "{}", auto.reason);
    assert_eq!(rig.running().0, "1.0.0");
    rig.worker().drain(); // frames of the slow model still queued
    let frames = rig.worker().next(5);
    assert!(frames.iter().all(|f| f.result.as_deref() == Ok("1.0.0")), "{frames:?}");
}

#[test]
fn a_good_model_passes_probation() {
    let rig = Rig::new("ms-probation");
    let mut b = build(&model_variant(rig.dir.path(), "scale", &[]), "1.1.0", vec![], None);
    bundle::sign(&mut b, &rig.keys.release).unwrap();
    rig.deploy(&b, &rig.token(&deploy_claims(&b))).unwrap();
    assert!(rig.service.status()[0].probation);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while rig.service.status()[0].probation {
        assert!(std::time::Instant::now() < deadline, "probation never ended");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rec = rig.audit_records();
    assert!(rec.iter().any(|r| r.action == "probation_passed"), "{rec:?}");
    assert!(!rec.iter().any(|r| r.action == "auto_rollback"), "{rec:?}");
    assert_eq!(rig.running().0, "1.1.0");
}

#[tokio::test]
async fn audit_events_are_published_on_the_audit_topic() {
    use std::sync::Arc;
    use triad_edge::bus::Bus;
    use triad_edge::bus::embedded::EmbeddedBus;
    use triad_edge::bus::outbox::Outbox;
    use triad_edge::bus::publisher::{Publisher, flush_bus_lane};
    use triad_edge::clock::{Clock, SystemClock};
    use triad_edge::config::OutboxLimits;
    use triad_edge::metrics::Metrics;
    use triad_edge::trust::audit::{AuditLog, AuditRecord, publish_audit};
    use triad_schemas::ids::NodeId;
    use triad_schemas::{AuditEvent, AuditOutcome, Topic};

    let dir = triad_tests::TempDir::new("ms-audit-bus");
    let node = NodeId::new(DEVICE).unwrap();
    let bus: Arc<dyn Bus> = Arc::new(EmbeddedBus::default());
    let outbox = Arc::new(
        Outbox::open(
            &dir.path().join("outbox.redb"),
            OutboxLimits {
                max_entries: 1000,
                max_bytes: 1 << 20,
            },
        )
        .unwrap(),
    );
    let metrics = Arc::new(Metrics::new());
    let publisher = Arc::new(Publisher::new(
        node.clone(),
        Arc::new(SystemClock),
        bus.clone(),
        outbox.clone(),
        metrics.clone(),
    ));
    let topic = Topic::audit_event(&node);
    assert_eq!(topic.name(), "audit/edge-01/event");
    let mut sub = bus.subscribe(&topic, "auditor").await.unwrap();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(flush_bus_lane(outbox, bus.clone(), metrics, stop_rx));
    let audit = AuditLog::open(&dir.path().join("audit.jsonl"), DEVICE).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    audit.set_bus(tx);
    tokio::spawn(publish_audit(rx, publisher, topic));
    audit.record(
        SystemClock.now_ns(),
        AuditRecord {
            actor: Some("mallory (unverified)".into()),
            origin: "http 10.0.0.9:5555".into(),
            ..AuditRecord::new("deploy", CELL, false, "token_expired", "token expired at 5")
        },
    );
    let d = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
        .await
        .expect("an audit event on the bus")
        .unwrap();
    let ev: AuditEvent = triad_schemas::codec::decode(&d.msg.payload).unwrap();
    assert_eq!(
        (ev.action.as_str(), ev.outcome, ev.code.as_str(), ev.target.as_str()),
        ("deploy", AuditOutcome::Refused, "token_expired", CELL)
    );
    assert_eq!(ev.actor.as_deref(), Some("mallory (unverified)"));
    assert_eq!(ev.envelope.node, DEVICE);
    assert!(ev.envelope.sequence >= 1);
}
