//! An executed Jupyter notebook (`.ipynb`, nbformat 4) rendered to one self-contained HTML page:
//! markdown cells as HTML, code cells with their outputs (HTML tables, inline SVG charts, PNG
//! images, text), the way Jupyter shows them, readable from disk with no server.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::display::escape_html;
use crate::{Error, Result};

/// Text stored either as one string or as a list of lines (both are valid nbformat).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
enum MultiLine {
    #[default]
    Empty,
    One(String),
    Lines(Vec<String>),
}

impl MultiLine {
    fn text(&self) -> String {
        match self {
            MultiLine::Empty => String::new(),
            MultiLine::One(s) => s.clone(),
            MultiLine::Lines(lines) => lines.concat(),
        }
    }
}

/// One output of a code cell.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "output_type", rename_all = "snake_case")]
enum Output {
    Stream {
        name: String,
        #[serde(default)]
        text: MultiLine,
    },
    DisplayData {
        #[serde(default)]
        data: BTreeMap<String, MultiLine>,
    },
    ExecuteResult {
        #[serde(default)]
        data: BTreeMap<String, MultiLine>,
    },
    Error {
        #[serde(default)]
        ename: String,
        #[serde(default)]
        evalue: String,
        #[serde(default)]
        traceback: Vec<String>,
    },
}

/// One cell.
#[derive(Debug, Clone, Deserialize)]
struct Cell {
    cell_type: String,
    #[serde(default)]
    source: MultiLine,
    #[serde(default)]
    outputs: Vec<Output>,
    #[serde(default)]
    execution_count: Option<u64>,
}

/// An executed notebook, read from its `.ipynb` file.
#[derive(Debug, Clone)]
pub struct NotebookPage {
    name: String,
    cells: Vec<Cell>,
}

/// The rich representations a page embeds, richest first.
const MIME_ORDER: [&str; 6] = [
    "text/html",
    "image/svg+xml",
    "image/png",
    "image/jpeg",
    "text/markdown",
    "text/plain",
];

impl NotebookPage {
    /// Reads a notebook file; `name` is its file stem (`03_sft`).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        #[derive(Deserialize)]
        struct File {
            cells: Vec<Cell>,
        }
        let file: File = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path.file_stem().map_or_else(
            || "notebook".to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        Ok(Self {
            name,
            cells: file.cells,
        })
    }

    /// The file stem (`03_sft`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text of the first markdown heading, or the file stem.
    pub fn title(&self) -> String {
        self.cells
            .iter()
            .filter(|c| c.cell_type == "markdown")
            .find_map(|c| {
                c.source.text().lines().find_map(|line| {
                    let heading = line.strip_prefix('#')?.trim_start_matches('#').trim();
                    (!heading.is_empty()).then(|| heading.to_string())
                })
            })
            .unwrap_or_else(|| self.name.clone())
    }

    /// How many code cells ran (have an execution count).
    pub fn executed_cells(&self) -> usize {
        self.cells
            .iter()
            .filter(|c| c.cell_type == "code" && c.execution_count.is_some())
            .count()
    }

    /// How many code cells the notebook has.
    pub fn code_cells(&self) -> usize {
        self.cells.iter().filter(|c| c.cell_type == "code").count()
    }

    /// The one-based index among code cells of the first cell that failed (an error output
    /// or text on stderr), if any.
    pub fn first_failure(&self) -> Option<usize> {
        self.cells
            .iter()
            .filter(|c| c.cell_type == "code")
            .position(|c| {
                c.outputs.iter().any(|o| match o {
                    Output::Error { .. } => true,
                    Output::Stream { name, text } => {
                        name == "stderr" && !text.text().trim().is_empty()
                    }
                    _ => false,
                })
            })
            .map(|i| i + 1)
    }

    /// The page body: every cell in order, markdown rendered, code with its outputs.
    pub fn body_html(&self) -> String {
        let mut out = String::new();
        for cell in &self.cells {
            match cell.cell_type.as_str() {
                "markdown" => {
                    out.push_str("<section class=\"md\">");
                    out.push_str(&markdown_html(&cell.source.text()));
                    out.push_str("</section>\n");
                }
                "code" => {
                    let label = cell
                        .execution_count
                        .map_or_else(|| "[ ]".to_string(), |n| format!("[{n}]"));
                    out.push_str("<section class=\"cell\"><div class=\"in\"><span class=\"n\">");
                    out.push_str(&label);
                    out.push_str("</span><pre class=\"code\">");
                    out.push_str(&escape_html(cell.source.text().trim_end()));
                    out.push_str("</pre></div>");
                    for output in &cell.outputs {
                        out.push_str(&output_html(output));
                    }
                    out.push_str("</section>\n");
                }
                _ => {
                    out.push_str("<pre class=\"raw\">");
                    out.push_str(&escape_html(&cell.source.text()));
                    out.push_str("</pre>\n");
                }
            }
        }
        out
    }
}

