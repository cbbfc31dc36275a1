//! The pipeline's phases, one module per notebook. A notebook's cells and the `abt` command of
//! the same phase call the same functions here, so the two cannot drift apart: the notebook
//! shows what happens between them, the command prints it.
//!
//! | notebook | module | `abt` | writes |
//! |---|---|---|---|
//! | 01 data | [`p01_data`] | `data` | `01_data/sft.jsonl`, `report.json` |
//! | 02 prompts | [`p02_prompts`] | `prompts` | `02_prompts/prompts.jsonl` |
//! | 03 SFT | [`p03_sft`] | `sft` | `03_sft/adapter`, `metrics.jsonl`, checkpoints |
//! | 04 pairs | [`p04_pairs`] | `pairs` | `04_pairs/pairs.jsonl`, `samples.jsonl`, `report.json` |
//! | 05 DPO / RFT / GRPO | [`p05_dpo`], [`p05_rft`], [`p05_grpo`] | `dpo`, `rft`, `grpo` | `05_dpo/adapter`, `05_rft/adapter`, `05_grpo/adapter` |
//! | 06 eval | [`p06_eval`] | `quick-score`, `eval`, `compare` | `eval/quick_<stage>.json`, `06_eval/dbbench_<stage>.json`, `summary.json` |

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::RunContext;
use crate::error::Result;
use crate::model::Decoder;

pub mod p01_data;
pub mod p02_prompts;
pub mod p03_sft;
pub mod p04_pairs;
pub mod p05_dpo;
pub mod p05_grpo;
pub mod p05_rft;
pub mod p06_eval;
mod training;

pub use training::{TrainingPhase, started_from};

/// A phase of the pipeline that writes into the run directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// 00: the set-up check.
    Setup,
    /// 01: the SFT set.
    Data,
    /// 02: the RL and pair prompts.
    Prompts,
    /// 03: LoRA SFT.
    Sft,
    /// 04: preference pairs.
    Pairs,
    /// 05: DPO.
    Dpo,
    /// 05: rejection-sampling fine-tuning.
    Rft,
    /// 05: GRPO.
    Grpo,
    /// 06: the evaluation of every stage.
    Eval,
}

impl Phase {
    /// Every phase, in pipeline order.
    pub const ALL: [Phase; 9] = [
        Phase::Setup,
        Phase::Data,
        Phase::Prompts,
        Phase::Sft,
        Phase::Pairs,
        Phase::Dpo,
        Phase::Rft,
        Phase::Grpo,
        Phase::Eval,
    ];

    /// Its directory in a run (`03_sft`).
    pub fn dir_name(self) -> &'static str {
        match self {
            Phase::Setup => "00_setup",
            Phase::Data => "01_data",
            Phase::Prompts => "02_prompts",
            Phase::Sft => "03_sft",
            Phase::Pairs => "04_pairs",
            Phase::Dpo => "05_dpo",
            Phase::Rft => "05_rft",
            Phase::Grpo => "05_grpo",
            Phase::Eval => "06_eval",
        }
    }

    /// The notebook that runs it.
    pub fn notebook(self) -> &'static str {
        match self {
            Phase::Setup => "00_setup.ipynb",
            Phase::Data => "01_data.ipynb",
            Phase::Prompts => "02_prompts.ipynb",
            Phase::Sft => "03_sft.ipynb",
            Phase::Pairs => "04_pairs.ipynb",
            Phase::Dpo | Phase::Rft | Phase::Grpo => "05_dpo_grpo.ipynb",
            Phase::Eval => "06_eval.ipynb",
        }
    }

    /// The `abt` command that runs it.
    pub fn command(self) -> &'static str {
        match self {
            Phase::Setup => "env",
            Phase::Data => "data",
            Phase::Prompts => "prompts",
            Phase::Sft => "sft",
            Phase::Pairs => "pairs",
            Phase::Dpo => "dpo",
            Phase::Rft => "rft",
            Phase::Grpo => "grpo",
            Phase::Eval => "eval",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// The profile's base model on the default device, stored as its presets' `[model]` section
/// says (NF4 for QLoRA), with `adapter` (usually the SFT adapter, [`RunContext::adapter`])
/// merged into it: the policy pairs are sampled from, and the base DPO and GRPO add their own
/// adapters to.
pub fn load_policy(ctx: &RunContext, adapter: Option<&Path>) -> Result<Decoder> {
    let mut model = load_base(ctx)?;
    if let Some(adapter) = adapter {
        model.merge_adapter(adapter)?;
    }
    Ok(model)
}

/// The profile's base model on the default device in its compute dtype, its projections
/// quantised when the presets' `[model]` section asks for it (NF4, or a GGUF file's own).
pub fn load_base(ctx: &RunContext) -> Result<Decoder> {
    let device = crate::system::device()?;
    let dtype = crate::system::compute_dtype(&device)?;
    let quantization = crate::presets::Presets::for_run(ctx)?.model.quantization();
    Decoder::load_with(&ctx.profile.model_source(), &device, dtype, quantization)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_name_their_directories_in_pipeline_order() {
        let names: Vec<&str> = Phase::ALL.iter().map(|p| &p.dir_name()[..2]).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(Phase::Sft.to_string(), "03_sft");
        let ctx = RunContext {
            profile: crate::config::Profile::Tiny,
            run_dir: "runs/x".into(),
            scale: crate::config::Scale::Smoke,
        };
        assert_eq!(
            ctx.adapter(Phase::Grpo),
            Path::new("runs/x/05_grpo/adapter")
        );
    }
}
