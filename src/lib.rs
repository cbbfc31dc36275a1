//! agentbench-tuning: fine-tune small open chat models into better AgentBench agents.
//!
//! The library behind six notebooks (01 data, 02 prompts, 03 SFT, 04 pairs, 05 DPO/GRPO,
//! 06 eval) and the `abt` command line. A notebook starts with
//!
//! ```ignore
//! :dep agentbench_tuning = { path = ".." }
//! use agentbench_tuning::prelude::*;
//! let ctx = RunContext::from_env()?;
//! ```
//!
//! and then calls one or two library functions per cell; charts ([`plot`]) and tables
//! ([`table`]) display inline through [`display::Show`].

pub mod cache;
pub mod chat;
pub mod config;
pub mod data;
pub mod display;
pub mod env;
pub mod error;
pub mod eval;
pub mod generate;
pub mod hub;
pub mod io;
pub mod memory;
pub mod model;
pub mod pairs;
pub mod paths;
pub mod phases;
pub mod plot;
pub mod prelude;
pub mod presets;
pub mod progress;
pub mod prompts;
pub mod python;
pub mod report;
pub mod reward;
pub mod rng;
#[cfg(feature = "serve")]
pub mod serve;
pub mod system;
pub mod table;
pub mod train;
pub mod transcript;

pub use error::{Error, Result};
