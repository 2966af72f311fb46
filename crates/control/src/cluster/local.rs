//! The seams in process: one [`LocalCluster`] shared by whoever registers with it. A single
//! `flywheel serve` uses it to describe itself (`GET /admin/v1/cluster`: one node, its own
//! leader); tests use it to run leaders, agents and gateways together without etcd.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{watch, Notify};

use super::{
    Assignments, ClusterError, ClusterResult, Discovery, Leadership, Member, Placement,
    PlacementView,
};

/// Membership and placement held in this process. Cheap to clone: clones share the state.
#[derive(Clone)]
pub struct LocalCluster {
    inner: Arc<Inner>,
}

struct Inner {
    members: watch::Sender<Vec<Member>>,
    view: watch::Sender<PlacementView>,
    /// The leader's id and fence, and the next fence.
    leader: Mutex<(Option<Leadership>, i64)>,
    resigned: Notify,
}

impl Default for LocalCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalCluster {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                members: watch::Sender::new(Vec::new()),
                view: watch::Sender::new(PlacementView::default()),
                leader: Mutex::new((None, 0)),
                resigned: Notify::new(),
            }),
        }
    }

    /// A member's lease expired (tests: a node that died).
    pub fn expire(&self, id: &str) {
        self.inner.members.send_modify(|m| m.retain(|x| x.id != id));
        let mut leader = self
            .inner
            .leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if leader.0.as_ref().is_some_and(|l| l.id == id) {
            leader.0 = None;
            self.inner.view.send_modify(|v| v.leader = None);
            self.inner.resigned.notify_waiters();
        }
    }

    fn upsert(&self, me: Member) {
        self.inner.members.send_modify(|members| {
            match members.iter_mut().find(|m| m.id == me.id) {
                Some(slot) => *slot = me,
                None => members.push(me),
            }
            members.sort_by(|a, b| a.id.cmp(&b.id));
        });
    }
}

#[async_trait::async_trait]
impl Discovery for LocalCluster {
    async fn register(&self, me: Member) -> ClusterResult<()> {
        self.upsert(me);
        Ok(())
    }

    async fn update(&self, me: Member) -> ClusterResult<()> {
        self.upsert(me);
        Ok(())
    }

    fn members(&self) -> watch::Receiver<Vec<Member>> {
        self.inner.members.subscribe()
    }

    async fn leave(&self) {}
}

#[async_trait::async_trait]
impl Placement for LocalCluster {
    async fn campaign(&self, id: &str) -> ClusterResult<Leadership> {
        loop {
            let waiting = self.inner.resigned.notified();
            {
                let mut leader = self
                    .inner
                    .leader
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if leader.0.is_none() {
                    leader.1 += 1;
                    let lead = Leadership {
                        id: id.to_owned(),
                        fence: leader.1,
                    };
                    leader.0 = Some(lead.clone());
                    self.inner
                        .view
                        .send_modify(|v| v.leader = Some(id.to_owned()));
                    return Ok(lead);
                }
            }
            waiting.await;
        }
    }

    async fn publish(&self, lead: &Leadership, assignments: &Assignments) -> ClusterResult<()> {
        let leader = self
            .inner
            .leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if leader.0.as_ref() != Some(lead) {
            return Err(ClusterError::Fenced);
        }
        self.inner.view.send_modify(|v| {
            v.assignments = assignments.clone();
            v.revision += 1;
        });
        Ok(())
    }

    fn view(&self) -> watch::Receiver<PlacementView> {
        self.inner.view.subscribe()
    }

    async fn resign(&self, lead: &Leadership) {
        let mut leader = self
            .inner
            .leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if leader.0.as_ref() == Some(lead) {
            leader.0 = None;
            self.inner.view.send_modify(|v| v.leader = None);
            self.inner.resigned.notify_waiters();
        }
    }
}
