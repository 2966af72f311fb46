//! The bootstrap admin key: `FLYWHEEL_ADMIN_KEY`, or one generated into `DATA_DIR/admin.key`
//! (mode 0600) and reused on later starts.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

pub const ENV: &str = "FLYWHEEL_ADMIN_KEY";

pub fn load_or_create(data_dir: &Path) -> Result<String> {
    if let Ok(key) = std::env::var(ENV) {
        if key.trim().len() < 16 {
            anyhow::bail!("{ENV} must be at least 16 characters");
        }
        return Ok(key.trim().to_owned());
    }
    let path = data_dir.join("admin.key");
    if path.exists() {
        let key = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let key = key.trim().to_owned();
        if key.len() >= 16 {
            eprintln!("admin key: {} (from {ENV} or that file)", path.display());
            return Ok(key);
        }
        anyhow::bail!(
            "{} is empty or too short; delete it to generate a new key",
            path.display()
        );
    }
    let key = format!("fw-admin-{}", hex(&rand::random::<[u8; 24]>()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{key}").with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("admin key generated: {} (mode 0600)", path.display());
    Ok(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_reused() {
        if std::env::var(ENV).is_ok() {
            return; // the environment decides; nothing to generate
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let a = load_or_create(dir.path()).expect("created");
        let b = load_or_create(dir.path()).expect("reused");
        assert_eq!(a, b);
        assert!(a.starts_with("fw-admin-") && a.len() > 40);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin.key"))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
