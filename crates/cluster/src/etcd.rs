//! [`Discovery`] and [`Placement`] on etcd. Under one prefix:
//! - `PREFIX/members/ID` — a process's [`Member`] record (JSON), held by its lease;
//! - `PREFIX/election/…` — etcd's election for the placement leader (the candidates' keys,
//!   each held by its candidate's lease; the oldest is the leader, its value the leader's id);
//! - `PREFIX/placements/DEPLOYMENT` — that deployment's assignments (JSON), written only in
//!   transactions that check the leader's election key still has the creation revision it had
//!   when elected (the fence), so a deposed leader's writes are refused.
//!
//! One watch on the prefix keeps the members and the placement view current; when etcd cannot
//! be reached the last known view stays, and the watch starts again from a fresh read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use control::cluster::{
    Assignment, Assignments, ClusterError, ClusterResult, Discovery, Leadership, Member, Placement,
    PlacementView,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaderKey, PutOptions,
    ResignOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::watch;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `HOST:PORT` endpoints (the `etcd://` scheme stripped).
    pub endpoints: Vec<String>,
    /// Key prefix of this cluster, e.g. `/flywheel`.
    pub prefix: String,
    /// Lease time to live, in seconds.
    pub ttl_secs: i64,
    /// etcd user and password, if etcd has authentication on.
    pub user: Option<(String, String)>,
}

/// Parses `etcd://HOST:PORT[,HOST:PORT…]` into `http://HOST:PORT` endpoints.
pub fn parse_endpoints(url: &str) -> Result<Vec<String>, String> {
    let rest = url.strip_prefix("etcd://").ok_or_else(|| {
        format!("'{url}' is not an etcd address: write etcd://HOST:PORT[,HOST:PORT…]")
    })?;
    let endpoints: Vec<String> = rest
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|hp| {
            let ok = hp
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if ok {
                Ok(format!("http://{hp}"))
            } else {
                Err(format!("'{hp}' in '{url}' is not HOST:PORT"))
            }
        })
        .collect::<Result<_, _>>()?;
    if endpoints.is_empty() {
        return Err(format!(
            "'{url}' names no etcd endpoint: write etcd://HOST:PORT"
        ));
    }
    Ok(endpoints)
}

fn unavailable(e: etcd_client::Error) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

/// This process's lease and record.
struct Registration {
    lease: i64,
    me: Member,
    keeper: tokio::task::JoinHandle<()>,
}

pub struct EtcdCluster {
    client: Client,
    options: EtcdOptions,
    members: watch::Sender<Vec<Member>>,
    view: watch::Sender<PlacementView>,
    registration: Mutex<Option<Registration>>,
    /// The election key this process leads with, by fence.
    leading: Mutex<Option<(i64, LeaderKey)>>,
    /// The prefix as last read and watched.
    state: Mutex<State>,
    this: std::sync::Weak<EtcdCluster>,
}

