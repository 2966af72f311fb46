//! Validated names: repository ids (`org/name`), revisions and file paths inside a repo.
//!
//! A [`ValidPath`] is relative, `/`-separated, and cannot escape the repository or confuse a
//! file system: no empty, `.` or `..` segments, no leading `/`, no backslash, no NUL or other
//! control characters, no Windows drive prefix, bounded length. Paths never reach the file
//! system anyway (blobs are addressed by sha256), but clients that write them to disk do.

use std::fmt;

use crate::error::{HubError, Result};

pub const MAX_PATH_BYTES: usize = 1024;
pub const MAX_SEGMENT_BYTES: usize = 255;
pub const MAX_NAME_LEN: usize = 96;
pub const MAX_REVISION_LEN: usize = 128;

/// A file path inside a repository.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidPath(String);

impl ValidPath {
    pub fn parse(path: &str) -> Result<Self> {
        let bad = |why: &str| HubError::InvalidPath {
            path: path.chars().take(200).collect(),
            reason: why.to_owned(),
        };
        if path.is_empty() {
            return Err(bad("it is empty"));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(bad("it is longer than 1024 bytes"));
        }
        if path.starts_with('/') {
            return Err(bad(
                "it is absolute; give it relative to the repository root",
            ));
        }
        if path.contains('\\') {
            return Err(bad(
                "it contains a backslash; separate directories with '/'",
            ));
        }
        if path.chars().any(char::is_control) {
            return Err(bad("it contains a control character"));
        }
        if path.as_bytes().get(1) == Some(&b':') {
            return Err(bad("it looks like a drive letter"));
        }
        for segment in path.split('/') {
            match segment {
                "" => return Err(bad("it has an empty segment ('//' or a trailing '/')")),
                "." | ".." => return Err(bad("it has a '.' or '..' segment")),
                s if s.len() > MAX_SEGMENT_BYTES => {
                    return Err(bad("a segment is longer than 255 bytes"))
                }
                _ => {}
            }
        }
        Ok(Self(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for ValidPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An org or repository name: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 96 characters, no `..`.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok || name.len() > MAX_NAME_LEN || name.contains("..") {
        return Err(HubError::Invalid {
            param: kind.to_owned(),
            message: format!(
                "'{}' is not a valid {kind} name: use letters, digits, '.', '_' and '-', start \
                 with a letter or digit, at most {MAX_NAME_LEN} characters, no '..'",
                name.chars().take(100).collect::<String>()
            ),
        });
    }
    Ok(())
}

/// A repository id `org/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoId {
    pub org: String,
    pub name: String,
}

impl RepoId {
    pub fn new(org: &str, name: &str) -> Result<Self> {
        validate_name("org", org)?;
        validate_name("repository", name)?;
        Ok(Self {
            org: org.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Parses `org/name`.
    pub fn parse(id: &str) -> Result<Self> {
        match id.split_once('/') {
            Some((org, name)) => Self::new(org, name),
            None => Err(HubError::Invalid {
                param: "repo".into(),
                message: format!("'{id}' is not a repository id; expected ORG/NAME"),
            }),
        }
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.org, self.name)
    }
}

/// A branch or tag name (or a commit id): no control characters, no `..`, bounded.
pub fn validate_revision(rev: &str) -> Result<()> {
    let ok = !rev.is_empty()
        && rev.len() <= MAX_REVISION_LEN
        && !rev.contains("..")
        && !rev.starts_with('/')
        && !rev.ends_with('/')
        && !rev
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\');
    if ok {
        Ok(())
    } else {
        Err(HubError::Invalid {
            param: "revision".into(),
            message: format!(
                "'{}' is not a valid revision: a branch, a tag or a 40-hex commit id",
                rev.chars().take(100).collect::<String>()
            ),
        })
    }
}

/// Whether `rev` is a full commit id (40 lowercase hex digits).
pub fn is_commit_id(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn good_paths_pass() {
        for p in [
            "a",
            "README.md",
            "dir/sub/model.gguf",
            ".gitattributes",
            "a..b/c",
            "é/ü",
        ] {
            assert_eq!(
                ValidPath::parse(p).map(|v| v.to_string()).ok(),
                Some(p.to_owned())
            );
        }
    }

    #[test]
    fn traversal_and_tricks_fail() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "..\\x",
            "a\0b",
            "C:x",
            "c:/windows",
            "a/\nb",
            "..",
            ".",
        ] {
            assert!(ValidPath::parse(p).is_err(), "{p:?} should be refused");
        }
        assert!(ValidPath::parse(&"a".repeat(2000)).is_err());
    }

    #[test]
    fn names_and_revisions() {
        assert!(RepoId::parse("org/name-1.0_x").is_ok());
        for bad in [
            "org",
            "/name",
            "org/",
            "o/../x",
            "o/-x",
            "o g/x",
            "org/na/me",
        ] {
            assert!(RepoId::parse(bad).is_err(), "{bad}");
        }
        assert!(validate_revision("main").is_ok());
        assert!(validate_revision("refs/pr/1").is_ok());
        for bad in ["", "a..b", "a b", "/x", "x\n"] {
            assert!(validate_revision(bad).is_err(), "{bad:?}");
        }
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(!is_commit_id(&"A".repeat(40)));
    }

    proptest! {
        /// Whatever is accepted is relative, has no dot segments, and never leaves the root
        /// when joined to a directory.
        #[test]
        fn accepted_paths_stay_inside(path in "[a-z./\\\\\\x00\n:]{0,24}") {
            if let Ok(p) = ValidPath::parse(&path) {
                let root = std::path::Path::new("/root/repo");
                let joined = root.join(p.as_str());
                prop_assert!(joined.starts_with(root));
                for c in std::path::Path::new(p.as_str()).components() {
                    prop_assert!(matches!(c, std::path::Component::Normal(_)), "{:?}", c);
                }
                prop_assert!(!p.as_str().contains('\0') && !p.as_str().contains('\\'));
            }
        }

        /// Never panics on arbitrary input.
        #[test]
        fn arbitrary_input_never_panics(path in any::<String>()) {
            let _ = ValidPath::parse(&path);
            let _ = RepoId::parse(&path);
            let _ = validate_revision(&path);
        }
    }
}
