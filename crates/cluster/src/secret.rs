//! The cluster secret: what a gateway shows a node agent's internal API. From
//! `FLYWHEEL_CLUSTER_SECRET`, else a file; compared in constant time.

use std::path::Path;

use subtle::ConstantTimeEq;

/// Fewest bytes a secret may have.
pub const MIN_SECRET_BYTES: usize = 16;

#[derive(Clone)]
pub struct ClusterSecret(String);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(***)")
    }
}

impl ClusterSecret {
    /// `env` (the variable's value) if set, else the first line of `file`.
    pub fn load(env: Option<&str>, file: Option<&Path>) -> Result<Self, String> {
        let text = match (env, file) {
            (Some(v), _) if !v.trim().is_empty() => v.trim().to_owned(),
            (_, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    format!(
                        "cannot read the cluster secret file {}: {e}",
                        path.display()
                    )
                })?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
            _ => {
                return Err("a cluster needs a shared secret for its internal API: set \
                     FLYWHEEL_CLUSTER_SECRET or --cluster-secret-file on every process"
                    .into())
            }
        };
        Self::new(text)
    }

    pub fn new(text: String) -> Result<Self, String> {
        if text.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the cluster secret has {} bytes; use at least {MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)",
                text.len()
            ));
        }
        Ok(Self(text))
    }

    /// The `Authorization` header value a gateway sends.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value carries this secret.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        token.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_missing_secrets_are_refused_and_only_the_secret_passes() {
        assert!(ClusterSecret::load(None, None).is_err());
        assert!(ClusterSecret::new("short".into()).is_err());
        let s = ClusterSecret::load(Some("0123456789abcdef0123"), None).unwrap();
        assert!(s.accepts(Some("Bearer 0123456789abcdef0123")));
        assert!(!s.accepts(Some("Bearer 0123456789abcdef012")));
        assert!(!s.accepts(Some("0123456789abcdef0123")));
        assert!(!s.accepts(None));
        assert!(!format!("{s:?}").contains("0123"));
    }
}
