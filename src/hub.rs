//! Files of Hugging Face hub repositories through the standard hub cache (`$HF_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), laid out as `huggingface_hub` and `hf-hub`
//! write it: `<kind>s--<owner>--<name>/refs/<revision>` holds a commit, and
//! `snapshots/<commit>/<path>` the files. A file already in the cache is read without a network
//! call; a missing one is downloaded unless `HF_HUB_OFFLINE=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::paths;

/// What kind of hub repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// A model repository.
    Model,
    /// A dataset repository.
    Dataset,
}

/// Whether `HF_HUB_OFFLINE` forbids downloads (`1` or `true`, as in `huggingface_hub`).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Whether a revision is a full commit hash (its snapshot is addressed directly, without a ref).
fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One repository at one revision, read through a hub cache.
pub struct HubRepo {
    id: String,
    kind: RepoKind,
    revision: String,
    cache_dir: PathBuf,
    offline: bool,
    api: Option<hf_hub::api::sync::ApiRepo>,
    /// File sizes from the hub's listing, asked for once.
    sizes: std::sync::OnceLock<std::result::Result<BTreeMap<String, u64>, String>>,
}

impl std::fmt::Debug for HubRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HubRepo({}@{})", self.id, self.revision)
    }
}

impl HubRepo {
    /// The repo `id` at `revision` in the user's hub cache, offline when `HF_HUB_OFFLINE=1`.
    pub fn open(id: &str, kind: RepoKind, revision: &str) -> Result<Self> {
        Self::open_in(
            &paths::hf_hub_cache_dir(),
            id,
            kind,
            revision,
            offline_from_env(),
        )
    }

