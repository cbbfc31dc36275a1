//! Headless notebook runs through `scripts/run_notebooks.py` on the real evcxr kernel.
//!
//! Needs the set-up done by `bash scripts/setup.sh` (the test command runs it first). Kernels
//! share one persistent build directory, so the tests take turns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

/// Where Colab keeps its CUDA driver libraries, put on the runner's LD_LIBRARY_PATH.
const COLAB_LIBS: &str = "/usr/lib64-nvidia";

/// One kernel at a time: they share the evcxr build directory.
static KERNEL: Mutex<()> = Mutex::new(());

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The outcome of one runner invocation.
struct Run {
    code: i32,
    /// The runner's report (stdout).
    stdout: String,
    /// The kernels' own diagnostics (stderr), shown on failure.
    stderr: String,
    run_dir: tempfile::TempDir,
}

impl Run {
    /// The executed copy of a notebook saved by the runner.
    fn executed(&self, name: &str) -> Value {
        let path = self.run_dir.path().join("notebooks").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("executed notebook {}: {e}\n{}", path.display(), self.stdout)
        });
        serde_json::from_str(&text).expect("executed notebook is JSON")
    }

    /// Everything the runner printed, for assertion messages.
    fn log(&self) -> String {
        format!("{}\n--- stderr ---\n{}", self.stdout, self.stderr)
    }

    fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

fn run(notebooks: &[&str]) -> Run {
    let paths: Vec<PathBuf> = notebooks
        .iter()
        .map(|n| root().join("tests/notebooks").join(n))
        .collect();
    run_paths(&paths, &["--no-report"])
}

/// Runs notebooks given by path, in order, on the tiny profile, with extra runner flags.
fn run_paths(notebooks: &[PathBuf], flags: &[&str]) -> Run {
    run_in(tempfile::tempdir().unwrap(), notebooks, flags)
}

