//! A group's live state and one request's route through it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backend::{
    Backend, BackendError, Event, EventStream, GenerateRequest, ModelInfo, UpstreamError,
};
use futures::StreamExt;
use upstream::{UpstreamBackend, UpstreamConfig};

use crate::breaker::Policy;
use crate::pick::{self, MemberState};
use crate::retry::{self, Decision};
use crate::{GroupSpec, Member, Target, MAX_ATTEMPTS};

/// The upstream configuration of member `m` of group `group`.
pub(crate) fn upstream_config(group: &str, m: &Member) -> Result<UpstreamBackend, String> {
    let Target::Upstream {
        base_url,
        api_key,
        model,
    } = &m.target
    else {
        return Err("not an upstream member".into());
    };
    UpstreamBackend::new(UpstreamConfig {
        name: group.to_owned(),
        base_url: base_url.clone(),
        api_key: api_key.clone(),
        model: model.clone().or_else(|| Some(group.to_owned())),
        timeout_seconds: None,
        default_max_tokens: None,
    })
}

/// A group: its definition, its upstream members' clients and every member's live state.
pub struct Group {
    spec: GroupSpec,
    /// Per member: its client, for upstream members.
    upstreams: Vec<Option<Arc<UpstreamBackend>>>,
    states: Mutex<Vec<MemberState>>,
    policy: Policy,
    created: u64,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("spec", &self.spec).finish()
    }
}

impl Group {
    /// A group serving `spec` (validated here too).
    pub fn new(spec: GroupSpec, policy: Policy) -> Result<Self, crate::SpecError> {
        spec.validate()?;
        let mut upstreams = Vec::with_capacity(spec.members.len());
        for (i, m) in spec.members.iter().enumerate() {
            upstreams.push(match m.target {
                Target::Upstream { .. } => {
                    Some(Arc::new(upstream_config(&spec.name, m).map_err(|e| {
                        crate::SpecError::new(format!("members[{i}].upstream.base_url"), e)
                    })?))
                }
                Target::Deployment(_) => None,
            });
        }
        let states = spec
            .members
            .iter()
            .map(|m| MemberState::new(m.weight, m.rpm, m.tpm))
            .collect();
        Ok(Self {
            spec,
            upstreams,
            states: Mutex::new(states),
            policy,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    pub fn spec(&self) -> &GroupSpec {
        &self.spec
    }

    /// The deployments its members name, in member order (`None` for upstream members).
    pub fn deployment_names(&self) -> impl Iterator<Item = Option<&str>> {
        self.spec.members.iter().map(|m| match &m.target {
            Target::Deployment(name) => Some(name.as_str()),
            Target::Upstream { .. } => None,
        })
    }

    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.spec.name.clone(),
            owned_by: "group".into(),
            context_length: None,
            created: self.created,
            kind: backend::ModelKind::Generate,
        }
    }

    /// Members whose circuit is open now, by label (for operators).
    pub fn open_circuits(&self) -> Vec<String> {
        self.states()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.breaker.is_open())
            .map(|(i, _)| self.spec.member_label(i))
            .collect()
    }

    fn states(&self) -> MutexGuard<'_, Vec<MemberState>> {
        // A panic while holding this lock leaves consistent counters; go on with them.
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What happened to one request inside its group: the member that served it and the
/// attempts before that one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    /// The member (or fallback) whose answer the client got, once it started.
    pub member: Option<String>,
    /// Attempts that failed before it (members and fallbacks).
    pub retries: u32,
}

/// Filled in while the request runs; read when it ends.
pub type Report = Arc<Mutex<Routed>>;

/// One request's route through a group: its members' backends as resolved now (a
/// deployment member not served here is `None` and skipped) and its fallbacks.
#[derive(Clone)]
pub struct Route {
    group: Arc<Group>,
    deployments: Vec<Option<Arc<dyn Backend>>>,
    fallbacks: Vec<(String, Arc<dyn Backend>)>,
}

impl Route {
    /// `deployments`: per member, the backend of a deployment member (ignored for upstream
    /// members); `fallbacks`: by name, in order.
    pub fn new(
        group: Arc<Group>,
        deployments: Vec<Option<Arc<dyn Backend>>>,
        fallbacks: Vec<(String, Arc<dyn Backend>)>,
    ) -> Self {
        Self {
            group,
            deployments,
            fallbacks,
        }
    }

    fn member(&self, i: usize) -> Option<Arc<dyn Backend>> {
        match self.group.upstreams.get(i) {
            Some(Some(upstream)) => Some(Arc::clone(upstream) as Arc<dyn Backend>),
            _ => self.deployments.get(i).cloned().flatten(),
        }
    }

