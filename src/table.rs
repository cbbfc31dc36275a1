//! Tables shown in notebooks as HTML and on terminals as aligned text.
//!
//! [`Table`] is the crate's own small table (reports, comparisons); polars `DataFrame`s display
//! through the same HTML rendering, so every table in a notebook looks alike.

use std::fmt;

use polars::prelude::DataFrame;

use crate::display::{Show, escape_html};
use crate::error::{Error, Result};

/// Rows beyond this many are elided in HTML output (the count of the rest is shown).
const MAX_HTML_ROWS: usize = 50;

/// A table of text cells with a header row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    title: Option<String>,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with the given column names.
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table {
            title: None,
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// A two-column `setting | value` table from pairs (reports, run settings).
    pub fn settings<K: ToString, V: ToString>(
        title: impl Into<String>,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Table {
            title: Some(title.into()),
            header: vec!["setting".to_string(), "value".to_string()],
            rows: pairs
                .into_iter()
                .map(|(k, v)| vec![k.to_string(), v.to_string()])
                .collect(),
        }
    }

    /// Sets a caption shown above the table.
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Appends a row; it must have one cell per column.
    pub fn push_row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> Result<()> {
        let row: Vec<String> = cells.into_iter().map(|c| c.to_string()).collect();
        if row.len() != self.header.len() {
            return Err(Error::TableShape {
                row: self.rows.len(),
                expected: self.header.len(),
                found: row.len(),
            });
        }
        self.rows.push(row);
        Ok(())
    }

    /// Appends a row, builder style.
    pub fn row<S: ToString>(mut self, cells: impl IntoIterator<Item = S>) -> Result<Self> {
        self.push_row(cells)?;
        Ok(self)
    }

    /// The column names.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The rows, in insertion order.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// The table as GitHub Markdown (its title as a bold line above it; `|` in cells escaped).
    pub fn to_markdown(&self) -> String {
        let line = |cells: &[String]| {
            let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = String::new();
        if let Some(title) = &self.title {
            out.push_str(&format!("**{title}**\n\n"));
        }
        out.push_str(&line(&self.header));
        out.push_str(&line(&vec!["---".to_string(); self.header.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }

    /// The table as an HTML `<table>`.
    pub fn to_html(&self) -> String {
        html_table(
            self.title.as_deref(),
            &self.header,
            self.rows.iter().cloned(),
            self.rows.len(),
        )
    }
}

/// `value` with every number that was an `f32` (widened to 0.05000000074505806 on its way to
/// JSON) back at its shortest form (0.05), as the user wrote it; other values unchanged.
pub fn shortest_floats(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => n
            .as_f64()
            .and_then(|x| serde_json::Number::from_f64(shortest_float(x)))
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.into_iter().map(shortest_floats).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, shortest_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `x` at its shortest if it is exactly an `f32`.
fn shortest_float(x: f64) -> f64 {
    let short = x as f32;
    if f64::from(short) == x {
        format!("{short}").parse().unwrap_or(x)
    } else {
        x
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([self.header[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        if let Some(title) = &self.title {
            writeln!(f, "{title}")?;
        }
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let parts: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            writeln!(f, "{}", parts.join("  ").trim_end())
        };
        line(f, &self.header)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

impl Show for Table {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        vec![
            ("text/html", self.to_html()),
            ("text/plain", self.to_string()),
        ]
    }
}

impl Show for DataFrame {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        let header: Vec<String> = self
            .columns()
            .iter()
            .map(|c| format!("{} ({})", c.name(), c.dtype()))
            .collect();
        let rows = (0..self.height().min(MAX_HTML_ROWS)).map(|i| {
            self.columns()
                .iter()
                .map(|c| match c.get(i) {
                    Ok(v) => v.to_string(),
                    Err(e) => format!("<{e}>"),
                })
                .collect()
        });
        vec![
            ("text/html", html_table(None, &header, rows, self.height())),
            ("text/plain", self.to_string()),
        ]
    }
}

/// Cells longer than this many characters wrap in HTML.
const WRAP_AT: usize = 60;

/// Renders a header and rows as an HTML table; `total_rows` beyond those given are counted.
fn html_table(
    title: Option<&str>,
    header: &[String],
    rows: impl Iterator<Item = Vec<String>>,
    total_rows: usize,
) -> String {
    let mut html = String::from("<table class=\"abt-table\">");
    if let Some(t) = title {
        html.push_str(&format!("<caption>{}</caption>", escape_html(t)));
    }
    html.push_str("<thead><tr>");
    for h in header {
        html.push_str(&format!("<th>{}</th>", escape_html(h)));
    }
    html.push_str("</tr></thead><tbody>");
    let mut shown = 0;
    for row in rows.take(MAX_HTML_ROWS) {
        html.push_str("<tr>");
        for cell in row {
            // A long value (a prompt, a path, a list) wraps inside a bounded column instead of
            // stretching the table past the page.
            let open = if cell.chars().count() > WRAP_AT {
                "<td style=\"max-width:36em;white-space:pre-wrap;overflow-wrap:anywhere\">"
            } else {
                "<td>"
            };
            html.push_str(&format!("{open}{}</td>", escape_html(&cell)));
        }
        html.push_str("</tr>");
        shown += 1;
    }
    html.push_str("</tbody></table>");
    if total_rows > shown {
        html.push_str(&format!(
            "<p>… {} more rows ({total_rows} in all)</p>",
            total_rows - shown
        ));
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn markdown_has_a_title_a_rule_and_escaped_cells() {
        let t = Table::new(["stage", "solved"])
            .with_title("stages")
            .row(["a|b", "3 / 4"])
            .unwrap();
        assert_eq!(
            t.to_markdown(),
            "**stages**\n\n| stage | solved |\n| --- | --- |\n| a\\|b | 3 / 4 |\n"
        );
    }

    #[test]
    fn f32_settings_show_as_written() {
        #[derive(serde::Serialize)]
        struct Settings {
            temperature: f32,
            dropout: f32,
            steps: usize,
            sum: f64,
            nested: Vec<f32>,
        }
        let settings = Settings {
            temperature: 0.8,
            dropout: 0.05,
            steps: 3,
            sum: 0.1 + 0.2,
            nested: vec![1e-8],
        };
        let value = serde_json::to_value(&settings).unwrap();
        assert_eq!(value["temperature"].to_string(), "0.800000011920929");
        let tidy = shortest_floats(value);
        assert_eq!(
            tidy.to_string(),
            r#"{"temperature":0.8,"dropout":0.05,"steps":3,"sum":0.30000000000000004,"nested":[1e-8]}"#
        );
        let table = crate::data::summary::settings_table("s", &settings).to_string();
        let row = |key: &str| {
            table
                .lines()
                .find(|l| l.starts_with(key))
                .map(|l| l[key.len()..].trim().to_string())
        };
        assert_eq!(row("temperature").as_deref(), Some("0.8"), "{table}");
        assert_eq!(row("dropout").as_deref(), Some("0.05"), "{table}");
        assert_eq!(row("nested").as_deref(), Some("[1e-8]"), "{table}");
    }

    fn sample() -> Table {
        Table::new(["stage", "score"])
            .with_title("Scores")
            .row(["base", "0.10"])
            .unwrap()
            .row(["sft <lora>", "0.35"])
            .unwrap()
    }

    #[test]
    fn html_escapes_and_keeps_every_cell() {
        let html = sample().to_html();
        assert!(html.contains("<caption>Scores</caption>"));
        assert!(html.contains("<th>stage</th><th>score</th>"));
        assert!(html.contains("<td>sft &lt;lora&gt;</td><td>0.35</td>"));
    }

    #[test]
    fn long_values_wrap_in_html_and_short_ones_stay_plain() {
        let long = "SELECT name FROM employees WHERE salary > (SELECT AVG(salary) FROM employees)";
        let html = Table::new(["setting", "value"])
            .row(["query", long])
            .unwrap()
            .row(["lr", "0.0002"])
            .unwrap()
            .to_html();
        assert!(
            html.contains("white-space:pre-wrap;overflow-wrap:anywhere\">SELECT name FROM"),
            "{html}"
        );
        assert!(html.contains("<td>lr</td><td>0.0002</td>"), "{html}");
    }

    #[test]
    fn text_is_aligned() {
        let text = sample().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "stage       score");
        assert_eq!(lines[3], "base        0.10");
    }

    #[test]
    fn ragged_rows_are_rejected() {
        let err = Table::new(["a", "b"]).row(["1"]).unwrap_err();
        assert!(
            err.to_string().contains("has 1 cells, the header has 2"),
            "{err}"
        );
    }

    #[test]
    fn dataframe_shows_as_html_with_elision() {
        let n = MAX_HTML_ROWS + 7;
        let df =
            df!("step" => (0..n as i64).collect::<Vec<_>>(), "loss" => vec![1.5f64; n]).unwrap();
        let bundle = df.mime_bundle();
        assert_eq!(bundle[0].0, "text/html");
        assert!(bundle[0].1.contains("<th>step (i64)</th>"));
        assert!(bundle[0].1.contains("<td>1.5</td>"));
        assert!(bundle[0].1.contains("7 more rows (57 in all)"));
        assert_eq!(bundle[1].0, "text/plain");
    }
}
