//! The report checked as a person sees it: each page opened in headless Chromium, with a probe
//! that records script and resource errors, charts that are missing, empty or wider than their
//! box, labels drawn outside their chart, and a page wider than the window; optionally a
//! screenshot of each page.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::{Error, Result};

/// The window the pages are laid out in (a laptop screen's width).
const WINDOW: (u32, u32) = (1280, 2400);

/// Collects errors from the moment the page starts loading.
const CATCH_ERRORS: &str = "<script>window.__abtErrors=[];\
window.addEventListener('error',function(e){var t=e.target;\
window.__abtErrors.push(t&&t!==window&&t.tagName?('failed to load '+t.tagName.toLowerCase()+' '+(t.src||t.href||'')):String(e.message||e.type));},true);\
var __abtConsoleError=console.error;console.error=function(){window.__abtErrors.push(Array.prototype.join.call(arguments,' '));__abtConsoleError.apply(console,arguments);};</script>";

/// Measures the laid-out page once it has loaded and writes the findings into the DOM.
const PROBE: &str = r#"<script>window.addEventListener('load',function(){
var out={errors:window.__abtErrors,charts:0,problems:[]};
var doc=document.documentElement,vw=doc.clientWidth;
if(doc.scrollWidth>vw+1){out.problems.push('the page is '+doc.scrollWidth+' px wide in a '+vw+' px window');}
var svgs=Array.prototype.filter.call(document.querySelectorAll('svg'),function(s){return !s.parentElement.closest('svg');});
svgs.forEach(function(svg,i){
  out.charts++;
  var r=svg.getBoundingClientRect();
  var first=svg.querySelector('text');
  var name='chart '+(i+1)+(first?' ("'+first.textContent.trim().slice(0,60)+'")':'');
  var marks=svg.querySelectorAll('path,rect,line,polyline,polygon,circle,text').length;
  if(r.width<10||r.height<10){out.problems.push(name+' is '+Math.round(r.width)+'x'+Math.round(r.height)+' px');return;}
  if(marks===0){out.problems.push(name+' draws nothing');}
  var box=svg.parentElement.getBoundingClientRect();
  if(r.right>box.right+1||r.left<box.left-1){out.problems.push(name+' is wider than its box ('+Math.round(r.width)+' px in '+Math.round(box.width)+' px)');}
  Array.prototype.forEach.call(svg.querySelectorAll('text'),function(t){
    var b=t.getBoundingClientRect();
    if(b.width>0&&(b.left<r.left-1||b.right>r.right+1||b.top<r.top-1||b.bottom>r.bottom+1)){
      out.problems.push(name+': label "'+t.textContent.trim().slice(0,40)+'" is drawn outside the chart');}
  });
});
Array.prototype.forEach.call(document.images,function(img){if(!img.complete||img.naturalWidth===0){out.problems.push('an image did not load: '+img.src.slice(0,80));}});
var pre=document.createElement('pre');pre.id='abt-check';pre.textContent=JSON.stringify(out);document.body.appendChild(pre);
});</script>"#;

/// What the probe found on one page.
#[derive(Debug, Clone, Deserialize)]
pub struct PageCheck {
    /// The page, relative to the report's directory.
    #[serde(skip)]
    pub page: String,
    /// Script errors, console errors and resources that failed to load.
    pub errors: Vec<String>,
    /// How many charts the page lays out.
    pub charts: usize,
    /// Charts missing, empty or overflowing, labels outside their chart, a page too wide.
    pub problems: Vec<String>,
}

impl PageCheck {
    /// Whether the page shows as it should.
    pub fn passed(&self) -> bool {
        self.errors.is_empty() && self.problems.is_empty()
    }
}

/// Every page of a report, as Chromium laid it out.
#[derive(Debug, Clone)]
pub struct BrowserCheck {
    /// One check per page, the index first.
    pub pages: Vec<PageCheck>,
}

impl BrowserCheck {
    /// Whether every page passed.
    pub fn passed(&self) -> bool {
        self.pages.iter().all(PageCheck::passed)
    }

    /// One line per page: its charts and what is wrong with it.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for page in &self.pages {
            let verdict = if page.passed() { "ok" } else { "FAILED" };
            out.push_str(&format!(
                "{verdict} {} ({} charts)\n",
                page.page, page.charts
            ));
            for line in page.errors.iter().chain(&page.problems) {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out
    }
}

