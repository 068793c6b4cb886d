//! Validated identifiers.
//!
//! An id is 1 to 64 characters of lower-case ASCII letters, digits, `_` and
//! `-`, starting with a letter or digit. That keeps it safe inside topic names,
//! file names, Pulsar names and URLs without escaping.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// An id that broke the naming rule.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error(
    "invalid {what} id {value:?}: use 1 to 64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit (e.g. \"axis_07\")"
)]
pub struct IdError {
    /// Which kind of id (axis, cell, …).
    pub what: &'static str,
    /// The rejected value.
    pub value: String,
}

/// Check the naming rule; `what` names the kind of id in the error.
pub fn validate(what: &'static str, value: &str) -> Result<(), IdError> {
    let ok_len = (1..=64).contains(&value.len());
    let mut chars = value.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok_len && ok_first && ok_rest {
        Ok(())
    } else {
        Err(IdError {
            what,
            value: value.to_string(),
        })
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validate and wrap.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($what, &value)?;
                Ok(Self(value))
            }
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

id_type!(
    /// A motion axis, e.g. `axis_07`.
    AxisId,
    "axis"
);
id_type!(
    /// A camera inspection cell, e.g. `cell_2245`.
    CellId,
    "cell"
);
id_type!(
    /// A twin-modelled asset, e.g. `battery_pack_89`.
    AssetId,
    "asset"
);
id_type!(
    /// A production line, e.g. `line_1`.
    LineId,
    "line"
);
id_type!(
    /// An edge node, e.g. `edge-01`.
    NodeId,
    "node"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plant_names_and_rejects_unsafe_ones() {
        assert!(AxisId::new("axis_07").is_ok());
        assert!(NodeId::new("edge-01").is_ok());
        for bad in ["", "Axis07", "_x", "a/b", "a b", "ä", &"x".repeat(65)] {
            let err = CellId::new(bad).unwrap_err();
            assert!(err.to_string().contains("invalid cell id"), "{err}");
        }
    }

    #[test]
    fn serde_checks_the_rule() {
        let ok: AssetId = serde_json::from_str("\"battery_pack_89\"").unwrap();
        assert_eq!(ok.as_str(), "battery_pack_89");
        assert!(serde_json::from_str::<AssetId>("\"Bad Name\"").is_err());
    }
}
