//! Sessions in handler signatures: [`Signed`] resolves the cookie's session (or sends the
//! browser to sign in), [`Mutation`] also reads a form and refuses it without the session's
//! CSRF token, so a state-changing handler cannot forget either. [`PageError`] is how a
//! refusal is shown; [`security_headers`] puts the Content Security Policy on every answer.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use tenancy::{Action, Member, Session, Subject, Tenant};

use crate::layout;
use crate::Console;

/// `default-src 'self'` and nothing inline: every script and style is an embedded file.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Invite links carry their token in the path: never send it on as a referrer.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

impl Console {
    fn cookie_name(&self) -> &'static str {
        if self.config.tls {
            "__Host-fw_console"
        } else {
            "fw_console"
        }
    }

    /// `Set-Cookie` for a new session: HttpOnly, SameSite=Strict, Secure under TLS.
    pub(crate) fn session_cookie(&self, secret: &str) -> String {
        let secure = if self.config.tls { "; Secure" } else { "" };
        format!(
            "{}={secret}; Path=/; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name()
        )
    }

    /// `Set-Cookie` that deletes it.
    pub(crate) fn cleared_cookie(&self) -> String {
        let secure = if self.config.tls { "; Secure" } else { "" };
        format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
            self.cookie_name()
        )
    }

    fn presented_secret<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    }
}

/// A refusal or failure, shown as a page with its status (or a redirect to sign in).
#[derive(Debug)]
pub enum PageError {
    SignIn,
    Shown { status: StatusCode, message: String },
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Shown {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<tenancy::Error> for PageError {
    fn from(err: tenancy::Error) -> Self {
        use tenancy::Error as E;
        let status = match &err {
            E::InvalidApiKey => StatusCode::UNAUTHORIZED,
            E::InsufficientQuota { .. } | E::BudgetExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
            E::PermissionDenied { .. } => StatusCode::FORBIDDEN,
            E::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::Conflict { .. } => StatusCode::CONFLICT,
            E::Invalid { .. } | E::ExceedsTokenLimit { .. } => StatusCode::BAD_REQUEST,
            E::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &err {
            E::Invalid {
                param: Some(param),
                message,
            } => format!("{param}: {message}"),
            E::Internal => {
                "The server could not reach its database; try again, and tell the operator if \
                 it persists."
                    .to_owned()
            }
            _ => err.to_string(),
        };
        Self::new(status, message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn => Redirect::to("/console/sign-in").into_response(),
            PageError::Shown { status, message } => {
                (status, layout::error_page(status, &message)).into_response()
            }
        }
    }
}

pub type PageResult<T = Response> = Result<T, PageError>;

/// A signed-in session (member or operator); without one, the browser is sent to sign in.
pub struct Signed(pub Session);

impl Signed {
    /// The member and tenant, if the role allows `action` (403 otherwise, and for the
    /// operator, whose pages are the admin ones).
    pub fn member(&self, action: Action) -> PageResult<(&Member, &Tenant)> {
        Ok(self.0.member_for(action)?)
    }

    /// 403 unless this is the operator's session.
    pub fn operator(&self) -> PageResult<()> {
        match self.0.subject {
            Subject::Operator => Ok(()),
            Subject::Member { .. } => Err(PageError::new(
                StatusCode::FORBIDDEN,
                "These pages are the operator's; sign in with the admin key.",
            )),
        }
    }
}

impl FromRequestParts<Console> for Signed {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> PageResult<Self> {
        let secret = console
            .presented_secret(&parts.headers)
            .ok_or(PageError::SignIn)?;
        match console.tenancy().members.session(secret).await? {
            Some(session) => Ok(Signed(session)),
            None => Err(PageError::SignIn),
        }
    }
}

/// The fields of a submitted form, repeated names kept in order.
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn required(&self, name: &str) -> PageResult<&str> {
        self.get(name)
            .ok_or_else(|| PageError::bad_request(format!("{name}: fill it in")))
    }

    /// An optional whole number in `[min, max]`.
    pub fn integer(&self, name: &str, min: i64, max: i64) -> PageResult<Option<i64>> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        match text.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(PageError::bad_request(format!(
                "{name}: expected a whole number from {min} to {max}, got '{text}'"
            ))),
        }
    }
}

async fn read_form(request: Request, console: &Console) -> PageResult<Fields> {
    match Form::<Vec<(String, String)>>::from_request(request, console).await {
        Ok(Form(pairs)) => Ok(Fields(pairs)),
        Err(rejection) => Err(PageError::bad_request(format!(
            "The form could not be read: {}",
            rejection.body_text()
        ))),
    }
}

/// A state-changing form of a signed-in session, with the session's CSRF token checked
/// (403 without it or with another).
pub struct Mutation {
    pub signed: Signed,
    pub fields: Fields,
}

impl FromRequest<Console> for Mutation {
    type Rejection = PageError;

    async fn from_request(request: Request, console: &Console) -> PageResult<Self> {
        let (mut parts, body) = request.into_parts();
        let signed = Signed::from_request_parts(&mut parts, console).await?;
        let fields = read_form(Request::from_parts(parts, body), console).await?;
        let presented = fields.get("csrf").unwrap_or_default();
        if !signed.0.csrf_matches(presented) {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "This form is missing its security token or it is stale; reload the page and \
                 submit it again.",
            ));
        }
        Ok(Mutation { signed, fields })
    }
}

/// A form sent before any session exists (sign-in, invites): refused unless it comes from
/// this console's own pages (`Origin`/`Sec-Fetch-Site`), since there is no CSRF token yet.
pub struct PublicForm {
    pub fields: Fields,
    pub address: String,
}

impl FromRequest<Console> for PublicForm {
    type Rejection = PageError;

    async fn from_request(request: Request, console: &Console) -> PageResult<Self> {
        let headers = request.headers();
        // Browsers say where a request comes from in `Sec-Fetch-Site`; without it, the
        // `Origin` (when there is one: with `Referrer-Policy: no-referrer` it is "null") must
        // be this host.
        let foreign = match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
            Some(site) => site != "same-origin" && site != "none",
            None => {
                let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
                match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
                    None | Some("null") => false,
                    Some(origin) => origin.split_once("://").map(|(_, rest)| rest) != host,
                }
            }
        };
        if foreign {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "This form was sent from another site; open the console's own page.",
            ));
        }
        let address = request
            .extensions()
            .get::<gateway::ClientAddr>()
            .map_or_else(|| "unknown".to_owned(), |a| a.0.to_string());
        let fields = read_form(request, console).await?;
        Ok(PublicForm { fields, address })
    }
}
