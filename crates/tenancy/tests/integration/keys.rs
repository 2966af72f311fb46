//! Keys: secrets shown once, hashed at rest, verified in constant time; revocation, expiry,
//! scopes, model allow-lists; tenants and orgs.

use chrono::TimeDelta;
use tenancy::{Error, KeySpec, Scope, TenantPatch, TenantSpec};

use crate::common::Fixture;

store::on_both!(Fixture;
    keys_are_shown_once_and_verify,
    revoked_expired_and_disabled_keys_are_invalid,
    scopes_and_model_allow_lists,
    tenants_and_orgs,
);

fn spec(name: &str) -> KeySpec {
    KeySpec {
        name: name.to_owned(),
        ..KeySpec::default()
    }
}

async fn keys_are_shown_once_and_verify(fx: Fixture) {
    let dir = &fx.tenancy.directory;
    let tenant = fx.tenant("acme", 1_000).await;
    let created = dir.create_key(&tenant.id, &spec("ci")).await.expect("key");
    let secret = &created.secret;
    assert!(secret.starts_with("fw-") && secret.len() == 43, "{secret}");
    assert_eq!(created.key.prefix, secret[..tenancy::PREFIX_LEN]);
    assert_eq!(created.key.scopes, ["inference", "hub:read"]);

    // Stored: the prefix and a SHA-256, never the secret.
    let listed = dir.keys(&tenant.id).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hash.len(), 64);
    assert!(!listed[0].hash.contains(&secret[3..]));
    assert!(listed[0].last_used_at.is_none());

    let principal = dir.verify(secret).await.expect("verifies");
    assert_eq!(principal.tenant.id, tenant.id);
    assert_eq!(principal.key.id, created.key.id);
    assert_eq!(principal.key.last_used_at, Some(fx.clock_now()));

    // Same prefix, other secret; malformed; empty.
    let mut forged = secret.clone();
    let last = if forged.ends_with('a') { "b" } else { "a" };
    forged.replace_range(forged.len() - 1.., last);
    for bad in [forged.as_str(), "fw-short", "", "Bearer x", &secret[..42]] {
        assert_eq!(dir.verify(bad).await, Err(Error::InvalidApiKey), "{bad}");
    }
}

async fn revoked_expired_and_disabled_keys_are_invalid(fx: Fixture) {
    let dir = &fx.tenancy.directory;
    let tenant = fx.tenant("acme", 0).await;
    let revoked = dir.create_key(&tenant.id, &spec("a")).await.expect("key");
    dir.verify(&revoked.secret).await.expect("valid before");
    let key = dir.revoke_key(&revoked.key.id).await.expect("revoke");
    assert!(key.revoked_at.is_some());
    assert_eq!(dir.verify(&revoked.secret).await, Err(Error::InvalidApiKey));

    let expiring = KeySpec {
        expires_at: Some(fx.clock_now() + TimeDelta::seconds(10)),
        ..spec("b")
    };
    let expiring = dir.create_key(&tenant.id, &expiring).await.expect("key");
    dir.verify(&expiring.secret)
        .await
        .expect("valid before expiry");
    fx.advance(10);
    assert_eq!(
        dir.verify(&expiring.secret).await,
        Err(Error::InvalidApiKey)
    );
    let past = KeySpec {
        expires_at: Some(fx.clock_now()),
        ..spec("c")
    };
    assert!(matches!(
        dir.create_key(&tenant.id, &past).await,
        Err(Error::Invalid { param: Some(p), .. }) if p == "expires_at"
    ));

    let live = dir.create_key(&tenant.id, &spec("d")).await.expect("key");
    let disable = TenantPatch {
        disabled: Some(true),
        ..TenantPatch::default()
    };
    dir.update_tenant(&tenant.id, &disable)
        .await
        .expect("disable");
    assert_eq!(dir.verify(&live.secret).await, Err(Error::InvalidApiKey));
    let enable = TenantPatch {
        disabled: Some(false),
        ..TenantPatch::default()
    };
    dir.update_tenant(&tenant.id, &enable)
        .await
        .expect("enable");
    dir.verify(&live.secret).await.expect("valid again");
}

