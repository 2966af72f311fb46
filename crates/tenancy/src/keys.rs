//! API key secrets, scopes and the principal a verified key resolves to.
//!
//! A secret is `fw-` followed by 40 random alphanumerics (~238 bits). The store keeps its
//! SHA-256 and its first [`PREFIX_LEN`] characters, which are shown in listings and used to find
//! the candidates that a presented key is then compared with, in constant time.

use std::fmt;
use std::str::FromStr;

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use store::{ApiKey, Tenant};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// What every secret starts with.
pub const SECRET_PREFIX: &str = "fw-";
const SECRET_RANDOM_LEN: usize = 40;
/// How many leading characters of a secret are kept visible (`fw-` and 9 more).
pub const PREFIX_LEN: usize = 12;

/// A freshly minted secret: shown once, then only its hash and prefix are kept.
pub(crate) struct Secret {
    pub text: String,
    pub prefix: String,
    pub hash: String,
}

pub(crate) fn mint() -> Secret {
    let random = Alphanumeric.sample_string(&mut rand::rng(), SECRET_RANDOM_LEN);
    let text = format!("{SECRET_PREFIX}{random}");
    Secret {
        prefix: text[..PREFIX_LEN].to_owned(),
        hash: hash_hex(&text),
        text,
    }
}

/// A secret derived from another secret (`seed`, itself at least as random as a minted one)
/// under `label`: the same seed and label always give the same secret, and the secret reveals
/// nothing of the seed. The console's playground key is derived from the session's cookie
/// secret, so every page load of one session shows the same key without its secret being
/// stored anywhere.
pub(crate) fn derive(seed: &str, label: &str) -> Secret {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = String::with_capacity(SECRET_RANDOM_LEN);
    let mut block = 0u32;
    while random.len() < SECRET_RANDOM_LEN {
        let digest = Sha256::new()
            .chain_update(b"flywheel derived key\0")
            .chain_update(label.as_bytes())
            .chain_update([0])
            .chain_update(block.to_be_bytes())
            .chain_update(seed.as_bytes())
            .finalize();
        // Rejection sampling keeps every character uniform over the alphabet (248 = 4 × 62).
        for byte in digest.iter().filter(|b| **b < 248) {
            if random.len() < SECRET_RANDOM_LEN {
                random.push(char::from(ALPHABET[usize::from(*byte % 62)]));
            }
        }
        block += 1;
    }
    let text = format!("{SECRET_PREFIX}{random}");
    Secret {
        prefix: text[..PREFIX_LEN].to_owned(),
        hash: hash_hex(&text),
        text,
    }
}

pub(crate) fn hash_hex(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The visible prefix of a presented key, if it is shaped like one of ours.
pub(crate) fn presented_prefix(presented: &str) -> Option<&str> {
    let well_formed = presented.len() == SECRET_PREFIX.len() + SECRET_RANDOM_LEN
        && presented.starts_with(SECRET_PREFIX)
        && presented[SECRET_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric());
    well_formed.then(|| &presented[..PREFIX_LEN])
}

/// Compares hex hashes in time independent of where they differ.
pub(crate) fn hashes_match(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `/v1/chat/completions`, `/v1/completions`, …
    Inference,
    HubRead,
    HubWrite,
    /// `/mcp` and `/v1/mcp/servers`: the tenant's MCP servers and the tools of those granted.
    Mcp,
}

impl Scope {
    pub const ALL: [Scope; 4] = [
        Scope::Inference,
        Scope::HubRead,
        Scope::HubWrite,
        Scope::Mcp,
    ];
    /// A new key's scopes unless it names its own.
    pub const DEFAULT: [Scope; 2] = [Scope::Inference, Scope::HubRead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inference => "inference",
            Self::HubRead => "hub:read",
            Self::HubWrite => "hub:write",
            Self::Mcp => "mcp",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(
                    "scopes",
                    format!("unknown scope '{s}'; expected inference, hub:read, hub:write or mcp"),
                )
            })
    }
}

/// A verified tenant key and its tenant, as loaded for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key: ApiKey,
    pub tenant: Tenant,
}

impl Principal {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.key.scopes.iter().any(|s| s == scope.as_str())
    }

    /// `PermissionDenied` unless the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Error::denied(format!(
                "this API key lacks the '{scope}' scope"
            )))
        }
    }

    /// `PermissionDenied` unless the key's model allow-list (if any) names `served_model`.
    pub fn require_model(&self, served_model: &str) -> Result<()> {
        match &self.key.models {
            Some(models) if !models.iter().any(|m| m == served_model) => Err(Error::denied(
                format!("this API key may not use the model '{served_model}'"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_are_well_formed_and_distinct() {
        let a = mint();
        let b = mint();
        assert_ne!(a.text, b.text);
        assert_eq!(presented_prefix(&a.text), Some(a.prefix.as_str()));
        assert!(a.text.starts_with("fw-"));
        assert_eq!(a.hash, hash_hex(&a.text));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.text[PREFIX_LEN..]));
    }

    #[test]
    fn derived_secrets_are_stable_well_formed_and_separated() {
        let a = derive("seed-one", "playground");
        assert_eq!(a.text, derive("seed-one", "playground").text);
        assert_ne!(a.text, derive("seed-two", "playground").text);
        assert_ne!(a.text, derive("seed-one", "other").text);
        assert_eq!(a.text.len(), SECRET_PREFIX.len() + SECRET_RANDOM_LEN);
        assert!(a.text[SECRET_PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(presented_prefix(&a.text), Some(a.prefix.as_str()));
        assert!(hashes_match(&a.hash, &hash_hex(&a.text)));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        assert_eq!(presented_prefix(""), None);
        assert_eq!(presented_prefix("sk-abc"), None);
        assert_eq!(presented_prefix(&format!("fw-{}", "a".repeat(39))), None);
        assert_eq!(presented_prefix(&format!("fw-{}é", "a".repeat(38))), None);
    }

    #[test]
    fn hashes_compare_exactly() {
        let h = hash_hex("fw-x");
        assert!(hashes_match(&h, &hash_hex("fw-x")));
        assert!(!hashes_match(&h, &hash_hex("fw-y")));
        assert!(!hashes_match(&h, &h[1..]));
    }

    #[test]
    fn scopes_parse_and_print() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert!(matches!(
            "admin".parse::<Scope>(),
            Err(Error::Invalid { .. })
        ));
    }
}
