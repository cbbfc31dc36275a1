//! Where a corpus lives: a local file or folder, or a Hugging Face hub dataset repo (a folder or
//! file in it, at a pinned revision), named the way `huggingface_hub`'s file system names it:
//! `hf://datasets/<owner>/<name>[@<revision>][/<path>]`.
//!
//! A loader asks an [`OpenSource`] for the files it needs by their path inside the corpus
//! (`dev.json`, `database/<db>/<db>.sqlite`), so only those are fetched, and a hub file already
//! in the cache is read without a network call. Record files (JSON, JSONL, parquet) are read one
//! shard at a time by [`OpenSource::for_each_record`].

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::hub::{HubRepo, RepoKind};

/// The scheme of a hub dataset location.
const HUB_PREFIX: &str = "hf://datasets/";

/// A corpus: a local path, or a path inside a hub dataset repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A file or folder on this machine.
    Local(PathBuf),
    /// A folder or file of a hub dataset repo.
    Hub {
        /// `owner/name`.
        repo: String,
        /// Branch, tag or commit (`main` by default; a commit pins the data).
        revision: String,
        /// The folder or file inside the repo (empty: the whole repo).
        path: String,
    },
}

impl DataSource {
    /// A hub dataset location.
    pub fn hub(repo: &str, revision: &str, path: &str) -> Self {
        DataSource::Hub {
            repo: repo.into(),
            revision: revision.into(),
            path: path.trim_matches('/').into(),
        }
    }

    /// Opens the location: a hub repo is opened in the user's hub cache (offline when
    /// `HF_HUB_OFFLINE=1`); nothing is downloaded yet.
    pub fn open(&self) -> Result<OpenSource> {
        self.open_with(|repo, revision| HubRepo::open(repo, RepoKind::Dataset, revision))
    }

    /// Like [`DataSource::open`] with an explicit hub cache directory and offline switch.
    pub fn open_in(&self, cache_dir: &Path, offline: bool) -> Result<OpenSource> {
        self.open_with(|repo, revision| {
            HubRepo::open_in(cache_dir, repo, RepoKind::Dataset, revision, offline)
        })
    }

    fn open_with(&self, open: impl Fn(&str, &str) -> Result<HubRepo>) -> Result<OpenSource> {
        Ok(match self {
            DataSource::Local(path) => OpenSource::Local(path.clone()),
            DataSource::Hub {
                repo,
                revision,
                path,
            } => OpenSource::Hub {
                repo: Box::new(open(repo, revision)?),
                path: path.clone(),
            },
        })
    }
}

