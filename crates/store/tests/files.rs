//! The Files API's rows (`store::FileStore`) on both databases: a file reads back for its
//! tenant only; the quota counts live files and honours an override, refusing without writing;
//! listings page by creation time either way and filter by purpose; expired files vanish and
//! the sweep deletes them; a blob goes only when no file, repository or uploader names it.
//! Every scenario runs twice, `NAME::sqlite` and `NAME::postgres`.

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use store::hub::Blob;
use store::testing::{Kind, ScratchDb};
use store::{FilePut, FileQuery, FileRecord, NewTenant, Store, StoreError, Timestamp};

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

fn sha(c: char) -> String {
    c.to_string().repeat(64)
}

fn file(id: &str, tenant: &str, sha256: &str, bytes: i64, at: Timestamp) -> FileRecord {
    FileRecord {
        id: id.to_owned(),
        tenant_id: tenant.to_owned(),
        filename: format!("{id}.jsonl"),
        purpose: "batch".into(),
        bytes,
        sha256: sha256.to_owned(),
        created_at: at,
        expires_at: None,
    }
}

fn blob_of(f: &FileRecord) -> Blob {
    Blob {
        sha256: f.sha256.clone(),
        size: f.bytes,
        git_oid: "0".repeat(40),
        created_at: f.created_at,
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

    async fn put(&self, f: &FileRecord, quota: i64) -> FilePut {
        self.store
            .put_file(f, &blob_of(f), quota)
            .await
            .expect("put file")
    }

    async fn blob_exists(&self, sha256: &str) -> bool {
        self.store.blob(sha256).await.expect("blob").is_some()
    }
}

store::on_both!(Fixture;
    a_file_reads_back_for_its_tenant_only,
    the_quota_counts_live_files_and_refuses_without_writing,
    listings_page_by_creation_time,
    expired_files_vanish_and_the_sweep_deletes_them,
    a_blob_goes_only_when_nothing_names_it,
);

async fn a_file_reads_back_for_its_tenant_only(fx: Fixture) {
    let store = &fx.store;
    let mut f = file("file-1", "a", &sha('1'), 10, t0());
    f.expires_at = Some(t0() + TimeDelta::hours(2));
    assert_eq!(fx.put(&f, 100).await, FilePut::Stored);
    assert_eq!(store.file("a", "file-1", t0()).await.expect("read"), f);
    for (tenant, id) in [("b", "file-1"), ("a", "file-2")] {
        assert!(matches!(
            store.file(tenant, id, t0()).await,
            Err(StoreError::NotFound { entity: "file", .. })
        ));
    }
    assert!(matches!(
        store.delete_file("b", "file-1", t0()).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.put_file(&f, &blob_of(&f), 100).await,
        Err(StoreError::Conflict(_))
    ));
    let ghost = file("file-g", "nobody", &sha('2'), 1, t0());
    assert!(matches!(
        store.put_file(&ghost, &blob_of(&ghost), 100).await,
        Err(StoreError::NotFound {
            entity: "tenant",
            ..
        })
    ));
    assert!(
        !fx.blob_exists(&sha('2')).await,
        "nothing of a refused file"
    );
}

async fn the_quota_counts_live_files_and_refuses_without_writing(fx: Fixture) {
    let store = &fx.store;
    assert_eq!(
        fx.put(&file("f1", "a", &sha('1'), 6, t0()), 10).await,
        FilePut::Stored
    );
    // The same bytes again count again: a quota is what the tenant's files hold.
    assert_eq!(
        fx.put(&file("f2", "a", &sha('1'), 6, t0()), 10).await,
        FilePut::OverQuota { used: 6, quota: 10 }
    );
    assert!(
        store.file("a", "f2", t0()).await.is_err(),
        "nothing written"
    );
    assert_eq!(
        fx.put(&file("f3", "b", &sha('3'), 9, t0()), 10).await,
        FilePut::Stored,
        "per tenant"
    );
    assert!(!fx.blob_exists(&sha('4')).await);
    assert_eq!(
        fx.put(&file("f4", "a", &sha('4'), 5, t0()), 10).await,
        FilePut::OverQuota { used: 6, quota: 10 }
    );
    assert!(
        !fx.blob_exists(&sha('4')).await,
        "no blob row for a refused file"
    );
    // An override wins over the default; removing it restores the default.
    store.set_file_quota("a", Some(11)).await.expect("override");
    assert_eq!(store.file_quota("a").await.expect("quota"), Some(11));
    assert_eq!(
        fx.put(&file("f4", "a", &sha('4'), 5, t0()), 10).await,
        FilePut::Stored
    );
    assert_eq!(store.file_usage("a", t0()).await.expect("usage"), 11);
    store
        .set_file_quota("a", None)
        .await
        .expect("default again");
    assert_eq!(store.file_quota("a").await.expect("quota"), None);
    assert!(matches!(
        store.set_file_quota("nobody", Some(1)).await,
        Err(StoreError::NotFound { .. })
    ));
    // Expired files hold nothing.
    let mut brief = file("f5", "b", &sha('5'), 1, t0());
    brief.expires_at = Some(t0() + TimeDelta::hours(1));
    assert_eq!(fx.put(&brief, 10).await, FilePut::Stored);
    assert_eq!(store.file_usage("b", t0()).await.expect("usage"), 10);
    let later = t0() + TimeDelta::hours(2);
    assert_eq!(store.file_usage("b", later).await.expect("usage"), 9);
}

async fn listings_page_by_creation_time(fx: Fixture) {
    let store = &fx.store;
    for i in 0..5 {
        let mut f = file(
            &format!("f{i}"),
            "a",
            &sha('1'),
            1,
            t0() + TimeDelta::seconds(i),
        );
        if i == 3 {
            f.purpose = "fine-tune".into();
        }
        assert_eq!(fx.put(&f, 100).await, FilePut::Stored);
    }
    // Same second as f4: ties go by id.
    assert_eq!(
        fx.put(
            &file("f5", "a", &sha('1'), 1, t0() + TimeDelta::seconds(4)),
            100
        )
        .await,
        FilePut::Stored
    );
    assert_eq!(
        fx.put(&file("fb", "b", &sha('1'), 1, t0()), 100).await,
        FilePut::Stored
    );
    let ids = |page: &store::FilePage| page.files.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
    let now = t0() + TimeDelta::minutes(1);
    let query = |limit, ascending, after: Option<&str>| FileQuery {
        purpose: None,
        limit,
        ascending,
        after: after.map(str::to_owned),
    };
    let first = store
        .files("a", &query(2, false, None), now)
        .await
        .expect("page");
    assert_eq!(
        (ids(&first), first.has_more),
        (vec!["f5".into(), "f4".into()], true)
    );
    let next = store
        .files("a", &query(3, false, Some("f4")), now)
        .await
        .expect("page");
    assert_eq!(
        (ids(&next), next.has_more),
        (vec!["f3".into(), "f2".into(), "f1".into()], true)
    );
    let last = store
        .files("a", &query(3, false, Some("f1")), now)
        .await
        .expect("page");
    assert_eq!((ids(&last), last.has_more), (vec!["f0".into()], false));
    let asc = store
        .files("a", &query(10, true, Some("f2")), now)
        .await
        .expect("page");
    assert_eq!(ids(&asc), ["f3", "f4", "f5"]);
    let tuned = FileQuery {
        purpose: Some("fine-tune".into()),
        ..query(10, false, None)
    };
    assert_eq!(
        ids(&store.files("a", &tuned, now).await.expect("page")),
        ["f3"]
    );
    assert!(
        matches!(
            store.files("a", &query(10, false, Some("fb")), now).await,
            Err(StoreError::NotFound { .. })
        ),
        "another tenant's file is no cursor"
    );
}

async fn expired_files_vanish_and_the_sweep_deletes_them(fx: Fixture) {
    let store = &fx.store;
    let mut brief = file("brief", "a", &sha('1'), 3, t0());
    brief.expires_at = Some(t0() + TimeDelta::hours(1));
    let kept = file("kept", "a", &sha('2'), 3, t0());
    for f in [&brief, &kept] {
        assert_eq!(fx.put(f, 100).await, FilePut::Stored);
    }
    let before = t0() + TimeDelta::minutes(59);
    let after = t0() + TimeDelta::hours(1);
    assert!(store.file("a", "brief", before).await.is_ok());
    assert!(
        store.file("a", "brief", after).await.is_err(),
        "expired: gone"
    );
    let listed = store
        .files(
            "a",
            &FileQuery {
                limit: 10,
                ..FileQuery::default()
            },
            after,
        )
        .await
        .expect("list");
    assert_eq!(listed.files, vec![kept.clone()]);
    assert!(
        store.delete_file("a", "brief", after).await.is_err(),
        "expired: gone"
    );

    let early = store
        .delete_expired_files(before, 100)
        .await
        .expect("sweep");
    assert!(early.files.is_empty() && early.blobs.is_empty());
    let swept = store.delete_expired_files(after, 100).await.expect("sweep");
    assert_eq!(swept.files, vec![brief]);
    assert_eq!(swept.blobs, vec![sha('1')]);
    assert!(!fx.blob_exists(&sha('1')).await && fx.blob_exists(&sha('2')).await);
    assert!(store
        .delete_expired_files(after, 100)
        .await
        .expect("again")
        .files
        .is_empty());
}

async fn a_blob_goes_only_when_nothing_names_it(fx: Fixture) {
    let store = &fx.store;
    // Blob 1: two tenants' files. Blob 2: a file and a hub uploader.
    for f in [
        file("a1", "a", &sha('1'), 4, t0()),
        file("b1", "b", &sha('1'), 4, t0()),
        file("a2", "a", &sha('2'), 4, t0()),
    ] {
        assert_eq!(fx.put(&f, 100).await, FilePut::Stored);
    }
    store
        .record_blob_uploader(&sha('2'), "b", t0())
        .await
        .expect("b uploaded blob 2 to the hub");
    let gone = store.delete_file("a", "a1", t0()).await.expect("delete");
    assert_eq!(gone.files.len(), 1);
    assert!(gone.blobs.is_empty(), "b's file still names it");
    let gone = store.delete_file("a", "a2", t0()).await.expect("delete");
    assert!(gone.blobs.is_empty(), "a hub uploader still names it");
    assert!(fx.blob_exists(&sha('2')).await);
    assert!(
        !store.release_blob(&sha('2')).await.expect("release"),
        "named: stays"
    );
    let gone = store.delete_file("b", "b1", t0()).await.expect("delete");
    assert_eq!(gone.blobs, vec![sha('1')]);
    assert!(!fx.blob_exists(&sha('1')).await);
    assert!(
        store.delete_file("b", "b1", t0()).await.is_err(),
        "deleted once"
    );
    // A blob nobody names goes; one that is not there is as good as gone.
    store
        .put_blob(&Blob {
            sha256: sha('9'),
            size: 1,
            git_oid: "0".repeat(40),
            created_at: t0(),
        })
        .await
        .expect("blob");
    assert!(store.release_blob(&sha('9')).await.expect("release"));
    assert!(!fx.blob_exists(&sha('9')).await);
    assert!(store.release_blob(&sha('8')).await.expect("never there"));
}
