//! The `abt` command line.

mod common;

use std::process::Command;

fn abt(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_abt"))
        .args(args)
        .env("ABT_PROFILE", "tiny")
        .output()
        .expect("abt runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn version_prints_the_crate_version() {
    let (ok, text) = abt(&["--version"]);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), format!("abt {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn env_prints_device_threads_caches_and_model() {
    let (ok, text) = abt(&["env"]);
    assert!(ok, "{text}");
    for key in [
        "device",
        "cpu threads",
        "cache dir",
        "evcxr build dir",
        "default model status",
    ] {
        assert!(text.contains(key), "missing {key}:\n{text}");
    }
}

#[test]
fn env_json_is_machine_readable() {
    let (ok, text) = abt(&["env", "--json"]);
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["profile"], "tiny");
    assert!(v["cpu_threads"].as_u64().unwrap() >= 1);
}

#[test]
fn bad_profile_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_abt"))
        .arg("env")
        .env("ABT_PROFILE", "huge")
        .output()
        .expect("abt runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ABT_PROFILE") && err.contains("tiny"), "{err}");
}

#[test]
fn generate_answers_from_the_default_model_as_json() {
    if common::default_model().is_none() {
        return;
    }
    let (ok, text) = abt(&[
        "generate",
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "12",
        "--json",
    ]);
    assert!(ok, "{text}");
    let reply: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
    assert!(reply["text"].as_str().unwrap().contains("Paris"), "{reply}");
    assert_eq!(
        reply["ids"].as_array().unwrap().len(),
        reply["logprobs"].as_array().unwrap().len()
    );
}