impl std::fmt::Display for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataSource::Local(path) => write!(f, "{}", path.display()),
            DataSource::Hub {
                repo,
                revision,
                path,
            } => {
                write!(f, "{HUB_PREFIX}{repo}")?;
                if revision != "main" {
                    write!(f, "@{revision}")?;
                }
                if !path.is_empty() {
                    write!(f, "/{path}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for DataSource {
    type Err = Error;

    /// `hf://datasets/<owner>/<name>[@<revision>][/<path>]`, else a local path.
    fn from_str(spec: &str) -> Result<Self> {
        let Some(rest) = spec.strip_prefix(HUB_PREFIX) else {
            return Ok(DataSource::Local(PathBuf::from(spec)));
        };
        let bad = |why: &str| Error::InvalidConfig {
            source_name: spec.to_string(),
            reason: format!(
                "{why}; a hub dataset is written hf://datasets/<owner>/<name>[@<revision>][/<path>]"
            ),
        };
        let mut parts = rest.splitn(3, '/');
        let owner = parts.next().unwrap_or_default();
        let name_rev = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        let (name, revision) = name_rev.split_once('@').unwrap_or((name_rev, "main"));
        if owner.is_empty() || name.is_empty() {
            return Err(bad("the repo needs an owner and a name"));
        }
        if revision.is_empty() {
            return Err(bad("the revision after @ is empty"));
        }
        Ok(DataSource::hub(&format!("{owner}/{name}"), revision, path))
    }
}

impl From<&str> for DataSource {
    /// A spec as [`FromStr`] reads it; a malformed hub spec stays a local path (which then
    /// fails to open, naming it).
    fn from(spec: &str) -> Self {
        spec.parse()
            .unwrap_or_else(|_| DataSource::Local(PathBuf::from(spec)))
    }
}

impl From<PathBuf> for DataSource {
    fn from(path: PathBuf) -> Self {
        DataSource::Local(path)
    }
}

impl From<&Path> for DataSource {
    fn from(path: &Path) -> Self {
        DataSource::Local(path.to_path_buf())
    }
}

impl From<&PathBuf> for DataSource {
    fn from(path: &PathBuf) -> Self {
        DataSource::Local(path.clone())
    }
}

impl From<&DataSource> for DataSource {
    fn from(source: &DataSource) -> Self {
        source.clone()
    }
}

impl Serialize for DataSource {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DataSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let spec = String::deserialize(d)?;
        spec.parse().map_err(serde::de::Error::custom)
    }
}

/// What a loader reads a corpus from: a [`DataSource`] (or a path or spec that converts into
/// one), or an [`OpenSource`] opened already (e.g. in another hub cache).
pub trait Corpus {
    /// Opens it.
    fn open_corpus(self) -> Result<OpenSource>;
}

impl<T: Into<DataSource>> Corpus for T {
    fn open_corpus(self) -> Result<OpenSource> {
        self.into().open()
    }
}

impl Corpus for OpenSource {
    fn open_corpus(self) -> Result<OpenSource> {
        Ok(self)
    }
}

/// An opened [`DataSource`], handing out its files.
#[derive(Debug)]
pub enum OpenSource {
    /// A local file or folder.
    Local(PathBuf),
    /// A folder or file of a hub dataset repo.
    Hub {
        /// The repo.
        repo: Box<HubRepo>,
        /// The folder or file inside it.
        path: String,
    },
}

/// File name endings of record files.
const RECORD_EXTENSIONS: [&str; 3] = [".json", ".jsonl", ".parquet"];

impl OpenSource {
    /// The file at `rel` inside the corpus (a local folder, or the hub folder), fetched if
    /// needed; a missing one is an error that says where it was looked for and `hint`.
    pub fn file(&self, rel: &str, hint: &str) -> Result<PathBuf> {
        match self {
            OpenSource::Local(dir) => {
                let path = dir.join(rel);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(Error::MissingFile {
                        path,
                        hint: hint.to_string(),
                    })
                }
            }
            OpenSource::Hub { repo, path } => repo.require(&join(path, rel)),
        }
    }

    /// The record files (`.json`, `.jsonl`, `.parquet`) of the corpus in name order: the file
    /// itself when it names one, else every record file under the folder, else (on the hub)
    /// every record file whose path starts with it (`data/train_sft` for the shards
    /// `data/train_sft-0000N-of-0000M.parquet`). Local names are relative to the folder, hub
    /// names are paths in the repo.
    pub fn record_files(&self) -> Result<Vec<String>> {
        let is_record = |name: &str| RECORD_EXTENSIONS.iter().any(|e| name.ends_with(e));
        match self {
            OpenSource::Local(path) => {
                if path.is_file() {
                    return Ok(vec![String::new()]);
                }
                if !path.is_dir() {
                    return Err(Error::MissingFile {
                        path: path.clone(),
                        hint: "a JSON, JSONL or parquet file, a folder of them, or hf://datasets/<owner>/<name>[/<folder>]".into(),
                    });
                }
                let mut names = crate::io::relative_files(path)?;
                names.retain(|n| is_record(n));
                Ok(names)
            }
            OpenSource::Hub { repo, path } => {
                let all = repo.files()?;
                if all.iter().any(|f| f == path) {
                    return Ok(vec![path.clone()]);
                }
                let folder = format!("{path}/");
                let under = |prefix: &str| -> Vec<String> {
                    all.iter()
                        .filter(|f| is_record(f) && f.starts_with(prefix))
                        .cloned()
                        .collect()
                };
                let mut names = under(if path.is_empty() { "" } else { &folder });
                if names.is_empty() && !path.is_empty() {
                    names = under(path);
                }
                if names.is_empty() {
                    return Err(repo.error(format!(
                        "no JSON, JSONL or parquet file at or under {:?} at revision {}",
                        if path.is_empty() { "/" } else { path },
                        repo.revision()
                    )));
                }
                Ok(names)
            }
        }
    }

    /// The size in bytes of the file at `rel` inside the corpus, and whether it is here already
    /// (local files always are); `None` when it cannot be known (offline and not cached, or
    /// no such file).
    pub fn file_size(&self, rel: &str) -> Result<Option<(u64, bool)>> {
        match self {
            OpenSource::Local(dir) => Ok(std::fs::metadata(dir.join(rel))
                .ok()
                .map(|m| (m.len(), true))),
            OpenSource::Hub { repo, path } => repo.file_size(&join(path, rel)),
        }
    }

    /// [`OpenSource::file_size`] of a record file named by [`OpenSource::record_files`].
    pub fn record_file_size(&self, name: &str) -> Result<Option<(u64, bool)>> {
        match self {
            OpenSource::Local(path) => Ok(std::fs::metadata(if name.is_empty() {
                path.clone()
            } else {
                path.join(name)
            })
            .ok()
            .map(|m| (m.len(), true))),
            OpenSource::Hub { repo, .. } => repo.file_size(name),
        }
    }

    /// The licence the corpus's card states: `license:` in the front matter of the hub repo's
    /// `README.md` (a dataset card), or of a `README.md` in the local folder; `None` when no
    /// card or no licence is found.
    pub fn licence(&self) -> Option<String> {
        let card = match self {
            OpenSource::Local(path) => {
                let dir = if path.is_dir() {
                    path.as_path()
                } else {
                    path.parent()?
                };
                dir.join("README.md")
            }
            OpenSource::Hub { repo, .. } => repo.get("README.md").ok()??,
        };
        card_licence(&std::fs::read_to_string(card).ok()?)
    }

    /// A record file named by [`OpenSource::record_files`], fetched if needed.
    fn record_file(&self, name: &str) -> Result<PathBuf> {
        match self {
            OpenSource::Local(path) if name.is_empty() => Ok(path.clone()),
            OpenSource::Local(_) => self.file(name, "listed a moment ago"),
            OpenSource::Hub { repo, .. } => repo.require(name),
        }
    }

    /// Calls `f` with every record of every record file in name order, one shard in memory at a
    /// time (parquet in slices of [`PARQUET_SLICE`] rows), and stops when `f` returns `false`.
    /// `f` gets the record's file and its number there (from 1) for error messages.
    pub fn for_each_record(
        &self,
        mut f: impl FnMut(serde_json::Value, &Path, usize) -> Result<bool>,
    ) -> Result<()> {
        let names = self.record_files()?;
        let mut progress =
            crate::progress::Progress::new("reading shards", Some(names.len() as u64))
                .with_unit("files");
        for name in &names {
            let path = self.record_file(name)?;
            progress.set_message(
                path.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
            );
            let more = read_records(&path, &mut f)?;
            progress.inc(1);
            if !more {
                break;
            }
        }
        progress.finish();
        Ok(())
    }
}