/// [`run_paths`] into a given run directory (a second run of the same one).
fn run_in(run_dir: tempfile::TempDir, notebooks: &[PathBuf], flags: &[&str]) -> Run {
    let python: PathBuf = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/setup.sh` first (it installs the notebook engine and the Rust kernel)",
        python.display()
    );
    let _turn = KERNEL.lock().unwrap_or_else(|p| p.into_inner());
    // Colab keeps its CUDA driver libraries on LD_LIBRARY_PATH; the kernel must keep them.
    let library_path = match std::env::var("LD_LIBRARY_PATH") {
        Ok(path) if !path.is_empty() => format!("{COLAB_LIBS}:{path}"),
        _ => COLAB_LIBS.to_string(),
    };
    let output = Command::new(python)
        .env("LD_LIBRARY_PATH", library_path)
        .arg(root().join("scripts/run_notebooks.py"))
        .arg("--run-dir")
        .arg(run_dir.path())
        .args(["--profile", "tiny"])
        .args(flags)
        .args(notebooks)
        .output()
        .expect("runner starts");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        run_dir,
    }
}

/// All outputs of code cell `index` (counting code cells only).
fn outputs(nb: &Value, index: usize) -> &Vec<Value> {
    let cell = nb["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["cell_type"] == "code")
        .nth(index)
        .expect("code cell exists");
    cell["outputs"].as_array().unwrap()
}

/// Notebook text, stored either as one string or as a list of lines.
fn joined(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Array(lines) => Some(lines.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// The first output of a cell carrying `mime`, as text.
fn data(outputs: &[Value], mime: &str) -> Option<String> {
    outputs.iter().find_map(|o| joined(&o["data"][mime]))
}

#[test]
fn clean_notebook_passes_with_value_table_and_chart() {
    let run = run(&["smoke.ipynb"]);
    assert_eq!(run.code, 0, "{}", run.log());
    assert_eq!(run.last_line(), "1 passed, 0 failed", "{}", run.log());
    let nb = run.executed("smoke.ipynb");
    assert_eq!(nb["metadata"]["abt_runner"]["status"], "passed");

    let first = outputs(&nb, 0);
    let printed: String = first.iter().filter_map(|o| joined(&o["text"])).collect();
    assert!(printed.contains("profile=tiny"), "{printed}");
    assert!(
        printed.contains(&run.run_dir.path().display().to_string()),
        "ABT_RUN_DIR not passed: {printed}"
    );
    // The kernel adds the toolchain's libraries to the library path it was given, keeping it.
    let library_path = printed
        .lines()
        .find_map(|l| l.strip_prefix("LD_LIBRARY_PATH="))
        .unwrap_or_default();
    let entries: Vec<&str> = library_path.split(':').collect();
    assert!(entries.contains(&COLAB_LIBS), "{library_path}");
    assert!(
        entries[0].ends_with("/lib"),
        "toolchain first: {library_path}"
    );

    assert_eq!(data(outputs(&nb, 1), "text/plain").as_deref(), Some("42"));

    let html = data(outputs(&nb, 2), "text/html").expect("table as HTML");
    assert!(
        html.contains("<th>stage</th>") && html.contains("<td>sft</td>"),
        "{html}"
    );

    let svg = data(outputs(&nb, 3), "image/svg+xml").expect("chart as SVG");
    assert!(svg.trim_start().starts_with("<svg") && svg.contains("Smoke scores"));
    let saved = run.run_dir.path().join("smoke/scores.svg");
    assert!(saved.is_file(), "chart not saved at {}", saved.display());

    // Tensors made in two cells have distinct ids: the kernel links dependencies dynamically,
    // so candle's id counter (and every other static) is shared by all cells.
    let ids = data(outputs(&nb, 5), "text/plain").expect("the two ids");
    assert!(ids.starts_with("\"TensorId("), "{ids}");
}

/// The `setup.sh` arguments `kernel/colab.py` chooses when `nvidia-smi` (a fake one, first on
/// PATH) lists a GPU or fails.
fn colab_setup_args(gpu: bool) -> Vec<String> {
    let bin = tempfile::tempdir().unwrap();
    let smi = bin.path().join("nvidia-smi");
    let body = if gpu {
        "echo 'GPU 0: Tesla T4 (UUID: GPU-00000000-0000-0000-0000-000000000000)'"
    } else {
        "echo 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2; exit 9"
    };
    std::fs::write(&smi, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&smi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(root().join(".venv/bin/python"))
        .env("PATH", path)
        .current_dir(root().join("kernel"))
        .args([
            "-c",
            "import json, colab; print(json.dumps(colab.setup_command(env={'HF_HOME': '/d/hf'})[2:]))",
        ])
        .output()
        .expect("python starts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_gpu_bootstrap_gives_a_kernel_that_builds_for_cuda_without_rewriting_notebooks() {
    let cpu = colab_setup_args(false);
    let gpu = colab_setup_args(true);
    assert!(!cpu.contains(&"--cuda".to_string()), "{cpu:?}");
    assert!(gpu.contains(&"--cuda".to_string()), "{gpu:?}");
    // The kernel the GPU bootstrap registers (setup.sh passes its arguments to install.sh), in
    // a Jupyter directory, cache and build directory of its own, on a machine whose CUDA
    // toolkit (a fake nvcc here) is named by CUDA_HOME.
    let tmp = tempfile::tempdir().unwrap();
    let (jupyter, cache, toolkit) = (
        tmp.path().join("jupyter"),
        tmp.path().join("cache"),
        tmp.path().join("cuda"),
    );
    for dir in ["bin", "include", "lib64"] {
        std::fs::create_dir_all(toolkit.join(dir)).unwrap();
    }
    let real = toolkit.join("bin/nvcc");
    std::fs::write(&real, "#!/bin/sh\necho \"real nvcc $*\"\n").unwrap();
    std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let install = Command::new("bash")
        .arg(root().join("kernel/install.sh"))
        .args(&gpu)
        .env("JUPYTER_DATA_DIR", &jupyter)
        .env("ABT_CACHE_DIR", &cache)
        .env("CUDA_HOME", &toolkit)
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(jupyter.join("kernels/rust/kernel.json")).unwrap(),
    )
    .unwrap();
    // What the bootstrap was asked to keep (models on Drive) reaches every kernel.
    assert_eq!(spec["env"]["HF_HOME"], "/d/hf", "{spec}");
    // nvcc skips candle's MoE/MMQ library and passes everything else to the toolkit's nvcc.
    let nvcc = spec["env"]["NVCC"]
        .as_str()
        .expect("NVCC in the kernel's environment");
    let object = tmp.path().join("moe_wmma.o");
    let skipped = Command::new(nvcc)
        .args(["-c", "src/moe/moe_wmma.cu", "-o"])
        .arg(&object)
        .output()
        .unwrap();
    assert!(skipped.status.success() && object.is_file() && skipped.stdout.is_empty());
    let passed = Command::new(nvcc).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&passed.stdout),
        "real nvcc --version\n"
    );
    // A notebook nobody rewrote: its cells are compiled with the cfg that turns on candle's CUDA
    // backend (Cargo.toml), and evcxr still loads them (its own rustflag is kept).
    let nb = serde_json::json!({
        "cells": [{"cell_type": "code", "metadata": {}, "execution_count": null, "outputs": [],
                   "source": ["#[allow(unexpected_cfgs)]\nfn cuda() -> bool { cfg!(abt_cuda) }\nprintln!(\"cuda build: {}\", cuda());"]}],
        "metadata": {"kernelspec": {"name": "rust", "display_name": "Rust", "language": "rust"}},
        "nbformat": 4, "nbformat_minor": 5
    });
    let nb_path = tmp.path().join("plain.ipynb");
    std::fs::write(&nb_path, nb.to_string()).unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let out = Command::new(root().join(".venv/bin/python"))
        .env("JUPYTER_DATA_DIR", &jupyter)
        .arg(root().join("scripts/run_notebooks.py"))
        .arg("--run-dir")
        .arg(run_dir.path())
        .args(["--profile", "tiny", "--no-report"])
        .arg(&nb_path)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    let executed = std::fs::read_to_string(run_dir.path().join("notebooks/plain.ipynb")).unwrap();
    assert!(executed.contains("cuda build: true"), "{executed}");
}

/// Asserts the runner failed on code cell `cell` (notebook index) with `needle` in the report,
/// and never ran the cell after it.
fn assert_fails_at(name: &str, cell: usize, needle: &str) {
    let run = run(&[name]);
    assert_eq!(run.code, 1, "{}", run.log());
    assert_eq!(run.last_line(), "0 passed, 1 failed", "{}", run.log());
    assert!(
        run.stdout.contains(&format!("FAIL {name}: cell {cell} (")),
        "failing cell not named:\n{}",
        run.log()
    );
    assert!(
        run.stdout.contains(needle),
        "expected {needle:?} in:\n{}",
        run.log()
    );
    let nb = run.executed(name);
    assert_eq!(nb["metadata"]["abt_runner"]["status"], "failed");
    assert_eq!(nb["metadata"]["abt_runner"]["failed_cell"], cell);
    let later = &nb["cells"][cell + 1];
    assert!(
        later["execution_count"].is_null(),
        "cell after the failure ran: {later}"
    );
}

#[test]
fn compile_error_fails_the_run() {
    assert_fails_at("compile_error.ipynb", 1, "mismatched types");
}

#[test]
fn panic_fails_the_run() {
    assert_fails_at("panic.ipynb", 1, "panicked");
}

#[test]
fn err_from_question_mark_fails_the_run() {
    assert_fails_at("err.ipynb", 1, "invalid digit found in string");
}

#[test]
fn missing_notebook_is_a_usage_error() {
    let run = run(&["does_not_exist.ipynb"]);
    assert_eq!(run.code, 2, "{}", run.log());
    assert!(run.stderr.contains("notebook not found"), "{}", run.log());
}

/// The pipeline's own notebooks (notebooks/*.ipynb, in name order) run headless on the tiny
/// profile, as the main job runs them, but as a smoke run: trainers take a few steps and scores
/// play a few tasks (the main job's numbers are in the README).
#[test]
fn pipeline_notebooks_run_on_the_tiny_profile() {
    let mut notebooks: Vec<PathBuf> = std::fs::read_dir(root().join("notebooks"))
        .expect("notebooks/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ipynb"))
        .collect();
    notebooks.sort();
    assert!(!notebooks.is_empty());
    let run = run_paths(&notebooks, &["--smoke"]);
    assert_eq!(run.code, 0, "{}", run.log());
    assert_eq!(
        run.last_line(),
        format!("{} passed, 0 failed", notebooks.len()),
        "{}",
        run.log()
    );
    // notebook 01's guard knew AgentBench's dev items, kept in the tree
    let report: agentbench_tuning::data::DataReport =
        agentbench_tuning::io::read_json(&run.run_dir.path().join("01_data/report.json")).unwrap();
    assert_eq!(
        report.config.eval_files,
        [agentbench_tuning::paths::dbbench_dev_items()]
    );
    assert!(report.guard_entries >= 60, "{}", report.guard_entries);
    // notebook 06 compared every stage on the same tasks
    let summary: agentbench_tuning::eval::StageComparison =
        agentbench_tuning::io::read_json(&run.run_dir.path().join("06_eval/summary.json")).unwrap();
    let stages: Vec<&str> = summary.rows.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(stages, ["base", "sft", "dpo", "grpo"], "{}", run.log());
    assert!(
        summary
            .rows
            .iter()
            .all(|r| r.quick_db.is_some() && r.dbbench_overall.is_some())
    );
    // and each stage against the stage it started from, GRPO's start as it recorded it
    let efficacy: agentbench_tuning::eval::Efficacy =
        agentbench_tuning::io::read_json(&run.run_dir.path().join("06_eval/efficacy.json"))
            .unwrap();
    assert_eq!(efficacy.order, ["base", "sft", "dpo", "grpo"]);
    assert_eq!(efficacy.comparisons.len(), 3);
    assert_eq!(efficacy.grpo_start.as_deref(), Some("sft"));

    // The run's report: an index naming every notebook as run to the end, with the stage
    // comparison's chart and the phases' charts, and one page per notebook.
    let index = std::fs::read_to_string(run.run_dir.path().join("report/index.html"))
        .unwrap_or_else(|e| panic!("report/index.html: {e}\n{}", run.log()));
    assert_eq!(
        index.matches("ran to the end").count(),
        notebooks.len(),
        "{index}"
    );
    assert!(index.matches("<svg").count() >= 4, "{index}");
    for nb in &notebooks {
        let name = nb.file_stem().unwrap().to_string_lossy();
        let page = run
            .run_dir
            .path()
            .join(format!("report/notebooks/{name}.html"));
        let html =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(html.contains("class=\"cell\""), "{name}");
    }
    // ... and as a person sees it: every page in headless Chromium, no errors, no chart
    // missing, empty or overflowing (`scripts/test.sh` installs Chromium and requires it).
    match agentbench_tuning::report::find_chromium() {
        Some(chromium) => {
            let check = agentbench_tuning::report::check_report(
                &run.run_dir.path().join("report"),
                &chromium,
                None,
            )
            .unwrap();
            assert!(check.passed(), "{}", check.summary());
            assert_eq!(
                check.pages.len(),
                notebooks.len() + 1,
                "{}",
                check.summary()
            );
            assert!(check.pages[0].charts >= 4, "{}", check.summary());
        }
        None if std::env::var_os("ABT_REQUIRE_BROWSER").is_some() => {
            panic!("ABT_REQUIRE_BROWSER is set but no Chromium was found (ABT_CHROMIUM, PATH)")
        }
        None => eprintln!("report browser check skipped: no Chromium (apt-get install chromium)"),
    }

    // Notebook 06 again on the same run: every stage's quick and DB Bench scores are read back
    // by their fingerprints, none is played again, and the comparison is the same.
    let eval = notebooks
        .iter()
        .find(|p| p.ends_with("06_eval.ipynb"))
        .expect("notebooks/06_eval.ipynb")
        .clone();
    let again = run_in(run.run_dir, &[eval], &["--smoke", "--no-report"]);
    assert_eq!(again.code, 0, "{}", again.log());
    let nb = again.executed("06_eval.ipynb");
    for (cell, what) in [(2, "quick"), (3, "dbbench")] {
        let printed: String = outputs(&nb, cell)
            .iter()
            .filter_map(|o| joined(&o["text"]))
            .collect();
        for stage in ["base", "sft", "dpo", "grpo"] {
            let file = format!("{what}_{stage}.json");
            assert!(
                printed
                    .lines()
                    .any(|l| l.starts_with("reused ") && l.contains(&file)),
                "{file} not reused:\n{printed}"
            );
        }
        assert!(
            !printed.contains("quick score ·") && !printed.contains("DB Bench ·"),
            "a score was played again:\n{printed}"
        );
    }
    let second: agentbench_tuning::eval::StageComparison =
        agentbench_tuning::io::read_json(&again.run_dir.path().join("06_eval/summary.json"))
            .unwrap();
    assert_eq!(second, summary);
}
