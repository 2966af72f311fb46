//! Removing a tenant (`store::RemovalStore`) on both databases: a dry run lists exactly what the
//! removal then removes; the tenant's private repositories go with every revision while a blob
//! another tenant's repository names stays; its public repositories, the orgs holding them, its
//! row, keys (revoked) and ledger stay; another tenant's data is untouched; a second removal
//! is a conflict. Every scenario runs twice, `NAME::sqlite` and `NAME::postgres`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use store::hub::{Blob, CardSummary, Commit, NewCommit, NewRepo, TreeEntry, UploadSession};
use store::removal as kinds;
use store::testing::{Kind, ScratchDb};
use store::{
    ApiKey, LimitSubject, McpCallRecord, McpServerRecord, McpSessionRecord, McpUpstreamSession,
    NewReservation, NewTenant, Org, PriceRates, Store, StoreError, StoredResponse, Timestamp,
};

struct Fixture {
    store: Arc<dyn Store>,
    kind: Kind,
    scratch: ScratchDb,
}

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("a valid time")
}

/// A blob id of 64 hex digits made of one repeated digit.
fn sha(c: char) -> String {
    c.to_string().repeat(64)
}

impl Fixture {
    async fn new(kind: Kind) -> Self {
        let scratch = ScratchDb::new(kind).await;
        let store = store::open(&scratch.url).await.expect("open the store");
        Self {
            store,
            kind,
            scratch,
        }
    }

    /// Runs `sql` on a connection of its own, past the store.
    async fn raw(&self, sql: &str) -> Result<u64, sqlx::Error> {
        let url = &self.scratch.url;
        Ok(match self.kind {
            Kind::Sqlite => {
                let pool = sqlx::SqlitePool::connect(url).await?;
                sqlx::query(sql).execute(&pool).await?.rows_affected()
            }
            Kind::Postgres => {
                let pool = sqlx::PgPool::connect(url).await?;
                sqlx::query(sql).execute(&pool).await?.rows_affected()
            }
        })
    }

    async fn tenant(&self, id: &str) {
        self.store
            .create_tenant(&NewTenant {
                id: id.to_owned(),
                name: format!("{id}-name"),
                created_at: t0(),
                free_tier_only: false,
                rpm: None,
                tpm: None,
                grant_tokens: 1000,
            })
            .await
            .expect("create tenant");
    }

    async fn key(&self, tenant: &str, id: &str) {
        self.store
            .create_api_key(&ApiKey {
                id: id.to_owned(),
                tenant_id: tenant.to_owned(),
                name: "k".into(),
                prefix: format!("fw-{id}"),
                hash: format!("hash-{id}"),
                scopes: vec!["inference".into()],
                models: None,
                rpm: None,
                tpm: None,
                created_at: t0(),
                expires_at: None,
                revoked_at: None,
                last_used_at: None,
            })
            .await
            .expect("create key");
    }

    async fn org(&self, tenant: &str, name: &str) {
        self.store
            .create_org(&Org {
                id: format!("org_{name}"),
                tenant_id: tenant.to_owned(),
                name: name.to_owned(),
                created_at: t0(),
            })
            .await
            .expect("create org");
    }

    /// A repository whose `main` holds one file per blob, and `uploader` recorded for each.
    async fn repo(&self, owner: &str, org: &str, name: &str, private: bool, blobs: &[&str]) {
        let repo = self
            .store
            .create_repo(&NewRepo {
                id: format!("repo_{org}_{name}"),
                org: org.to_owned(),
                name: name.to_owned(),
                owner_tenant_id: Some(owner.to_owned()),
                private,
                created_at: t0(),
            })
            .await
            .expect("create repo");
        let mut files = Vec::new();
        for (i, blob) in blobs.iter().enumerate() {
            self.blob(blob, owner).await;
            files.push(TreeEntry {
                path: format!("file{i}.bin"),
                sha256: (*blob).to_owned(),
                git_oid: "0".repeat(40),
                size: 4,
            });
        }
        let commit = |id: char, parent: Option<String>| NewCommit {
            commit: Commit {
                id: id.to_string().repeat(40),
                repo_id: repo.id.clone(),
                parent_id: parent.clone(),
                message: "m".into(),
                author: owner.to_owned(),
                created_at: t0(),
            },
            branch: "main".into(),
            expected_parent: parent,
            files: files.clone(),
            card: CardSummary {
                tags: vec!["fixture".into()],
                ..CardSummary::default()
            },
        };
        let first = self.store.commit(&commit('a', None)).await.expect("commit");
        self.store
            .commit(&commit('b', Some(first.id.clone())))
            .await
            .expect("second commit");
        self.store
            .create_tag(&repo.id, "v1", &first.id, t0())
            .await
            .expect("tag");
    }

