//! The page shell: head (embedded stylesheet and scripts only), skip link, navigation by role,
//! main landmark; and small shared pieces (money, forms' CSRF field, notices).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use tenancy::{Action, Session, Subject};

/// Which navigation a page shows.
pub enum Nav<'a> {
    /// Signed out.
    None,
    Session(&'a Session, &'static str),
}

fn nav_links(session: &Session) -> Vec<(&'static str, &'static str)> {
    match &session.subject {
        Subject::Operator => vec![
            ("/console/admin/tenants", "Tenants"),
            ("/console/admin/prices", "Prices"),
            ("/console/admin/deployments", "Deployments"),
            ("/console/admin/nodes", "Nodes"),
            ("/console/models", "Models"),
        ],
        Subject::Member { member, .. } => {
            let mut links = vec![
                ("/console/overview", "Overview"),
                ("/console/models", "Models"),
            ];
            if member.role.allows(Action::Infer) {
                links.push(("/console/playground", "Playground"));
            }
            links.push(("/console/keys", "Keys"));
            links.push(("/console/usage", "Usage"));
            links.push(("/console/logs", "Logs"));
            links.push(("/console/budgets", "Budgets"));
            links.push(("/console/mcp", "MCP"));
            links.push(("/console/batches", "Batches"));
            if member.role.allows(Action::ManageMembers) {
                links.push(("/console/members", "Members"));
            }
            links
        }
    }
}

fn who(session: &Session) -> String {
    match &session.subject {
        Subject::Operator => "Operator".to_owned(),
        Subject::Member { member, tenant } => {
            format!("{} · {} · {}", member.email, member.role, tenant.name)
        }
    }
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf_token); }
}

/// A whole page.
pub fn page(title: &str, nav: Nav<'_>, scripts: &[&str], body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Flywheel console" }
                link rel="stylesheet" href="/console/assets/console.css";
                link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml";
                @if scripts.iter().any(|s| s.contains("uPlot")) {
                    link rel="stylesheet" href="/console/assets/vendor/uPlot-1.6.32.min.css";
                }
                @for script in scripts {
                    script src=(script) defer {}
                }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "Flywheel" }
                    @if let Nav::Session(session, current) = &nav {
                        nav aria-label="Main" {
                            ul {
                                @for (href, label) in nav_links(session) {
                                    li {
                                        @if *current == label {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            span { (who(session)) }
                            form method="post" action="/console/sign-out" {
                                (csrf(session))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

pub fn error_page(status: StatusCode, message: &str) -> Html<String> {
    let title = status.canonical_reason().unwrap_or("Error");
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Flywheel console" }
                link rel="stylesheet" href="/console/assets/console.css";
                link rel="icon" href="/console/assets/favicon.svg" type="image/svg+xml";
            }
            body {
                main #main {
                    h1 { (title) }
                    p.error role="alert" { (message) }
                    p { a href="/console" { "Back to the console" } }
                }
            }
        }
    };
    Html(markup.into_string())
}

/// Micro-units as currency units with six decimals.
pub fn money(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

/// A whole number with thin grouping.
pub fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let out = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",");
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn notice(text: &str) -> Markup {
    html! { p.notice role="status" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_money_and_counts() {
        assert_eq!(money(1_500_000), "1.500000");
        assert_eq!(money(-7), "-0.000007");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
    }
}
