//! `abt`: the agentbench-tuning command line, every phase runnable without Jupyter.

use std::process::ExitCode;

use agentbench_tuning::system::SystemReport;
use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Env { json } => env(json),
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
fn env(json: bool) -> agentbench_tuning::Result<()> {
    let report = SystemReport::collect()?;
    if json {
        let text = serde_json::to_string_pretty(&report).expect("report serialises");
        println!("{text}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