impl EtcdCluster {
    /// Connect, read the prefix once (so an unreachable etcd is an error here, at start) and
    /// start watching it.
    pub async fn connect(options: EtcdOptions) -> ClusterResult<Arc<Self>> {
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        let reach = async {
            let client = Client::connect(&options.endpoints, Some(connect)).await?;
            let mut probe = client.clone();
            probe
                .get(
                    options.prefix.clone(),
                    Some(GetOptions::new().with_prefix().with_limit(1)),
                )
                .await?;
            Ok::<_, etcd_client::Error>(client)
        };
        let client = tokio::time::timeout(Duration::from_secs(5), reach)
            .await
            .map_err(|_| {
                ClusterError::Unavailable(format!(
                    "no answer from etcd at {} within 5 s",
                    options.endpoints.join(", ")
                ))
            })?
            .map_err(|e| {
                ClusterError::Unavailable(format!(
                    "cannot reach etcd at {}: {e}",
                    options.endpoints.join(", ")
                ))
            })?;
        let this = Arc::new_cyclic(|this| Self {
            client,
            options,
            members: watch::Sender::new(Vec::new()),
            view: watch::Sender::new(PlacementView::default()),
            registration: Mutex::new(None),
            leading: Mutex::new(None),
            state: Mutex::new(State::default()),
            this: this.clone(),
        });
        let rev = this.load().await?;
        let watcher = Arc::downgrade(&this);
        tokio::spawn(async move {
            let mut from = rev + 1;
            loop {
                let Some(this) = watcher.upgrade() else {
                    return;
                };
                match this.follow(from).await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd watch lost; serving the last known view")
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                match this.load().await {
                    Ok(rev) => from = rev + 1,
                    Err(e) => tracing::debug!(error = %e, "etcd still unreachable"),
                }
            }
        });
        Ok(this)
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.options.prefix)
    }

    fn election(&self) -> String {
        self.key("election")
    }

    /// Read the whole prefix and replace the view; returns its revision.
    async fn load(&self) -> ClusterResult<i64> {
        let mut client = self.client.clone();
        let resp = client
            .get(self.key(""), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let mut state = State::default();
        for kv in resp.kvs() {
            if let Ok(key) = kv.key_str() {
                state.put(&self.options.prefix, key, kv.value(), kv.create_revision());
            }
        }
        self.publish_state(&state, rev);
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        Ok(rev)
    }

    /// Apply the watch's events from revision `from` until it ends.
    async fn follow(&self, from: i64) -> ClusterResult<()> {
        let mut client = self.client.clone();
        let mut stream = client
            .watch(
                self.key(""),
                Some(WatchOptions::new().with_prefix().with_start_revision(from)),
            )
            .await
            .map_err(unavailable)?;
        while let Some(resp) = stream.message().await.map_err(unavailable)? {
            if resp.canceled() {
                return Err(ClusterError::Unavailable(format!(
                    "watch cancelled: {}",
                    resp.cancel_reason()
                )));
            }
            let rev = resp.header().map_or(0, |h| h.revision());
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                match event.event_type() {
                    EventType::Put => {
                        state.put(&self.options.prefix, key, kv.value(), kv.create_revision())
                    }
                    EventType::Delete => state.delete(&self.options.prefix, key),
                }
            }
            self.publish_state(&state, rev);
            *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        }
        Ok(())
    }

    fn publish_state(&self, state: &State, revision: i64) {
        let members: Vec<Member> = state.members.values().cloned().collect();
        self.members.send_if_modified(|m| {
            let changed = *m != members;
            *m = members;
            changed
        });
        let view = PlacementView {
            assignments: state.placements.clone(),
            leader: state
                .candidates
                .values()
                .min_by_key(|(rev, _)| *rev)
                .map(|(_, id)| id.clone()),
            revision,
        };
        self.view.send_if_modified(|v| {
            let changed = v.assignments != view.assignments || v.leader != view.leader;
            *v = view;
            changed
        });
    }

    fn lease(&self) -> Option<i64> {
        self.registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.lease)
    }

    /// Grant a lease and put `me` under it.
    async fn grant_and_put(&self, me: &Member) -> ClusterResult<i64> {
        let mut client = self.client.clone();
        let lease = client
            .lease_grant(self.options.ttl_secs, None)
            .await
            .map_err(unavailable)?
            .id();
        let record = Member {
            lease,
            ttl_secs: u64::try_from(self.options.ttl_secs).unwrap_or(0),
            ..me.clone()
        };
        client
            .put(
                self.key(&format!("members/{}", me.id)),
                serde_json::to_vec(&record).unwrap_or_default(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(unavailable)?;
        Ok(lease)
    }
}

/// What the prefix holds, decoded.
#[derive(Debug, Clone, Default)]
struct State {
    members: BTreeMap<String, Member>,
    placements: Assignments,
    /// Election key → (creation revision, candidate id).
    candidates: BTreeMap<String, (i64, String)>,
}

impl State {
    fn put(&mut self, prefix: &str, key: &str, value: &[u8], created: i64) {
        let Some(rest) = key.strip_prefix(prefix).and_then(|k| k.strip_prefix('/')) else {
            return;
        };
        if let Some(id) = rest.strip_prefix("members/") {
            match serde_json::from_slice::<Member>(value) {
                Ok(m) => {
                    self.members.insert(id.to_owned(), m);
                }
                Err(e) => tracing::warn!(key, error = %e, "unreadable member record; ignored"),
            }
        } else if let Some(name) = rest.strip_prefix("placements/") {
            match serde_json::from_slice::<Vec<Assignment>>(value) {
                Ok(list) => {
                    self.placements.insert(name.to_owned(), list);
                }
                Err(e) => tracing::warn!(key, error = %e, "unreadable placement; ignored"),
            }
        } else if rest.starts_with("election/") {
            let id = String::from_utf8_lossy(value).into_owned();
            self.candidates.insert(key.to_owned(), (created, id));
        }
    }

    fn delete(&mut self, prefix: &str, key: &str) {
        let Some(rest) = key.strip_prefix(prefix).and_then(|k| k.strip_prefix('/')) else {
            return;
        };
        if let Some(id) = rest.strip_prefix("members/") {
            self.members.remove(id);
        } else if let Some(name) = rest.strip_prefix("placements/") {
            self.placements.remove(name);
        } else {
            self.candidates.remove(key);
        }
    }
}

#[async_trait::async_trait]
impl Discovery for EtcdCluster {
    async fn register(&self, me: Member) -> ClusterResult<()> {
        let lease = self.grant_and_put(&me).await?;
        let keeper = tokio::spawn(keep_alive(self.this.clone(), lease));
        let old = self
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(Registration { lease, me, keeper });
        if let Some(old) = old {
            old.keeper.abort();
        }
        Ok(())
    }

    async fn update(&self, me: Member) -> ClusterResult<()> {
        let Some(lease) = self.lease() else {
            return self.register(me).await;
        };
        if let Some(r) = self
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            r.me = me.clone();
        }
        let record = Member {
            lease,
            ttl_secs: u64::try_from(self.options.ttl_secs).unwrap_or(0),
            ..me.clone()
        };
        let mut client = self.client.clone();
        client
            .put(
                self.key(&format!("members/{}", me.id)),
                serde_json::to_vec(&record).unwrap_or_default(),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn members(&self) -> watch::Receiver<Vec<Member>> {
        self.members.subscribe()
    }

    async fn leave(&self) {
        let registration = self
            .registration
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(r) = registration {
            r.keeper.abort();
            let mut client = self.client.clone();
            let _ = client.lease_revoke(r.lease).await;
        }
    }
}

/// Renew `lease` every third of its time to live. When etcd answers that it expired (this
/// process was cut off longer than the TTL), register again under a fresh lease: a node that
/// comes back is a member again, and its agent stops whatever was re-placed meanwhile.
async fn keep_alive(this: std::sync::Weak<EtcdCluster>, mut lease: i64) {
    loop {
        let Some(cluster) = this.upgrade() else {
            return;
        };
        let every = Duration::from_millis(
            (u64::try_from(cluster.options.ttl_secs).unwrap_or(1) * 1000 / 3).max(200),
        );
        let mut client = cluster.client.clone();
        let alive = async {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            loop {
                keeper.keep_alive().await?;
                match stream.message().await? {
                    Some(resp) if resp.ttl() > 0 => {}
                    _ => return Ok::<bool, etcd_client::Error>(false),
                }
                tokio::time::sleep(every).await;
            }
        };
        let expired = match alive.await {
            Ok(_) => true,
            // The stream failed: expired if etcd says the lease is gone (-1), else etcd is
            // unreachable and the lease may still live: try again.
            Err(e) => match client.lease_time_to_live(lease, None).await {
                Ok(ttl) => ttl.ttl() <= 0,
                Err(_) => {
                    tracing::warn!(lease, error = %e, "cannot renew the membership lease; retrying");
                    false
                }
            },
        };
        if expired {
            tracing::warn!(lease, "membership lease expired; registering again");
            let me = cluster
                .registration
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|r| r.me.clone());
            let Some(me) = me else { return };
            match cluster.grant_and_put(&me).await {
                Ok(fresh) => {
                    lease = fresh;
                    if let Some(r) = cluster
                        .registration
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_mut()
                    {
                        r.lease = fresh;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot register again; retrying"),
            }
        }
        drop(cluster);
        tokio::time::sleep(every).await;
    }
}

#[async_trait::async_trait]
impl Placement for EtcdCluster {
    async fn campaign(&self, id: &str) -> ClusterResult<Leadership> {
        loop {
            let Some(lease) = self.lease() else {
                return Err(ClusterError::Unavailable(
                    "register this process before campaigning".into(),
                ));
            };
            let mut client = self.client.clone();
            match client.campaign(self.election(), id, lease).await {
                Ok(mut resp) => {
                    let Some(key) = resp.take_leader() else {
                        return Err(ClusterError::Unavailable(
                            "etcd elected this process without a leader key".into(),
                        ));
                    };
                    // A lease that expired while waiting cannot lead: campaign again.
                    if self.lease() != Some(lease) {
                        continue;
                    }
                    let fence = key.rev();
                    *self.leading.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((fence, key));
                    return Ok(Leadership {
                        id: id.to_owned(),
                        fence,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "placement campaign failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn publish(&self, lead: &Leadership, assignments: &Assignments) -> ClusterResult<()> {
        let key = match &*self.leading.lock().unwrap_or_else(PoisonError::into_inner) {
            Some((fence, key)) if *fence == lead.fence => key.key().to_vec(),
            _ => return Err(ClusterError::Fenced),
        };
        let current = self.view.borrow().assignments.clone();
        let mut ops = Vec::new();
        for (name, list) in assignments {
            if current.get(name) != Some(list) {
                ops.push(TxnOp::put(
                    self.key(&format!("placements/{name}")),
                    serde_json::to_vec(list).unwrap_or_default(),
                    None,
                ));
            }
        }
        for name in current.keys().filter(|n| !assignments.contains_key(*n)) {
            ops.push(TxnOp::delete(self.key(&format!("placements/{name}")), None));
        }
        // etcd takes at most 128 operations per transaction; each chunk is fenced.
        for chunk in ops.chunks(100) {
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    lead.fence,
                )])
                .and_then(chunk.to_vec());
            let mut client = self.client.clone();
            let resp = client.txn(txn).await.map_err(unavailable)?;
            if !resp.succeeded() {
                *self.leading.lock().unwrap_or_else(PoisonError::into_inner) = None;
                return Err(ClusterError::Fenced);
            }
        }
        Ok(())
    }

    fn view(&self) -> watch::Receiver<PlacementView> {
        self.view.subscribe()
    }

    async fn resign(&self, lead: &Leadership) {
        let key = match self
            .leading
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some((fence, key)) if fence == lead.fence => key,
            _ => return,
        };
        let mut client = self.client.clone();
        let _ = client
            .resign(Some(ResignOptions::new().with_leader(key)))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_endpoints;

    #[test]
    fn etcd_urls_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_endpoints("etcd://10.0.0.1:2379,10.0.0.2:2379").unwrap(),
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert!(parse_endpoints("http://x:1")
            .unwrap_err()
            .contains("etcd://HOST:PORT"));
        assert!(parse_endpoints("etcd://x")
            .unwrap_err()
            .contains("HOST:PORT"));
        assert!(parse_endpoints("etcd://x:notaport").is_err());
        assert!(parse_endpoints("etcd://")
            .unwrap_err()
            .contains("no etcd endpoint"));
    }
}
