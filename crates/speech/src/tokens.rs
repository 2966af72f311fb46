//! Whisper's tokenizer and its special tokens.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::SpeechError;

/// Whisper's languages: ISO code and the name OpenAI's API reports.
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", "english"),
    ("zh", "chinese"),
    ("de", "german"),
    ("es", "spanish"),
    ("ru", "russian"),
    ("ko", "korean"),
    ("fr", "french"),
    ("ja", "japanese"),
    ("pt", "portuguese"),
    ("tr", "turkish"),
    ("pl", "polish"),
    ("ca", "catalan"),
    ("nl", "dutch"),
    ("ar", "arabic"),
    ("sv", "swedish"),
    ("it", "italian"),
    ("id", "indonesian"),
    ("hi", "hindi"),
    ("fi", "finnish"),
    ("vi", "vietnamese"),
    ("he", "hebrew"),
    ("uk", "ukrainian"),
    ("el", "greek"),
    ("ms", "malay"),
    ("cs", "czech"),
    ("ro", "romanian"),
    ("da", "danish"),
    ("hu", "hungarian"),
    ("ta", "tamil"),
    ("no", "norwegian"),
    ("th", "thai"),
    ("ur", "urdu"),
    ("hr", "croatian"),
    ("bg", "bulgarian"),
    ("lt", "lithuanian"),
    ("la", "latin"),
    ("mi", "maori"),
    ("ml", "malayalam"),
    ("cy", "welsh"),
    ("sk", "slovak"),
    ("te", "telugu"),
    ("fa", "persian"),
    ("lv", "latvian"),
    ("bn", "bengali"),
    ("sr", "serbian"),
    ("az", "azerbaijani"),
    ("sl", "slovenian"),
    ("kn", "kannada"),
    ("et", "estonian"),
    ("mk", "macedonian"),
    ("br", "breton"),
    ("eu", "basque"),
    ("is", "icelandic"),
    ("hy", "armenian"),
    ("ne", "nepali"),
    ("mn", "mongolian"),
    ("bs", "bosnian"),
    ("kk", "kazakh"),
    ("sq", "albanian"),
    ("sw", "swahili"),
    ("gl", "galician"),
    ("mr", "marathi"),
    ("pa", "punjabi"),
    ("si", "sinhala"),
    ("km", "khmer"),
    ("sn", "shona"),
    ("yo", "yoruba"),
    ("so", "somali"),
    ("af", "afrikaans"),
    ("oc", "occitan"),
    ("ka", "georgian"),
    ("be", "belarusian"),
    ("tg", "tajik"),
    ("sd", "sindhi"),
    ("gu", "gujarati"),
    ("am", "amharic"),
    ("yi", "yiddish"),
    ("lo", "lao"),
    ("uz", "uzbek"),
    ("fo", "faroese"),
    ("ht", "haitian creole"),
    ("ps", "pashto"),
    ("tk", "turkmen"),
    ("nn", "nynorsk"),
    ("mt", "maltese"),
    ("sa", "sanskrit"),
    ("lb", "luxembourgish"),
    ("my", "myanmar"),
    ("bo", "tibetan"),
    ("tl", "tagalog"),
    ("mg", "malagasy"),
    ("as", "assamese"),
    ("tt", "tatar"),
    ("haw", "hawaiian"),
    ("ln", "lingala"),
    ("ha", "hausa"),
    ("ba", "bashkir"),
    ("jw", "javanese"),
    ("su", "sundanese"),
    ("yue", "cantonese"),
];

/// The language name for `code` (the code itself when unknown).
pub fn language_name(code: &str) -> String {
    LANGUAGES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| code.to_owned(), |(_, n)| (*n).to_owned())
}

/// The ISO code for a code or an English name (`en`, `English`).
pub fn language_code(asked: &str) -> Option<&'static str> {
    let asked = asked.trim().to_ascii_lowercase();
    LANGUAGES
        .iter()
        .find(|(c, n)| *c == asked || *n == asked)
        .map(|(c, _)| *c)
}

/// The tokenizer and the ids decoding needs.
#[derive(Clone)]
pub struct Vocab {
    tokenizer: Tokenizer,
    pub eot: u32,
    pub sot: u32,
    pub sot_prev: u32,
    pub transcribe: u32,
    pub no_timestamps: u32,
    /// The first timestamp token, `<|0.00|>`; each next one is 20 ms later.
    pub timestamp_begin: u32,
    pub no_speech: Option<u32>,
    /// Multilingual models take a language and a task after `<|startoftranscript|>`.
    pub multilingual: bool,
    /// Language tokens the model knows: (code, id).
    pub languages: Vec<(&'static str, u32)>,
}

impl Vocab {
    pub fn load(path: &Path, vocab_size: usize) -> Result<Self, SpeechError> {
        let tokenizer = Tokenizer::from_file(path).map_err(|e| {
            SpeechError::Load(format!(
                "{} cannot be read as a tokenizer: {e}",
                path.display()
            ))
        })?;
        let id = |t: &str| {
            tokenizer.token_to_id(t).ok_or_else(|| {
                SpeechError::Load(format!(
                    "{} has no token {t}: not a Whisper tokenizer",
                    path.display()
                ))
            })
        };
        let no_timestamps = id("<|notimestamps|>")?;
        let languages = LANGUAGES
            .iter()
            .filter_map(|(c, _)| tokenizer.token_to_id(&format!("<|{c}|>")).map(|i| (*c, i)))
            .filter(|(_, i)| (*i as usize) < vocab_size)
            .collect();
        Ok(Self {
            eot: id("<|endoftext|>")?,
            sot: id("<|startoftranscript|>")?,
            sot_prev: id("<|startofprev|>")?,
            transcribe: id("<|transcribe|>")?,
            no_timestamps,
            timestamp_begin: no_timestamps + 1,
            no_speech: tokenizer
                .token_to_id("<|nospeech|>")
                .or_else(|| tokenizer.token_to_id("<|nocaptions|>")),
            multilingual: vocab_size >= 51_865,
            languages,
            tokenizer,
        })
    }

    /// The id of `code`'s language token.
    pub fn language(&self, code: &str) -> Option<u32> {
        self.languages
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, i)| *i)
    }

    /// Tokens of a prompt, as faster-whisper encodes one: a space, then the trimmed text.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, SpeechError> {
        let text = format!(" {}", text.trim());
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| SpeechError::Invalid(format!("the prompt cannot be tokenized: {e}")))
    }

    /// The text of `tokens`' text tokens (timestamps and specials left out).
    pub fn decode(&self, tokens: &[u32]) -> String {
        let text: Vec<u32> = tokens.iter().copied().filter(|t| *t < self.eot).collect();
        self.tokenizer.decode(&text, false).unwrap_or_default()
    }
}
