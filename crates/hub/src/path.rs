//! Validated names: repository ids (`org/name`), revisions and file paths inside a repo.
//!
//! A [`ValidPath`] is relative, `/`-separated, and cannot escape the repository or confuse a
//! file system or a reader: no empty, `.` or `..` segments, no leading `/`, no backslash, no
//! NUL or other control characters, no bidirectional overrides or invisible characters (which
//! make a name display as another), no Windows drive prefix, bounded length and depth. Paths
//! never reach the file system anyway (blobs are addressed by sha256), but clients that write
//! them to disk do.
//!
//! Revisions (branches and tags) follow git's ref rules as far as they matter here: no `..`,
//! no `.`-segments, no leading `-` (it reads as an option to git and other tools), no
//! whitespace, control, bidi or invisible characters, none of `~^:?*[\`, no `@{`.

use std::fmt;

use crate::error::{HubError, Result};

pub const MAX_PATH_BYTES: usize = 1024;
pub const MAX_SEGMENT_BYTES: usize = 255;
pub const MAX_NAME_LEN: usize = 96;
pub const MAX_REVISION_LEN: usize = 128;
/// The most directory levels a path may have (`a/b/c` has 3). Listings build at most one
/// directory entry per level of each file, so this also bounds their work.
pub const MAX_PATH_DEPTH: usize = 128;

/// Why `c` may not appear in a name shown to people, if it may not: characters that reorder
/// text (bidi controls), that are invisible (zero-width, fillers, tag characters, variation
/// selectors), that separate lines, that look like a space without being one, or that are
/// not characters at all (noncharacters).
pub fn forbidden_char(c: char) -> Option<&'static str> {
    let u = u32::from(c);
    if c.is_control() {
        return Some("a control character");
    }
    let bidi = matches!(u, 0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069);
    if bidi {
        return Some("a bidirectional text control character");
    }
    let invisible = matches!(
        u,
        0x00AD
            | 0x034F
            | 0x0600..=0x0605
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200D
            | 0x2060..=0x2065
            | 0x206A..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    );
    if invisible {
        return Some("an invisible character");
    }
    if c.is_whitespace() && c != ' ' {
        return Some("a whitespace character other than ' '");
    }
    if matches!(u, 0xFDD0..=0xFDEF) || (u & 0xFFFE) == 0xFFFE {
        return Some("a Unicode noncharacter");
    }
    None
}

