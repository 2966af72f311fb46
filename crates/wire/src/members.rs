//! The admin API's member JSON: `POST /admin/v1/tenants/{id}/members` read strictly into
//! [`tenancy::NewMember`], and the member views.

use chrono::SecondsFormat;
use serde::Serialize;
use tenancy::{AddedMember, Member, NewMember};

use crate::error::{ApiError, Result};
use crate::validate::{parse_object, Fields};

/// Where an invite token is accepted (a path on this server).
pub fn invite_link(token: &str) -> String {
    format!("/console/invite/{token}")
}

/// `{"email", "password"?, "role"}`.
pub fn new_member(body: &[u8]) -> Result<NewMember> {
    let map = parse_object(body)?;
    let fields = Fields::root(&map);
    fields.deny_unknown(&["email", "password", "role"])?;
    let role = fields
        .required_string("role")?
        .parse()
        .map_err(ApiError::from_tenancy)?;
    Ok(NewMember {
        email: fields.required_string("email")?.to_owned(),
        password: fields.string("password")?.map(str::to_owned),
        role,
    })
}

#[derive(Debug, Serialize)]
pub struct MemberView {
    pub object: &'static str,
    pub id: String,
    pub tenant_id: String,
    pub email: String,
    pub role: &'static str,
    /// `active`, or `invited` until the invite is accepted.
    pub status: &'static str,
    pub invite_expires_at: Option<String>,
    pub created_at: String,
    /// Only when just invited: the link that sets the password (shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invite_link: Option<String>,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        Self {
            object: "member",
            role: m.role.as_str(),
            status: if m.invited { "invited" } else { "active" },
            invite_expires_at: m
                .invite_expires_at
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            created_at: m.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            id: m.id,
            tenant_id: m.tenant_id,
            email: m.email,
            invite_link: None,
        }
    }
}

impl From<AddedMember> for MemberView {
    fn from(added: AddedMember) -> Self {
        Self {
            invite_link: added.invite_token.as_deref().map(invite_link),
            ..added.member.into()
        }
    }
}
