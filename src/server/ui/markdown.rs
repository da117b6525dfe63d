//! Descriptions: Markdown rendered with pulldown-cmark, then sanitized with ammonia, so raw
//! HTML in a description (scripts, event handlers, `javascript:` links) comes out inert.

use maud::{Markup, PreEscaped};
use pulldown_cmark::{html::push_html, Options, Parser};

pub fn render(markdown: &str) -> Markup {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    push_html(&mut html, Parser::new_ext(markdown, options));
    let clean = ammonia::Builder::default().link_rel(Some("noopener noreferrer nofollow")).clean(&html).to_string();
    PreEscaped(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown_and_drops_active_content() {
        let out = render(
            "## Iris\n\n**bold** and [docs](https://mlflow.org)\n\n<script>alert(1)</script>\n\n\
             <img src=x onerror=alert(1)>\n\n[click](javascript:alert(1)) <a href=\"JaVaScRiPt:alert(2)\">x</a>",
        )
        .into_string();
        assert!(out.contains("<h2>Iris</h2>") && out.contains("<strong>bold</strong>"), "{out}");
        assert!(out.contains("href=\"https://mlflow.org\""), "{out}");
        let lower = out.to_ascii_lowercase();
        for bad in ["<script", "onerror", "javascript:", "alert(1)</script"] {
            assert!(!lower.contains(bad), "{bad} in {out}");
        }
    }
}
