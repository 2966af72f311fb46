//! Fine-tuning jobs' rows (`store::FineTuningStore`) on both databases: a job is read back for
//! its tenant only; a tenant's unfinished jobs are capped in the creating transaction; listings
//! page newest first; a job moves only from the statuses named; events are numbered in order
//! and page newest first; checkpoints are kept per step; the tenant's removal takes them all.
//! Every scenario runs twice, `NAME::sqlite` and `NAME::postgres`.

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use store::testing::{Kind, ScratchDb};
use store::{
    removal, FineTuningCheckpoint, FineTuningJob, NewTenant, Store, StoreError, Timestamp,
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

fn job(id: &str, tenant: &str, at: Timestamp) -> FineTuningJob {
    FineTuningJob {
        id: id.to_owned(),
        tenant_id: tenant.to_owned(),
        key_id: Some("key-1".into()),
        model: "smol".into(),
        suffix: Some("codeword".into()),
        fine_tuned_model: None,
        status: "validating_files".into(),
        training_file: "file-1".into(),
        validation_file: None,
        hyperparameters: r#"{"n_epochs":1}"#.into(),
        seed: 7,
        error: None,
        total_tokens: None,
        trained_tokens: None,
        attempt: 1,
        billed_tokens: 0,
        created_at: at,
        finished_at: None,
        estimated_finish: None,
        metadata: None,
        hub_repo: None,
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
    jobs_are_read_by_their_tenant_only_and_capped,
    jobs_page_newest_first,
    status_moves_only_from_the_named_statuses,
    events_and_checkpoints_page_newest_first,
    removal_takes_jobs_events_and_checkpoints,
);

async fn jobs_are_read_by_their_tenant_only_and_capped(fx: Fixture) {
    let s = &fx.store;
    assert!(s
        .create_fine_tuning_job(&job("ftjob-1", "a", t0()), 2)
        .await
        .expect("create"));
    let read = s.fine_tuning_job("a", "ftjob-1").await.expect("read");
    assert_eq!(read, job("ftjob-1", "a", t0()));
    assert!(matches!(
        s.fine_tuning_job("b", "ftjob-1").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.create_fine_tuning_job(&job("ftjob-1", "b", t0()), 2)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s
        .create_fine_tuning_job(&job("ftjob-2", "a", t0()), 2)
        .await
        .expect("second"));
    // Two unfinished: a third is refused, nothing written.
    assert!(!s
        .create_fine_tuning_job(&job("ftjob-3", "a", t0()), 2)
        .await
        .expect("capped"));
    assert!(s.fine_tuning_job_by_id("ftjob-3").await.is_err());
    // One ends: room again.
    let mut done = job("ftjob-2", "a", t0());
    done.status = "failed".into();
    assert!(s
        .update_fine_tuning_job(&done, &["validating_files"])
        .await
        .expect("fail"));
    assert!(s
        .create_fine_tuning_job(&job("ftjob-3", "a", t0()), 2)
        .await
        .expect("room"));
    // Another tenant's count is its own; an unknown tenant is refused.
    assert!(s
        .create_fine_tuning_job(&job("ftjob-4", "b", t0()), 1)
        .await
        .expect("b"));
    assert!(matches!(
        s.create_fine_tuning_job(&job("ftjob-5", "nobody", t0()), 1)
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let active = s
        .fine_tuning_jobs_in(&["validating_files", "queued", "running"])
        .await
        .expect("active");
    let ids: Vec<&str> = active.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["ftjob-1", "ftjob-3", "ftjob-4"]);
}

async fn jobs_page_newest_first(fx: Fixture) {
    let s = &fx.store;
    for i in 0..5 {
        let at = t0() + TimeDelta::seconds(i);
        assert!(s
            .create_fine_tuning_job(&job(&format!("ftjob-{i}"), "a", at), 10)
            .await
            .expect("create"));
    }
    let first = s.fine_tuning_jobs("a", None, 2).await.expect("page 1");
    let ids: Vec<&str> = first.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["ftjob-4", "ftjob-3"]);
    assert!(first.has_more);
    let last = s
        .fine_tuning_jobs("a", Some("ftjob-2"), 5)
        .await
        .expect("after");
    let ids: Vec<&str> = last.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["ftjob-1", "ftjob-0"]);
    assert!(!last.has_more);
    assert!(s
        .fine_tuning_jobs("b", None, 5)
        .await
        .expect("b")
        .jobs
        .is_empty());
    assert!(matches!(
        s.fine_tuning_jobs("b", Some("ftjob-2"), 5).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn status_moves_only_from_the_named_statuses(fx: Fixture) {
    let s = &fx.store;
    assert!(s
        .create_fine_tuning_job(&job("ftjob-1", "a", t0()), 1)
        .await
        .expect("create"));
    let mut j = job("ftjob-1", "a", t0());
    j.status = "queued".into();
    j.total_tokens = Some(1200);
    assert!(!s
        .update_fine_tuning_job(&j, &["running"])
        .await
        .expect("not running"));
    assert!(s
        .update_fine_tuning_job(&j, &["validating_files"])
        .await
        .expect("queued"));
    j.status = "succeeded".into();
    j.fine_tuned_model = Some("ft:smol:codeword:ftjob-1".into());
    j.trained_tokens = Some(1200);
    j.attempt = 2;
    j.billed_tokens = 300;
    j.finished_at = Some(t0() + TimeDelta::seconds(60));
    assert!(s
        .update_fine_tuning_job(&j, &["queued", "running"])
        .await
        .expect("done"));
    assert_eq!(s.fine_tuning_job("a", "ftjob-1").await.expect("read"), j);
    j.status = "cancelled".into();
    assert!(!s
        .update_fine_tuning_job(&j, &["queued", "running"])
        .await
        .expect("final"));
    j.status = "bogus".into();
    assert!(s.update_fine_tuning_job(&j, &["succeeded"]).await.is_err());
}

async fn events_and_checkpoints_page_newest_first(fx: Fixture) {
    let s = &fx.store;
    assert!(s
        .create_fine_tuning_job(&job("ftjob-1", "a", t0()), 1)
        .await
        .expect("create"));
    for i in 1..=5 {
        let data = format!(r#"{{"step":{i}}}"#);
        let seq = s
            .add_fine_tuning_event("ftjob-1", "info", &format!("step {i}"), Some(&data), t0())
            .await
            .expect("event");
        assert_eq!(seq, i);
    }
    let page = s
        .fine_tuning_events("ftjob-1", None, 2)
        .await
        .expect("events");
    let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [5, 4]);
    assert!(page.has_more);
    assert_eq!(page.events[0].message, "step 5");
    assert_eq!(page.events[0].data.as_deref(), Some(r#"{"step":5}"#));
    let rest = s
        .fine_tuning_events("ftjob-1", Some(4), 10)
        .await
        .expect("rest");
    let seqs: Vec<i64> = rest.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [3, 2, 1]);
    assert!(!rest.has_more);
    for step in [10, 20, 30] {
        let c = FineTuningCheckpoint {
            step,
            created_at: t0(),
            metrics: format!(r#"{{"step":{step}}}"#),
        };
        s.put_fine_tuning_checkpoint("ftjob-1", &c)
            .await
            .expect("checkpoint");
    }
    // Written again after a resume: replaced, not doubled.
    let again = FineTuningCheckpoint {
        step: 30,
        created_at: t0(),
        metrics: r#"{"step":30,"again":true}"#.into(),
    };
    s.put_fine_tuning_checkpoint("ftjob-1", &again)
        .await
        .expect("again");
    let page = s
        .fine_tuning_checkpoints("ftjob-1", None, 2)
        .await
        .expect("checkpoints");
    assert_eq!(
        page.checkpoints.iter().map(|c| c.step).collect::<Vec<_>>(),
        [30, 20]
    );
    assert_eq!(page.checkpoints[0].metrics, again.metrics);
    assert!(page.has_more);
    let rest = s
        .fine_tuning_checkpoints("ftjob-1", Some(20), 10)
        .await
        .expect("rest");
    assert_eq!(
        rest.checkpoints.iter().map(|c| c.step).collect::<Vec<_>>(),
        [10]
    );
}

async fn removal_takes_jobs_events_and_checkpoints(fx: Fixture) {
    let s = &fx.store;
    assert!(s
        .create_fine_tuning_job(&job("ftjob-a", "a", t0()), 1)
        .await
        .expect("a"));
    assert!(s
        .create_fine_tuning_job(&job("ftjob-b", "b", t0()), 1)
        .await
        .expect("b"));
    for id in ["ftjob-a", "ftjob-b"] {
        s.add_fine_tuning_event(id, "info", "created", None, t0())
            .await
            .expect("event");
    }
    let c = FineTuningCheckpoint {
        step: 1,
        created_at: t0(),
        metrics: "{}".into(),
    };
    s.put_fine_tuning_checkpoint("ftjob-a", &c)
        .await
        .expect("checkpoint");
    let removed = s.remove_tenant("a", t0()).await.expect("remove");
    assert_eq!(removed.removed(removal::FINE_TUNING_JOBS), ["ftjob-a"]);
    assert_eq!(removed.removed(removal::FINE_TUNING_EVENTS), ["ftjob-a"]);
    assert_eq!(
        removed.removed(removal::FINE_TUNING_CHECKPOINTS),
        ["ftjob-a"]
    );
    assert!(s.fine_tuning_job_by_id("ftjob-a").await.is_err());
    assert_eq!(
        s.fine_tuning_events("ftjob-b", None, 10)
            .await
            .expect("b's")
            .events
            .len(),
        1
    );
}
