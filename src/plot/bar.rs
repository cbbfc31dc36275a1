//! Grouped bar charts: one group of bars per category, one bar per series (e.g. model stage).

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;

use super::frame::{Frame, XAxis, frame_setters};
use super::{HEADROOM, Svg, color};
use crate::error::Result;

/// Share of each category's width filled by its bars.
const GROUP_WIDTH: f64 = 0.8;

/// A grouped bar chart: categories along x, one coloured bar per series in each category.
#[derive(Debug, Clone)]
pub struct BarChart {
    frame: Frame,
    categories: Vec<String>,
    series: Vec<(String, Vec<f64>)>,
}

impl BarChart {
    /// An empty chart with a title.
    pub fn new(title: impl Into<String>) -> Self {
        BarChart {
            frame: Frame::new(title.into()),
            categories: Vec::new(),
            series: Vec::new(),
        }
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
        let lo = values().fold(0.0, f64::min);
        let hi = values().fold(0.0, f64::max);
        let span = if hi - lo > 0.0 { hi - lo } else { 1.0 };
        let y0 = if lo < 0.0 { lo - 0.08 * span } else { 0.0 };
        let y1 = hi + HEADROOM * span;
        let width = GROUP_WIDTH / self.series.len() as f64;
        let axis = CategoryAxis(&self.categories);
        self.frame.render(axis, y0..y1, XAxis::Categories, |chart| {
            for (j, (name, values)) in self.series.iter().enumerate() {
                let bars = values.iter().enumerate().map(move |(i, v)| {
                    let left = i as f64 + (1.0 - GROUP_WIDTH) / 2.0 + j as f64 * width;
                    Rectangle::new([(left, 0.0), (left + width * 0.92, *v)], color(j).filled())
                });
                chart
                    .draw_series(bars)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color(j).filled())
                    });
            }
            Ok(())
        })
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
