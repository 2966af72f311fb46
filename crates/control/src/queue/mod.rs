//! A deployment's admission queue: bounded, with a maximum wait, and fair across tenants.
//!
//! [`State`] is pure (no threads, no clock of its own: every method takes `now`), so tests step
//! it directly. The deployment's actor owns one and applies what it decides.
//!
//! **Fairness** is start-time fair queuing: every tenant (the `None` tenant is a class of its
//! own) has a virtual finish time; a request's tag is `max(V, tenant's last finish) + 1/weight`,
//! where `V` is the tag of the request taken last, and requests are taken in tag order (ties
//! in arrival order). A tenant with a backlog of 500 therefore cannot delay another tenant's
//! k-th request by more than about k of its own (weight 1 each): B's k-th request is taken at a
//! position ≤ 2k. Weights give a tenant proportionally more turns.
//!
//! **Shares** bound what one tenant may *hold*: fair order alone decides who goes next, but a
//! tenant that fills the whole queue still locks every other tenant out of it. So a tenant may
//! hold at most `max(1, max_length × tenant_share_percent / 100)` waiting requests (half by
//! default); one more is refused with a `Retry-After` of its own: the time until its first
//! waiting request is taken, which frees a place in its share. Requests without a tenant (the
//! admin, or a server without keys, where everyone is that one class) are bounded by
//! `max_length` alone.

mod classes;
mod drain;
mod eta;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

pub use classes::{Classes, Priority, BATCH_MAX_WAIT};
pub use drain::DrainRate;
pub use eta::QueueDrain;

/// Tag units per request at weight 1 (weights divide it).
const TAG_UNIT: u64 = 1 << 20;
/// `Retry-After` never exceeds this many seconds.
pub const RETRY_AFTER_CAP_SECS: u64 = 300;

/// A tenant's share of a queue unless configured: half, so one tenant never holds it all.
pub const DEFAULT_TENANT_SHARE_PERCENT: u8 = 50;

/// Identifies a waiting request (unique within one queue).
pub type TicketId = u64;

/// A tenant's class in the queue: its id, or `None` for requests without a tenant.
pub type TenantKey = Option<String>;

#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Requests that may wait at once; one more is refused (429).
    pub max_length: usize,
    /// A request waiting longer is removed with a timeout (503).
    pub max_wait: Duration,
    /// Percent of `max_length` one tenant may hold (1..=100; at least one request).
    pub tenant_share_percent: u8,
    /// Completions per second per slot assumed before any were observed.
    pub prior_per_slot_per_sec: f64,
}

impl QueueConfig {
    /// Waiting requests one tenant may hold: its share of `max_length`, at least one.
    pub fn per_tenant_limit(&self) -> usize {
        let percent = usize::from(self.tenant_share_percent.clamp(1, 100));
        (self.max_length.saturating_mul(percent) / 100).max(1)
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_length: 1024,
            max_wait: Duration::from_secs(60),
            tenant_share_percent: DEFAULT_TENANT_SHARE_PERCENT,
            prior_per_slot_per_sec: 1.0,
        }
    }
}

/// Where a request stands in line: 1 = next, with the estimated wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub position: usize,
    pub eta_ms: u64,
}

/// Why the queue refused a request, with the seconds after which a retry may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue holds `max_length` requests.
    Full { queued: usize, retry_after: u64 },
    /// The request's tenant already holds its share (`limit`) of the queue; `retry_after` is
    /// the time until its first waiting request is taken.
    OverShare {
        waiting: usize,
        limit: usize,
        retry_after: u64,
    },
}

impl Refusal {
    pub fn retry_after(&self) -> u64 {
        match *self {
            Refusal::Full { retry_after, .. } | Refusal::OverShare { retry_after, .. } => {
                retry_after
            }
        }
    }
}

/// A request leaving the queue (taken, expired or cancelled), with what is needed to put it
/// back in its old place ([`State::requeue`]).
#[derive(Debug)]
pub struct Entry<T> {
    pub id: TicketId,
    pub tenant: TenantKey,
    pub enqueued: Instant,
    pub item: T,
    tag: u64,
}

impl<T> Entry<T> {
    /// How long it has waited at `now`.
    pub fn waited(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.enqueued)
    }
}

#[derive(Debug)]
struct Waiting<T> {
    tenant: TenantKey,
    enqueued: Instant,
    item: T,
}

#[derive(Debug)]
pub struct State<T> {
    config: QueueConfig,
    /// Waiting requests in the order they will be taken: (tag, id).
    order: BTreeMap<(u64, TicketId), Waiting<T>>,
    /// id → tag, in arrival order (ids increase), for expiry and removal.
    arrivals: BTreeMap<TicketId, u64>,
    /// Waiting requests per tenant (only tenants with at least one).
    held: HashMap<TenantKey, usize>,
    last_finish: HashMap<TenantKey, u64>,
    weights: HashMap<String, u32>,
    virtual_time: u64,
    next_id: TicketId,
    drain: QueueDrain,
}

