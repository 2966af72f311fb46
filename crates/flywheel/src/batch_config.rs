//! `flywheel serve` settings of the Batch API (flags, environment, or a `[batch]` table in the
//! config file).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

/// Flags of the Batch API; in the config file, the keys of the `[batch]` table (without
/// `batch_`).
#[derive(Debug, Args, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchArgs {
    /// The longest a batch runs before it expires, its unfinished lines failed as
    /// `batch_expired` and its partial results kept: a duration such as `24h`, `90m` or `30s`
    /// (at most and by default 24h, the `completion_window`).
    #[arg(long, env = "FLYWHEEL_BATCH_WINDOW_MAX")]
    #[serde(rename = "window_max")]
    pub batch_window_max: Option<String>,
    /// Lines of one batch running at once, at least: more when the deployment serving its
    /// model has more slots [default: 4].
    #[arg(long, env = "FLYWHEEL_BATCH_CONCURRENCY")]
    #[serde(rename = "concurrency")]
    pub batch_concurrency: Option<usize>,
    /// Most requests in one batch's input file [default: 50000].
    #[arg(long, env = "FLYWHEEL_BATCH_MAX_LINES")]
    #[serde(rename = "max_lines")]
    pub batch_max_lines: Option<usize>,
    /// Largest input file of a batch, in bytes [default: 200 MiB].
    #[arg(long, env = "FLYWHEEL_BATCH_MAX_INPUT_BYTES")]
    #[serde(rename = "max_input_bytes")]
    pub batch_max_input_bytes: Option<u64>,
    /// How long a process's lease on a running batch lasts unless renewed (renewed every
    /// third of it): when a process sharing the database dies, another takes its batches over
    /// within about this long. A duration such as `30s` or `2m`, from 1s to 1h [default: 30s].
    #[arg(long, env = "FLYWHEEL_BATCH_LEASE")]
    #[serde(rename = "lease")]
    pub batch_lease: Option<String>,
    /// Most estimated tokens one tenant's unfinished batches may hold in lines not yet run
    /// (body bytes / 4 plus `max_tokens`); a batch that would pass it is refused at creation
    /// (429 `token_limit_exceeded`); 0 for no limit [default: 20000000].
    #[arg(long, env = "FLYWHEEL_BATCH_MAX_ENQUEUED_TOKENS")]
    #[serde(rename = "max_enqueued_tokens")]
    pub batch_max_enqueued_tokens: Option<u64>,
}

/// `30s`, `90m`, `24h`, or plain seconds.
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last()? {
        (i, 's') => (&text[..i], 1),
        (i, 'm') => (&text[..i], 60),
        (i, 'h') => (&text[..i], 3600),
        _ => (text, 1),
    };
    number
        .parse::<u64>()
        .ok()?
        .checked_mul(unit)
        .map(Duration::from_secs)
}

impl BatchArgs {
    /// These settings over the defaults, validated.
    pub fn resolve(&self) -> Result<batch::BatchConfig> {
        let d = batch::BatchConfig::default();
        let window_max = match &self.batch_window_max {
            None => d.window_max,
            Some(text) => match duration(text) {
                Some(window) if !window.is_zero() && window <= d.window_max => window,
                _ => bail!(
                    "--batch-window-max must be a duration from 1s to 24h such as 24h, 90m or \
                     30s, not '{text}'"
                ),
            },
        };
        let lease = match &self.batch_lease {
            None => d.lease,
            Some(text) => match duration(text) {
                Some(lease)
                    if lease >= Duration::from_secs(1) && lease <= Duration::from_secs(3600) =>
                {
                    lease
                }
                _ => bail!(
                    "--batch-lease must be a duration from 1s to 1h such as 30s or 2m, not \
                     '{text}'"
                ),
            },
        };
        let max_enqueued_tokens = match self.batch_max_enqueued_tokens {
            None => d.max_enqueued_tokens,
            Some(0) => None,
            Some(limit) => Some(limit),
        };
        let config = batch::BatchConfig {
            window_max,
            concurrency: self.batch_concurrency.unwrap_or(d.concurrency),
            max_lines: self.batch_max_lines.unwrap_or(d.max_lines),
            max_input_bytes: self.batch_max_input_bytes.unwrap_or(d.max_input_bytes),
            lease,
            max_enqueued_tokens,
        };
        if !(1..=1024).contains(&config.concurrency) {
            bail!("--batch-concurrency must be between 1 and 1024");
        }
        if config.max_lines == 0 || config.max_input_bytes == 0 {
            bail!("--batch-max-lines and --batch-max-input-bytes must be positive");
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_are_bounded() {
        let args = |w: &str| BatchArgs {
            batch_window_max: Some(w.to_owned()),
            ..BatchArgs::default()
        };
        assert_eq!(
            args("30s").resolve().expect("30s").window_max,
            Duration::from_secs(30)
        );
        assert_eq!(
            args("90m").resolve().expect("90m").window_max,
            Duration::from_secs(5400)
        );
        assert_eq!(
            args("24h").resolve().expect("24h").window_max,
            Duration::from_secs(86400)
        );
        for bad in ["25h", "0s", "x", ""] {
            assert!(args(bad).resolve().is_err(), "{bad}");
        }
        let lease = |l: &str| BatchArgs {
            batch_lease: Some(l.to_owned()),
            ..BatchArgs::default()
        };
        assert_eq!(
            lease("3s").resolve().expect("3s").lease,
            Duration::from_secs(3)
        );
        for bad in ["0s", "2h", "x"] {
            assert!(lease(bad).resolve().is_err(), "{bad}");
        }
        let tokens = |n: u64| BatchArgs {
            batch_max_enqueued_tokens: Some(n),
            ..BatchArgs::default()
        };
        assert_eq!(tokens(0).resolve().expect("0").max_enqueued_tokens, None);
        assert_eq!(
            tokens(500).resolve().expect("500").max_enqueued_tokens,
            Some(500)
        );
        assert_eq!(
            BatchArgs::default().resolve().expect("defaults"),
            batch::BatchConfig::default()
        );
    }
}
