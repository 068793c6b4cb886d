//! Ed25519 key material: generation, PEM files, and the signing key.
//!
//! Private keys are PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`), public
//! keys SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`): the formats
//! OpenSSL, Python's `cryptography` (and so PyJWT) read and write. In the
//! node's configuration a public key may also be given as the base64 of its
//! 32 raw bytes, which is what `triad keys gen` prints.
//!
//! A [`SigningKey`] never shows its secret: `Debug` prints only the key's
//! name and fingerprint, and nothing here logs.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// DER prefix of a PKCS#8 v1 Ed25519 private key; the 32-byte seed follows.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// A key could not be made, read or used.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum KeyError {
    /// The text is not a PEM block of the expected kind.
    #[error(
        "{what}: not a PEM {label} block; give the file written by `triad keys gen` (or by openssl genpkey -algorithm ed25519)"
    )]
    NotPem {
        /// Where the text came from.
        what: String,
        /// Expected PEM label.
        label: &'static str,
    },
    /// The DER inside is not an Ed25519 key.
    #[error("{what}: {detail}; only Ed25519 keys are accepted")]
    NotEd25519 {
        /// Where the text came from.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The raw public key is not 32 bytes of base64.
    #[error(
        "{what}: {detail}; give the 32-byte Ed25519 public key as base64 (printed by `triad keys gen`) or a PEM public key"
    )]
    BadPublicKey {
        /// Where the value came from.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The system's random generator failed.
    #[error("the system random generator failed; cannot make a key")]
    Random,
}

/// Short, stable fingerprint of a public key: `sha256:` and the first 16
/// hex digits of the SHA-256 of its 32 raw bytes.
pub fn fingerprint(public: &[u8; 32]) -> String {
    let d = Sha256::digest(public);
    format!("sha256:{}", hex::encode(&d[..8]))
}

/// A private Ed25519 key with the name it signs under (the `kid` of tokens
/// and the `key_id` of bundle signatures).
pub struct SigningKey {
    name: String,
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("fingerprint", &fingerprint(&self.public))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the system's random generator.
    pub fn generate(name: &str) -> Result<(Self, [u8; 32]), KeyError> {
        let mut seed = [0u8; 32];
        SystemRandom::new().fill(&mut seed).map_err(|_| KeyError::Random)?;
        let key = Self::from_seed(name, &seed)?;
        Ok((key, seed))
    }

    fn from_seed(name: &str, seed: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|e| KeyError::NotEd25519 {
            what: name.into(),
            detail: e.to_string(),
        })?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("Ed25519 public keys are 32 bytes");
        Ok(Self {
            name: name.into(),
            pair,
            public,
        })
    }

    /// Read a PKCS#8 PEM private key (v1 as written by `triad keys gen`,
    /// openssl or Python's `cryptography`, or v2 with the public key).
    /// `what` names the source in errors (a path or an environment variable).
    pub fn from_pem(name: &str, pem: &str, what: &str) -> Result<Self, KeyError> {
        let der = pem_decode(pem, "PRIVATE KEY").ok_or_else(|| KeyError::NotPem {
            what: what.into(),
            label: "PRIVATE KEY",
        })?;
        if der.len() == 48 && der[..16] == PKCS8_V1_PREFIX {
            return Self::from_seed(name, &der[16..]);
        }
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| KeyError::NotEd25519 {
            what: what.into(),
            detail: format!("PKCS#8 key rejected ({e})"),
        })?;
        let public: [u8; 32] = pair.public_key().as_ref().try_into().expect("32 bytes");
        Ok(Self {
            name: name.into(),
            pair,
            public,
        })
    }

    /// The name it signs under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32 raw bytes of the public key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// Sign `msg` (Ed25519, 64 bytes).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.pair
            .sign(msg)
            .as_ref()
            .try_into()
            .expect("Ed25519 signatures are 64 bytes")
    }
}

/// PKCS#8 v1 PEM of a private key given by its 32-byte seed.
pub fn private_pem(seed: &[u8; 32]) -> String {
    let mut der = PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(seed);
    pem_encode("PRIVATE KEY", &der)
}

/// SubjectPublicKeyInfo PEM of a public key.
pub fn public_pem(public: &[u8; 32]) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(public);
    pem_encode("PUBLIC KEY", &der)
}

/// Base64 (standard alphabet) of the raw public key: the config form.
pub fn public_base64(public: &[u8; 32]) -> String {
    STANDARD.encode(public)
}

/// Read a public key given as a PEM SubjectPublicKeyInfo or as the base64
/// (standard or URL-safe, padded or not) of its 32 raw bytes.
pub fn parse_public(text: &str, what: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        let der = pem_decode(text, "PUBLIC KEY").ok_or_else(|| KeyError::NotPem {
            what: what.into(),
            label: "PUBLIC KEY",
        })?;
        if der.len() != 44 || der[..12] != SPKI_PREFIX {
            return Err(KeyError::NotEd25519 {
                what: what.into(),
                detail: "the PEM public key is not an Ed25519 SubjectPublicKeyInfo".into(),
            });
        }
        return Ok(der[12..].try_into().expect("32 bytes"));
    }
    let bytes = STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
        .map_err(|e| KeyError::BadPublicKey {
            what: what.into(),
            detail: format!("not base64 ({e})"),
        })?;
    bytes.as_slice().try_into().map_err(|_| KeyError::BadPublicKey {
        what: what.into(),
        detail: format!("{} bytes instead of 32", bytes.len()),
    })
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    #[test]
    fn generated_keys_roundtrip_through_pem_and_sign() {
        let (k, seed) = SigningKey::generate("release-1").unwrap();
        let pem = private_pem(&seed);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = SigningKey::from_pem("release-1", &pem, "test").unwrap();
        assert_eq!(back.public(), k.public());
        let sig = back.sign(b"hello");
        UnparsedPublicKey::new(&ED25519, k.public())
            .verify(b"hello", &sig)
            .unwrap();
        let pub_pem = public_pem(k.public());
        assert_eq!(&parse_public(&pub_pem, "t").unwrap(), k.public());
        assert_eq!(&parse_public(&public_base64(k.public()), "t").unwrap(), k.public());
        // Debug never shows the secret.
        let dbg = format!("{back:?}");
        assert!(dbg.contains("release-1") && !dbg.contains(&hex::encode(seed)), "{dbg}");
    }

    #[test]
    fn pkcs8_v2_from_ring_is_accepted() {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pem = pem_encode("PRIVATE KEY", doc.as_ref());
        SigningKey::from_pem("k", &pem, "t").unwrap();
    }

    #[test]
    fn bad_keys_are_named() {
        let e = SigningKey::from_pem("k", "hello", "/etc/k.key").unwrap_err();
        assert!(e.to_string().contains("/etc/k.key: not a PEM PRIVATE KEY"), "{e}");
        let e = parse_public("AAAA", "security.keys[0].public_key").unwrap_err();
        assert!(e.to_string().contains("3 bytes instead of 32"), "{e}");
        let rsa_like = pem_encode("PUBLIC KEY", &[0u8; 40]);
        assert!(matches!(parse_public(&rsa_like, "x"), Err(KeyError::NotEd25519 { .. })));
    }
}
