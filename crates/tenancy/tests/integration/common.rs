//! Fixtures: a fresh database per test (a temp-dir SQLite file, or a scratch PostgreSQL
//! database created for the test and dropped after it), a manual clock, and tenancy services.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use sqlx::{Connection, PgConnection};
use tenancy::{ManualClock, PriceRates, Store, Tenancy, TenancyConfig, Tenant, TenantSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async scenario against both databases, as `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::common::{Backend, Fixture};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Fixture::new(Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Fixture::new(Backend::Postgres).await).await;
            }
        }
    )*};
}
pub(crate) use on_both;

pub const LEASE_SECS: i64 = 30;

pub fn config(process_id: &str) -> TenancyConfig {
    TenancyConfig {
        free_grant_tokens: 1_000_000,
        default_price: PriceRates::default(),
        lease: TimeDelta::seconds(LEASE_SECS),
        process_id: process_id.to_owned(),
    }
}

pub struct Fixture {
    pub url: String,
    pub store: Arc<dyn Store>,
    pub clock: Arc<ManualClock>,
    /// Process `proc-a`.
    pub tenancy: Tenancy,
    /// Removed when the fixture drops: the SQLite directory or the PostgreSQL database.
    _scratch: (Option<tempfile::TempDir>, Option<PgScratch>),
}

impl Fixture {
    pub async fn new(backend: Backend) -> Self {
        let (url, scratch) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("flywheel.db").display());
                (url, (Some(dir), None))
            }
            Backend::Postgres => {
                let db = PgScratch::create().await;
                (db.url.clone(), (None, Some(db)))
            }
        };
        let store = store::open(&url).await.expect("open the store");
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
                .single()
                .expect("a valid time"),
        ));
        let tenancy =
            Tenancy::new(store.clone(), clock.clone(), &config("proc-a")).expect("valid config");
        Self {
            url,
            store,
            clock,
            tenancy,
            _scratch: scratch,
        }
    }

    /// Another process on the same store and clock.
    pub fn process(&self, process_id: &str) -> Tenancy {
        self.on(self.store.clone(), process_id)
    }

    /// Services of process `process_id` over `store`, sharing this fixture's clock.
    pub fn on(&self, store: Arc<dyn Store>, process_id: &str) -> Tenancy {
        Tenancy::new(store, self.clock.clone(), &config(process_id)).expect("valid config")
    }

    /// A second, independent connection pool on the same database (as another process has).
    pub async fn second_store(&self) -> Arc<dyn Store> {
        store::open(&self.url).await.expect("open the store again")
    }

    pub async fn tenant(&self, name: &str, grant_tokens: i64) -> Tenant {
        self.tenancy
            .directory
            .create_tenant(&TenantSpec {
                name: name.to_owned(),
                grant_tokens: Some(grant_tokens),
                ..TenantSpec::default()
            })
            .await
            .expect("create tenant")
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(TimeDelta::seconds(secs));
    }
}

/// A PostgreSQL database made for one test and dropped (`WITH (FORCE)`) when it ends.
struct PgScratch {
    admin_url: String,
    name: String,
    url: String,
}

fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..10].to_owned())
}

/// Where PostgreSQL is: `FLYWHEEL_TEST_POSTGRES_URL`, else user `postgres` then `root` on
/// 127.0.0.1:5432, database `test`.
fn admin_urls() -> Vec<String> {
    match std::env::var("FLYWHEEL_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => vec![url],
        _ => vec![
            "postgres://postgres@127.0.0.1:5432/test".to_owned(),
            "postgres://root@127.0.0.1:5432/test".to_owned(),
        ],
    }
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let root = base.rsplit_once('/').map_or(base, |(root, _)| root);
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

impl PgScratch {
    async fn create() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let mut failures = Vec::new();
        for admin_url in admin_urls() {
            let connect = PgConnection::connect(&admin_url);
            let mut conn = match tokio::time::timeout(Duration::from_secs(10), connect).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => {
                    failures.push(format!("{admin_url}: {e}"));
                    continue;
                }
                Err(_) => {
                    failures.push(format!("{admin_url}: timed out"));
                    continue;
                }
            };
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("fw_test_{}_{n}", run_id());
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
            let _ = conn.close().await;
            return Self {
                url: with_database(&admin_url, &name),
                admin_url,
                name,
            };
        }
        panic!(
            "PostgreSQL is required by these tests and is unreachable ({}). Start it \
             (scripts/test.sh does) or point FLYWHEEL_TEST_POSTGRES_URL at a server where the \
             user may create databases.",
            failures.join("; ")
        );
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop may run inside the test's runtime, which must not block on itself: use a thread
        // with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop scratch database {}: {dropped:?}", self.name);
        }
    }
}

#[test]
fn database_urls_swap_their_database() {
    assert_eq!(
        with_database("postgres://u@h:5432/test", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("postgres://u@h/test?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
}

impl Fixture {
    pub fn clock_now(&self) -> tenancy::Timestamp {
        use tenancy::Clock;
        self.clock.now()
    }
}
