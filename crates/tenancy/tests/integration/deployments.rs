//! The control plane's deployment records (`store::DeploymentRecordStore`) on both databases:
//! insert, replace keeping `created_at`, list by name, delete, and survival across a second
//! connection pool (a restarted process).

use chrono::TimeDelta;
use tenancy::Clock;

use crate::common::Fixture;

store::on_both!(Fixture;deployment_records_persist);

async fn deployment_records_persist(fx: Fixture) {
    let t0 = fx.clock.now();
    let spec = r#"{"name":"smol","model":"/m/smol.gguf","max_replicas":2}"#;
    let store = &fx.store;
    assert!(store.deployments().await.expect("list").is_empty());
    store
        .put_deployment("smol", spec, t0)
        .await
        .expect("insert");
    store
        .put_deployment("alpha", r#"{"name":"alpha","model":"a.gguf"}"#, t0)
        .await
        .expect("insert");
    let t1 = t0 + TimeDelta::seconds(5);
    let replaced = r#"{"name":"smol","model":"/m/smol2.gguf","max_replicas":3}"#;
    store
        .put_deployment("smol", replaced, t1)
        .await
        .expect("replace");

    // A second pool on the same database, as after a restart.
    let again = fx.second_store().await;
    let records = again.deployments().await.expect("list");
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["alpha", "smol"]);
    let smol = &records[1];
    assert_eq!(smol.spec, replaced);
    assert_eq!((smol.created_at, smol.updated_at), (t0, t1));

    again.delete_deployment("smol").await.expect("delete");
    again
        .delete_deployment("smol")
        .await
        .expect("deleting twice is fine");
    let names: Vec<String> = store
        .deployments()
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["alpha"]);
    assert!(
        store.put_deployment("bad", "not json", t0).await.is_err(),
        "the database refuses a spec that is not JSON"
    );
}
