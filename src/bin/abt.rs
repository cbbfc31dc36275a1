//! `abt`: the agentbench-tuning command line, every phase runnable without Jupyter.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use agentbench_tuning::chat::{Conversation, Message, Tokenizer};
use agentbench_tuning::config::{Profile, RunContext, Scale};
use agentbench_tuning::generate::{ChatModel, GenerateOptions, Sampling};
use agentbench_tuning::memory::{Gpu, Overrides, Place, Plan};
use agentbench_tuning::model::ModelSource;
use agentbench_tuning::phases::{self, Phase, TrainingPhase};
use agentbench_tuning::presets::Presets;
use agentbench_tuning::system::{self, SystemReport};
use agentbench_tuning::train::Method;
use agentbench_tuning::{Error, Result};
use clap::{Args, Parser, Subcommand};

/// Fine-tune small chat models into better AgentBench agents.
#[derive(Debug, Parser)]
#[command(name = "abt", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the device, threads, cache directories and whether the default model is present.
    Env {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Generate a reply with a model (and optionally a LoRA adapter) to a prompt or messages.
    Generate(GenerateArgs),
    /// Print the settings every phase resolves to under a profile and scale (from
    /// `configs/profiles/*.toml` and `configs/scales/*.toml`), as TOML.
    Config(ConfigArgs),
    /// The estimated peak memory of each phase's largest step under a profile on a GPU (or
    /// the CPU), in parts, whether it fits, and settings that do when it does not.
    Plan(PlanArgs),
    /// Phase 01: build the SFT set (`<run>/01_data/sft.jsonl` and `report.json`).
    Data(DataArgs),
    /// Phase 02: build the RL / pair prompts (`<run>/02_prompts/prompts.jsonl`).
    Prompts(PromptsArgs),
    /// Phase 03: LoRA SFT on `<run>/01_data/sft.jsonl` (`<run>/03_sft/adapter/`); resumes
    /// from the last checkpoint unless `--fresh`.
    Sft(SftArgs),
    /// Phase 04: best-of-N preference pairs from the SFT adapter's own episodes on the phase
    /// 02 prompts (`<run>/04_pairs/pairs.jsonl`, `samples.jsonl`, `report.json`).
    Pairs(PairsArgs),
    /// Phase 05, DPO: adapters trained on `<run>/04_pairs/pairs.jsonl` on top of the SFT
    /// adapter (`<run>/05_dpo/adapter/`); resumes from the last checkpoint unless `--fresh`.
    Dpo(DpoArgs),
    /// Phase 05, RFT: adapters trained on the successes among phase 04's samples, mixed with
    /// SFT records, on top of the SFT adapter (`<run>/05_rft/adapter/`); later rounds sample
    /// the latest policy; resumes from the last checkpoint unless `--fresh`.
    Rft(RftArgs),
    /// Phase 05, GRPO: adapters trained by multi-turn RL in the environments on the phase 02
    /// prompts, on top of the SFT adapter (`<run>/05_grpo/adapter/`); resumes from the last
    /// checkpoint unless `--fresh`.
    Grpo(GrpoArgs),
    /// The quick score: the base model, or the base with `--adapter`, plays the dev split's
    /// synthetic DB tasks and household games (`<run>/eval/quick_<label>.json`; `--heldout`:
    /// the test split's, `heldout_<label>.json`); `--against` compares with an earlier score of
    /// the same tasks.
    QuickScore(QuickScoreArgs),
    /// The final comparison: every stage the run holds (the base model and each adapter) plays
    /// the held-out test split (`<run>/eval/heldout_<stage>.json`, saved in parts as they
    /// finish, so a call that is cut off resumes), each compared with the stage it started
    /// from by an exact sign test (`<run>/06_eval/efficacy.json`; `--report DIR` adds a dated
    /// report).
    Heldout(HeldoutArgs),
    /// DB Bench evaluation: the base model, or the base with `--adapter`, plays the items of a
    /// DB Bench-format file, scored with AgentBench's metric
    /// (`<run>/06_eval/dbbench_<label>.json`).
    Eval(EvalArgs),
    /// The stage comparison: every held-out and quick score (`<run>/eval/*.json`) and DB Bench
    /// score (`<run>/06_eval/dbbench_*.json`) of the run in one table
    /// (`<run>/06_eval/summary.json`).
    Compare(CompareArgs),
    /// A browsable report of a run, readable from disk with no server:
    /// `<run>/report/index.html` (the stage comparison, every saved chart, the executed
    /// notebooks) and one page per executed notebook.
    Report(ReportArgs),
    /// An OpenAI-compatible server (`POST /v1/chat/completions`, `GET /v1/models`) for a model
    /// and an adapter, e.g. for AgentBench's HTTP agent; SIGTERM drains requests in flight.
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
}

