//! Whether content is JSONL, as the Batch and fine-tuning APIs want their input files: every
//! line one JSON object. Blank lines are skipped; the file must hold at least one object.
//!
//! Memory stays bounded whatever the line lengths: each line is parsed from the reader by
//! serde_json with every value skipped unread (`IgnoredAny`), so only an object's own keys, one
//! at a time, are ever buffered; the reader refuses those keys past [`MAX_KEY_BYTES`] and
//! nesting past [`MAX_DEPTH`] (serde_json skips nested values with a stack of one byte per
//! level).

use std::io::{self, BufRead, Read};

use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

/// Deepest nesting of arrays and objects accepted (serde_json's own limit when it builds
/// values).
pub const MAX_DEPTH: u32 = 128;
/// Longest key of a line's object accepted.
pub const MAX_KEY_BYTES: usize = 64 << 10;

/// Why content is not JSONL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotJsonl {
    /// 1-based; 0 when the content has no line at all.
    pub line: u64,
    pub reason: String,
}

/// Checks `reader` line by line; the number of objects.
pub fn check<R: BufRead>(mut reader: R) -> Result<u64, NotJsonl> {
    let mut line = 0u64;
    let mut objects = 0u64;
    loop {
        let at_end = reader
            .fill_buf()
            .map_err(|e| io_error(line + 1, &e))?
            .is_empty();
        if at_end {
            break;
        }
        line += 1;
        let mut one = Line {
            inner: &mut reader,
            done: false,
            content: false,
            shape: Shape::default(),
        };
        let parsed = {
            let mut de = serde_json::Deserializer::from_reader(&mut one);
            de.deserialize_map(ObjectOnly).and_then(|()| de.end())
        };
        match parsed {
            Ok(()) => objects += 1,
            Err(e) if e.is_eof() && !one.content => {} // a blank line
            Err(e) => {
                return Err(NotJsonl {
                    line,
                    reason: describe(&e),
                })
            }
        }
        // A parsed object was followed by whitespace only, up to the newline (`end`), so
        // nothing of this line is left.
        let mut rest = [0u8; 256];
        while one.read(&mut rest).map_err(|e| io_error(line, &e))? > 0 {}
    }
    if objects == 0 {
        return Err(NotJsonl {
            line: 0,
            reason: "the file holds no JSON object".into(),
        });
    }
    Ok(objects)
}

fn io_error(line: u64, e: &io::Error) -> NotJsonl {
    NotJsonl {
        line,
        reason: format!("the file could not be read: {e}"),
    }
}

/// serde_json's message without its position (always line 1 of one line), with the column.
fn describe(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(w, _)| w);
    match e.classify() {
        serde_json::error::Category::Data => format!("not a JSON object ({what})"),
        serde_json::error::Category::Eof => "the JSON value is cut off".to_owned(),
        serde_json::error::Category::Io => what.to_owned(),
        _ => format!("not valid JSON: {what} at column {}", e.column()),
    }
}

/// Accepts a JSON object, skipping its values unread.
struct ObjectOnly;

impl<'de> Visitor<'de> for ObjectOnly {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// One line of `inner`: reads end at its newline (which is consumed, not returned).
struct Line<'a, R> {
    inner: &'a mut R,
    done: bool,
    /// Whether the line had anything but spaces, tabs and carriage returns so far.
    content: bool,
    shape: Shape,
}

/// Follows a line's nesting and its object's keys as the bytes pass, to refuse what would make
/// the parser buffer without bound. Only a line that is not valid JSON can confuse it, and the
/// parser refuses that anyway.
#[derive(Debug, Default)]
struct Shape {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At depth 1, whether the next string is a key.
    expect_key: bool,
    /// Length of the key being read, if a string being read is a key of the line's object.
    key: Option<usize>,
}

