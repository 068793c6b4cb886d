//! Signed tokens: compact EdDSA JWTs (RFC 7519, RFC 8037), made and checked
//! by hand on `ring` so that every algorithm decision is ours.
//!
//! Header: `{"alg": "EdDSA", "typ": "JWT", "kid": "<key name>"}`. The only
//! accepted algorithm is EdDSA with an Ed25519 key (`"EdDSA"`, or its
//! fully-specified name `"Ed25519"`); `none`, the HMAC family (`HS256`, the
//! classic "verify with the public key as the HMAC secret" confusion) and
//! every other `alg` are refused by name. A header with `crit` is refused
//! (no extension is understood). `kid` is optional: without it the token
//! must verify with one of the keys trusted for its use.
//!
//! Claims (all times are NumericDate, seconds since the epoch):
//!
//! | claim | meaning |
//! |---|---|
//! | `iss` | who issued it (a person or a tool; goes to the audit log) |
//! | `aud` | the device id (node id), a string or a list containing it |
//! | `sub` | the target: a cell or asset for deploys and rollbacks, an axis for commands |
//! | `nbf`, `exp` | valid from, until (with the configured clock skew) |
//! | `iat` | issued at (optional; `triad token issue` sets it): after a lost replay store, a token issued since passes its fence (`replay` module doc) |
//! | `jti` | unique id; the node remembers it durably and refuses it twice |
//! | `use` | `deploy`, `rollback` or `command` |
//! | `bundle_digest`, `bundle_version` | deploy: the bundle it authorises (`sha256:<hex>`, `1.2.0`) |
//! | `scope` | command: `{ "axis": "axis_07", "actions": ["SetRate"], "min_ppm": 5, "max_ppm": 12 }` |
//!
//! [`verify`] is sans-IO: it takes the token, the keyring, the device id and
//! `now`, and returns the checked claims or the first reason to refuse, in
//! this order: form, algorithm, key, signature, claims, use, expiry and
//! not-before, audience. Replay is checked by the caller (it needs storage).
//!
//! **Bounds.** A token longer than [`MAX_TOKEN_BYTES`] is refused before
//! anything is decoded; every claim string is at most [`MAX_CLAIM_BYTES`],
//! `aud` names at most [`MAX_AUDIENCES`] devices and a scope at most
//! [`MAX_SCOPE_ACTIONS`] actions. Each refusal names the claim, the bound
//! and the value.

use super::keyring::{KeyRefusal, KeyUse, Keyring, TrustedKey};
use super::keys::SigningKey;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use thiserror::Error;
use triad_schemas::CommandAction;

/// Longest token, bytes (a triad token is about 500).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest claim string (`iss`, `sub`, `jti`, each `aud`, …), bytes.
pub const MAX_CLAIM_BYTES: usize = 256;
/// Most devices in `aud`.
pub const MAX_AUDIENCES: usize = 16;
/// Most actions in a command scope.
pub const MAX_SCOPE_ACTIONS: usize = 16;

/// What a token authorises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenUse {
    /// Deploy one bundle to one target.
    Deploy,
    /// Roll one target back to its previous model.
    Rollback,
    /// Control commands within a scope.
    Command,
}

impl TokenUse {
    /// The keyring use whose keys may sign this kind of token.
    pub fn key_use(self) -> KeyUse {
        match self {
            TokenUse::Deploy | TokenUse::Rollback => KeyUse::Deploy,
            TokenUse::Command => KeyUse::Command,
        }
    }
    /// Claim spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenUse::Deploy => "deploy",
            TokenUse::Rollback => "rollback",
            TokenUse::Command => "command",
        }
    }
}

impl fmt::Display for TokenUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `aud` claim: one string or a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Audience {
    /// Does it name `device`?
    pub fn contains(&self, device: &str) -> bool {
        match self {
            Audience::One(a) => a == device,
            Audience::Many(v) => v.iter().any(|a| a == device),
        }
    }
    fn list(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(v) => v.clone(),
        }
    }
}

/// What a command token allows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandScope {
    /// The axis.
    pub axis: String,
    /// Allowed actions (the `CommandAction` names: `Start`, `Stop`,
    /// `SetRate`, `Derate`, `Resume`, `ResetFault`, `SkipReinspection`).
    pub actions: Vec<CommandAction>,
    /// Lowest rate a `SetRate`/`Derate` may ask for, PPM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ppm: Option<f64>,
    /// Highest rate a `SetRate`/`Derate` may ask for, PPM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ppm: Option<f64>,
}

fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a NumericDate (seconds since the epoch)")))
}

fn opt_numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    numeric_date(d).map(Some)
}

/// The claims of a triad token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Target (cell, asset or axis).
    pub sub: String,
    /// Device id(s).
    pub aud: Audience,
    /// Not before, s.
    #[serde(deserialize_with = "numeric_date")]
    pub nbf: i64,
    /// Expiry, s.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: i64,
    /// Issued at, s.
    #[serde(
        default,
        deserialize_with = "opt_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<i64>,
    /// Unique id.
    pub jti: String,
    /// What it authorises.
    #[serde(rename = "use")]
    pub use_: TokenUse,
    /// Deploy: the bundle digest, `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_digest: Option<String>,
    /// Deploy: the bundle version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_version: Option<String>,
    /// Command: the scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<CommandScope>,
}

/// Limits on tokens, from `[security]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Allowed clock difference between issuer and node, s.
    pub clock_skew_s: i64,
    /// Longest allowed `exp - nbf`, s (bounds the replay store).
    pub max_lifetime_s: i64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            clock_skew_s: 60,
            max_lifetime_s: 24 * 3600,
        }
    }
}

/// Why a token is refused (the first failed check).
#[derive(Clone, Debug, Error, PartialEq)]
pub enum TokenRefusal {
    /// Not a compact JWS of three base64url parts with JSON header and claims.
    #[error("token malformed: {detail}; use a compact JWT from `triad token issue` or PyJWT")]
    Malformed {
        /// What is wrong.
        detail: String,
    },
    /// `alg` is not EdDSA.
    #[error("{}", alg_message(alg))]
    Algorithm {
        /// The header's `alg`.
        alg: String,
    },
    /// `kid` names no trusted key.
    #[error(
        "token signed with unknown key {kid:?}: it is not in [security] keys; add the issuer's public key, or ask for a token from a trusted issuer"
    )]
    UnknownKey {
        /// The header's `kid`.
        kid: String,
    },
    /// `kid` names a revoked key.
    #[error("token signed with revoked key {kid:?}: ask for a new token signed with a current key")]
    KeyRevoked {
        /// The header's `kid`.
        kid: String,
    },
    /// The key may not sign this kind of token.
    #[error("key {kid:?} is not trusted for {use_} tokens (its uses in [security] keys do not include \"{use_}\")")]
    KeyNotFor {
        /// The header's `kid`.
        kid: String,
        /// The needed use.
        use_: KeyUse,
    },
    /// The signature does not verify.
    #[error("token signature does not verify with {key}: the token was altered or signed with another key")]
    Signature {
        /// Which key(s) were tried.
        key: String,
    },
    /// Claims missing or of the wrong type.
    #[error("token claims invalid: {detail}")]
    Claims {
        /// What is wrong.
        detail: String,
    },
    /// A token for another purpose.
    #[error(
        "token is a {actual} token, but this needs a {expected} token; issue one with `triad token issue --use {expected}`"
    )]
    WrongUse {
        /// Needed.
        expected: TokenUse,
        /// Found.
        actual: TokenUse,
    },
    /// Past `exp`.
    #[error("token expired at {exp} (now {now}, {skew_s} s clock skew allowed): ask for a new token")]
    Expired {
        /// `exp`, s.
        exp: i64,
        /// Node time, s.
        now: i64,
        /// Allowed skew, s.
        skew_s: i64,
    },
    /// Before `nbf`.
    #[error(
        "token not valid before {nbf} (now {now}, {skew_s} s clock skew allowed): check the clocks of issuer and node, or wait"
    )]
    NotYetValid {
        /// `nbf`, s.
        nbf: i64,
        /// Node time, s.
        now: i64,
        /// Allowed skew, s.
        skew_s: i64,
    },
    /// `exp - nbf` too long.
    #[error(
        "token valid for {lifetime_s} s, more than security.max_token_lifetime_s = {max_s}: issue a shorter-lived token"
    )]
    LifetimeTooLong {
        /// `exp - nbf`, s.
        lifetime_s: i64,
        /// Limit, s.
        max_s: i64,
    },
    /// `aud` does not name this device.
    #[error("token is for device {aud:?}, not this node {device:?}: issue it with --device {device}")]
    Audience {
        /// The token's audiences.
        aud: Vec<String>,
        /// This node.
        device: String,
    },
}

