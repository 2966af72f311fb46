//! `flywheel backup` and `flywheel restore`: one archive (tar) of what a data directory holds
//! that cannot be fetched again — the database (SQLite; a PostgreSQL database is the operator's
//! `pg_dump`), the hub's blobs, the secret key that opens MCP server secrets and the admin key —
//! with a manifest listing every part's size and sha256, written last.
//!
//! A backup is taken while the server runs: the database as of one transaction (`VACUUM INTO`),
//! then the blobs, which are immutable files named by their sha256. It is written to
//! `FILE.partial` and renamed once complete, so a failed backup leaves nothing that looks like
//! an archive. A restore checks every part against the manifest before anything is put in
//! place; an archive that is cut short, altered or lacks its manifest is refused and the target
//! directory is left as it was.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;
/// Where a restore stages the archive's parts inside the target directory.
const STAGING: &str = ".restoring";
/// The files of a data directory a backup takes besides the hub's blobs.
const KEY_FILES: &[&str] = &["secret.key", "admin.key"];
const DATABASE: &str = "flywheel.db";
const BLOBS: &str = "hub/blobs";

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The data directory to back up (the one `flywheel serve` uses).
    #[arg(long, env = "FLYWHEEL_DATA_DIR", default_value = "flywheel-data")]
    pub data_dir: PathBuf,
    /// The database [default: sqlite://DATA_DIR/flywheel.db]. A PostgreSQL database is not in
    /// the archive: back it up with `pg_dump`.
    #[arg(long, env = "FLYWHEEL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The archive to write (refused if it exists).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// An archive written by `flywheel backup`.
    pub archive: PathBuf,
    /// The data directory to restore into: new, or empty.
    #[arg(long)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    /// The version of Flywheel that wrote it.
    version: String,
    created_at: String,
    /// `sqlite` (the database is the part `flywheel.db`) or `external` (PostgreSQL, backed up
    /// apart with `pg_dump`).
    database: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Part {
    path: String,
    size: u64,
    sha256: String,
}

/// Reads through to `inner`, hashing what passes and moving the progress bar.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    bar: ProgressBar,
}

impl<R> Hashing<R> {
    fn new(inner: R, bar: ProgressBar) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            bar,
        }
    }

    fn finish(self) -> (u64, String) {
        (self.bytes, format!("{:x}", self.hasher.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// Every file under `dir` (recursively), as `(path in the archive, path on disk)`.
fn files_under(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            files_under(&entry.path(), &format!("{prefix}/{name}"), out)?;
        } else if kind.is_file() {
            out.push((format!("{prefix}/{name}"), entry.path()));
        }
    }
    Ok(())
}

pub async fn backup(args: BackupArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || backup_blocking(&args)).await?
}

fn backup_blocking(args: &BackupArgs) -> Result<()> {
    if !args.data_dir.is_dir() {
        bail!(
            "{} is not a directory: pass the data directory the server uses (--data-dir)",
            args.data_dir.display()
        );
    }
    if args.output.exists() {
        bail!(
            "{} exists: choose a new file name for the archive",
            args.output.display()
        );
    }
    let partial = PathBuf::from(format!("{}.partial", args.output.display()));
    let staging = tempfile::Builder::new()
        .prefix(".flywheel-backup-")
        .tempdir_in(
            args.output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .context("cannot make a scratch directory beside the archive")?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join(DATABASE).display()));
    let mut parts: Vec<(String, PathBuf)> = Vec::new();
    let database = if url.starts_with("sqlite:") {
        let copy = staging.path().join(DATABASE);
        eprintln!("[backup] copying the database ({url})");
        store::snapshot_sqlite(&url, &copy).context("cannot copy the database")?;
        parts.push((DATABASE.to_owned(), copy));
        "sqlite"
    } else {
        eprintln!(
            "[backup] the database is PostgreSQL: it is not in this archive; back it up with \
             pg_dump (README, \"Backups\")"
        );
        "external"
    };
    for name in KEY_FILES {
        let path = args.data_dir.join(name);
        if path.is_file() {
            parts.push(((*name).to_owned(), path));
        }
    }
    files_under(&args.data_dir.join(BLOBS), BLOBS, &mut parts)?;
    let total: u64 = parts
        .iter()
        .filter_map(|(_, p)| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let written = write_archive(file, &parts, database, bar(total, "backup"));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &args.output)
        .with_context(|| format!("cannot rename {} into place", partial.display()))?;
    eprintln!(
        "[backup] wrote {} ({} parts, {} bytes); restore it with `flywheel restore {} --data-dir NEW`",
        args.output.display(),
        parts.len(),
        total,
        args.output.display()
    );
    Ok(())
}

