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

/// How the x axis is labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum XAxis {
    /// Numbers, with vertical grid lines.
    Numeric,
    /// Category names supplied by the coordinate itself, no vertical grid lines.
    Categories,
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
    pub(super) fn render<X, Y, F>(&self, x: X, y: Y, x_axis: XAxis, series: F) -> Result<Svg>
    where
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
        F: for<'a> FnOnce(&mut Canvas<'a, X::CoordDescType, Y::CoordDescType>) -> DrawResult,
    {
        let fail = |e: &dyn std::fmt::Display| self.invalid(e.to_string());
        let mut content = String::new();
        {
            let root = SVGBackend::with_string(&mut content, self.size).into_drawing_area();
            root.fill(&WHITE).map_err(|e| fail(&e))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, TITLE_FONT)
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(x, y)
                .map_err(|e| fail(&e))?;
            let mut mesh = chart.configure_mesh();
            mesh.x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .y_label_formatter(&tick)
                .label_style(TICK_FONT)
                .axis_desc_style(AXIS_FONT)
                .light_line_style(WHITE.mix(0.0));
            match x_axis {
                XAxis::Numeric => mesh.x_label_formatter(&tick),
                XAxis::Categories => mesh.disable_x_mesh(),
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
