//! The pure checks of a job request and the names a job gives things: hyperparameters within
//! the server's limits, the suffix, the fine-tuned model's name, the token bound reserved
//! before the file is tokenized, and the ids of events and checkpoints. The training file
//! itself is checked line by line by [`crate::data`] (shape, roles, an assistant answer last,
//! its tokens against the limit and the base model's context, the count of examples).

use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{JobError, Result};
use super::JobsConfig;

/// Tokens a chat template may add per example (role markers, turn ends) beyond its text.
pub const TEMPLATE_TOKENS: i64 = 64;

/// Most characters of a suffix.
pub const MAX_SUFFIX: usize = 40;

/// A hyperparameter as asked: a number, or `"auto"` (the server's choice).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting<T> {
    Auto,
    Value(T),
}

/// `hyperparameters` as the request gave them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestedHyperparameters {
    pub n_epochs: Setting<i64>,
    pub batch_size: Setting<i64>,
    pub learning_rate_multiplier: Setting<f64>,
}

impl Default for RequestedHyperparameters {
    fn default() -> Self {
        Self {
            n_epochs: Setting::Auto,
            batch_size: Setting::Auto,
            learning_rate_multiplier: Setting::Auto,
        }
    }
}

/// The hyperparameters a job runs with (stored as JSON, shown as OpenAI's
/// `hyperparameters`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hyperparameters {
    pub n_epochs: u32,
    pub batch_size: u32,
    pub learning_rate_multiplier: f64,
}

impl Hyperparameters {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// Largest batch a job may ask for.
pub const MAX_BATCH_SIZE: i64 = 64;
/// Largest learning-rate multiplier.
pub const MAX_LR_MULTIPLIER: f64 = 10.0;

impl RequestedHyperparameters {
    /// The values a job runs with: `auto` is 3 epochs (at most the server's maximum), a batch
    /// of 4, a multiplier of 1; given values are checked against the limits.
    pub fn resolve(&self, config: &JobsConfig) -> Result<Hyperparameters> {
        let max_epochs = i64::from(config.max_epochs.max(1));
        let n_epochs = match self.n_epochs {
            Setting::Auto => 3.min(max_epochs),
            Setting::Value(n) if (1..=max_epochs).contains(&n) => n,
            Setting::Value(n) => {
                return Err(JobError::invalid(
                    "hyperparameters.n_epochs",
                    format!("Invalid 'n_epochs': {n}; this server allows 1 to {max_epochs}."),
                ))
            }
        };
        let batch_size = match self.batch_size {
            Setting::Auto => 4,
            Setting::Value(n) if (1..=MAX_BATCH_SIZE).contains(&n) => n,
            Setting::Value(n) => {
                return Err(JobError::invalid(
                    "hyperparameters.batch_size",
                    format!("Invalid 'batch_size': {n}; expected 1 to {MAX_BATCH_SIZE}."),
                ))
            }
        };
        let learning_rate_multiplier = match self.learning_rate_multiplier {
            Setting::Auto => 1.0,
            Setting::Value(m) if m > 0.0 && m <= MAX_LR_MULTIPLIER => m,
            Setting::Value(m) => {
                return Err(JobError::invalid(
                    "hyperparameters.learning_rate_multiplier",
                    format!(
                        "Invalid 'learning_rate_multiplier': {m}; expected more than 0 and at \
                         most {MAX_LR_MULTIPLIER}."
                    ),
                ))
            }
        };
        Ok(Hyperparameters {
            n_epochs: u32::try_from(n_epochs).unwrap_or(1),
            batch_size: u32::try_from(batch_size).unwrap_or(1),
            learning_rate_multiplier,
        })
    }
}

/// The suffix, checked: at most [`MAX_SUFFIX`] letters, digits, `-` and `_` (an empty one is
/// none).
pub fn suffix(suffix: Option<&str>) -> Result<Option<String>> {
    let Some(s) = suffix.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let ok = s.chars().count() <= MAX_SUFFIX
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(JobError::invalid(
            "suffix",
            format!(
                "Invalid 'suffix': use at most {MAX_SUFFIX} letters, digits, '-' and '_' (it \
                 becomes part of the model's name)."
            ),
        ));
    }
    Ok(Some(s.to_owned()))
}

/// The fine-tuned model's served name: `ft:BASE:SUFFIX:JOBID` (`ft:BASE::JOBID` without a
/// suffix), at most 128 characters (a served name's limit).
pub fn model_name(base: &str, suffix: Option<&str>, job_id: &str) -> Result<String> {
    let name = format!("ft:{base}:{}:{job_id}", suffix.unwrap_or(""));
    if name.len() > 128 {
        return Err(JobError::invalid(
            "suffix",
            format!(
                "The fine-tuned model's name '{name}' would be longer than 128 characters; \
                 use a shorter suffix."
            ),
        ));
    }
    Ok(name)
}

/// The sizes the reservation made at creation is bounded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSize {
    pub bytes: u64,
    /// Non-empty lines (examples).
    pub lines: u64,
}

/// Non-empty lines of a file.
pub fn count_lines(path: &Path) -> std::io::Result<u64> {
    let reader = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut n = 0;
    for line in reader.split(b'\n') {
        if !line?.iter().all(u8::is_ascii_whitespace) {
            n += 1;
        }
    }
    Ok(n)
}