fn write_archive(
    file: File,
    parts: &[(String, PathBuf)],
    database: &str,
    bar: ProgressBar,
) -> Result<()> {
    let mut tar = tar::Builder::new(BufWriter::new(file));
    let mut listed = Vec::with_capacity(parts.len());
    for (name, path) in parts {
        let source = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let size = source.metadata()?.len();
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(if KEY_FILES.contains(&name.as_str()) {
            0o600
        } else {
            0o644
        });
        header.set_mtime(0);
        // Exactly `size` bytes, whatever happens to the file meanwhile.
        let mut reader = Hashing::new(source.take(size), bar.clone());
        tar.append_data(&mut header, name, &mut reader)
            .with_context(|| format!("cannot archive {}", path.display()))?;
        let (bytes, sha256) = reader.finish();
        if bytes != size {
            bail!("{} shrank while it was archived", path.display());
        }
        listed.push(Part {
            path: name.clone(),
            size,
            sha256,
        });
    }
    bar.finish_and_clear();
    let manifest = Manifest {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: chrono::Utc::now().to_rfc3339(),
        database: database.to_owned(),
        parts: listed,
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, MANIFEST, json.as_slice())?;
    let mut out = tar.into_inner()?;
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> Result<()> {
    tokio::task::spawn_blocking(move || restore_blocking(&args)).await?
}

fn restore_blocking(args: &RestoreArgs) -> Result<()> {
    let created = !args.data_dir.exists();
    if !created
        && std::fs::read_dir(&args.data_dir)
            .with_context(|| format!("cannot read {}", args.data_dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: restore into a new or empty directory",
            args.data_dir.display()
        );
    }
    let staging = args.data_dir.join(STAGING);
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let result = unpack_checked(&args.archive, &staging).and_then(|manifest| {
        for entry in std::fs::read_dir(&staging)? {
            let entry = entry?;
            std::fs::rename(entry.path(), args.data_dir.join(entry.file_name()))?;
        }
        std::fs::remove_dir(&staging)?;
        Ok(manifest)
    });
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            if created {
                let _ = std::fs::remove_dir(&args.data_dir);
            }
            return Err(e);
        }
    };
    let bytes: u64 = manifest.parts.iter().map(|p| p.size).sum();
    eprintln!(
        "[restore] {} parts, {bytes} bytes, written by Flywheel {} at {}, checked and restored into {}",
        manifest.parts.len(),
        manifest.version,
        manifest.created_at,
        args.data_dir.display()
    );
    if manifest.database == "external" {
        eprintln!(
            "[restore] the database was PostgreSQL and is not in the archive: restore it from \
             its pg_dump, then start with --database-url"
        );
    }
    eprintln!(
        "[restore] start it with `flywheel serve --data-dir {}`",
        args.data_dir.display()
    );
    Ok(())
}

/// A path inside the archive as a relative path of plain names, or `None`.
fn safe_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Unpacks `archive` into `staging`, checking every part against the manifest.
fn unpack_checked(archive: &Path, staging: &Path) -> Result<Manifest> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let total = file.metadata()?.len();
    let progress = bar(total, "restore");
    let corrupt = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "{} is not a complete Flywheel backup ({e}); it may have been cut short or altered: \
             restore from another copy",
            archive.display()
        )
    };
    let mut tar = tar::Archive::new(BufReader::new(file));
    let mut manifest: Option<Manifest> = None;
    let mut found: BTreeMap<String, Part> = BTreeMap::new();
    for entry in tar.entries().map_err(|e| corrupt(&e))? {
        let mut entry = entry.map_err(|e| corrupt(&e))?;
        let raw = entry.path().map_err(|e| corrupt(&e))?.into_owned();
        let Some(path) = safe_path(&raw) else {
            return Err(corrupt(&format!("unsafe path {}", raw.display())));
        };
        let name = path.to_string_lossy().replace('\\', "/");
        if !entry.header().entry_type().is_file() {
            return Err(corrupt(&format!("{name} is not a plain file")));
        }
        if name == MANIFEST {
            let mut text = String::new();
            entry
                .by_ref()
                .take(16 << 20)
                .read_to_string(&mut text)
                .map_err(|e| corrupt(&e))?;
            manifest = Some(serde_json::from_str(&text).map_err(|e| corrupt(&e))?);
            continue;
        }
        if manifest.is_some() {
            return Err(corrupt(&format!("{name} follows the manifest")));
        }
        let target = staging.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut out = BufWriter::new(File::create(&target)?);
        let mut reader = Hashing::new(&mut entry, progress.clone());
        std::io::copy(&mut reader, &mut out).map_err(|e| corrupt(&e))?;
        out.flush()?;
        let (size, sha256) = reader.finish();
        if KEY_FILES.contains(&name.as_str()) {
            set_private(&target)?;
        }
        found.insert(
            name.clone(),
            Part {
                path: name,
                size,
                sha256,
            },
        );
    }
    progress.finish_and_clear();
    let Some(manifest) = manifest else {
        return Err(corrupt(&"it has no manifest"));
    };
    if manifest.format != FORMAT {
        bail!(
            "{} has format {}, this Flywheel reads format {FORMAT}: restore it with the version \
             that wrote it ({})",
            archive.display(),
            manifest.format,
            manifest.version
        );
    }
    for part in &manifest.parts {
        match found.remove(&part.path) {
            Some(got) if got == *part => {}
            Some(_) => {
                return Err(corrupt(&format!(
                    "{} does not match its checksum",
                    part.path
                )))
            }
            None => return Err(corrupt(&format!("{} is missing", part.path))),
        }
    }
    if let Some(extra) = found.keys().next() {
        return Err(corrupt(&format!("{extra} is not in the manifest")));
    }
    Ok(manifest)
}

