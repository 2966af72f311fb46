//! A process's claim on a batch: several processes may share one database (a cluster's
//! gateways), and a batch runs in exactly one of them, the one holding its lease
//! (`lease_owner` until `lease_expires_at`). The holder renews it every third of its length;
//! a renewal finding another owner (this process stalled past its lease and another took the
//! batch over) or failing until the lease would have lapsed stops the runner before it starts
//! another line. A process that dies stops renewing: once the lease lapses, another process's
//! takeover loop claims the batch and resumes it from its rows (see `runner` for why that
//! neither reruns nor re-bills a finished line).
//!
//! Lease times are the processes' clocks: they must agree to well within the lease (30 s by
//! default), as NTP keeps them.

use std::sync::Arc;
use std::time::Duration;

use store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// A held lease, renewed in the background until [`Lease::end`].
pub(crate) struct Lease {
    store: Arc<dyn Store>,
    id: String,
    owner: String,
    /// Cancelled when the lease is lost.
    lost: CancellationToken,
    renewal: JoinHandle<()>,
}

fn until(length: Duration) -> store::Timestamp {
    chrono::Utc::now() + chrono::TimeDelta::from_std(length).unwrap_or(chrono::TimeDelta::MAX)
}

impl Lease {
    /// Claims batch `id` for `owner` for `length`; `None` when another process holds it (or
    /// it is finished). Losing the lease later cancels `stop`.
    pub(crate) async fn claim(
        store: Arc<dyn Store>,
        id: &str,
        owner: &str,
        length: Duration,
        stop: &CancellationToken,
    ) -> Result<Option<Self>> {
        let now = chrono::Utc::now();
        if !store.claim_batch(id, owner, now, until(length)).await? {
            return Ok(None);
        }
        let lost = CancellationToken::new();
        let renewal = tokio::spawn(renew(
            store.clone(),
            (id.to_owned(), owner.to_owned()),
            length,
            lost.clone(),
            stop.clone(),
        ));
        Ok(Some(Self {
            store,
            id: id.to_owned(),
            owner: owner.to_owned(),
            lost,
            renewal,
        }))
    }

    /// Whether the lease was lost (the runner must start nothing more).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Stops renewing and gives the lease up (unless it was lost), so another process may
    /// take the batch at once if it is unfinished.
    pub(crate) async fn end(self) {
        self.renewal.abort();
        if self.is_lost() {
            return;
        }
        if let Err(e) = self.store.release_batch_lease(&self.id, &self.owner).await {
            tracing::warn!(batch = %self.id, error = %e, "could not give up a batch's lease; it lapses");
        }
    }
}

async fn renew(
    store: Arc<dyn Store>,
    (id, owner): (String, String),
    length: Duration,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    let every = length / 3;
    // Until when the lease is surely ours: the last renewal's expiry, minus a renewal period
    // for the clocks and the statement's own time.
    let mut ours_until = tokio::time::Instant::now() + length - every;
    loop {
        tokio::time::sleep(every).await;
        let renewed = store.renew_batch_lease(&id, &owner, until(length)).await;
        match renewed {
            Ok(true) => ours_until = tokio::time::Instant::now() + length - every,
            Ok(false) => {
                tracing::warn!(batch = %id, "another process took this batch over; its runner here stops");
                break;
            }
            Err(e) if tokio::time::Instant::now() >= ours_until => {
                tracing::warn!(batch = %id, error = %e, "could not renew a batch's lease before it lapsed; its runner here stops");
                break;
            }
            Err(e) => {
                tracing::warn!(batch = %id, error = %e, "could not renew a batch's lease; trying again")
            }
        }
    }
    lost.cancel();
    stop.cancel();
}
