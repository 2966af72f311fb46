//! Signing in (members by email and password, the operator by the admin key), out, and
//! accepting an invite.

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use gateway::auth::Authenticator;
use maud::html;
use tenancy::{SignInError, StartedSession, Subject};

use crate::layout::{self, Nav};
use crate::session::{Mutation, PageError, PageResult, PublicForm, Signed};
use crate::Console;

/// `/console`: where a session starts.
pub async fn home(signed: Result<Signed, PageError>) -> Response {
    match signed {
        Ok(Signed(session)) => match session.subject {
            Subject::Operator => Redirect::to("/console/admin/tenants").into_response(),
            Subject::Member { .. } => Redirect::to("/console/overview").into_response(),
        },
        Err(e) => e.into_response(),
    }
}

fn sign_in_form(error: Option<&str>, notice: Option<&str>) -> maud::Markup {
    html! {
        @if let Some(text) = notice { (layout::notice(text)) }
        @if let Some(text) = error { p.error role="alert" { (text) } }
        form.card method="post" action="/console/sign-in" {
            label for="email" { "Email" }
            input #email type="email" name="email" autocomplete="username" required;
            label for="password" { "Password" }
            input #password type="password" name="password" autocomplete="current-password" required;
            button type="submit" { "Sign in" }
        }
        p { "Running this server? " a href="/console/operator/sign-in" { "Sign in as the operator" } "." }
    }
}

pub async fn sign_in_page() -> Response {
    layout::page("Sign in", Nav::None, &[], sign_in_form(None, None))
}

fn started(console: &Console, started: StartedSession, to: &str) -> Response {
    let mut response = Redirect::to(to).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&console.session_cookie(&started.secret)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn refused(title: &str, err: SignInError, form: fn(Option<&str>) -> maud::Markup) -> Response {
    let (status, retry) = match &err {
        SignInError::WrongCredentials => (StatusCode::UNAUTHORIZED, None),
        SignInError::TooManyFailures { retry_after_secs } => {
            (StatusCode::TOO_MANY_REQUESTS, Some(*retry_after_secs))
        }
        SignInError::Other(e) => return PageError::from(e.clone()).into_response(),
    };
    let mut response = layout::page(title, Nav::None, &[], form(Some(&err.to_string())));
    *response.status_mut() = status;
    if let Some(secs) = retry {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

pub async fn sign_in(State(console): State<Console>, form: PublicForm) -> Response {
    let email = form.fields.get("email").unwrap_or_default();
    let password = form.fields.get("password").unwrap_or_default();
    match console
        .tenancy()
        .members
        .sign_in(email, password, &form.address)
        .await
    {
        Ok(session) => {
            tracing::info!(email = %email, "console sign-in");
            started(&console, session, "/console/overview")
        }
        Err(err) => {
            tracing::info!(email = %email, address = %form.address, error = %err, "console sign-in refused");
            refused("Sign in", err, |e| sign_in_form(e, None))
        }
    }
}

fn operator_form(error: Option<&str>) -> maud::Markup {
    html! {
        @if let Some(text) = error { p.error role="alert" { (text) } }
        form.card method="post" action="/console/operator/sign-in" {
            label for="admin_key" { "Admin key" }
            input #admin_key type="password" name="admin_key" autocomplete="off" required;
            button type="submit" { "Sign in" }
        }
        p { "The admin key is in the server's data directory (admin.key) unless set by flag." }
    }
}

pub async fn operator_page() -> Response {
    layout::page("Operator sign-in", Nav::None, &[], operator_form(None))
}

pub async fn operator_sign_in(State(console): State<Console>, form: PublicForm) -> Response {
    let presented = form.fields.get("admin_key").unwrap_or_default();
    let matched = Authenticator::from_ref(&console.app).is_admin_key(presented);
    match console
        .tenancy()
        .members
        .sign_in_operator(matched, &form.address)
        .await
    {
        Ok(session) => {
            tracing::info!("console operator sign-in");
            started(&console, session, "/console/admin/tenants")
        }
        Err(err) => {
            tracing::warn!(address = %form.address, error = %err, "console operator sign-in refused");
            refused("Operator sign-in", err, operator_form)
        }
    }
}

pub async fn sign_out(State(console): State<Console>, mutation: Mutation) -> PageResult {
    console
        .tenancy()
        .members
        .end_session(&mutation.signed.0)
        .await?;
    let mut response = Redirect::to("/console/sign-in").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&console.cleared_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

fn invite_form(token: &str, email: &str, error: Option<&str>) -> maud::Markup {
    html! {
        p { "Set a password for " strong { (email) } " to finish joining." }
        @if let Some(text) = error { p.error role="alert" { (text) } }
        form.card method="post" action=(format!("/console/invite/{token}")) {
            label for="password" { "New password (at least 10 characters)" }
            input #password type="password" name="password" autocomplete="new-password" minlength="10" required;
            button type="submit" { "Set password" }
        }
    }
}

pub async fn invite_page(State(console): State<Console>, Path(token): Path<String>) -> PageResult {
    let member = console.tenancy().members.invite(&token).await?;
    Ok(layout::page(
        "Accept invite",
        Nav::None,
        &[],
        invite_form(&token, &member.email, None),
    ))
}

pub async fn accept_invite(
    State(console): State<Console>,
    Path(token): Path<String>,
    form: PublicForm,
) -> PageResult {
    let members = &console.tenancy().members;
    let password = form.fields.get("password").unwrap_or_default();
    match members.accept_invite(&token, password).await {
        Ok(member) => {
            tracing::info!(member = %member.id, "invite accepted");
            Ok(layout::page(
                "Sign in",
                Nav::None,
                &[],
                sign_in_form(None, Some("Your password is set; sign in.")),
            ))
        }
        Err(tenancy::Error::Invalid { message, .. }) => {
            let member = members.invite(&token).await?;
            let mut response = layout::page(
                "Accept invite",
                Nav::None,
                &[],
                invite_form(&token, &member.email, Some(&format!("password: {message}"))),
            );
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        }
        Err(e) => Err(e.into()),
    }
}