#[cfg(unix)]
fn set_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn set_private(_: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_dir(root: &Path) -> PathBuf {
        let dir = root.join("data");
        std::fs::create_dir_all(dir.join("hub/blobs/ab")).unwrap();
        std::fs::write(dir.join("hub/blobs/ab/abcdef"), b"blob bytes").unwrap();
        std::fs::write(dir.join("secret.key"), b"k1").unwrap();
        dir
    }

    fn backup_of(root: &Path) -> PathBuf {
        let data = data_dir(root);
        let out = root.join("b.tar");
        backup_blocking(&BackupArgs {
            data_dir: data,
            // No database: the parts are the key and the blob (a PostgreSQL URL is skipped).
            database_url: Some("postgres://unused".into()),
            output: out.clone(),
        })
        .unwrap();
        out
    }

    #[test]
    fn an_archive_restores_byte_for_byte() {
        let root = tempfile::tempdir().unwrap();
        let archive = backup_of(root.path());
        let target = root.path().join("restored");
        restore_blocking(&RestoreArgs {
            archive,
            data_dir: target.clone(),
        })
        .unwrap();
        assert_eq!(
            std::fs::read(target.join("hub/blobs/ab/abcdef")).unwrap(),
            b"blob bytes"
        );
        assert_eq!(std::fs::read(target.join("secret.key")).unwrap(), b"k1");
        assert!(!target.join(STAGING).exists());
    }

    #[test]
    fn a_cut_or_altered_archive_is_refused_and_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let archive = backup_of(root.path());
        let bytes = std::fs::read(&archive).unwrap();
        // Cut before the manifest, in the middle of the archive, and one byte changed.
        let mut altered = bytes.clone();
        let at = bytes.windows(10).position(|w| w == b"blob bytes").unwrap();
        altered[at] = b'X';
        for (name, content) in [
            ("cut.tar", bytes[..bytes.len() / 2].to_vec()),
            ("altered.tar", altered),
        ] {
            let path = root.path().join(name);
            std::fs::write(&path, content).unwrap();
            let target = root.path().join(format!("into-{name}"));
            let err = restore_blocking(&RestoreArgs {
                archive: path,
                data_dir: target.clone(),
            })
            .unwrap_err()
            .to_string();
            assert!(err.contains("not a complete Flywheel backup"), "{err}");
            assert!(!target.exists(), "{name}: the new directory is removed");
        }
    }

    #[test]
    fn a_directory_in_use_is_not_restored_into() {
        let root = tempfile::tempdir().unwrap();
        let archive = backup_of(root.path());
        let err = restore_blocking(&RestoreArgs {
            archive,
            data_dir: root.path().join("data"),
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("not empty"), "{err}");
    }

    #[test]
    fn paths_that_leave_the_directory_are_unsafe() {
        assert_eq!(safe_path(Path::new("../x")), None);
        assert_eq!(safe_path(Path::new("/etc/passwd")), None);
        assert_eq!(safe_path(Path::new("a/../../b")), None);
        assert_eq!(
            safe_path(Path::new("./hub/blobs/x")),
            Some(PathBuf::from("hub/blobs/x"))
        );
    }
}