impl Shape {
    fn pass(&mut self, bytes: &[u8]) -> io::Result<()> {
        for &b in bytes {
            if self.in_string {
                if let Some(len) = self.key.as_mut() {
                    *len += 1;
                    if *len > MAX_KEY_BYTES {
                        return Err(io::Error::other(format!(
                            "a key is longer than {MAX_KEY_BYTES} bytes"
                        )));
                    }
                }
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    self.key = None;
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    if self.depth == 1 && self.expect_key {
                        self.key = Some(0);
                        self.expect_key = false;
                    }
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(io::Error::other(format!(
                            "arrays and objects nest deeper than {MAX_DEPTH} levels"
                        )));
                    }
                    self.expect_key = self.depth == 1 && b == b'{';
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                b',' if self.depth == 1 => self.expect_key = true,
                b':' if self.depth == 1 => self.expect_key = false,
                _ => {}
            }
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Line<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() {
            self.done = true;
            return Ok(0);
        }
        // Only as far as `out` reaches: serde_json reads one byte at a time.
        let window = &buf[..buf.len().min(out.len())];
        let (n, newline) = match window.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (window.len(), false),
        };
        self.shape.pass(&window[..n])?;
        out[..n].copy_from_slice(&window[..n]);
        if !self.content {
            self.content = window[..n]
                .iter()
                .any(|b| !matches!(b, b' ' | b'\t' | b'\r'));
        }
        if newline {
            self.inner.consume(n + 1);
            self.done = true;
        } else {
            self.inner.consume(n);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(text: &str) -> Result<u64, NotJsonl> {
        check(io::BufReader::with_capacity(7, text.as_bytes()))
    }

    #[test]
    fn objects_one_per_line() {
        assert_eq!(run("{\"a\":1}\n{\"b\":[1,{\"c\":\"\\n\"}]}\n"), Ok(2));
        assert_eq!(run("{}"), Ok(1), "no final newline");
        assert_eq!(run("{}\r\n\n  \n{}\r\n"), Ok(2), "CRLF and blank lines");
    }

    #[test]
    fn refusals_name_the_line() {
        let e = run("{}\n[1]\n").expect_err("an array");
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("not a JSON object"), "{}", e.reason);
        assert_eq!(run("{}\n{}\n{\"a\":\n1}\n").expect_err("split").line, 3);
        assert_eq!(run("{} {}\n").expect_err("two on a line").line, 1);
        assert_eq!(run("{}\nnope\n").expect_err("not JSON").line, 2);
        assert_eq!(run("\"x\"").expect_err("a string").line, 1);
        assert_eq!(run("").expect_err("empty").line, 0);
        assert_eq!(run("\n \n").expect_err("blank").line, 0);
    }

    #[test]
    fn what_would_be_buffered_is_refused() {
        let deep = format!(
            "{{}}\n{{\"a\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = run(&deep).expect_err("too deep");
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("nest deeper"), "{}", e.reason);
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert_eq!(run(&fine), Ok(1));
        let long_key = format!("{{\"{}\": 1}}", "k".repeat(MAX_KEY_BYTES + 1));
        assert!(run(&long_key).expect_err("long key").reason.contains("key"));
        let long_value = format!(
            "{{\"k\": \"{}\", \"n\": {{\"{}\": 1}}}}",
            "v".repeat(1 << 20),
            "k".repeat(MAX_KEY_BYTES + 1)
        );
        assert_eq!(
            run(&long_value),
            Ok(1),
            "values and nested keys are skipped, never buffered"
        );
        assert_eq!(
            run("{\"a\\\"b\": \"}{[\"}"),
            Ok(1),
            "brackets and escapes in strings"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_are_judged_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = check(io::BufReader::with_capacity(5, bytes.as_slice()));
        }

        #[test]
        fn the_first_bad_line_is_named(
            good in proptest::collection::vec("[a-z]{0,8}", 0..6),
            bad in "[\\[0-9a-z\"]{1,6}",
        ) {
            let mut text: Vec<String> = good.iter().map(|k| format!("{{\"{k}\": [1, \"x\"]}}")).collect();
            text.push(bad.clone());
            text.push("{}".into());
            let joined = text.join("\n");
            let result = check(io::BufReader::with_capacity(3, joined.as_bytes()));
            let e = result.expect_err("a line that is not an object");
            prop_assert_eq!(e.line, good.len() as u64 + 1);
        }
    }
}
