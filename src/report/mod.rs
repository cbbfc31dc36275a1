//! A browsable report of a run, readable from disk with no server: `runs/<name>/report/index.html`
//! (the stage comparison, each comparison's sign test, every chart the phases saved, a list of
//! the executed notebooks) and one page per executed notebook (`report/notebooks/<name>.html`)
//! with its outputs. Written by `abt report RUN_DIR` and at the end of the main job; in a notebook
//! the index shows inline.
//!
//! ```ignore
//! let report = RunReport::build(&ctx.run_dir)?;
//! report.write()?;   // runs/<name>/report/index.html
//! report             // the index, inline
//! ```

mod browser;
mod notebook;

use std::path::{Path, PathBuf};

pub use browser::{BrowserCheck, PageCheck, check_report, find_chromium};
pub use notebook::{NotebookPage, markdown_html};

use crate::display::{Show, escape_html};
use crate::eval::RunScores;
use crate::phases::Phase;
use crate::{Error, Result};

/// One chart a phase saved (`03_sft/loss.svg`).
#[derive(Debug, Clone)]
pub struct SavedChart {
    /// Its path relative to the run directory.
    pub name: String,
    /// The SVG document.
    pub svg: String,
}

/// Everything a run's report shows, gathered from its directory.
#[derive(Debug, Clone)]
pub struct RunReport {
    run_dir: PathBuf,
    stages_html: Option<String>,
    charts: Vec<SavedChart>,
    notebooks: Vec<NotebookPage>,
}

/// The report's stylesheet: one column, readable widths, charts never wider than the page.
const STYLE: &str = "\
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;color:#222;max-width:1100px;\
margin:0 auto;padding:1.5em 2em;background:#fff}\
h1{font-size:1.6em;margin:.2em 0 .4em}h2{font-size:1.25em;margin:1.6em 0 .5em;\
border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em}\
nav{font-size:.9em;margin-bottom:1em}nav a{margin-right:1em}\
a{color:#1f5fa8}code{background:#f3f3f3;padding:0 .25em;border-radius:3px}\
pre{background:#f7f7f7;padding:.6em .8em;overflow-x:auto;border-radius:4px;font-size:13px;\
line-height:1.35;white-space:pre-wrap;word-break:break-word}\
table{border-collapse:collapse;margin:.5em 0;font-size:13px;max-width:100%}\
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}caption{font-weight:600;text-align:left;padding:.3em 0}\
svg,img{max-width:100%;height:auto}\
.chart{margin:1em 0}.chart figcaption{font-size:.85em;color:#666}\
.cell{margin:1em 0}.in{display:flex;gap:.5em}.in .n{color:#888;font:12px monospace;\
min-width:3em;padding-top:.7em}.in pre{flex:1;background:#f5f7fa;margin:0}\
.out{margin:.4em 0 .4em 3.5em;overflow-x:auto}pre.stdout{background:#fff;border-left:3px solid #eee}\
pre.stderr,pre.error{background:#fdeeee;border-left:3px solid #d33}\
.failed{color:#b00;font-weight:600}.ok{color:#286d28}\
.md{margin:1.2em 0}";

