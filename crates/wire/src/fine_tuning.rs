//! The fine-tuning API's wire shapes (`/v1/fine_tuning/jobs`): the create body, the list
//! queries, OpenAI's `fine_tuning.job`, `fine_tuning.job.event` and
//! `fine_tuning.job.checkpoint` objects, and the mapping of `finetune::jobs::JobError`.

use finetune::jobs::store_types::{
    FineTuningCheckpointPage, FineTuningEventPage, FineTuningJob, FineTuningJobPage,
};
use finetune::jobs::validate::{self, RequestedHyperparameters, Setting};
use finetune::jobs::{Hyperparameters, JobError, NewJob};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ApiError, Code, Result};
use crate::validate::{parse_object, Fields};

/// `POST /v1/fine_tuning/jobs`.
pub fn create(body: &[u8]) -> Result<NewJob> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&[
        "model",
        "training_file",
        "validation_file",
        "hyperparameters",
        "suffix",
        "seed",
        "method",
        "metadata",
        "integrations",
    ])?;
    if fields
        .get("integrations")
        .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(ApiError::invalid(
            "integrations",
            "This server has no fine-tuning integrations; leave 'integrations' out.",
        ));
    }
    let mut hyperparameters = match fields.object("hyperparameters")? {
        Some(h) => Some(hyper(&Fields::nested(h, "hyperparameters".into()))?),
        None => None,
    };
    if let Some(method) = fields.object("method")? {
        let method = Fields::nested(method, "method".into());
        method.deny_unknown(&["type", "supervised"])?;
        let kind = method.required_string("type")?;
        if kind != "supervised" {
            return Err(ApiError::invalid(
                "method.type",
                format!(
                    "Invalid 'method.type': '{}'. This server trains LoRA adapters with \
                     'supervised' fine-tuning only.",
                    kind.chars().take(50).collect::<String>()
                ),
            ));
        }
        if let Some(supervised) = method.object("supervised")? {
            let supervised = Fields::nested(supervised, "method.supervised".into());
            supervised.deny_unknown(&["hyperparameters"])?;
            if let Some(h) = supervised.object("hyperparameters")? {
                if hyperparameters.is_some() {
                    return Err(ApiError::invalid(
                        "method.supervised.hyperparameters",
                        "Give hyperparameters either at the top level or in \
                         'method.supervised', not both.",
                    ));
                }
                let path = "method.supervised.hyperparameters".to_owned();
                hyperparameters = Some(hyper(&Fields::nested(h, path))?);
            }
        }
    }
    Ok(NewJob {
        model: fields.required_string("model")?.to_owned(),
        training_file: fields.required_string("training_file")?.to_owned(),
        validation_file: fields.string("validation_file")?.map(str::to_owned),
        hyperparameters: hyperparameters.unwrap_or_default(),
        suffix: fields.string("suffix")?.map(str::to_owned),
        seed: fields.integer("seed", 0, i64::from(i32::MAX))?,
        metadata: crate::batches::metadata(&fields)?,
    })
}

/// One hyperparameter: `"auto"` or a number.
fn setting<T>(
    fields: &Fields<'_>,
    key: &str,
    read: impl Fn(&Value) -> Option<T>,
) -> Result<Setting<T>> {
    match fields.get(key) {
        None => Ok(Setting::Auto),
        Some(Value::String(s)) if s == "auto" => Ok(Setting::Auto),
        Some(v) => read(v).map(Setting::Value).ok_or_else(|| {
            let param = fields.param(key);
            ApiError::invalid(
                param.clone(),
                format!("Invalid value for '{param}': expected \"auto\" or a number, got {v}."),
            )
        }),
    }
}

fn hyper(fields: &Fields<'_>) -> Result<RequestedHyperparameters> {
    fields.deny_unknown(&["n_epochs", "batch_size", "learning_rate_multiplier"])?;
    Ok(RequestedHyperparameters {
        n_epochs: setting(fields, "n_epochs", Value::as_i64)?,
        batch_size: setting(fields, "batch_size", Value::as_i64)?,
        learning_rate_multiplier: setting(fields, "learning_rate_multiplier", Value::as_f64)?,
    })
}

/// The list queries (jobs, events, checkpoints): `after` and `limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// OpenAI's `error` of a job.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobErrorView {
    pub code: String,
    pub message: String,
    pub param: Option<String>,
}

