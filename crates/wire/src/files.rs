//! The Files API's wire shapes (`/v1/files`): the form fields of an upload besides the file
//! itself, the list query, OpenAI's file object, list and deletion views, and the mapping of
//! [`files::FilesError`] to statuses.

use files::{FileRecord, FilesError, Listing, Purpose, MAX_LIST_LIMIT};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, Code, Result};

/// Longest text field of an upload form (`purpose`, `expires_after[…]`) read, in bytes.
pub const MAX_TEXT_FIELD_BYTES: usize = 1024;

/// The text fields of `POST /v1/files`, gathered in any order as the form arrives.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileForm {
    purpose: Option<String>,
    anchor: Option<String>,
    seconds: Option<String>,
}

/// An upload form's fields, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidFileForm {
    pub purpose: Purpose,
    /// `expires_after[seconds]` (anchored at `created_at`).
    pub expires_after: Option<u64>,
}

fn purposes() -> String {
    Purpose::ALL
        .iter()
        .map(|p| format!("'{}'", p.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl FileForm {
    /// Whether `name` is a text field of the form (the file is `file`).
    pub fn knows(name: &str) -> bool {
        matches!(
            name,
            "purpose" | "expires_after[anchor]" | "expires_after[seconds]"
        )
    }

    /// Takes one text field. Unknown and repeated fields are refused.
    pub fn field(&mut self, name: &str, value: &str) -> Result<()> {
        let slot = match name {
            "purpose" => &mut self.purpose,
            "expires_after[anchor]" => &mut self.anchor,
            "expires_after[seconds]" => &mut self.seconds,
            _ => return Err(unknown_field(name)),
        };
        if slot.is_some() {
            return Err(ApiError::invalid(
                name,
                format!("The form field '{name}' is given twice; send it once."),
            ));
        }
        *slot = Some(value.to_owned());
        // Checked at once, so a bad field sent before the file refuses the upload before its
        // bytes are read.
        let mut alone = FileForm::default();
        match name {
            "purpose" => alone.purpose = Some(value.to_owned()),
            "expires_after[anchor]" => {
                alone.purpose = Some(Purpose::Batch.as_str().to_owned());
                alone.anchor = Some(value.to_owned());
                alone.seconds = Some("0".to_owned());
            }
            _ => {
                alone.purpose = Some(Purpose::Batch.as_str().to_owned());
                alone.anchor = Some("created_at".to_owned());
                alone.seconds = Some(value.to_owned());
            }
        }
        alone.finish().map(|_| ())
    }

    /// The form, checked: a known `purpose`, and `expires_after` complete if given.
    pub fn finish(self) -> Result<ValidFileForm> {
        let purpose = match self.purpose.as_deref() {
            None => {
                return Err(ApiError::invalid(
                    "purpose",
                    format!(
                        "Missing required parameter: 'purpose'. Send one of {}.",
                        purposes()
                    ),
                ))
            }
            Some(name) => Purpose::parse(name).ok_or_else(|| {
                ApiError::invalid(
                    "purpose",
                    format!(
                        "Invalid value for 'purpose': '{}'. Expected one of {}.",
                        printable(name),
                        purposes()
                    ),
                )
            })?,
        };
        let expires_after = match (self.anchor.as_deref(), self.seconds.as_deref()) {
            (None, None) => None,
            (Some("created_at"), Some(seconds)) => {
                Some(seconds.trim().parse::<u64>().map_err(|_| {
                    ApiError::invalid(
                        "expires_after[seconds]",
                        format!(
                            "Invalid value for 'expires_after[seconds]': '{}'. Expected a whole \
                         number of seconds (3600 to 2592000).",
                            printable(seconds)
                        ),
                    )
                })?)
            }
            (Some(anchor), Some(_)) => {
                return Err(ApiError::invalid(
                    "expires_after[anchor]",
                    format!(
                        "Invalid value for 'expires_after[anchor]': '{}'. The only anchor is \
                         'created_at'.",
                        printable(anchor)
                    ),
                ))
            }
            (None, Some(_)) => {
                return Err(ApiError::invalid(
                    "expires_after[anchor]",
                    "Missing 'expires_after[anchor]': send 'created_at' with \
                     'expires_after[seconds]'.",
                ))
            }
            (Some(_), None) => {
                return Err(ApiError::invalid(
                    "expires_after[seconds]",
                    "Missing 'expires_after[seconds]': send it with 'expires_after[anchor]'.",
                ))
            }
        };
        Ok(ValidFileForm {
            purpose,
            expires_after,
        })
    }
}

fn unknown_field(name: &str) -> ApiError {
    ApiError::invalid(
        name,
        format!(
            "Unrecognized form field: '{}'. POST /v1/files takes 'file', 'purpose' and \
             'expires_after[anchor]' with 'expires_after[seconds]'.",
            printable(name)
        ),
    )
}

/// A client's text, cut short and without control characters, for a message.
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// `GET /v1/files`'s query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub purpose: Option<String>,
    pub limit: Option<u32>,
    pub order: Option<String>,
    pub after: Option<String>,
}

impl ListQuery {
    pub fn validate(self) -> Result<Listing> {
        let purpose = self
            .purpose
            .map(|name| {
                Purpose::parse_any(&name).ok_or_else(|| {
                    ApiError::invalid(
                        "purpose",
                        format!(
                            "Invalid value for 'purpose': '{}'. Expected one of {}.",
                            printable(&name),
                            purposes()
                        ),
                    )
                })
            })
            .transpose()?;
        let ascending = match self.order.as_deref() {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => {
                return Err(ApiError::invalid(
                    "order",
                    format!(
                        "Invalid value for 'order': '{}'. Expected 'asc' or 'desc'.",
                        printable(other)
                    ),
                ))
            }
        };
        Ok(Listing {
            purpose,
            limit: self.limit.unwrap_or(MAX_LIST_LIMIT),
            ascending,
            after: self.after,
        })
    }
}

/// OpenAI's file object.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileView {
    pub id: String,
    pub object: &'static str,
    pub bytes: i64,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub filename: String,
    pub purpose: String,
    pub status: &'static str,
}

impl From<FileRecord> for FileView {
    fn from(f: FileRecord) -> Self {
        Self {
            id: f.id,
            object: "file",
            bytes: f.bytes,
            created_at: f.created_at.timestamp(),
            expires_at: f.expires_at.map(|t| t.timestamp()),
            filename: f.filename,
            purpose: f.purpose,
            status: "processed",
        }
    }
}

/// A page of files, in OpenAI's list shape.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileListView {
    pub object: &'static str,
    pub data: Vec<FileView>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}

