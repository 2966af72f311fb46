//! Reasoning split from the answer: models whose chat template thinks in `<think>…</think>`
//! (DeepSeek-R1 distills, Qwen 3, QwQ) write their thinking first; it goes out as
//! [`Event::Reasoning`] and only what follows `</think>` as the answer's text, as vLLM's and
//! DeepSeek's `reasoning_content` do.
//!
//! A template whose generation prompt already opens the block (`…<think>\n`) starts the output
//! inside it; otherwise the output is reasoning only if it opens with `<think>` (after
//! whitespace). Thinking never closed (cut off by `max_tokens`) stays reasoning. Like the tool
//! call parsers, the splitter never loses text: a possible tag is held back until decided.

use backend::Event;

use crate::relay::{relay, Events};
use crate::text::partial_suffix;

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Whether a chat template teaches its model to think in `<think>…</think>`.
pub fn detect(template: &str) -> bool {
    template.contains(CLOSE)
}

/// Whether a rendered prompt ends inside an opened thinking block.
pub fn prompt_opens_thinking(rendered: &str) -> bool {
    rendered.trim_end().ends_with(OPEN)
}

/// A piece of output: reasoning or the answer's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Reasoning(String),
    Answer(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing but whitespace seen yet: the output may still open a block.
    Start,
    Thinking,
    /// Just after `</think>`: whitespace separating it from the answer is dropped.
    Closed,
    Answer,
}

/// Splits generated text, fed as it comes, into reasoning and answer.
#[derive(Debug)]
pub struct Splitter {
    mode: Mode,
    held: String,
    /// Some of the thought was released (so its leading whitespace is behind it).
    thought_started: bool,
}

impl Splitter {
    /// `inside`: the prompt ends inside an opened block ([`prompt_opens_thinking`]).
    pub fn new(inside: bool) -> Self {
        Self {
            mode: if inside { Mode::Thinking } else { Mode::Start },
            held: String::new(),
            thought_started: false,
        }
    }

    pub fn feed(&mut self, text: &str) -> Vec<Part> {
        let mut out = Vec::new();
        self.held.push_str(text);
        loop {
            match self.mode {
                Mode::Start => {
                    let rest = self.held.trim_start();
                    if let Some(after) = rest.strip_prefix(OPEN) {
                        self.held = after.trim_start().to_owned();
                        self.mode = Mode::Thinking;
                    } else if OPEN.starts_with(rest) {
                        return out; // whitespace or a possible opener: undecided
                    } else {
                        self.mode = Mode::Answer;
                    }
                }
                Mode::Thinking => match self.held.find(CLOSE) {
                    Some(at) => {
                        let thought = self.held[..at].trim_end().to_owned();
                        self.held.drain(..at + CLOSE.len());
                        self.think(&mut out, thought);
                        self.mode = Mode::Closed;
                    }
                    None => {
                        // Whitespace that may end the thought, and a possible `</think>`, wait.
                        let undecided = self.held.len() - partial_suffix(&self.held, CLOSE);
                        let cut = self.held[..undecided].trim_end().len();
                        let thought: String = self.held.drain(..cut).collect();
                        self.think(&mut out, thought);
                        return out;
                    }
                },
                Mode::Closed => {
                    let rest = self.held.trim_start();
                    if rest.is_empty() {
                        self.held.clear();
                        return out;
                    }
                    self.held = rest.to_owned();
                    self.mode = Mode::Answer;
                }
                Mode::Answer => {
                    let text = std::mem::take(&mut self.held);
                    push(&mut out, Part::Answer(text));
                    return out;
                }
            }
        }
    }

    /// Releases a piece of the thought; whitespace before its first word is dropped.
    fn think(&mut self, out: &mut Vec<Part>, mut thought: String) {
        if !self.thought_started {
            thought = thought.trim_start().to_owned();
            self.thought_started = !thought.is_empty();
        }
        push(out, Part::Reasoning(thought));
    }

    /// Generation ended: what was held back (reasoning inside an unclosed block).
    pub fn finish(&mut self) -> Vec<Part> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        match self.mode {
            Mode::Thinking => self.think(&mut out, held),
            Mode::Start | Mode::Answer => push(&mut out, Part::Answer(held)),
            Mode::Closed => {}
        }
        out
    }
}

fn push(out: &mut Vec<Part>, part: Part) {
    match part {
        Part::Reasoning(t) | Part::Answer(t) if t.is_empty() => {}
        part => out.push(part),
    }
}