/// The `license:` of a dataset card's YAML front matter: a value (`license: mit`) or a list
/// (`license:` then `- cc-by-sa-4.0` lines), joined with commas.
pub fn card_licence(card: &str) -> Option<String> {
    let front = card.strip_prefix("---")?;
    let front = &front[..front.find("\n---")?];
    let mut lines = front.lines().skip_while(|l| !l.starts_with("license:"));
    let first = lines.next()?["license:".len()..].trim();
    let unquote = |v: &str| v.trim().trim_matches(['"', '\'']).to_string();
    let values: Vec<String> = if first.is_empty() {
        lines
            .map_while(|l| l.trim_start().strip_prefix("- ").map(unquote))
            .collect()
    } else if let Some(list) = first.strip_prefix('[').and_then(|f| f.strip_suffix(']')) {
        list.split(',').map(unquote).collect()
    } else {
        vec![unquote(first)]
    };
    let values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Rows of a parquet shard decoded at a time.
pub const PARQUET_SLICE: usize = 2048;

/// `path/rel`, or `rel` when `path` is empty.
fn join(path: &str, rel: &str) -> String {
    if path.is_empty() {
        rel.to_string()
    } else {
        format!("{path}/{rel}")
    }
}

/// Feeds the records of one file to `f`; `false` when `f` asked to stop.
fn read_records(
    path: &Path,
    f: &mut impl FnMut(serde_json::Value, &Path, usize) -> Result<bool>,
) -> Result<bool> {
    let name = path.to_string_lossy();
    if name.ends_with(".parquet") {
        return read_parquet(path, f);
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let starts_with_list = {
        let head = reader
            .fill_buf()
            .map_err(|e| Error::io("reading", path, e))?;
        head.iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'[')
    };
    if starts_with_list {
        let records: Vec<serde_json::Value> =
            serde_json::from_reader(reader).map_err(|e| Error::Json {
                path: path.to_path_buf(),
                source: e,
            })?;
        for (i, record) in records.into_iter().enumerate() {
            if !f(record, path, i + 1)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    crate::io::for_each_jsonl(path, reader, |record, line| f(record, path, line))
}

/// Feeds the rows of a parquet file to `f` as JSON objects, [`PARQUET_SLICE`] rows at a time.
fn read_parquet(
    path: &Path,
    f: &mut impl FnMut(serde_json::Value, &Path, usize) -> Result<bool>,
) -> Result<bool> {
    use polars::prelude::{JsonFormat, JsonWriter, ParquetReader, SerReader, SerWriter};
    let parquet_error = |e: polars::prelude::PolarsError| Error::InvalidConfig {
        source_name: path.display().to_string(),
        reason: format!("not a readable parquet file: {e}"),
    };
    let open = || std::fs::File::open(path).map_err(|e| Error::io("reading", path, e));
    let rows = ParquetReader::new(open()?)
        .num_rows()
        .map_err(parquet_error)?;
    let mut start = 0;
    while start < rows {
        let mut frame = ParquetReader::new(open()?)
            .with_slice(Some((start, PARQUET_SLICE)))
            .finish()
            .map_err(parquet_error)?;
        let mut lines = Vec::new();
        JsonWriter::new(&mut lines)
            .with_json_format(JsonFormat::JsonLines)
            .finish(&mut frame)
            .map_err(parquet_error)?;
        for (i, line) in lines.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record = serde_json::from_slice(line).map_err(|source| Error::JsonLine {
                path: path.to_path_buf(),
                line: start + i + 1,
                source,
            })?;
            if !f(record, path, start + i + 1)? {
                return Ok(false);
            }
        }
        start += PARQUET_SLICE;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn licences_are_read_from_a_cards_front_matter() {
        use super::card_licence;
        assert_eq!(
            card_licence("---\nlicense: mit\ntags: [x]\n---\n# Card"),
            Some("mit".into())
        );
        assert_eq!(
            card_licence(
                "---\npretty_name: X\nlicense:\n- cc-by-sa-4.0\n- apache-2.0\nsize: 1\n---\n"
            ),
            Some("cc-by-sa-4.0, apache-2.0".into())
        );
        assert_eq!(
            card_licence("---\nlicense: [\"mit\", other]\n---\n"),
            Some("mit, other".into())
        );
        assert_eq!(card_licence("# no front matter\nlicense: mit\n"), None);
        assert_eq!(card_licence("---\ntags: [a]\n---\nlicense: mit"), None);
    }

    use super::*;

    #[test]
    fn specs_read_and_print_back() {
        let hub: DataSource = "hf://datasets/HuggingFaceH4/ultrachat_200k@abc/data/train_sft"
            .parse()
            .unwrap();
        assert_eq!(
            hub,
            DataSource::hub("HuggingFaceH4/ultrachat_200k", "abc", "data/train_sft")
        );
        assert_eq!(
            hub.to_string(),
            "hf://datasets/HuggingFaceH4/ultrachat_200k@abc/data/train_sft"
        );
        let whole: DataSource = "hf://datasets/o/n".parse().unwrap();
        assert_eq!(whole, DataSource::hub("o/n", "main", ""));
        assert_eq!(whole.to_string(), "hf://datasets/o/n");
        assert_eq!(
            DataSource::from("data/spider-dev"),
            DataSource::Local("data/spider-dev".into())
        );
        for bad in [
            "hf://datasets/",
            "hf://datasets/owner",
            "hf://datasets/o/n@",
        ] {
            let err = bad.parse::<DataSource>().unwrap_err().to_string();
            assert!(err.contains("hf://datasets/<owner>/<name>"), "{bad}: {err}");
        }
        let json = serde_json::to_string(&hub).unwrap();
        assert_eq!(serde_json::from_str::<DataSource>(&json).unwrap(), hub);
    }
}