/// The Chromium to use: `$ABT_CHROMIUM`, else `chromium` or `chromium-browser` or
/// `google-chrome` on the `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ABT_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Opens every page of the report in `report_dir` (`index.html` and `notebooks/*.html`) in
/// headless `chromium` and probes it; with `screenshots`, saves `<page>.png` of each there.
pub fn check_report(
    report_dir: &Path,
    chromium: &Path,
    screenshots: Option<&Path>,
) -> Result<BrowserCheck> {
    let mut pages = vec![report_dir.join("index.html")];
    pages.extend(crate::io::files_with_extension(
        &report_dir.join("notebooks"),
        "html",
    )?);
    let scratch = std::env::temp_dir().join(format!("abt-browser-{}", std::process::id()));
    let mut checks = Vec::new();
    for page in &pages {
        let name = page
            .strip_prefix(report_dir)
            .unwrap_or(page)
            .display()
            .to_string();
        let html = std::fs::read_to_string(page).map_err(|e| Error::io("reading", page, e))?;
        // A probed copy beside the original keeps relative links working.
        let probed = page.with_file_name(format!(
            ".abt-probe-{}-{}",
            std::process::id(),
            page.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ));
        crate::io::write_atomic(&probed, instrument(&html).as_bytes())?;
        let dom = run_chromium(chromium, &probed, &scratch, &["--dump-dom"]);
        let _ = std::fs::remove_file(&probed);
        let dom = dom?;
        let mut check = probe_result(&dom).ok_or_else(|| {
            Error::Report(format!(
                "{}: Chromium gave no probe result (did the page load?): {}",
                page.display(),
                dom.chars().take(300).collect::<String>()
            ))
        })?;
        check.page = name.clone();
        if let Some(dir) = screenshots {
            crate::io::create_dir_all(dir)?;
            let file = dir.join(format!("{}.png", name.replace(['/', '.'], "_")));
            let arg = format!("--screenshot={}", file.display());
            run_chromium(chromium, page, &scratch, &[&arg, "--hide-scrollbars"])?;
        }
        checks.push(check);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(BrowserCheck { pages: checks })
}

/// The page with the error catcher first in `<head>` and the probe last in `<body>`.
fn instrument(html: &str) -> String {
    let mut out = match html.find("<head>") {
        Some(at) => format!("{}{CATCH_ERRORS}{}", &html[..at + 6], &html[at + 6..]),
        None => format!("{CATCH_ERRORS}{html}"),
    };
    match out.rfind("</body>") {
        Some(at) => out.insert_str(at, PROBE),
        None => out.push_str(PROBE),
    }
    out
}

/// Runs headless Chromium on a file with `extra` arguments; returns its stdout.
fn run_chromium(chromium: &Path, page: &Path, scratch: &Path, extra: &[&str]) -> Result<String> {
    let url = format!(
        "file://{}",
        std::fs::canonicalize(page)
            .map_err(|e| Error::io("resolving", page, e))?
            .display()
    );
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // containers often have a small /dev/shm
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--allow-file-access-from-files",
            "--virtual-time-budget=5000",
            &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            &format!("--user-data-dir={}", scratch.join("profile").display()),
        ])
        .args(extra)
        .arg(&url)
        .output()
        .map_err(|e| Error::io("running", chromium, e))?;
    if !output.status.success() {
        return Err(Error::Report(format!(
            "{} on {url} exited with {}: {}",
            chromium.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The probe's findings in a dumped DOM.
fn probe_result(dom: &str) -> Option<PageCheck> {
    let start = dom.find("<pre id=\"abt-check\">")? + "<pre id=\"abt-check\">".len();
    let end = start + dom[start..].find("</pre>")?;
    let json = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    serde_json::from_str(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_goes_around_the_page() {
        let page = instrument("<html><head><title>t</title></head><body><p>x</p></body></html>");
        let catch = page.find("__abtErrors=[]").unwrap();
        let title = page.find("<title>").unwrap();
        let probe = page.find("abt-check").unwrap();
        let para = page.find("<p>x</p>").unwrap();
        assert!(catch < title && para < probe && probe < page.find("</body>").unwrap());
    }

    #[test]
    fn reads_the_probe_result_from_a_dumped_dom() {
        let dom = "<html><body><p>x</p><pre id=\"abt-check\">{\"errors\":[\"a &lt;b&gt; &amp; c\"],\"charts\":2,\"problems\":[]}</pre></body></html>";
        let check = probe_result(dom).unwrap();
        assert_eq!(check.errors, ["a <b> & c"]);
        assert_eq!(check.charts, 2);
        assert!(!check.passed());
        assert!(probe_result("<html></html>").is_none());
    }
}