/// Events of one generation with its reasoning split out of `Text` into `Reasoning` events.
/// Tokens of text held back ride with the next piece released (their ids only with answer
/// text: a stream that delivered reasoning is not resumed elsewhere).
pub(crate) fn split(inner: Events, inside: bool) -> Events {
    let mut splitter = Splitter::new(inside);
    let mut held: (u32, Vec<u32>) = (0, Vec::new());
    let emit = |parts: Vec<Part>, held: &mut (u32, Vec<u32>), out: &mut Vec<Event>| {
        for part in parts {
            let (tokens, ids) = std::mem::take(held);
            out.push(match part {
                Part::Reasoning(text) => Event::Reasoning { text, tokens },
                Part::Answer(text) => Event::Text { text, tokens, ids },
            });
        }
    };
    relay(inner, move |event| {
        let mut out = Vec::new();
        match event {
            Event::Text { text, tokens, ids } => {
                held.0 = held.0.saturating_add(tokens);
                held.1.extend(ids);
                emit(splitter.feed(&text), &mut held, &mut out);
            }
            finished @ Event::Finished { .. } => {
                emit(splitter.finish(), &mut held, &mut out);
                out.push(finished);
            }
            other => out.push(other),
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Feeds `chunks`, finishes, and merges adjacent parts of one kind.
    fn run(inside: bool, chunks: &[&str]) -> Vec<Part> {
        let mut s = Splitter::new(inside);
        let mut parts: Vec<Part> = chunks.iter().flat_map(|c| s.feed(c)).collect();
        parts.extend(s.finish());
        let mut out: Vec<Part> = Vec::new();
        for part in parts {
            match (out.last_mut(), part) {
                (Some(Part::Reasoning(a)), Part::Reasoning(b))
                | (Some(Part::Answer(a)), Part::Answer(b)) => a.push_str(&b),
                (_, part) => out.push(part),
            }
        }
        out
    }

    fn r(s: &str) -> Part {
        Part::Reasoning(s.into())
    }
    fn a(s: &str) -> Part {
        Part::Answer(s.into())
    }

    #[test]
    fn a_block_the_model_opens_is_reasoning() {
        let whole = "<think>\nThe user wants 2+2.\n</think>\n\nIt is 4.";
        let want = vec![r("The user wants 2+2."), a("It is 4.")];
        assert_eq!(run(false, &[whole]), want);
        let chars: Vec<String> = whole.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(false, &refs), want);
    }

    #[test]
    fn a_prompt_that_opened_the_block_starts_inside_it() {
        assert_eq!(
            run(true, &["Hmm, ", "sum.</th", "ink>\n\n", "4"]),
            vec![r("Hmm, sum."), a("4")]
        );
        assert!(prompt_opens_thinking("<|Assistant|><think>\n"));
        assert!(!prompt_opens_thinking("<think>\n\n</think>\n\n"));
    }

    #[test]
    fn unclosed_thinking_stays_reasoning_and_plain_answers_stay_answers() {
        assert_eq!(
            run(true, &["still thinking <"]),
            vec![r("still thinking <")]
        );
        assert_eq!(
            run(false, &["  Plain ", "answer"]),
            vec![a("  Plain answer")]
        );
        assert_eq!(run(false, &[" <thi"]), vec![a(" <thi")]);
        assert_eq!(run(false, &["<b>bold</b>"]), vec![a("<b>bold</b>")]);
        // A tag later in an answer is text.
        assert_eq!(
            run(false, &["x <think>y</think>"]),
            vec![a("x <think>y</think>")]
        );
        assert_eq!(run(true, &["</think>", "  "]), vec![]);
    }

    #[test]
    fn templates_that_think_are_recognised() {
        assert!(detect("{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"));
        assert!(!detect("{{ '<|im_start|>assistant\\n' }}"));
    }

    proptest! {
        /// Arbitrary text cut anywhere: no panic, and text without tags comes out unchanged.
        #[test]
        fn arbitrary_text_is_never_lost(text in ".{0,200}", cut in 0usize..200, inside: bool) {
            let cut = (0..=cut.min(text.len())).rev().find(|&c| text.is_char_boundary(c)).unwrap_or(0);
            let parts = run(inside, &[&text[..cut], &text[cut..]]);
            if !text.contains('<') {
                // A thought's leading whitespace is dropped.
                let want = if inside { r(text.trim_start()) } else { a(&text) };
                let want: Vec<Part> = [want].into_iter().filter(|p| p != &r("") && p != &a("")).collect();
                prop_assert_eq!(parts, want);
            }
        }

        /// Reasoning and answer survive any cut.
        #[test]
        fn a_split_survives_any_cut(thought in "[a-z .]{1,30}", answer in "[a-z.][a-z .]{0,29}", cut in 0usize..80) {
            let whole = format!("<think>{thought}</think>{answer}");
            let cut = cut.min(whole.len());
            let parts = run(false, &[&whole[..cut], &whole[cut..]]);
            let mut want = Vec::new();
            if !thought.trim().is_empty() { want.push(r(thought.trim())); }
            want.push(a(&answer));
            prop_assert_eq!(parts, want);
        }
    }
}