    /// Starts `request` on a member (retrying members that refuse it at once), and returns
    /// its events with the report of where it went.
    pub async fn generate_reported(
        &self,
        request: GenerateRequest,
    ) -> backend::Result<(EventStream, Report)> {
        let mut attempts = Attempts::new(self.clone(), request);
        attempts.start().await?;
        let report = Arc::clone(&attempts.report);
        let stream = futures::stream::unfold(attempts, |mut a| async move {
            let item = a.next().await?;
            Some((item, a))
        });
        Ok((Box::pin(stream), report))
    }
}

#[async_trait::async_trait]
impl Backend for Route {
    fn info(&self) -> ModelInfo {
        self.group.info()
    }

    async fn generate(&self, request: GenerateRequest) -> backend::Result<EventStream> {
        Ok(self.generate_reported(request).await?.0)
    }

    async fn count_prompt_tokens(&self, request: &GenerateRequest) -> backend::Result<u32> {
        let mut last = None;
        for i in 0..self.group.spec.members.len() {
            if let Some(member) = self.member(i) {
                match member.count_prompt_tokens(request).await {
                    Ok(n) => return Ok(n),
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            BackendError::Unavailable("no member of this group is served here".into())
        }))
    }
}

/// A member's part in one attempt: counted in flight until dropped, and its breaker told the
/// outcome.
struct Lease {
    group: Arc<Group>,
    index: usize,
    tokens: u64,
    verdict: bool,
}

impl Lease {
    fn start(group: &Arc<Group>, index: usize) -> Self {
        if let Some(s) = group.states().get_mut(index) {
            s.start(Instant::now());
        }
        Self {
            group: Arc::clone(group),
            index,
            tokens: 0,
            verdict: false,
        }
    }

    fn succeed(&mut self, ttft: Duration) {
        self.verdict = true;
        if let Some(s) = self.group.states().get_mut(self.index) {
            s.breaker.success();
            s.record_latency(ttft);
        }
    }

    fn fail(&mut self, retry_after: Option<Duration>) {
        self.verdict = true;
        let policy = self.group.policy;
        if let Some(s) = self.group.states().get_mut(self.index) {
            s.breaker.failure(Instant::now(), retry_after, &policy);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(s) = self.group.states().get_mut(self.index) {
            s.end(self.tokens);
            if !self.verdict {
                s.breaker.abandon();
            }
        }
    }
}

struct Attempt {
    stream: EventStream,
    label: String,
    started: Instant,
    /// `None` for a fallback.
    lease: Option<Lease>,
}

/// Before an attempt that follows `tries` failed ones: a short backoff.
async fn pause(tries: usize) {
    if tries > 0 {
        let next = u32::try_from(tries + 1).unwrap_or(u32::MAX);
        tokio::time::sleep(retry::backoff(next)).await;
    }
}

/// The state of one request through its route.
struct Attempts {
    route: Route,
    request: GenerateRequest,
    tried: Vec<bool>,
    attempts: usize,
    next_fallback: usize,
    /// The prompt exceeded the members' context: only fallbacks are left.
    fallback_only: bool,
    current: Option<Attempt>,
    admitted_sent: bool,
    /// The first byte of an answer was handed out: nothing is retried any more.
    committed: bool,
    last_error: Option<BackendError>,
    report: Report,
    done: bool,
}

impl Attempts {
    fn new(route: Route, request: GenerateRequest) -> Self {
        let n = route.group.spec.members.len();
        Self {
            route,
            request,
            tried: vec![false; n],
            attempts: 0,
            next_fallback: 0,
            fallback_only: false,
            current: None,
            admitted_sent: false,
            committed: false,
            last_error: None,
            report: Report::default(),
            done: false,
        }
    }

    fn report(&self) -> MutexGuard<'_, Routed> {
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the next attempt: a member, else a fallback; the error to answer with when
    /// none is left.
    async fn start(&mut self) -> backend::Result<()> {
        loop {
            let group = Arc::clone(&self.route.group);
            let max = MAX_ATTEMPTS.min(group.spec.members.len());
            let chosen = if self.fallback_only || self.attempts >= max {
                None
            } else {
                let eligible: Vec<bool> = (0..self.tried.len())
                    .map(|i| !self.tried[i] && self.route.member(i).is_some())
                    .collect();
                pick::pick(
                    group.spec.strategy,
                    &mut group.states(),
                    &eligible,
                    Instant::now(),
                )
            };
            if let Some(i) = chosen {
                self.tried[i] = true;
                let Some(backend) = self.route.member(i) else {
                    continue;
                };
                let mut request = self.request.clone();
                if let Target::Deployment(name) = &group.spec.members[i].target {
                    request.model = name.clone();
                }
                pause(self.attempts + self.next_fallback).await;
                self.attempts += 1;
                let mut lease = Lease::start(&group, i);
                match backend.generate(request).await {
                    Ok(stream) => {
                        self.current = Some(Attempt {
                            stream,
                            label: group.spec.member_label(i),
                            started: Instant::now(),
                            lease: Some(lease),
                        });
                        return Ok(());
                    }
                    Err(err) => self.failed(Some(&mut lease), err)?,
                }
                continue;
            }
            let Some((name, backend)) = self.route.fallbacks.get(self.next_fallback).cloned()
            else {
                return Err(self.exhausted());
            };
            pause(self.attempts + self.next_fallback).await;
            self.next_fallback += 1;
            match backend.generate(self.request.clone()).await {
                Ok(stream) => {
                    self.current = Some(Attempt {
                        stream,
                        label: name,
                        started: Instant::now(),
                        lease: None,
                    });
                    return Ok(());
                }
                Err(err) => self.failed(None, err)?,
            }
        }
    }

