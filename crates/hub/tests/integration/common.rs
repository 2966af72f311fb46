//! Fixtures: a hub over a fresh database (a temp-dir SQLite file, or a scratch PostgreSQL
//! database dropped afterwards) and a temp data directory; tenants and orgs made through the
//! store.

use std::sync::Arc;

use hub::{Access, Hub, HubConfig};
use store::testing::{Kind, ScratchDb};
use store::{NewTenant, Org, Store};

/// Opened by `store::on_both!(Fixture; scenario, …)` on each database.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub hub: Hub,
    _dir: tempfile::TempDir,
    _db: ScratchDb,
}

impl Fixture {
    pub async fn new(kind: Kind) -> Self {
        Self::with_config(kind, HubConfig::default()).await
    }

    pub async fn with_config(kind: Kind, config: HubConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = ScratchDb::new(kind).await;
        let store = store::open(&db.url).await.expect("open the store");
        let hub = Hub::open(store.clone(), dir.path(), config).expect("open the hub");
        Self {
            store,
            hub,
            _dir: dir,
            _db: db,
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
