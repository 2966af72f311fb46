//! The deployment's actor: one task that owns the queue, the replicas and the autoscaler,
//! applies commands as they come and ticks the control loop once a second.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backend::{BackendError, Event, Priority};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::backlog::Backlogs;
use super::forward::{self, Job, Waiter};
use super::replicas::{Replica, ReplicaSet, ReplicaState};
use super::rollout;
use super::yielding::{self, Give, Holding};
use super::Command;
use crate::autoscale::{Autoscaler, Decision, Signals};
use crate::events::{EventKind, EventLog, ScaleEvent};
use crate::footprint::Footprint;
use crate::launcher::{ReplicaLauncher, ReplicaSpec};
use crate::metrics;
use crate::node::Node;
use crate::placement::{NoRoom, ReplicaKey, Standing};
use crate::queue::{Classes, DrainRate, Refusal};
use crate::spec::DeploymentSpec;

/// How often the control loop runs (expiry, positions, autoscaling).
pub const TICK: Duration = Duration::from_secs(1);

pub(crate) struct Parts {
    pub spec: DeploymentSpec,
    pub footprint: Footprint,
    pub node: Arc<Node>,
    pub launcher: Arc<dyn ReplicaLauncher>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub rx: mpsc::UnboundedReceiver<Command>,
}

/// What the actor talks to.
struct Env {
    node: Arc<Node>,
    launcher: Arc<dyn ReplicaLauncher>,
    commands: mpsc::UnboundedSender<Command>,
}

struct Actor {
    spec: DeploymentSpec,
    footprint: Footprint,
    generation: u64,
    /// Interactive and batch requests waiting, each class fair among tenants.
    queue: Classes<Waiter>,
    replicas: ReplicaSet,
    autoscaler: Autoscaler,
    env: Env,
    log: EventLog,
    tokens: DrainRate,
    /// The batches' remaining lines and deadlines, and the batch line rate (rule 4).
    backlogs: Backlogs,
    last_traffic: Option<Instant>,
    /// Set by `Shutdown`: who waits for the drain to finish.
    closing: Option<Vec<oneshot::Sender<()>>>,
    /// Set by `Stop`: nothing waits or runs any more.
    stopped: bool,
    /// Unloaded replicas whose backends are stopping (engine threads being joined).
    unloading: JoinSet<()>,
    /// A scale-up waits for room that other deployments' replicas are giving back.
    awaiting_room: bool,
}