#[cfg(feature = "serve")]
#[derive(Debug, Args)]
struct ServeArgs {
    /// Model: a directory, a .gguf file, a hub repo id (org/name[@rev]) or `default`.
    #[arg(long, default_value = "default")]
    model: String,
    /// A PEFT adapter directory to serve on top (e.g. `runs/<name>/05_grpo/adapter`).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Address to bind (`0.0.0.0` to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model name clients ask for.
    #[arg(long, default_value = "abt-serve")]
    served_name: String,
    /// Most sequences generated together.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Milliseconds the server waits for more requests to batch with the first.
    #[arg(long, default_value_t = 20)]
    batch_wait_ms: u64,
    /// Most tokens per sequence, prompt and reply (the model's context by default).
    #[arg(long)]
    max_context: Option<usize>,
    /// New tokens of a request that sets no `max_tokens`.
    #[arg(long, default_value_t = 512)]
    default_max_tokens: usize,
    /// Qwen3's thinking switch for every prompt (a request's `chat_template_kwargs` wins).
    #[arg(long)]
    thinking: Option<bool>,
}

#[derive(Debug, Args)]
struct CompareArgs {
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The run directory (`runs/<name>`).
    run_dir: PathBuf,
    /// Open every page in headless Chromium (`$ABT_CHROMIUM`, else `chromium` on the PATH)
    /// and fail if a chart is missing, empty or overflows, or a page has an error.
    #[arg(long)]
    check: bool,
    /// With `--check`: save a screenshot of each page into this directory.
    #[arg(long, requires = "check")]
    screenshots: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct HeldoutArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Only these stages, comma-separated (e.g. `base,sft`); every stage the run holds when
    /// absent.
    #[arg(long, value_delimiter = ',')]
    stages: Vec<String>,
    /// Also write the dated report there (`efficacy-<date>.md`, its JSON and chart) and the
    /// comparison as `efficacy.json` (e.g. `docs/results`).
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EvalArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A DB Bench-format JSONL file (AgentBench's `standard.jsonl`, or your own); default:
    /// `$ABT_DBBENCH_ITEMS`, else AgentBench's 60 dev items in `data/agentbench-dbbench/`.
    #[arg(long)]
    items: Option<PathBuf>,
    /// A PEFT adapter directory (e.g. `<run>/05_grpo/adapter`); the base model when absent.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Name of this evaluation (`base`, or the adapter's phase directory name).
    #[arg(long)]
    label: Option<String>,
    /// The protocol: `text` (AgentBench v0.2) or `tools` (function calling).
    #[arg(long, default_value = "text")]
    protocol: agentbench_tuning::env::Protocol,
    /// Only N items, evenly spaced through the file (every type keeps its share).
    #[arg(long)]
    limit: Option<usize>,
    /// Most new tokens per reply.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Episodes played together.
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

#[derive(Debug, Args)]
struct QuickScoreArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A PEFT adapter directory (e.g. `<run>/03_sft/adapter`); the base model when absent.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Name of this score (`base`, or the adapter's phase directory name).
    #[arg(long)]
    label: Option<String>,
    /// Held-out DB tasks (the profile's default otherwise).
    #[arg(long)]
    db: Option<usize>,
    /// Held-out household games (the profile's default otherwise).
    #[arg(long)]
    household: Option<usize>,
    /// An earlier score's JSON to compare with, task by task.
    #[arg(long)]
    against: Option<PathBuf>,
    /// Play the test split (the profile's `[heldout]` tasks) instead of the dev split.
    #[arg(long)]
    heldout: bool,
}

#[derive(Debug, Args)]
struct SftArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A JSON file with a full `SftConfig` (the profile's defaults otherwise).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Stop after this many optimizer steps in all (the schedule spans them).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Delete earlier checkpoints and start over.
    #[arg(long)]
    fresh: bool,
}

#[derive(Debug, Args)]
struct PairsArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A JSON file with a full `PairsConfig` (the profile's defaults otherwise).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The policy's adapter (default `<run>/03_sft/adapter`).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Episodes sampled per prompt.
    #[arg(long)]
    samples: Option<usize>,
    /// Prompts used at most.
    #[arg(long)]
    max_prompts: Option<usize>,
    /// A JSON `TeacherConfig`: a teacher model also plays each prompt, its episode chosen
    /// against the student's worst (answers cached in `04_pairs/teacher_cache/`).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Also make step-level pairs: two next turns after the same history, valued by rollouts.
    #[arg(long)]
    step_level: bool,
}

#[derive(Debug, Args)]
struct DpoArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A JSON file with a full `DpoConfig` (the profile's defaults otherwise).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The adapter DPO starts from, merged into the weights (default `<run>/03_sft/adapter`).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Stop after this many optimizer steps in all (each round).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Rounds of iterative DPO (new pairs from the latest policy each round after the first).
    #[arg(long)]
    rounds: Option<usize>,
    /// Delete earlier checkpoints and the cached reference, and start over.
    #[arg(long)]
    fresh: bool,
}

#[derive(Debug, Args)]
struct RftArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A JSON file with a full `RftConfig` (the profile's defaults otherwise).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The adapter RFT starts from, merged into the weights (default `<run>/03_sft/adapter`).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Stop after this many optimizer steps in all (each round).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Rounds of sample → keep → train (after the first, on phase 04's samples, each samples
    /// the latest policy).
    #[arg(long)]
    rounds: Option<usize>,
    /// Delete earlier checkpoints and start over.
    #[arg(long)]
    fresh: bool,
}

#[derive(Debug, Args)]
struct GrpoArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A JSON file with a full `GrpoConfig` (the profile's defaults otherwise).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The adapter GRPO starts from, merged into the weights (default `<run>/03_sft/adapter`).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Steps (rollout batches) in all.
    #[arg(long)]
    steps: Option<usize>,
    /// Delete earlier checkpoints and metrics, and start over.
    #[arg(long)]
    fresh: bool,
}

/// Where a phase runs: profile and run directory (defaults from `ABT_PROFILE`/`ABT_RUN_DIR`).
#[derive(Debug, Args)]
struct RunArgs {
    /// Profile: tiny, colab-qwen2.5-7b, colab-qwen2.5-7b-qlora or colab-qwen3-4b.
    #[arg(long)]
    profile: Option<Profile>,
    /// Run directory (`runs/<name>`).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Scale: full, short or smoke (default `ABT_SCALE`, else full).
    #[arg(long)]
    scale: Option<Scale>,
}

impl RunArgs {
    fn context(&self) -> Result<RunContext> {
        let mut ctx = RunContext::from_env()?;
        if let Some(p) = self.profile {
            ctx.profile = p;
        }
        if let Some(dir) = &self.run_dir {
            ctx.run_dir = agentbench_tuning::paths::resolve(dir);
        }
        if let Some(scale) = self.scale {
            ctx.scale = scale;
        }
        Ok(ctx)
    }
}

#[derive(Debug, Args)]
struct DataArgs {
    #[command(flatten)]
    run: RunArgs,
    /// A JSON file with a full `DataConfig` (the profile's defaults otherwise).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Add a Spider-format folder: a path or hf://datasets/<owner>/<name>[@<revision>][/<folder>].
    #[arg(long)]
    spider: Option<agentbench_tuning::data::DataSource>,
    /// Add a SParC- or CoSQL-format folder (multi-turn episodes), local or hf://datasets/....
    #[arg(long)]
    interactions: Option<agentbench_tuning::data::DataSource>,
    /// Use these agent trajectories instead of the profile's (OpenAI messages or ShareGPT;
    /// FireAct's multitask.jsonl), local or hf://datasets/....
    #[arg(long)]
    react: Option<agentbench_tuning::data::DataSource>,
    /// Add general chat (OpenAI messages or ShareGPT; JSON, JSONL or parquet), local or
    /// hf://datasets/... (mixed at the configured ratio).
    #[arg(long)]
    chat: Option<agentbench_tuning::data::DataSource>,
    /// Skip the token-length filter (no tokenizer is loaded).
    #[arg(long)]
    no_length_filter: bool,
    /// Print each corpus, its licence, the files the build would read and how much is left to
    /// fetch, then stop (only small index files are fetched).
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct PromptsArgs {
    #[command(flatten)]
    run: RunArgs,
    /// DB prompts per protocol.
    #[arg(long)]
    db: Option<usize>,
    /// Household prompts per protocol.
    #[arg(long)]
    household: Option<usize>,
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// Model: a directory, a .gguf file, a hub repo id (org/name[@rev]) or `default`.
    #[arg(long, default_value = "default")]
    model: String,
    /// A PEFT adapter directory to apply.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The user message.
    #[arg(
        long,
        conflicts_with = "messages",
        required_unless_present = "messages"
    )]
    prompt: Option<String>,
    /// A JSON file with OpenAI `messages` (a list, or {"messages": [...], "tools": [...]}).
    #[arg(long)]
    messages: Option<PathBuf>,
    /// A system message put before `--prompt`.
    #[arg(long, requires = "prompt")]
    system: Option<String>,
    /// Most new tokens.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Repetition penalty (1 = none).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop at this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Qwen3 thinking on or off (left to the template when absent).
    #[arg(long)]
    thinking: Option<bool>,
    /// Print JSON (text, ids, log-probs, finish reason) instead of the text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Env { json } => env(json),
        Command::Generate(args) => generate(&args),
        Command::Config(args) => print_config(&args),
        Command::Plan(args) => plan(&args),
        Command::Data(args) => data(&args),
        Command::Prompts(args) => prompts(&args),
        Command::Pairs(args) => pairs(&args),
        Command::Dpo(args) => dpo(&args),
        Command::Rft(args) => rft(&args),
        Command::Grpo(args) => grpo(&args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve(&args),
        Command::Sft(args) => sft(&args),
        Command::QuickScore(args) => quick_score(&args),
        Command::Eval(args) => eval(&args),
        Command::Compare(args) => compare_stages(&args),
        Command::Report(args) => report(&args),
        Command::Heldout(args) => heldout(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `abt env`.
fn env(json: bool) -> Result<()> {
    let report = SystemReport::collect()?;
    if json {
        let text = serde_json::to_string_pretty(&report).expect("report serialises");
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// `abt generate`.
fn generate(args: &GenerateArgs) -> Result<()> {
    let conversation = match (&args.prompt, &args.messages) {
        (Some(prompt), _) => {
            let mut messages = Vec::new();
            if let Some(system) = &args.system {
                messages.push(Message::system(system));
            }
            messages.push(Message::user(prompt));
            Conversation::new(messages)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
            Conversation::from_json(&text).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })?
        }
        (None, None) => return Err(Error::Generate("give --prompt or --messages".into())),
    };
    let device = system::device()?;
    let dtype = system::compute_dtype(&device)?;
    let mut model = ChatModel::load(
        &ModelSource::parse(&args.model),
        args.adapter.as_deref(),
        &device,
        dtype,
    )?;
    model.render.enable_thinking = args.thinking;
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling: Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            repetition_penalty: args.repetition_penalty,
        },
        seed: args.seed,
        stop_strings: args.stop.clone(),
        progress: !args.json,
        ..GenerateOptions::default()
    };
    let reply = model.reply(&conversation, &options)?;
    if args.json {
        let text = serde_json::to_string(&reply).expect("a generation serialises");
        println!("{text}");
    } else {
        println!("{}", reply.text);
    }
    Ok(())
}

#[derive(Debug, Args)]
struct ConfigArgs {
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The GPU to plan for: t4, l4, a100-40, a100-80 or h100 (default: this machine's device).
    #[arg(long)]
    gpu: Option<Gpu>,
    /// Tokens per training sequence and generation context (default: each phase's setting).
    #[arg(long)]
    seq: Option<usize>,
    /// Sequences (DPO: pairs) per training step (default: each phase's setting).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Quantise the base model to NF4 (QLoRA) whatever the profile says.
    #[arg(long)]
    qlora: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `abt plan`.
fn plan(args: &PlanArgs) -> Result<()> {
    let ctx = args.run.context()?;
    let presets = Presets::for_run(&ctx)?;
    let place = match args.gpu {
        Some(gpu) => Place::Gpu(gpu),
        None => Place::current()?,
    };
    let overrides = Overrides {
        seq: args.seq,
        micro_batch: args.micro_batch,
        qlora: args.qlora,
    };
    let plan = Plan::new(ctx.profile, &presets, place, overrides);
    if args.json {
        let text = serde_json::to_string_pretty(&plan).expect("a plan serialises");
        println!("{text}");
        return Ok(());
    }
    print!("{plan}");
    let gb = |b: u64| b as f64 / 1e9;
    match place.budget() {
        None => println!("peak {:.1} GB on the CPU", gb(plan.peak())),
        Some(budget) if plan.fits() => println!(
            "fits: peak {:.1} GB of {:.1} GB (estimate; docs/memory.md)",
            gb(plan.peak()),
            gb(budget)
        ),
        Some(budget) => {
            println!(
                "does not fit: peak {:.1} GB of {:.1} GB (estimate; docs/memory.md)",
                gb(plan.peak()),
                gb(budget)
            );
            match Plan::suggestion(ctx.profile, &presets, place) {
                Some((changes, fitting)) => {
                    println!("fits with {changes}: peak {:.1} GB", gb(fitting.peak()))
                }
                None => println!("no setting the planner tries fits this GPU"),
            }
        }
    }
    Ok(())
}

/// `abt config`.
fn print_config(args: &ConfigArgs) -> Result<()> {
    let ctx = args.run.context()?;
    println!(
        "# profile {}, scale {}: {}",
        ctx.profile,
        ctx.scale.name(),
        Presets::files(ctx.profile, ctx.scale)?.join(" + ")
    );
    print!("{}", Presets::for_run(&ctx)?.to_toml()?);
    Ok(())
}

/// `abt data --dry-run`: each corpus, its licence, its files and what is left to fetch.
fn print_data_plan(config: &agentbench_tuning::data::DataConfig) -> Result<()> {
    use agentbench_tuning::data::plan::{human_bytes, plan_sources};
    let planned = plan_sources(config);
    if planned.is_empty() {
        println!("no corpus configured: the build uses the generated data only");
    }
    let mut stops = 0;
    for p in &planned {
        let (fetch, unknown) = p.to_fetch();
        println!(
            "{} {}{}\n  licence: {}\n  {} files, {} to fetch{}, {} cached",
            p.source,
            p.location,
            if p.optional { " (optional)" } else { "" },
            p.licence.as_deref().unwrap_or("not stated on its card"),
            p.files.len(),
            human_bytes(fetch),
            if unknown > 0 {
                format!(" (+ {unknown} of unknown size)")
            } else {
                String::new()
            },
            human_bytes(p.cached_bytes())
        );
        let shown = if p.files.len() > 10 { 5 } else { p.files.len() };
        for f in &p.files[..shown] {
            println!(
                "    {:<60} {:>10} {}",
                f.path,
                f.bytes.map_or("?".into(), human_bytes),
                if f.cached { "cached" } else { "to fetch" }
            );
        }
        if shown < p.files.len() {
            println!("    … and {} more", p.files.len() - shown);
        }
        if let Some(e) = &p.error {
            if p.optional {
                println!("  would be skipped: {e}");
            } else {
                stops += 1;
                println!("  would stop the build: {e}");
            }
        }
    }
    if stops > 0 {
        return Err(Error::InvalidConfig {
            source_name: "abt data --dry-run".into(),
            reason: format!("{stops} required corpus(es) cannot be read; see above"),
        });
    }
    Ok(())
}

/// `abt data`.
fn data(args: &DataArgs) -> Result<()> {
    let ctx = args.run.context()?;
    let mut config = settings(args.config.as_deref(), Presets::for_run(&ctx)?.data)?;
    config.spider = args.spider.clone().or(config.spider);
    if let Some(react) = &args.react {
        config.react = vec![react.clone()];
    }
    config.interactions = args.interactions.clone().or(config.interactions);
    config.chat = args.chat.clone().or(config.chat);
    if args.dry_run {
        return print_data_plan(&config);
    }
    let tokenizer = if args.no_length_filter {
        None
    } else {
        Some(Tokenizer::load(&ctx.profile.model_source())?)
    };
    let (records, report) = phases::p01_data::build(&ctx, &config, tokenizer.as_ref())?;
    for line in phases::p01_data::source_lines(&report) {
        println!("{line}");
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    println!(
        "{} records ({} contaminated dropped, {} duplicates, {} too long) in {:.1}s, {:.0} records/s -> {}",
        records.len(),
        report.contaminated.len(),
        report.dedup.exact + report.dedup.near,
        report.too_long,
        report.seconds,
        report.records_per_s,
        ctx.phase_dir(Phase::Data).display()
    );
    Ok(())
}

/// `abt prompts`.
fn prompts(args: &PromptsArgs) -> Result<()> {
    let ctx = args.run.context()?;
    let mut config = Presets::for_run(&ctx)?.prompts;
    config.db = args.db.unwrap_or(config.db);
    config.household = args.household.unwrap_or(config.household);
    let prompts = phases::p02_prompts::build(&ctx, &config)?;
    println!(
        "{} prompts -> {}",
        prompts.len(),
        ctx.phase_dir(Phase::Prompts)
            .join("prompts.jsonl")
            .display()
    );
    Ok(())
}

/// A phase's settings: the JSON file given with `--config`, else the preset.
fn settings<T: serde::de::DeserializeOwned>(file: Option<&Path>, preset: T) -> Result<T> {
    match file {
        Some(path) => agentbench_tuning::io::read_json(path),
        None => Ok(preset),
    }
}

/// Trains a phase to its last step, printing where a resumed run stands and one `line` per step.
fn train_to_end<M: Method>(
    phase: &mut TrainingPhase<M>,
    line: impl Fn(&M::Metrics, usize) -> String,
) -> Result<()> {
    for opening in phase.opening_lines() {
        println!("{opening}");
    }
    let total = phase.trainer.total_steps();
    phase
        .trainer
        .train(None, |m| println!("{}", line(m, total)))?;
    Ok(())
}

/// `abt sft`.
fn sft(args: &SftArgs) -> Result<()> {
    let ctx = args.run.context()?;
    let mut config = settings(args.config.as_deref(), Presets::for_run(&ctx)?.sft)?;
    if args.max_steps.is_some() {
        config.max_steps = args.max_steps;
    }
    let mut sft = phases::p03_sft::open(&ctx, config, args.fresh)?;
    train_to_end(&mut sft, |m, total| m.line(total))?;
    let adapter = sft.save_adapter()?;
    println!("adapter -> {}", adapter.display());
    Ok(())
}

/// `abt pairs`.
fn pairs(args: &PairsArgs) -> Result<()> {
    let ctx = args.run.context()?;
    let presets = Presets::for_run(&ctx)?;
    let mut config = settings(args.config.as_deref(), presets.pairs.clone())?;
    config.samples = args.samples.unwrap_or(config.samples);
    if args.max_prompts.is_some() {
        config.max_prompts = args.max_prompts;
    }
    let mut phase = phases::p04_pairs::PairsPhase::open(&ctx, config, args.adapter.clone())?;
    phase.best_of_n()?;
    print!("{}", phase.report.table()?);
    print!("{}", phase.report.dropped_table()?);
    if let Some(path) = &args.teacher {
        let (report, stats) = phase.teacher(path)?;
        print!("{}", report.table()?);
        println!(
            "teacher: {} requests, {} cache hits, {} retries",
            stats.requests, stats.cache_hits, stats.retries
        );
    }
    if args.step_level {
        let (_, report) = phase.step_level(&presets.step_level)?;
        print!("{}", report.table()?);
    }
    println!(
        "{} pairs -> {}",
        phase.pairs.len(),
        phase.dir().join("pairs.jsonl").display()
    );
    Ok(())
}

/// `abt dpo`.
fn dpo(args: &DpoArgs) -> Result<()> {
    let ctx = args.run.context()?;
    let presets = Presets::for_run(&ctx)?;
    let mut config = settings(args.config.as_deref(), presets.dpo.clone())?;
    if args.max_steps.is_some() {
        config.max_steps = args.max_steps;
    }
    config.rounds = args.rounds.unwrap_or(config.rounds);
    let mut dpo = phases::p05_dpo::open(&ctx, config, args.adapter.clone(), args.fresh)?;
    train_to_end(&mut dpo, |m, total| m.line(total))?;
    let done = dpo.finish(&ctx, &presets.pairs, |round, steps, m| {
        println!("round {round} {}", m.line(steps))
    })?;
    for r in &done.rounds {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    }
    println!(
        "adapter (SFT and DPO stacked) -> {}",
        done.adapter.display()
    );
    Ok(())
}

/// `abt rft`.
fn rft(args: &RftArgs) -> Result<()> {
    let ctx = args.run.context()?;
    let presets = Presets::for_run(&ctx)?;
    let mut config = settings(args.config.as_deref(), presets.rft.clone())?;
    if args.max_steps.is_some() {
        config.sft.max_steps = args.max_steps;
    }
    config.rounds = args.rounds.unwrap_or(config.rounds);
    let (mut rft, kept) = phases::p05_rft::open(&ctx, &config, args.adapter.clone(), args.fresh)?;
    print!("{}", kept.table());
    train_to_end(&mut rft, |m, total| m.line(total))?;
    let done = rft.finish_rft(&ctx, &config, &presets.pairs, |round, steps, m| {
        println!("round {round} {}", m.line(steps))
    })?;
    if !done.rounds.is_empty() {
        print!("{}", phases::p05_rft::rounds_table(&done.rounds)?);
    }
    println!(
        "adapter (SFT and RFT stacked) -> {}",
        done.adapter.display()
    );
    Ok(())
}

/// `abt grpo`.
fn grpo(args: &GrpoArgs) -> Result<()> {
    let ctx = args.run.context()?;
    let presets = Presets::for_run(&ctx)?;
    let mut config = settings(args.config.as_deref(), presets.grpo.clone())?;
    config.steps = args.steps.unwrap_or(config.steps);
    let eval = presets.quick.tasks()?;
    let mut grpo = phases::p05_grpo::open(&ctx, config, eval, args.adapter.clone(), args.fresh)?;
    train_to_end(&mut grpo, |m, total| m.line(total))?;
    let adapter = grpo.save_adapter()?;
    println!("adapter (SFT and GRPO stacked) -> {}", adapter.display());
    Ok(())
}

/// The label of a scored model: `label` if given, else `base` without an adapter, else the
/// name of the adapter's phase directory (`03_sft/adapter` → `03_sft`).
fn score_label(adapter: Option<&std::path::Path>, label: Option<&str>) -> String {
    match (label, adapter) {
        (Some(label), _) => label.to_string(),
        (None, None) => "base".into(),
        (None, Some(dir)) => dir
            .parent()
            .and_then(|p| p.file_name())
            .map_or_else(|| "adapter".into(), |n| n.to_string_lossy().into_owned()),
    }
}

/// `abt serve`.
#[cfg(feature = "serve")]
fn serve(args: &ServeArgs) -> Result<()> {
    use agentbench_tuning::serve::ServeConfig;
    let device = system::device()?;
    let mut model = ChatModel::load(
        &ModelSource::parse(&args.model),
        args.adapter.as_deref(),
        &device,
        system::compute_dtype(&device)?,
    )?;
    model.render.enable_thinking = args.thinking;
    let context = model.decoder.config().max_position_embeddings;
    let mut config = ServeConfig::new(args.max_context.unwrap_or(context));
    config.host.clone_from(&args.host);
    config.port = args.port;
    config.served_name.clone_from(&args.served_name);
    config.batch.max_batch = args.max_batch.max(1);
    config.batch.wait = std::time::Duration::from_millis(args.batch_wait_ms);
    config.batch.default_max_tokens = args.default_max_tokens;
    agentbench_tuning::serve::serve(model, &config)
}

/// `abt quick-score`.
fn quick_score(args: &QuickScoreArgs) -> Result<()> {
    use agentbench_tuning::eval::{QuickScore, compare};
    let ctx = args.run.context()?;
    let presets = Presets::for_run(&ctx)?;
    let mut config = if args.heldout {
        presets.heldout
    } else {
        presets.quick
    };
    config.db = args.db.unwrap_or(config.db);
    config.household = args.household.unwrap_or(config.household);
    let label = score_label(args.adapter.as_deref(), args.label.as_deref());
    let tokenizer = Tokenizer::load(&ctx.profile.model_source())?;
    let score =
        phases::p06_eval::quick_score(&ctx, &label, args.adapter.as_deref(), &config, &tokenizer)?;
    print!("{}", score.table()?);
    print!("{}", score.kind_table("household")?);
    print!(
        "{}",
        score
            .errors()
            .table(&format!("quick score · {label} · why tasks failed"))?
    );
    let path = config.score_path(&ctx.run_dir, &label);
    println!(
        "{} tasks in {:.0} s -> {}",
        score.results.len(),
        score.seconds,
        path.display()
    );
    if let Some(other) = &args.against {
        let other: QuickScore = agentbench_tuning::io::read_json(other)?;
        print!("{}", compare(&other, &score)?.table());
    }
    Ok(())
}

/// `abt eval`.
fn eval(args: &EvalArgs) -> Result<()> {
    use agentbench_tuning::eval::DbBenchConfig;
    let ctx = args.run.context()?;
    let items = args
        .items
        .clone()
        .unwrap_or_else(agentbench_tuning::paths::dbbench_eval_items);
    let config = DbBenchConfig {
        protocol: args.protocol,
        batch: args.batch,
        max_new_tokens: args.max_new_tokens,
        max_items: args.limit,
        ..DbBenchConfig::default()
    };
    let label = score_label(args.adapter.as_deref(), args.label.as_deref());
    let tokenizer = Tokenizer::load(&ctx.profile.model_source())?;
    let (score, path) = phases::p06_eval::dbbench(
        &ctx,
        &label,
        args.adapter.as_deref(),
        &items,
        &config,
        &tokenizer,
    )?;
    print!("{}", score.table()?);
    print!(
        "{}",
        score
            .errors()
            .table(&format!("DB Bench · {label} · why items failed"))?
    );
    println!(
        "{} items in {:.0} s -> {}",
        score.results.len(),
        score.seconds,
        path.display()
    );
    Ok(())
}

/// `abt heldout`.
fn heldout(args: &HeldoutArgs) -> Result<()> {
    let ctx = args.run.context()?;
    let config = Presets::for_run(&ctx)?.heldout;
    let mut stages = agentbench_tuning::eval::stage_adapters(&ctx.run_dir);
    if !args.stages.is_empty() {
        if let Some(unknown) = args
            .stages
            .iter()
            .find(|s| !stages.iter().any(|(stage, _)| stage == *s))
        {
            let held: Vec<&str> = stages.iter().map(|(s, _)| s.as_str()).collect();
            return Err(Error::InvalidConfig {
                source_name: "--stages".into(),
                reason: format!(
                    "the run has no stage {unknown} (it holds {})",
                    held.join(", ")
                ),
            });
        }
        stages.retain(|(stage, _)| args.stages.contains(stage));
    }
    let tokenizer = Tokenizer::load(&ctx.profile.model_source())?;
    for (stage, adapter) in &stages {
        let score =
            phases::p06_eval::quick_score(&ctx, stage, adapter.as_deref(), &config, &tokenizer)?;
        println!(
            "{stage}: {} of {} solved, mean reward {:.3} ({:.0} s)",
            score.solved(),
            score.results.len(),
            score.mean_reward(),
            score.seconds
        );
    }
    let summary = phases::p06_eval::summarise(&ctx)?;
    let Some(efficacy) = &summary.efficacy else {
        return Err(Error::Batch("no held-out scores to compare".into()));
    };
    print!("{}", efficacy.table()?);
    print!("{}", efficacy.comparisons_table()?);
    println!(
        "-> {}",
        ctx.phase_dir(Phase::Eval).join("efficacy.json").display()
    );
    if let Some(dir) = &args.report {
        let refs: Vec<&agentbench_tuning::eval::QuickScore> =
            summary.scores.decisive().iter().collect();
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        let report = efficacy.write_report(dir, &refs, &config, &command)?;
        println!("-> {}", report.display());
    }
    Ok(())
}

/// `abt report`.
fn report(args: &ReportArgs) -> Result<()> {
    let report = agentbench_tuning::report::RunReport::build(&agentbench_tuning::paths::resolve(
        &args.run_dir,
    ))?;
    let index = report.write()?;
    println!(
        "{} notebooks, {} charts -> {}",
        report.notebooks().len(),
        report.charts().len(),
        index.display()
    );
    if !args.check {
        return Ok(());
    }
    use agentbench_tuning::report::{check_report, find_chromium};
    let chromium = find_chromium().ok_or_else(|| {
        Error::Report(
            "--check needs Chromium: install it (Debian: apt-get install chromium) or set \
             ABT_CHROMIUM to its path"
                .into(),
        )
    })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let check = check_report(dir, &chromium, args.screenshots.as_deref())?;
    print!("{}", check.summary());
    if check.passed() {
        Ok(())
    } else {
        Err(Error::Report(format!(
            "{} of {} pages do not show as they should",
            check.pages.iter().filter(|p| !p.passed()).count(),
            check.pages.len()
        )))
    }
}

/// `abt compare`.
fn compare_stages(args: &CompareArgs) -> Result<()> {
    use agentbench_tuning::eval::ErrorReport;
    let ctx = args.run.context()?;
    let summary = phases::p06_eval::summarise(&ctx)?;
    print!("{}", summary.comparison.table()?);
    if let Some(efficacy) = &summary.efficacy {
        print!("{}", efficacy.comparisons_table()?);
    }
    let errors = summary.scores.task_errors();
    if !errors.is_empty() {
        let named: Vec<(&str, &ErrorReport)> =
            errors.iter().map(|(l, e)| (l.as_str(), e)).collect();
        print!("{}", ErrorReport::comparison_table(&named)?);
    }
    println!(
        "-> {}",
        ctx.phase_dir(Phase::Eval).join("summary.json").display()
    );
    Ok(())
}
