//! Line charts: one or more series of (x, y) points, e.g. loss against step.

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::frame::{Axes, Canvas, DrawResult, Frame, frame_setters};
use super::{HEADROOM, Svg, padded, series_color};
use crate::error::Result;

/// Series with at most this many points get point markers.
const MARKER_MAX_POINTS: usize = 40;

/// A line chart with several named series and an optional logarithmic y axis.
#[derive(Debug, Clone)]
pub struct LineChart {
    frame: Frame,
    log_y: bool,
    integer_x: bool,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

impl LineChart {
    /// An empty chart with a title.
    pub fn new(title: impl Into<String>) -> Self {
        LineChart {
            frame: Frame::new(title.into()),
            log_y: false,
            integer_x: false,
            series: Vec::new(),
        }
    }

    frame_setters!();

    /// Uses a logarithmic y axis (every y must then be positive).
    pub fn log_y(mut self, log: bool) -> Self {
        self.log_y = log;
        self
    }

    /// Labels x at whole numbers only (steps, counts), never at 1.5.
    pub fn integer_x(mut self, integer: bool) -> Self {
        self.integer_x = integer;
        self
    }

    /// Adds a named series; non-finite points are skipped, and a series left with no points
    /// (an eval curve of a run that never evaluated) is left out, legend entry included.
    pub fn series(
        mut self,
        name: impl Into<String>,
        points: impl IntoIterator<Item = (f64, f64)>,
    ) -> Self {
        let points: Vec<(f64, f64)> = points
            .into_iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if !points.is_empty() {
            self.series.push((name.into(), points));
        }
        self
    }

    /// Renders the chart to SVG.
    pub fn render(&self) -> Result<Svg> {
        let all = || self.series.iter().flat_map(|(_, p)| p.iter());
        if all().next().is_none() {
            return Err(self.frame.invalid("no data points in any series"));
        }
        if self.log_y
            && let Some((_, y)) = all().find(|(_, y)| *y <= 0.0)
        {
            return Err(self
                .frame
                .invalid(format!("log scale needs positive values, found {y}")));
        }
        let min = |pick: fn(&(f64, f64)) -> f64| all().map(pick).fold(f64::INFINITY, f64::min);
        let max = |pick: fn(&(f64, f64)) -> f64| all().map(pick).fold(f64::NEG_INFINITY, f64::max);
        let (x0, x1) = padded(min(|p| p.0), max(|p| p.0), 0.02, 0.02, false);
        let (y0, y1) = padded(min(|p| p.1), max(|p| p.1), 0.05, HEADROOM, self.log_y);
        let axes = if self.integer_x {
            Axes::IntegerX
        } else {
            Axes::Numeric
        };
        if self.log_y {
            let y = (y0..y1).log_scale();
            self.frame.render(x0..x1, y, axes, |c| self.draw(c))
        } else {
            self.frame.render(x0..x1, y0..y1, axes, |c| self.draw(c))
        }
    }

    /// Draws the series on a chart of either y scale.
    fn draw<Y>(&self, chart: &mut Canvas<'_, RangedCoordf64, Y>) -> DrawResult
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        for (i, (name, points)) in self.series.iter().enumerate() {
            // Sparse series get a marker on each point, so single measurements stay visible.
            let marker = if points.len() <= MARKER_MAX_POINTS {
                3
            } else {
                0
            };
            let c = series_color(name, i);
            let line = LineSeries::new(points.iter().copied(), c.stroke_width(2));
            chart
                .draw_series(line.point_size(marker))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::tests::{assert_texts, assert_valid_svg};

    fn losses() -> LineChart {
        LineChart::new("Training loss")
            .x_label("step")
            .y_label("loss")
            .series("train", (0..20).map(|s| (s as f64, 3.0 / (1.0 + s as f64))))
            .series(
                "eval",
                (0..20)
                    .step_by(5)
                    .map(|s| (s as f64, 3.2 / (1.0 + s as f64))),
            )
    }

    #[test]
    fn renders_title_axes_and_series_names() {
        let svg = losses().render().unwrap();
        assert_valid_svg(svg.as_str());
        assert_texts(
            svg.as_str(),
            &["Training loss", "step", "loss", "train", "eval"],
        );
        assert!(svg.as_str().matches("<polyline").count() >= 2);
    }

    #[test]
    fn integer_x_labels_whole_steps_only() {
        // y in the hundreds, so every fractional label would be an x label.
        let points = [(1.0, 200.0), (2.0, 150.0), (3.0, 120.0)];
        let fractional = |chart: LineChart| {
            let svg = chart.render().unwrap();
            let texts = crate::plot::tests::texts(svg.as_str());
            texts
                .into_iter()
                .filter(|t| t.contains('.'))
                .collect::<Vec<_>>()
        };
        let whole = LineChart::new("loss")
            .series("train", points)
            .integer_x(true);
        assert_texts(whole.render().unwrap().as_str(), &["1", "2", "3"]);
        assert_eq!(fractional(whole), Vec::<String>::new());
        // Without it the same points get labels between the steps.
        let plain = LineChart::new("loss").series("train", points);
        assert!(!fractional(plain).is_empty());
    }

    #[test]
    fn a_series_without_points_has_no_legend_entry() {
        let svg = LineChart::new("Training loss")
            .series("train", [(0.0, 2.0), (1.0, 1.5)])
            .series("held-out", [])
            .series("nan only", [(2.0, f64::NAN)])
            .render()
            .unwrap();
        assert_valid_svg(svg.as_str());
        assert_texts(svg.as_str(), &["train"]);
        assert!(!svg.as_str().contains("held-out"), "{}", svg.as_str());
        assert!(!svg.as_str().contains("nan only"));
    }

    #[test]
    fn log_scale_renders_and_rejects_non_positive_values() {
        let svg = losses().log_y(true).render().unwrap();
        assert_valid_svg(svg.as_str());
        let err = LineChart::new("bad")
            .log_y(true)
            .series("s", [(0.0, 1.0), (1.0, 0.0)])
            .render();
        assert!(err.unwrap_err().to_string().contains("positive"));
    }

    #[test]
    fn empty_chart_is_an_error_naming_the_chart() {
        let err = LineChart::new("Empty")
            .series("s", [])
            .render()
            .unwrap_err();
        assert!(err.to_string().contains("Empty"), "{err}");
    }

    #[test]
    fn saves_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("charts/loss.svg");
        let svg = losses().render().unwrap();
        svg.save(&path).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), svg.as_str());
    }
}