/// The control loop's clock: tokio's, so tests can pause and advance it.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) fn spawn(parts: Parts) {
    let Parts {
        spec,
        footprint,
        node,
        launcher,
        commands,
        rx,
    } = parts;
    let mut queue = Classes::new(spec.queue_config());
    for (tenant, weight) in &spec.tenant_weights {
        queue.set_weight(tenant, *weight);
    }
    let actor = Actor {
        autoscaler: Autoscaler::new(spec.scale_policy()),
        spec,
        footprint,
        generation: 1,
        queue,
        replicas: ReplicaSet::default(),
        env: Env {
            node,
            launcher,
            commands,
        },
        log: EventLog::default(),
        tokens: DrainRate::new(0.0),
        backlogs: Backlogs::default(),
        last_traffic: None,
        closing: None,
        stopped: false,
        unloading: JoinSet::new(),
        awaiting_room: false,
    };
    tokio::spawn(actor.run(rx));
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let node = self.env.node.clone();
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => self.handle(command),
                    None => break,
                },
                _ = tick.tick() => self.tick(),
                // A start waiting for room goes on as soon as room is given back.
                () = node.room_freed(), if self.awaiting_room => self.tick(),
            }
            if self.drained() {
                break;
            }
        }
        let ids: Vec<u64> = self.replicas.iter().map(|r| r.id).collect();
        for id in ids {
            self.unload(id, "the deployment was deleted");
        }
        // Whoever waits for the shutdown is answered only once no engine thread runs.
        while self.unloading.join_next().await.is_some() {}
        self.env.node.unregister(&self.spec.name);
        metrics::queue(&self.spec.name, 0, 0);
        metrics::batch(&self.spec.name, 0, 0);
        metrics::replicas(&self.spec.name, 0, 0, 0);
        for reply in self.closing.take().unwrap_or_default() {
            let _ = reply.send(());
        }
    }

    fn drained(&self) -> bool {
        self.closing.is_some() && self.queue.is_empty() && self.replicas.in_flight() == 0
    }

    fn handle(&mut self, command: Command) {
        let now = now();
        match command {
            Command::Enqueue { work, events } => self.enqueue(work, events, now),
            Command::Done {
                replica,
                class,
                completed,
                tokens,
                service,
            } => {
                // How busy the replica was when this request ended (itself included).
                let mut occupancy = (1, 1);
                if let Some(r) = self.replicas.get_mut(replica) {
                    occupancy = (r.in_flight.min(r.slots), r.slots);
                    r.give_back(class);
                    r.saturated = false;
                    r.completed += u64::from(completed);
                    if r.in_flight == 0 {
                        r.idle_since = Some(now);
                        if r.state == ReplicaState::Draining {
                            let reason = format!("drained ({})", r.drain_reason);
                            self.unload(replica, &reason);
                        }
                    }
                }
                if completed && class == Priority::Batch {
                    self.backlogs.completed();
                }
                if completed {
                    self.queue.class_mut(class).record_completion(
                        now,
                        service,
                        occupancy.0,
                        occupancy.1,
                    );
                }
                self.tokens.record(now, tokens);
                self.try_dispatch(now);
            }
            Command::Bounced { replica, job } => {
                let class = job.waiter().work.priority();
                if let Some(r) = self.replicas.get_mut(replica) {
                    r.give_back(class);
                    r.saturated = true;
                }
                match job {
                    Job::Queued(entry) => self.queue.class_mut(class).requeue(entry),
                    Job::Direct(waiter) => self.push(waiter, now),
                }
                self.try_dispatch(now);
            }
            Command::Started { replica, result } => self.started(replica, result, now),
            Command::Evict { replica, reason } => {
                let holding = self.holding();
                match self
                    .replicas
                    .get(replica)
                    .map(|r| yielding::on_eviction(r, &holding))
                {
                    Some(Give::Unload) => self.unload(replica, &reason),
                    Some(Give::Drain) => self.drain(replica, &reason),
                    Some(Give::Keep) | None => {}
                }
            }
            Command::Update {
                spec,
                footprint,
                reply,
            } => {
                self.update(spec, footprint);
                let _ = reply.send(());
                self.tick();
            }
            Command::ReadyReplica { reply } => {
                let ready = self
                    .replicas
                    .iter()
                    .filter(|r| r.state == ReplicaState::Ready)
                    .find_map(|r| r.backend.clone());
                let _ = reply.send(ready);
            }
            Command::Describe { reply } => {
                let _ = reply.send(self.view(now));
            }
            Command::Events { reply } => {
                let _ = reply.send(self.log.snapshot());
            }
            Command::BatchBacklog {
                batch,
                lines,
                deadline,
                reply,
            } => {
                let left = deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                self.backlogs.report(&batch, lines, now + left, now);
                // Lines the runner may keep in flight: every slot of the replicas up or
                // starting (one replica's at zero, where a waiting line cold-starts one).
                let _ = reply.send(self.spec.slots_per_replica * self.active().max(1));
            }
            Command::Shutdown { reply } => {
                self.closing.get_or_insert_with(Vec::new).push(reply);
                // Batch lines still waiting end now (`ShuttingDown`): their runner takes them
                // up again after a restart, and a drain must not wait for a backlog of hours.
                let batch = self.queue.class_mut(Priority::Batch);
                while let Some(entry) = batch.pop(now) {
                    let _ = entry.item.events.send(Err(BackendError::ShuttingDown));
                }
            }
            Command::Stop { reply } => {
                self.closing.get_or_insert_with(Vec::new).push(reply);
                self.stop_now(now);
            }
        }
        self.sync_slots(now);
    }

    /// Tell the queue's drain estimate the capacity serving it: ready slots, and the slots it
    /// will have once loading replicas are ready (at least one replica's: a request at zero
    /// replicas starts one).
    fn sync_slots(&mut self, now: Instant) {
        let (mut ready, mut loading) = (0, 0);
        for r in self.replicas.iter() {
            match r.state {
                ReplicaState::Ready => ready += r.slots,
                ReplicaState::Loading => loading += r.slots,
                ReplicaState::Draining => {}
            }
        }
        let planned = (ready + loading).max(self.spec.slots_per_replica);
        self.queue.set_slots(now, ready, planned);
    }

    fn enqueue(&mut self, work: forward::Work, events: forward::Events, now: Instant) {
        if self.closing.is_some() {
            let _ = events.send(Err(BackendError::ShuttingDown));
            return;
        }
        self.last_traffic = Some(now);
        let class = work.priority();
        let waiter = Waiter {
            work,
            events,
            reported: 0,
        };
        // Straight to a replica when nothing of its class (or, for batch work, nothing at
        // all) waits ahead of it.
        let ahead = match class {
            Priority::Interactive => self.queue.class(class).len(),
            Priority::Batch => self.queue.len(),
        };
        if ahead == 0 {
            if let Some(replica) = self.replicas.pick(class) {
                self.dispatch(replica, Job::Direct(waiter));
                return;
            }
        }
        self.push(waiter, now);
        if self.active() == 0 {
            // A request at zero replicas: decide now, not at the next tick.
            self.autoscale(now);
        }
    }

    /// Shutdown past the drain: queued requests end now, and every replica that runs some is
    /// stopped, which ends their streams; the forwarders' `Done`s then drain the deployment.
    fn stop_now(&mut self, now: Instant) {
        self.stopped = true;
        while let Some(entry) = self.queue.pop_any(now) {
            let _ = entry.item.events.send(Err(BackendError::ShuttingDown));
        }
        for r in self.replicas.iter().filter(|r| r.in_flight > 0) {
            if let Some(backend) = r.backend.clone() {
                self.unloading.spawn(async move { backend.stop().await });
            }
        }
    }

    /// Put a request in line and tell its client where it stands, or refuse it.
    fn push(&mut self, waiter: Waiter, now: Instant) {
        if self.stopped {
            let _ = waiter.events.send(Err(BackendError::ShuttingDown));
            return;
        }
        let events = waiter.events.clone();
        let tenant = waiter.work.tenant().cloned();
        let class = waiter.work.priority();
        let pushed = if waiter.work.resumes() {
            // A moved stream, admitted before: first in line, never refused.
            Ok(self.queue.class_mut(class).push_front(tenant, waiter, now))
        } else {
            self.queue.class_mut(class).push(tenant, waiter, now)
        };
        match pushed {
            Ok((id, pos)) => {
                if let Some(w) = self.queue.get_mut(class, id) {
                    w.reported = pos.position;
                }
                let _ = events.send(Ok(Event::Queued {
                    position: pos.position,
                    eta_ms: pos.eta_ms,
                }));
            }
            Err(refusal) => {
                metrics::rejection(&self.spec.name);
                let error = match refusal {
                    Refusal::Full {
                        queued,
                        retry_after,
                    } => BackendError::Overloaded {
                        queued,
                        retry_after,
                    },
                    Refusal::OverShare {
                        waiting,
                        limit,
                        retry_after,
                    } => BackendError::QueueShareExceeded {
                        waiting,
                        limit,
                        retry_after,
                    },
                };
                let _ = events.send(Err(error));
            }
        }
    }

    fn dispatch(&mut self, replica: u64, job: Job) {
        let Some(r) = self.replicas.get_mut(replica) else {
            return;
        };
        let Some(backend) = r.backend.clone() else {
            return;
        };
        r.take(job.waiter().work.priority());
        r.idle_since = None;
        forward::spawn(replica, backend, job, self.env.commands.clone());
        // No longer idle (at once, so it is not unloaded while it works), maybe spare.
        if let Some(r) = self.replicas.get(replica) {
            let standing = yielding::standing(r, &self.holding());
            self.env.node.set_standing(&self.key(replica), standing);
        }
    }

    /// Hand waiting requests to replicas with room for their class: interactive ones first
    /// (a slot batch work holds is room for them), batch ones only into free slots and only
    /// while no interactive request waits; fair order within each class.
    fn try_dispatch(&mut self, now: Instant) {
        loop {
            let mut replica = None;
            let replicas = &self.replicas;
            let next = self.queue.pop_next(now, |class| {
                replica = replicas.pick(class);
                replica.is_some()
            });
            let (Some((_, entry)), Some(replica)) = (next, replica) else {
                break;
            };
            if entry.item.events.is_closed() {
                continue;
            }
            self.dispatch(replica, Job::Queued(entry));
        }
    }

    fn tick(&mut self) {
        let now = now();
        self.sync_slots(now);
        let retry_after = |queue: &Classes<Waiter>, class| queue.class(class).retry_after();
        let retry = [Priority::Interactive, Priority::Batch].map(|c| retry_after(&self.queue, c));
        for entry in self.queue.expire(now) {
            metrics::timeout(&self.spec.name);
            let batch = entry.item.work.priority() == Priority::Batch;
            let _ = entry.item.events.send(Err(BackendError::QueueTimeout {
                waited_secs: entry.waited(now).as_secs(),
                retry_after: retry[usize::from(batch)],
            }));
        }
        self.queue.remove_where(|w| w.events.is_closed());
        self.report_positions(Priority::Interactive);
        self.report_positions(Priority::Batch);
        for r in self.replicas.iter_mut() {
            r.saturated = false;
        }
        while self.unloading.try_join_next().is_some() {}
        let busy = self.replicas.in_flight() > 0;
        self.tokens.observe(now, busy);
        let batch_busy = self
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::Ready && r.batch_in_flight > 0)
            .count();
        self.backlogs.observe(now, batch_busy);
        if busy || !self.queue.is_empty() {
            self.last_traffic = Some(now);
        }
        self.roll(now);
        self.autoscale(now);
        self.mark_standing();
        self.try_dispatch(now);
        self.publish();
    }

    /// Replicas that count towards the desired number (not draining).
    fn active(&self) -> usize {
        self.replicas.count(ReplicaState::Ready) + self.replicas.count(ReplicaState::Loading)
    }

    fn autoscale(&mut self, now: Instant) {
        self.awaiting_room = false;
        let (in_flight, batch_in_flight) = self
            .replicas
            .iter()
            .filter(|r| r.state != ReplicaState::Draining)
            .fold((0, 0), |(i, b), r| {
                (i + r.interactive_in_flight(), b + r.batch_in_flight)
            });
        let interactive = self.queue.class(Priority::Interactive);
        let signals = Signals {
            now,
            queued: interactive.len(),
            in_flight,
            batch_queued: self.queue.class(Priority::Batch).len(),
            batch_in_flight,
            replicas_ready: self.replicas.count(ReplicaState::Ready),
            replicas_loading: self.replicas.count(ReplicaState::Loading),
            threads_free: self
                .env
                .node
                .threads_available_for(&self.spec.name, self.starving()),
            last_traffic: self.last_traffic,
            throughput_per_sec: interactive.drain_rate().per_sec(),
            batch_backlog: self.backlogs.signal(now),
        };
        let rolling = self.replicas.stale(self.generation).next().is_some();
        let decision = self.autoscaler.decide(&signals);
        if !decision.is_change() {
            return;
        }
        let up = decision.to > decision.from;
        if (!up && rolling) || (up && self.closing.is_some() && self.queue.is_empty()) {
            return;
        }
        if up {
            let mut started = 0;
            let mut refused = None;
            for _ in decision.from..decision.to {
                match self.start_replica(now) {
                    Ok(()) => started += 1,
                    Err(no_room) => {
                        refused = Some(no_room);
                        break;
                    }
                }
            }
            self.awaiting_room = refused.as_ref().is_some_and(NoRoom::is_pending);
            if started == 0 && self.awaiting_room {
                // Others' replicas are leaving to make the room: the scale-up happens (and
                // is logged) once it is there, as soon as it is given back.
                self.autoscaler.forget_scale_up();
                return;
            }
            self.scaled(&decision);
            if let Some(no_room) = refused {
                // Not carried out: let the next tick try again without a cooldown.
                self.autoscaler.forget_scale_up();
                if !no_room.is_pending() {
                    let n = self.active();
                    self.event(EventKind::ReplicaFailed, n, n, no_room.to_string());
                }
            }
        } else {
            self.scaled(&decision);
            let ids = self
                .replicas
                .choose_to_drain(decision.from - decision.to, self.generation);
            for id in ids {
                self.drain(id, &decision.reason);
            }
        }
    }

    fn scaled(&mut self, decision: &Decision) {
        metrics::scale(&self.spec.name, decision.to > decision.from);
        self.event(
            EventKind::Scale,
            decision.from,
            decision.to,
            decision.reason.clone(),
        );
    }

    /// Place and start one replica of the current generation, or say why there is no room
    /// (the node may have asked others to make it).
    fn start_replica(&mut self, now: Instant) -> Result<(), NoRoom> {
        let id = self.replicas.next_id();
        let starving = self.starving();
        self.env
            .node
            .reserve(self.key(id), self.footprint.clone(), starving)?;
        let spec = ReplicaSpec {
            deployment: self.spec.name.clone(),
            model: self.spec.model.clone(),
            generation: self.generation,
            slots: self.spec.slots_per_replica,
            threads: self.spec.threads_per_replica,
            slot_context: self.spec.context_length,
            step_tokens: self.spec.step_tokens,
        };
        self.replicas.insert(Replica {
            id,
            generation: self.generation,
            model: spec.model.clone(),
            state: ReplicaState::Loading,
            backend: None,
            slots: spec.slots,
            in_flight: 0,
            batch_in_flight: 0,
            saturated: false,
            idle_since: None,
            started: now,
            completed: 0,
            drain_reason: String::new(),
        });
        let launcher = self.env.launcher.clone();
        let commands = self.env.commands.clone();
        tokio::spawn(async move {
            let result = launcher.start(&spec).await;
            let _ = commands.send(Command::Started {
                replica: id,
                result,
            });
        });
        Ok(())
    }

    fn started(&mut self, id: u64, result: crate::Result<Arc<dyn backend::Backend>>, now: Instant) {
        let Some(r) = self.replicas.get_mut(id) else {
            return;
        };
        let load_secs = now.saturating_duration_since(r.started).as_secs_f64();
        match result {
            Err(e) => {
                self.unload(id, "");
                let n = self.active();
                self.event(EventKind::ReplicaFailed, n, n, format!("replica {id}: {e}"));
                if n == 0 {
                    // Nothing will serve the waiting requests soon: say why now rather than
                    // time them out later.
                    let message = format!("no replica of '{}' could start: {e}", self.spec.name);
                    while let Some(entry) = self.queue.pop_any(now) {
                        let _ = entry
                            .item
                            .events
                            .send(Err(BackendError::Internal(message.clone())));
                    }
                }
            }
            Ok(backend) => {
                r.backend = Some(backend);
                r.idle_since = Some(now);
                let generation = r.generation;
                if r.state == ReplicaState::Draining {
                    self.unload(id, "no longer wanted when it finished loading");
                    return;
                }
                r.state = ReplicaState::Ready;
                let n = self.active();
                self.event(
                    EventKind::ReplicaReady,
                    n,
                    n,
                    format!("replica {id} loaded in {load_secs:.1} s"),
                );
                if generation == self.generation {
                    if let Some(old) = rollout::replaced(&self.replicas, self.generation) {
                        self.drain(old, "rollout: replaced by a replica of the new model");
                    }
                }
                self.try_dispatch(now);
            }
        }
    }

    /// Roll replicas of an older generation over: start one new replica at a time (or, when
    /// there is no room for it, drain an old one first); each new one that is ready drains
    /// an old one (see `started`).
    fn roll(&mut self, now: Instant) {
        if !rollout::should_start_new(&self.replicas, self.generation) {
            return;
        }
        if let Err(no_room) = self.start_replica(now) {
            tracing::debug!(deployment = %self.spec.name, %no_room, "rollout: no room for a new replica");
            if let Some(old) = rollout::make_room(&self.replicas, self.generation) {
                self.drain(old, "rollout: making room for a replica of the new model");
            }
        }
    }

    fn drain(&mut self, id: u64, reason: &str) {
        let key = self.key(id);
        let Some(r) = self.replicas.get_mut(id) else {
            return;
        };
        r.state = ReplicaState::Draining;
        r.drain_reason = reason.to_owned();
        self.env.node.set_standing(&key, Standing::Leaving);
        if r.in_flight == 0 && r.backend.is_some() {
            self.unload(id, reason);
        }
    }

    /// Drop a replica and give its room back (`reason` empty: no event).
    fn unload(&mut self, id: u64, reason: &str) {
        let Some(r) = self.replicas.remove(id) else {
            return;
        };
        self.env.node.release(&self.key(id));
        if let Some(backend) = r.backend {
            // An engine stops its thread and joins it (on the blocking pool); shutdown waits
            // for these before it answers.
            self.unloading.spawn(async move {
                backend.stop().await;
                // The model's memory is freed with the last handle: off the runtime threads.
                let _ = tokio::task::spawn_blocking(move || drop(backend)).await;
            });
        }
        if !reason.is_empty() {
            let n = self.active();
            self.event(
                EventKind::ReplicaStopped,
                n,
                n,
                format!("replica {id}: {reason}"),
            );
        }
    }

    /// Tell the node which replicas another deployment may have (`yielding`).
    fn mark_standing(&self) {
        let holding = self.holding();
        for r in self.replicas.iter() {
            let standing = yielding::standing(r, &holding);
            self.env.node.set_standing(&self.key(r.id), standing);
        }
    }

    fn holding(&self) -> Holding {
        Holding {
            active: self.active(),
            ready: self.replicas.count(ReplicaState::Ready),
            min: self.spec.effective_min_replicas(),
            queue_empty: self.queue.is_empty(),
        }
    }

    /// No replica, and interactive requests wait: spare replicas of others may be drained
    /// for it.
    fn starving(&self) -> bool {
        self.active() == 0 && !self.queue.class(Priority::Interactive).is_empty()
    }

    fn update(&mut self, spec: DeploymentSpec, footprint: Footprint) {
        let reshaped = rollout::reshapes(&self.spec, &spec);
        for tenant in self.spec.tenant_weights.keys() {
            self.queue.set_weight(tenant, 1);
        }
        for (tenant, weight) in &spec.tenant_weights {
            self.queue.set_weight(tenant, *weight);
        }
        self.queue.set_config(spec.queue_config());
        self.autoscaler.set_policy(spec.scale_policy());
        self.spec = spec;
        self.footprint = footprint;
        if reshaped {
            self.generation += 1;
            let n = self.active();
            self.event(
                EventKind::Rollout,
                n,
                n,
                format!(
                    "replicas roll over to generation {} ({})",
                    self.generation, self.spec.model
                ),
            );
        }
    }

    fn key(&self, replica: u64) -> ReplicaKey {
        ReplicaKey {
            deployment: self.spec.name.clone(),
            replica,
        }
    }

    fn event(&mut self, kind: EventKind, from: usize, to: usize, reason: String) {
        self.log.push(ScaleEvent {
            at: SystemTime::now(),
            deployment: self.spec.name.clone(),
            kind,
            from,
            to,
            reason,
        });
    }
}

#[path = "actor_report.rs"]
mod report;
