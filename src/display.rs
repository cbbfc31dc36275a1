//! Rich display in notebooks: values that evcxr shows as HTML or SVG instead of `Debug` text.
//!
//! evcxr calls `.evcxr_display()` on a cell's last value when such a method resolves (a trait
//! method in scope counts), and reads what it prints between `EVCXR_BEGIN_CONTENT <mime>` and
//! `EVCXR_END_CONTENT`. Everything the crate shows implements [`Show`]; the prelude brings the
//! trait into scope, so `chart.render()?` as a cell's last line draws the chart.

/// A value with one or more rich representations, shown inline by the evcxr Jupyter kernel.
pub trait Show {
    /// The representations as (MIME type, content) pairs, richest first; the last one should
    /// be `text/plain` so text-only front ends still show something useful.
    fn mime_bundle(&self) -> Vec<(&'static str, String)>;

    /// Prints the bundle in evcxr's display protocol (called by evcxr on a cell's last value).
    fn evcxr_display(&self) {
        let mut out = String::new();
        for (mime, content) in self.mime_bundle() {
            out.push_str("EVCXR_BEGIN_CONTENT ");
            out.push_str(mime);
            out.push('\n');
            out.push_str(content.trim_end_matches('\n'));
            out.push_str("\nEVCXR_END_CONTENT\n");
        }
        print!("{out}");
    }
}

/// Escapes text for inclusion in HTML or SVG.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape_html(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
