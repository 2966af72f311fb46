//! The JSON of model groups (`PUT|GET|DELETE /admin/v1/models/{name}`) and of the request log
//! (`GET /v1/logs`, `GET /admin/v1/logs`). A group body is read strictly (an unknown field is a
//! 400 naming it); its stored form is the same JSON with each member's `api_key` replaced by
//! `api_key_sealed`, and its view shows neither (only whether a key is set).

use routing::{GroupSpec, Member, Strategy, Target};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Code, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBody {
    pub members: Vec<MemberBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBody {
    pub base_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Only in the stored form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("base_url", &self.base_url)
            .field(
                "api_key_set",
                &(self.api_key.is_some() || self.api_key_sealed.is_some()),
            )
            .field("model", &self.model)
            .finish()
    }
}

/// A `PUT /admin/v1/models/{name}` body. `api_key_sealed` is not accepted from clients.
pub fn parse_group(body: &[u8]) -> Result<GroupBody> {
    let group: GroupBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::InvalidRequest,
            format!("Invalid model group body: {e}."),
        )
    })?;
    for (i, m) in group.members.iter().enumerate() {
        if m.upstream
            .as_ref()
            .is_some_and(|u| u.api_key_sealed.is_some())
        {
            return Err(ApiError::invalid(
                format!("members[{i}].upstream.api_key_sealed"),
                "unknown field `api_key_sealed`; send the key as `api_key`",
            ));
        }
    }
    Ok(group)
}

/// The stored form read back (`api_key_sealed`, never `api_key`).
pub fn parse_stored(text: &str) -> std::result::Result<GroupBody, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// The group `name` of `body`, its members' keys opened with `open(sealed)` (stored form) or
/// taken as sent.
pub fn to_spec(
    name: &str,
    body: &GroupBody,
    mut open: impl FnMut(&str) -> std::result::Result<String, String>,
) -> Result<GroupSpec> {
    let strategy = match body.strategy.as_deref() {
        None => Strategy::default(),
        Some(s) => Strategy::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "strategy",
                format!("unknown strategy '{s}'; use weighted, least_busy or latency"),
            )
        })?,
    };
    let mut members = Vec::with_capacity(body.members.len());
    for (i, m) in body.members.iter().enumerate() {
        let target = match (&m.upstream, &m.deployment) {
            (Some(u), None) => {
                let api_key = match (&u.api_key, &u.api_key_sealed) {
                    (Some(key), _) => Some(key.clone()),
                    (None, Some(sealed)) => Some(open(sealed).map_err(|e| {
                        ApiError::new(
                            Code::Internal,
                            format!(
                                "the stored key of member {i} of '{name}' cannot be opened: {e}"
                            ),
                        )
                    })?),
                    (None, None) => None,
                };
                Target::Upstream {
                    base_url: u.base_url.clone(),
                    api_key,
                    model: u.model.clone(),
                }
            }
            (None, Some(d)) => Target::Deployment(d.clone()),
            _ => return Err(ApiError::invalid(
                format!("members[{i}]"),
                "a member is either {\"upstream\": {\"base_url\", …}} or {\"deployment\": NAME}",
            )),
        };
        members.push(Member {
            target,
            weight: m.weight.unwrap_or(1),
            rpm: m.rpm,
            tpm: m.tpm,
        });
    }
    let spec = GroupSpec {
        name: name.to_owned(),
        members,
        strategy,
        fallbacks: body.fallbacks.clone(),
        aliases: body.aliases.clone(),
    };
    spec.validate()
        .map_err(|e| ApiError::invalid(e.param, e.message))?;
    Ok(spec)
}

/// The stored form of `body`: each `api_key` replaced by `seal(key)`.
pub fn sealed(
    body: &GroupBody,
    mut seal: impl FnMut(&str) -> std::result::Result<String, String>,
) -> Result<GroupBody> {
    let mut stored = body.clone();
    for m in &mut stored.members {
        if let Some(u) = &mut m.upstream {
            if let Some(key) = u.api_key.take() {
                u.api_key_sealed = Some(seal(&key).map_err(|e| {
                    ApiError::new(
                        Code::Internal,
                        format!("the API key could not be sealed: {e}"),
                    )
                })?);
            }
        }
    }
    Ok(stored)
}

