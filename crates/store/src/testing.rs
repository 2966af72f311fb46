//! Scratch databases for tests: a fresh SQLite file in a temp directory, or
//! a PostgreSQL database created for one test and dropped (`WITH (FORCE)`) when it ends. Every
//! crate whose tests run on both databases uses this one fixture. Always compiled (it needs
//! nothing the store does not already link) rather than behind a feature: a dev-dependency
//! feature would make `cargo test` and `cargo build` compile every crate above the store twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// Which database a scratch database is made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// Runs async scenarios against both databases, as `NAME::sqlite` and `NAME::postgres`:
/// `on_both!(Fixture; scenario_a, scenario_b)`, where `Fixture` (in scope where it is called)
/// has an async `new(Kind) -> Fixture` and each scenario is an `async fn(Fixture)` there.
#[macro_export]
macro_rules! on_both {
    ($fixture:ident; $($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::testing::Kind;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::$fixture::new(Kind::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::$fixture::new(Kind::Postgres).await).await;
            }
        }
    )*};
}

/// A database of its own for one test; removed when dropped.
pub struct ScratchDb {
    /// What `store::open` takes.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgScratch>,
}

impl ScratchDb {
    /// Makes one. Panics (it is a test fixture) with what to do when PostgreSQL is unreachable.
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                Self {
                    url: format!("sqlite://{}", dir.path().join("flywheel.db").display()),
                    _dir: Some(dir),
                    _pg: None,
                }
            }
            Kind::Postgres => {
                let pg = PgScratch::create().await;
                Self {
                    url: pg.url.clone(),
                    _dir: None,
                    _pg: Some(pg),
                }
            }
        }
    }
}

struct PgScratch {
    admin_url: String,
    name: String,
    url: String,
}

/// Distinguishes this test process's databases from other runs' (also across processes).
fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("{}_{nanos}", std::process::id())
    })
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

#[cfg(test)]
mod tests {
    use super::with_database;

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
}
