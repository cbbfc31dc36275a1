//! What every chart shares: title, axis labels and size, and the drawing of the frame — background,
//! title, axes, mesh, legend — around the data each chart draws.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::{AXIS_FONT, Svg, TICK_FONT, TITLE_FONT, tick};
use crate::error::{Error, Result};

/// The drawing context a chart draws its series on.
pub(super) type Canvas<'a, X, Y> = ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>;

/// What drawing with plotters may fail with.
pub(super) type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// What the axes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Axes {
    /// Numbers on both axes, with vertical grid lines.
    Numeric,
    /// Numbers on both axes, x labelled at whole numbers only (steps, counts).
    IntegerX,
    /// Category names along x (supplied by the coordinate itself), no vertical grid lines.
    CategoriesX,
    /// Category names down y in a margin `label_width` pixels wide, numbers along x.
    CategoriesY {
        /// Width of the names' margin.
        label_width: u32,
    },
}

/// Title, axis labels and size: the part of a chart that is not data.
#[derive(Debug, Clone)]
pub(super) struct Frame {
    pub(super) title: String,
    pub(super) x_label: String,
    pub(super) y_label: String,
    pub(super) size: (u32, u32),
}

impl Frame {
    /// A frame with a title, no axis labels and the default size.
    pub(super) fn new(title: String) -> Self {
        Frame {
            title,
            x_label: String::new(),
            y_label: String::new(),
            size: super::DEFAULT_SIZE,
        }
    }

    /// A chart error naming this chart.
    pub(super) fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::Plot {
            title: self.title.clone(),
            reason: reason.into(),
        }
    }

    /// Renders to SVG: the frame on coordinates `x` × `y`, with `series` drawing the data.
    pub(super) fn render<X, Y, F>(&self, x: X, y: Y, axes: Axes, series: F) -> Result<Svg>
    where
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
        F: for<'a> FnOnce(&mut Canvas<'a, X::CoordDescType, Y::CoordDescType>) -> DrawResult,
    {
        let fail = |e: &dyn std::fmt::Display| self.invalid(e.to_string());
        let y_labels = match axes {
            Axes::CategoriesY { label_width } => label_width,
            _ => 64,
        };
        let mut content = String::new();
        {
            let root = SVGBackend::with_string(&mut content, self.size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| fail(&e))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, TITLE_FONT)
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(y_labels)
                .build_cartesian_2d(x, y)
                .map_err(|e| fail(&e))?;
            let whole_steps = match axes {
                Axes::IntegerX => {
                    let span = chart.x_range().end - chart.x_range().start;
                    (span.floor() as usize + 1).clamp(2, 10)
                }
                _ => 10,
            };
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .label_style(TICK_FONT)
                .axis_desc_style(AXIS_FONT)
                .light_line_style(WHITE.mix(0.0));
            match axes {
                Axes::Numeric => mesh.x_label_formatter(&tick).y_label_formatter(&tick),
                Axes::IntegerX => mesh
                    .x_labels(whole_steps)
                    .x_label_formatter(&whole_tick)
                    .y_label_formatter(&tick),
                Axes::CategoriesX => mesh.disable_x_mesh().y_label_formatter(&tick),
                Axes::CategoriesY { .. } => mesh.disable_y_mesh().x_label_formatter(&tick),
            };
            mesh.draw().map_err(|e| fail(&e))?;
            series(&mut chart).map_err(|e| fail(&e))?;
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(|e| fail(&e))?;
            root.present().map_err(|e| fail(&e))?;
        }
        Ok(Svg {
            title: self.title.clone(),
            content,
        })
    }

    /// An SVG one line high under the title that says `statement`, in place of a chart with
    /// nothing to show.
    pub(super) fn statement(&self, statement: &str) -> Svg {
        let (width, _) = self.size;
        let escape = |t: &str| {
            t.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let content = format!(
            "<svg width=\"{width}\" height=\"78\" viewBox=\"0 0 {width} 78\" \
             xmlns=\"http://www.w3.org/2000/svg\">\n\
             <rect x=\"0\" y=\"0\" width=\"{width}\" height=\"78\" fill=\"#FFFFFF\"/>\n\
             <text x=\"{x}\" y=\"28\" text-anchor=\"middle\" font-family=\"sans-serif\" \
             font-size=\"{title}\">{}</text>\n\
             <text x=\"{x}\" y=\"62\" text-anchor=\"middle\" font-family=\"sans-serif\" \
             font-size=\"{body}\" fill=\"#555555\">{}</text>\n</svg>\n",
            escape(&self.title),
            escape(statement),
            x = width / 2,
            title = TITLE_FONT.1,
            body = AXIS_FONT.1,
        );
        Svg {
            title: self.title.clone(),
            content,
        }
    }
}

/// A tick label at whole numbers only: `3`, and nothing between them.
fn whole_tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// The builder methods every chart has, on a struct with a `frame: Frame` field.
macro_rules! frame_setters {
    () => {
        /// Labels the x axis.
        pub fn x_label(mut self, label: impl Into<String>) -> Self {
            self.frame.x_label = label.into();
            self
        }

        /// Labels the y axis.
        pub fn y_label(mut self, label: impl Into<String>) -> Self {
            self.frame.y_label = label.into();
            self
        }

        /// Sets the size in pixels.
        pub fn size(mut self, width: u32, height: u32) -> Self {
            self.frame.size = (width, height);
            self
        }
    };
}
pub(super) use frame_setters;
