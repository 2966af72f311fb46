//! The Batch API's rows (`store::BatchStore`) on both databases: a batch and its lines are
//! written together or not at all and read back for their tenant only; listings page newest
//! first; status moves only from the statuses named; a line starts and finishes only while
//! pending, its batch's counts moving with it; pending lines fail together; the tenant's
//! removal takes its batches and lines; a tenant's enqueued tokens are its pending lines' in
//! unfinished batches, and a limit on them refuses a batch whole; one process at a time holds
//! a batch's lease, until it lapses. Every scenario runs twice, `NAME::sqlite` and
//! `NAME::postgres`.

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use store::testing::{Kind, ScratchDb};
use store::{
    removal, BatchCreate, BatchLine, BatchRecord, LineEnd, LineState, NewTenant, Store, StoreError,
    Timestamp,
};

struct Fixture {
    store: Arc<dyn Store>,
    _scratch: ScratchDb,
}

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
        + TimeDelta::microseconds(250)
}

fn batch(id: &str, tenant: &str, at: Timestamp, total: i64) -> BatchRecord {
    BatchRecord {
        id: id.to_owned(),
        tenant_id: tenant.to_owned(),
        key_id: Some("key-1".into()),
        endpoint: "/v1/chat/completions".into(),
        model: Some("smol".into()),
        input_file_id: "file-1".into(),
        completion_window: "24h".into(),
        status: "validating".into(),
        output_file_id: None,
        error_file_id: None,
        errors: None,
        metadata: Some(r#"{"a":"b"}"#.into()),
        total,
        completed: 0,
        failed: 0,
        created_at: at,
        in_progress_at: None,
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        expired_at: None,
        cancelling_at: None,
        cancelled_at: None,
        expires_at: at + TimeDelta::hours(24),
    }
}

fn line(no: i64, state: LineState) -> BatchLine {
    BatchLine {
        line_no: no,
        custom_id: format!("c{no}"),
        body: (state == LineState::Pending).then(|| r#"{"model":"smol"}"#.to_owned()),
        state,
        attempt: 0,
        result: None,
        error_code: (state == LineState::Failed).then(|| "invalid_request".to_owned()),
        error_message: None,
        est_tokens: if state == LineState::Pending { 10 } else { 0 },
    }
}

impl Fixture {
    async fn new(kind: Kind) -> Self {
        let scratch = ScratchDb::new(kind).await;
        let store = store::open(&scratch.url).await.expect("open the store");
        for id in ["a", "b"] {
            store
                .create_tenant(&NewTenant {
                    id: id.to_owned(),
                    name: format!("{id}-name"),
                    created_at: t0(),
                    free_tier_only: false,
                    rpm: None,
                    tpm: None,
                    grant_tokens: 0,
                })
                .await
                .expect("create tenant");
        }
        Self {
            store,
            _scratch: scratch,
        }
    }
}

store::on_both!(Fixture;
    created_with_lines_and_read_by_its_tenant_only,
    listing_pages_newest_first,
    status_moves_only_from_the_named_statuses,
    lines_finish_once_with_their_counts,
    removal_takes_batches_and_lines,
    enqueued_tokens_are_pending_lines_of_unfinished_batches,
    one_owner_holds_a_lease_until_it_lapses,
);

async fn created_with_lines_and_read_by_its_tenant_only(f: Fixture) {
    let mut b = batch("batch_1", "a", t0(), 3);
    b.failed = 1;
    let lines = [
        line(0, LineState::Pending),
        line(1, LineState::Failed),
        line(2, LineState::Pending),
    ];
    f.store
        .create_batch(&b, &lines, None, None)
        .await
        .expect("create");
    assert_eq!(f.store.batch("a", "batch_1").await.expect("read"), b);
    assert_eq!(f.store.batch_by_id("batch_1").await.expect("read"), b);
    assert!(matches!(
        f.store.batch("b", "batch_1").await,
        Err(StoreError::NotFound { .. })
    ));
    let all = f.store.batch_lines("batch_1", -1, 10).await.expect("lines");
    assert_eq!(all, lines);
    let pending = f
        .store
        .pending_lines("batch_1", -1, 10)
        .await
        .expect("pending");
    assert_eq!(
        pending.iter().map(|l| l.line_no).collect::<Vec<_>>(),
        [0, 2]
    );
    let after = f
        .store
        .pending_lines("batch_1", 0, 10)
        .await
        .expect("pending");
    assert_eq!(after.iter().map(|l| l.line_no).collect::<Vec<_>>(), [2]);

    // A taken id writes nothing, lines included; an unknown tenant is refused.
    let again = f
        .store
        .create_batch(&b, &[line(9, LineState::Pending)], None, None)
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(
        f.store.batch_lines("batch_1", -1, 10).await.expect("lines"),
        lines
    );
    let ghost = f
        .store
        .create_batch(&batch("batch_2", "nobody", t0(), 1), &[], None, None)
        .await;
    assert!(
        matches!(ghost, Err(StoreError::NotFound { .. })),
        "{ghost:?}"
    );
    assert!(f.store.batch_by_id("batch_2").await.is_err());
}

async fn listing_pages_newest_first(f: Fixture) {
    for (i, id) in ["batch_x", "batch_y", "batch_z"].iter().enumerate() {
        let at = t0() + TimeDelta::seconds(i as i64);
        f.store
            .create_batch(&batch(id, "a", at, 0), &[], None, None)
            .await
            .expect("create");
    }
    f.store
        .create_batch(&batch("batch_other", "b", t0(), 0), &[], None, None)
        .await
        .expect("create");
    let ids = |p: store::BatchPage| p.batches.into_iter().map(|b| b.id).collect::<Vec<_>>();
    let first = f.store.batches("a", None, 2).await.expect("page");
    assert!(first.has_more);
    assert_eq!(ids(first), ["batch_z", "batch_y"]);
    let rest = f
        .store
        .batches("a", Some("batch_y"), 2)
        .await
        .expect("page");
    assert!(!rest.has_more);
    assert_eq!(ids(rest), ["batch_x"]);
    assert!(matches!(
        f.store.batches("a", Some("batch_other"), 2).await,
        Err(StoreError::NotFound { .. })
    ));
    let unfinished = f.store.unfinished_batches().await.expect("unfinished");
    assert_eq!(unfinished.len(), 4);
}

async fn status_moves_only_from_the_named_statuses(f: Fixture) {
    f.store
        .create_batch(&batch("batch_1", "a", t0(), 0), &[], None, None)
        .await
        .expect("create");
    let at = t0() + TimeDelta::seconds(5);
    let moved = f
        .store
        .transition_batch("batch_1", &["validating"], "in_progress", at)
        .await
        .expect("move")
        .expect("moved");
    assert_eq!(
        (moved.status.as_str(), moved.in_progress_at),
        ("in_progress", Some(at))
    );
    let not = f
        .store
        .transition_batch("batch_1", &["validating"], "in_progress", at)
        .await
        .expect("move");
    assert_eq!(not, None, "not from a status it is not in");
    let done = f
        .store
        .finish_batch(
            "batch_1",
            &["in_progress"],
            "cancelled",
            (Some("file-out"), None),
            None,
            at,
        )
        .await
        .expect("finish")
        .expect("finished");
    assert_eq!(done.status, "cancelled");
    assert_eq!(done.output_file_id.as_deref(), Some("file-out"));
    assert_eq!(done.error_file_id, None);
    assert_eq!(done.cancelled_at, Some(at));
    assert!(f.store.unfinished_batches().await.expect("list").is_empty());
    assert!(f
        .store
        .transition_batch("batch_1", &["in_progress"], "bogus", at)
        .await
        .is_err());
}

async fn lines_finish_once_with_their_counts(f: Fixture) {
    let lines: Vec<_> = (0..4).map(|n| line(n, LineState::Pending)).collect();
    f.store
        .create_batch(&batch("batch_1", "a", t0(), 4), &lines, None, None)
        .await
        .expect("create");
    assert_eq!(
        f.store.start_line("batch_1", 0).await.expect("start"),
        Some(1)
    );
    assert_eq!(
        f.store.start_line("batch_1", 0).await.expect("start"),
        Some(2)
    );
    let done = LineEnd {
        state: LineState::Done,
        result: Some(r#"{"custom_id":"c0"}"#),
        error_code: None,
        error_message: None,
    };
    assert!(f
        .store
        .finish_line("batch_1", 0, &done)
        .await
        .expect("finish"));
    assert!(
        !f.store
            .finish_line("batch_1", 0, &done)
            .await
            .expect("finish"),
        "a finished line is not finished again"
    );
    assert_eq!(f.store.start_line("batch_1", 0).await.expect("start"), None);
    let failed = LineEnd {
        state: LineState::Failed,
        result: None,
        error_code: Some("insufficient_quota"),
        error_message: Some("no money"),
    };
    assert!(f
        .store
        .finish_line("batch_1", 1, &failed)
        .await
        .expect("finish"));
    assert_eq!(
        f.store
            .fail_pending_lines("batch_1", "batch_expired", "late")
            .await
            .expect("fail"),
        2
    );
    let b = f.store.batch_by_id("batch_1").await.expect("read");
    assert_eq!((b.completed, b.failed), (1, 3));
    let all = f.store.batch_lines("batch_1", -1, 10).await.expect("lines");
    assert_eq!(all[0].state, LineState::Done);
    assert_eq!(all[0].attempt, 2);
    assert_eq!(all[0].result.as_deref(), Some(r#"{"custom_id":"c0"}"#));
    assert_eq!(all[1].error_code.as_deref(), Some("insufficient_quota"));
    assert_eq!(all[3].error_code.as_deref(), Some("batch_expired"));
    assert!(f
        .store
        .pending_lines("batch_1", -1, 10)
        .await
        .expect("pending")
        .is_empty());
}

async fn removal_takes_batches_and_lines(f: Fixture) {
    f.store
        .create_batch(
            &batch("batch_a", "a", t0(), 1),
            &[line(0, LineState::Pending)],
            None,
            None,
        )
        .await
        .expect("create");
    f.store
        .create_batch(
            &batch("batch_b", "b", t0(), 1),
            &[line(0, LineState::Pending)],
            None,
            None,
        )
        .await
        .expect("create");
    let plan = f.store.tenant_removal("a").await.expect("plan");
    assert_eq!(plan.removed(removal::BATCHES), ["batch_a"]);
    assert_eq!(plan.removed(removal::BATCH_LINES), ["batch_a"]);
    let done = f
        .store
        .remove_tenant("a", t0() + TimeDelta::seconds(1))
        .await
        .expect("remove");
    assert_eq!(done.removed(removal::BATCHES), ["batch_a"]);
    assert!(f.store.batch_by_id("batch_a").await.is_err());
    assert_eq!(
        f.store.batch_lines("batch_a", -1, 10).await.expect("lines"),
        []
    );
    assert_eq!(
        f.store.batch("b", "batch_b").await.expect("kept").id,
        "batch_b"
    );
}

async fn enqueued_tokens_are_pending_lines_of_unfinished_batches(f: Fixture) {
    let created = |r: store::Result<BatchCreate>| r.expect("create");
    let lines = [
        line(0, LineState::Pending),
        line(1, LineState::Failed),
        line(2, LineState::Pending),
    ];
    // 20 tokens pending: within a limit of 30; a second batch of 20 would pass it.
    let b1 = batch("batch_1", "a", t0(), 3);
    assert_eq!(
        created(f.store.create_batch(&b1, &lines, Some(30), None).await),
        BatchCreate::Created
    );
    assert_eq!(f.store.enqueued_batch_tokens("a").await.expect("sum"), 20);
    assert_eq!(f.store.enqueued_batch_tokens("b").await.expect("sum"), 0);
    let b2 = batch("batch_2", "a", t0(), 3);
    assert_eq!(
        created(f.store.create_batch(&b2, &lines, Some(30), None).await),
        BatchCreate::OverLimit {
            enqueued: 20,
            limit: 30
        }
    );
    assert!(
        f.store.batch_by_id("batch_2").await.is_err(),
        "nothing written"
    );
    // Another tenant has its own room; no limit is no limit.
    let other = batch("batch_3", "b", t0(), 3);
    assert_eq!(
        created(f.store.create_batch(&other, &lines, Some(30), None).await),
        BatchCreate::Created
    );
    let end = LineEnd {
        state: LineState::Done,
        result: Some("{}"),
        error_code: None,
        error_message: None,
    };
    // A line that ran holds nothing; a finished batch holds nothing.
    assert!(f
        .store
        .finish_line("batch_1", 0, &end)
        .await
        .expect("finish"));
    assert_eq!(f.store.enqueued_batch_tokens("a").await.expect("sum"), 10);
    assert_eq!(
        created(f.store.create_batch(&b2, &lines, Some(30), None).await),
        BatchCreate::Created
    );
    assert_eq!(f.store.enqueued_batch_tokens("a").await.expect("sum"), 30);
    f.store
        .transition_batch("batch_1", &["validating"], "cancelled", t0())
        .await
        .expect("cancel")
        .expect("moved");
    assert_eq!(f.store.enqueued_batch_tokens("a").await.expect("sum"), 20);
    let b4 = batch("batch_4", "a", t0(), 3);
    assert_eq!(
        created(f.store.create_batch(&b4, &lines, None, None).await),
        BatchCreate::Created
    );
    assert_eq!(f.store.enqueued_batch_tokens("a").await.expect("sum"), 40);
}

async fn one_owner_holds_a_lease_until_it_lapses(f: Fixture) {
    let s = |n: i64| t0() + TimeDelta::seconds(n);
    f.store
        .create_batch(&batch("batch_1", "a", t0(), 0), &[], None, None)
        .await
        .expect("create");
    let ids = |v: Vec<BatchRecord>| v.into_iter().map(|b| b.id).collect::<Vec<_>>();
    assert_eq!(
        ids(f.store.unleased_batches(s(0)).await.expect("unleased")),
        ["batch_1"]
    );
    // p1 claims it until 30 s; p2 cannot while that lease is live, p1 may again.
    assert!(f
        .store
        .claim_batch("batch_1", "p1", s(0), s(30))
        .await
        .expect("claim"));
    assert!(!f
        .store
        .claim_batch("batch_1", "p2", s(10), s(40))
        .await
        .expect("claim"));
    assert!(f
        .store
        .claim_batch("batch_1", "p1", s(10), s(40))
        .await
        .expect("claim"));
    assert!(ids(f.store.unleased_batches(s(20)).await.expect("unleased")).is_empty());
    // Renewed by its owner only.
    assert!(f
        .store
        .renew_batch_lease("batch_1", "p1", s(60))
        .await
        .expect("renew"));
    assert!(!f
        .store
        .renew_batch_lease("batch_1", "p2", s(90))
        .await
        .expect("renew"));
    assert!(!f
        .store
        .claim_batch("batch_1", "p2", s(50), s(80))
        .await
        .expect("claim"));
    // p1 stops renewing (it died): once the lease lapsed, p2 takes it over and p1 has lost it.
    assert_eq!(
        ids(f.store.unleased_batches(s(61)).await.expect("unleased")),
        ["batch_1"]
    );
    assert!(f
        .store
        .claim_batch("batch_1", "p2", s(61), s(91))
        .await
        .expect("claim"));
    assert!(!f
        .store
        .renew_batch_lease("batch_1", "p1", s(100))
        .await
        .expect("renew"));
    // Released by its owner only; then anyone may claim it at once.
    f.store
        .release_batch_lease("batch_1", "p1")
        .await
        .expect("release");
    assert!(!f
        .store
        .claim_batch("batch_1", "p3", s(62), s(92))
        .await
        .expect("claim"));
    f.store
        .release_batch_lease("batch_1", "p2")
        .await
        .expect("release");
    assert!(f
        .store
        .claim_batch("batch_1", "p3", s(62), s(92))
        .await
        .expect("claim"));
    // A finished batch is nobody's to take.
    f.store
        .transition_batch("batch_1", &["validating"], "cancelled", s(63))
        .await
        .expect("cancel")
        .expect("moved");
    f.store
        .release_batch_lease("batch_1", "p3")
        .await
        .expect("release");
    assert!(!f
        .store
        .claim_batch("batch_1", "p1", s(64), s(94))
        .await
        .expect("claim"));
    assert!(ids(f.store.unleased_batches(s(64)).await.expect("unleased")).is_empty());
    // A batch created claimed is its creator's from the start.
    f.store
        .create_batch(
            &batch("batch_2", "a", t0(), 0),
            &[],
            None,
            Some(("p9", s(100))),
        )
        .await
        .expect("create");
    assert!(ids(f.store.unleased_batches(s(64)).await.expect("unleased")).is_empty());
    assert!(!f
        .store
        .claim_batch("batch_2", "p1", s(64), s(94))
        .await
        .expect("claim"));
    assert!(f
        .store
        .claim_batch("batch_2", "p9", s(64), s(94))
        .await
        .expect("claim"));
    assert_eq!(
        ids(f.store.unleased_batches(s(95)).await.expect("unleased")),
        ["batch_2"]
    );
}