impl FileListView {
    pub fn new(page: files::FilePage) -> Self {
        let data: Vec<FileView> = page.files.into_iter().map(FileView::from).collect();
        Self {
            object: "list",
            first_id: data.first().map(|f| f.id.clone()),
            last_id: data.last().map(|f| f.id.clone()),
            data,
            has_more: page.has_more,
        }
    }
}

/// `DELETE /v1/files/{id}`'s answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileDeletedView {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}

impl FileDeletedView {
    pub fn new(id: String) -> Self {
        Self {
            id,
            object: "file",
            deleted: true,
        }
    }
}

/// A tenant's files quota (`/admin/v1/tenants/{id}/files_quota`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileQuotaView {
    pub object: &'static str,
    pub tenant_id: String,
    pub quota_bytes: i64,
    pub used_bytes: i64,
    /// Whether `quota_bytes` is this tenant's own (else the server's default).
    pub overridden: bool,
}

impl FileQuotaView {
    pub fn new(tenant_id: String, q: files::Quota) -> Self {
        Self {
            object: "files.quota",
            tenant_id,
            quota_bytes: q.quota_bytes,
            used_bytes: q.used_bytes,
            overridden: q.overridden,
        }
    }
}

/// `PUT /admin/v1/tenants/{id}/files_quota`: a quota in bytes, or `null` for the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuotaBody {
    pub quota_bytes: Option<u64>,
}

