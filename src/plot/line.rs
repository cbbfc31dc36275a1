//! Line charts: one or more series of (x, y) points, e.g. loss against step.

use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use super::{
    AXIS_FONT, DEFAULT_SIZE, HEADROOM, Svg, TICK_FONT, TITLE_FONT, color, invalid, padded,
    plot_err, tick,
};
use crate::error::Result;

/// Series with at most this many points get point markers.
const MARKER_MAX_POINTS: usize = 40;

/// A line chart with several named series and an optional logarithmic y axis.
#[derive(Debug, Clone)]
pub struct LineChart {
    title: String,
    x_label: String,
    y_label: String,
    log_y: bool,
    size: (u32, u32),
    series: Vec<(String, Vec<(f64, f64)>)>,
}

impl LineChart {
    /// An empty chart with a title.
    pub fn new(title: impl Into<String>) -> Self {
        LineChart {
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            log_y: false,
            size: DEFAULT_SIZE,
            series: Vec::new(),
        }
    }

    /// Labels the x axis.
    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    /// Labels the y axis.
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// Uses a logarithmic y axis (every y must then be positive).
    pub fn log_y(mut self, log: bool) -> Self {
        self.log_y = log;
        self
    }

    /// Sets the size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Adds a named series; non-finite points are skipped.
    pub fn series(
        mut self,
        name: impl Into<String>,
        points: impl IntoIterator<Item = (f64, f64)>,
    ) -> Self {
        let points = points
            .into_iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        self.series.push((name.into(), points));
        self
    }

    /// Renders the chart to SVG.
    pub fn render(&self) -> Result<Svg> {
        let all = || self.series.iter().flat_map(|(_, p)| p.iter());
        if all().next().is_none() {
            return Err(invalid(&self.title, "no data points in any series"));
        }
        if self.log_y
            && let Some((_, y)) = all().find(|(_, y)| *y <= 0.0)
        {
            return Err(invalid(
                &self.title,
                format!("log scale needs positive values, found {y}"),
            ));
        }
        let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| {
            all().map(pick).fold(init, f)
        };
        let (x0, x1) = (
            fold(f64::min, f64::INFINITY, |p| p.0),
            fold(f64::max, f64::NEG_INFINITY, |p| p.0),
        );
        let (x0, x1) = padded(x0, x1, 0.02, 0.02, false);
        let (y0, y1) = padded(
            fold(f64::min, f64::INFINITY, |p| p.1),
            fold(f64::max, f64::NEG_INFINITY, |p| p.1),
            0.05,
            HEADROOM,
            self.log_y,
        );

        let mut content = String::new();
        {
            let err = plot_err(&self.title);
            let root = SVGBackend::with_string(&mut content, self.size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(Box::new(e)))?;
            let mut builder = ChartBuilder::on(&root);
            builder
                .caption(&self.title, TITLE_FONT)
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(64);
            // The two scales are different coordinate types; `draw` is generic over both.
            if self.log_y {
                let chart = builder
                    .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                    .map_err(|e| err(Box::new(e)))?;
                self.draw(chart).map_err(&err)?;
            } else {
                let chart = builder
                    .build_cartesian_2d(x0..x1, y0..y1)
                    .map_err(|e| err(Box::new(e)))?;
                self.draw(chart).map_err(&err)?;
            }
            root.present().map_err(|e| err(Box::new(e)))?;
        }
        Ok(Svg {
            title: self.title.clone(),
            content,
        })
    }

    /// Draws mesh, series and legend on a chart of either y scale.
    fn draw<'a, Y>(
        &self,
        mut chart: ChartContext<
            'a,
            SVGBackend<'a>,
            Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
        >,
    ) -> std::result::Result<(), Box<dyn std::error::Error + 'a>>
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .label_style(TICK_FONT)
            .axis_desc_style(AXIS_FONT)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, (name, points)) in self.series.iter().enumerate() {
            let style = color(i).stroke_width(2);
            // Sparse series get a marker on each point, so single measurements stay visible.
            let marker = if points.len() <= MARKER_MAX_POINTS {
                3
            } else {
                0
            };
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style).point_size(marker))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color(i).stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()?;
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