/// OpenAI's `fine_tuning.job`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub error: Option<JobErrorView>,
    pub fine_tuned_model: Option<String>,
    pub finished_at: Option<i64>,
    pub hyperparameters: Option<Hyperparameters>,
    pub model: String,
    pub organization_id: String,
    pub result_files: Vec<String>,
    pub seed: i64,
    pub status: String,
    pub trained_tokens: Option<i64>,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub estimated_finish: Option<i64>,
    pub integrations: Vec<Value>,
    pub suffix: Option<String>,
    pub metadata: Option<Value>,
    pub method: Value,
    /// Flywheel's: where the adapter is in the hub (`{"repo", "revision", "file"}`), once the
    /// job succeeded and it was committed; pull it like any model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<Value>,
}

impl From<FineTuningJob> for JobView {
    fn from(j: FineTuningJob) -> Self {
        let hyperparameters = Hyperparameters::from_json(&j.hyperparameters);
        Self {
            object: "fine_tuning.job",
            created_at: j.created_at.timestamp(),
            error: j
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str::<Value>(e).ok())
                .map(|e| JobErrorView {
                    code: e["code"].as_str().unwrap_or("internal_error").to_owned(),
                    message: e["message"].as_str().unwrap_or_default().to_owned(),
                    param: e["param"].as_str().map(str::to_owned),
                }),
            finished_at: j.finished_at.map(|t| t.timestamp()),
            estimated_finish: j.estimated_finish.map(|t| t.timestamp()),
            method: serde_json::json!({
                "type": "supervised",
                "supervised": {"hyperparameters": hyperparameters},
            }),
            hyperparameters,
            organization_id: j.tenant_id,
            result_files: Vec::new(),
            integrations: Vec::new(),
            metadata: j
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok()),
            hub: j.hub_repo.map(|repo| {
                serde_json::json!({"repo": repo, "revision": j.id, "file": finetune::jobs::ADAPTER_FILE})
            }),
            id: j.id,
            fine_tuned_model: j.fine_tuned_model,
            model: j.model,
            seed: j.seed,
            status: j.status,
            trained_tokens: j.trained_tokens,
            training_file: j.training_file,
            validation_file: j.validation_file,
            suffix: j.suffix,
        }
    }
}

/// A page of jobs, in OpenAI's list shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobListView {
    pub object: &'static str,
    pub data: Vec<JobView>,
    pub has_more: bool,
}

impl JobListView {
    pub fn new(page: FineTuningJobPage) -> Self {
        Self {
            object: "list",
            data: page.jobs.into_iter().map(JobView::from).collect(),
            has_more: page.has_more,
        }
    }
}

/// OpenAI's `fine_tuning.job.event`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventView {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub level: String,
    pub message: String,
    /// `metrics` for a step's progress, else `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub data: Option<Value>,
}

/// A page of a job's events, newest first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventListView {
    pub object: &'static str,
    pub data: Vec<EventView>,
    pub has_more: bool,
}

impl EventListView {
    pub fn new(job_id: &str, page: FineTuningEventPage) -> Self {
        let data = page
            .events
            .into_iter()
            .map(|e| {
                let data = e.data.as_deref().and_then(|d| serde_json::from_str(d).ok());
                EventView {
                    id: validate::event_id(job_id, e.seq),
                    object: "fine_tuning.job.event",
                    created_at: e.created_at.timestamp(),
                    level: e.level,
                    message: e.message,
                    // A step's figures are `metrics`; anything else (a resume, with its
                    // `resumed_from_step`) is a `message`, its data kept.
                    kind: if data
                        .as_ref()
                        .is_some_and(|d: &Value| d.get("step").is_some())
                    {
                        "metrics"
                    } else {
                        "message"
                    },
                    data,
                }
            })
            .collect();
        Self {
            object: "list",
            data,
            has_more: page.has_more,
        }
    }
}

/// OpenAI's `fine_tuning.job.checkpoint`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckpointView {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub fine_tuned_model_checkpoint: String,
    pub fine_tuning_job_id: String,
    pub metrics: Value,
    pub step_number: i64,
}

