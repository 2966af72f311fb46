//! A succeeded job's adapter in the hub: one repository per fine-tuned model of a tenant,
//! `ORG/BASE-SUFFIX` (`BASE-ft` without a suffix), private, in the tenant's oldest org; a
//! tenant with no org gets one named after it. Each job is a revision of that repository's
//! `main`, tagged with the job's id, holding `adapter.gguf` and a `README.md` card. It is
//! committed as the tenant (its hub quota applies), so the tenant pulls it like any model
//! (`flywheel pull`, `huggingface_hub`), and the server serves the fine-tuned model from that
//! revision: `BASE_SPEC+lora:hub:ORG/NAME@JOBID#adapter.gguf`.

use hub::path::RepoId;
use hub::{Access, HubError, LocalFile};
use store::FineTuningJob;

use super::runner::adapter_path;
use super::{Inner, JobsConfig};

/// The adapter's file name in its revision.
pub const ADAPTER_FILE: &str = "adapter.gguf";

/// The model SPEC a succeeded job's adapter is served from: its hub revision
/// (`hub:ORG/NAME@JOBID#adapter.gguf`) once committed, else the job directory's file.
pub(crate) fn served_adapter(config: &JobsConfig, job: &FineTuningJob) -> String {
    match &job.hub_repo {
        Some(repo) => format!("hub:{repo}@{}#{ADAPTER_FILE}", job.id),
        None => adapter_path(config, &job.id).display().to_string(),
    }
}

/// `[A-Za-z0-9._-]`, other characters as `-`, starting with a letter or digit, at most `max`
/// characters, never empty.
fn hub_name(raw: &str, max: usize) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    let name = name.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let name: String = name.chars().take(max).collect();
    if name.is_empty() {
        "ft".to_owned()
    } else {
        name
    }
}

/// The repository name of a fine-tuned model.
pub(crate) fn repo_name(base: &str, suffix: Option<&str>) -> String {
    let suffix = suffix.filter(|s| !s.is_empty()).unwrap_or("ft");
    hub_name(&format!("{base}-{suffix}"), 96)
}

/// The tenant's org for its fine-tunes: its oldest, or a new one named after it.
async fn org(inner: &Inner, tenant_id: &str, tenant_name: &str) -> Result<String, String> {
    let directory = &inner.tenancy.directory;
    let mut orgs = directory.orgs(tenant_id).await.map_err(|e| e.to_string())?;
    orgs.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
    if let Some(org) = orgs.into_iter().next() {
        return Ok(org.name);
    }
    let name = hub_name(tenant_name, 48);
    let tail: String = tenant_id
        .chars()
        .rev()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let mut last = String::new();
    for candidate in [name.clone(), format!("{name}-{tail}")] {
        match directory.create_org(tenant_id, &candidate).await {
            Ok(org) => {
                tracing::info!(tenant = %tenant_id, org = %org.name, "created an org for a tenant's fine-tuned models");
                return Ok(org.name);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("no org could be made for the tenant: {last}"))
}

/// The card of a job's revision.
fn card(job: &FineTuningJob, name: &str, trained: i64) -> String {
    let hyper = serde_json::from_str::<serde_json::Value>(&job.hyperparameters)
        .unwrap_or(serde_json::Value::Null);
    format!(
        "---\nlibrary_name: flywheel\nbase_model: {base}\ntags:\n- lora\n- fine-tuned\n---\n\n\
         # {name}\n\nA LoRA adapter (GGUF, `adapter.type = lora`) for `{base}`, trained by \
         fine-tuning job `{id}` on {trained} tokens with hyperparameters `{hyper}`.\n\n\
         Serve it on its base model with `flywheel serve --model \
         'BASE.gguf+lora:{ADAPTER_FILE}=NAME'`, or llama.cpp's `--lora {ADAPTER_FILE}`. On the \
         server that trained it, it is the model `{name}`.\n",
        base = job.model,
        id = job.id,
    )
}

/// Commits the adapter of succeeded `job` (model `name`) to the hub; its repository (the
/// revision is tagged with the job's id).
pub(crate) async fn store(
    inner: &Inner,
    job: &FineTuningJob,
    name: &str,
    trained: i64,
) -> Result<RepoId, String> {
    let hub = inner.files.hub();
    let tenant = inner
        .tenancy
        .directory
        .tenant(&job.tenant_id)
        .await
        .map_err(|e| e.to_string())?;
    let access = Access::Tenant {
        tenant_id: tenant.id.clone(),
        tenant_name: tenant.name.clone(),
        read: true,
        write: true,
    };
    let org = org(inner, &tenant.id, &tenant.name).await?;
    let repo = RepoId::new(&org, &repo_name(&job.model, job.suffix.as_deref()))
        .map_err(|e| e.to_string())?;
    match hub.create_repo(&access, &repo, true).await {
        Ok(_) | Err(HubError::Conflict(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    let dir = super::runner::job_dir(&inner.config, &job.id);
    let readme = dir.join("README.md");
    tokio::fs::write(&readme, card(job, name, trained))
        .await
        .map_err(|e| format!("{}: {e}", readme.display()))?;
    let files = [
        LocalFile {
            path: ADAPTER_FILE.to_owned(),
            source: adapter_path(&inner.config, &job.id),
        },
        LocalFile {
            path: "README.md".to_owned(),
            source: readme,
        },
    ];
    let message = format!("Fine-tuning job {}: {name}", job.id);
    let commit = hub
        .commit_local(&access, &repo, "main", &message, &files)
        .await
        .map_err(|e| e.to_string())?;
    match hub.tag(&access, &repo, &job.id, &commit.id).await {
        Ok(_) => {}
        // Tagged by an earlier attempt of this job (a restart between tag and status).
        Err(HubError::Conflict(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(repo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_valid_hub_names() {
        assert_eq!(repo_name("smol", Some("codeword")), "smol-codeword");
        assert_eq!(repo_name("smol", None), "smol-ft");
        assert_eq!(
            repo_name("Qwen/Qwen2.5 0.5B", Some("x")),
            "Qwen-Qwen2.5-0.5B-x"
        );
        assert_eq!(repo_name("..a", Some("")), "a-ft");
        assert_eq!(hub_name("", 10), "ft");
        assert_eq!(hub_name("__", 10), "ft");
        assert_eq!(hub_name("a..b", 10), "a.b");
        let long = repo_name(&"m".repeat(200), None);
        assert_eq!(long.len(), 96);
        for name in [
            repo_name("ü:ber", Some("ä")),
            hub_name("Ünïcode tenant", 48),
        ] {
            RepoId::new("org", &name).expect(&name);
        }
    }
}