fn alg_message(alg: &str) -> String {
    let why = match alg.to_ascii_lowercase().as_str() {
        "none" | "" => "unsigned tokens are never accepted".to_string(),
        a if a.starts_with("hs") => {
            format!("{alg} is a shared-secret (HMAC) algorithm; a node never verifies with a shared secret")
        }
        _ => format!("{alg} is not accepted"),
    };
    format!("token algorithm {alg:?} refused: {why}; only EdDSA (Ed25519) tokens are accepted")
}

impl TokenRefusal {
    /// Stable snake_case code for APIs, metrics and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            TokenRefusal::Malformed { .. } => "token_malformed",
            TokenRefusal::Algorithm { .. } => "token_algorithm",
            TokenRefusal::UnknownKey { .. } => "token_unknown_key",
            TokenRefusal::KeyRevoked { .. } => "token_key_revoked",
            TokenRefusal::KeyNotFor { .. } => "token_key_not_allowed",
            TokenRefusal::Signature { .. } => "token_signature",
            TokenRefusal::Claims { .. } => "token_claims",
            TokenRefusal::WrongUse { .. } => "token_wrong_use",
            TokenRefusal::Expired { .. } => "token_expired",
            TokenRefusal::NotYetValid { .. } => "token_not_yet_valid",
            TokenRefusal::LifetimeTooLong { .. } => "token_lifetime",
            TokenRefusal::Audience { .. } => "token_audience",
        }
    }
}

/// A token whose signature, time and audience checked out.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedToken {
    /// Its claims.
    pub claims: Claims,
    /// Name of the key that signed it.
    pub key_name: String,
    /// That key's fingerprint (identifies the signer in the replay store).
    pub key_fingerprint: String,
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

fn malformed(detail: impl Into<String>) -> TokenRefusal {
    TokenRefusal::Malformed { detail: detail.into() }
}

/// Check `token` for `expected` use on `device` at `now_s` (seconds since
/// the epoch). See the module doc for the order of the checks.
pub fn verify(
    token: &str,
    keyring: &Keyring,
    expected: TokenUse,
    device: &str,
    now_s: i64,
    policy: TokenPolicy,
) -> Result<VerifiedToken, TokenRefusal> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed(format!(
            "it is {} bytes; the bound is {MAX_TOKEN_BYTES} bytes (a triad token is about 500)",
            token.len()
        )));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("not three dot-separated parts (header.claims.signature)"));
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h64)
        .map_err(|e| malformed(format!("header is not base64url ({e})")))?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|e| malformed(format!("header is not a JSON object ({e})")))?;
    let alg = header.alg.unwrap_or_default();
    if alg != "EdDSA" && alg != "Ed25519" {
        return Err(TokenRefusal::Algorithm { alg });
    }
    if let Some(kid) = header
        .kid
        .as_deref()
        .filter(|k| k.is_empty() || k.len() > MAX_CLAIM_BYTES)
    {
        return Err(malformed(format!(
            "the header's kid is {} bytes long; the bound is 1 to {MAX_CLAIM_BYTES} bytes",
            kid.len()
        )));
    }
    if header.crit.is_some() {
        return Err(malformed(
            "the header has \"crit\" extensions, which this node does not understand",
        ));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|e| malformed(format!("signature is not base64url ({e})")))?;
    let signed = &token.as_bytes()[..h64.len() + 1 + c64.len()];
    let key_use = expected.key_use();
    let verifies = |k: &TrustedKey| UnparsedPublicKey::new(&ED25519, &k.public).verify(signed, &sig).is_ok();
    let key: &TrustedKey = match &header.kid {
        Some(kid) => {
            let k = keyring.lookup(kid, key_use).map_err(|r| match r {
                KeyRefusal::Unknown => TokenRefusal::UnknownKey { kid: kid.clone() },
                KeyRefusal::Revoked => TokenRefusal::KeyRevoked { kid: kid.clone() },
                KeyRefusal::NotFor(u) => TokenRefusal::KeyNotFor {
                    kid: kid.clone(),
                    use_: u,
                },
            })?;
            if !verifies(k) {
                return Err(TokenRefusal::Signature {
                    key: format!("key {:?}", k.name),
                });
            }
            k
        }
        None => match keyring.usable(key_use).find(|k| verifies(k)) {
            Some(k) => k,
            None => {
                // A revoked key that verifies is named as such.
                if let Some(k) = keyring.keys().iter().find(|k| k.revoked && verifies(k)) {
                    return Err(TokenRefusal::KeyRevoked { kid: k.name.clone() });
                }
                return Err(TokenRefusal::Signature {
                    key: format!(
                        "any key trusted for {key_use} tokens ({:?}; the token has no kid)",
                        keyring.names_for(key_use)
                    ),
                });
            }
        },
    };
    let claim_bytes = URL_SAFE_NO_PAD
        .decode(c64)
        .map_err(|e| malformed(format!("claims are not base64url ({e})")))?;
    let claims: Claims = serde_json::from_slice(&claim_bytes).map_err(|e| TokenRefusal::Claims {
        detail: format!("{e}; a triad token needs iss, sub, aud, nbf, exp, jti and use"),
    })?;
    claim_bounds(&claims)?;
    if claims.use_ != expected {
        return Err(TokenRefusal::WrongUse {
            expected,
            actual: claims.use_,
        });
    }
    match expected {
        TokenUse::Deploy if claims.bundle_digest.is_none() || claims.bundle_version.is_none() => {
            return Err(TokenRefusal::Claims {
                detail: "a deploy token needs bundle_digest and bundle_version".into(),
            });
        }
        TokenUse::Command => match &claims.scope {
            None => {
                return Err(TokenRefusal::Claims {
                    detail: "a command token needs a scope {axis, actions, min_ppm, max_ppm}".into(),
                });
            }
            Some(s) if s.axis != claims.sub => {
                return Err(TokenRefusal::Claims {
                    detail: format!("scope.axis {:?} differs from sub {:?}", s.axis, claims.sub),
                });
            }
            _ => {}
        },
        _ => {}
    }
    let skew = policy.clock_skew_s;
    if now_s >= claims.exp.saturating_add(skew) {
        return Err(TokenRefusal::Expired {
            exp: claims.exp,
            now: now_s,
            skew_s: skew,
        });
    }
    if now_s.saturating_add(skew) < claims.nbf {
        return Err(TokenRefusal::NotYetValid {
            nbf: claims.nbf,
            now: now_s,
            skew_s: skew,
        });
    }
    let lifetime = claims.exp.saturating_sub(claims.nbf);
    if lifetime > policy.max_lifetime_s {
        return Err(TokenRefusal::LifetimeTooLong {
            lifetime_s: lifetime,
            max_s: policy.max_lifetime_s,
        });
    }
    if !claims.aud.contains(device) {
        return Err(TokenRefusal::Audience {
            aud: claims.aud.list(),
            device: device.into(),
        });
    }
    Ok(VerifiedToken {
        key_name: key.name.clone(),
        key_fingerprint: key.fingerprint(),
        claims,
    })
}

