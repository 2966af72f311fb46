//! Repositories, uploads, commits, visibility and search, on both databases.

use bytes::Bytes;
use hub::path::RepoId;
use hub::{Access, CommitRequest, FileOp, HubError, SearchQuery};

use crate::common::Fixture;

store::on_both!(Fixture;
    upload_commit_and_read_back,
    interrupted_upload_resumes_and_bad_hash_is_discarded,
    private_repos_are_invisible_and_writes_need_ownership,
    search_by_card_and_tags_do_not_move,
);

pub(crate) fn stream(
    data: &[u8],
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    futures::stream::iter(vec![Ok(Bytes::copy_from_slice(data))])
}

pub(crate) async fn upload(f: &Fixture, access: &Access, id: &RepoId, data: &[u8]) -> FileOp {
    let d = hub::blobs::Digests::of(data);
    let state = f
        .hub
        .start_upload(access, id, &d.sha256, data.len() as i64)
        .await
        .expect("start");
    if !state.complete {
        let up = state.upload_id.expect("upload id");
        let done = f
            .hub
            .write_chunk(access, id, &up, 0, stream(data))
            .await
            .expect("chunk");
        assert!(done.complete);
    }
    FileOp {
        path: String::new(),
        sha256: d.sha256,
        size: data.len() as i64,
    }
}

pub(crate) fn op(path: &str, mut f: FileOp) -> FileOp {
    f.path = path.into();
    f
}

async fn upload_commit_and_read_back(f: Fixture) {
    let admin = Access::Admin;
    let id = RepoId::parse("acme/smol").expect("id");
    f.hub.create_repo(&admin, &id, false).await.expect("create");
    assert!(matches!(
        f.hub.create_repo(&admin, &id, false).await,
        Err(HubError::Conflict(_))
    ));
    let card = b"---\nlicense: mit\npipeline_tag: text-generation\ntags: [chat]\n---\n# smol\n";
    let readme = upload(&f, &admin, &id, card).await;
    let weights = upload(&f, &admin, &id, &[7u8; 5000]).await;
    let again = upload(&f, &admin, &id, &[7u8; 5000]).await; // already stored: no upload
    assert_eq!(again.sha256, weights.sha256);
    let c1 = f
        .hub
        .commit(
            &admin,
            &id,
            "main",
            CommitRequest {
                message: "first".into(),
                files: vec![op("README.md", readme), op("q/model.gguf", weights.clone())],
                ..Default::default()
            },
        )
        .await
        .expect("commit");
    assert_eq!(c1.id.len(), 40);
    let view = f
        .hub
        .file(&Access::Anonymous, &id, "main", "q/model.gguf")
        .await
        .expect("file");
    assert_eq!(
        std::fs::read(&view.blob_path).expect("blob"),
        vec![7u8; 5000]
    );
    assert_eq!(view.commit.id, c1.id);
    // A second revision moves main; the first stays readable by id.
    let c2 = f
        .hub
        .commit(
            &admin,
            &id,
            "main",
            CommitRequest {
                deletes: vec!["q".into()],
                ..Default::default()
            },
        )
        .await
        .expect("commit 2");
    assert_eq!(c2.parent_id.as_deref(), Some(c1.id.as_str()));
    assert!(matches!(
        f.hub.file(&admin, &id, "main", "q/model.gguf").await,
        Err(HubError::EntryNotFound { .. })
    ));
    assert!(f
        .hub
        .file(&admin, &id, &c1.id, "q/model.gguf")
        .await
        .is_ok());
    // Stale parent: conflict, nothing changes.
    let stale = CommitRequest {
        parent: Some(c1.id.clone()),
        ..Default::default()
    };
    assert!(matches!(
        f.hub.commit(&admin, &id, "main", stale).await,
        Err(HubError::Conflict(_))
    ));
    // Naming a blob never uploaded is refused.
    let ghost = FileOp {
        path: "x".into(),
        sha256: "ab".repeat(32),
        size: 1,
    };
    let req = CommitRequest {
        files: vec![ghost],
        ..Default::default()
    };
    assert!(matches!(
        f.hub.commit(&admin, &id, "main", req).await,
        Err(HubError::Invalid { .. })
    ));
    let repo = f.store.repo("acme", "smol").await.expect("repo");
    assert_eq!(
        f.store
            .find_ref(&repo.id, "main")
            .await
            .expect("ref")
            .map(|r| r.commit_id),
        Some(c2.id)
    );
    assert!(matches!(
        f.hub.file(&admin, &id, "main", "../etc/passwd").await,
        Err(HubError::InvalidPath { .. })
    ));
    assert!(matches!(
        f.hub.file(&admin, &id, "nope", "README.md").await,
        Err(HubError::RevisionNotFound { .. })
    ));
    // ModelScope's `master` falls back to `main`.
    assert!(f.hub.file(&admin, &id, "master", "README.md").await.is_ok());
}

