//! Where a model comes from: a local directory, a Hugging Face repo id, or a GGUF file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::hub::{HubRepo, RepoKind};
use crate::paths;

/// How to get a GGUF file that is missing.
pub(crate) const GGUF_HINT: &str = "fetch the default model with `bash scripts/fetch_default_model.sh`, or pass the path of a .gguf file";

/// A model the user names: a directory, a `.gguf` file, or a hub repo id (`org/name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A directory with `config.json`, safetensors weights and tokenizer files.
    Dir(PathBuf),
    /// A single GGUF file (weights, config and tokenizer in one).
    Gguf(PathBuf),
    /// A Hugging Face hub repository, fetched through the local cache.
    Hub {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit (`main` by default).
        revision: String,
    },
}

impl ModelSource {
    /// The embedded default model (SmolLM2-135M-Instruct Q4_1 GGUF in the cache).
    pub fn default_model() -> Self {
        ModelSource::Gguf(paths::default_model_path())
    }

    /// Reads a user's spelling: an existing path, a `.gguf` path, `org/name[@revision]`, or
    /// `default` for the embedded default model.
    pub fn parse(spec: &str) -> Self {
        if spec == "default" {
            return Self::default_model();
        }
        let path = Path::new(spec);
        if spec.ends_with(".gguf") {
            return ModelSource::Gguf(path.to_path_buf());
        }
        let looks_like_repo = !path.exists()
            && !spec.starts_with('.')
            && !spec.starts_with('/')
            && spec.matches('/').count() == 1;
        if looks_like_repo {
            let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
            return ModelSource::Hub {
                repo: repo.to_string(),
                revision: revision.to_string(),
            };
        }
        ModelSource::Dir(path.to_path_buf())
    }

    /// Finds (and, for the hub, downloads unless offline) the files of the model.
    pub fn resolve(&self) -> Result<ModelFiles> {
        match self {
            ModelSource::Gguf(path) => {
                if !path.is_file() {
                    return Err(Error::MissingFile {
                        path: path.clone(),
                        hint: GGUF_HINT.into(),
                    });
                }
                Ok(ModelFiles {
                    gguf: Some(path.clone()),
                    ..ModelFiles::default()
                })
            }
            ModelSource::Dir(dir) => ModelFiles::from_dir(dir),
            ModelSource::Hub { repo, revision } => ModelFiles::from_hub(repo, revision),
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Dir(p) | ModelSource::Gguf(p) => write!(f, "{}", p.display()),
            ModelSource::Hub { repo, revision } if revision == "main" => write!(f, "{repo}"),
            ModelSource::Hub { repo, revision } => write!(f, "{repo}@{revision}"),
        }
    }
}

/// The files of one model on local disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelFiles {
    /// `config.json` (absent for GGUF).
    pub config: Option<PathBuf>,
    /// Safetensors weight files (one, or every shard of an index).
    pub weights: Vec<PathBuf>,
    /// A GGUF file holding weights, config and tokenizer.
    pub gguf: Option<PathBuf>,
    /// `tokenizer.json`, if present.
    pub tokenizer: Option<PathBuf>,
    /// `tokenizer_config.json` (chat template, special tokens), if present.
    pub tokenizer_config: Option<PathBuf>,
    /// `generation_config.json`, if present.
    pub generation_config: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::HashMap<String, String>,
}

const INDEX: &str = "model.safetensors.index.json";

fn shard_names(index_path: &Path) -> Result<BTreeSet<String>> {
    let text =
        std::fs::read_to_string(index_path).map_err(|e| Error::io("reading", index_path, e))?;
    let index: ShardIndex = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: index_path.to_path_buf(),
        source,
    })?;
    Ok(index.weight_map.into_values().collect())
}

