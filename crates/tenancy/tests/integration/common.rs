//! Fixtures: a fresh database per test (a temp-dir SQLite file, or a scratch PostgreSQL
//! database created for the test and dropped after it), a manual clock, and tenancy services.

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use store::testing::ScratchDb;
use tenancy::{ManualClock, PriceRates, Store, Tenancy, TenancyConfig, Tenant, TenantSpec};

pub use store::testing::Kind as Backend;

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
    /// Removed when the fixture drops.
    _scratch: ScratchDb,
}

impl Fixture {
    pub async fn new(backend: Backend) -> Self {
        let scratch = ScratchDb::new(backend).await;
        let url = scratch.url.clone();
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

impl Fixture {
    pub fn clock_now(&self) -> tenancy::Timestamp {
        use tenancy::Clock;
        self.clock.now()
    }
}
