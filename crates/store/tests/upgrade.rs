//! Upgrades over live data. `fixtures/previous-schema.sqlite.sql` is a SQLite database made by
//! a released `flywheel serve` (rows in every table, sqlx's record of the migrations it ran,
//! with their checksums; `fixtures/make_previous_schema.py` writes it). This store opens it:
//! the migrations that shipped must still match their checksums, so editing one fails here;
//! newer migrations apply on top; and the data reads back through the store's own APIs.

use std::path::Path;

use store::Store;

const FIXTURE: &str = include_str!("fixtures/previous-schema.sqlite.sql");

/// The fixture as a database file at `path`, with `edit` applied to its SQL first.
fn load(path: &Path, edit: impl Fn(&str) -> String) {
    let conn = rusqlite::Connection::open(path).expect("create the database file");
    // A dump lists its tables by name, not in the order their references need (the sqlite3
    // shell's `.dump` turns the checks off the same way); the store's own connections check.
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .expect("foreign keys off while loading");
    conn.execute_batch(&edit(FIXTURE))
        .expect("load the fixture");
}

fn one(path: &Path, sql: &str) -> String {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row(sql, [], |row| row.get(0)).expect(sql)
}

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

#[tokio::test]
async fn a_database_of_the_previous_release_migrates_and_reads_back() {
    let dir = tempfile::tempdir().expect("scratch directory");
    let path = dir.path().join("flywheel.db");
    load(&path, str::to_owned);
    let store: std::sync::Arc<dyn Store> = store::open(&url(&path))
        .await
        .expect("the current store opens the previous release's database");

    let tenants = store.tenants().await.expect("tenants");
    assert_eq!(tenants.len(), 1);
    let acme = &tenants[0];
    assert_eq!((acme.name.as_str(), acme.rpm), ("acme", Some(1000)));
    assert_eq!(acme.balances.grant_tokens_total, 100);
    // The ledger adds up to the balance it was written with.
    let entries = store.ledger_entries(&acme.id).await.expect("ledger");
    assert_eq!(entries.len(), 13);
    let sum = |kind: &str| -> i64 {
        entries
            .iter()
            .filter(|e| e.kind.as_str() == kind)
            .map(|e| e.amount)
            .sum()
    };
    assert_eq!(sum("topup"), 7_000_000);
    assert_eq!(acme.balances.balance, sum("topup") - sum("charge"));
    assert_eq!(
        store.orgs(&acme.id).await.expect("orgs")[0].name,
        "acme-org"
    );
    let keys = store.api_keys(&acme.id).await.expect("keys");
    assert_eq!((keys.len(), keys[0].rpm), (1, Some(500)));
    let price = store
        .price("tiny")
        .await
        .expect("price")
        .expect("tiny's price");
    assert_eq!(price.rates.output_per_million, 2_000_000);

    let deployments = store.deployments().await.expect("deployments");
    assert_eq!(deployments[0].name, "tiny-elastic");
    assert!(deployments[0].spec.contains("\"max_replicas\":2"));

    let repo = store
        .repo("acme-org", "kept")
        .await
        .expect("the pushed repo");
    assert!(repo.card.tags.iter().any(|t| t == "fixture"));
    let main = store
        .find_ref(&repo.id, "main")
        .await
        .expect("refs")
        .expect("main");
    let tree = store.tree(&repo.id, &main.commit_id).await.expect("tree");
    let weights = tree
        .iter()
        .find(|e| e.path == "nested/weights.bin")
        .expect("the pushed file");
    assert_eq!(weights.size, 4096);

    let response_id = one(&path, "SELECT id FROM responses");
    let response = store.response(&response_id).await.expect("stored response");
    assert_eq!(response.tenant_id.as_deref(), Some(acme.id.as_str()));

    let owned = store
        .mcp_servers_owned(Some(&acme.id))
        .await
        .expect("servers");
    assert_eq!(owned[0].name, "counter");
    let granted = store.mcp_servers_granted(&acme.id).await.expect("grants");
    assert_eq!(granted[0].name, "public-counter");
    assert!(store.mcp_audit_arguments(&acme.id).await.expect("setting"));
    let session = one(&path, "SELECT id FROM mcp_sessions");
    assert_eq!(
        store
            .mcp_session(&session)
            .await
            .expect("session")
            .tenant_id,
        Some(acme.id.clone())
    );
    let far = chrono::TimeDelta::days(3650);
    let now = chrono::Utc::now();
    let calls = store
        .mcp_calls(Some(&acme.id), now - far, now + far, 10)
        .await
        .expect("audit log");
    assert_eq!(
        (
            calls.len(),
            calls[0].tool.as_str(),
            calls[0].outcome.as_str()
        ),
        (1, "echo", "ok")
    );
    store.close().await;
}

#[tokio::test]
async fn an_edited_shipped_migration_is_refused() {
    let dir = tempfile::tempdir().expect("scratch directory");
    let path = dir.path().join("flywheel.db");
    // As if the first migration's text had changed since it ran: its recorded checksum no
    // longer matches the file.
    load(&path, |sql| {
        let at = sql
            .find("INSERT INTO \"_sqlx_migrations\" VALUES(1,")
            .expect("the first migration's record");
        let blob = at + sql[at..].find("X'").expect("its checksum") + 2;
        let mut edited = sql.to_owned();
        edited.replace_range(blob..blob + 8, "00000000");
        edited
    });
    let err = match store::open(&url(&path)).await {
        Ok(_) => panic!("a database whose migration record disagrees with the files opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("migration") && err.contains('1'),
        "the error names the migration: {err}"
    );
}