async fn interrupted_upload_resumes_and_bad_hash_is_discarded(f: Fixture) {
    let admin = Access::Admin;
    let id = RepoId::parse("acme/big").expect("id");
    f.hub.create_repo(&admin, &id, false).await.expect("create");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = hub::blobs::Digests::of(&data);
    let s = f
        .hub
        .start_upload(&admin, &id, &d.sha256, data.len() as i64)
        .await
        .expect("start");
    let up = s.upload_id.clone().expect("id");
    let s = f
        .hub
        .write_chunk(&admin, &id, &up, 0, stream(&data[..40_000]))
        .await
        .expect("part");
    assert_eq!((s.offset, s.complete), (40_000, false));
    // A new session for the same blob resumes the old one.
    let again = f
        .hub
        .start_upload(&admin, &id, &d.sha256, data.len() as i64)
        .await
        .expect("again");
    assert_eq!(
        (again.upload_id.as_deref(), again.offset),
        (Some(up.as_str()), 40_000)
    );
    assert!(matches!(
        f.hub.write_chunk(&admin, &id, &up, 10, stream(b"x")).await,
        Err(HubError::WrongOffset {
            expected: 40_000,
            ..
        })
    ));
    // The blob is not visible before it is complete.
    let req = CommitRequest {
        files: vec![FileOp {
            path: "w".into(),
            sha256: d.sha256.clone(),
            size: data.len() as i64,
        }],
        ..Default::default()
    };
    assert!(f
        .hub
        .commit(&admin, &id, "main", req.clone())
        .await
        .is_err());
    let s = f
        .hub
        .write_chunk(&admin, &id, &up, 40_000, stream(&data[40_000..]))
        .await
        .expect("rest");
    assert!(s.complete);
    f.hub
        .commit(&admin, &id, "main", req)
        .await
        .expect("commit");
    // Declared hash that does not match: discarded, never a blob.
    let wrong = "00".repeat(32);
    let s = f
        .hub
        .start_upload(&admin, &id, &wrong, 3)
        .await
        .expect("start");
    let up = s.upload_id.expect("id");
    assert!(matches!(
        f.hub.write_chunk(&admin, &id, &up, 0, stream(b"abc")).await,
        Err(HubError::Invalid { .. })
    ));
    assert!(f.store.blob(&wrong).await.expect("blob").is_none());
    assert!(f.store.upload(&up).await.is_err(), "session removed");
}

