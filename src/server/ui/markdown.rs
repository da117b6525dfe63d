//! Descriptions: Markdown rendered with pulldown-cmark, then sanitized with ammonia, so links
//! with active schemes (`javascript:`) come out inert. Raw HTML in a description is not
//! rendered at all (dropped; the text between its tags stays).
//!
//! Rendering is bounded whatever the text: HTML parsers (ammonia uses html5ever) cost time in
//! the depth of the element stack for every element, so 30,000 nested `>` took seconds. Here
//! Markdown structure deeper than [`MAX_DEPTH`] is flattened (its text kept), and the output
//! stops after [`MAX_OUTPUT`] bytes (a few long link targets or a wide table can otherwise
//! multiply a small text many times). pulldown-cmark itself parses in linear time and caps the
//! empty table cells it fills in. Descriptions are also limited to
//! [`MAX_DESCRIPTION_CHARS`](crate::registry::MAX_DESCRIPTION_CHARS) when written. Pages call
//! [`render`] on the blocking pool, never on the async workers.

use maud::{Markup, PreEscaped};
use pulldown_cmark::{html::push_html, Event, Options, Parser, Tag};

/// Markdown elements nested deeper than this render as their text alone.
pub const MAX_DEPTH: usize = 16;
/// Rendering stops after about this much HTML: 25 bytes for every character of the longest
/// description, several times what real Markdown of that size turns into.
pub const MAX_OUTPUT: usize = 128 * 1024;

/// What [`bounded_events`] produced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Elements flattened because they were nested deeper than [`MAX_DEPTH`].
    pub flattened: usize,
    /// Raw HTML blocks and tags dropped.
    pub dropped_html: usize,
    /// True when the output was cut at [`MAX_OUTPUT`].
    pub truncated: bool,
}

/// Roughly how many bytes of HTML an event turns into (tags are short; text and link
/// targets count in full).
fn cost(event: &Event<'_>) -> usize {
    16 + match event {
        Event::Text(t) | Event::Code(t) => t.len(),
        Event::Start(Tag::Link { dest_url, title, .. } | Tag::Image { dest_url, title, .. }) => {
            dest_url.len() + title.len()
        }
        Event::Start(Tag::CodeBlock(pulldown_cmark::CodeBlockKind::Fenced(info))) => info.len(),
        _ => 0,
    }
}

/// The parser's events with raw HTML dropped, nesting flattened below [`MAX_DEPTH`], and the
/// output cut at [`MAX_OUTPUT`] (open elements are closed, so the HTML stays well formed).
pub fn bounded_events(markdown: &str) -> (Vec<Event<'_>>, Bounds) {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut out = Vec::new();
    let mut bounds = Bounds::default();
    // For every open element: whether its start tag was emitted (and so its end tag must be).
    let mut open: Vec<Option<Tag<'_>>> = Vec::new();
    let mut emitted_depth = 0;
    let mut budget = MAX_OUTPUT;
    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Html(_) | Event::InlineHtml(_) => {
                bounds.dropped_html += 1;
                continue;
            }
            Event::Start(tag) => {
                if emitted_depth >= MAX_DEPTH {
                    bounds.flattened += 1;
                    open.push(None);
                    continue;
                }
                let event = Event::Start(tag.clone());
                let c = cost(&event);
                if c > budget {
                    bounds.truncated = true;
                    break;
                }
                budget -= c;
                emitted_depth += 1;
                open.push(Some(tag));
                out.push(event);
            }
            Event::End(end) => {
                if let Some(Some(_)) = open.pop() {
                    emitted_depth -= 1;
                    budget = budget.saturating_sub(16);
                    out.push(Event::End(end));
                }
            }
            other => {
                let c = cost(&other);
                if c > budget {
                    bounds.truncated = true;
                    break;
                }
                budget -= c;
                out.push(other);
            }
        }
    }
    if bounds.truncated {
        // Close what is open, innermost first.
        while let Some(tag) = open.pop() {
            if let Some(tag) = tag {
                out.push(Event::End(tag.to_end()));
            }
        }
        out.push(Event::Start(Tag::Paragraph));
        out.push(Event::Text("… (the rest of this description is not shown: it renders too large)".into()));
        out.push(Event::End(pulldown_cmark::TagEnd::Paragraph));
    }
    (out, bounds)
}

