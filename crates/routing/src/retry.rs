//! What a member's failure before the first byte means for the request: try another member
//! (it may be the member, not the request: a connection error, 429, 5xx, an overloaded or
//! unavailable deployment), go straight to the fallbacks (the prompt does not fit this
//! group's context), or stop (the request itself is wrong; every member would refuse it).

use std::time::Duration;

use backend::BackendError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Another member may serve it; the failed one asked to be left alone this long.
    Retry { retry_after: Option<Duration> },
    /// Too long for this group's members: the fallbacks (a larger context) may take it.
    Fallback,
    /// The answer to give the client.
    Fail,
}

/// The decision for `error`, returned by a member before any byte of its answer.
pub fn decide(error: &BackendError) -> Decision {
    let seconds = |s: u64| Some(Duration::from_secs(s));
    match error {
        BackendError::Unreachable(_)
        | BackendError::Unavailable(_)
        | BackendError::ShuttingDown => Decision::Retry { retry_after: None },
        BackendError::Overloaded { retry_after, .. }
        | BackendError::QueueTimeout { retry_after, .. }
        | BackendError::QueueShareExceeded { retry_after, .. } => Decision::Retry {
            retry_after: seconds(*retry_after),
        },
        BackendError::ContextLengthExceeded { .. } => Decision::Fallback,
        BackendError::Upstream(e) if e.code.as_deref() == Some("context_length_exceeded") => {
            Decision::Fallback
        }
        BackendError::Upstream(e) if e.status == 429 || e.status >= 500 => Decision::Retry {
            retry_after: e.retry_after.and_then(seconds),
        },
        BackendError::Upstream(_)
        | BackendError::InvalidPrompt(_)
        | BackendError::ToolsUnsupported(_)
        | BackendError::UnsupportedSchema { .. }
        | BackendError::InvalidRequest { .. }
        | BackendError::Internal(_) => Decision::Fail,
    }
}

/// The pause before attempt `attempt` (2 for the first retry): 25 ms doubling, at most
/// 400 ms. A member's `Retry-After` rests that member; the next one is another.
pub fn backoff(attempt: u32) -> Duration {
    let step = attempt.saturating_sub(2).min(4);
    Duration::from_millis(25 << step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend::UpstreamError;

    fn upstream(status: u16, code: Option<&str>, retry_after: Option<u64>) -> BackendError {
        BackendError::Upstream(UpstreamError {
            status,
            message: "m".into(),
            r#type: None,
            code: code.map(Into::into),
            param: None,
            retry_after,
        })
    }

    #[test]
    fn member_faults_are_retried_request_faults_are_not() {
        assert_eq!(
            decide(&upstream(429, None, Some(3))),
            Decision::Retry {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            decide(&upstream(500, None, None)),
            Decision::Retry { retry_after: None }
        );
        assert_eq!(
            decide(&upstream(503, None, None)),
            Decision::Retry { retry_after: None }
        );
        assert_eq!(
            decide(&BackendError::Unreachable("refused".into())),
            Decision::Retry { retry_after: None }
        );
        assert_eq!(
            decide(&BackendError::Overloaded {
                queued: 3,
                retry_after: 2
            }),
            Decision::Retry {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(decide(&upstream(400, None, None)), Decision::Fail);
        assert_eq!(decide(&upstream(404, None, None)), Decision::Fail);
        assert_eq!(
            decide(&BackendError::InvalidRequest {
                message: "x".into(),
                field: None
            }),
            Decision::Fail
        );
    }

    #[test]
    fn context_overflow_goes_to_the_fallbacks() {
        assert_eq!(
            decide(&upstream(400, Some("context_length_exceeded"), None)),
            Decision::Fallback
        );
        assert_eq!(
            decide(&BackendError::ContextLengthExceeded {
                prompt_tokens: 9,
                context_length: 8
            }),
            Decision::Fallback
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let ms: Vec<u128> = (2..9).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(ms, [25, 50, 100, 200, 400, 400, 400]);
    }
}