/// One output as HTML: the richest representation it carries.
fn output_html(output: &Output) -> String {
    match output {
        Output::Stream { name, text } => {
            let class = if name == "stderr" { "stderr" } else { "stdout" };
            let text = strip_ansi(&text.text());
            if text.trim().is_empty() {
                return String::new();
            }
            format!(
                "<pre class=\"out {class}\">{}</pre>",
                escape_html(text.trim_end())
            )
        }
        Output::DisplayData { data } | Output::ExecuteResult { data } => {
            let Some((mime, content)) = MIME_ORDER
                .iter()
                .find_map(|m| data.get(*m).map(|c| (*m, c.text())))
            else {
                return String::new();
            };
            let inner = match mime {
                "text/html" => content,
                "image/svg+xml" => without_xml_prolog(&content).to_string(),
                "image/png" | "image/jpeg" => format!(
                    "<img alt=\"output image\" src=\"data:{mime};base64,{}\">",
                    content.split_whitespace().collect::<String>()
                ),
                "text/markdown" => markdown_html(&content),
                _ => format!("<pre>{}</pre>", escape_html(content.trim_end())),
            };
            let class = mime.replace(['/', '+'], "-");
            format!("<div class=\"out rich {class}\">{inner}</div>")
        }
        Output::Error {
            ename,
            evalue,
            traceback,
        } => {
            let mut text = format!("{ename}: {evalue}");
            for line in traceback {
                text.push('\n');
                text.push_str(line);
            }
            format!(
                "<pre class=\"out error\">{}</pre>",
                escape_html(strip_ansi(&text).trim_end())
            )
        }
    }
}

/// Markdown (CommonMark with tables) as HTML.
pub fn markdown_html(text: &str) -> String {
    use pulldown_cmark::{Options, Parser, html};
    let parser = Parser::new_ext(text, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH);
    let mut out = String::new();
    html::push_html(&mut out, parser);
    out
}

/// An SVG document without its `<?xml …?>` prolog, so it can sit inside HTML.
pub(crate) fn without_xml_prolog(svg: &str) -> &str {
    let trimmed = svg.trim_start();
    match trimmed
        .strip_prefix("<?xml")
        .and_then(|rest| rest.find("?>").map(|at| &rest[at + 2..]))
    {
        Some(after) => after.trim_start(),
        None => trimmed,
    }
}

/// Text without ANSI escape sequences (colours in tracebacks and cargo's messages).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(json: &str) -> NotebookPage {
        let dir = std::env::temp_dir().join(format!("abt-nb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("03_sft.ipynb");
        std::fs::write(&path, json).unwrap();
        NotebookPage::read(&path).unwrap()
    }

    #[test]
    fn renders_markdown_code_and_the_richest_output() {
        let nb = page(
            r##"{"cells": [
              {"cell_type": "markdown", "metadata": {}, "source": ["# Phase 03: SFT\n", "Trains **LoRA**."]},
              {"cell_type": "code", "execution_count": 2, "metadata": {}, "source": "let x = 1 < 2;",
               "outputs": [
                 {"output_type": "stream", "name": "stdout", "text": ["step 1\n", "step 2\n"]},
                 {"output_type": "display_data", "metadata": {}, "data": {
                    "image/svg+xml": "<?xml version=\"1.0\"?>\n<svg width=\"10\"></svg>",
                    "text/plain": "[chart: loss]"}},
                 {"output_type": "execute_result", "execution_count": 2, "metadata": {}, "data": {
                    "text/html": "<table><tr><td>1</td></tr></table>", "text/plain": "t"}}
               ]},
              {"cell_type": "code", "execution_count": null, "metadata": {}, "source": "", "outputs": []}
            ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"##,
        );
        assert_eq!(nb.title(), "Phase 03: SFT");
        assert_eq!((nb.executed_cells(), nb.code_cells()), (1, 2));
        assert_eq!(nb.first_failure(), None);
        let html = nb.body_html();
        assert!(html.contains("<h1>Phase 03: SFT</h1>"));
        assert!(html.contains("<strong>LoRA</strong>"));
        assert!(html.contains("let x = 1 &lt; 2;"));
        assert!(html.contains("step 1\nstep 2"));
        assert!(html.contains("<svg width=\"10\"></svg>"));
        assert!(!html.contains("<?xml"));
        assert!(!html.contains("[chart: loss]"));
        assert!(html.contains("<table><tr><td>1</td></tr></table>"));
    }

    #[test]
    fn names_the_first_failing_cell_and_strips_colours() {
        let nb = page(
            r#"{"cells": [
              {"cell_type": "code", "execution_count": 1, "source": "ok()", "outputs": []},
              {"cell_type": "code", "execution_count": 2, "source": "bad()", "outputs": [
                 {"output_type": "error", "ename": "Error", "evalue": "compile failed",
                  "traceback": ["\u001b[31merror[E0425]\u001b[0m: cannot find `bad`"]}]}
            ]}"#,
        );
        assert_eq!(nb.first_failure(), Some(2));
        let html = nb.body_html();
        assert!(html.contains("error[E0425]: cannot find `bad`"), "{html}");
        assert!(!html.contains('\u{1b}'));
        assert_eq!(nb.title(), "03_sft");
    }

    #[test]
    fn text_on_stderr_is_a_failure() {
        let nb = page(
            r#"{"cells": [{"cell_type": "code", "execution_count": 1, "source": "x",
               "outputs": [{"output_type": "stream", "name": "stderr", "text": "thread panicked"}]}]}"#,
        );
        assert_eq!(nb.first_failure(), Some(1));
        assert!(nb.body_html().contains("class=\"out stderr\""));
    }

    #[test]
    fn a_file_that_is_not_a_notebook_names_itself() {
        let dir = std::env::temp_dir().join(format!("abt-nb-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.ipynb");
        std::fs::write(&path, "{\"cells\": 3}").unwrap();
        let err = NotebookPage::read(&path).unwrap_err().to_string();
        assert!(err.contains("x.ipynb"), "{err}");
    }
}