    async fn blob(&self, sha256: &str, uploader: &str) {
        self.store
            .put_blob(&Blob {
                sha256: sha256.to_owned(),
                size: 4,
                git_oid: "0".repeat(40),
                created_at: t0(),
            })
            .await
            .expect("blob");
        self.store
            .record_blob_uploader(sha256, uploader, t0())
            .await
            .expect("uploader");
    }

    /// A file of `tenant` whose bytes are blob `sha256` (created if missing).
    async fn file(&self, id: &str, tenant: &str, sha256: &str) {
        let put = self
            .store
            .put_file(
                &store::FileRecord {
                    id: id.to_owned(),
                    tenant_id: tenant.to_owned(),
                    filename: "input.jsonl".into(),
                    purpose: "batch".into(),
                    bytes: 4,
                    sha256: sha256.to_owned(),
                    created_at: t0(),
                    expires_at: None,
                },
                &Blob {
                    sha256: sha256.to_owned(),
                    size: 4,
                    git_oid: "0".repeat(40),
                    created_at: t0(),
                },
                1 << 20,
            )
            .await
            .expect("put file");
        assert_eq!(put, store::FilePut::Stored);
    }

    /// A fine-tuning job of `tenant` with an event and a checkpoint.
    async fn fine_tuning_job(&self, id: &str, tenant: &str) {
        let job = store::FineTuningJob {
            id: id.to_owned(),
            tenant_id: tenant.to_owned(),
            key_id: None,
            model: "m".into(),
            suffix: None,
            fine_tuned_model: None,
            status: "running".into(),
            training_file: "file-x".into(),
            validation_file: None,
            hyperparameters: "{}".into(),
            seed: 1,
            error: None,
            total_tokens: Some(10),
            trained_tokens: None,
            attempt: 1,
            billed_tokens: 0,
            created_at: t0(),
            finished_at: None,
            estimated_finish: None,
            metadata: None,
            hub_repo: None,
        };
        assert!(self
            .store
            .create_fine_tuning_job(&job, 5)
            .await
            .expect("job"));
        self.store
            .add_fine_tuning_event(id, "info", "started", None, t0())
            .await
            .expect("event");
        let checkpoint = store::FineTuningCheckpoint {
            step: 1,
            created_at: t0(),
            metrics: "{}".into(),
        };
        self.store
            .put_fine_tuning_checkpoint(id, &checkpoint)
            .await
            .expect("checkpoint");
    }

    async fn response(&self, id: &str, tenant: &str) {
        self.store
            .put_response(&StoredResponse {
                id: id.to_owned(),
                tenant_id: Some(tenant.to_owned()),
                model: "m".into(),
                previous_id: None,
                response: "{}".into(),
                input_items: "[]".into(),
                conversation: "[]".into(),
                created_at: t0(),
            })
            .await
            .expect("response");
    }

    async fn mcp_server(&self, id: &str, tenant: Option<&str>, public: bool) {
        self.store
            .create_mcp_server(&McpServerRecord {
                id: id.to_owned(),
                tenant_id: tenant.map(str::to_owned),
                name: id.to_owned(),
                transport: "http".into(),
                url: Some("https://mcp.example.com/mcp".into()),
                command: None,
                args: Vec::new(),
                sealed: None,
                header_names: Vec::new(),
                env_names: Vec::new(),
                allowed_tools: None,
                public,
                created_at: t0(),
                updated_at: t0(),
            })
            .await
            .expect("mcp server");
    }

