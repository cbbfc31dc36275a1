//! `abt`: the agentbench-tuning command line, every phase runnable without Jupyter.

use std::path::PathBuf;
use std::process::ExitCode;

use agentbench_tuning::chat::{Conversation, Message};
use agentbench_tuning::generate::{ChatModel, GenerateOptions, Sampling};
use agentbench_tuning::model::ModelSource;
use agentbench_tuning::system::{self, SystemReport};
use agentbench_tuning::{Error, Result};
use candle_core::DType;
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
    let dtype = if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    };
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
