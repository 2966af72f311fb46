//! The model card: `README.md` with YAML front matter between `---` lines. Only what search
//! needs is kept (license, tags, pipeline/task, base model, languages); a card that does not
//! parse is treated as empty rather than refusing the commit.

use serde::Deserialize;
use store::hub::CardSummary;

/// Card front matter, as Hugging Face model cards write it.
#[derive(Debug, Default, Deserialize)]
struct FrontMatter {
    license: Option<OneOrMany>,
    tags: Option<OneOrMany>,
    pipeline_tag: Option<String>,
    base_model: Option<OneOrMany>,
    language: Option<OneOrMany>,
    library_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The YAML between a leading `---` line and the next `---` line, if any.
pub fn front_matter(readme: &str) -> Option<&str> {
    let text = readme.strip_prefix('\u{feff}').unwrap_or(readme);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some(&rest[..offset]);
        }
        offset += line.len();
    }
    None
}

/// Parses a card; `paths` (the tree's files) add derived tags such as `gguf`.
pub fn summarize<'a>(
    readme: Option<&str>,
    paths: impl IntoIterator<Item = &'a str>,
) -> CardSummary {
    let fm: FrontMatter = readme
        .and_then(front_matter)
        .and_then(|yaml| match serde_yaml::from_str(yaml) {
            Ok(fm) => Some(fm),
            Err(e) => {
                tracing::info!(error = %e, "model card front matter does not parse; ignoring it");
                None
            }
        })
        .unwrap_or_default();
    let clean = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && s.len() <= 200)
            .collect()
    };
    let license = fm
        .license
        .map(OneOrMany::into_vec)
        .map(clean)
        .and_then(|v| v.into_iter().next());
    let base_model = fm
        .base_model
        .map(OneOrMany::into_vec)
        .map(clean)
        .and_then(|v| v.into_iter().next());
    let languages = fm
        .language
        .map(OneOrMany::into_vec)
        .map(clean)
        .unwrap_or_default();
    let pipeline_tag = fm
        .pipeline_tag
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let mut tags = fm
        .tags
        .map(OneOrMany::into_vec)
        .map(clean)
        .unwrap_or_default();
    tags.extend(fm.library_name.clone());
    tags.extend(pipeline_tag.clone());
    tags.extend(languages.iter().cloned());
    tags.extend(license.as_ref().map(|l| format!("license:{l}")));
    tags.extend(base_model.as_ref().map(|b| format!("base_model:{b}")));
    for path in paths {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".gguf") {
            tags.push("gguf".into());
        } else if lower.ends_with(".safetensors") {
            tags.push("safetensors".into());
        }
    }
    tags.sort();
    tags.dedup();
    tags.truncate(100);
    CardSummary {
        license,
        pipeline_tag,
        base_model,
        languages,
        tags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hf_style_cards() {
        let readme = "---\nlicense: apache-2.0\nlanguage:\n- en\n- fr\ntags:\n  - chat\npipeline_tag: text-generation\nbase_model: HuggingFaceTB/SmolLM2-135M\n---\n# Title\n";
        let c = summarize(Some(readme), ["model.gguf", "README.md"]);
        assert_eq!(c.license.as_deref(), Some("apache-2.0"));
        assert_eq!(c.pipeline_tag.as_deref(), Some("text-generation"));
        assert_eq!(c.base_model.as_deref(), Some("HuggingFaceTB/SmolLM2-135M"));
        assert_eq!(c.languages, ["en", "fr"]);
        for t in [
            "chat",
            "gguf",
            "license:apache-2.0",
            "en",
            "text-generation",
            "base_model:HuggingFaceTB/SmolLM2-135M",
        ] {
            assert!(c.tags.iter().any(|x| x == t), "{t} in {:?}", c.tags);
        }
    }

    #[test]
    fn broken_or_missing_cards_are_empty() {
        assert_eq!(summarize(None, []), CardSummary::default());
        assert_eq!(
            summarize(Some("# no front matter"), []),
            CardSummary::default()
        );
        assert_eq!(
            summarize(Some("---\nlicense: [unclosed\n---\n"), []),
            CardSummary::default()
        );
        assert_eq!(
            summarize(Some("---\nlicense: mit\n"), []),
            CardSummary::default()
        );
        let c = summarize(Some("---\nlicense: mit\ntags: one\n---\n"), []);
        assert_eq!(c.tags, ["license:mit", "one"]);
    }
}
