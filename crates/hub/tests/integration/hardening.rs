//! What an adversarial tenant tried (issue 13), on both databases: copying another tenant's
//! private file by its hash, filling the disk with declared uploads, oversized chunks, names
//! that display as other names, and reads without the `hub:read` scope.

use hub::path::RepoId;
use hub::{Access, CommitRequest, FileOp, HubConfig, HubError, SearchQuery};

use crate::common::Fixture;
use crate::scenarios::{op, stream, upload};

store::on_both!(Fixture;
    a_private_file_cannot_be_copied_by_its_hash,
    tenant_quota_bounds_what_uploads_declare,
    oversized_chunk_is_too_large_and_changes_nothing,
    public_repos_need_hub_read_when_anonymous_reads_are_off,
    bad_names_and_file_directory_clashes_are_refused,
);

async fn commit_one(f: &Fixture, who: &Access, id: &RepoId, file: FileOp) -> Result<(), HubError> {
    f.hub
        .commit(
            who,
            id,
            "main",
            CommitRequest {
                files: vec![file],
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
}

async fn a_private_file_cannot_be_copied_by_its_hash(f: Fixture) {
    let alice = f.tenant("alice", "alice-org", true).await;
    let bob = f.tenant("bob", "bob-org", true).await;
    let secret_repo = RepoId::parse("alice-org/secret").expect("id");
    f.hub
        .create_repo(&alice, &secret_repo, true)
        .await
        .expect("create");
    let secret = b"the launch codes are 0000".to_vec();
    let file = upload(&f, &alice, &secret_repo, &secret).await;
    commit_one(&f, &alice, &secret_repo, op("codes.txt", file.clone()))
        .await
        .expect("alice commits");

    let theft = RepoId::parse("bob-org/loot").expect("id");
    f.hub.create_repo(&bob, &theft, true).await.expect("create");
    // Bob knows the hash and even the size: he is asked for the bytes, exactly as for a hash
    // nobody has, and a wrong size is not corrected.
    let unknown = "ab".repeat(32);
    for (sha, size) in [
        (file.sha256.as_str(), file.size),
        (file.sha256.as_str(), file.size + 7),
        (unknown.as_str(), file.size),
    ] {
        let s = f
            .hub
            .start_upload(&bob, &theft, sha, size)
            .await
            .expect("an ordinary upload");
        assert!(
            !s.complete && s.upload_id.is_some() && s.offset == 0,
            "{s:?}"
        );
        assert_eq!(s.size, size, "the size Bob declared, not the real one");
    }
    // Naming it in a commit is refused like a hash nobody has.
    let refused = |e: Result<(), HubError>| match e {
        Err(HubError::Invalid { param, message }) => {
            assert_eq!(param, "files");
            message.replace(&file.sha256, "H").replace(&unknown, "H")
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    let stolen = refused(commit_one(&f, &bob, &theft, op("loot.txt", file.clone())).await);
    let ghost = FileOp {
        path: "loot.txt".into(),
        sha256: unknown.clone(),
        size: file.size,
    };
    assert_eq!(stolen, refused(commit_one(&f, &bob, &theft, ghost).await));
    assert!(matches!(
        f.hub.file(&bob, &theft, "main", "loot.txt").await,
        Err(HubError::RevisionNotFound { .. })
    ));
    assert!(matches!(
        f.hub.file(&bob, &secret_repo, "main", "codes.txt").await,
        Err(HubError::RepoNotFound(_))
    ));

    // Sending the bytes proves he has them: then the commit is fine (nothing leaks).
    let own = upload(&f, &bob, &theft, &secret).await;
    commit_one(&f, &bob, &theft, op("mine.txt", own))
        .await
        .expect("bytes Bob uploaded himself");

    // Dedupe still works for what one may read: Alice publishes, and Carol reuses the blob
    // without sending it.
    let carol = f.tenant("carol", "carol-org", true).await;
    let reuse = RepoId::parse("carol-org/reuse").expect("id");
    f.hub
        .create_repo(&carol, &reuse, false)
        .await
        .expect("create");
    let before = f
        .hub
        .start_upload(&carol, &reuse, &file.sha256, file.size)
        .await
        .expect("start");
    assert!(!before.complete, "private: not reachable yet");
    f.hub
        .set_private(&alice, &secret_repo, false)
        .await
        .expect("publish");
    let after = f
        .hub
        .start_upload(&carol, &reuse, &file.sha256, file.size)
        .await
        .expect("start");
    assert!(after.complete && after.upload_id.is_none(), "{after:?}");
    commit_one(&f, &carol, &reuse, op("codes.txt", file.clone()))
        .await
        .expect("a public blob may be reused");
    // And a tenant's own blobs dedupe across its repositories.
    let second = RepoId::parse("alice-org/second").expect("id");
    f.hub
        .create_repo(&alice, &second, true)
        .await
        .expect("create");
    f.hub
        .set_private(&alice, &secret_repo, true)
        .await
        .expect("hide again");
    let again = f
        .hub
        .start_upload(&alice, &second, &file.sha256, file.size)
        .await
        .expect("start");
    assert!(again.complete, "{again:?}");
}

async fn tenant_quota_bounds_what_uploads_declare(f: Fixture) {
    let hub = f.reconfigured(HubConfig {
        tenant_quota_bytes: 1000,
        max_open_uploads: 3,
        ..HubConfig::default()
    });
    let mallory = f.tenant("mallory", "m-org", true).await;
    let id = RepoId::parse("m-org/huge").expect("id");
    hub.create_repo(&mallory, &id, false).await.expect("create");
    let sha = |n: u8| format!("{n:02x}").repeat(32);
    hub.start_upload(&mallory, &id, &sha(1), 400)
        .await
        .expect("400 of 1000");
    hub.start_upload(&mallory, &id, &sha(2), 400)
        .await
        .expect("800 of 1000");
    match hub.start_upload(&mallory, &id, &sha(3), 400).await {
        Err(e @ HubError::QuotaExceeded(_)) => {
            let m = e.to_string();
            assert!(
                m.contains("quota of 1000 bytes") && m.contains("800"),
                "{m}"
            );
        }
        other => panic!("expected the quota, got {other:?}"),
    }
    // Resuming an upload already counted is fine; a third small one fits, a fourth is one
    // open upload too many.
    hub.start_upload(&mallory, &id, &sha(1), 400)
        .await
        .expect("resume");
    hub.start_upload(&mallory, &id, &sha(4), 10)
        .await
        .expect("810");
    assert!(matches!(
        hub.start_upload(&mallory, &id, &sha(5), 1).await,
        Err(HubError::QuotaExceeded(_))
    ));
    let usage = f.store.hub_usage("ten_mallory").await.expect("usage");
    assert_eq!((usage.declared_bytes, usage.open_uploads), (810, 3));
    // Finished uploads count as stored bytes.
    let other = f.tenant("olga", "o-org", true).await;
    let oid = RepoId::parse("o-org/x").expect("id");
    hub.create_repo(&other, &oid, false).await.expect("create");
    let data = vec![9u8; 300];
    let d = hub::blobs::Digests::of(&data);
    let s = hub
        .start_upload(&other, &oid, &d.sha256, 300)
        .await
        .expect("start");
    hub.write_chunk(&other, &oid, &s.upload_id.expect("id"), 0, stream(&data))
        .await
        .expect("chunk");
    let usage = f.store.hub_usage("ten_olga").await.expect("usage");
    assert_eq!(
        (usage.stored_bytes, usage.declared_bytes, usage.open_uploads),
        (300, 0, 0)
    );
    assert!(matches!(
        hub.start_upload(&other, &oid, &sha(6), 701).await,
        Err(HubError::QuotaExceeded(_))
    ));
    // The admin is not bound by tenants' quotas.
    hub.start_upload(&Access::Admin, &id, &sha(7), 5000)
        .await
        .expect("admin");
}

async fn oversized_chunk_is_too_large_and_changes_nothing(f: Fixture) {
    let hub = f.reconfigured(HubConfig {
        max_chunk_bytes: 16,
        ..HubConfig::default()
    });
    let admin = Access::Admin;
    let id = RepoId::parse("acme/chunks").expect("id");
    hub.create_repo(&admin, &id, false).await.expect("create");
    let data: Vec<u8> = (0..40u8).collect();
    let d = hub::blobs::Digests::of(&data);
    let s = hub
        .start_upload(&admin, &id, &d.sha256, 40)
        .await
        .expect("start");
    let up = s.upload_id.expect("id");
    assert!(matches!(
        hub.write_chunk(&admin, &id, &up, 0, stream(&data[..17]))
            .await,
        Err(HubError::TooLarge(_))
    ));
    assert_eq!(
        hub.upload_status(&admin, &id, &up)
            .await
            .expect("status")
            .offset,
        0
    );
    let mut at = 0;
    for part in data.chunks(16) {
        let s = hub
            .write_chunk(&admin, &id, &up, at, stream(part))
            .await
            .expect("chunk");
        at = s.offset;
    }
    assert_eq!(at, 40);
}

async fn public_repos_need_hub_read_when_anonymous_reads_are_off(f: Fixture) {
    let admin = Access::Admin;
    let id = RepoId::parse("acme/open").expect("id");
    f.hub.create_repo(&admin, &id, false).await.expect("create");
    let file = upload(&f, &admin, &id, b"public").await;
    commit_one(&f, &admin, &id, op("a.txt", file))
        .await
        .expect("commit");
    let closed = f.reconfigured(HubConfig {
        anonymous_reads: false,
        ..HubConfig::default()
    });
    let scopeless = Access::Tenant {
        tenant_id: "ten_x".into(),
        tenant_name: "x".into(),
        read: false,
        write: false,
    };
    let reader = Access::Tenant {
        tenant_id: "ten_x".into(),
        tenant_name: "x".into(),
        read: true,
        write: false,
    };
    assert!(matches!(
        closed.file(&scopeless, &id, "main", "a.txt").await,
        Err(HubError::Forbidden(_))
    ));
    assert!(matches!(
        closed.search(&scopeless, SearchQuery::default()).await,
        Err(HubError::Forbidden(_))
    ));
    assert!(matches!(
        closed.file(&Access::Anonymous, &id, "main", "a.txt").await,
        Err(HubError::Unauthenticated)
    ));
    assert!(closed.file(&reader, &id, "main", "a.txt").await.is_ok());
    // With anonymous reads on, a key is never worse than no key.
    assert!(f.hub.file(&scopeless, &id, "main", "a.txt").await.is_ok());
}

async fn bad_names_and_file_directory_clashes_are_refused(f: Fixture) {
    let admin = Access::Admin;
    let id = RepoId::parse("acme/names").expect("id");
    f.hub.create_repo(&admin, &id, false).await.expect("create");
    let file = upload(&f, &admin, &id, b"x").await;
    for path in ["invoice\u{202E}fdp.exe", "a\u{200B}b", "\u{FEFF}README.md"] {
        assert!(
            matches!(
                commit_one(&f, &admin, &id, op(path, file.clone())).await,
                Err(HubError::InvalidPath { .. })
            ),
            "{path:?}"
        );
    }
    for branch in ["-x", "--upload-pack=x", "a\u{202E}b"] {
        assert!(matches!(
            f.hub
                .commit(&admin, &id, branch, CommitRequest::default())
                .await,
            Err(HubError::Invalid { .. })
        ));
    }
    // `a` and `a/b` with `a-x` and `a.txt` sorting between them.
    let req = CommitRequest {
        files: ["a", "a-x", "a.txt", "a/b"]
            .iter()
            .map(|p| op(p, file.clone()))
            .collect(),
        ..Default::default()
    };
    match f.hub.commit(&admin, &id, "main", req).await {
        Err(HubError::Invalid { message, .. }) => {
            assert!(message.contains("both a file and a directory"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}
