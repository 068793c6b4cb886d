//! The keyring: which public keys this node trusts, for what, and which are
//! revoked.
//!
//! Every key has a name (the `kid` of a token, the `key_id` of a bundle
//! signature; its fingerprint `sha256:…` works too) and the uses it is
//! trusted for:
//!
//! | use | may sign |
//! |---|---|
//! | `bundle` | model bundles (the release key of the people who ship models) |
//! | `deploy` | deploy and rollback tokens (the deployment authority) |
//! | `command` | control-command tokens (operator tools) |
//!
//! **Rotation**: add the new key next to the old one, move the signers to
//! it, then mark the old one `revoked = true`. **Revocation** keeps the key
//! listed so that anything it signed is refused with "revoked" (not just
//! "unknown"), including bundles deployed before; a node that restarts with a
//! revoked signer's bundle falls back to its configured model.

use super::keys::fingerprint;
use std::fmt;

/// What a key is trusted to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyUse {
    /// Model bundles.
    Bundle,
    /// Deploy and rollback tokens.
    Deploy,
    /// Control-command tokens.
    Command,
}

impl KeyUse {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUse::Bundle => "bundle",
            KeyUse::Deploy => "deploy",
            KeyUse::Command => "command",
        }
    }
    /// Parse the config spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bundle" => Some(KeyUse::Bundle),
            "deploy" => Some(KeyUse::Deploy),
            "command" => Some(KeyUse::Command),
            _ => None,
        }
    }
}

impl fmt::Display for KeyUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One trusted public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    /// Its name (`kid`, `key_id`).
    pub name: String,
    /// The 32 raw bytes.
    pub public: [u8; 32],
    /// What it may sign.
    pub uses: Vec<KeyUse>,
    /// Revoked: everything it signed is refused.
    pub revoked: bool,
}

impl TrustedKey {
    /// `sha256:` fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public)
    }
}

/// Why a key may not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No key of that name or fingerprint.
    Unknown,
    /// The key is revoked.
    Revoked,
    /// The key is trusted, but not for this use.
    NotFor(KeyUse),
}

/// The trusted keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<TrustedKey>,
}

impl Keyring {
    /// A keyring of `keys`.
    pub fn new(keys: Vec<TrustedKey>) -> Self {
        Self { keys }
    }

    /// Every key.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// No key at all?
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key named (or fingerprinted) `id`, if it may sign for `use_`.
    pub fn lookup(&self, id: &str, use_: KeyUse) -> Result<&TrustedKey, KeyRefusal> {
        let key = self
            .keys
            .iter()
            .find(|k| k.name == id)
            .or_else(|| self.keys.iter().find(|k| k.fingerprint() == id))
            .ok_or(KeyRefusal::Unknown)?;
        if key.revoked {
            return Err(KeyRefusal::Revoked);
        }
        if !key.uses.contains(&use_) {
            return Err(KeyRefusal::NotFor(use_));
        }
        Ok(key)
    }

    /// Keys that may sign for `use_` (not revoked), for tokens without a `kid`.
    pub fn usable(&self, use_: KeyUse) -> impl Iterator<Item = &TrustedKey> {
        self.keys.iter().filter(move |k| !k.revoked && k.uses.contains(&use_))
    }

    /// Names of the keys that may sign for `use_`, for error messages.
    pub fn names_for(&self, use_: KeyUse) -> Vec<String> {
        self.usable(use_).map(|k| k.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, b: u8, uses: &[KeyUse], revoked: bool) -> TrustedKey {
        TrustedKey {
            name: name.into(),
            public: [b; 32],
            uses: uses.to_vec(),
            revoked,
        }
    }

    #[test]
    fn lookup_by_name_or_fingerprint_with_use_and_revocation() {
        let ring = Keyring::new(vec![
            key("old", 1, &[KeyUse::Bundle], true),
            key("new", 2, &[KeyUse::Bundle], false),
            key("ops", 3, &[KeyUse::Deploy, KeyUse::Command], false),
        ]);
        assert_eq!(ring.lookup("new", KeyUse::Bundle).unwrap().name, "new");
        let fp = fingerprint(&[2; 32]);
        assert_eq!(ring.lookup(&fp, KeyUse::Bundle).unwrap().name, "new");
        assert_eq!(ring.lookup("old", KeyUse::Bundle), Err(KeyRefusal::Revoked));
        assert_eq!(ring.lookup("nobody", KeyUse::Bundle), Err(KeyRefusal::Unknown));
        assert_eq!(
            ring.lookup("new", KeyUse::Deploy),
            Err(KeyRefusal::NotFor(KeyUse::Deploy))
        );
        assert_eq!(ring.names_for(KeyUse::Bundle), ["new"]);
        assert_eq!(ring.usable(KeyUse::Command).count(), 1);
    }
}