async fn scopes_and_model_allow_lists(fx: Fixture) {
    let dir = &fx.tenancy.directory;
    let tenant = fx.tenant("acme", 0).await;
    let hub_only = KeySpec {
        scopes: Some(vec![Scope::HubRead]),
        ..spec("hub")
    };
    let hub_only = dir.create_key(&tenant.id, &hub_only).await.expect("key");
    let p = dir.verify(&hub_only.secret).await.expect("verifies");
    assert!(matches!(
        p.require(Scope::Inference),
        Err(Error::PermissionDenied { .. })
    ));
    assert_eq!(p.require(Scope::HubRead), Ok(()));
    assert!(p.require(Scope::HubWrite).is_err());

    let pinned = KeySpec {
        models: Some(vec!["qwen".into()]),
        scopes: Some(Scope::ALL.to_vec()),
        ..spec("pinned")
    };
    let pinned = dir.create_key(&tenant.id, &pinned).await.expect("key");
    let p = dir.verify(&pinned.secret).await.expect("verifies");
    assert_eq!(p.require_model("qwen"), Ok(()));
    assert!(matches!(
        p.require_model("llama"),
        Err(Error::PermissionDenied { .. })
    ));
    assert_eq!(p.require(Scope::HubWrite), Ok(()));

    for bad in [
        KeySpec {
            models: Some(vec![]),
            ..spec("x")
        },
        KeySpec {
            scopes: Some(vec![]),
            ..spec("x")
        },
        KeySpec {
            rpm: Some(0),
            ..spec("x")
        },
        spec(" "),
    ] {
        let err = dir.create_key(&tenant.id, &bad).await.expect_err("invalid");
        assert_eq!(err.code(), "invalid_request_error", "{bad:?}");
    }
    let missing = dir.create_key("ten_missing", &spec("x")).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })));
}

async fn tenants_and_orgs(fx: Fixture) {
    let dir = &fx.tenancy.directory;
    let a = dir
        .create_tenant(&TenantSpec {
            name: "a".into(),
            ..TenantSpec::default()
        })
        .await
        .expect("tenant");
    // The configured default grant.
    assert_eq!(a.balances.grant_tokens_total, 1_000_000);
    let dup = dir
        .create_tenant(&TenantSpec {
            name: "a".into(),
            ..TenantSpec::default()
        })
        .await;
    assert!(matches!(dup, Err(Error::Conflict { .. })));
    let b = fx.tenant("b", 0).await;
    assert_eq!(b.balances.grant_tokens_total, 0);

    let patched = dir
        .update_tenant(
            &b.id,
            &TenantPatch {
                free_tier_only: Some(true),
                rpm: Some(Some(60)),
                tpm: Some(Some(1_000)),
                ..TenantPatch::default()
            },
        )
        .await
        .expect("patch");
    assert!(patched.free_tier_only && patched.rpm == Some(60) && patched.tpm == Some(1_000));
    let unlimited = TenantPatch {
        rpm: Some(None),
        ..TenantPatch::default()
    };
    let patched = dir.update_tenant(&b.id, &unlimited).await.expect("patch");
    assert_eq!((patched.rpm, patched.tpm), (None, Some(1_000)));
    assert_eq!(dir.tenants().await.expect("list").len(), 2);

    dir.create_org(&a.id, "acme-labs").await.expect("org");
    dir.create_org(&b.id, "beta.ai").await.expect("org");
    let taken = dir.create_org(&b.id, "acme-labs").await;
    assert!(matches!(taken, Err(Error::Conflict { .. })));
    for bad in ["", "-x", "a/b", "white space", &"x".repeat(65)] {
        let err = dir.create_org(&a.id, bad).await.expect_err("invalid name");
        assert_eq!(err.code(), "invalid_request_error", "{bad}");
    }
    let names = |orgs: Vec<tenancy::Org>| orgs.into_iter().map(|o| o.name).collect::<Vec<_>>();
    assert_eq!(names(dir.orgs(&a.id).await.expect("orgs")), ["acme-labs"]);
    assert_eq!(names(dir.orgs(&b.id).await.expect("orgs")), ["beta.ai"]);
    assert_eq!(dir.org("beta.ai").await.expect("org").tenant_id, b.id);

    // A tenant never reaches another tenant's key.
    let kb = dir.create_key(&b.id, &spec("b")).await.expect("key");
    assert!(matches!(
        dir.key_of(&a.id, &kb.key.id).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        dir.key_of(&b.id, &kb.key.id).await.expect("own").id,
        kb.key.id
    );
    assert!(dir.keys(&a.id).await.expect("keys").is_empty());
}
