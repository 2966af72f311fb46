//! `flywheel pull SOURCE ORG/NAME`: download a revision from another hub (Hugging Face,
//! ModelScope or another Flywheel) into a staging directory, resuming partial files with
//! `Range` and checking every hash, then push it into the server as a new revision.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use hub::path::{RepoId, ValidPath};
use hub::remote::{FlywheelClient, Source};

use crate::push::{bytes_bar, upload_tree, ServerArgs};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// hf:ORG/NAME, ms:ORG/NAME or http(s)://HOST[:PORT]/ORG/NAME (another Flywheel).
    pub source: String,
    /// The repository to write, ORG/NAME (created if missing).
    pub repo: String,
    /// The source revision [default: main, or master for ModelScope].
    #[arg(long)]
    pub revision: Option<String>,
    /// A key for the source, if its repository is private.
    #[arg(long, env = "FLYWHEEL_SOURCE_TOKEN", hide_env_values = true)]
    pub source_token: Option<String>,
    /// Create the repository private.
    #[arg(long)]
    pub private: bool,
    /// Where partial downloads wait to be resumed [default: ~/.cache/flywheel/pull].
    #[arg(long, env = "FLYWHEEL_PULL_DIR")]
    pub staging_dir: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn default_staging() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/flywheel/pull")
}

/// One directory name made from `base` (a URL or a revision): `/` and anything unusual
/// become `_`, and a name of only dots (`.`, `..`) is wrapped in `_` so it can never name the
/// directory itself or its parent. (The revision was validated already; this holds anyway.)
fn host_dir(base: &str) -> String {
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.bytes().all(|b| b == b'.') {
        format!("_{name}_")
    } else {
        name
    }
}

pub async fn run(args: PullArgs) -> Result<()> {
    let source = Source::parse(&args.source).map_err(|e| anyhow::anyhow!("{e}"))?;
    let target = RepoId::parse(&args.repo).map_err(|e| anyhow::anyhow!("{e}"))?;
    let http = hub::remote::http_client()?;
    let revision = args
        .revision
        .clone()
        .unwrap_or_else(|| source.default_revision().to_owned());
    let token = args.source_token.as_deref();
    let snapshot = source
        .snapshot(&http, &revision, token)
        .await
        .with_context(|| format!("listing {}", args.source))?;
    eprintln!(
        "{}@{}: {} files",
        source.repo,
        snapshot.revision,
        snapshot.files.len()
    );
    let staging = args
        .staging_dir
        .clone()
        .unwrap_or_else(default_staging)
        .join(host_dir(&source.base))
        .join(&source.repo.org)
        .join(&source.repo.name)
        .join(host_dir(&snapshot.revision));
    let mut local: Vec<(ValidPath, PathBuf)> = Vec::new();
    for file in &snapshot.files {
        let done = staging.join(file.path.as_str());
        let partial = staging.join(format!("{}.partial", file.path));
        if !done.is_file() {
            let bar = bytes_bar(file.size.unwrap_or(0), file.path.as_str());
            let progress = {
                let bar = bar.clone();
                move |n: u64| bar.inc(n)
            };
            let resumed = source
                .download(&http, &snapshot.revision, file, &partial, token, &progress)
                .await
                .with_context(|| format!("downloading {}", file.path))?;
            bar.finish();
            if resumed > 0 {
                eprintln!("{}: resumed from byte {resumed}", file.path);
            }
            tokio::fs::rename(&partial, &done).await?;
        }
        local.push((file.path.clone(), done));
    }
    let client = FlywheelClient::new(&args.server.server, &args.server.api_key)?;
    if client.ensure_repo(&target, args.private).await? {
        eprintln!(
            "created {target}{}",
            if args.private { " (private)" } else { "" }
        );
    }
    let message = format!("Pull {}@{}", args.source, snapshot.revision);
    let commit = upload_tree(&client, &target, "main", &local, message).await?;
    println!("{target}@{commit}");
    if let Err(e) = tokio::fs::remove_dir_all(&staging).await {
        tracing::warn!(error = %e, dir = %staging.display(), "could not remove the staging directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::host_dir;

    #[test]
    fn staging_names_stay_one_directory() {
        assert_eq!(host_dir("https://huggingface.co"), "https___huggingface.co");
        assert_eq!(host_dir("refs/pr/1"), "refs_pr_1");
        for bad in ["..", ".", "", "..."] {
            let name = host_dir(bad);
            assert!(
                name.starts_with('_') && name.ends_with('_'),
                "{bad:?} -> {name:?}"
            );
        }
    }
}