    /// Like [`HubRepo::open`] with an explicit cache directory and offline switch.
    pub fn open_in(
        cache_dir: &Path,
        id: &str,
        kind: RepoKind,
        revision: &str,
        offline: bool,
    ) -> Result<Self> {
        let api = if offline {
            None
        } else {
            let mut builder = hf_hub::api::sync::ApiBuilder::new()
                .with_cache_dir(cache_dir.to_path_buf())
                .with_progress(true);
            // The token saved by `huggingface-cli login` is read by default; HF_TOKEN wins.
            if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
                builder = builder.with_token(Some(token));
            }
            let api = builder.build().map_err(|e| Error::Hub {
                repo: id.to_string(),
                reason: e.to_string(),
            })?;
            Some(api.repo(hf_repo(id, kind, revision)))
        };
        Ok(Self {
            id: id.to_string(),
            kind,
            revision: revision.to_string(),
            cache_dir: cache_dir.to_path_buf(),
            offline,
            api,
            sizes: std::sync::OnceLock::new(),
        })
    }

    /// `owner/name`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The branch, tag or commit asked for.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The repo's folder in the cache (`datasets--owner--name`).
    fn repo_dir(&self) -> PathBuf {
        self.cache_dir
            .join(hf_repo(&self.id, self.kind, &self.revision).folder_name())
    }

    /// The cached snapshot of the revision, if the cache knows it: a commit's own snapshot, or
    /// the one `refs/<revision>` points at.
    fn snapshot_dir(&self) -> Option<PathBuf> {
        let commit = if is_commit(&self.revision) {
            self.revision.clone()
        } else {
            let reference = self.repo_dir().join("refs").join(&self.revision);
            std::fs::read_to_string(reference).ok()?.trim().to_string()
        };
        let dir = self.repo_dir().join("snapshots").join(commit);
        dir.is_dir().then_some(dir)
    }

    /// A file of the repo (`data/train-00000-of-00001.parquet`): from the cache, else
    /// downloaded; `None` when the repo has no such file, or, offline, when it is not cached.
    pub fn get(&self, name: &str) -> Result<Option<PathBuf>> {
        if let Some(path) = self.snapshot_dir().map(|d| d.join(name))
            && path.is_file()
        {
            return Ok(Some(path));
        }
        let Some(api) = &self.api else {
            return Ok(None);
        };
        match api.get(name) {
            Ok(path) => Ok(Some(path)),
            Err(hf_hub::api::sync::ApiError::RequestError(e))
                if matches!(*e, ureq::Error::Status(404, _)) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.error(format!("downloading {name}: {e}"))),
        }
    }

    /// A file the caller cannot do without: an error naming the repo, the file and the fix
    /// when it cannot be had.
    pub fn require(&self, name: &str) -> Result<PathBuf> {
        self.get(name)?.ok_or_else(|| {
            self.error(if self.offline {
                format!(
                    "{name} is not in the hub cache at {} and HF_HUB_OFFLINE=1 forbids downloading; unset it, or fetch the file first (`huggingface-cli download --repo-type {} {} {name} --revision {}`)",
                    self.cache_dir.display(),
                    self.kind_name(),
                    self.id,
                    self.revision
                )
            } else {
                format!(
                    "the repo has no file {name} at revision {} (a private or gated repo needs HF_TOKEN)",
                    self.revision
                )
            })
        })
    }

    /// The size of a repo file in bytes and whether it is cached: from the cached snapshot,
    /// else from the hub's listing (`?blobs=true`); `None` offline for a file not cached, or
    /// when the hub lists no such file.
    pub fn file_size(&self, name: &str) -> Result<Option<(u64, bool)>> {
        if let Some(path) = self.snapshot_dir().map(|d| d.join(name))
            && let Ok(meta) = std::fs::metadata(&path)
        {
            return Ok(Some((meta.len(), true)));
        }
        let Some(api) = &self.api else {
            return Ok(None);
        };
        let listing = self.sizes.get_or_init(|| {
            let text = api
                .info_request()
                .query("blobs", "true")
                .call()
                .map_err(|e| e.to_string())?
                .into_string()
                .map_err(|e| e.to_string())?;
            let info: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let files = info["siblings"].as_array().cloned().unwrap_or_default();
            Ok(files
                .iter()
                .filter_map(|f| {
                    let name = f["rfilename"].as_str()?.to_string();
                    let size = f["lfs"]["size"].as_u64().or_else(|| f["size"].as_u64())?;
                    Some((name, size))
                })
                .collect())
        });
        match listing {
            Ok(sizes) => Ok(sizes.get(name).map(|&size| (size, false))),
            Err(e) => Err(self.error(format!("listing the repo's file sizes: {e}"))),
        }
    }

    /// Every file of the repo at this revision, sorted: listed by the hub, or, offline, the
    /// files of the cached snapshot.
    pub fn files(&self) -> Result<Vec<String>> {
        let mut names = match &self.api {
            Some(api) => api
                .info()
                .map_err(|e| {
                    self.error(format!(
                        "listing the repo's files: {e} (a private or gated repo needs HF_TOKEN)"
                    ))
                })?
                .siblings
                .into_iter()
                .map(|s| s.rfilename)
                .collect(),
            None => {
                let dir = self.snapshot_dir().ok_or_else(|| {
                    self.error(format!(
                        "revision {} is not in the hub cache at {} and HF_HUB_OFFLINE=1 forbids downloading; unset it or fetch the repo first",
                        self.revision,
                        self.cache_dir.display()
                    ))
                })?;
                crate::io::relative_files(&dir)?
            }
        };
        names.sort();
        Ok(names)
    }

    /// An error about this repo.
    pub fn error(&self, reason: String) -> Error {
        Error::Hub {
            repo: format!("{} ({})", self.id, self.kind_name()),
            reason,
        }
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }
}

fn hf_repo(id: &str, kind: RepoKind, revision: &str) -> hf_hub::Repo {
    let kind = match kind {
        RepoKind::Model => hf_hub::RepoType::Model,
        RepoKind::Dataset => hf_hub::RepoType::Dataset,
    };
    hf_hub::Repo::with_revision(id.to_string(), kind, revision.to_string())
}
