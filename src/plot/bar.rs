//! Grouped bar charts: one group of bars per category, one bar per series (e.g. model stage);
//! many or long category names turn the bars sideways, names down the left.

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;

use super::frame::{Axes, Canvas, DrawResult, Frame, frame_setters};
use super::{HEADROOM, Svg, series_color};
use crate::error::Result;

/// Share of each category's width filled by its bars.
const GROUP_WIDTH: f64 = 0.8;

/// More categories than this, or a longer name than [`LONG_NAME`], and the bars are drawn
/// sideways: names then read horizontally instead of overprinting under narrow groups.
const MAX_UPRIGHT: usize = 8;
/// See [`MAX_UPRIGHT`].
const LONG_NAME: usize = 14;

/// A grouped bar chart: categories along x, one coloured bar per series in each category.
#[derive(Debug, Clone)]
pub struct BarChart {
    frame: Frame,
    categories: Vec<String>,
    series: Vec<(String, Vec<f64>)>,
    horizontal: Option<bool>,
}

impl BarChart {
    /// An empty chart with a title.
    pub fn new(title: impl Into<String>) -> Self {
        BarChart {
            frame: Frame::new(title.into()),
            categories: Vec::new(),
            series: Vec::new(),
            horizontal: None,
        }
    }

    /// Draws the bars sideways (names down the left) or upright; by default sideways when
    /// there are more than eight categories or a name longer than fourteen characters.
    pub fn horizontal(mut self, horizontal: bool) -> Self {
        self.horizontal = Some(horizontal);
        self
    }

    /// Whether the bars are drawn sideways.
    fn is_horizontal(&self) -> bool {
        self.horizontal.unwrap_or_else(|| {
            self.categories.len() > MAX_UPRIGHT
                || self
                    .categories
                    .iter()
                    .any(|c| c.chars().count() > LONG_NAME)
        })
    }

    frame_setters!();

    /// Sets the categories (groups along the x axis), in display order.
    pub fn categories<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.categories = names.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a series: one value per category, in the same order.
    pub fn series(
        mut self,
        name: impl Into<String>,
        values: impl IntoIterator<Item = f64>,
    ) -> Self {
        self.series
            .push((name.into(), values.into_iter().collect()));
        self
    }

    /// Renders the chart to SVG.
    pub fn render(&self) -> Result<Svg> {
        let n = self.categories.len();
        if n == 0 || self.series.is_empty() {
            return Err(self
                .frame
                .invalid("needs at least one category and one series"));
        }
        for (name, values) in &self.series {
            if values.len() != n {
                return Err(self.frame.invalid(format!(
                    "series {name:?} has {} values for {n} categories",
                    values.len()
                )));
            }
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(self.frame.invalid(format!("series {name:?} holds {v}")));
            }
        }
        let values = || self.series.iter().flat_map(|(_, v)| v.iter().copied());
        if values().all(|v| v == 0.0) {
            let what = self.frame.y_label.trim();
            let what = if what.is_empty() { "value" } else { what };
            return Ok(self.frame.statement(&format!(
                "Every {what} is 0 ({} series × {n} categories): nothing to compare yet.",
                self.series.len()
            )));
        }
        let lo = values().fold(0.0, f64::min);
        let hi = values().fold(0.0, f64::max);
        let span = if hi - lo > 0.0 { hi - lo } else { 1.0 };
        let v0 = if lo < 0.0 { lo - 0.08 * span } else { 0.0 };
        let v1 = hi + HEADROOM * span;
        let width = GROUP_WIDTH / self.series.len() as f64;
        // Bar j of category i: its offset along the category axis.
        let offset =
            move |i: usize, j: usize| i as f64 + (1.0 - GROUP_WIDTH) / 2.0 + j as f64 * width;
        if !self.is_horizontal() {
            let axis = CategoryAxis(&self.categories);
            return self.frame.render(axis, v0..v1, Axes::CategoriesX, |chart| {
                self.draw(chart, |i, j, v| {
                    let left = offset(i, j);
                    [(left, 0.0), (left + width * 0.92, v)]
                })
            });
        }
        // Sideways: the first category at the top, so the y axis runs through them reversed.
        let reversed: Vec<String> = self.categories.iter().rev().cloned().collect();
        let longest = self
            .categories
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0);
        let label_width = (16 + 8 * longest).clamp(64, 300) as u32;
        let mut frame = self.frame.clone();
        if frame.size == super::DEFAULT_SIZE {
            let rows = (n * self.series.len().max(1)) as u32;
            frame.size.1 = (120 + 14 * rows + 10 * n as u32).max(super::DEFAULT_SIZE.1);
        }
        let axis = CategoryAxis(&reversed);
        frame.render(v0..v1, axis, Axes::CategoriesY { label_width }, |chart| {
            self.draw(chart, |i, j, v| {
                // Category i sits at n - 1 - i on the reversed axis; series read top-down.
                let top = offset(n - 1 - i, 0) + GROUP_WIDTH - j as f64 * width;
                [(0.0, top), (v, top - width * 0.92)]
            })
        })
    }

    /// Draws every series' bars, `corners(category, series, value)` placing each, with a
    /// legend entry per series.
    fn draw<X, Y>(
        &self,
        chart: &mut Canvas<'_, X, Y>,
        corners: impl Fn(usize, usize, f64) -> [(f64, f64); 2],
    ) -> DrawResult
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        for (j, (name, values)) in self.series.iter().enumerate() {
            let c = series_color(name, j);
            let corners = &corners;
            let bars = values
                .iter()
                .enumerate()
                .map(move |(i, v)| Rectangle::new(corners(i, j, *v), c.filled()));
            chart
                .draw_series(bars)?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        }
        Ok(())
    }
}