impl ModelFiles {
    /// The files of a model directory as transformers' `save_pretrained` writes it.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                hint: "pass a model directory (config.json + *.safetensors), a .gguf file, or a hub repo id like Qwen/Qwen2.5-0.5B-Instruct".into(),
            });
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(Error::MissingFile {
                path: config,
                hint:
                    "a model directory needs the config.json transformers saves beside the weights"
                        .into(),
            });
        }
        let index = dir.join(INDEX);
        let weights = if index.is_file() {
            shard_names(&index)?
                .into_iter()
                .map(|n| dir.join(n))
                .collect()
        } else if dir.join("model.safetensors").is_file() {
            vec![dir.join("model.safetensors")]
        } else {
            return Err(Error::MissingFile {
                path: dir.join("model.safetensors"),
                hint: format!(
                    "no model.safetensors or {INDEX} in the directory (PyTorch .bin checkpoints are not supported; re-save with safe_serialization=True)"
                ),
            });
        };
        let optional = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        Ok(Self {
            config: Some(config),
            weights,
            gguf: None,
            tokenizer: optional("tokenizer.json"),
            tokenizer_config: optional("tokenizer_config.json"),
            generation_config: optional("generation_config.json"),
        })
    }

    /// The files of a hub repo: from the local cache, downloading what is missing unless
    /// `HF_HUB_OFFLINE=1`.
    pub fn from_hub(repo_id: &str, revision: &str) -> Result<Self> {
        Self::from_hub_cache(
            &paths::hf_hub_cache_dir(),
            repo_id,
            revision,
            crate::hub::offline_from_env(),
        )
    }

    /// Like [`ModelFiles::from_hub`] with an explicit hub cache directory and offline switch.
    pub fn from_hub_cache(
        cache_dir: &Path,
        repo_id: &str,
        revision: &str,
        offline: bool,
    ) -> Result<Self> {
        let repo = HubRepo::open_in(cache_dir, repo_id, RepoKind::Model, revision, offline)?;
        let fetch = |name: &str| repo.get(name);
        let Some(config) = fetch("config.json")? else {
            let reason = if offline {
                format!(
                    "config.json is not in the cache at {} and HF_HUB_OFFLINE=1 forbids downloading; unset it or pre-fetch the model",
                    cache_dir.display()
                )
            } else {
                "the repo has no config.json (is it a model repo with transformers weights?)"
                    .to_string()
            };
            return Err(Error::Hub {
                repo: repo_id.to_string(),
                reason,
            });
        };
        let weights = if let Some(index) = fetch(INDEX)? {
            let mut files = Vec::new();
            for shard in shard_names(&index)? {
                files.push(fetch(&shard)?.ok_or_else(|| Error::Hub {
                    repo: repo_id.to_string(),
                    reason: format!("shard {shard} listed in {INDEX} is not available"),
                })?);
            }
            files
        } else {
            vec![fetch("model.safetensors")?.ok_or_else(|| Error::Hub {
                repo: repo_id.to_string(),
                reason: "no model.safetensors or index (available offline only when cached)".into(),
            })?]
        };
        Ok(Self {
            config: Some(config),
            weights,
            gguf: None,
            tokenizer: fetch("tokenizer.json")?,
            tokenizer_config: fetch("tokenizer_config.json")?,
            generation_config: fetch("generation_config.json")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_read_as_the_user_means_them() {
        assert_eq!(
            ModelSource::parse("Qwen/Qwen2.5-7B-Instruct"),
            ModelSource::Hub {
                repo: "Qwen/Qwen2.5-7B-Instruct".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            ModelSource::parse("Qwen/Qwen3-4B-Instruct-2507@abc123").to_string(),
            "Qwen/Qwen3-4B-Instruct-2507@abc123"
        );
        assert_eq!(
            ModelSource::parse("x/model.gguf"),
            ModelSource::Gguf("x/model.gguf".into())
        );
        assert_eq!(
            ModelSource::parse("./models/mine"),
            ModelSource::Dir("./models/mine".into())
        );
    }

    #[test]
    fn a_directory_without_config_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::from_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = ModelFiles::from_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("safe_serialization"),
            "{err}"
        );
    }
}