/// The first forbidden character of `s`, with its code point, as a reason.
fn forbidden_in(s: &str) -> Option<String> {
    s.chars().find_map(|c| {
        forbidden_char(c).map(|why| format!("it contains {why} (U+{:04X})", u32::from(c)))
    })
}

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
        if let Some(why) = forbidden_in(path) {
            return Err(bad(&why));
        }
        if path.as_bytes().get(1) == Some(&b':') {
            return Err(bad("it looks like a drive letter"));
        }
        let mut depth = 0;
        for segment in path.split('/') {
            depth += 1;
            if depth > MAX_PATH_DEPTH {
                return Err(bad("it has more than 128 levels of directories"));
            }
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

/// A branch or tag name (or a commit id), as git would accept it as a ref name: bounded, no
/// `..`, no empty or `.`-led segment, no trailing `.` or `.lock`, no leading `-`, none of
/// `~^:?*[\\` or `@{`, no whitespace, control, bidi or invisible characters.
pub fn validate_revision(rev: &str) -> Result<()> {
    let why = revision_problem(rev);
    match why {
        None => Ok(()),
        Some(why) => Err(HubError::Invalid {
            param: "revision".into(),
            message: format!(
                "'{}' is not a valid revision ({why}): use a branch, a tag or a 40-hex commit id",
                rev.chars()
                    .take(100)
                    .filter(|c| forbidden_char(*c).is_none())
                    .collect::<String>()
            ),
        }),
    }
}

fn revision_problem(rev: &str) -> Option<String> {
    if rev.is_empty() {
        return Some("it is empty".into());
    }
    if rev.len() > MAX_REVISION_LEN {
        return Some(format!("it is longer than {MAX_REVISION_LEN} bytes"));
    }
    if rev.starts_with('-') {
        return Some("it starts with '-'".into());
    }
    if rev.contains("..") || rev.contains("@{") || rev == "@" {
        return Some("it contains '..' or '@{'".into());
    }
    if let Some(c) = rev
        .chars()
        .find(|c| matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\' | ' '))
    {
        return Some(format!("it contains '{c}'"));
    }
    if let Some(why) = forbidden_in(rev) {
        return Some(why);
    }
    if rev.ends_with('.') || rev.ends_with(".lock") {
        return Some("it ends with '.' or '.lock'".into());
    }
    if rev
        .split('/')
        .any(|segment| segment.is_empty() || segment.starts_with('.'))
    {
        return Some("it has an empty segment or one starting with '.'".into());
    }
    None
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

    #[test]
    fn bidi_invisible_and_option_like_names_fail() {
        for p in [
            "evil\u{202E}fdp.exe",
            "a\u{200B}b",
            "\u{FEFF}README.md",
            "a/\u{2066}b",
            "x\u{00A0}y",
            "tag\u{E0041}",
            "a\u{2028}b",
        ] {
            assert!(ValidPath::parse(p).is_err(), "{p:?} should be refused");
            assert!(validate_revision(p).is_err(), "{p:?} should be refused");
        }
        let deep = vec!["d"; MAX_PATH_DEPTH + 1].join("/");
        assert!(ValidPath::parse(&deep).is_err());
        assert!(ValidPath::parse(&vec!["d"; MAX_PATH_DEPTH].join("/")).is_ok());
        for bad in [
            "-x",
            "--upload-pack=evil",
            "-",
            "a/.b",
            ".x",
            "a.lock",
            "a.",
            "a//b",
            "a:b",
            "a~1",
            "@",
            "a@{1}",
        ] {
            assert!(validate_revision(bad).is_err(), "{bad:?}");
        }
        for good in [
            "main",
            "v1.0.0",
            "refs/pr/1",
            "feature-x",
            "a-",
            "release_2",
        ] {
            assert!(validate_revision(good).is_ok(), "{good:?}");
        }
    }

    /// Characters that make parsers trip: separators, dots, dashes, controls, bidi and
    /// invisible characters, non-ASCII letters.
    fn tricky() -> impl Strategy<Value = String> {
        let chars = prop::sample::select(vec![
            'a',
            'b',
            'Z',
            '0',
            '.',
            '/',
            '-',
            '_',
            ' ',
            '\\',
            ':',
            '@',
            '{',
            '~',
            '\0',
            '\n',
            '\u{7f}',
            '\u{202E}',
            '\u{2066}',
            '\u{200B}',
            '\u{FEFF}',
            '\u{00A0}',
            '\u{E0041}',
            '\u{FE0F}',
            'é',
            'ü',
            '字',
        ]);
        prop::collection::vec(chars, 0..40).prop_map(|v| v.into_iter().collect())
    }

    fn assert_clean(s: &str) -> Result<(), TestCaseError> {
        prop_assert!(s.chars().all(|c| forbidden_char(c).is_none()), "{:?}", s);
        prop_assert!(
            !s.split('/').any(|seg| seg == ".." || seg == "."),
            "{:?}",
            s
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever is accepted is relative, has no dot segments, never leaves the root when
        /// joined to a directory, round-trips, and holds nothing a reader cannot see.
        #[test]
        fn accepted_paths_stay_inside(path in prop_oneof![tricky(), "[a-z./\\\\\\x00\n:]{0,24}"]) {
            if let Ok(p) = ValidPath::parse(&path) {
                prop_assert_eq!(p.as_str(), path.as_str());
                prop_assert_eq!(ValidPath::parse(p.as_str()).ok(), Some(p.clone()));
                let root = std::path::Path::new("/root/repo");
                let joined = root.join(p.as_str());
                prop_assert!(joined.starts_with(root));
                for c in std::path::Path::new(p.as_str()).components() {
                    prop_assert!(matches!(c, std::path::Component::Normal(_)), "{:?}", c);
                }
                prop_assert!(!p.as_str().contains('\\'));
                prop_assert!(p.as_str().split('/').count() <= MAX_PATH_DEPTH);
                assert_clean(p.as_str())?;
            }
        }

        /// Accepted revisions are safe as one command-line argument and one ref name.
        #[test]
        fn accepted_revisions_are_ref_names(rev in tricky()) {
            if validate_revision(&rev).is_ok() {
                prop_assert!(!rev.starts_with('-') && !rev.contains("..") && !rev.is_empty());
                prop_assert!(!rev.chars().any(char::is_whitespace), "{:?}", rev);
                prop_assert!(!rev.split('/').any(|s| s.is_empty() || s.starts_with('.')));
                assert_clean(&rev)?;
            }
        }

        /// Accepted repository ids round-trip and are plain ASCII names.
        #[test]
        fn accepted_repo_ids_round_trip(id in tricky()) {
            if let Ok(r) = RepoId::parse(&id) {
                prop_assert_eq!(r.to_string(), id.clone());
                prop_assert!(!id.contains("..") && !id.starts_with('-') && id.is_ascii());
            }
        }

        /// Never panics on arbitrary input.
        #[test]
        fn arbitrary_input_never_panics(path in any::<String>()) {
            let _ = ValidPath::parse(&path);
            let _ = RepoId::parse(&path);
            let _ = validate_revision(&path);
            let _ = is_commit_id(&path);
        }
    }
}
