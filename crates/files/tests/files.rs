//! The Files API's domain over a real store (both databases) and a real hub blob store in a
//! temp directory: uploads stream to staging and become shared blobs; every refusal (too large,
//! not JSONL, over quota, even after the bytes were moved into place) leaves nothing behind;
//! deletion and the expiry sweep free a blob only when nothing else names it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use files::{Files, FilesConfig, FilesError, NewFile, Purpose};
use store::testing::{Kind, ScratchDb};
use store::{NewTenant, Store};

struct Fixture {
    store: Arc<dyn Store>,
    hub: hub::Hub,
    files: Files,
    dir: tempfile::TempDir,
    _scratch: ScratchDb,
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
                    created_at: chrono::Utc::now(),
                    free_tier_only: false,
                    rpm: None,
                    tpm: None,
                    grant_tokens: 0,
                })
                .await
                .expect("tenant");
        }
        let dir = tempfile::tempdir().expect("data dir");
        let hub =
            hub::Hub::open(store.clone(), dir.path(), hub::HubConfig::default()).expect("hub");
        let config = FilesConfig {
            max_file_bytes: 1000,
            tenant_quota_bytes: 1500,
            min_expiry: Duration::from_secs(1),
            ..FilesConfig::default()
        };
        let files = Files::open(store.clone(), hub.clone(), dir.path(), config).expect("files");
        Self {
            store,
            hub,
            files,
            dir,
            _scratch: scratch,
        }
    }

    fn staging(&self) -> Vec<PathBuf> {
        entries(&self.dir.path().join("files").join("staging"))
    }

    fn blob(&self, sha256: &str) -> bool {
        self.hub.blobs().blob_path(sha256).expect("path").exists()
    }

    async fn upload(
        &self,
        tenant: &str,
        data: &[u8],
        purpose: Purpose,
        expires_after: Option<u64>,
    ) -> Result<files::FileRecord, FilesError> {
        // In uneven pieces, as a network delivers them.
        let chunks: Vec<Result<Bytes, FilesError>> = data
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let staged = self
            .files
            .stage(tenant, futures::stream::iter(chunks))
            .await?;
        self.files
            .create(
                tenant,
                staged,
                NewFile {
                    filename: "input.jsonl".into(),
                    purpose,
                    expires_after,
                },
            )
            .await
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn sha256(data: &[u8]) -> String {
    hub::blobs::Digests::of(data).sha256
}

store::on_both!(Fixture;
    uploads_become_blobs_and_deletes_free_them,
    refusals_leave_nothing_behind,
    a_blob_a_hub_repository_names_outlives_the_file,
    expired_files_vanish_and_the_sweep_frees_their_blobs,
);

async fn uploads_become_blobs_and_deletes_free_them(fx: Fixture) {
    let data = b"{\"custom_id\": \"1\"}\n{\"custom_id\": \"2\"}\n";
    let a = fx
        .upload("a", data, Purpose::Batch, None)
        .await
        .expect("upload");
    assert_eq!(
        (a.bytes, a.purpose.as_str(), a.sha256.clone()),
        (data.len() as i64, "batch", sha256(data))
    );
    let (got, path) = fx.files.content("a", &a.id).await.expect("content");
    assert_eq!(got, a);
    assert_eq!(std::fs::read(path).expect("read"), data);
    // The same bytes for another tenant: one blob, two files.
    let b = fx
        .upload("b", data, Purpose::FineTune, None)
        .await
        .expect("upload");
    assert!(fx.staging().is_empty());
    assert!(matches!(
        fx.files.get("b", &a.id).await,
        Err(FilesError::NotFound(_))
    ));
    fx.files.delete("a", &a.id).await.expect("delete");
    assert!(fx.blob(&a.sha256), "b's file still names it");
    assert!(matches!(
        fx.files.delete("a", &a.id).await,
        Err(FilesError::NotFound(_))
    ));
    fx.files.delete("b", &b.id).await.expect("delete");
    assert!(!fx.blob(&a.sha256), "nothing names it now");
}

async fn refusals_leave_nothing_behind(fx: Fixture) {
    let too_big = vec![b'x'; 1001];
    assert!(matches!(
        fx.upload("a", &too_big, Purpose::UserData, None).await,
        Err(FilesError::TooLarge { limit: 1000 })
    ));
    let not_jsonl = b"{}\n{\"a\": 1}\nnot json\n";
    match fx.upload("a", not_jsonl, Purpose::Batch, None).await {
        Err(FilesError::Invalid {
            param: "file",
            message,
        }) => {
            assert!(message.contains("line 3"), "{message}")
        }
        other => panic!("expected a JSONL refusal, got {other:?}"),
    }
    assert!(matches!(
        fx.upload("a", b"{}", Purpose::Batch, Some(1 << 40)).await,
        Err(FilesError::Invalid {
            param: "expires_after[seconds]",
            ..
        })
    ));
    // The quota, while streaming ...
    let first = fx
        .upload("a", &[b'1'; 1000], Purpose::UserData, None)
        .await
        .expect("fits");
    match fx.upload("a", &[b'2'; 600], Purpose::UserData, None).await {
        Err(FilesError::OverQuota {
            used: 1000,
            quota: 1500,
            ..
        }) => {}
        other => panic!("expected over quota, got {other:?}"),
    }
    // ... and when it shrank between staging and recording: the bytes already moved into the
    // blob store go again.
    let data = [b'3'; 400];
    let staged = fx
        .files
        .stage(
            "a",
            futures::stream::iter(vec![Ok(Bytes::copy_from_slice(&data))]),
        )
        .await
        .expect("staged within the quota");
    fx.files
        .set_quota("a", Some(1200))
        .await
        .expect("lower quota");
    let refused = fx
        .files
        .create(
            "a",
            staged,
            NewFile {
                filename: "late.bin".into(),
                purpose: Purpose::UserData,
                expires_after: None,
            },
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(FilesError::OverQuota {
                used: 1000,
                quota: 1200,
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(!fx.blob(&sha256(&data)), "released");
    assert!(fx.store.blob(&sha256(&data)).await.expect("blob").is_none());
    assert!(fx.staging().is_empty(), "no staged upload left");
    let listed = fx
        .files
        .list(
            "a",
            &files::Listing {
                purpose: None,
                limit: 10,
                ascending: false,
                after: None,
            },
        )
        .await
        .expect("list");
    assert_eq!(listed.files, vec![first]);
    assert_eq!(fx.files.quota("a").await.expect("quota").used_bytes, 1000);
}

async fn a_blob_a_hub_repository_names_outlives_the_file(fx: Fixture) {
    let data = b"weights";
    // The hub has the bytes, uploaded by b.
    let digests = fx.hub.blobs().put_bytes(data).await.expect("hub blob");
    fx.store
        .put_blob(&store::hub::Blob {
            sha256: digests.sha256.clone(),
            size: digests.size as i64,
            git_oid: digests.git_oid.clone(),
            created_at: chrono::Utc::now(),
        })
        .await
        .expect("blob row");
    fx.store
        .record_blob_uploader(&digests.sha256, "b", chrono::Utc::now())
        .await
        .expect("uploader");
    let f = fx
        .upload("a", data, Purpose::Vision, None)
        .await
        .expect("upload");
    assert_eq!(f.sha256, digests.sha256, "deduplicated onto the hub's blob");
    fx.files.delete("a", &f.id).await.expect("delete");
    assert!(fx.blob(&digests.sha256), "the hub still names it");
    assert!(fx
        .store
        .blob(&digests.sha256)
        .await
        .expect("blob")
        .is_some());
}

async fn expired_files_vanish_and_the_sweep_frees_their_blobs(fx: Fixture) {
    let brief = fx
        .upload("a", b"{}\n", Purpose::Batch, Some(1))
        .await
        .expect("upload");
    let kept = fx
        .upload("a", b"{\"k\": 1}\n", Purpose::Batch, None)
        .await
        .expect("upload");
    assert_eq!(
        brief.expires_at,
        Some(brief.created_at + chrono::TimeDelta::seconds(1))
    );
    assert_eq!(fx.files.sweep().await.expect("sweep"), 0, "not yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(
        fx.files.get("a", &brief.id).await,
        Err(FilesError::NotFound(_))
    ));
    assert!(fx.blob(&brief.sha256), "still on disk until the sweep");
    assert_eq!(fx.files.sweep().await.expect("sweep"), 1);
    assert!(!fx.blob(&brief.sha256));
    assert!(fx.files.get("a", &kept.id).await.is_ok());
}
