//! Turning a stream of token bytes into the text a client may see: incremental UTF-8 decoding
//! (a token can end in the middle of a character) and stop strings (which may span tokens and
//! must never reach the client, not even partly).

/// Decodes bytes into UTF-8 text as they arrive, holding back an incomplete trailing character.
/// Invalid sequences become U+FFFD, as `String::from_utf8_lossy` would.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Add bytes; returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: `valid_up_to` bytes are valid UTF-8 by definition.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// End of stream: whatever is held is emitted (lossily).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Finds stop strings in streamed text. Text that might be the start of a stop string is held
/// back until it is clear either way.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What the matcher lets through after a push.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text safe to emit now (may be empty).
    Continue(String),
    /// A stop string was found: emit this text (what preceded it) and end the sequence.
    Stopped(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopOutcome::Continue(std::mem::take(&mut self.held));
        }
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let mut out = std::mem::take(&mut self.held);
            out.truncate(at);
            return StopOutcome::Stopped(out);
        }
        let keep = self.longest_partial_suffix();
        let split = self.held.len() - keep;
        let rest = self.held.split_off(split);
        StopOutcome::Continue(std::mem::replace(&mut self.held, rest))
    }

    /// End of generation without a stop: release what was held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of a stop string.
    fn longest_partial_suffix(&self) -> usize {
        let mut best = 0;
        for stop in &self.stops {
            let max = stop.len().saturating_sub(1).min(self.held.len());
            for len in (best + 1..=max).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start) && stop.starts_with(&self.held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `marker`.
pub(crate) fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn utf8_split_character_is_held_until_complete() {
        let mut d = Utf8Stream::default();
        let bytes = "é€".as_bytes();
        assert_eq!(d.push(&bytes[..1]), "");
        assert_eq!(d.push(&bytes[1..3]), "é");
        assert_eq!(d.push(&bytes[3..]), "€");
        assert_eq!(d.finish(), "");
    }

    #[test]
    fn utf8_invalid_bytes_become_replacement() {
        let mut d = Utf8Stream::default();
        assert_eq!(d.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(d.push(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_spanning_pushes_is_never_emitted() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("hello E"), StopOutcome::Continue("hello ".into()));
        assert_eq!(m.push("N"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("D tail"), StopOutcome::Stopped("".into()));
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("EN"), StopOutcome::Continue(String::new()));
        assert_eq!(m.push("x"), StopOutcome::Continue("ENx".into()));
        assert_eq!(m.push("E"), StopOutcome::Continue(String::new()));
        assert_eq!(m.finish(), "E");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(vec!["world".into(), "lo".into()]);
        assert_eq!(m.push("hello world"), StopOutcome::Stopped("hel".into()));
    }

    proptest! {
        /// Whatever the chunking, the emitted text is the input up to the first stop string.
        #[test]
        fn chunking_does_not_change_the_result(
            text in "[abc€]{0,40}",
            stop in "[abc€]{1,3}",
            cuts in proptest::collection::vec(0usize..40, 0..8),
        ) {
            let expected = match text.find(&stop) { Some(i) => &text[..i], None => &text[..] };
            let mut bounds: Vec<usize> = cuts.into_iter().filter(|&c| c < text.len() && text.is_char_boundary(c)).collect();
            bounds.push(text.len());
            bounds.sort_unstable();
            let mut m = StopMatcher::new(vec![stop.clone()]);
            let mut out = String::new();
            let mut start = 0;
            let mut stopped = false;
            for end in bounds {
                if end < start { continue; }
                match m.push(&text[start..end]) {
                    StopOutcome::Continue(s) => out.push_str(&s),
                    StopOutcome::Stopped(s) => { out.push_str(&s); stopped = true; break; }
                }
                start = end;
            }
            if !stopped { out.push_str(&m.finish()); }
            prop_assert_eq!(out, expected);
        }
    }
}
