//! Fixtures: a hub over a fresh database (a temp-dir SQLite file, or a scratch PostgreSQL
//! database dropped afterwards) and a temp data directory; tenants and orgs made through the
//! store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hub::{Access, Hub, HubConfig};
use sqlx::{Connection, PgConnection};
use store::{NewTenant, Org, Store};

#[derive(Debug, Clone, Copy)]
pub enum Db {
    Sqlite,
    Postgres,
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::common::{Db, Fixture};

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Fixture::new(Db::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Fixture::new(Db::Postgres).await).await;
            }
        }
    )*};
}
pub(crate) use on_both;

pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    _dir: tempfile::TempDir,
    _pg: Option<PgScratch>,
}

impl Fixture {
    pub async fn new(db: Db) -> Self {
        Self::with_config(db, HubConfig::default()).await
    }

    pub async fn with_config(db: Db, config: HubConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("fw.db").display()),
                None,
            ),
            Db::Postgres => {
                let pg = PgScratch::create().await;
                (pg.url.clone(), Some(pg))
            }
        };
        let store = store::open(&url).await.expect("open the store");
        let hub = Hub::open(store.clone(), dir.path(), config).expect("open the hub");
        Self {
            store,
            hub,
            _dir: dir,
            _pg: pg,
        }
    }

    /// The same hub over the same store and files, with another configuration.
    pub fn reconfigured(&self, config: HubConfig) -> Hub {
        Hub::open(self.store.clone(), self._dir.path(), config).expect("reopen the hub")
    }

    /// A tenant owning org `org`, and its access with the given scopes.
    pub async fn tenant(&self, name: &str, org: &str, write: bool) -> Access {
        let now = chrono::Utc::now();
        let id = format!("ten_{name}");
        self.store
            .create_tenant(&NewTenant {
                id: id.clone(),
                name: name.into(),
                created_at: now,
                free_tier_only: false,
                rpm: None,
                tpm: None,
                grant_tokens: 0,
            })
            .await
            .expect("tenant");
        self.store
            .create_org(&Org {
                id: format!("org_{org}"),
                tenant_id: id.clone(),
                name: org.into(),
                created_at: now,
            })
            .await
            .expect("org");
        Access::Tenant {
            tenant_id: id,
            tenant_name: name.into(),
            read: true,
            write,
        }
    }
}

pub struct PgScratch {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgScratch {
    async fn create() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let admin_url = std::env::var("FLYWHEEL_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into());
        let mut conn =
            tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(&admin_url))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_else(|| {
                    panic!("PostgreSQL at {admin_url} is required (scripts/test.sh starts it)")
                });
        let name = format!(
            "fw_hub_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        let root = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(r, _)| r);
        Self {
            url: format!("{root}/{name}"),
            admin_url,
            name,
        }
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
    }
}