impl RunReport {
    /// Gathers the report of the run in `run_dir`: its scores (if any), the charts its phases
    /// saved, and its executed notebooks (`notebooks/*.ipynb`).
    pub fn build(run_dir: &Path) -> Result<Self> {
        if !run_dir.is_dir() {
            return Err(Error::MissingFile {
                path: run_dir.to_path_buf(),
                hint: "give a run directory (runs/<name>), made by `bash scripts/run.sh` or the \
                       abt phase commands"
                    .into(),
            });
        }
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            stages_html: stages_html(run_dir)?,
            charts: saved_charts(run_dir)?,
            notebooks: executed_notebooks(run_dir)?,
        })
    }

    /// The run's name (its directory's).
    pub fn name(&self) -> String {
        self.run_dir.file_name().map_or_else(
            || self.run_dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// The charts the phases saved, in pipeline order.
    pub fn charts(&self) -> &[SavedChart] {
        &self.charts
    }

    /// The executed notebooks, in order.
    pub fn notebooks(&self) -> &[NotebookPage] {
        &self.notebooks
    }

    /// Where the index is written: `<run>/report/index.html`.
    pub fn index_path(&self) -> PathBuf {
        self.run_dir.join("report").join("index.html")
    }

    /// The index page's body: stages, notebooks and charts.
    pub fn index_body(&self) -> String {
        let mut out = format!("<h1>Run {}</h1>\n", escape_html(&self.name()));
        out.push_str(&format!(
            "<p>{}</p>\n",
            escape_html(&self.run_dir.display().to_string())
        ));
        out.push_str("<h2>What each stage buys</h2>\n");
        match &self.stages_html {
            Some(html) => out.push_str(html),
            None => out.push_str(
                "<p>No scores yet: notebook 06 (or <code>abt heldout</code>, <code>abt \
                 quick-score</code>) scores the stages.</p>\n",
            ),
        }
        out.push_str("<h2>Notebooks</h2>\n");
        if self.notebooks.is_empty() {
            out.push_str("<p>No executed notebooks in <code>notebooks/</code>.</p>\n");
        } else {
            out.push_str("<table><tr><th>notebook</th><th>cells run</th><th>status</th></tr>\n");
            for nb in &self.notebooks {
                let status = match nb.first_failure() {
                    Some(cell) => {
                        format!("<span class=\"failed\">failed at code cell {cell}</span>")
                    }
                    None if nb.executed_cells() < nb.code_cells() => {
                        "<span class=\"failed\">stopped before the end</span>".to_string()
                    }
                    None => "<span class=\"ok\">ran to the end</span>".to_string(),
                };
                out.push_str(&format!(
                    "<tr><td><a href=\"notebooks/{0}.html\">{0}</a> — {1}</td><td>{2} / {3}</td><td>{4}</td></tr>\n",
                    escape_html(nb.name()),
                    escape_html(&nb.title()),
                    nb.executed_cells(),
                    nb.code_cells(),
                    status
                ));
            }
            out.push_str("</table>\n");
        }
        out.push_str("<h2>Charts</h2>\n");
        if self.charts.is_empty() {
            out.push_str("<p>No phase has saved a chart yet.</p>\n");
        }
        for chart in &self.charts {
            out.push_str(&format!(
                "<figure class=\"chart\">{}<figcaption>{}</figcaption></figure>\n",
                notebook::without_xml_prolog(&chart.svg),
                escape_html(&chart.name)
            ));
        }
        out
    }

    /// Writes the index and one page per notebook under `<run>/report/` (atomically, each);
    /// returns the index's path.
    pub fn write(&self) -> Result<PathBuf> {
        let dir = self.run_dir.join("report");
        let title = format!("Run {}", self.name());
        crate::io::write_atomic(
            &self.index_path(),
            page(&title, "", &self.index_body()).as_bytes(),
        )?;
        for nb in &self.notebooks {
            let nav = "<nav><a href=\"../index.html\">← the run's report</a></nav>";
            let html = page(
                &format!("{} · {}", nb.title(), self.name()),
                nav,
                &nb.body_html(),
            );
            crate::io::write_atomic(
                &dir.join("notebooks").join(format!("{}.html", nb.name())),
                html.as_bytes(),
            )?;
        }
        Ok(self.index_path())
    }
}

impl Show for RunReport {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "text/html",
                format!("<div class=\"abt-report\">{}</div>", self.index_body()),
            ),
            (
                "text/plain",
                format!(
                    "report of {}: {} notebooks, {} charts -> {}",
                    self.name(),
                    self.notebooks.len(),
                    self.charts.len(),
                    self.index_path().display()
                ),
            ),
        ]
    }
}