/// A group as the admin API shows it: no keys, only whether one is set.
#[derive(Debug, Serialize)]
pub struct GroupView {
    pub id: String,
    pub object: &'static str,
    pub members: Vec<MemberView>,
    pub strategy: &'static str,
    pub fallbacks: Vec<String>,
    pub aliases: Vec<String>,
    /// Members taken out by their circuit breaker now.
    pub open_circuits: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    /// The label the request log shows.
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    pub weight: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct UpstreamView {
    pub base_url: String,
    pub api_key_set: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl GroupView {
    pub fn new(group: &routing::Group) -> Self {
        let spec = group.spec();
        Self {
            id: spec.name.clone(),
            object: "model_group",
            members: spec
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let (upstream, deployment) = match &m.target {
                        Target::Upstream {
                            base_url,
                            api_key,
                            model,
                        } => (
                            Some(UpstreamView {
                                base_url: base_url.clone(),
                                api_key_set: api_key.is_some(),
                                model: model.clone(),
                            }),
                            None,
                        ),
                        Target::Deployment(d) => (None, Some(d.clone())),
                    };
                    MemberView {
                        label: spec.member_label(i),
                        upstream,
                        deployment,
                        weight: m.weight,
                        rpm: m.rpm,
                        tpm: m.tpm,
                    }
                })
                .collect(),
            strategy: spec.strategy.as_str(),
            fallbacks: spec.fallbacks.clone(),
            aliases: spec.aliases.clone(),
            open_circuits: group.open_circuits(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeletedGroupView {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

/// One logged request.
#[derive(Debug, Serialize)]
pub struct LogView {
    pub id: String,
    pub object: &'static str,
    /// Unix seconds.
    pub created_at: i64,
    pub tenant_id: String,
    pub key_prefix: String,
    pub model: String,
    pub member: Option<String>,
    pub status: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Micro-units charged.
    pub cost: i64,
    pub ttft_ms: Option<i64>,
    pub total_ms: i64,
    pub retries: i64,
}

impl From<store::RequestLogRecord> for LogView {
    fn from(r: store::RequestLogRecord) -> Self {
        Self {
            id: r.request_id,
            object: "request_log",
            created_at: r.created_at.timestamp(),
            tenant_id: r.tenant_id,
            key_prefix: r.key_prefix,
            model: r.model,
            member: r.member,
            status: r.status,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cost: r.cost,
            ttft_ms: r.ttft_ms,
            total_ms: r.total_ms,
            retries: r.retries,
        }
    }
}

/// A page of the log, newest first; `last_id` is the `after` of the next page.
#[derive(Debug, Serialize)]
pub struct LogPageView {
    pub object: &'static str,
    pub data: Vec<LogView>,
    pub has_more: bool,
    pub last_id: Option<String>,
}

impl From<store::LogPage> for LogPageView {
    fn from(page: store::LogPage) -> Self {
        let data: Vec<LogView> = page.logs.into_iter().map(LogView::from).collect();
        Self {
            object: "list",
            last_id: data.last().map(|l| l.id.clone()),
            data,
            has_more: page.has_more,
        }
    }
}

/// The query of `GET /v1/logs`: `model`, `status`, `since` and `until` (Unix seconds),
/// `limit` (1–1000, default 100), `after` (a request id from the previous page).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQueryParams {
    pub model: Option<String>,
    pub status: Option<i64>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: Option<i64>,
    pub after: Option<String>,
    /// Only on the operator's route.
    pub tenant: Option<String>,
}

/// The store's query for `tenant_id`.
pub fn log_query(tenant_id: &str, p: &LogQueryParams) -> Result<store::LogQuery> {
    let time = |param: &str, v: Option<i64>| -> Result<Option<store::Timestamp>> {
        v.map(|s| {
            chrono::DateTime::from_timestamp(s, 0).ok_or_else(|| {
                ApiError::invalid(param, format!("{s} is not a Unix time in seconds"))
            })
        })
        .transpose()
    };
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be 1 to 1000; got {limit}"),
        ));
    }
    if let Some(status) = p.status.filter(|s| !(100..=599).contains(s)) {
        return Err(ApiError::invalid(
            "status",
            format!("{status} is not an HTTP status"),
        ));
    }
    Ok(store::LogQuery {
        tenant_id: tenant_id.to_owned(),
        model: p.model.clone(),
        status: p.status,
        since: time("since", p.since)?,
        until: time("until", p.until)?,
        limit,
        after: p.after.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_strict_and_keys_are_sealed_away() {
        let body = br#"{"members":[{"upstream":{"base_url":"http://127.0.0.1:9/v1","api_key":"sk-1"},"weight":3},{"deployment":"qwen"}],"strategy":"least_busy","aliases":["gpt-4o-mini"]}"#;
        let group = parse_group(body).unwrap_or_else(|e| panic!("{e:?}"));
        let spec =
            to_spec("pool", &group, |_| Err("none".into())).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(spec.strategy, Strategy::LeastBusy);
        assert_eq!(spec.members[0].weight, 3);
        let stored =
            sealed(&group, |k| Ok(format!("sealed({k})"))).unwrap_or_else(|e| panic!("{e:?}"));
        let text = serde_json::to_string(&stored).unwrap_or_default();
        assert!(!text.contains("\"api_key\""), "{text}");
        let back = parse_stored(&text).unwrap_or_else(|e| panic!("{e}"));
        let opened = to_spec("pool", &back, |s| {
            Ok(s.trim_start_matches("sealed(").trim_end_matches(')').into())
        })
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(opened, spec);

        assert!(parse_group(br#"{"members":[],"extra":1}"#).is_err());
        let none =
            parse_group(br#"{"members":[{"weight":1}]}"#).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(to_spec("pool", &none, |_| Err(String::new())).is_err());
        let bad = parse_group(br#"{"members":[{"deployment":"a"}],"strategy":"fastest"}"#)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(to_spec("pool", &bad, |_| Err(String::new())).is_err());
        let sealed_in =
            br#"{"members":[{"upstream":{"base_url":"http://h/v1","api_key_sealed":"x"}}]}"#;
        assert!(parse_group(sealed_in).is_err());
    }
}