impl<T> State<T> {
    pub fn new(config: QueueConfig) -> Self {
        let drain = QueueDrain::new(config.prior_per_slot_per_sec);
        Self {
            config,
            order: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            held: HashMap::new(),
            last_finish: HashMap::new(),
            weights: HashMap::new(),
            virtual_time: 0,
            next_id: 0,
            drain,
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// New bounds apply to requests arriving from now on; waiting ones stay.
    pub fn set_config(&mut self, config: QueueConfig) {
        self.config = config;
    }

    /// A tenant's share relative to others (default 1; 0 is treated as 1).
    pub fn set_weight(&mut self, tenant: &str, weight: u32) {
        if weight <= 1 {
            self.weights.remove(tenant);
        } else {
            self.weights.insert(tenant.to_owned(), weight);
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn drain_rate(&self) -> &QueueDrain {
        &self.drain
    }

    /// The capacity serving this queue from `now` on: slots on ready replicas, and the slots it
    /// will have once loading replicas are ready (see [`QueueDrain::set_slots`]).
    pub fn set_slots(&mut self, now: Instant, ready: usize, planned: usize) {
        self.drain.set_slots(now, ready, planned);
    }

    /// `Retry-After` for a refusal at `now`: the time the current backlog needs to drain.
    pub fn retry_after(&self) -> u64 {
        self.drain
            .retry_after_secs(self.len().max(1), RETRY_AFTER_CAP_SECS)
    }

    /// Waiting requests of this tenant.
    pub fn held_by(&self, tenant: &TenantKey) -> usize {
        self.held.get(tenant).copied().unwrap_or(0)
    }

    /// Put a request in line, or refuse it when its tenant holds its share or the queue is full.
    pub fn push(
        &mut self,
        tenant: TenantKey,
        item: T,
        now: Instant,
    ) -> Result<(TicketId, Position), Refusal> {
        self.drain.observe(now, !self.is_empty());
        let waiting = self.held_by(&tenant);
        let limit = self.config.per_tenant_limit();
        if tenant.is_some() && waiting >= limit {
            return Err(Refusal::OverShare {
                waiting,
                limit,
                retry_after: self.retry_after_for(&tenant),
            });
        }
        if self.len() >= self.config.max_length {
            return Err(Refusal::Full {
                queued: self.len(),
                retry_after: self.retry_after(),
            });
        }
        let weight = tenant
            .as_deref()
            .and_then(|t| self.weights.get(t))
            .copied()
            .unwrap_or(1)
            .max(1);
        let start = self
            .last_finish
            .get(&tenant)
            .copied()
            .unwrap_or(0)
            .max(self.virtual_time);
        let tag = start.saturating_add(TAG_UNIT / u64::from(weight));
        self.last_finish.insert(tenant.clone(), tag);
        *self.held.entry(tenant.clone()).or_insert(0) += 1;
        let id = self.next_id;
        self.next_id += 1;
        self.order.insert(
            (tag, id),
            Waiting {
                tenant,
                enqueued: now,
                item,
            },
        );
        self.arrivals.insert(id, tag);
        self.drain.observe(now, true);
        let position = self.order.range(..(tag, id)).count() + 1;
        Ok((id, self.position_at(position)))
    }

    /// Put a request at the head of the line, before every waiting one: a stream that was
    /// admitted and generating elsewhere (moved off a lost node), whose client is mid-answer.
    /// Neither the queue's bound nor its tenant's share refuses it (it was admitted once), and
    /// its tenant's fair-share turn is not charged again. Heads keep their arrival order.
    pub fn push_front(&mut self, tenant: TenantKey, item: T, now: Instant) -> (TicketId, Position) {
        self.drain.observe(now, !self.is_empty());
        *self.held.entry(tenant.clone()).or_insert(0) += 1;
        let id = self.next_id;
        self.next_id += 1;
        // Tag 0 sorts before every fair tag (each is at least one unit past the virtual time).
        self.order.insert(
            (0, id),
            Waiting {
                tenant,
                enqueued: now,
                item,
            },
        );
        self.arrivals.insert(id, 0);
        self.drain.observe(now, true);
        let position = self.order.range(..(0, id)).count() + 1;
        (id, self.position_at(position))
    }

    /// Take the next request in fair order.
    pub fn pop(&mut self, now: Instant) -> Option<Entry<T>> {
        self.drain.observe(now, !self.is_empty());
        let ((tag, id), waiting) = self.order.pop_first()?;
        self.arrivals.remove(&id);
        self.release(&waiting.tenant);
        self.drain.observe(now, !self.is_empty());
        self.virtual_time = self.virtual_time.max(tag);
        self.forget_idle_tenants();
        Some(Entry {
            id,
            tenant: waiting.tenant,
            enqueued: waiting.enqueued,
            item: waiting.item,
            tag,
        })
    }

    /// The next request in fair order, without taking it.
    pub fn peek(&self) -> Option<(TicketId, &T)> {
        self.order.iter().next().map(|((_, id), w)| (*id, &w.item))
    }

    /// Put a taken request back in its old place (its replica refused it). It keeps its tag and
    /// its arrival time, so it neither loses its turn nor gains wait allowance.
    pub fn requeue(&mut self, entry: Entry<T>) {
        self.arrivals.insert(entry.id, entry.tag);
        *self.held.entry(entry.tenant.clone()).or_insert(0) += 1;
        self.order.insert(
            (entry.tag, entry.id),
            Waiting {
                tenant: entry.tenant,
                enqueued: entry.enqueued,
                item: entry.item,
            },
        );
    }

    /// The waiting request with this id.
    pub fn get_mut(&mut self, id: TicketId) -> Option<&mut T> {
        let tag = *self.arrivals.get(&id)?;
        self.order.get_mut(&(tag, id)).map(|w| &mut w.item)
    }

    /// Remove a waiting request (its client left).
    pub fn remove(&mut self, id: TicketId) -> Option<Entry<T>> {
        let tag = self.arrivals.remove(&id)?;
        let waiting = self.order.remove(&(tag, id))?;
        self.release(&waiting.tenant);
        Some(Entry {
            id,
            tenant: waiting.tenant,
            enqueued: waiting.enqueued,
            item: waiting.item,
            tag,
        })
    }

    /// Remove and return every request that has waited `max_wait` or longer at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Entry<T>> {
        self.drain.observe(now, !self.is_empty());
        let max_wait = self.config.max_wait;
        let mut expired = Vec::new();
        // Ids increase with arrival, and arrival times do not decrease, so the expired
        // requests are a prefix of `arrivals` (requeued ones keep their old id and time).
        while let Some((&id, &tag)) = self.arrivals.first_key_value() {
            let Some(w) = self.order.get(&(tag, id)) else {
                self.arrivals.remove(&id);
                continue;
            };
            if now.saturating_duration_since(w.enqueued) < max_wait {
                break;
            }
            if let Some(entry) = self.remove(id) {
                expired.push(entry);
            }
        }
        self.drain.observe(now, !self.is_empty());
        expired
    }

    /// When the oldest waiting request times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        let (&id, &tag) = self.arrivals.first_key_value()?;
        let w = self.order.get(&(tag, id))?;
        Some(w.enqueued + self.config.max_wait)
    }

    /// A request that held a slot for `service` completed at `now`, while `busy` of its
    /// replica's `slots` were serving (the drain rate's evidence, see [`QueueDrain::record`]).
    pub fn record_completion(
        &mut self,
        now: Instant,
        service: Duration,
        busy: usize,
        slots: usize,
    ) {
        self.drain.record(now, service, busy, slots);
    }

    /// Every waiting request with its position and ETA, in the order they will be taken.
    pub fn positions(&self) -> impl Iterator<Item = (TicketId, &T, Position)> + '_ {
        self.order
            .iter()
            .enumerate()
            .map(|(i, ((_, id), w))| (*id, &w.item, self.position_at(i + 1)))
    }

    /// Mutable access to waiting items in fair order (e.g. to note what was last reported).
    pub fn items_mut(&mut self) -> impl Iterator<Item = (TicketId, &mut T)> + '_ {
        self.order.iter_mut().map(|((_, id), w)| (*id, &mut w.item))
    }