async fn private_repos_are_invisible_and_writes_need_ownership(f: Fixture) {
    let alice = f.tenant("alice", "alice-org", true).await;
    let bob = f.tenant("bob", "bob-org", true).await;
    let id = RepoId::parse("alice-org/secret").expect("id");
    f.hub
        .create_repo(&alice, &id, true)
        .await
        .expect("alice creates in her org");
    let file = upload(&f, &alice, &id, b"hi").await;
    f.hub
        .commit(
            &alice,
            &id,
            "main",
            CommitRequest {
                files: vec![op("a.txt", file)],
                ..Default::default()
            },
        )
        .await
        .expect("commit");
    assert!(f.hub.file(&alice, &id, "main", "a.txt").await.is_ok());
    assert!(f
        .hub
        .file(&Access::Admin, &id, "main", "a.txt")
        .await
        .is_ok());
    for other in [&bob, &Access::Anonymous] {
        assert!(matches!(
            f.hub.file(other, &id, "main", "a.txt").await,
            Err(HubError::RepoNotFound(_))
        ));
        assert!(f
            .hub
            .search(other, SearchQuery::default())
            .await
            .expect("search")
            .is_empty());
    }
    assert!(matches!(
        f.hub.start_upload(&bob, &id, &"ab".repeat(32), 1).await,
        Err(HubError::RepoNotFound(_))
    ));
    let bob_in_alice = RepoId::parse("alice-org/bobs").expect("id");
    assert!(matches!(
        f.hub.create_repo(&bob, &bob_in_alice, false).await,
        Err(HubError::Forbidden(_))
    ));
    let nowhere = RepoId::parse("no-such-org/x").expect("id");
    assert!(matches!(
        f.hub.create_repo(&bob, &nowhere, false).await,
        Err(HubError::Forbidden(_))
    ));
    let reader = Access::Tenant {
        tenant_id: "ten_alice".into(),
        tenant_name: "alice".into(),
        read: true,
        write: false,
    };
    assert!(matches!(
        f.hub.start_upload(&reader, &id, &"ab".repeat(32), 1).await,
        Err(HubError::Forbidden(_))
    ));
    // Public repos of others: readable, not writable.
    f.hub
        .set_private(&alice, &id, false)
        .await
        .expect("publish");
    assert!(f.hub.file(&bob, &id, "main", "a.txt").await.is_ok());
    assert!(matches!(
        f.hub.start_upload(&bob, &id, &"ab".repeat(32), 1).await,
        Err(HubError::Forbidden(_))
    ));
}

async fn search_by_card_and_tags_do_not_move(f: Fixture) {
    let admin = Access::Admin;
    for (name, card) in [
        (
            "gen",
            "---\nlicense: apache-2.0\npipeline_tag: text-generation\nlanguage: [en]\n---\n",
        ),
        (
            "emb",
            "---\nlicense: mit\npipeline_tag: feature-extraction\n---\n",
        ),
    ] {
        let id = RepoId::new("acme", name).expect("id");
        f.hub.create_repo(&admin, &id, false).await.expect("create");
        let readme = upload(&f, &admin, &id, card.as_bytes()).await;
        f.hub
            .commit(
                &admin,
                &id,
                "main",
                CommitRequest {
                    files: vec![op("README.md", readme)],
                    ..Default::default()
                },
            )
            .await
            .expect("commit");
    }
    let names = |repos: Vec<hub::Repo>| repos.into_iter().map(|r| r.name).collect::<Vec<_>>();
    let q = |f: fn(&mut SearchQuery)| {
        let mut q = SearchQuery {
            descending: true,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    assert_eq!(
        names(
            f.hub
                .search(
                    &admin,
                    q(|q| q.pipeline_tag = Some("text-generation".into()))
                )
                .await
                .expect("s")
        ),
        ["gen"]
    );
    assert_eq!(
        names(
            f.hub
                .search(&admin, q(|q| q.tags = vec!["license:mit".into()]))
                .await
                .expect("s")
        ),
        ["emb"]
    );
    assert_eq!(
        names(
            f.hub
                .search(&admin, q(|q| q.search = Some("EM".into())))
                .await
                .expect("s")
        ),
        ["emb"]
    );
    assert_eq!(
        f.hub
            .search(&admin, q(|q| q.author = Some("acme".into())))
            .await
            .expect("s")
            .len(),
        2
    );
    // Downloads order the list.
    let gen = f.store.repo("acme", "gen").await.expect("repo");
    f.hub.count_download(&gen).await.expect("count");
    assert_eq!(
        names(f.hub.search(&admin, q(|_| {})).await.expect("s"))[0],
        "gen"
    );
    // Tags are fixed.
    let id = RepoId::new("acme", "gen").expect("id");
    let t = f.hub.tag(&admin, &id, "v1", "main").await.expect("tag");
    assert!(matches!(
        f.hub.tag(&admin, &id, "v1", "main").await,
        Err(HubError::Conflict(_))
    ));
    assert!(matches!(
        f.hub
            .commit(&admin, &id, "v1", CommitRequest::default())
            .await,
        Err(HubError::Conflict(_))
    ));
    assert_eq!(
        f.hub
            .file(&admin, &id, "v1", "README.md")
            .await
            .expect("by tag")
            .commit
            .id,
        t.commit_id
    );
}
