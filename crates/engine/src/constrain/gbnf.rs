//! GBNF text: llama.cpp's converter writes one grammar per JSON Schema, each with its own
//! `root` and primitive rules (`space`, `string`, …). Several schemas (one per offered tool,
//! and the response format) go into one grammar by giving each grammar's rules a prefix, then
//! joining them under hand-written rules for the model's call format.

/// `gbnf` with every rule name (definitions and references) prefixed by `prefix`. String
/// literals, character classes and repetition counts are copied as they are.
pub fn prefixed(gbnf: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(gbnf.len() + gbnf.len() / 4);
    for line in gbnf.lines() {
        let Some((name, body)) = line.split_once("::=") else {
            // The converter writes one rule per line; anything else is kept (blank lines).
            out.push_str(line);
            out.push('\n');
            continue;
        };
        out.push_str(prefix);
        out.push_str(name.trim());
        out.push_str(" ::=");
        rename_refs(body, prefix, &mut out);
        out.push('\n');
    }
    out
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn rename_refs(body: &str, prefix: &str, out: &mut String) {
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '[' | '{' => {
                let close = match c {
                    '"' => '"',
                    '[' => ']',
                    _ => '}',
                };
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        if let Some(escaped) = chars.next() {
                            out.push(escaped);
                        }
                    } else if d == close {
                        break;
                    }
                }
            }
            c if is_word(c) => {
                out.push_str(prefix);
                out.push(c);
                while let Some(&d) = chars.peek() {
                    if !is_word(d) {
                        break;
                    }
                    out.push(d);
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
}

/// A GBNF string literal for `text`.
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::{literal, prefixed};

    #[test]
    fn every_rule_name_gets_the_prefix_and_nothing_else_does() {
        let gbnf = "root ::= \"{\" space item-1 \"x\\\"y\" [a-z\\]] char{0,40} space \"}\"\nspace ::= | \" \"\n";
        assert_eq!(
            prefixed(gbnf, "t0-"),
            "t0-root ::= \"{\" t0-space t0-item-1 \"x\\\"y\" [a-z\\]] t0-char{0,40} t0-space \"}\"\nt0-space ::= | \" \"\n"
        );
    }

    #[test]
    fn literals_escape_quotes_and_newlines() {
        assert_eq!(
            literal("<tool_call>\n{\"a\\"),
            "\"<tool_call>\\n{\\\"a\\\\\""
        );
    }
}