#[test]
fn generate_reports_a_missing_model_and_bad_messages() {
    let (ok, text) = abt(&["generate", "--model", "/no/such.gguf", "--prompt", "hi"]);
    assert!(!ok);
    assert!(
        text.contains("/no/such.gguf") && text.contains("fetch"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("m.json");
    std::fs::write(&bad, "{not json").unwrap();
    let (ok, text) = abt(&["generate", "--messages", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(text.contains("m.json"), "{text}");
}

#[test]
fn data_and_prompts_write_their_phase_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().to_str().unwrap();
    let (ok, text) = abt(&["data", "--run-dir", run, "--no-length-filter"]);
    assert!(ok, "{text}");
    assert!(text.contains("records/s"), "{text}");
    let sft = std::fs::read_to_string(dir.path().join("01_data/sft.jsonl")).unwrap();
    assert!(sft.lines().count() > 100);
    assert!(dir.path().join("01_data/report.json").is_file());
    let (ok, text) = abt(&["prompts", "--run-dir", run, "--db", "9", "--household", "6"]);
    assert!(ok, "{text}");
    let prompts = std::fs::read_to_string(dir.path().join("02_prompts/prompts.jsonl")).unwrap();
    assert_eq!(
        prompts.lines().count(),
        15,
        "tiny writes the text protocol only"
    );
    let (ok, text) = abt(&[
        "data",
        "--run-dir",
        run,
        "--react",
        "/nonexistent/react.jsonl",
    ]);
    assert!(!ok && text.contains("/nonexistent/react.jsonl"), "{text}");
}

/// One SFT step of short rows: enough to make an adapter the later phases start from.
fn one_step_sft() -> agentbench_tuning::train::SftConfig {
    use agentbench_tuning::train::{SftConfig, TrainArgs};
    SftConfig {
        train: TrainArgs {
            micro_batch: 1,
            ..common::tiny().sft.train
        },
        max_len: 640,
        max_steps: Some(1),
        ..common::tiny().sft
    }
}

#[test]
fn sft_then_quick_score_compares_the_adapter_with_the_base_model() {
    if common::default_model().is_none() {
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().to_str().unwrap();
    let (ok, text) = abt(&["data", "--run-dir", run]);
    assert!(ok, "{text}");
    let config = one_step_sft();
    let config_path = dir.path().join("sft.json");
    agentbench_tuning::io::write_json(&config_path, &config).unwrap();
    let cfg = config_path.to_str().unwrap();
    let (ok, text) = abt(&["sft", "--run-dir", run, "--config", cfg]);
    assert!(ok, "{text}");
    assert!(text.contains("step    1/1"), "{text}");
    let adapter = dir.path().join("03_sft/adapter");
    assert!(adapter.join("adapter_model.safetensors").is_file());
    let (ok, text) = abt(&["sft", "--run-dir", run, "--config", cfg]);
    assert!(ok && text.contains("resumed at step 1"), "{text}");
    // Resuming with another setting is refused, naming it; --fresh starts over instead.
    let mut changed = config.clone();
    changed.train.learning_rate *= 2.0;
    let changed_path = dir.path().join("sft-changed.json");
    agentbench_tuning::io::write_json(&changed_path, &changed).unwrap();
    let changed_cfg = changed_path.to_str().unwrap();
    let (ok, text) = abt(&["sft", "--run-dir", run, "--config", changed_cfg]);
    assert!(
        !ok && text.contains("learning_rate") && text.contains("--fresh"),
        "{text}"
    );

    let small = ["--db", "2", "--household", "1"];
    let (ok, text) = abt(&[&["quick-score", "--run-dir", run][..], &small].concat());
    assert!(ok, "{text}");
    assert!(
        text.contains("db/synthetic_sql") && text.contains("household"),
        "{text}"
    );
    let base = dir.path().join("eval/quick_base.json");
    assert!(base.is_file());
    let args = [
        "quick-score",
        "--run-dir",
        run,
        "--adapter",
        adapter.to_str().unwrap(),
        "--against",
        base.to_str().unwrap(),
    ];
    let (ok, text) = abt(&[&args[..], &small].concat());
    assert!(ok, "{text}");
    assert!(dir.path().join("eval/quick_03_sft.json").is_file());
    assert!(
        text.contains("03_sft vs base") && text.contains("sign test p"),
        "{text}"
    );
    let (ok, text) = abt(&[
        "quick-score",
        "--run-dir",
        run,
        "--adapter",
        "/nonexistent/adapter",
    ]);
    assert!(!ok && text.contains("/nonexistent/adapter"), "{text}");
}

#[test]
fn eval_scores_dbbench_items_with_agentbench_metrics() {
    let dev = common::dbbench_dev();
    let dev = dev.to_str().unwrap();
    let run = tempfile::tempdir().unwrap();
    let run_dir = run.path().to_str().unwrap();
    // Bad input first: an unknown protocol and a missing file are clear errors.
    let (ok, text) = abt(&[
        "eval",
        "--run-dir",
        run_dir,
        "--items",
        dev,
        "--protocol",
        "xml",
    ]);
    assert!(
        !ok && text.contains("use text (AgentBench v0.2) or tools"),
        "{text}"
    );
    let (ok, text) = abt(&[
        "eval",
        "--run-dir",
        run_dir,
        "--items",
        "/nonexistent/dev.jsonl",
    ]);
    assert!(!ok && text.contains("/nonexistent/dev.jsonl"), "{text}");
    if common::default_model().is_none() {
        return;
    }
    let (ok, text) = abt(&[
        "eval",
        "--run-dir",
        run_dir,
        "--items",
        dev,
        "--limit",
        "2",
        "--max-new-tokens",
        "24",
        "--batch",
        "2",
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("overall_cat_accuracy"), "{text}");
    let out: serde_json::Value =
        agentbench_tuning::io::read_json(&run.path().join("06_eval").join("dbbench_base.json"))
            .unwrap();
    assert_eq!(out["score"]["results"].as_array().unwrap().len(), 2);
    let overall = out["metrics"]["overall_cat_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&overall));
    assert_eq!(out["metrics"].as_object().unwrap().len(), 12);
    let failed = out["score"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["correct"] == false)
        .count();
    let classified: usize = out["errors"]["episodes"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_array().unwrap().len())
        .sum();
    assert_eq!(classified, failed);

    // The stage comparison picks the score up.
    let (ok, text) = abt(&["compare", "--run-dir", run_dir]);
    assert!(ok, "{text}");
    let summary: serde_json::Value =
        agentbench_tuning::io::read_json(&run.path().join("06_eval").join("summary.json")).unwrap();
    assert_eq!(summary["rows"][0]["stage"], "base");
    assert_eq!(summary["rows"][0]["dbbench_items"], 2);
    let empty = tempfile::tempdir().unwrap();
    let (ok, text) = abt(&["compare", "--run-dir", empty.path().to_str().unwrap()]);
    assert!(
        !ok && text.contains("`abt quick-score` or `abt eval` first"),
        "{text}"
    );
}

/// Phases 02 to 06 from the command line, each through the same `phases` functions as its
/// notebook: pairs sampled from the SFT policy, DPO on pairs (made here from phase 01's records,
/// since two samples of a one-step policy rarely differ), GRPO, a quick score and the comparison.
#[test]
fn later_phases_run_from_the_command_line() {
    use agentbench_tuning::chat::{Conversation, Message, Role};
    use agentbench_tuning::data::read_sft;
    use agentbench_tuning::env::TaskScore;
    use agentbench_tuning::generate::EpisodeEnd;
    use agentbench_tuning::pairs::{
        Pair, PairSource, PairsReport, Sample, read_pairs, samples_path, write_pairs,
    };
    use agentbench_tuning::train::{RftConfig, RftReport};
    if common::default_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().to_str().unwrap();
    let smoke = ["--run-dir", run, "--scale", "smoke"];
    let with = |command: &str, extra: &[&str]| abt(&[&[command][..], &smoke, extra].concat());
    let (ok, text) = with("data", &[]);
    assert!(ok, "{text}");
    let (ok, text) = with("prompts", &["--db", "3", "--household", "1"]);
    assert!(ok, "{text}");
    let sft_config = dir.path().join("sft.json");
    agentbench_tuning::io::write_json(&sft_config, &one_step_sft()).unwrap();
    let (ok, text) = with("sft", &["--config", sft_config.to_str().unwrap()]);
    assert!(ok, "{text}");

    let (ok, text) = with("pairs", &["--max-prompts", "2", "--samples", "2"]);
    assert!(ok && text.contains("04 pairs · yield"), "{text}");
    let pairs_dir = dir.path().join("04_pairs");
    let sampled = std::fs::read_to_string(pairs_dir.join("samples.jsonl")).unwrap();
    assert_eq!(sampled.lines().count(), 4, "2 prompts x 2 samples");
    assert_eq!(
        text.contains("0 pairs ->"),
        read_pairs(&pairs_dir).unwrap().is_empty()
    );

    // Pairs of a recorded episode (chosen) against a reply that breaks the protocol.
    let pairs: Vec<Pair> = read_sft(&dir.path().join("01_data"))
        .unwrap()
        .into_iter()
        .filter(|r| r.source == "synthetic_sql")
        .take(4)
        .map(|r| {
            let messages = r.conversation.messages;
            let first = messages
                .iter()
                .position(|m| m.role == Role::Assistant)
                .unwrap();
            let mut prompt = Conversation::new(messages[..first].to_vec());
            prompt.tools = r.conversation.tools;
            Pair {
                task: "db/synthetic_sql".into(),
                kind: r.kind,
                protocol: r.protocol.unwrap(),
                source: PairSource::BestOfN,
                prompt,
                chosen: messages[first..].to_vec(),
                rejected: vec![Message::assistant("I am not sure.")],
                chosen_score: 1.0,
                rejected_score: -0.5,
            }
        })
        .collect();
    write_pairs(&pairs_dir, &pairs, &[], &PairsReport::default()).unwrap();
    let (ok, text) = with("dpo", &["--max-steps", "1"]);
    assert!(ok && text.contains("step    1/1"), "{text}");
    assert!(text.contains("adapter (SFT and DPO stacked)"), "{text}");
    let (ok, text) = with("dpo", &["--max-steps", "1"]);
    assert!(ok && text.contains("resumed at step 1 of 1"), "{text}");
    let start: serde_json::Value =
        agentbench_tuning::io::read_json(&dir.path().join("05_dpo/start.json")).unwrap();
    assert_eq!(start["adapter"], "03_sft/adapter");

    let (ok, text) = with("grpo", &["--steps", "1"]);
    assert!(
        ok && text.contains("adapter (SFT and GRPO stacked)"),
        "{text}"
    );
    for phase in ["05_dpo", "05_grpo"] {
        let adapter = dir.path().join(phase).join("adapter");
        assert!(
            adapter.join("adapter_model.safetensors").is_file(),
            "{phase}"
        );
    }

    let adapter = dir.path().join("05_grpo/adapter");
    let (ok, text) = with("quick-score", &["--adapter", adapter.to_str().unwrap()]);
    assert!(ok && text.contains("quick_05_grpo.json"), "{text}");
    let (ok, text) = with("compare", &[]);
    assert!(ok && text.contains("05_grpo"), "{text}");
    assert!(dir.path().join("06_eval/summary.txt").is_file());

    // The final comparison: GRPO recorded the adapter it started from; the run's GRPO stage
    // plays the `[heldout]` tasks (the quick score's at the smoke scale) beside the score above.
    let start: serde_json::Value =
        agentbench_tuning::io::read_json(&dir.path().join("05_grpo/start.json")).unwrap();
    assert_eq!(start["adapter"], "03_sft/adapter");
    let (ok, text) = with("heldout", &["--stages", "rft"]);
    assert!(!ok && text.contains("the run has no stage rft"), "{text}");
    let report = dir.path().join("report");
    let (ok, text) = with(
        "heldout",
        &["--stages", "grpo", "--report", report.to_str().unwrap()],
    );
    assert!(ok && text.contains("grpo: "), "{text}");
    let efficacy: agentbench_tuning::eval::Efficacy =
        agentbench_tuning::io::read_json(&dir.path().join("06_eval/efficacy.json")).unwrap();
    assert_eq!(efficacy.grpo_start.as_deref(), Some("sft"));
    assert_eq!(efficacy.order, ["grpo", "05_grpo"]);
    // The same adapter under two names wins and loses nothing against itself.
    assert_eq!(
        (efficacy.comparisons[0].won, efficacy.comparisons[0].lost),
        (0, 0)
    );
    assert_eq!(
        agentbench_tuning::io::read_json::<agentbench_tuning::eval::Efficacy>(
            &report.join("efficacy.json")
        )
        .unwrap(),
        efficacy
    );
    let dated = std::fs::read_dir(&report)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("efficacy-") && name.ends_with(".md")
        })
        .count();
    assert_eq!(dated, 1);

    // RFT on the successes among phase 04's samples: two recorded episodes marked solved (one
    // of them twice, kept once) and a failure, mixed 1 : 1 with SFT records, trained on top
    // of the SFT adapter.
    let records = read_sft(&dir.path().join("01_data")).unwrap();
    let sample = |prompt: usize, sample: usize, success: bool| {
        let r = &records[prompt];
        let first = r
            .conversation
            .messages
            .iter()
            .position(|m| m.role == Role::Assistant)
            .unwrap();
        Sample {
            prompt,
            sample,
            task: "db/synthetic".into(),
            kind: r.kind.clone(),
            protocol: r.protocol.unwrap(),
            score: TaskScore {
                success,
                score: if success { 1.0 } else { 0.0 },
                valid: true,
            },
            turns: 1,
            end: EpisodeEnd::Done,
            conversation: r.conversation.clone(),
            prompt_messages: first,
        }
    };
    let samples = [
        sample(0, 0, true),
        sample(0, 1, true),
        sample(1, 0, true),
        sample(2, 0, false),
    ];
    agentbench_tuning::io::write_jsonl(&samples_path(&pairs_dir), &samples).unwrap();
    let rft_config = dir.path().join("rft.json");
    let config = RftConfig {
        sft: one_step_sft(),
        ..common::tiny().rft
    };
    agentbench_tuning::io::write_json(&rft_config, &config).unwrap();
    let (ok, text) = with("rft", &["--config", rft_config.to_str().unwrap()]);
    assert!(ok && text.contains("step    1/1"), "{text}");
    assert!(text.contains("adapter (SFT and RFT stacked)"), "{text}");
    let kept: RftReport =
        agentbench_tuning::io::read_json(&dir.path().join("05_rft/report.json")).unwrap();
    assert_eq!((kept.solved, kept.kept, kept.sft_mixed), (3, 2, 2));
    let trained: Vec<agentbench_tuning::data::SftRecord> =
        agentbench_tuning::io::read_jsonl(&dir.path().join("05_rft/records.jsonl")).unwrap();
    assert_eq!(trained.len(), 4);
    assert!(
        dir.path()
            .join("05_rft/adapter/adapter_model.safetensors")
            .is_file()
    );
    let start: serde_json::Value =
        agentbench_tuning::io::read_json(&dir.path().join("05_rft/start.json")).unwrap();
    assert_eq!(start["adapter"], "03_sft/adapter");
    let stages: Vec<String> = agentbench_tuning::eval::stage_adapters(dir.path())
        .into_iter()
        .map(|(stage, _)| stage)
        .collect();
    assert_eq!(stages, ["base", "sft", "dpo", "rft", "grpo"]);
    // Samples that solved nothing leave nothing to reinforce: a clear error.
    agentbench_tuning::io::write_jsonl(&samples_path(&pairs_dir), &samples[3..]).unwrap();
    let (ok, text) = with("rft", &["--config", rft_config.to_str().unwrap()]);
    assert!(!ok && text.contains("nothing to reinforce"), "{text}");
}

/// docs/cli.md carries every command's help verbatim (`bash scripts/make_cli_doc.sh` writes it).
#[test]
fn the_cli_reference_in_docs_matches_the_help() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cli.md"))
        .expect("docs/cli.md");
    let (ok, top) = abt(&["--help"]);
    assert!(ok, "{top}");
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 10, "{top}");
    let mut helps = vec![("abt".to_string(), top)];
    for c in &commands {
        let (ok, help) = abt(&[c, "--help"]);
        assert!(ok, "{help}");
        helps.push((format!("abt {c}"), help));
    }
    for (name, help) in helps {
        let block = format!("### {name}\n\n```text\n{help}```");
        assert!(
            doc.contains(&block),
            "docs/cli.md is out of date for `{name} --help`: run `bash scripts/make_cli_doc.sh`"
        );
    }
}

/// `abt config` prints the settings every phase resolves to, as TOML the presets read back.
#[test]
fn config_prints_the_resolved_settings_of_every_phase() {
    let (ok, smoke) = abt(&["config", "--profile", "tiny", "--scale", "smoke"]);
    assert!(ok, "{smoke}");
    for section in [
        "[data]",
        "[prompts]",
        "[sft]",
        "[sft.lora]",
        "[pairs]",
        "[step_level]",
        "[dpo]",
        "[grpo]",
        "[quick]",
        "[dbbench]",
    ] {
        assert!(
            smoke.contains(&format!("\n{section}\n")),
            "{section}: {smoke}"
        );
    }
    // The scale's values replace the profile's; the rest is the profile's.
    let sft = smoke.split("\n[sft]\n").nth(1).unwrap();
    assert!(sft.contains("\nmax_steps = 4\n") && sft.contains("learning_rate = 0.002\n"));
    let (ok, full) = abt(&["config", "--profile", "colab-qwen3-4b", "--scale", "full"]);
    assert!(ok, "{full}");
    assert!(full.contains("learning_rate = 0.00005\n"), "{full}");
    let (ok, err) = abt(&["config", "--profile", "huge"]);
    assert!(!ok && err.contains("tiny"), "{err}");
}

#[test]
fn plan_shows_each_phases_memory_and_settings_that_fit_a_smaller_gpu() {
    let (ok, text) = abt(&["plan", "--profile", "colab-qwen2.5-7b", "--gpu", "a100-40"]);
    assert!(ok, "{text}");
    for phase in ["sft", "dpo", "grpo rollouts", "grpo update"] {
        assert!(text.contains(phase), "missing {phase}:\n{text}");
    }
    assert!(text.contains("fits: peak"), "{text}");
    let (ok, text) = abt(&["plan", "--profile", "colab-qwen2.5-7b", "--gpu", "t4"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("does not fit") && text.contains("quantize = \"nf4\""),
        "{text}"
    );
    let (ok, text) = abt(&["plan", "--gpu", "t4", "--qlora", "--seq", "1024", "--json"]);
    assert!(ok, "{text}");
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plan["nf4"]["double_quant"], true);
    let (ok, text) = abt(&["plan", "--gpu", "v100"]);
    assert!(!ok && text.contains("a100-40"), "{text}");
}