    /// Records a failure before the first byte; `Err`: the answer to give.
    fn failed(&mut self, lease: Option<&mut Lease>, err: BackendError) -> backend::Result<()> {
        let failed = self.attempts + self.next_fallback;
        self.report().retries = u32::try_from(failed).unwrap_or(u32::MAX);
        let decision = retry::decide(&err);
        if let Some(lease) = lease {
            match decision {
                Decision::Retry { retry_after } => lease.fail(retry_after),
                // The member answered; the request was wrong for it.
                Decision::Fallback | Decision::Fail => lease.verdict = true,
            }
        }
        match decision {
            Decision::Fail => Err(err),
            Decision::Fallback => {
                self.fallback_only = true;
                self.last_error = Some(err);
                Ok(())
            }
            Decision::Retry { .. } => {
                tracing::info!(request_id = %self.request.request_id, group = %self.route.group.spec.name, error = %err, "a member failed before its answer began; trying another");
                self.last_error = Some(err);
                Ok(())
            }
        }
    }

    /// No member or fallback is left: the last failure, or, when no member could be tried at
    /// all, a 503 with the time the first one may take requests again.
    fn exhausted(&mut self) -> BackendError {
        if let Some(err) = self.last_error.take() {
            return err;
        }
        let group = &self.route.group;
        let now = Instant::now();
        let wait = pick::next_available(&mut group.states(), now).map_or(1, |at| {
            at.duration_since(now).as_secs_f64().ceil().max(1.0) as u64
        });
        BackendError::Upstream(UpstreamError {
            status: 503,
            message: format!(
                "No member of the model group '{}' can take requests now (all are failing or at \
                 their limits). Retry after {wait} s.",
                group.spec.name
            ),
            r#type: Some("server_error".into()),
            code: Some("no_healthy_member".into()),
            param: None,
            retry_after: Some(wait),
        })
    }

    async fn next(&mut self) -> Option<backend::Result<Event>> {
        loop {
            if self.done {
                return None;
            }
            if self.current.is_none() {
                if let Err(err) = self.start().await {
                    self.done = true;
                    return Some(Err(err));
                }
            }
            let attempt = self.current.as_mut()?;
            match attempt.stream.next().await {
                Some(Ok(Event::Admitted { .. })) if self.admitted_sent => {}
                Some(Ok(event @ (Event::Admitted { .. } | Event::Queued { .. }))) => {
                    self.admitted_sent |= matches!(event, Event::Admitted { .. });
                    return Some(Ok(event));
                }
                Some(Ok(event)) => {
                    if !self.committed {
                        self.committed = true;
                        let ttft = attempt.started.elapsed();
                        if let Some(lease) = &mut attempt.lease {
                            lease.succeed(ttft);
                        }
                        self.report.lock().unwrap_or_else(|e| e.into_inner()).member =
                            Some(attempt.label.clone());
                    }
                    if let (Event::Finished { usage, .. }, Some(lease)) =
                        (&event, &mut attempt.lease)
                    {
                        lease.tokens =
                            u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens);
                    }
                    return Some(Ok(event));
                }
                Some(Err(err)) if self.committed => {
                    // After the first byte: the client's answer is broken; nothing is retried.
                    if let Some(lease) = &mut attempt.lease {
                        lease.fail(None);
                    }
                    self.done = true;
                    self.current = None;
                    return Some(Err(err));
                }
                Some(Err(err)) => {
                    let mut attempt = self.current.take()?;
                    if let Err(err) = self.failed(attempt.lease.as_mut(), err) {
                        self.done = true;
                        return Some(Err(err));
                    }
                }
                None if self.committed => {
                    self.done = true;
                    self.current = None;
                    return None;
                }
                None => {
                    let mut attempt = self.current.take()?;
                    let err = BackendError::Unreachable("its answer ended before it began".into());
                    if let Err(err) = self.failed(attempt.lease.as_mut(), err) {
                        self.done = true;
                        return Some(Err(err));
                    }
                }
            }
        }
    }
}