/// The most tokens a training file of `bytes` with `lines` examples can make over `epochs`:
/// no token is shorter than a byte, and the template adds at most [`TEMPLATE_TOKENS`] per
/// example.
pub fn token_bound(bytes: u64, lines: u64, epochs: u32) -> i64 {
    let per_epoch = i64::try_from(bytes).unwrap_or(i64::MAX).saturating_add(
        i64::try_from(lines)
            .unwrap_or(i64::MAX)
            .saturating_mul(TEMPLATE_TOKENS),
    );
    per_epoch.saturating_mul(i64::from(epochs.max(1)))
}

/// The id of event `seq` of a job: `ftevent-{job hex}-{seq}`.
pub fn event_id(job_id: &str, seq: i64) -> String {
    format!("ftevent-{}-{seq}", job_hex(job_id))
}

/// The id of the checkpoint of `step`: `ftckpt-{job hex}-{step}`.
pub fn checkpoint_id(job_id: &str, step: i64) -> String {
    format!("ftckpt-{}-{step}", job_hex(job_id))
}

/// The name a checkpoint's model is shown under (`…:ckpt-step-N`, as OpenAI names them).
pub fn checkpoint_model(fine_tuned_model: &str, step: i64) -> String {
    format!("{fine_tuned_model}:ckpt-step-{step}")
}

fn job_hex(job_id: &str) -> &str {
    job_id.strip_prefix("ftjob-").unwrap_or(job_id)
}

fn number_after(id: &str, prefix: &str) -> Option<i64> {
    id.strip_prefix(prefix)?
        .parse()
        .ok()
        .filter(|n: &i64| *n > 0)
}

/// The event number of `after`, an event id of this job.
pub fn event_seq(job_id: &str, after: &str) -> Result<i64> {
    number_after(after, &format!("ftevent-{}-", job_hex(job_id))).ok_or_else(|| {
        JobError::invalid(
            "after",
            format!("Invalid 'after': '{after}' is not an event of this job."),
        )
    })
}

/// The step of `after`, a checkpoint id of this job.
pub fn checkpoint_step(job_id: &str, after: &str) -> Result<i64> {
    number_after(after, &format!("ftckpt-{}-", job_hex(job_id))).ok_or_else(|| {
        JobError::invalid(
            "after",
            format!("Invalid 'after': '{after}' is not a checkpoint of this job."),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> JobsConfig {
        JobsConfig {
            max_epochs: 5,
            ..JobsConfig::default()
        }
    }

    #[test]
    fn auto_hyperparameters_resolve_within_the_limits() {
        let h = RequestedHyperparameters::default()
            .resolve(&config())
            .expect("auto");
        assert_eq!(
            h,
            Hyperparameters {
                n_epochs: 3,
                batch_size: 4,
                learning_rate_multiplier: 1.0
            }
        );
        let tight = JobsConfig {
            max_epochs: 1,
            ..JobsConfig::default()
        };
        assert_eq!(
            RequestedHyperparameters::default()
                .resolve(&tight)
                .expect("auto")
                .n_epochs,
            1
        );
        assert_eq!(Hyperparameters::from_json(&h.to_json()), Some(h));
    }

    #[test]
    fn hyperparameters_outside_the_limits_name_their_field() {
        let cases = [
            (
                RequestedHyperparameters {
                    n_epochs: Setting::Value(6),
                    ..Default::default()
                },
                "hyperparameters.n_epochs",
            ),
            (
                RequestedHyperparameters {
                    n_epochs: Setting::Value(0),
                    ..Default::default()
                },
                "hyperparameters.n_epochs",
            ),
            (
                RequestedHyperparameters {
                    batch_size: Setting::Value(65),
                    ..Default::default()
                },
                "hyperparameters.batch_size",
            ),
            (
                RequestedHyperparameters {
                    learning_rate_multiplier: Setting::Value(0.0),
                    ..Default::default()
                },
                "hyperparameters.learning_rate_multiplier",
            ),
        ];
        for (asked, param) in cases {
            match asked.resolve(&config()) {
                Err(JobError::Invalid { param: p, .. }) => assert_eq!(p, param),
                other => panic!("{asked:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn names_and_ids_round_trip() {
        assert_eq!(suffix(Some("")).expect("empty"), None);
        assert_eq!(
            suffix(Some("code_word-1")).expect("ok").as_deref(),
            Some("code_word-1")
        );
        assert!(suffix(Some("has:colon")).is_err());
        assert!(suffix(Some(&"x".repeat(41))).is_err());
        assert_eq!(
            model_name("smol", Some("cw"), "ftjob-abc").expect("name"),
            "ft:smol:cw:ftjob-abc"
        );
        assert_eq!(
            model_name("smol", None, "ftjob-abc").expect("name"),
            "ft:smol::ftjob-abc"
        );
        assert!(model_name(&"m".repeat(100), Some(&"s".repeat(40)), "ftjob-abc").is_err());
        let e = event_id("ftjob-abc", 7);
        assert_eq!(e, "ftevent-abc-7");
        assert_eq!(event_seq("ftjob-abc", &e).expect("seq"), 7);
        assert!(event_seq("ftjob-other", &e).is_err());
        assert!(event_seq("ftjob-abc", "ftevent-abc-x").is_err());
        let c = checkpoint_id("ftjob-abc", 20);
        assert_eq!(checkpoint_step("ftjob-abc", &c).expect("step"), 20);
        assert!(checkpoint_step("ftjob-abc", "ftckpt-abc-0").is_err());
    }

    #[test]
    fn the_token_bound_covers_every_byte_and_the_template() {
        assert_eq!(token_bound(1000, 10, 3), (1000 + 640) * 3);
        assert_eq!(token_bound(u64::MAX, u64::MAX, 10), i64::MAX);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, "{}\n\n  \n{}\n{}").expect("write");
        assert_eq!(count_lines(&path).expect("count"), 3);
    }
}