/// A page of a job's checkpoints, newest first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckpointListView {
    pub object: &'static str,
    pub data: Vec<CheckpointView>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl CheckpointListView {
    /// `model`: the job's fine-tuned model's name (as it will be named while it runs).
    pub fn new(job_id: &str, model: &str, page: FineTuningCheckpointPage) -> Self {
        let data: Vec<CheckpointView> = page
            .checkpoints
            .into_iter()
            .map(|c| CheckpointView {
                id: validate::checkpoint_id(job_id, c.step),
                object: "fine_tuning.job.checkpoint",
                created_at: c.created_at.timestamp(),
                fine_tuned_model_checkpoint: validate::checkpoint_model(model, c.step),
                fine_tuning_job_id: job_id.to_owned(),
                metrics: serde_json::from_str(&c.metrics).unwrap_or(Value::Null),
                step_number: c.step,
            })
            .collect();
        Self {
            object: "list",
            first_id: data.first().map(|c| c.id.clone()),
            last_id: data.last().map(|c| c.id.clone()),
            data,
            has_more: page.has_more,
        }
    }
}

impl ApiError {
    /// Maps a fine-tuning refusal. Internal failures say nothing of their cause; the caller
    /// logs them.
    pub fn from_fine_tuning(err: JobError) -> Self {
        let message = err.to_string();
        match err {
            JobError::Invalid { param, .. } => Self::invalid(param, message),
            JobError::NotFound(_) => {
                Self::new(Code::NotFound, message).with_param("fine_tuning_job_id")
            }
            JobError::Model(_) => Self::new(Code::ModelNotFound, message).with_param("model"),
            JobError::TooManyJobs(_) => {
                Self::new(Code::RateLimitExceeded, message).with_retry_after(60)
            }
            JobError::Conflict(_) => Self::new(Code::Conflict, message),
            JobError::Tenancy(e) => Self::from_tenancy(e),
            JobError::Files(files::FilesError::NotFound(id)) => {
                Self::new(Code::NotFound, format!("No such File object: {id}"))
                    .with_param("training_file")
            }
            JobError::Files(_) | JobError::Store(_) | JobError::Internal(_) => Self::new(
                Code::Internal,
                "The fine-tuning job could not be read or stored; try again.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_are_read_strictly() {
        let ok = br#"{"model":"smol","training_file":"file-1","suffix":"cw","seed":3,
            "method":{"type":"supervised","supervised":{"hyperparameters":{"n_epochs":2,"batch_size":"auto","learning_rate_multiplier":0.5}}}}"#;
        let new = create(ok).expect("valid");
        assert_eq!(new.model, "smol");
        assert_eq!(new.seed, Some(3));
        assert_eq!(new.hyperparameters.n_epochs, Setting::Value(2));
        assert_eq!(new.hyperparameters.batch_size, Setting::Auto);
        assert_eq!(
            new.hyperparameters.learning_rate_multiplier,
            Setting::Value(0.5)
        );
        let top = br#"{"model":"smol","training_file":"f","hyperparameters":{"n_epochs":1}}"#;
        assert_eq!(
            create(top).expect("top level").hyperparameters.n_epochs,
            Setting::Value(1)
        );
        for (body, param) in [
            (&br#"{"training_file":"f"}"#[..], "model"),
            (br#"{"model":"m"}"#, "training_file"),
            (br#"{"model":"m","training_file":"f","x":1}"#, "x"),
            (br#"{"model":"m","training_file":"f","method":{"type":"dpo"}}"#, "method.type"),
            (br#"{"model":"m","training_file":"f","hyperparameters":{"n_epochs":"many"}}"#, "hyperparameters.n_epochs"),
            (br#"{"model":"m","training_file":"f","hyperparameters":{"epochs":1}}"#, "hyperparameters.epochs"),
            (br#"{"model":"m","training_file":"f","hyperparameters":{},"method":{"type":"supervised","supervised":{"hyperparameters":{}}}}"#, "method.supervised.hyperparameters"),
            (br#"{"model":"m","training_file":"f","seed":-1}"#, "seed"),
            (br#"{"model":"m","training_file":"f","integrations":[{"type":"wandb"}]}"#, "integrations"),
        ] {
            let err = create(body).expect_err("refused");
            assert_eq!(err.param(), Some(param), "{}", String::from_utf8_lossy(body));
        }
    }
}
