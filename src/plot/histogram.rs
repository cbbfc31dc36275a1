//! Histograms: distributions of values (token lengths, rewards), several series overlaid.

use plotters::prelude::*;

use super::frame::{Axes, Frame, frame_setters};
use super::{HEADROOM, Svg, color, padded};
use crate::error::Result;

/// A histogram with shared bins over one or more overlaid series.
#[derive(Debug, Clone)]
pub struct Histogram {
    frame: Frame,
    bins: usize,
    series: Vec<(String, Vec<f64>)>,
}

impl Histogram {
    /// An empty histogram with a title, 20 bins and the y axis labelled "count".
    pub fn new(title: impl Into<String>) -> Self {
        let mut frame = Frame::new(title.into());
        frame.y_label = "count".to_string();
        Histogram {
            frame,
            bins: 20,
            series: Vec::new(),
        }
    }

    frame_setters!();

    /// Sets the number of equal-width bins.
    pub fn bins(mut self, bins: usize) -> Self {
        self.bins = bins;
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
            return Err(self.frame.invalid("needs at least one bin"));
        }
        let all = || self.series.iter().flat_map(|(_, v)| v.iter().copied());
        if all().next().is_none() {
            return Err(self.frame.invalid("no values in any series"));
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
        let most = counts.iter().flatten().copied().max().unwrap_or(0).max(1);
        let top = most as f64 * (1.0 + HEADROOM);
        let alpha = if self.series.len() > 1 { 0.55 } else { 0.85 };
        let x = edges[0]..edges[self.bins];
        self.frame.render(x, 0.0..top, Axes::Numeric, |chart| {
            for (j, ((name, _), c)) in self.series.iter().zip(&counts).enumerate() {
                let edges = &edges;
                let bars = c.iter().enumerate().map(move |(i, n)| {
                    let corners = [(edges[i], 0.0), (edges[i + 1], *n as f64)];
                    Rectangle::new(corners, color(j).mix(alpha).filled())
                });
                chart
                    .draw_series(bars)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        let swatch = color(j).mix(alpha).filled();
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], swatch)
                    });
            }
            Ok(())
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
