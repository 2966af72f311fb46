//! Secrets at rest: header values and environment of registered servers are sealed with
//! AES-256-GCM (ring) under the server's secret key, bound to the server's id (a sealed value
//! moved to another row does not open). The key comes from `FLYWHEEL_SECRET_KEY` or
//! `DATA_DIR/secret.key` (created 0600 on first start); every process of a cluster needs the
//! same one. A sealed text names the key it was sealed with (`v1.<key id>.<base64>`), so a key
//! can be rotated: the previous key opens old values while [`Sealer::reseal`] rewrites them.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::error::McpError;

/// A 256-bit key and its short id.
#[derive(Clone)]
pub struct SecretKey {
    bytes: [u8; 32],
    id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self { bytes, id }
    }

    /// A new random key.
    pub fn generate() -> Result<Self, McpError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| McpError::Internal("the system random source failed".into()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// Parses 32 bytes written as base64 or 64 hex digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|e| e.to_string())?
        } else {
            STANDARD
                .decode(text)
                .map_err(|e| format!("not base64 or hex: {e}"))?
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("a secret key is 32 bytes, this one is {}", b.len()))?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key as its file holds it (base64).
    pub fn encoded(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `FLYWHEEL_SECRET_KEY`'s value if given, else `path`'s, creating the file (0600) with a
    /// new key if it does not exist.
    pub fn load(env: Option<&str>, path: &Path) -> Result<Self, String> {
        if let Some(text) = env.filter(|t| !t.trim().is_empty()) {
            return Self::parse(text).map_err(|e| format!("FLYWHEEL_SECRET_KEY: {e}"));
        }
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate().map_err(|e| e.to_string())?;
                write_private(path, &key.encoded())
                    .map_err(|e| format!("could not create {}: {e}", path.display()))?;
                tracing::info!(path = %path.display(), "created the secret key for MCP server secrets");
                Ok(key)
            }
            Err(e) => Err(format!("could not read {}: {e}", path.display())),
        }
    }
}

/// Writes `text` to `path` readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Seals with the current key; opens with it or the previous one.
#[derive(Clone, Debug)]
pub struct Sealer {
    current: SecretKey,
    previous: Option<SecretKey>,
}

impl Sealer {
    pub fn new(current: SecretKey, previous: Option<SecretKey>) -> Self {
        Self { current, previous }
    }

    pub fn key_id(&self) -> &str {
        self.current.id()
    }

    /// Seals `plain` for the row `bound_to`.
    pub fn seal(&self, plain: &[u8], bound_to: &str) -> Result<String, McpError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| McpError::Internal("the system random source failed".into()))?;
        let key = aead_key(&self.current);
        let mut buf = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(bound_to.as_bytes()),
            &mut buf,
        )
        .map_err(|_| McpError::Internal("sealing a secret failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!(
            "v1.{}.{}",
            self.current.id(),
            URL_SAFE_NO_PAD.encode(out)
        ))
    }

    /// Opens a value sealed for `bound_to`.
    pub fn open(&self, sealed: &str, bound_to: &str) -> Result<Vec<u8>, McpError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some("v1"), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(McpError::Internal("a sealed secret is malformed".into()));
        };
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.id() == id)
            .ok_or_else(|| {
                McpError::Internal(format!(
                    "a secret was sealed with key {id}, which this process does not have; start every process with the same FLYWHEEL_SECRET_KEY or secret.key"
                ))
            })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| McpError::Internal("a sealed secret is malformed".into()))?;
        if bytes.len() < NONCE_LEN {
            return Err(McpError::Internal("a sealed secret is malformed".into()));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| McpError::Internal("a sealed secret is malformed".into()))?;
        let mut buf = ciphertext.to_vec();
        let plain = aead_key(key)
            .open_in_place(nonce, Aad::from(bound_to.as_bytes()), &mut buf)
            .map_err(|_| McpError::Internal("a sealed secret does not open with its key".into()))?;
        Ok(plain.to_vec())
    }

    /// `sealed` sealed again under the current key, or `None` if it already is.
    pub fn reseal(&self, sealed: &str, bound_to: &str) -> Result<Option<String>, McpError> {
        if sealed.starts_with(&format!("v1.{}.", self.current.id())) {
            return Ok(None);
        }
        let plain = self.open(sealed, bound_to)?;
        self.seal(&plain, bound_to).map(Some)
    }
}