/// Lengths and counts of the claims (see the module doc).
fn claim_bounds(claims: &Claims) -> Result<(), TokenRefusal> {
    let refuse = |detail: String| TokenRefusal::Claims {
        detail: format!("{detail}; issue a new token with `triad token issue`"),
    };
    let mut strings: Vec<(&str, &str, bool)> = vec![
        ("iss", &claims.iss, true),
        ("sub", &claims.sub, true),
        ("jti", &claims.jti, true),
    ];
    let auds = match &claims.aud {
        Audience::One(a) => std::slice::from_ref(a),
        Audience::Many(v) => v.as_slice(),
    };
    if auds.is_empty() || auds.len() > MAX_AUDIENCES {
        return Err(refuse(format!(
            "aud names {} devices; the bound is 1 to {MAX_AUDIENCES}",
            auds.len()
        )));
    }
    strings.extend(auds.iter().map(|a| ("aud", a.as_str(), true)));
    if let Some(d) = &claims.bundle_digest {
        strings.push(("bundle_digest", d, true));
    }
    if let Some(v) = &claims.bundle_version {
        strings.push(("bundle_version", v, true));
    }
    if let Some(sc) = &claims.scope {
        strings.push(("scope.axis", &sc.axis, true));
        if sc.actions.len() > MAX_SCOPE_ACTIONS {
            return Err(refuse(format!(
                "scope.actions has {} actions; the bound is {MAX_SCOPE_ACTIONS}",
                sc.actions.len()
            )));
        }
        for (name, v) in [("scope.min_ppm", sc.min_ppm), ("scope.max_ppm", sc.max_ppm)] {
            if let Some(v) = v.filter(|v| !v.is_finite()) {
                return Err(refuse(format!("{name} = {v}: must be a finite number")));
            }
        }
    }
    for (name, v, required) in strings {
        if (required && v.is_empty()) || v.len() > MAX_CLAIM_BYTES {
            return Err(refuse(format!(
                "{name} is {} bytes long; the bound is 1 to {MAX_CLAIM_BYTES} bytes",
                v.len()
            )));
        }
    }
    Ok(())
}

