//! Console members and sessions: invites, argon2id passwords, roles, server-side sessions
//! with idle and absolute expiry, removal ending sessions, and throttled sign-ins.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use tenancy::{
    Action, Error, KeySpec, Members, NewMember, Role, SignInError, Subject, TenantPatch,
};

use crate::common::Fixture;

store::on_both!(Fixture;
    invites_set_passwords_once_and_sign_in_starts_a_session,
    roles_allow_what_the_api_scopes_allow,
    sessions_expire_when_idle_and_at_their_lifetime,
    removing_a_member_ends_its_sessions_and_playground_key,
    failed_sign_ins_are_slowed_then_refused,
    the_sweep_ends_idle_sessions_and_forgets_old_rows,
    bad_input_is_refused_with_the_field_named,
);

const PASSWORD: &str = "correct horse battery";

fn members(fx: &Fixture) -> Members {
    fx.tenancy
        .members
        .clone()
        .with_sign_in_delay(Duration::from_millis(200))
}

fn new(email: &str, password: Option<&str>, role: Role) -> NewMember {
    NewMember {
        email: email.to_owned(),
        password: password.map(str::to_owned),
        role,
    }
}

async fn invites_set_passwords_once_and_sign_in_starts_a_session(fx: Fixture) {
    let m = members(&fx);
    let acme = fx.tenant("acme", 1_000).await;
    let owner = m
        .add(
            &acme.id,
            &new("Owner@Acme.test", Some(PASSWORD), Role::Owner),
        )
        .await
        .expect("owner");
    assert_eq!(
        owner.member.email, "owner@acme.test",
        "emails are lowercased"
    );
    assert!(owner.invite_token.is_none() && !owner.member.invited);

    let dev = m
        .add(&acme.id, &new("dev@acme.test", None, Role::Developer))
        .await
        .expect("invited");
    let token = dev.invite_token.expect("an invite token");
    assert!(dev.member.invited);
    // An invited member has no password: signing in fails like a wrong one.
    assert_eq!(
        m.sign_in("dev@acme.test", PASSWORD, "127.0.0.9")
            .await
            .err(),
        Some(SignInError::WrongCredentials)
    );
    assert_eq!(m.invite(&token).await.expect("pending").id, dev.member.id);
    let accepted = m.accept_invite(&token, PASSWORD).await.expect("accepted");
    assert!(!accepted.invited);
    assert!(matches!(
        m.accept_invite(&token, "another password").await,
        Err(Error::NotFound { .. })
    ));

    let started = m
        .sign_in("DEV@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("signed in");
    let session = m
        .session(&started.secret)
        .await
        .expect("read")
        .expect("live");
    assert_eq!(session.tenant_id(), Some(acme.id.as_str()));
    assert!(session.csrf_matches(&started.session.csrf_token));
    assert!(!session.csrf_matches(""));
    assert!(!session.csrf_matches("x"));
    // Only the secret's hash is stored.
    assert_ne!(session.id, started.secret);
    assert!(m.session("not-a-session").await.expect("read").is_none());

    m.end_session(&session).await.expect("signed out");
    assert!(m.session(&started.secret).await.expect("read").is_none());

    // An expired invite is refused.
    let late = m
        .add(&acme.id, &new("late@acme.test", None, Role::Viewer))
        .await
        .expect("invited");
    fx.clock.advance(TimeDelta::days(8));
    assert!(matches!(
        m.invite(late.invite_token.as_deref().expect("token")).await,
        Err(Error::NotFound { .. })
    ));
}

async fn roles_allow_what_the_api_scopes_allow(fx: Fixture) {
    use Action::*;
    for (role, allowed) in [
        (Role::Owner, [true, true, true, true]),
        (Role::Developer, [true, true, true, false]),
        (Role::Viewer, [true, false, false, false]),
    ] {
        let got = [Read, ManageKeys, Infer, ManageMembers].map(|a| role.allows(a));
        assert_eq!(got, allowed, "{role}");
    }
    let m = members(&fx);
    let acme = fx.tenant("acme", 1_000).await;
    m.add(
        &acme.id,
        &new("viewer@acme.test", Some(PASSWORD), Role::Viewer),
    )
    .await
    .expect("viewer");
    let started = m
        .sign_in("viewer@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("signed in");
    let session = started.session;
    assert!(session.member_for(Read).is_ok());
    assert!(matches!(
        session.member_for(ManageKeys),
        Err(Error::PermissionDenied { .. })
    ));
    // A viewer gets no playground key.
    assert!(matches!(
        m.playground_key(&session).await,
        Err(Error::PermissionDenied { .. })
    ));

    // The operator's session belongs to no tenant and may not act as a member.
    let op = m
        .sign_in_operator(true, "127.0.0.1")
        .await
        .expect("operator");
    assert_eq!(op.session.subject, Subject::Operator);
    assert!(op.session.member_for(Read).is_err());
}

async fn sessions_expire_when_idle_and_at_their_lifetime(fx: Fixture) {
    let m = members(&fx);
    let acme = fx.tenant("acme", 1_000).await;
    m.add(
        &acme.id,
        &new("dev@acme.test", Some(PASSWORD), Role::Developer),
    )
    .await
    .expect("dev");
    let member = m
        .sign_in("dev@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("member");
    let operator = m.sign_in_operator(true, "127.0.0.1").await.expect("op");

    // The operator's idle limit is short; the member's is not.
    fx.clock.advance(TimeDelta::minutes(16));
    assert!(m.session(&operator.secret).await.expect("read").is_none());
    assert!(m.session(&member.secret).await.expect("read").is_some());

    // Active every hour, a member's session still ends at its lifetime.
    for _ in 0..11 {
        fx.clock.advance(TimeDelta::hours(1));
        assert!(m.session(&member.secret).await.expect("read").is_some());
    }
    fx.clock.advance(TimeDelta::hours(1));
    assert!(m.session(&member.secret).await.expect("read").is_none());

    // Idle past two hours ends it.
    let again = m
        .sign_in("dev@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("again");
    fx.clock.advance(TimeDelta::minutes(121));
    assert!(m.session(&again.secret).await.expect("read").is_none());

    // Disabling the tenant ends its members' sessions at the next request, and refuses sign-in.
    let third = m
        .sign_in("dev@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("third");
    fx.tenancy
        .directory
        .update_tenant(
            &acme.id,
            &TenantPatch {
                disabled: Some(true),
                ..TenantPatch::default()
            },
        )
        .await
        .expect("disabled");
    assert!(m.session(&third.secret).await.expect("read").is_none());
    assert!(matches!(
        m.sign_in("dev@acme.test", PASSWORD, "127.0.0.1").await,
        Err(SignInError::Other(Error::PermissionDenied { .. }))
    ));
}

async fn removing_a_member_ends_its_sessions_and_playground_key(fx: Fixture) {
    let m = members(&fx);
    let acme = fx.tenant("acme", 1_000).await;
    let dev = m
        .add(
            &acme.id,
            &new("dev@acme.test", Some(PASSWORD), Role::Developer),
        )
        .await
        .expect("dev");
    let started = m
        .sign_in("dev@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("signed in");
    let key = m.playground_key(&started.session).await.expect("key");
    assert_eq!(key.key.scopes, ["inference"]);
    assert_eq!(key.key.expires_at, Some(started.session.expires_at));
    fx.tenancy
        .directory
        .verify(&key.secret)
        .await
        .expect("the playground key works");
    // One session, one playground key, however often the page loads: the same secret comes
    // back from the session resolved again from its cookie, and no key is minted or revoked.
    let again = m
        .session(&started.secret)
        .await
        .expect("read")
        .expect("live");
    let second = m.playground_key(&again).await.expect("key again");
    assert_eq!((&second.key.id, &second.secret), (&key.key.id, &key.secret));
    let keys = fx.tenancy.directory.keys(&acme.id).await.expect("keys");
    assert_eq!(
        keys.len(),
        1,
        "one playground key for the session: {keys:?}"
    );
    assert!(keys[0].revoked_at.is_none());
    // Another session of the same member gets its own key.
    let other_session = m
        .sign_in("dev@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("signed in again");
    let other_key = m
        .playground_key(&other_session.session)
        .await
        .expect("other key");
    assert_ne!(other_key.secret, key.secret);
    m.end_session(&other_session.session)
        .await
        .expect("signed out");
    assert_eq!(
        fx.tenancy.directory.verify(&other_key.secret).await.err(),
        Some(Error::InvalidApiKey),
        "signing out revokes that session's key"
    );
    fx.tenancy
        .directory
        .verify(&key.secret)
        .await
        .expect("the first session's key still works");

    let removed = m.remove(&dev.member.id).await.expect("removed");
    assert_eq!(removed.id, dev.member.id);
    assert!(m.session(&started.secret).await.expect("read").is_none());
    assert_eq!(
        fx.tenancy.directory.verify(&key.secret).await.err(),
        Some(Error::InvalidApiKey)
    );
    assert!(matches!(
        m.remove(&dev.member.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(m.list(&acme.id).await.expect("list").is_empty());
    // Gone members cannot sign in.
    assert_eq!(
        m.sign_in("dev@acme.test", PASSWORD, "127.0.0.2")
            .await
            .err(),
        Some(SignInError::WrongCredentials)
    );
    // Keys the member made stay the tenant's (not tied to the member).
    let other = fx
        .tenancy
        .directory
        .create_key(
            &acme.id,
            &KeySpec {
                name: "ci".into(),
                ..KeySpec::default()
            },
        )
        .await
        .expect("key");
    assert!(fx.tenancy.directory.verify(&other.secret).await.is_ok());
}

async fn failed_sign_ins_are_slowed_then_refused(fx: Fixture) {
    let m = members(&fx);
    let acme = fx.tenant("acme", 1_000).await;
    m.add(
        &acme.id,
        &new("dev@acme.test", Some(PASSWORD), Role::Developer),
    )
    .await
    .expect("dev");
    for attempt in 1..=10 {
        let start = Instant::now();
        let result = m
            .sign_in("dev@acme.test", "wrong password!", "127.0.0.1")
            .await;
        assert_eq!(
            result.err(),
            Some(SignInError::WrongCredentials),
            "{attempt}"
        );
        let slowed = start.elapsed() >= Duration::from_millis(200);
        assert_eq!(slowed, attempt > 3, "attempt {attempt} slowed: {slowed}");
    }
    // Now refused, even with the right password, for the window.
    assert!(matches!(
        m.sign_in("dev@acme.test", PASSWORD, "127.0.0.1").await,
        Err(SignInError::TooManyFailures { .. })
    ));
    fx.clock.advance(TimeDelta::minutes(16));
    m.sign_in("dev@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("allowed after the window");

    // Per address: many accounts from one address are refused too.
    for i in 0..40 {
        let _ = m
            .sign_in(
                &format!("nobody{i}@acme.test"),
                "wrong password!",
                "127.0.0.66",
            )
            .await;
    }
    assert!(matches!(
        m.sign_in("dev@acme.test", PASSWORD, "127.0.0.66").await,
        Err(SignInError::TooManyFailures { .. })
    ));
    m.sign_in("dev@acme.test", PASSWORD, "127.0.0.67")
        .await
        .expect("another address is not refused");
    // The operator's wrong admin keys count the same way.
    for _ in 0..10 {
        let _ = m.sign_in_operator(false, "127.0.0.70").await;
    }
    assert!(matches!(
        m.sign_in_operator(true, "127.0.0.71").await,
        Err(SignInError::TooManyFailures { .. })
    ));
}

async fn bad_input_is_refused_with_the_field_named(fx: Fixture) {
    let m = members(&fx);
    let acme = fx.tenant("acme", 1_000).await;
    let param = |r: Result<_, Error>| match r {
        Err(Error::Invalid { param, .. }) => param,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(
        param(
            m.add(&acme.id, &new("not-an-email", None, Role::Viewer))
                .await
                .map(|_| ())
        ),
        Some("email".into())
    );
    assert_eq!(
        param(
            m.add(&acme.id, &new("a@b.test", Some("short"), Role::Viewer))
                .await
                .map(|_| ())
        ),
        Some("password".into())
    );
    assert_eq!(
        param("admin".parse::<Role>().map(|_| ())),
        Some("role".into())
    );
    m.add(&acme.id, &new("a@b.test", None, Role::Viewer))
        .await
        .expect("first");
    assert!(matches!(
        m.add(&acme.id, &new("A@B.test", None, Role::Owner)).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        m.add("ten_missing", &new("c@b.test", None, Role::Owner))
            .await,
        Err(Error::NotFound { .. })
    ));
}

async fn the_sweep_ends_idle_sessions_and_forgets_old_rows(fx: Fixture) {
    let m = members(&fx);
    let acme = fx.tenant("acme", 1_000).await;
    m.add(
        &acme.id,
        &new("dev@acme.test", Some(PASSWORD), Role::Developer),
    )
    .await
    .expect("dev");
    let idle = m
        .sign_in("dev@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("idle one");
    let key = m.playground_key(&idle.session).await.expect("key");
    assert_eq!(
        m.sign_in("ghost@acme.test", "wrong", "127.0.0.9")
            .await
            .err(),
        Some(SignInError::WrongCredentials)
    );
    assert_eq!(
        m.sweep().await.expect("sweep"),
        (0, 0, 0),
        "nothing is due yet"
    );

    // Two hours and a minute later nobody came back: the sweep ends the idle session (its
    // playground key stops working at once) and forgets the failures (account and address).
    fx.clock.advance(TimeDelta::minutes(121));
    let active = m
        .sign_in("dev@acme.test", PASSWORD, "127.0.0.1")
        .await
        .expect("active one");
    assert_eq!(m.sweep().await.expect("sweep"), (1, 2, 0));
    assert_eq!(
        fx.tenancy.directory.verify(&key.secret).await.err(),
        Some(Error::InvalidApiKey)
    );
    assert!(m.session(&active.secret).await.expect("read").is_some());

    // Ended sessions are deleted a week later.
    m.end_session(&active.session).await.expect("signed out");
    fx.clock.advance(TimeDelta::days(8));
    assert_eq!(m.sweep().await.expect("sweep"), (0, 0, 2));
    assert_eq!(m.sweep().await.expect("sweep"), (0, 0, 0));
}
