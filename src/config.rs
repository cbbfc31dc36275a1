//! Run profiles and the run context a notebook or CLI command works in.
//!
//! A profile is a named preset (`tiny` for CPU and CI, `colab-*` for the target models on Colab
//! GPUs); later phases read their defaults from it. The context is read from the environment so
//! the same notebook runs unchanged under CI, Colab and a local Jupyter:
//! `ABT_PROFILE` (default `tiny`), `ABT_RUN_DIR` (default `runs/interactive` in the checkout) and
//! `ABT_SCALE` (`full`, `short` for the main job, `smoke` for CI; see [`Scale`]; `ABT_SMOKE=1`
//! is short for `smoke`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::display::Show;
use crate::error::{Error, Result};
use crate::paths;
use crate::phases::Phase;
use crate::table::Table;

/// How much of each phase a run does, on top of its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// The profile's settings.
    Full,
    /// Fewer training steps, samples and held-out tasks, so the whole pipeline runs on `tiny`
    /// in about half an hour on two cores (the main job): every phase really trains and is
    /// scored, on fewer tasks, so its numbers are indicative.
    Short,
    /// A few steps and tasks per phase, so CI executes every notebook end to end in minutes;
    /// its numbers mean nothing.
    Smoke,
}

impl Scale {
    /// The name used in `ABT_SCALE`.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Full => "full",
            Scale::Short => "short",
            Scale::Smoke => "smoke",
        }
    }
}

impl FromStr for Scale {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "full" => Ok(Scale::Full),
            "short" => Ok(Scale::Short),
            "smoke" => Ok(Scale::Smoke),
            other => Err(Error::InvalidEnv {
                name: "ABT_SCALE",
                value: other.into(),
                reason: "expected full, short or smoke".into(),
            }),
        }
    }
}

/// A named preset of the whole pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// SmolLM2-135M-Instruct on CPU; sized to finish in minutes on 2 cores (tests, CI, demos).
    Tiny,
    /// Qwen2.5-7B-Instruct on a Colab A100 40GB (bf16 LoRA).
    #[serde(rename = "colab-qwen2.5-7b")]
    ColabQwen25_7b,
    /// Qwen2.5-7B-Instruct on a Colab L4 24GB (QLoRA: NF4 base weights).
    #[serde(rename = "colab-qwen2.5-7b-qlora")]
    ColabQwen25_7bQlora,
    /// Qwen3-4B-Instruct-2507 on a Colab L4 24GB or better (bf16 LoRA).
    #[serde(rename = "colab-qwen3-4b")]
    ColabQwen3_4b,
}

impl Profile {
    /// Every profile, in the order they are documented.
    pub const ALL: [Profile; 4] = [
        Profile::Tiny,
        Profile::ColabQwen25_7b,
        Profile::ColabQwen25_7bQlora,
        Profile::ColabQwen3_4b,
    ];

    /// The name used in `ABT_PROFILE` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Tiny => "tiny",
            Profile::ColabQwen25_7b => "colab-qwen2.5-7b",
            Profile::ColabQwen25_7bQlora => "colab-qwen2.5-7b-qlora",
            Profile::ColabQwen3_4b => "colab-qwen3-4b",
        }
    }

    /// The base model the profile fine-tunes (a GGUF file name or a Hugging Face repo id).
    pub fn base_model(self) -> &'static str {
        match self {
            Profile::Tiny => paths::DEFAULT_MODEL_FILE,
            Profile::ColabQwen25_7b | Profile::ColabQwen25_7bQlora => "Qwen/Qwen2.5-7B-Instruct",
            Profile::ColabQwen3_4b => "Qwen/Qwen3-4B-Instruct-2507",
        }
    }

    /// The GPU the profile's settings are sized for (`None`: the CPU), where the memory planner
    /// says every phase fits (`abt plan`).
    pub fn target_gpu(self) -> Option<crate::memory::Gpu> {
        match self {
            Profile::Tiny => None,
            Profile::ColabQwen25_7b => Some(crate::memory::Gpu::A100_40),
            Profile::ColabQwen25_7bQlora => Some(crate::memory::Gpu::L4),
            Profile::ColabQwen3_4b => Some(crate::memory::Gpu::L4),
        }
    }

    /// Where the profile's base model is loaded from.
    pub fn model_source(self) -> crate::model::ModelSource {
        match self {
            Profile::Tiny => crate::model::ModelSource::default_model(),
            other => crate::model::ModelSource::parse(other.base_model()),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name() == s.trim())
            .ok_or_else(|| Error::UnknownProfile {
                name: s.to_string(),
                known: Profile::ALL.map(Profile::name).join(", "),
            })
    }
}

