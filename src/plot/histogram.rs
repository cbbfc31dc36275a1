//! Histograms: distributions of values (token lengths, rewards), several series overlaid.

use plotters::prelude::*;

use super::{
    AXIS_FONT, DEFAULT_SIZE, HEADROOM, Svg, TICK_FONT, TITLE_FONT, color, invalid, padded,
    plot_err, tick,
};
use crate::error::Result;

/// A histogram with shared bins over one or more overlaid series.
#[derive(Debug, Clone)]
pub struct Histogram {
    title: String,
    x_label: String,
    y_label: String,
    bins: usize,
    size: (u32, u32),
    series: Vec<(String, Vec<f64>)>,
}

impl Histogram {
    /// An empty histogram with a title and 20 bins.
    pub fn new(title: impl Into<String>) -> Self {
        Histogram {
            title: title.into(),
            x_label: String::new(),
            y_label: "count".to_string(),
            bins: 20,
            size: DEFAULT_SIZE,
            series: Vec::new(),
        }
    }

    /// Sets the number of equal-width bins.
    pub fn bins(mut self, bins: usize) -> Self {
        self.bins = bins;
        self
    }

    /// Labels the x axis.
    pub fn x_label(mut self, label: impl Into<String>) -> Self {
        self.x_label = label.into();
        self
    }

    /// Labels the y axis (default "count").
    pub fn y_label(mut self, label: impl Into<String>) -> Self {
        self.y_label = label.into();
        self
    }

    /// Sets the size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Adds a named series of values; non-finite values are skipped.
    pub fn series(
        mut self,
        name: impl Into<String>,
        values: impl IntoIterator<Item = f64>,
    ) -> Self {
        let values = values.into_iter().filter(|v| v.is_finite()).collect();
        self.series.push((name.into(), values));
        self
    }

    /// The bin edges (`bins + 1` values) and each series' counts per bin.
    pub fn counts(&self) -> Result<(Vec<f64>, Vec<Vec<usize>>)> {
        if self.bins == 0 {
            return Err(invalid(&self.title, "needs at least one bin"));
        }
        let all = || self.series.iter().flat_map(|(_, v)| v.iter().copied());
        if all().next().is_none() {
            return Err(invalid(&self.title, "no values in any series"));
        }
        let lo = all().fold(f64::INFINITY, f64::min);
        let hi = all().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            padded(lo, hi, 0.5, 0.5, false)
        };
        let width = (hi - lo) / self.bins as f64;
        let edges = (0..=self.bins).map(|i| lo + i as f64 * width).collect();
        let counts = self
            .series
            .iter()
            .map(|(_, values)| {
                let mut c = vec![0usize; self.bins];
                for v in values {
                    let bin = (((v - lo) / width) as usize).min(self.bins - 1);
                    c[bin] += 1;
                }
                c
            })
            .collect();
        Ok((edges, counts))
    }

    /// Renders the histogram to SVG.
    pub fn render(&self) -> Result<Svg> {
        let (edges, counts) = self.counts()?;
        let top =
            counts.iter().flatten().copied().max().unwrap_or(0).max(1) as f64 * (1.0 + HEADROOM);
        let alpha = if self.series.len() > 1 { 0.55 } else { 0.85 };
        let mut content = String::new();
        {
            let err = plot_err(&self.title);
            let root = SVGBackend::with_string(&mut content, self.size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(Box::new(e)))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, TITLE_FONT)
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(edges[0]..edges[self.bins], 0.0..top)
                .map_err(|e| err(Box::new(e)))?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .label_style(TICK_FONT)
                .axis_desc_style(AXIS_FONT)
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|e| err(Box::new(e)))?;
            for (j, ((name, _), c)) in self.series.iter().zip(&counts).enumerate() {
                let edges = &edges;
                let bars = c.iter().enumerate().map(move |(i, n)| {
                    Rectangle::new(
                        [(edges[i], 0.0), (edges[i + 1], *n as f64)],
                        color(j).mix(alpha).filled(),
                    )
                });
                chart
                    .draw_series(bars)
                    .map_err(|e| err(Box::new(e)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color(j).mix(alpha).filled())
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(|e| err(Box::new(e)))?;
            root.present().map_err(|e| err(Box::new(e)))?;
        }
        Ok(Svg {
            title: self.title.clone(),
            content,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::tests::{assert_texts, assert_valid_svg};

    #[test]
    fn counts_every_value_once_including_the_maximum() {
        let h = Histogram::new("h")
            .bins(4)
            .series("a", [0.0, 1.0, 2.0, 3.0, 4.0, 4.0]);
        let (edges, counts) = h.counts().unwrap();
        assert_eq!(edges, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(counts, vec![vec![1, 1, 1, 3]]);
    }

    #[test]
    fn renders_title_labels_and_series() {
        let svg = Histogram::new("Token lengths")
            .x_label("tokens")
            .bins(10)
            .series("chosen", (0..200).map(|i| (i % 37) as f64 * 10.0))
            .series("rejected", (0..150).map(|i| (i % 23) as f64 * 14.0))
            .render()
            .unwrap();
        assert_valid_svg(svg.as_str());
        assert_texts(
            svg.as_str(),
            &["Token lengths", "tokens", "count", "chosen", "rejected"],
        );
    }

    #[test]
    fn a_single_repeated_value_still_renders() {
        let h = Histogram::new("same").series("a", [5.0; 10]);
        let (_, counts) = h.counts().unwrap();
        assert_eq!(counts[0].iter().sum::<usize>(), 10);
        assert_valid_svg(h.render().unwrap().as_str());
    }
}
