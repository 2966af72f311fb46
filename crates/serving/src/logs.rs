//! The request log: one row per tenant request through [`crate::Serving::serve`] (time, key
//! prefix, model, the group member that served it, status, tokens, cost, time to first token,
//! total time, retries), handed to a bounded channel without waiting and written in batches
//! by one background task. A full channel drops the row and counts it
//! ([`RequestLogs::dropped`], exported as a metric); the request path never waits for the
//! database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use routing::Report;
use store::{RequestLogRecord, Settlement, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::ServeError;

/// Rows written in one transaction, at most.
const BATCH: usize = 512;

/// Maps a refusal to the HTTP status its API answers with (the wire layer's table).
pub type StatusOf = fn(&ServeError) -> u16;

/// The sending side of the log. Cheap to clone.
#[derive(Clone)]
pub struct RequestLogs {
    tx: mpsc::Sender<RequestLogRecord>,
    status_of: StatusOf,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    written: AtomicU64,
}

impl RequestLogs {
    /// Starts the writer on `store` with room for `capacity` rows in flight. It ends once
    /// every sender is gone and the rows queued are written, or when [`LogWriter::flush`]
    /// asks it to.
    pub fn start(store: Arc<dyn Store>, capacity: usize, status_of: StatusOf) -> (Self, LogWriter) {
        let (tx, mut rx) = mpsc::channel::<RequestLogRecord>(capacity.max(1));
        let counters = Arc::new(Counters::default());
        let writer_counters = Arc::clone(&counters);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                let received = tokio::select! {
                    n = rx.recv_many(&mut batch, BATCH) => n,
                    () = stopped.cancelled() => {
                        // No row is taken from now on; those queued are written below.
                        rx.close();
                        rx.recv_many(&mut batch, BATCH).await
                    }
                };
                if received == 0 {
                    break;
                }
                let n = batch.len() as u64;
                match store.insert_request_logs(&batch).await {
                    Ok(()) => writer_counters.written.fetch_add(n, Ordering::Relaxed),
                    Err(err) => {
                        tracing::warn!(error = %err, rows = n, "request log rows could not be written; dropped");
                        writer_counters.dropped.fetch_add(n, Ordering::Relaxed)
                    }
                };
                batch.clear();
            }
        });
        (
            Self {
                tx,
                status_of,
                counters,
            },
            LogWriter { task, stop },
        )
    }

    /// Rows dropped so far (channel full, or a failed write).
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Rows written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    fn send(&self, row: RequestLogRecord) {
        if self.tx.try_send(row).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn status(&self, err: &ServeError) -> u16 {
        (self.status_of)(err)
    }
}

/// The background task writing the log.
pub struct LogWriter {
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
}

impl LogWriter {
    /// Writes the rows still queued and ends the writer (a server shutting down, after its
    /// requests settled); rows sent afterwards are dropped. Whether it finished `within`.
    pub async fn flush(self, within: Duration) -> bool {
        self.stop.cancel();
        let task = self.task;
        tokio::time::timeout(within, task).await.is_ok()
    }
}

/// Logs a request refused before a meter took its trail (`trail` is still there): the
/// refusal's status, nothing billed.
pub(crate) fn refused<T>(trail: Option<Trail>, result: &Result<T, ServeError>) {
    if let (Some(mut trail), Err(err)) = (trail, result) {
        trail.fail(err);
        trail.finish(None);
    }
}

/// One request's row in the making.
pub(crate) struct Trail {
    logs: RequestLogs,
    row: RequestLogRecord,
    started: Instant,
    first_byte: Option<Instant>,
    status: Option<u16>,
    report: Option<Report>,
}

impl Trail {
    pub(crate) fn new(
        logs: &RequestLogs,
        (request_id, tenant_id, key_prefix): (&str, &str, &str),
        model: &str,
    ) -> Self {
        Self {
            logs: logs.clone(),
            row: RequestLogRecord {
                request_id: request_id.to_owned(),
                tenant_id: tenant_id.to_owned(),
                created_at: chrono_now(),
                key_prefix: key_prefix.to_owned(),
                model: model.to_owned(),
                member: None,
                status: 200,
                prompt_tokens: 0,
                completion_tokens: 0,
                cost: 0,
                ttft_ms: None,
                total_ms: 0,
                retries: 0,
            },
            started: Instant::now(),
            first_byte: None,
            status: None,
            report: None,
        }
    }

    pub(crate) fn set_report(&mut self, report: Report) {
        self.report = Some(report);
    }

    pub(crate) fn first_byte(&mut self) {
        self.first_byte.get_or_insert_with(Instant::now);
    }

    /// The request failed with `err` (the first failure is the one logged).
    pub(crate) fn fail(&mut self, err: &ServeError) {
        if self.status.is_none() {
            self.status = Some(self.logs.status(err));
        }
    }

    /// The client left before the end.
    pub(crate) fn abandoned(&mut self) {
        self.status.get_or_insert(499);
    }

    /// Sends the row, with what `settlement` billed.
    pub(crate) fn finish(mut self, settlement: Option<&Settlement>) {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.row.status = i64::from(self.status.unwrap_or(200));
        self.row.total_ms = ms(self.started.elapsed());
        self.row.ttft_ms = self.first_byte.map(|t| ms(t.duration_since(self.started)));
        if let Some(s) = settlement {
            self.row.prompt_tokens = s.billed.prompt_tokens;
            self.row.completion_tokens = s.billed.completion_tokens;
            self.row.cost = s.charged.amount;
        }
        if let Some(report) = &self.report {
            let routed = report.lock().unwrap_or_else(|e| e.into_inner()).clone();
            self.row.member = routed.member;
            self.row.retries = i64::from(routed.retries);
        }
        self.logs.send(self.row);
    }
}

fn chrono_now() -> store::Timestamp {
    store::Timestamp::from(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::testing::{Kind, ScratchDb};

    fn row(i: usize) -> RequestLogRecord {
        RequestLogRecord {
            request_id: format!("req-{i:05}"),
            tenant_id: "t1".into(),
            created_at: chrono_now(),
            key_prefix: "fw-abc".into(),
            model: "m".into(),
            member: None,
            status: 200,
            prompt_tokens: 1,
            completion_tokens: 2,
            cost: 3,
            ttft_ms: None,
            total_ms: 4,
            retries: 0,
        }
    }

    fn status_of(_: &ServeError) -> u16 {
        500
    }

    #[tokio::test]
    async fn flush_writes_every_queued_row_then_refuses_more() {
        let db = ScratchDb::new(Kind::Sqlite).await;
        let store = store::open(&db.url).await.expect("scratch store");
        let rows = 3000;
        let (logs, writer) = RequestLogs::start(store.clone(), rows, status_of);
        for i in 0..rows {
            logs.send(row(i));
        }
        assert!(
            writer.flush(Duration::from_secs(30)).await,
            "flushed in time"
        );
        assert_eq!(
            logs.written(),
            rows as u64,
            "every queued row written by flush"
        );
        let page = store
            .request_logs(&store::LogQuery {
                tenant_id: "t1".into(),
                model: None,
                status: None,
                since: None,
                until: None,
                limit: 10_000,
                after: None,
            })
            .await
            .expect("read back");
        assert_eq!(page.logs.len(), rows);
        logs.send(row(rows));
        assert_eq!(
            logs.dropped(),
            1,
            "a row after the flush is dropped and counted"
        );
    }
}