impl Sealer {
    /// An HMAC-SHA256 of `data` under a key derived from the current secret key, in hex: how
    /// Flywheel processes sharing the key authenticate requests they forward to each other.
    pub fn mac(&self, data: &[u8]) -> String {
        let tag = ring::hmac::sign(&mac_key(&self.current), data);
        tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `mac` is [`Sealer::mac`] of `data` under the current or the previous key.
    pub fn verify_mac(&self, data: &[u8], mac: &str) -> bool {
        if !mac.len().is_multiple_of(2) || !mac.is_ascii() {
            return false;
        }
        let Ok(tag) = (0..mac.len() / 2)
            .map(|i| u8::from_str_radix(&mac[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
        else {
            return false;
        };
        [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .any(|k| ring::hmac::verify(&mac_key(k), data, &tag).is_ok())
    }
}

fn mac_key(key: &SecretKey) -> ring::hmac::Key {
    let derived = Sha256::new()
        .chain_update(b"flywheel node auth\0")
        .chain_update(key.bytes)
        .finalize();
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derived)
}

fn aead_key(key: &SecretKey) -> LessSafeKey {
    // 32 bytes is always a valid AES-256 key.
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &key.bytes)
            .unwrap_or_else(|_| unreachable!("a 32-byte key is a valid AES-256-GCM key")),
    )
}

/// The budget webhooks' signing secrets are sealed with the same key as MCP servers' secrets.
impl tenancy::SecretSeal for Sealer {
    fn seal(&self, plain: &str, bound_to: &str) -> Result<String, String> {
        Sealer::seal(self, plain.as_bytes(), bound_to).map_err(|e| e.to_string())
    }

    fn open(&self, sealed: &str, bound_to: &str) -> Result<String, String> {
        let plain = Sealer::open(self, sealed, bound_to).map_err(|e| e.to_string())?;
        String::from_utf8(plain).map_err(|_| "a sealed secret is not text".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let key = SecretKey::generate().expect("key");
        let sealer = Sealer::new(key.clone(), None);
        let sealed = sealer.seal(b"Bearer s3cret", "mcp_1").expect("seals");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(
            sealer.open(&sealed, "mcp_1").expect("opens"),
            b"Bearer s3cret"
        );
        assert!(sealer.open(&sealed, "mcp_2").is_err(), "bound to its row");
        let other = Sealer::new(SecretKey::generate().expect("key"), None);
        assert!(other.open(&sealed, "mcp_1").is_err());
        // Rotation: the new key with the old one as previous opens it and reseals it.
        let rotated = Sealer::new(SecretKey::generate().expect("key"), Some(key));
        let resealed = rotated
            .reseal(&sealed, "mcp_1")
            .expect("reseals")
            .expect("changed");
        assert_eq!(
            rotated.open(&resealed, "mcp_1").expect("opens"),
            b"Bearer s3cret"
        );
        assert_eq!(rotated.reseal(&resealed, "mcp_1").expect("no-op"), None);
        assert!(sealer.open("garbage", "mcp_1").is_err());
        assert!(sealer.open("v1.x.!!", "mcp_1").is_err());
    }

    #[test]
    fn macs_verify_only_under_the_same_key_and_data() {
        let key = SecretKey::generate().expect("key");
        let a = Sealer::new(key.clone(), None);
        let mac = a.mac(b"body");
        assert!(a.verify_mac(b"body", &mac));
        assert!(!a.verify_mac(b"body2", &mac));
        assert!(!a.verify_mac(b"body", "zz"));
        assert!(!a.verify_mac(b"body", ""));
        let b = Sealer::new(SecretKey::generate().expect("key"), None);
        assert!(!b.verify_mac(b"body", &mac));
        let rotated = Sealer::new(SecretKey::generate().expect("key"), Some(key));
        assert!(rotated.verify_mac(b"body", &mac));
    }

    #[test]
    fn keys_load_from_env_or_a_private_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        let created = SecretKey::load(None, &path).expect("created");
        let again = SecretKey::load(None, &path).expect("read");
        assert_eq!(created.id(), again.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let hex = "00".repeat(32);
        assert!(SecretKey::load(Some(&hex), &path).is_ok());
        assert!(SecretKey::load(Some("short"), &path).is_err());
    }
}