    async fn mcp_session(&self, id: &str, tenant: &str, servers: &[&str]) {
        self.store
            .create_mcp_session(&McpSessionRecord {
                id: id.to_owned(),
                tenant_id: Some(tenant.to_owned()),
                protocol_version: "2025-11-25".into(),
                created_at: t0(),
                last_seen: t0(),
            })
            .await
            .expect("session");
        for server in servers {
            self.store
                .pin_mcp_upstream(&McpUpstreamSession {
                    session_id: id.to_owned(),
                    server_id: (*server).to_owned(),
                    upstream_session: Some("up".into()),
                    protocol_version: "2025-11-25".into(),
                    created_at: t0(),
                })
                .await
                .expect("pin");
        }
    }

    async fn call(&self, id: &str, tenant: &str, arguments: Option<&str>) {
        self.store
            .record_mcp_call(&McpCallRecord {
                id: id.to_owned(),
                tenant_id: Some(tenant.to_owned()),
                key_prefix: None,
                server_id: "srv".into(),
                server_name: "srv".into(),
                tool: "echo".into(),
                started_at: Utc::now(),
                duration_ms: 1,
                outcome: "ok".into(),
                error: None,
                charged: 0,
                arguments: arguments.map(str::to_owned),
            })
            .await
            .expect("call");
    }

    async fn window(&self, subject: &str) {
        let subjects = [LimitSubject {
            subject: subject.to_owned(),
            rpm: Some(100),
            tpm: None,
        }];
        self.store
            .admit(&subjects, 1, Utc::now())
            .await
            .expect("admit");
    }

    async fn reserve(&self, request_id: &str, tenant: &str) {
        self.store
            .reserve(&NewReservation {
                request_id: request_id.to_owned(),
                tenant_id: tenant.to_owned(),
                key_id: None,
                model: "m".into(),
                prompt_tokens: 1,
                max_completion_tokens: 1,
                default_rates: PriceRates::default(),
                owner: "here".into(),
                lease_expires_at: Utc::now() + TimeDelta::minutes(5),
                created_at: Utc::now(),
            })
            .await
            .expect("reserve");
    }

    /// Tenant `a` holds one of everything; `b` shares blob `s` with `a`'s private repository.
    async fn two_tenants(&self) {
        for t in ["a", "b"] {
            self.tenant(t).await;
        }
        self.key("a", "ka1").await;
        self.key("a", "ka2").await;
        self.key("b", "kb").await;
        self.org("a", "a-org").await;
        self.org("a", "a-pub").await;
        self.org("a", "a-empty").await;
        self.org("b", "b-org").await;
        // `s` shared with b, `p` only a's private repo, `q` a's public repo.
        self.repo("a", "a-org", "secret", true, &[&sha('5'), &sha('7')])
            .await;
        self.repo("a", "a-pub", "open", false, &[&sha('9')]).await;
        self.repo("b", "b-org", "model", true, &[&sha('5')]).await;
        // `u`: uploaded by a, never committed; `w`: uploaded by a and by b.
        self.blob(&sha('1'), "a").await;
        self.blob(&sha('3'), "a").await;
        self.store
            .record_blob_uploader(&sha('3'), "b", t0())
            .await
            .expect("b uploaded w too");
        let secret = self.store.repo("a-org", "secret").await.expect("repo");
        self.store
            .create_upload(&UploadSession {
                id: "0".repeat(32),
                repo_id: secret.id,
                sha256: sha('e'),
                size: 10,
                received: 0,
                created_at: t0(),
                updated_at: t0(),
            })
            .await
            .expect("upload");
        // Files: `a` only a's; `c` a's and b's; `5` a's file and b's repository.
        self.file("file-a1", "a", &sha('a')).await;
        self.file("file-a2", "a", &sha('c')).await;
        self.file("file-a3", "a", &sha('5')).await;
        self.file("file-b", "b", &sha('c')).await;
        self.fine_tuning_job("ftjob-a", "a").await;
        self.fine_tuning_job("ftjob-b", "b").await;
        self.store
            .set_file_quota("a", Some(1 << 30))
            .await
            .expect("a's quota");
        self.response("resp_a", "a").await;
        self.response("resp_b", "b").await;
        self.mcp_server("mcp_a", Some("a"), false).await;
        self.mcp_server("mcp_b", Some("b"), false).await;
        self.mcp_server("mcp_op", None, true).await;
        self.store
            .grant_mcp_server("a", "mcp_op", t0())
            .await
            .expect("grant a");
        self.store
            .grant_mcp_server("b", "mcp_op", t0())
            .await
            .expect("grant b");
        self.mcp_session("sess_a", "a", &["mcp_a", "mcp_op"]).await;
        self.mcp_session("sess_b", "b", &["mcp_b", "mcp_op"]).await;
        self.store
            .set_mcp_audit_arguments("a", true, t0())
            .await
            .expect("setting");
        self.call("call_a1", "a", Some("{\"x\":1}")).await;
        self.call("call_a2", "a", None).await;
        self.call("call_b", "b", Some("{\"y\":2}")).await;
        self.window("tenant:a").await;
        self.window("key:ka1").await;
        self.window("tenant:b").await;
        self.reserve("req_a", "a").await;
        self.budget("tenant:a", "a").await;
        self.budget("key:ka1", "a").await;
        self.budget("tenant:b", "b").await;
        self.store
            .put_webhook_secret("a", "whsec_a", t0(), false)
            .await
            .expect("a's webhook secret");
    }

