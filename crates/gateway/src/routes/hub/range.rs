//! `Range: bytes=…` requests (RFC 9110 §14) against a file of known size: one range or none.
//! A header that does not parse, or asks for several ranges, is ignored (the whole file is
//! sent), as the RFC allows; a well-formed range that starts past the end is unsatisfiable
//! (416).

/// What to send for a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// 200 and the whole file.
    Full,
    /// 206 and bytes `start..=end` (both within the file).
    Partial { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */SIZE`.
    Unsatisfiable,
}

impl RangeRequest {
    /// Parses the header value (if any) against a file of `size` bytes.
    pub fn parse(header: Option<&str>, size: u64) -> Self {
        let Some(value) = header else {
            return Self::Full;
        };
        let Some(spec) = value.trim().strip_prefix("bytes=") else {
            return Self::Full;
        };
        if spec.contains(',') {
            return Self::Full;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Self::Full;
        };
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Digits that overflow u64 are still a (huge) valid number: saturate.
            Some(s.parse::<u64>().unwrap_or(u64::MAX))
        };
        match (first.trim().is_empty(), number(first), number(last)) {
            // bytes=-N: the last N bytes.
            (true, _, Some(suffix)) => {
                if suffix == 0 || size == 0 {
                    Self::Unsatisfiable
                } else {
                    Self::Partial {
                        start: size.saturating_sub(suffix),
                        end: size - 1,
                    }
                }
            }
            (false, Some(start), last) if last.is_none_or(|l| l >= start) => {
                if last.is_none() && !last_is_empty(last_raw(spec)) {
                    return Self::Full;
                }
                if start >= size {
                    return Self::Unsatisfiable;
                }
                let end = last.map_or(size - 1, |l| l.min(size - 1));
                Self::Partial { start, end }
            }
            _ => Self::Full,
        }
    }
}

fn last_raw(spec: &str) -> &str {
    spec.split_once('-').map_or("", |(_, l)| l)
}

fn last_is_empty(raw: &str) -> bool {
    raw.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::RangeRequest as R;

    #[test]
    fn forms() {
        let p = |h: &str| R::parse(Some(h), 100);
        assert_eq!(R::parse(None, 100), R::Full);
        assert_eq!(p("bytes=0-9"), R::Partial { start: 0, end: 9 });
        assert_eq!(p("bytes=90-"), R::Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=90-1000"), R::Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=-10"), R::Partial { start: 90, end: 99 });
        assert_eq!(p("bytes=-1000"), R::Partial { start: 0, end: 99 });
        assert_eq!(p("bytes=100-"), R::Unsatisfiable);
        assert_eq!(p("bytes=-0"), R::Unsatisfiable);
        assert_eq!(p("bytes=99999999999999999999999-"), R::Unsatisfiable);
        // Ignored: malformed, reversed, multiple, other units.
        for h in [
            "bytes=5-2",
            "bytes=a-b",
            "bytes=",
            "bytes=-",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=1-x",
        ] {
            assert_eq!(p(h), R::Full, "{h}");
        }
        assert_eq!(R::parse(Some("bytes=0-"), 0), R::Unsatisfiable);
        assert_eq!(R::parse(Some("bytes=-5"), 0), R::Unsatisfiable);
    }

    proptest! {
        /// Every partial answer lies inside the file and is never empty.
        #[test]
        fn partial_is_inside(size in 0u64..10_000, a in 0u64..20_000, b in 0u64..20_000, form in 0u8..4) {
            let h = match form {
                0 => format!("bytes={a}-{b}"),
                1 => format!("bytes={a}-"),
                2 => format!("bytes=-{b}"),
                _ => format!("bytes= {a} - {b} "),
            };
            match R::parse(Some(&h), size) {
                R::Partial { start, end } => {
                    prop_assert!(start <= end && end < size);
                    if form == 0 { prop_assert_eq!(start, a); prop_assert!(end <= b); }
                }
                R::Unsatisfiable => prop_assert!(size == 0 || a >= size || (form == 2 && b == 0)),
                R::Full => prop_assert!(form != 1 && (form == 2 || a > b)),
            }
        }

        #[test]
        fn never_panics(h in any::<String>(), size in any::<u64>()) {
            if let R::Partial { start, end } = R::parse(Some(&h), size) {
                prop_assert!(start <= end && end < size);
            }
        }
    }
}