/// Where and how a notebook or command runs: the profile and the run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunContext {
    /// The active profile.
    pub profile: Profile,
    /// The run directory every phase reads from and writes to (`runs/<name>/`).
    pub run_dir: PathBuf,
    /// How much of each phase the run does (`ABT_SCALE`).
    pub scale: Scale,
}

impl RunContext {
    /// Reads `ABT_PROFILE`, `ABT_RUN_DIR` and `ABT_SCALE` (or `ABT_SMOKE=1`), with defaults
    /// `tiny`, `runs/interactive` and `full`.
    pub fn from_env() -> Result<Self> {
        let profile = match std::env::var("ABT_PROFILE") {
            Ok(v) if !v.trim().is_empty() => v.parse().map_err(|e: Error| Error::InvalidEnv {
                name: "ABT_PROFILE",
                value: v.clone(),
                reason: e.to_string(),
            })?,
            _ => Profile::Tiny,
        };
        let run_dir = match std::env::var_os("ABT_RUN_DIR") {
            Some(v) if !v.is_empty() => paths::resolve(PathBuf::from(v)),
            _ => paths::resolve("runs/interactive"),
        };
        let smoke = match std::env::var("ABT_SMOKE") {
            Ok(v) => match v.trim() {
                "" | "0" | "false" => false,
                "1" | "true" => true,
                _ => {
                    return Err(Error::InvalidEnv {
                        name: "ABT_SMOKE",
                        value: v.clone(),
                        reason: "expected 1 or 0".into(),
                    });
                }
            },
            Err(_) => false,
        };
        let scale = match std::env::var("ABT_SCALE") {
            _ if smoke => Scale::Smoke,
            Ok(v) if !v.trim().is_empty() => v.parse()?,
            _ => Scale::Full,
        };
        Ok(RunContext {
            profile,
            run_dir,
            scale,
        })
    }

    /// The directory of one phase inside the run, e.g. `runs/x/03_sft` for [`Phase::Sft`].
    pub fn phase_dir(&self, phase: Phase) -> PathBuf {
        self.run_dir.join(phase.dir_name())
    }

    /// The adapter a training phase saves (`runs/x/03_sft/adapter`).
    pub fn adapter(&self, phase: Phase) -> PathBuf {
        self.phase_dir(phase).join("adapter")
    }
}

impl Show for RunContext {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        Table::settings(
            "run context",
            [
                ("profile", self.profile.to_string()),
                ("base model", self.profile.base_model().to_string()),
                ("run dir", self.run_dir.display().to_string()),
                ("scale", self.scale.name().to_string()),
            ],
        )
        .mime_bundle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
        }
    }

    #[test]
    fn scales_parse_and_reject_others() {
        for scale in [Scale::Full, Scale::Short, Scale::Smoke] {
            assert_eq!(scale.name().parse::<Scale>().unwrap(), scale);
        }
        let err = "huge".parse::<Scale>().unwrap_err().to_string();
        assert!(err.contains("ABT_SCALE") && err.contains("short"), "{err}");
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let err = "huge".parse::<Profile>().unwrap_err().to_string();
        assert!(err.contains("huge") && err.contains("tiny") && err.contains("colab-qwen3-4b"));
    }
}
