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
    /// Lines of one batch running at once [default: 4].
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
        let config = batch::BatchConfig {
            window_max,
            concurrency: self.batch_concurrency.unwrap_or(d.concurrency),
            max_lines: self.batch_max_lines.unwrap_or(d.max_lines),
            max_input_bytes: self.batch_max_input_bytes.unwrap_or(d.max_input_bytes),
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
        assert_eq!(
            BatchArgs::default().resolve().expect("defaults"),
            batch::BatchConfig::default()
        );
    }
}