    /// A budget of `subject` with one alert event.
    async fn budget(&self, subject: &str, tenant: &str) {
        self.store
            .put_budget(&store::BudgetRecord {
                subject: subject.to_owned(),
                tenant_id: tenant.to_owned(),
                amount: 100,
                period: "day".into(),
                alert_at_ppm: vec![500_000],
                webhook_url: None,
                updated_at: t0(),
            })
            .await
            .expect("budget");
        let event = store::BudgetEvent {
            id: format!("bevt_{subject}"),
            tenant_id: tenant.to_owned(),
            subject: subject.to_owned(),
            period_start: t0(),
            threshold_ppm: 500_000,
            amount: 100,
            spent: 60,
            webhook_url: None,
            created_at: t0(),
            attempts: 0,
            next_attempt_at: t0(),
            delivered_at: None,
            last_error: None,
        };
        assert!(self.store.record_budget_event(&event).await.expect("event"));
    }
}

fn map(entries: &[(&'static str, &[&str])]) -> BTreeMap<&'static str, Vec<String>> {
    entries
        .iter()
        .map(|(k, v)| (*k, v.iter().map(|s| (*s).to_owned()).collect()))
        .collect()
}

async fn a_dry_run_lists_exactly_what_the_removal_removes(fx: Fixture) {
    fx.two_tenants().await;
    let store = &fx.store;
    let plan = store.tenant_removal("a").await.expect("dry run");
    let expected = map(&[
        (kinds::RESPONSES, &["resp_a"]),
        (kinds::FILES, &["file-a1", "file-a2", "file-a3"]),
        (kinds::FILE_QUOTA, &["quota_bytes"]),
        (kinds::BATCH_LINES, &[]),
        (kinds::BATCHES, &[]),
        (kinds::FINE_TUNING_JOBS, &["ftjob-a"]),
        (kinds::FINE_TUNING_EVENTS, &["ftjob-a"]),
        (kinds::FINE_TUNING_CHECKPOINTS, &["ftjob-a"]),
        (
            kinds::MCP_SESSION_UPSTREAMS,
            &["sess_a/mcp_a", "sess_a/mcp_op"],
        ),
        (kinds::MCP_GRANTS, &["mcp_op"]),
        (kinds::MCP_SESSIONS, &["sess_a"]),
        (kinds::MCP_SERVERS, &["mcp_a"]),
        (kinds::MCP_SETTINGS, &["audit_arguments"]),
        (kinds::MCP_CALL_ARGUMENTS, &["call_a1"]),
        (kinds::REQUEST_LOGS, &[]),
        (kinds::SIGN_IN_FAILURES, &[]),
        (kinds::CONSOLE_SESSIONS, &[]),
        (kinds::MEMBERS, &[]),
        (kinds::BUDGET_EVENTS, &["bevt_key:ka1", "bevt_tenant:a"]),
        (kinds::BUDGETS, &["key:ka1", "tenant:a"]),
        (kinds::WEBHOOK_SECRET, &["webhook_secret"]),
        (kinds::RATE_WINDOWS, &["key:ka1", "tenant:a"]),
        (kinds::HUB_UPLOADS, &[&"0".repeat(32)]),
        (kinds::HUB_REPOS, &["a-org/secret"]),
        (kinds::HUB_BLOBS, &[&sha('1'), &sha('7'), &sha('a')]),
        (kinds::ORGS, &["a-empty", "a-org"]),
    ]);
    assert_eq!(plan.removed, expected);
    assert_eq!(plan.revoked, map(&[(kinds::API_KEYS, &["ka1", "ka2"])]));
    let kept = map(&[
        (kinds::HUB_REPOS, &["a-pub/open"]),
        (kinds::ORGS, &["a-pub"]),
    ]);
    assert_eq!(plan.kept, kept);
    assert_eq!(plan.ledger_entries, 2, "the grant and the reservation");
    assert_eq!(plan.deleted_at, None);
    assert_eq!(
        store.open_reservations("a").await.expect("open"),
        vec!["req_a".to_owned()]
    );

    let now = Utc::now();
    let removal = store.remove_tenant("a", now).await.expect("remove");
    assert_eq!(
        removal.removed, plan.removed,
        "the dry run listed what went"
    );
    assert_eq!(removal.revoked, plan.revoked);
    assert_eq!(removal.kept, plan.kept);
    assert_eq!(removal.ledger_entries, plan.ledger_entries);
    assert!(removal.deleted_at.is_some());

    // The tenant stays, deleted and disabled, with its keys (revoked) and its ledger.
    let a = store.tenant("a").await.expect("the row stays");
    assert!(a.disabled && a.deleted_at.is_some(), "{a:?}");
    assert_eq!(a.balances.grant_tokens_total, 1000);
    let keys = store.api_keys("a").await.expect("keys");
    assert!(keys.iter().all(|k| k.revoked_at.is_some()), "{keys:?}");
    assert_eq!(store.ledger_entries("a").await.expect("ledger").len(), 2);
    assert!(store.reservation("req_a").await.is_ok());

    // Its private repository is gone with its revisions; its public one stays.
    assert!(matches!(
        store.repo("a-org", "secret").await,
        Err(StoreError::NotFound { .. })
    ));
    let open = store
        .repo("a-pub", "open")
        .await
        .expect("public repo stays");
    let main = store.find_ref(&open.id, "main").await.expect("refs");
    assert!(main.is_some());
    assert!(store.upload(&"0".repeat(32)).await.is_err());
    // Blobs: shared with b, in a's public repo, or uploaded by b too stay.
    for (c, kept) in [
        ('5', true),
        ('9', true),
        ('3', true),
        ('7', false),
        ('1', false),
        ('a', false),
        ('c', true),
    ] {
        let blob = store.blob(&sha(c)).await.expect("blob lookup");
        assert_eq!(blob.is_some(), kept, "blob {c}");
    }
    let model = store.repo("b-org", "model").await.expect("b's repo");
    let head = store
        .find_ref(&model.id, "main")
        .await
        .expect("refs")
        .expect("main");
    assert_eq!(
        store
            .tree(&model.id, &head.commit_id)
            .await
            .expect("tree")
            .len(),
        1
    );
    // The shared blob is no longer a's to name; b's still.
    assert!(!store.blob_reachable(&sha('5'), "a").await.expect("reach"));
    assert!(store.blob_reachable(&sha('5'), "b").await.expect("reach"));

    let orgs: Vec<String> = store
        .orgs("a")
        .await
        .expect("orgs")
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(orgs, ["a-pub"]);
    assert!(store.response("resp_a").await.is_err());
    assert!(store.response("resp_b").await.is_ok());
    assert!(store.mcp_server("mcp_a").await.is_err());
    assert!(store.mcp_server("mcp_b").await.is_ok());
    assert!(store.mcp_session("sess_a").await.is_err());
    assert!(store.mcp_session("sess_b").await.is_ok());
    assert!(store
        .mcp_upstream("sess_b", "mcp_op")
        .await
        .expect("pin")
        .is_some());
    assert!(store
        .mcp_servers_granted("a")
        .await
        .expect("grants")
        .is_empty());
    assert_eq!(
        store.mcp_servers_granted("b").await.expect("grants").len(),
        1
    );
    assert!(!store.mcp_audit_arguments("a").await.expect("setting"));
    // The audit log stays (it is what was charged), without the arguments.
    let far = TimeDelta::days(1);
    let calls = store
        .mcp_calls(Some("a"), Utc::now() - far, Utc::now() + far, 10)
        .await
        .expect("calls");
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.arguments.is_none()), "{calls:?}");
    let calls_b = store
        .mcp_calls(Some("b"), Utc::now() - far, Utc::now() + far, 10)
        .await
        .expect("calls");
    assert_eq!(calls_b[0].arguments.as_deref(), Some("{\"y\":2}"));

    // b is untouched.
    let plan_b = store.tenant_removal("b").await.expect("b's dry run");
    assert_eq!(plan_b.removed(kinds::RESPONSES), ["resp_b"]);
    assert_eq!(plan_b.removed(kinds::HUB_REPOS), ["b-org/model"]);
    assert_eq!(plan_b.removed(kinds::RATE_WINDOWS), ["tenant:b"]);
    assert_eq!(plan_b.removed(kinds::BUDGETS), ["tenant:b"]);
    assert_eq!(plan_b.revoked[kinds::API_KEYS], ["kb"]);
    assert_eq!(plan_b.removed(kinds::FILES), ["file-b"]);
    assert_eq!(plan_b.removed(kinds::FINE_TUNING_JOBS), ["ftjob-b"]);
    // The blobs b shares with nobody now go with b: its repository's, the one it uploaded
    // after a, its file's.
    assert_eq!(
        plan_b.removed(kinds::HUB_BLOBS),
        [sha('3'), sha('5'), sha('c')]
    );
}

async fn a_deleted_tenant_cannot_be_deleted_again(fx: Fixture) {
    fx.two_tenants().await;
    let store = &fx.store;
    let revoked = store
        .disable_for_removal("a", Utc::now())
        .await
        .expect("disable");
    assert_eq!(revoked, ["ka1", "ka2"]);
    let a = store.tenant("a").await.expect("tenant");
    assert!(a.disabled && a.deleted_at.is_none());
    // Disabled, not yet removed: the removal may still run, and revokes nothing more.
    let removal = store.remove_tenant("a", Utc::now()).await.expect("remove");
    assert!(removal.revoked[kinds::API_KEYS].is_empty());
    for again in [
        store.tenant_removal("a").await.map(|_| ()),
        store.remove_tenant("a", Utc::now()).await.map(|_| ()),
        store.disable_for_removal("a", Utc::now()).await.map(|_| ()),
    ] {
        match again {
            Err(StoreError::Conflict(message)) => {
                assert!(message.contains("already deleted"), "{message}")
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    assert!(matches!(
        store.tenant_removal("nobody").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.remove_tenant("nobody", Utc::now()).await,
        Err(StoreError::NotFound { .. })
    ));
    // Revisions of repositories nobody removes are still immutable.
    for table in ["hub_commits", "hub_tree_entries"] {
        let refused = fx.raw(&format!("DELETE FROM {table}")).await;
        assert!(refused.is_err(), "{table}: {refused:?}");
    }
    assert!(store.repo("b-org", "model").await.is_ok());
    store.scrub().await.expect("scrub");
}

store::on_both!(Fixture;
    a_dry_run_lists_exactly_what_the_removal_removes,
    a_deleted_tenant_cannot_be_deleted_again,
);
