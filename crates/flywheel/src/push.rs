//! `flywheel push DIR ORG/NAME`: hash every file, upload what the server lacks (resuming
//! interrupted uploads), then make one new revision of the branch holding exactly the
//! directory's files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use hub::path::{RepoId, ValidPath};
use hub::remote::FlywheelClient;
use hub::{CommitRequest, FileOp};
use indicatif::{ProgressBar, ProgressStyle};

/// How to reach the server (shared by `push` and `pull`).
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// The Flywheel server.
    #[arg(long, env = "FLYWHEEL_URL", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// An API key with hub:write on the org (or the admin key).
    #[arg(long, env = "FLYWHEEL_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The directory to push; its files become the new revision.
    pub dir: PathBuf,
    /// The repository, ORG/NAME (created if missing).
    pub repo: String,
    /// Create the repository private (only your tenant's keys can read it).
    #[arg(long)]
    pub private: bool,
    /// The branch to move.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// The new revision's message.
    #[arg(long = "revision-message", short = 'm')]
    pub message: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn bytes_bar(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_owned());
    bar
}

/// Every regular file under `dir`, as (repository path, local path), skipping `.git/` and
/// `.cache/` (where `huggingface_hub` keeps its own state).
pub fn list_files(dir: &Path) -> Result<Vec<(ValidPath, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let kind = std::fs::metadata(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let rel = path
                .strip_prefix(dir)
                .context("walked outside the directory")?;
            let rel = rel
                .to_str()
                .with_context(|| format!("{} is not UTF-8", rel.display()))?
                .replace(std::path::MAIN_SEPARATOR, "/");
            if kind.is_dir() {
                if rel != ".git" && rel != ".cache" {
                    stack.push(path);
                }
            } else if kind.is_file() {
                let valid = ValidPath::parse(&rel).map_err(|e| anyhow::anyhow!("{e}"))?;
                out.push((valid, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Hashes, uploads and commits `files`; returns the new commit id.
pub async fn upload_tree(
    client: &FlywheelClient,
    repo: &RepoId,
    branch: &str,
    files: &[(ValidPath, PathBuf)],
    message: String,
) -> Result<String> {
    let mut ops = Vec::with_capacity(files.len());
    for (path, local) in files {
        let size = std::fs::metadata(local)?.len();
        let hashing = bytes_bar(size, &format!("hash {path}"));
        let digests = hub::blobs::hash_file(local)
            .await
            .with_context(|| format!("cannot read {}", local.display()))?;
        hashing.finish_and_clear();
        let bar = bytes_bar(size, path.as_str());
        let progress = {
            let bar = bar.clone();
            move |n: u64| bar.inc(n)
        };
        client
            .upload_file(repo, local, &digests.sha256, size, &progress)
            .await
            .with_context(|| format!("uploading {path}"))?;
        bar.finish();
        ops.push(FileOp {
            path: path.to_string(),
            sha256: digests.sha256,
            size: size as i64,
        });
    }
    let request = CommitRequest {
        message,
        parent: None,
        files: ops,
        deletes: Vec::new(),
        replace: true,
    };
    Ok(client.commit(repo, branch, &request).await?)
}

pub async fn run(args: PushArgs) -> Result<()> {
    let repo = RepoId::parse(&args.repo).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !args.dir.is_dir() {
        bail!(
            "{} is not a directory; push a directory of files",
            args.dir.display()
        );
    }
    let files = list_files(&args.dir)?;
    if files.is_empty() {
        bail!("{} holds no files to push", args.dir.display());
    }
    let client = FlywheelClient::new(&args.server.server, &args.server.api_key)?;
    if client.ensure_repo(&repo, args.private).await? {
        eprintln!(
            "created {repo}{}",
            if args.private { " (private)" } else { "" }
        );
    }
    let message = args
        .message
        .unwrap_or_else(|| format!("Push {} files from {}", files.len(), args.dir.display()));
    let commit = upload_tree(&client, &repo, &args.branch, &files, message).await?;
    println!("{repo}@{commit}");
    eprintln!(
        "pushed {} files to {repo} ({}); download with HF_ENDPOINT={} huggingface-cli download {repo}",
        files.len(),
        args.branch,
        args.server.server.trim_end_matches('/')
    );
    Ok(())
}
