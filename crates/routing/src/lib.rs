//! Model groups: one served name in front of several members — local deployments and/or
//! upstream OpenAI-compatible servers (several base URLs, several API keys of one provider) —
//! each with a weight and optional RPM/TPM of its own. A request to the group goes to one
//! member by the group's [`Strategy`]; a member that fails *before the first byte* of its
//! answer (connection error, 429, 5xx, an overloaded deployment) is rested and another member
//! is tried (at most [`MAX_ATTEMPTS`], with a short backoff), then the group's fallbacks in
//! order (straight away when the prompt exceeds the members' context). Nothing is retried
//! after the first byte. A member failing repeatedly is taken out by its circuit breaker and
//! probed back in ([`breaker`]).
//!
//! A [`Group`] holds the members' live state for the life of its definition; a [`Route`] is
//! one request's view of it (the deployments and fallbacks resolved by the caller's catalog
//! at that moment) and is the [`backend::Backend`] the serving layer calls, so admission and
//! metering see one request with one usage whatever happened inside. No HTTP here beyond the
//! upstream members' own client.

pub mod breaker;
mod group;
pub mod pick;
pub mod retry;

pub use breaker::Policy;
pub use group::{Group, Report, Route, Routed};
pub use pick::Strategy;

/// Attempts on members per request, at most (fallbacks come after these).
pub const MAX_ATTEMPTS: usize = 3;
/// Members per group, at most.
pub const MAX_MEMBERS: usize = 64;
/// Aliases and fallbacks per group, at most.
pub const MAX_NAMES: usize = 32;
/// The largest member weight.
pub const MAX_WEIGHT: u32 = 10_000;

/// What a member is.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// An external OpenAI-compatible server. `api_key` is write-only: never shown, stored
    /// sealed.
    Upstream {
        base_url: String,
        api_key: Option<String>,
        /// The upstream's model id; defaults to the group's name.
        model: Option<String>,
    },
    /// A local deployment (or a fixed backend) by its served name.
    Deployment(String),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Upstream {
                base_url,
                api_key,
                model,
            } => f
                .debug_struct("Upstream")
                .field("base_url", base_url)
                .field("api_key", &api_key.as_ref().map(|_| "<redacted>"))
                .field("model", model)
                .finish(),
            Target::Deployment(name) => f.debug_tuple("Deployment").field(name).finish(),
        }
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub target: Target,
    /// Its share under the weighted strategy (1 to [`MAX_WEIGHT`]).
    pub weight: u32,
    /// Requests per minute it takes (an upstream key's limit), counted in this process.
    pub rpm: Option<u32>,
    /// Tokens per minute it takes, counted in this process.
    pub tpm: Option<u64>,
}

/// A group's definition, as the admin route takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// The served name.
    pub name: String,
    pub members: Vec<Member>,
    pub strategy: Strategy,
    /// Groups or models tried in order once the members failed (or the prompt exceeded their
    /// context).
    pub fallbacks: Vec<String>,
    /// Other names that address this group.
    pub aliases: Vec<String>,
}

/// A definition that cannot be served, with the field at fault (`members[1].weight`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub message: String,
    pub param: String,
}

impl SpecError {
    fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            param: param.into(),
        }
    }
}

/// Whether `name` can be a served name, an alias or a fallback: 1–128 characters of
/// letters, digits and `-_.:/@`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c))
}

impl GroupSpec {
    /// Checks what can be checked without the catalog (names, counts, weights, URLs).
    pub fn validate(&self) -> Result<(), SpecError> {
        if !valid_name(&self.name) {
            return Err(SpecError::new(
                "name",
                format!(
                    "'{}' is not a valid model name: use 1-128 letters, digits and -_.:/@",
                    self.name
                ),
            ));
        }
        if self.members.is_empty() || self.members.len() > MAX_MEMBERS {
            return Err(SpecError::new(
                "members",
                format!(
                    "a group has 1 to {MAX_MEMBERS} members; this one has {}",
                    self.members.len()
                ),
            ));
        }
        for (i, m) in self.members.iter().enumerate() {
            if m.weight == 0 || m.weight > MAX_WEIGHT {
                return Err(SpecError::new(
                    format!("members[{i}].weight"),
                    format!("weight must be 1 to {MAX_WEIGHT}; got {}", m.weight),
                ));
            }
            if m.rpm == Some(0) || m.tpm == Some(0) {
                return Err(SpecError::new(
                    format!("members[{i}]"),
                    "rpm and tpm must be positive when set",
                ));
            }
            match &m.target {
                Target::Deployment(name) if name == &self.name => {
                    return Err(SpecError::new(
                        format!("members[{i}].deployment"),
                        "a group cannot be its own member",
                    ))
                }
                Target::Deployment(name) if !valid_name(name) => {
                    return Err(SpecError::new(
                        format!("members[{i}].deployment"),
                        format!("'{name}' is not a valid model name"),
                    ))
                }
                Target::Deployment(_) => {}
                Target::Upstream { base_url, .. } => {
                    group::upstream_config(&self.name, m).map_err(|e| {
                        SpecError::new(format!("members[{i}].upstream.base_url"), e)
                    })?;
                    if base_url.len() > 2048 {
                        return Err(SpecError::new(
                            format!("members[{i}].upstream.base_url"),
                            "base_url is longer than 2048 characters",
                        ));
                    }
                }
            }
        }
        for (field, names) in [("fallbacks", &self.fallbacks), ("aliases", &self.aliases)] {
            if names.len() > MAX_NAMES {
                return Err(SpecError::new(field, format!("at most {MAX_NAMES} names")));
            }
            for (i, n) in names.iter().enumerate() {
                if !valid_name(n) {
                    return Err(SpecError::new(
                        format!("{field}[{i}]"),
                        format!("'{n}' is not a valid model name"),
                    ));
                }
                if n == &self.name {
                    return Err(SpecError::new(
                        format!("{field}[{i}]"),
                        "a group cannot name itself here",
                    ));
                }
                if names[..i].contains(n) {
                    return Err(SpecError::new(
                        format!("{field}[{i}]"),
                        format!("'{n}' is listed twice"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The label logs show for member `i`: `upstream#i` (never its address) or the
    /// deployment's name.
    pub fn member_label(&self, i: usize) -> String {
        match self.members.get(i).map(|m| &m.target) {
            Some(Target::Deployment(name)) => name.clone(),
            _ => format!("upstream#{i}"),
        }
    }
}
