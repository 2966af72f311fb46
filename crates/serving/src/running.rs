//! The tenant requests this process is serving, so that all of one tenant's can be ended at
//! once (deleting a tenant), whether or not anyone is reading them.
//!
//! Cancellation stays by drop: a served request's backend stream and meter (its [`Parts`]) sit
//! in a [`Slot`] while nobody reads them, and [`Served::next`](crate::Served::next) takes them
//! out only while it polls. Ending a request cancels its token and drops what the slot holds:
//! the backend's stream (the request leaves its queue or frees its slot) and the meter (which
//! settles what was delivered). A `next` in progress sees the token and drops them itself;
//! one in a ledger step drops them as it finishes. So a stream whose client stopped reading
//! ends too, not only one being polled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use backend::EventStream;
use tokio_util::sync::CancellationToken;

use crate::meter::Meter;

/// What a served request holds while it runs.
pub(crate) struct Parts {
    pub events: EventStream,
    /// `None` for requests nobody pays for (the admin key).
    pub meter: Option<Meter>,
}

/// Where a request's [`Parts`] wait between reads.
pub(crate) struct Slot {
    pub token: CancellationToken,
    parts: Mutex<Option<Parts>>,
}

impl Slot {
    pub(crate) fn new(parts: Parts, token: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            token,
            parts: Mutex::new(Some(parts)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Option<Parts>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The parts, to poll; `None` once the request was ended. Given back when the [`Taken`]
    /// drops, unless the request was ended meanwhile.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Taken> {
        if self.token.is_cancelled() {
            drop(self.lock().take());
            return None;
        }
        let parts = self.lock().take()?;
        Some(Taken {
            slot: Arc::clone(self),
            parts: Some(parts),
        })
    }

    /// Ends the request: whatever waits in the slot is dropped now.
    fn end(&self) {
        self.token.cancel();
        let parts = self.lock().take();
        drop(parts);
    }
}

/// A request's parts while [`Served::next`](crate::Served::next) uses them.
pub(crate) struct Taken {
    slot: Arc<Slot>,
    parts: Option<Parts>,
}

impl Taken {
    /// Always `Some` (only `drop` takes them out).
    pub(crate) fn parts(&mut self) -> Option<&mut Parts> {
        self.parts.as_mut()
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        let Some(parts) = self.parts.take() else {
            return;
        };
        let mut slot = self.slot.lock();
        // Decided under the lock `Slot::end` takes after cancelling, so the parts are either
        // back in the slot before `end` empties it, or dropped here.
        if self.slot.token.is_cancelled() {
            drop(slot);
            drop(parts);
        } else {
            *slot = Some(parts);
        }
    }
}

/// The tenant requests in flight in this process. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Running {
    inner: Arc<Mutex<Requests>>,
}

#[derive(Default)]
struct Requests {
    next: u64,
    by_id: HashMap<u64, Entry>,
}

struct Entry {
    tenant_id: String,
    request_id: String,
    token: CancellationToken,
    slot: Option<Arc<Slot>>,
}

/// A request's place in [`Running`]; it leaves when this drops.
pub(crate) struct Registration {
    running: Running,
    id: u64,
    pub token: CancellationToken,
}

impl Registration {
    /// Where its parts wait, once the backend started it.
    pub(crate) fn attach(&self, slot: &Arc<Slot>) {
        if let Some(entry) = self.running.lock().by_id.get_mut(&self.id) {
            entry.slot = Some(Arc::clone(slot));
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.running.lock().by_id.remove(&self.id);
    }
}

impl Running {
    fn lock(&self) -> MutexGuard<'_, Requests> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a request of `tenant_id` before it is admitted, so one admitted while its
    /// tenant is being deleted is ended too.
    pub(crate) fn register(&self, tenant_id: &str, request_id: &str) -> Registration {
        let token = CancellationToken::new();
        let mut requests = self.lock();
        requests.next += 1;
        let id = requests.next;
        requests.by_id.insert(
            id,
            Entry {
                tenant_id: tenant_id.to_owned(),
                request_id: request_id.to_owned(),
                token: token.clone(),
                slot: None,
            },
        );
        Registration {
            running: self.clone(),
            id,
            token,
        }
    }

    /// Ends every request of `tenant_id` (see the module docs); their ids.
    pub(crate) fn end_tenant(&self, tenant_id: &str) -> Vec<String> {
        let ended: Vec<(String, CancellationToken, Option<Arc<Slot>>)> = self
            .lock()
            .by_id
            .values()
            .filter(|e| e.tenant_id == tenant_id)
            .map(|e| (e.request_id.clone(), e.token.clone(), e.slot.clone()))
            .collect();
        // Outside the registry's lock: dropping a meter spawns its settlement.
        ended
            .into_iter()
            .map(|(request_id, token, slot)| {
                token.cancel();
                if let Some(slot) = slot {
                    slot.end();
                }
                request_id
            })
            .collect()
    }
}
