//! Charts rendered with plotters to SVG: shown inline in notebooks, saved as files elsewhere.
//!
//! Three kinds cover the project's reports: [`LineChart`] (metrics against steps, several series,
//! optional log scale), [`BarChart`] (grouped bars: scores by task type and model stage) and
//! [`Histogram`] (distributions such as token lengths). Each builder's `render()` returns an
//! [`Svg`], which a notebook shows when it is a cell's last value and which `save()` writes to a
//! file. Text is written as SVG `<text>`, so no system font is needed to render.

mod bar;
mod frame;
mod histogram;
mod line;

use std::path::Path;

pub use bar::BarChart;
pub use histogram::Histogram;
pub use line::LineChart;

use plotters::style::RGBColor;

use crate::display::Show;
use crate::error::Result;

/// Default chart size in pixels.
const DEFAULT_SIZE: (u32, u32) = (720, 400);

/// A qualitative palette (Tableau 10): series keep the same colour across charts.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Font of tick labels.
const TICK_FONT: (&str, u32) = ("sans-serif", 14);
/// Font of axis descriptions.
const AXIS_FONT: (&str, u32) = ("sans-serif", 15);
/// Font of the title.
const TITLE_FONT: (&str, u32) = ("sans-serif", 24);
/// Share of the value range added above the data, room for the legend.
const HEADROOM: f64 = 0.22;

/// A tick label without float noise: `100`, `0.25`, and `2.50e-5` for very small or large values.
fn tick(v: &f64) -> String {
    let v = *v;
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() >= 1e5 || v.abs() < 1e-3 {
        return format!("{v:.2e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The colour of the `i`-th series.
fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Each training stage's colour, the same in every chart: base grey, then SFT blue, DPO
/// orange, RFT green, GRPO purple.
const STAGE_COLORS: [(&str, RGBColor); 5] = [
    ("base", PALETTE[7]),
    ("sft", PALETTE[0]),
    ("dpo", PALETTE[1]),
    ("rft", PALETTE[2]),
    ("grpo", PALETTE[4]),
];

/// The colour of series `name`, the `i`-th of its chart: its stage's colour when the name is a
/// stage (`sft`, `DPO round 2`, `grpo-quick`: the first word decides), else the `i`-th of
/// the palette.
fn series_color(name: &str, i: usize) -> RGBColor {
    let word = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    STAGE_COLORS
        .iter()
        .find(|(stage, _)| *stage == word)
        .map_or_else(|| color(i), |(_, c)| *c)
}

/// A rendered chart: an SVG document with its title.
#[derive(Debug, Clone, PartialEq)]
pub struct Svg {
    title: String,
    content: String,
}

impl Svg {
    /// The chart's title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The SVG document.
    pub fn as_str(&self) -> &str {
        &self.content
    }

    /// Writes the SVG to `path` atomically (parents are created).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path.as_ref(), self.content.as_bytes())
    }
}

impl Show for Svg {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        vec![
            ("image/svg+xml", self.content.clone()),
            ("text/plain", format!("[chart: {}]", self.title)),
        ]
    }
}

/// The range `[lo, hi]` widened by `below` and `above` (shares of its span) so that data never
/// touches the frame; on a log scale the shares apply to the decades spanned.
fn padded(lo: f64, hi: f64, below: f64, above: f64, log: bool) -> (f64, f64) {
    if log {
        let decades = (hi / lo).log10().max(1.0);
        return (
            lo / 10f64.powf(decades * below),
            hi * 10f64.powf(decades * above),
        );
    }
    let span = if (hi - lo).abs() < f64::EPSILON {
        if lo == 0.0 { 1.0 } else { lo.abs() }
    } else {
        hi - lo
    };
    (lo - span * below, hi + span * above)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::tick;

    #[test]
    fn stages_keep_their_colour_wherever_they_appear() {
        use super::{PALETTE, series_color};
        assert_eq!(series_color("sft", 3), PALETTE[0]);
        assert_eq!(series_color("SFT", 0), series_color("sft-quick", 5));
        assert_eq!(series_color("grpo round 2", 0), PALETTE[4]);
        assert_eq!(series_color("base", 0), PALETTE[7]);
        // Anything else takes the palette in order.
        assert_eq!(series_color("train", 1), PALETTE[1]);
        assert_eq!(series_color("baseline", 2), PALETTE[2]);
    }

    #[test]
    fn ticks_have_no_float_noise() {
        assert_eq!(tick(&100.0), "100");
        assert_eq!(tick(&0.25), "0.25");
        assert_eq!(tick(&-1.5), "-1.5");
        assert_eq!(tick(&0.0), "0");
        assert_eq!(tick(&2.5e-5), "2.50e-5");
        assert_eq!(tick(&1.0e6), "1.00e6");
    }

    /// The contents of every `<text>` element, trimmed.
    pub(crate) fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim().to_string())
            })
            .collect()
    }

    /// Asserts that each of `wanted` is the content of some `<text>` element.
    pub(crate) fn assert_texts(svg: &str, wanted: &[&str]) {
        let found = texts(svg);
        for w in wanted {
            assert!(found.iter().any(|t| t == w), "no text {w:?} in {found:?}");
        }
    }

    /// Checks that `svg` is a well-formed SVG document: one root, balanced tags.
    pub(crate) fn assert_valid_svg(svg: &str) {
        let body = svg.trim();
        assert!(
            body.starts_with("<svg"),
            "not an SVG document: {:.80}",
            body
        );
        assert!(body.ends_with("</svg>"), "SVG not closed");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = body;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unterminated tag") + start;
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().expect("closing tag without opening");
                assert_eq!(open, name.trim(), "mismatched tags");
            } else if !tag.ends_with('/') && !tag.starts_with('?') && !tag.starts_with('!') {
                let name = tag.split_whitespace().next().unwrap_or_default();
                stack.push(name.to_string());
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
    }
}
