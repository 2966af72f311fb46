//! Stored responses of the Responses API (`store::ResponseStore`) on both databases: every
//! field round-trips, ids are unique, deletes say whether they deleted, retention deletes by
//! age, and the schema refuses unknown tenants and text that is not JSON. Every scenario runs
//! twice, `NAME::sqlite` and `NAME::postgres` (PostgreSQL must be reachable: see
//! `store::testing`).

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use store::testing::{Kind, ScratchDb};
use store::{NewTenant, Store, StoreError, StoredResponse, Timestamp};

struct Fixture {
    store: Arc<dyn Store>,
    /// Removed when the fixture drops.
    _scratch: ScratchDb,
}

impl Fixture {
    async fn new(kind: Kind) -> Self {
        let scratch = ScratchDb::new(kind).await;
        let store = store::open(&scratch.url).await.expect("open the store");
        Self {
            store,
            _scratch: scratch,
        }
    }

    /// A real tenant, for responses made with its keys.
    async fn tenant(&self, id: &str) -> String {
        self.store
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
            .expect("create tenant")
            .id
    }
}

/// With microseconds, which both databases keep.
fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
        + TimeDelta::microseconds(123_456)
}

fn response(id: &str, created_at: Timestamp) -> StoredResponse {
    StoredResponse {
        id: id.to_owned(),
        tenant_id: None,
        model: "smol".to_owned(),
        previous_id: None,
        response: format!(r#"{{"id":"{id}","object":"response","output":[]}}"#),
        input_items: r#"[{"type":"message","role":"user","content":"hi"}]"#.to_owned(),
        conversation: r#"[{"type":"message","role":"user","content":"hi"}]"#.to_owned(),
        created_at,
    }
}

store::on_both!(Fixture;
    put_then_get_round_trips_every_field,
    a_taken_id_is_conflict,
    a_missing_id_is_not_found,
    delete_says_whether_it_existed,
    retention_deletes_only_older_responses,
    refuses_unknown_tenants_and_text_that_is_not_json,
);

async fn put_then_get_round_trips_every_field(fx: Fixture) {
    let store = &fx.store;
    let tenant = fx.tenant("t-1").await;

    // The admin key's first turn: no tenant, no previous response.
    let first = response("resp_1", t0());
    store.put_response(&first).await.expect("put");
    assert_eq!(store.response("resp_1").await.expect("get"), first);

    // A tenant's turn continuing it, with text JSON escapes (a NUL, which PostgreSQL's jsonb
    // would refuse) and characters outside ASCII.
    let second = StoredResponse {
        id: "resp_2".to_owned(),
        tenant_id: Some(tenant),
        model: "qwen".to_owned(),
        previous_id: Some("resp_1".to_owned()),
        response: r#"{"id":"resp_2","output_text":"nul \u0000, é, 日本, 🦀"}"#.to_owned(),
        input_items: r#"[{"type":"message","role":"user","content":"and then?"}]"#.to_owned(),
        conversation: r#"[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"},{"role":"user","content":"and then?"}]"#.to_owned(),
        created_at: t0() + TimeDelta::seconds(90),
    };
    store.put_response(&second).await.expect("put");
    assert_eq!(store.response("resp_2").await.expect("get"), second);
    // The first is unchanged by the second.
    assert_eq!(store.response("resp_1").await.expect("get"), first);

    // A previous response need not exist (it may have been deleted).
    let orphan = StoredResponse {
        previous_id: Some("resp_deleted".to_owned()),
        ..response("resp_3", t0())
    };
    store.put_response(&orphan).await.expect("put");
    assert_eq!(store.response("resp_3").await.expect("get"), orphan);
}

async fn a_taken_id_is_conflict(fx: Fixture) {
    let store = &fx.store;
    let first = response("resp_dup", t0());
    store.put_response(&first).await.expect("put");
    let again = StoredResponse {
        model: "other".to_owned(),
        created_at: t0() + TimeDelta::seconds(1),
        ..first.clone()
    };
    let err = store.put_response(&again).await.expect_err("a taken id");
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        store.response("resp_dup").await.expect("get"),
        first,
        "the first stays as it was"
    );
}

async fn a_missing_id_is_not_found(fx: Fixture) {
    let err = fx
        .store
        .response("resp_missing")
        .await
        .expect_err("never stored");
    assert!(
        matches!(&err, StoreError::NotFound { entity: "response", id } if id == "resp_missing"),
        "{err:?}"
    );
}

async fn delete_says_whether_it_existed(fx: Fixture) {
    let store = &fx.store;
    store
        .put_response(&response("resp_gone", t0()))
        .await
        .expect("put");
    store
        .put_response(&response("resp_kept", t0()))
        .await
        .expect("put");
    assert!(store.delete_response("resp_gone").await.expect("delete"));
    assert!(!store.delete_response("resp_gone").await.expect("delete"));
    assert!(!store.delete_response("resp_never").await.expect("delete"));
    assert!(matches!(
        store.response("resp_gone").await,
        Err(StoreError::NotFound { .. })
    ));
    store.response("resp_kept").await.expect("the other stays");
}

async fn retention_deletes_only_older_responses(fx: Fixture) {
    let store = &fx.store;
    let hour = TimeDelta::hours(1);
    for (id, at) in [
        ("resp_a", t0()),
        ("resp_b", t0() + TimeDelta::microseconds(1)),
        ("resp_c", t0() + hour),
        ("resp_d", t0() + hour * 2),
    ] {
        store.put_response(&response(id, at)).await.expect("put");
    }
    assert_eq!(
        store
            .delete_responses_before(t0() - hour)
            .await
            .expect("sweep"),
        0
    );
    // Strictly before: a response created at `before` stays, one a microsecond older goes.
    assert_eq!(
        store
            .delete_responses_before(t0() + TimeDelta::microseconds(1))
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(stored(&**store).await, ["resp_b", "resp_c", "resp_d"]);
    assert_eq!(
        store
            .delete_responses_before(t0() + hour + TimeDelta::seconds(1))
            .await
            .expect("sweep"),
        2
    );
    assert_eq!(stored(&**store).await, ["resp_d"]);
    assert_eq!(
        store
            .delete_responses_before(t0() + hour)
            .await
            .expect("sweep"),
        0,
        "nothing older is left"
    );
}

/// Which of the retention scenario's responses are still stored.
async fn stored(store: &dyn Store) -> Vec<&'static str> {
    let mut kept = Vec::new();
    for id in ["resp_a", "resp_b", "resp_c", "resp_d"] {
        if store.response(id).await.is_ok() {
            kept.push(id);
        }
    }
    kept
}

async fn refuses_unknown_tenants_and_text_that_is_not_json(fx: Fixture) {
    let store = &fx.store;
    let unknown = StoredResponse {
        tenant_id: Some("t-unknown".to_owned()),
        ..response("resp_x", t0())
    };
    assert!(
        store.put_response(&unknown).await.is_err(),
        "a tenant that does not exist"
    );
    for broken in [
        StoredResponse {
            response: "not json".to_owned(),
            ..response("resp_y", t0())
        },
        StoredResponse {
            input_items: "[".to_owned(),
            ..response("resp_y", t0())
        },
        StoredResponse {
            conversation: String::new(),
            ..response("resp_y", t0())
        },
    ] {
        assert!(
            store.put_response(&broken).await.is_err(),
            "the database refuses text that is not JSON: {broken:?}"
        );
    }
    assert!(matches!(
        store.response("resp_y").await,
        Err(StoreError::NotFound { .. })
    ));
}
