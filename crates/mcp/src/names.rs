//! Names: a server's name is the prefix of its tools' names in the union `/mcp` lists,
//! `SERVER__TOOL`, shortened with a hash of the tool's name where that would pass 64 characters
//! (the longest function name OpenAI-style clients accept).

use sha2::{Digest, Sha256};

use crate::error::McpError;

pub const SEPARATOR: &str = "__";
pub const MAX_EXPOSED: usize = 64;
pub const MAX_SERVER_NAME: usize = 32;

/// Checks a server name: 1–32 of `A-Z a-z 0-9 _ -`, without `__` (the separator) and not
/// starting with `mcp` (a prefix reserved in the price book).
pub fn check_server_name(name: &str) -> Result<(), McpError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > MAX_SERVER_NAME || !ok_chars {
        return Err(McpError::invalid(
            "name",
            format!("an MCP server's name is 1 to {MAX_SERVER_NAME} of A-Z, a-z, 0-9, '_' and '-'; got '{}'", name.escape_debug()),
        ));
    }
    if name.contains(SEPARATOR) || name.ends_with('_') {
        return Err(McpError::invalid(
            "name",
            format!("an MCP server's name may not contain '{SEPARATOR}' or end with '_': it separates the server from the tool in tool names"),
        ));
    }
    Ok(())
}

/// The name a client sees for `tool` of `server`.
pub fn exposed(server: &str, tool: &str) -> String {
    let full = format!("{server}{SEPARATOR}{tool}");
    if full.len() <= MAX_EXPOSED && tool.bytes().all(valid_tool_byte) {
        return full;
    }
    let digest = Sha256::digest(tool.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let room = MAX_EXPOSED.saturating_sub(server.len() + SEPARATOR.len() + 1 + hash.len());
    let kept: String = tool
        .chars()
        .filter(|c| c.is_ascii() && valid_tool_byte(*c as u8))
        .take(room)
        .collect();
    format!("{server}{SEPARATOR}{kept}_{hash}")
}

fn valid_tool_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Splits an exposed name into the server's name and the rest (the tool's name, or its
/// shortened form).
pub fn split(exposed: &str) -> Option<(&str, &str)> {
    exposed
        .split_once(SEPARATOR)
        .filter(|(s, t)| !s.is_empty() && !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn server_names_are_checked() {
        for ok in ["time", "my-server", "a_b", "S1"] {
            assert!(check_server_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a__b", "a_", "with space", "ü", &"x".repeat(33)] {
            assert!(check_server_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn short_names_are_prefixed_and_split_back() {
        assert_eq!(
            exposed("time", "get_current_time"),
            "time__get_current_time"
        );
        assert_eq!(
            split("time__get_current_time"),
            Some(("time", "get_current_time"))
        );
        assert_eq!(split("time__a__b"), Some(("time", "a__b")));
        assert_eq!(split("nosep"), None);
        assert_eq!(split("__x"), None);
    }

    proptest! {
        #[test]
        fn exposed_names_fit_and_differ(server in "[a-z][a-z0-9-]{0,31}", a in "\\PC{1,150}", b in "\\PC{1,150}") {
            let (ea, eb) = (exposed(&server, &a), exposed(&server, &b));
            prop_assert!(ea.len() <= MAX_EXPOSED);
            prop_assert!(ea.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')));
            prop_assert_eq!(split(&ea).map(|(s, _)| s), Some(server.as_str()));
            if a != b { prop_assert_ne!(ea, eb); }
        }
    }
}
