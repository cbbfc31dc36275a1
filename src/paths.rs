//! Where things live: the project checkout, its data, the cache, the default model, run directories.
//!
//! Every location can be moved with an environment variable, so CI, Colab and a laptop run the
//! same code: `ABT_CACHE_DIR` (default `$XDG_CACHE_HOME/agentbench-tuning`, else
//! `~/.cache/agentbench-tuning`) and `HF_HOME` for the Hugging Face hub cache.

use std::path::{Path, PathBuf};

/// File name of the embedded default model: SmolLM2-135M-Instruct as a Q4_1 GGUF.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The checkout this crate was built from (notebooks load the crate from here).
pub fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The data kept in the tree (`data/`, see its README for provenance and licences).
pub fn data_dir() -> PathBuf {
    project_root().join("data")
}

/// AgentBench's 60 DB Bench dev items (Apache-2.0): evaluated on and guarded against, never
/// trained on.
pub fn dbbench_dev_items() -> PathBuf {
    data_dir().join("agentbench-dbbench/dev.jsonl")
}

/// The DB Bench items notebook 06 and `abt eval` play: `ABT_DBBENCH_ITEMS` (e.g. AgentBench's
/// `standard.jsonl`) when set, else [`dbbench_dev_items`].
pub fn dbbench_eval_items() -> PathBuf {
    env_path("ABT_DBBENCH_ITEMS").unwrap_or_else(dbbench_dev_items)
}

/// The English Spider dev set with its 19 SQLite databases (CC BY-SA 4.0), in Spider's layout.
pub fn spider_dev_dir() -> PathBuf {
    data_dir().join("spider-dev")
}

/// 168 FireAct ReAct trajectories (MIT), one OpenAI `messages` conversation per line.
pub fn fireact_sample() -> PathBuf {
    data_dir().join("fireact/multitask-sample.jsonl")
}

/// The user's home directory, if `HOME` is set.
fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// A non-empty environment variable as a path.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The project's cache: downloaded models, the notebook kernel's build directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = env_path("ABT_CACHE_DIR") {
        return dir;
    }
    let base = env_path("XDG_CACHE_HOME")
        .or_else(|| home_dir().map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("agentbench-tuning")
}

/// Where fetched model files are kept.
pub fn models_dir() -> PathBuf {
    cache_dir().join("models")
}

/// Where the embedded default model is expected (fetched by `scripts/fetch_default_model.sh`).
pub fn default_model_path() -> PathBuf {
    models_dir().join(DEFAULT_MODEL_FILE)
}

/// The Hugging Face hub cache (`$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
pub fn hf_hub_cache_dir() -> PathBuf {
    if let Some(dir) = env_path("HF_HUB_CACHE") {
        return dir;
    }
    env_path("HF_HOME")
        .or_else(|| home_dir().map(|h| h.join(".cache/huggingface")))
        .unwrap_or_else(|| std::env::temp_dir().join("huggingface"))
        .join("hub")
}

/// The evcxr kernel's persistent build directory (`EVCXR_TMPDIR` when set).
pub fn evcxr_build_dir() -> PathBuf {
    env_path("EVCXR_TMPDIR").unwrap_or_else(|| cache_dir().join("evcxr"))
}

/// Resolves a user-given path: absolute paths stay, relative ones are taken from the project root.
pub fn resolve(path: impl AsRef<Path>) -> PathBuf {
    let path = path.as_ref();
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        project_root().join(path)
    }
}