impl ApiError {
    /// Maps a Files API refusal. Internal failures say nothing of paths; the caller logs them.
    pub fn from_files(err: FilesError) -> Self {
        let message = err.to_string();
        match err {
            FilesError::Invalid { param, .. } => Self::invalid(param, message),
            FilesError::TooLarge { .. } | FilesError::OverQuota { .. } => {
                Self::new(Code::RequestTooLarge, message).with_param("file")
            }
            FilesError::NotFound(_) => Self::new(Code::NotFound, message).with_param("file_id"),
            FilesError::UnknownTenant(_) => Self::new(Code::NotFound, message),
            FilesError::Io(_) | FilesError::Store(_) | FilesError::Hub(_) => Self::new(
                Code::Internal,
                "The server could not store or read the file; try again, and tell the \
                 operator if it persists.",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn form(fields: &[(&str, &str)]) -> Result<ValidFileForm> {
        let mut form = FileForm::default();
        for (name, value) in fields {
            form.field(name, value)?;
        }
        form.finish()
    }

    #[test]
    fn a_form_reads_purpose_and_expiry() {
        assert_eq!(
            form(&[("purpose", "batch")]),
            Ok(ValidFileForm {
                purpose: Purpose::Batch,
                expires_after: None
            })
        );
        let v = form(&[
            ("expires_after[seconds]", "3600"),
            ("purpose", "fine-tune"),
            ("expires_after[anchor]", "created_at"),
        ])
        .expect("valid");
        assert_eq!(
            (v.purpose, v.expires_after),
            (Purpose::FineTune, Some(3600))
        );
    }

    #[test]
    fn bad_forms_name_their_field() {
        let param = |fields: &[(&str, &str)]| {
            form(fields)
                .expect_err("refused")
                .body()
                .error
                .param
                .map(str::to_owned)
        };
        assert_eq!(param(&[]).as_deref(), Some("purpose"));
        assert_eq!(param(&[("purpose", "nope")]).as_deref(), Some("purpose"));
        assert_eq!(
            param(&[("purpose", "batch"), ("purpose", "batch")]).as_deref(),
            Some("purpose")
        );
        assert_eq!(param(&[("model", "x")]).as_deref(), Some("model"));
        let e = [
            ("purpose", "batch"),
            ("expires_after[anchor]", "last_active_at"),
            ("expires_after[seconds]", "3600"),
        ];
        assert_eq!(param(&e).as_deref(), Some("expires_after[anchor]"));
        let e = [
            ("purpose", "batch"),
            ("expires_after[anchor]", "created_at"),
            ("expires_after[seconds]", "-1"),
        ];
        assert_eq!(param(&e).as_deref(), Some("expires_after[seconds]"));
        let e = [("purpose", "batch"), ("expires_after[seconds]", "3600")];
        assert_eq!(param(&e).as_deref(), Some("expires_after[anchor]"));
    }

    #[test]
    fn list_queries_default_to_newest_first() {
        let l = ListQuery::default().validate().expect("defaults");
        assert_eq!(
            (l.limit, l.ascending, l.purpose),
            (MAX_LIST_LIMIT, false, None)
        );
        let bad = ListQuery {
            order: Some("sideways".into()),
            ..ListQuery::default()
        };
        assert!(bad.validate().is_err());
    }

    proptest! {
        #[test]
        fn any_fields_are_judged_without_panicking(
            fields in proptest::collection::vec(
                (prop_oneof![
                    Just("purpose".to_owned()),
                    Just("expires_after[anchor]".to_owned()),
                    Just("expires_after[seconds]".to_owned()),
                    "\\PC{0,12}",
                ], "\\PC{0,24}"),
                0..5,
            )
        ) {
            let mut form = FileForm::default();
            let mut ok = true;
            for (name, value) in &fields {
                ok &= form.field(name, value).is_ok();
            }
            if ok {
                if let Ok(v) = form.finish() {
                    let purpose = fields.iter().find(|(n, _)| n == "purpose").map(|(_, v)| v.as_str());
                    prop_assert_eq!(Some(v.purpose.as_str()), purpose);
                }
            }
        }

        #[test]
        fn every_purpose_and_expiry_round_trips(p in 0usize..6, secs in any::<u64>()) {
            let purpose = Purpose::ALL[p];
            let text = secs.to_string();
            let v = form(&[
                ("purpose", purpose.as_str()),
                ("expires_after[anchor]", "created_at"),
                ("expires_after[seconds]", text.as_str()),
            ]);
            prop_assert_eq!(v, Ok(ValidFileForm { purpose, expires_after: Some(secs) }));
        }
    }
}