/// The description as sanitized HTML. CPU-bound (milliseconds for the largest allowed text):
/// call it on the blocking pool.
pub fn render(markdown: &str) -> Markup {
    let (events, _) = bounded_events(markdown);
    let mut html = String::with_capacity(markdown.len() * 3 / 2);
    push_html(&mut html, events.into_iter());
    let clean = ammonia::Builder::default().link_rel(Some("noopener noreferrer nofollow")).clean(&html).to_string();
    PreEscaped(clean)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::registry::MAX_DESCRIPTION_CHARS;

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
        for bad in ["<script", "onerror", "javascript:", "alert(1)</script", "<img"] {
            assert!(!lower.contains(bad), "{bad} in {out}");
        }
    }

    #[test]
    fn tables_lists_and_code_still_render() {
        let out = render(
            "| version | rows |\n|---|---|\n| v1 | 150 |\n\n- a\n  - b\n    - c\n\n> quoted\n\n```python\nx = 1\n```\n",
        )
        .into_string();
        for want in ["<table>", "<td>150</td>", "<li>c</li>", "<blockquote>", "<pre><code>x = 1"] {
            assert!(out.contains(want), "{want} missing in {out}");
        }
    }

    #[test]
    fn deep_nesting_is_flattened_and_keeps_its_text() {
        let text = format!("{}deep text", "> ".repeat(2_000));
        let (events, bounds) = bounded_events(&text);
        assert!(bounds.flattened > 1_900, "{bounds:?}");
        let starts = events.iter().filter(|e| matches!(e, Event::Start(_))).count();
        assert!(starts <= MAX_DEPTH, "{starts} elements emitted");
        let out = render(&text).into_string();
        assert!(out.contains("deep text"), "{out}");
        assert_eq!(out.matches("<blockquote>").count(), out.matches("</blockquote>").count());
    }

    #[test]
    fn output_is_cut_when_a_small_text_would_render_huge() {
        // A header of 1,250 columns and 830 one-cell rows: the parser pads every row, so 7,500
        // characters would be 2.4 MB of HTML.
        let text = "|a".repeat(1_250) + "\n" + &"|-".repeat(1_250) + "\n" + &"|x\n".repeat(830);
        let (_, bounds) = bounded_events(&text);
        assert!(bounds.truncated, "{bounds:?}");
        let out = render(&text).into_string();
        assert!(out.len() < 2 * MAX_OUTPUT, "{} bytes", out.len());
        assert!(out.contains("not shown"), "the cut is said");
        assert_eq!(out.matches("<table>").count(), out.matches("</table>").count());

        // Reference links are expanded within pulldown-cmark's own limit.
        let url = format!("https://e.example/{}", "a".repeat(2_400));
        let text = format!("[r]: {url}\n\n{}", "[r]".repeat(800));
        assert!(render(&text).into_string().len() < 2 * MAX_OUTPUT);
    }

    /// The adversarial shapes of issue 10, each at the largest size a description may have
    /// (and some far beyond it): every one renders in bounded time. Debug builds are slow and
    /// this machine is shared, so the bound is generous; the worst time is printed.
    #[test]
    fn adversarial_descriptions_render_fast() {
        let n = MAX_DESCRIPTION_CHARS;
        let cases: Vec<(&str, String)> = vec![
            ("nested >", ">".repeat(n)),
            ("nested > x6", ">".repeat(6 * n)),
            ("nested '> '", "> ".repeat(n / 2)),
            ("nested lists", (0..70).map(|i| format!("{}- x\n", "  ".repeat(i))).collect()),
            ("emphasis run", "*a".repeat(n / 2)),
            ("emphasis open", "**".repeat(n / 2) + "a"),
            ("underscores", "_a ".repeat(n / 3)),
            ("brackets", "[".repeat(n)),
            ("link openers", "[a](".repeat(n / 4)),
            ("backticks", (1..60).map(|i| "`".repeat(i) + "a").collect::<String>()),
            ("raw html nesting", "<div>".repeat(n / 5)),
            ("raw inline html", "<b>".repeat(n / 3)),
            (
                "reference table",
                (0..n / 24).map(|i| format!("[{i}]: /u\n")).collect::<String>()
                    + &(0..n / 24).map(|i| format!("[{i}] ")).collect::<String>(),
            ),
            ("wide table", "|a".repeat(n / 4) + "\n" + &"|-".repeat(n / 4) + "\n" + &"|x\n".repeat(n / 6)),
            ("tall table", "|a|b\n|-|-\n".to_string() + &"|x\n".repeat(n / 3)),
        ];
        let mut worst = (Duration::ZERO, "");
        for (label, text) in &cases {
            let started = Instant::now();
            let out = render(text).into_string();
            let took = started.elapsed();
            assert!(out.len() <= 4 * MAX_OUTPUT, "{label}: {} bytes of HTML", out.len());
            if took > worst.0 {
                worst = (took, label);
            }
        }
        eprintln!("worst description render: {:?} ({})", worst.0, worst.1);
        assert!(worst.0 < Duration::from_secs(2), "{} took {:?}", worst.1, worst.0);
    }
}
