//! RPM/TPM: one limit across processes sharing a database, a sliding window, and TPM
//! correction at settlement.

use tenancy::{Error, KeySpec, Limiter, TenantPatch};

use crate::common::Fixture;

store::on_both!(Fixture;
    rpm_holds_across_two_stores,
    tpm_is_charged_with_the_worst_case_and_corrected,
);

async fn rpm_holds_across_two_stores(fx: Fixture) {
    const RPM: i64 = 10;
    const REQUESTS: usize = 40;
    let tenant = fx.tenant("acme", 0).await;
    let key = KeySpec {
        name: "k".into(),
        rpm: Some(RPM),
        ..KeySpec::default()
    };
    let key = fx
        .tenancy
        .directory
        .create_key(&tenant.id, &key)
        .await
        .expect("key")
        .key;
    // Two processes, each with its own connection pool on the same database.
    let other = fx.on(fx.second_store().await, "proc-b");
    let limiters: [Limiter; 2] = [fx.tenancy.limits.clone(), other.limits.clone()];

    let admit_all = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let (limiter, key, tenant) = (limiters[i % 2].clone(), key.clone(), tenant.clone());
                tokio::spawn(async move { (i % 2, limiter.admit(Some(&key), &tenant, 10).await) })
            })
            .collect();
        async move {
            let mut accepted = [0; 2];
            let mut retry_after = Vec::new();
            for task in tasks {
                match task.await.expect("task") {
                    (process, Ok(_)) => accepted[process] += 1,
                    (
                        _,
                        Err(Error::RateLimited {
                            retry_after_secs, ..
                        }),
                    ) => retry_after.push(retry_after_secs),
                    (_, Err(e)) => panic!("unexpected {e:?}"),
                }
            }
            (accepted, retry_after)
        }
    };

    let (accepted, retry_after) = admit_all(REQUESTS).await;
    assert_eq!(accepted[0] + accepted[1], RPM as usize, "{accepted:?}");
    assert_eq!(retry_after.len(), REQUESTS - RPM as usize);
    assert!(retry_after.iter().all(|&s| s == 60), "{retry_after:?}");

    // Half a minute later the window is still full, and says how long to wait.
    fx.advance(30);
    let (accepted, retry_after) = admit_all(4).await;
    assert_eq!(accepted, [0, 0]);
    assert!(retry_after.iter().all(|&s| s == 30), "{retry_after:?}");
    // A minute after the burst it has room for exactly RPM again.
    fx.advance(30);
    let (accepted, _) = admit_all(REQUESTS).await;
    assert_eq!(accepted[0] + accepted[1], RPM as usize);
}

async fn tpm_is_charged_with_the_worst_case_and_corrected(fx: Fixture) {
    let tenant = fx.tenant("acme", 0).await;
    let patch = TenantPatch {
        tpm: Some(Some(1_000)),
        ..TenantPatch::default()
    };
    let tenant = fx
        .tenancy
        .directory
        .update_tenant(&tenant.id, &patch)
        .await
        .expect("patch");
    let limits = &fx.tenancy.limits;

    let first = limits.admit(None, &tenant, 600).await.expect("admit");
    let err = limits
        .admit(None, &tenant, 600)
        .await
        .expect_err("over TPM");
    assert!(
        matches!(
            err,
            Error::RateLimited {
                retry_after_secs: 60,
                ..
            }
        ),
        "{err:?}"
    );
    // The first request used 100 of its 600: the other 500 come back.
    limits.correct(&first, 100).await.expect("correct");
    fx.advance(1);
    limits
        .admit(None, &tenant, 600)
        .await
        .expect("fits after the correction");
    limits
        .admit(None, &tenant, 300)
        .await
        .expect("exactly at the limit");
    limits
        .admit(None, &tenant, 1)
        .await
        .expect_err("one token over");
    // A request larger than the whole limit can never pass, and says so with the numbers.
    let err = limits
        .admit(None, &tenant, 1_001)
        .await
        .expect_err("too large");
    assert!(
        matches!(
            &err,
            Error::ExceedsTokenLimit {
                tokens: 1_001,
                limit: 1_000,
                ..
            }
        ),
        "{err:?}"
    );
    // Without limits nothing is counted.
    let free = fx.tenant("free", 0).await;
    for _ in 0..100 {
        limits
            .admit(None, &free, 1_000_000)
            .await
            .expect("unlimited");
    }
}