/// A whole HTML page around `body`.
fn page(title: &str, nav: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n{nav}\n{body}\n</body></html>\n",
        escape_html(title)
    )
}

/// The stage comparison and each stage's sign test against its start, as HTML (None before
/// anything was scored).
fn stages_html(run_dir: &Path) -> Result<Option<String>> {
    let scores = RunScores::read(run_dir)?;
    if scores.is_empty() {
        return Ok(None);
    }
    let comparison = scores.comparison()?;
    let mut out = comparison.table()?.to_html();
    out.push_str(&format!(
        "<figure class=\"chart\">{}</figure>\n",
        notebook::without_xml_prolog(comparison.chart()?.as_str())
    ));
    if !scores.decisive().is_empty() {
        let efficacy = scores.efficacy(&crate::phases::p06_eval::stage_starts(run_dir))?;
        out.push_str(&efficacy.comparisons_table()?.to_html());
    }
    Ok(Some(out))
}

/// Every `.svg` the phases saved in their directories, in pipeline order.
fn saved_charts(run_dir: &Path) -> Result<Vec<SavedChart>> {
    let mut dirs: Vec<&str> = Phase::ALL.iter().map(|p| p.dir_name()).collect();
    dirs.dedup();
    let mut charts = Vec::new();
    for dir in dirs {
        for file in crate::io::files_with_extension(&run_dir.join(dir), "svg")? {
            let svg = std::fs::read_to_string(&file).map_err(|e| Error::io("reading", &file, e))?;
            let name = file
                .strip_prefix(run_dir)
                .unwrap_or(&file)
                .display()
                .to_string();
            charts.push(SavedChart { name, svg });
        }
    }
    Ok(charts)
}

/// The executed notebooks of the run (`<run>/notebooks/*.ipynb`), sorted by name.
fn executed_notebooks(run_dir: &Path) -> Result<Vec<NotebookPage>> {
    crate::io::files_with_extension(&run_dir.join("notebooks"), "ipynb")?
        .iter()
        .map(|p| NotebookPage::read(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("abt-report-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_missing_run_directory_is_a_clear_error() {
        let err = RunReport::build(Path::new("/nonexistent/run"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/run"), "{err}");
    }

    #[test]
    fn an_empty_run_says_what_is_missing() {
        let dir = run_dir("empty");
        let report = RunReport::build(&dir).unwrap();
        let body = report.index_body();
        assert!(body.contains("No scores yet"));
        assert!(body.contains("No executed notebooks"));
        assert!(body.contains("No phase has saved a chart"));
    }

    #[test]
    fn writes_an_index_with_charts_and_one_page_per_notebook() {
        let dir = run_dir("full");
        std::fs::create_dir_all(dir.join("03_sft")).unwrap();
        std::fs::write(
            dir.join("03_sft/loss.svg"),
            "<?xml version=\"1.0\"?><svg id=\"loss\"></svg>",
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("notebooks")).unwrap();
        std::fs::write(
            dir.join("notebooks/03_sft.ipynb"),
            r##"{"cells": [{"cell_type": "markdown", "source": "# SFT"},
                {"cell_type": "code", "execution_count": 1, "source": "1", "outputs": []},
                {"cell_type": "code", "execution_count": null, "source": "2", "outputs": []}]}"##,
        )
        .unwrap();
        let report = RunReport::build(&dir).unwrap();
        assert_eq!(report.charts().len(), 1);
        let index = report.write().unwrap();
        let html = std::fs::read_to_string(&index).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<svg id=\"loss\"></svg>"));
        assert!(html.contains("03_sft/loss.svg"));
        assert!(html.contains("href=\"notebooks/03_sft.html\""));
        assert!(html.contains("stopped before the end"), "{html}");
        let page = std::fs::read_to_string(dir.join("report/notebooks/03_sft.html")).unwrap();
        assert!(page.contains("<h1>SFT</h1>"));
        assert!(page.contains("href=\"../index.html\""));
    }
}