    /// Ids of waiting requests for which `f` holds.
    pub fn ids_where(&self, mut f: impl FnMut(&T) -> bool) -> Vec<TicketId> {
        self.order
            .iter()
            .filter(|(_, w)| f(&w.item))
            .map(|((_, id), _)| *id)
            .collect()
    }

    /// `Retry-After` for a tenant over its share: until its first waiting request is taken.
    fn retry_after_for(&self, tenant: &TenantKey) -> u64 {
        let first = self
            .order
            .values()
            .position(|w| &w.tenant == tenant)
            .map_or(1, |i| i + 1);
        self.drain.retry_after_secs(first, RETRY_AFTER_CAP_SECS)
    }

    /// One of this tenant's requests left the queue.
    fn release(&mut self, tenant: &TenantKey) {
        if let Some(n) = self.held.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(tenant);
            }
        }
    }

    fn position_at(&self, position: usize) -> Position {
        Position {
            position,
            eta_ms: self.drain.eta_ms(position),
        }
    }

    /// Tenants whose virtual finish is behind `V` and who wait for nothing need no entry:
    /// their next request starts at `V` either way. Keeps the map bounded by the queue.
    fn forget_idle_tenants(&mut self) {
        if self.last_finish.len() <= 2 * self.order.len() + 16 {
            return;
        }
        let v = self.virtual_time;
        self.last_finish.retain(|_, finish| *finish > v);
    }
}