/// The x axis of a bar chart: category `i` spans `[i, i + 1)`, labelled at its centre.
struct CategoryAxis<'a>(&'a [String]);

impl Ranged for CategoryAxis<'_> {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (value / self.0.len() as f64 * span).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        (0..self.0.len()).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0.len() as f64
    }
}

impl ValueFormatter<f64> for CategoryAxis<'_> {
    fn format(value: &f64) -> String {
        value.to_string()
    }

    fn format_ext(&self, value: &f64) -> String {
        self.0
            .get(value.floor() as usize)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::tests::{assert_texts, assert_valid_svg};

    #[test]
    fn renders_categories_series_and_one_bar_per_value() {
        let chart = BarChart::new("Scores by task type")
            .categories(["SELECT", "INSERT", "UPDATE"])
            .series("base", [0.1, 0.0, 0.05])
            .series("sft", [0.3, 0.2, 0.25])
            .y_label("accuracy")
            .x_label("task type");
        let svg = chart.render().unwrap();
        assert_valid_svg(svg.as_str());
        assert_texts(
            svg.as_str(),
            &[
                "Scores by task type",
                "SELECT",
                "INSERT",
                "UPDATE",
                "base",
                "sft",
                "accuracy",
            ],
        );
        // 6 bars + 2 legend swatches (+ the background and legend box).
        assert!(svg.as_str().matches("<rect").count() >= 8);
    }

    #[test]
    fn many_or_long_categories_turn_the_bars_sideways() {
        let names: Vec<String> = (0..22).map(|i| format!("db/kind-{i}")).collect();
        let chart = BarChart::new("records per source / kind")
            .categories(names.clone())
            .series("records", (0..22).map(|i| i as f64 + 1.0));
        assert!(chart.is_horizontal());
        let svg = chart.render().unwrap();
        assert_valid_svg(svg.as_str());
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_texts(svg.as_str(), &refs);
        // Tall enough for 22 rows of bars, and each name once.
        assert!(
            svg.as_str().contains("height=\"648\""),
            "{:.200}",
            svg.as_str()
        );
        let texts = crate::plot::tests::texts(svg.as_str());
        assert_eq!(texts.iter().filter(|t| *t == "db/kind-7").count(), 1);
        let long = BarChart::new("s")
            .categories(["a name longer than fourteen", "b"])
            .series("x", [1.0, 2.0]);
        assert!(long.is_horizontal());
        assert!(!long.clone().horizontal(false).is_horizontal());
        let upright = BarChart::new("s")
            .categories(["a", "b"])
            .series("x", [1.0, 2.0]);
        assert!(!upright.is_horizontal());
    }

    #[test]
    fn all_zero_data_is_said_in_a_line_not_drawn_as_an_empty_frame() {
        let svg = BarChart::new("quick score: solved per task kind (%)")
            .categories(["a", "b", "c"])
            .series("base", [0.0; 3])
            .series("sft", [0.0; 3])
            .y_label("solved (%)")
            .render()
            .unwrap();
        assert_valid_svg(svg.as_str());
        assert_texts(
            svg.as_str(),
            &[
                "quick score: solved per task kind (%)",
                "Every solved (%) is 0 (2 series × 3 categories): nothing to compare yet.",
            ],
        );
        // One line high, not a 400-pixel empty frame.
        assert!(svg.as_str().contains("height=\"78\""));
    }

    #[test]
    fn negative_values_render() {
        let svg = BarChart::new("Rewards")
            .categories(["a", "b"])
            .series("r", [-0.5, 1.0])
            .render()
            .unwrap();
        assert_valid_svg(svg.as_str());
    }

    #[test]
    fn mismatched_series_is_an_error() {
        let err = BarChart::new("Scores")
            .categories(["a", "b"])
            .series("s", [1.0])
            .render()
            .unwrap_err();
        assert!(
            err.to_string().contains("has 1 values for 2 categories"),
            "{err}"
        );
    }
}
