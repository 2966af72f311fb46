//! Model cards as Markdown, made safe: a card is written by whoever owns the repository
//! (another tenant, for a public one), so it is rendered with `pulldown-cmark` and the HTML
//! that comes out is cleaned by `ammonia` (an allow-list of tags and attributes; no script,
//! no event handler, no style; links only to `http`, `https` and `mailto`, opened with
//! `rel="noopener noreferrer nofollow"`). Images are dropped (their alt text stays): the
//! console's Content Security Policy would block a remote one anyway, and a failed request
//! is noise. A card's YAML front matter is metadata, shown by the repository's table, not here.

use std::collections::HashSet;

use maud::PreEscaped;
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// The card's Markdown as sanitized HTML.
pub fn render(card: &str) -> PreEscaped<String> {
    let body = strip_front_matter(card);
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let mut in_image = 0usize;
    // Images become their alt text; raw HTML in the card is shown as text.
    let events = Parser::new_ext(body, options).filter_map(|event| match event {
        Event::Start(Tag::Image { .. }) => {
            in_image += 1;
            None
        }
        Event::End(TagEnd::Image) => {
            in_image = in_image.saturating_sub(1);
            None
        }
        Event::Html(html) | Event::InlineHtml(html) => Some(Event::Text(html)),
        other => Some(other),
    });
    let mut html = String::with_capacity(body.len() * 2);
    pulldown_cmark::html::push_html(&mut html, events);
    let clean = ammonia::Builder::default()
        .rm_tags(HashSet::from(["img"]))
        .url_schemes(HashSet::from(["http", "https", "mailto"]))
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(&html)
        .to_string();
    PreEscaped(clean)
}

/// The card without a leading `---` … `---` YAML block.
fn strip_front_matter(card: &str) -> &str {
    let card = card.strip_prefix('\u{feff}').unwrap_or(card);
    let Some(rest) = card
        .strip_prefix("---\n")
        .or_else(|| card.strip_prefix("---\r\n"))
    else {
        return card;
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        offset += line.len();
        if line.trim_end() == "---" {
            return &rest[offset..];
        }
    }
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_rendered() {
        let html =
            render("# Title\n\nSome *emphasis* and `code`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n").0;
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<em>emphasis</em>"), "{html}");
        assert!(html.contains("<code>code</code>"), "{html}");
        assert!(html.contains("<table>"), "{html}");
    }

    #[test]
    fn nothing_executable_survives() {
        let card = "<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n\
                    [click](javascript:alert(3)) [data](data:text/html,hi) \
                    <a href=\"https://x.test\" onclick=\"alert(4)\">a</a>\n\n\
                    ![pic](https://x.test/p.png \"t\")\n\n<iframe src=\"https://x.test\"></iframe>";
        let html = render(card).0;
        // Text's `<` is escaped, so every `<` left opens a real tag: check each one.
        for tag in html
            .split('<')
            .skip(1)
            .map(|t| t.split('>').next().unwrap_or(""))
        {
            let name = tag
                .trim_start_matches('/')
                .split([' ', '>'])
                .next()
                .unwrap_or("");
            assert!(
                !["script", "img", "iframe", "style"].contains(&name),
                "<{tag}> in {html}"
            );
            assert!(!tag.contains(" on"), "a handler in <{tag}>");
            assert!(
                !tag.contains("javascript:") && !tag.contains("data:"),
                "a bad url in <{tag}>"
            );
        }
        // Raw HTML is shown as text, so a reader sees what the author wrote.
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("pic"), "the image's alt text stays: {html}");
    }

    #[test]
    fn links_are_kept_with_a_safe_rel() {
        let html = render("[docs](https://example.test/docs)").0;
        assert!(
            html.contains("href=\"https://example.test/docs\"")
                && html.contains("rel=\"noopener noreferrer nofollow\""),
            "{html}"
        );
    }

    #[test]
    fn front_matter_is_not_shown() {
        let html = render("---\nlicense: mit\ntags: [a]\n---\n# Model\n").0;
        assert!(!html.contains("license"), "{html}");
        assert!(html.contains("<h1>Model</h1>"), "{html}");
        assert_eq!(strip_front_matter("---\nunterminated"), "---\nunterminated");
        assert_eq!(render("").0, "");
    }
}
