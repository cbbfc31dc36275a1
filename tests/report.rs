//! The report's browser check against pages known to be broken: it must find each fault
//! (needs Chromium; `scripts/test.sh` installs it and sets `ABT_REQUIRE_BROWSER`).

use agentbench_tuning::report::{check_report, find_chromium};

#[test]
fn the_browser_check_finds_errors_empty_and_overflowing_charts() {
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var_os("ABT_REQUIRE_BROWSER").is_none(),
            "ABT_REQUIRE_BROWSER is set but no Chromium was found (ABT_CHROMIUM, PATH)"
        );
        eprintln!("browser check skipped: no Chromium (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let good = "<svg width=\"300\" height=\"100\"><rect width=\"10\" height=\"10\"/><text x=\"20\" y=\"50\">fine</text></svg>";
    std::fs::write(
        dir.path().join("index.html"),
        format!(
            "<!DOCTYPE html><html><head><title>t</title></head><body style=\"width:1000px\">\
             <div>{good}</div>\
             <div style=\"width:400px\"><svg width=\"900\" height=\"100\" style=\"max-width:none\"><rect width=\"5\" height=\"5\"/></svg></div>\
             <div>{}</div>\
             <div><svg width=\"300\" height=\"100\"><text x=\"280\" y=\"50\">a label running off the edge</text></svg></div>\
             <div><svg width=\"300\" height=\"100\"></svg></div>\
             <img src=\"missing.png\">\
             <script>throw new Error('boom');</script>\
             </body></html>",
            "<svg width=\"0\" height=\"0\"><rect width=\"1\" height=\"1\"/></svg>"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("notebooks")).unwrap();
    std::fs::write(
        dir.path().join("notebooks/ok.html"),
        format!("<!DOCTYPE html><html><head></head><body>{good}</body></html>"),
    )
    .unwrap();
    let shots = dir.path().join("shots");
    let check = check_report(dir.path(), &chromium, Some(&shots)).unwrap();
    let summary = check.summary();
    assert_eq!(check.pages.len(), 2, "{summary}");
    let (index, page) = (&check.pages[0], &check.pages[1]);
    assert!(page.passed(), "{summary}");
    assert_eq!(page.charts, 1);
    assert!(!check.passed());
    let found = |needle: &str| {
        index
            .errors
            .iter()
            .chain(&index.problems)
            .any(|line| line.contains(needle))
    };
    assert!(found("boom"), "{summary}");
    assert!(found("missing.png"), "{summary}");
    assert!(found("wider than its box"), "{summary}");
    assert!(found("is 0x0 px"), "{summary}");
    assert!(found("is drawn outside the chart"), "{summary}");
    assert!(found("draws nothing"), "{summary}");
    assert!(!found("\"fine\""), "{summary}");
    for shot in ["index_html.png", "notebooks_ok_html.png"] {
        let bytes = std::fs::read(shots.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{shot}");
    }
}