/// Sign `claims` with `key` (header `alg: EdDSA`, `kid`: the key's name).
pub fn issue(claims: &Claims, key: &SigningKey) -> String {
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": key.name()});
    let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serialises"));
    let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
    let signing_input = format!("{h}.{c}");
    let sig = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A fresh unique token id: 16 random bytes, base64url.
pub fn new_jti() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system random generator works");
    URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000;

    fn setup() -> (SigningKey, Keyring) {
        let (k, _) = SigningKey::generate("ops").unwrap();
        let ring = Keyring::new(vec![TrustedKey {
            name: "ops".into(),
            public: *k.public(),
            uses: vec![KeyUse::Deploy],
            revoked: false,
        }]);
        (k, ring)
    }

    fn claims() -> Claims {
        Claims {
            iss: "alice".into(),
            sub: "cell_2245".into(),
            aud: Audience::One("edge-01".into()),
            nbf: NOW - 10,
            exp: NOW + 600,
            iat: Some(NOW - 10),
            jti: "t-1".into(),
            use_: TokenUse::Deploy,
            bundle_digest: Some(format!("sha256:{}", "ab".repeat(32))),
            bundle_version: Some("1.1.0".into()),
            scope: None,
        }
    }

    fn check(t: &str, ring: &Keyring) -> Result<VerifiedToken, TokenRefusal> {
        verify(t, ring, TokenUse::Deploy, "edge-01", NOW, TokenPolicy::default())
    }

    fn forge(header: &str, claims: &Claims, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn a_good_token_verifies_and_names_its_key() {
        let (k, ring) = setup();
        let v = check(&issue(&claims(), &k), &ring).unwrap();
        assert_eq!(v.key_name, "ops");
        assert_eq!(v.claims, claims());
    }

    #[test]
    fn each_check_refuses_with_its_own_reason() {
        let (k, ring) = setup();
        let t = issue(&claims(), &k);
        // Algorithms.
        let none = forge(r#"{"alg":"none","typ":"JWT"}"#, &claims(), b"");
        let e = check(&none, &ring).unwrap_err();
        assert_eq!(e.code(), "token_algorithm");
        assert!(e.to_string().contains("unsigned tokens are never accepted"), "{e}");
        let hs = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims(), &[0; 32]);
        assert!(check(&hs, &ring).unwrap_err().to_string().contains("shared-secret"));
        // Signature: a changed claim.
        let mut c2 = claims();
        c2.sub = "cell_9".into();
        let parts: Vec<&str> = t.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c2).unwrap()),
            parts[2]
        );
        assert_eq!(check(&tampered, &ring).unwrap_err().code(), "token_signature");
        // Unknown key, and the wrong use.
        let (other, _) = SigningKey::generate("mallory").unwrap();
        assert_eq!(
            check(&issue(&claims(), &other), &ring).unwrap_err().code(),
            "token_unknown_key"
        );
        let e = verify(&t, &ring, TokenUse::Command, "edge-01", NOW, TokenPolicy::default()).unwrap_err();
        assert_eq!(e.code(), "token_key_not_allowed");
        let mut rb = claims();
        rb.use_ = TokenUse::Rollback;
        assert_eq!(
            check(&issue(&rb, &k), &ring).unwrap_err(),
            TokenRefusal::WrongUse {
                expected: TokenUse::Deploy,
                actual: TokenUse::Rollback
            }
        );
        // Time.
        let mut old = claims();
        old.exp = NOW - 61;
        assert_eq!(check(&issue(&old, &k), &ring).unwrap_err().code(), "token_expired");
        let mut early = claims();
        early.nbf = NOW + 61;
        early.exp = NOW + 600;
        assert_eq!(
            check(&issue(&early, &k), &ring).unwrap_err().code(),
            "token_not_yet_valid"
        );
        let mut long = claims();
        long.exp = NOW + 2 * 24 * 3600;
        assert_eq!(check(&issue(&long, &k), &ring).unwrap_err().code(), "token_lifetime");
        // Audience.
        let mut other_dev = claims();
        other_dev.aud = Audience::Many(vec!["edge-02".into(), "edge-03".into()]);
        let e = check(&issue(&other_dev, &k), &ring).unwrap_err();
        assert!(
            e.to_string().contains("edge-02") && e.to_string().contains("--device edge-01"),
            "{e}"
        );
        // Garbage.
        assert_eq!(check("a.b", &ring).unwrap_err().code(), "token_malformed");
        assert_eq!(check("%%.%%.%%", &ring).unwrap_err().code(), "token_malformed");
    }

    #[test]
    fn kid_is_optional_and_revocation_is_named() {
        let (k, mut ring) = setup();
        let t = issue(&claims(), &k);
        let p: Vec<&str> = t.split('.').collect();
        // Re-sign with a header without kid.
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA"}"#);
        let input = format!("{h}.{}", p[1]);
        let no_kid = format!("{input}.{}", URL_SAFE_NO_PAD.encode(k.sign(input.as_bytes())));
        assert_eq!(check(&no_kid, &ring).unwrap().key_name, "ops");
        let mut keys = ring.keys().to_vec();
        keys[0].revoked = true;
        ring = Keyring::new(keys);
        assert_eq!(check(&no_kid, &ring).unwrap_err().code(), "token_key_revoked");
        assert_eq!(check(&t, &ring).unwrap_err().code(), "token_key_revoked");
    }

    #[test]
    fn float_dates_and_audience_lists_are_accepted() {
        let (k, ring) = setup();
        let mut v = serde_json::to_value(claims()).unwrap();
        v["exp"] = serde_json::json!((NOW + 100) as f64 + 0.5);
        v["aud"] = serde_json::json!(["x", "edge-01"]);
        let c: Claims = serde_json::from_value(v).unwrap();
        assert_eq!(c.exp, NOW + 100);
        check(&issue(&c, &k), &ring).unwrap();
    }

    #[test]
    fn sizes_and_claim_lengths_are_bounded_and_named() {
        let (k, ring) = setup();
        // Too long: refused before any decoding, with the size and the bound.
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let e = check(&long, &ring).unwrap_err();
        assert_eq!(e.code(), "token_malformed");
        assert!(
            e.to_string().contains("it is 16385 bytes; the bound is 16384 bytes"),
            "{e}"
        );
        let big_kid = forge(
            &format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, "k".repeat(300)),
            &claims(),
            &[0; 64],
        );
        let e = check(&big_kid, &ring).unwrap_err();
        assert!(
            e.to_string()
                .contains("kid is 300 bytes long; the bound is 1 to 256 bytes"),
            "{e}"
        );
        let with = |f: &dyn Fn(&mut Claims)| {
            let mut c = claims();
            f(&mut c);
            check(&issue(&c, &k), &ring).unwrap_err().to_string()
        };
        let e = with(&|c| c.iss = "x".repeat(300));
        assert!(e.contains("iss is 300 bytes long; the bound is 1 to 256 bytes"), "{e}");
        let e = with(&|c| c.jti = String::new());
        assert!(e.contains("jti is 0 bytes long"), "{e}");
        let e = with(&|c| c.aud = Audience::Many(vec!["edge-01".into(); 17]));
        assert!(e.contains("aud names 17 devices; the bound is 1 to 16"), "{e}");
        let e = with(&|c| c.aud = Audience::Many(vec![]));
        assert!(e.contains("aud names 0 devices"), "{e}");
        let e = with(&|c| c.bundle_version = Some("1".repeat(257)));
        assert!(e.contains("bundle_version is 257 bytes long"), "{e}");
        let mut cmd = claims();
        cmd.use_ = TokenUse::Command;
        cmd.sub = "axis_07".into();
        cmd.scope = Some(CommandScope {
            axis: "axis_07".into(),
            actions: vec![CommandAction::SetRate; 17],
            min_ppm: None,
            max_ppm: None,
        });
        let e = verify(
            &issue(&cmd, &k),
            &ring,
            TokenUse::Command,
            "edge-01",
            NOW,
            TokenPolicy::default(),
        );
        // The key is for deploys only; the claims are checked after the key,
        // so use a keyring that trusts it for commands.
        assert!(e.is_err());
        let cmd_ring = Keyring::new(vec![TrustedKey {
            name: "ops".into(),
            public: *k.public(),
            uses: vec![KeyUse::Command],
            revoked: false,
        }]);
        let e = verify(
            &issue(&cmd, &k),
            &cmd_ring,
            TokenUse::Command,
            "edge-01",
            NOW,
            TokenPolicy::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("scope.actions has 17 actions; the bound is 16"),
            "{e}"
        );
    }
}
