//! `flywheel rotate-secret-key`: a new secret key for MCP server secrets (and model groups'
//! member keys, budget webhooks' signing secrets). Every sealed value is
//! opened with the current key and sealed again under the new one; the new key is written first
//! (`secret.key.new`), put in place only once every row is resealed (the old one kept as
//! `secret.key.old`), so an interruption loses nothing: run the command again. Processes hold
//! their key in memory: restart every process of the cluster after rotating, with the new key.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The data directory whose `secret.key` is rotated.
    #[arg(long, env = "FLYWHEEL_DATA_DIR", default_value = "flywheel-data")]
    pub data_dir: PathBuf,
    /// The database [default: sqlite://DATA_DIR/flywheel.db].
    #[arg(long, env = "FLYWHEEL_DATABASE_URL")]
    pub database_url: Option<String>,
}

pub async fn run(args: RotateArgs) -> Result<()> {
    let path = args.data_dir.join("secret.key");
    let staged = args.data_dir.join("secret.key.new");
    let env = std::env::var("FLYWHEEL_SECRET_KEY").ok();
    let from_env = env.as_deref().is_some_and(|k| !k.trim().is_empty());
    if !from_env && !path.exists() {
        anyhow::bail!(
            "{} does not exist and FLYWHEEL_SECRET_KEY is not set: there is no key to rotate",
            path.display()
        );
    }
    let current = mcp::SecretKey::load(env.as_deref(), &path).map_err(anyhow::Error::msg)?;
    // A staged key from an interrupted run is reused, so rows it already sealed still open.
    let new = match std::fs::read_to_string(&staged) {
        Ok(text) => mcp::SecretKey::parse(&text).map_err(anyhow::Error::msg)?,
        Err(_) => {
            let key = mcp::SecretKey::generate()?;
            mcp::secret::write_private(&staged, &key.encoded())
                .with_context(|| format!("cannot write {}", staged.display()))?;
            key
        }
    };
    let url = args
        .database_url
        .unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("flywheel.db").display()));
    let store = store::open(&url)
        .await
        .context("cannot open the database")?;
    let sealer = mcp::Sealer::new(new.clone(), Some(current.clone()));
    let changed = mcp::reseal_all(store.as_ref(), &sealer).await?;
    let groups = gateway::reseal_groups(store.as_ref(), &sealer)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reseal the model groups' keys: {e}"))?;
    if groups > 0 {
        eprintln!("resealed the member keys of {groups} model groups");
    }
    let webhooks = tenancy::reseal_webhook_secrets(store.as_ref(), &sealer, true)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reseal the budget webhooks' secrets: {e}"))?;
    if webhooks > 0 {
        eprintln!("resealed the budget webhook secrets of {webhooks} tenants");
    }
    store.close().await;
    if from_env {
        let _ = std::fs::remove_file(&staged);
        println!("{}", new.encoded());
        eprintln!(
            "resealed {changed} MCP servers' secrets under key {}; the new key is printed above: set it as FLYWHEEL_SECRET_KEY on every process and restart them",
            new.id()
        );
        return Ok(());
    }
    let old = args.data_dir.join("secret.key.old");
    std::fs::copy(&path, &old).with_context(|| format!("cannot keep {}", old.display()))?;
    std::fs::rename(&staged, &path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    eprintln!(
        "resealed {changed} MCP servers' secrets: key {} replaced by {} in {} (the old one is in {}); restart every process with the new key",
        current.id(),
        new.id(),
        path.display(),
        old.display()
    );
    Ok(())
}
