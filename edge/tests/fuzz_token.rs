//! Fuzzing token parsing and verification (issue 9): `trust::token::verify`.
//!
//! The keyring trusts one Ed25519 key, `ops`, made from a fixed seed
//! (`[7; 32]`), so the seeds in `fuzz/corpus/token/` (compact JWTs made with
//! PyJWT) stay valid; the node's time is fixed at `NOW`.
//!
//! - `any_token_is_verified_or_refused`: mutated tokens, for every use.
//!   `verify` never panics, and a token it accepts satisfies every rule it
//!   promises (use, audience, time window with skew, lifetime, claim bounds).
//! - `any_signed_claims_are_verified_or_refused`: mutated header and claims
//!   JSON (`fuzz/corpus/token_claims/`), signed with the trusted key, so
//!   the fuzzing reaches the claim checks behind the signature.
//! - `corpus_replays`: `<use>-valid*` seeds verify for that use, `refused-*`
//!   seeds are refused for every use.
//!
//! `cargo test --workspace --test fuzz_token` runs each 2 s;
//! `scripts/fuzz.sh` runs them longer.

#[path = "../../fuzz/support.rs"]
mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::{PeakAlloc, Stats, budget, corpus, mutate};
use triad_edge::trust::keyring::{KeyUse, Keyring, TrustedKey};
use triad_edge::trust::keys::{SigningKey, private_pem};
use triad_edge::trust::token::{
    Audience, MAX_AUDIENCES, MAX_CLAIM_BYTES, MAX_TOKEN_BYTES, TokenPolicy, TokenRefusal, TokenUse, VerifiedToken,
    verify,
};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const NOW: i64 = 1_764_000_000;
const DEVICE: &str = "edge-01";
const USES: [TokenUse; 3] = [TokenUse::Deploy, TokenUse::Rollback, TokenUse::Command];

fn key() -> SigningKey {
    SigningKey::from_pem("ops", &private_pem(&[7; 32]), "fuzz seed").unwrap()
}

fn keyring(k: &SigningKey) -> Keyring {
    Keyring::new(vec![TrustedKey {
        name: "ops".into(),
        public: *k.public(),
        uses: vec![KeyUse::Deploy, KeyUse::Command],
        revoked: false,
    }])
}

fn use_name(u: TokenUse) -> &'static str {
    u.as_str()
}

/// Everything `verify` promises of a token it accepts.
fn check_accepted(v: &VerifiedToken, expected: TokenUse, policy: TokenPolicy) {
    let c = &v.claims;
    assert_eq!(c.use_, expected);
    assert!(c.aud.contains(DEVICE), "accepted for another device: {:?}", c.aud);
    assert!(
        NOW < c.exp.saturating_add(policy.clock_skew_s),
        "accepted after exp: {c:?}"
    );
    assert!(
        NOW.saturating_add(policy.clock_skew_s) >= c.nbf,
        "accepted before nbf: {c:?}"
    );
    assert!(
        c.exp.saturating_sub(c.nbf) <= policy.max_lifetime_s,
        "lifetime too long: {c:?}"
    );
    for s in [&c.iss, &c.sub, &c.jti] {
        assert!(
            !s.is_empty() && s.len() <= MAX_CLAIM_BYTES,
            "claim string out of bounds: {c:?}"
        );
    }
    let auds = match &c.aud {
        Audience::One(_) => 1,
        Audience::Many(v) => v.len(),
    };
    assert!((1..=MAX_AUDIENCES).contains(&auds), "{auds} audiences accepted");
    match expected {
        TokenUse::Deploy => assert!(c.bundle_digest.is_some() && c.bundle_version.is_some()),
        TokenUse::Command => assert_eq!(c.scope.as_ref().map(|s| s.axis.as_str()), Some(c.sub.as_str())),
        TokenUse::Rollback => {}
    }
    assert_eq!(v.key_name, "ops");
}

fn check_refused(r: &TokenRefusal) {
    assert!(!r.code().is_empty());
    assert!(!r.to_string().is_empty());
}

fn check_token(ring: &Keyring, token: &str) -> Vec<bool> {
    let policy = TokenPolicy::default();
    USES.iter()
        .map(|&u| {
            let (result, peak) = PeakAlloc::measure(|| verify(token, ring, u, DEVICE, NOW, policy));
            // A token is at most MAX_TOKEN_BYTES; nothing may cost more than
            // a few copies of it.
            let bound = 64 * 1024 + 16 * token.len().min(MAX_TOKEN_BYTES + 64);
            assert!(
                peak <= bound,
                "verifying a {}-byte token had {peak} bytes live (bound {bound})",
                token.len()
            );
            match &result {
                Ok(v) => check_accepted(v, u, policy),
                Err(r) => check_refused(r),
            }
            result.is_ok()
        })
        .collect()
}

#[test]
fn any_token_is_verified_or_refused() {
    let k = key();
    let ring = keyring(&k);
    let seeds: Vec<Vec<u8>> = corpus("token").into_iter().map(|(_, b)| b).collect();
    let stats = Stats::new("token");
    bolero::check!().with_test_time(budget()).for_each(|input: &[u8]| {
        stats.count();
        check_token(&ring, &String::from_utf8_lossy(&mutate(&seeds, input)));
    });
}

/// `header.claims.signature`, signed by `k` whatever the JSON holds.
fn signed(k: &SigningKey, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let sig = k.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[test]
fn any_signed_claims_are_verified_or_refused() {
    let k = key();
    let ring = keyring(&k);
    let seeds: Vec<Vec<u8>> = corpus("token_claims").into_iter().map(|(_, b)| b).collect();
    let headers: [&[u8]; 3] = [
        br#"{"alg":"EdDSA","typ":"JWT","kid":"ops"}"#,
        br#"{"alg":"Ed25519"}"#,
        br#"{"alg":"EdDSA","kid":"ops","crit":[]}"#,
    ];
    let stats = Stats::new("token_claims");
    bolero::check!().with_test_time(budget()).for_each(|input: &[u8]| {
        stats.count();
        let header = headers[input.first().copied().unwrap_or(0) as usize % headers.len()];
        let claims = mutate(&seeds, input.get(1..).unwrap_or_default());
        check_token(&ring, &signed(&k, header, &claims));
    });
}

#[test]
fn corpus_replays() {
    let k = key();
    let ring = keyring(&k);
    let header = br#"{"alg":"EdDSA","typ":"JWT","kid":"ops"}"#;
    let tokens = corpus("token")
        .into_iter()
        .map(|(n, b)| (n, String::from_utf8(b).unwrap()))
        .chain(
            corpus("token_claims")
                .into_iter()
                .map(|(n, b)| (format!("claims {n}"), signed(&k, header, &b))),
        );
    for (name, token) in tokens {
        let accepted = check_token(&ring, &token);
        let plain = name.trim_start_matches("claims ");
        for (u, ok) in USES.iter().zip(&accepted) {
            let valid_for_u = plain.starts_with(&format!("{}-valid", use_name(*u)));
            assert_eq!(*ok, valid_for_u, "{name} for use {u:?}: accepted {ok}");
        }
        if plain.starts_with("refused-") {
            assert!(accepted.iter().all(|a| !a), "{name} must be refused");
        }
    }
}
