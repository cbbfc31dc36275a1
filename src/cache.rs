//! Reuse of expensive results: a result (a quick score, a DB Bench score, sampled episodes) is
//! saved with a [`Fingerprint`] of everything it was computed from — the library's own sources,
//! settings, input files, the model and its adapter's files — and whatever would compute it again
//! from the same inputs reads it back instead: a re-run cell, a later notebook, a resumed run.
//!
//! A run keeps its results in its own directory, with the fingerprint beside each as
//! `<file>.fingerprint` (with a digest of the result itself, so a file rewritten by anything else
//! is computed again, not trusted). A copy also goes to the machine's cache
//! (`<cache>/results/`, see [`crate::paths::cache_dir`]), where a new run finds what an earlier
//! one computed from the same inputs — the base model's scores, and every later stage's when
//! training reproduced the same adapter byte for byte. `ABT_RECOMPUTE=1` turns reuse off.
//!
//! ```ignore
//! let fingerprint = Fingerprint::new()
//!     .value("config", &config)?
//!     .model(ctx.profile.base_model(), Some(&adapter))?;
//! let score = reuse_or(&path, &fingerprint, || play(&config))?;
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::{read_json, write_json};

/// Digests of everything an artefact was computed from, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    parts: BTreeMap<String, String>,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Self::new()
    }
}

/// What `<file>.fingerprint` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    inputs: Fingerprint,
    /// MD5 of the artefact's bytes when it was saved.
    artefact: String,
}

fn hex(bytes: impl AsRef<[u8]>) -> String {
    format!("{:x}", Md5::digest(bytes))
}

/// Every file under `dir` (recursively), as paths relative to it, sorted.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        let entries = std::fs::read_dir(&at).map_err(|e| Error::io("reading", &at, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io("reading", &at, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                out.push(relative.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Fingerprint {
    /// A fingerprint holding only the digest of the library's sources (and `Cargo.lock`).
    pub fn new() -> Self {
        let mut parts = BTreeMap::new();
        parts.insert("code".into(), env!("ABT_SOURCE_DIGEST").into());
        Self { parts }
    }

    /// One digest of every part.
    pub fn digest(&self) -> String {
        hex(self
            .parts
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes(), b";"].concat())
            .collect::<Vec<u8>>())
    }

    /// Adds a value by its JSON form (settings, prompts, items).
    pub fn value<T: Serialize + ?Sized>(mut self, name: &str, value: &T) -> Result<Self> {
        let json = serde_json::to_vec(value)
            .map_err(|e| Error::Batch(format!("fingerprinting {name}: {e}")))?;
        self.parts.insert(name.into(), hex(json));
        Ok(self)
    }

    /// Adds a file by its contents; a missing file is an error naming it.
    pub fn file(mut self, name: &str, path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
        self.parts.insert(name.into(), hex(bytes));
        Ok(self)
    }

    /// Adds every file under a directory, by relative path and contents.
    pub fn dir(mut self, name: &str, dir: &Path) -> Result<Self> {
        let mut md5 = Md5::new();
        for relative in files_under(dir)? {
            let path = dir.join(&relative);
            let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
            md5.update(relative.to_string_lossy().as_bytes());
            md5.update((bytes.len() as u64).to_le_bytes());
            md5.update(&bytes);
        }
        self.parts
            .insert(name.into(), format!("{:x}", md5.finalize()));
        Ok(self)
    }

    /// Adds the model: the base model's name and, if any, the adapter directory's files.
    pub fn model(self, base_model: &str, adapter: Option<&Path>) -> Result<Self> {
        let this = self.value("model", base_model)?;
        match adapter {
            Some(dir) => this.dir("adapter", dir),
            None => this.value("adapter", "none"),
        }
    }

    /// The names of the parts that differ from `other` (added, removed or changed).
    pub fn changed(&self, other: &Self) -> Vec<String> {
        let mut names: Vec<String> = self
            .parts
            .iter()
            .filter(|(k, v)| other.parts.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        names.extend(
            other
                .parts
                .keys()
                .filter(|k| !self.parts.contains_key(*k))
                .cloned(),
        );
        names
    }
}

/// Where the fingerprint of the artefact at `path` is kept: `<path>.fingerprint`.
pub fn fingerprint_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".fingerprint");
    PathBuf::from(name)
}

/// Whether reuse is turned off (`ABT_RECOMPUTE=1`).
fn recompute_all() -> bool {
    std::env::var("ABT_RECOMPUTE").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Why the artefact at `path` cannot be reused with `fingerprint`; `None` if it can.
pub fn stale_reason(path: &Path, fingerprint: &Fingerprint) -> Option<String> {
    if recompute_all() {
        return Some("ABT_RECOMPUTE is set".into());
    }
    let stamp_path = fingerprint_path(path);
    if !path.is_file() || !stamp_path.is_file() {
        return Some("nothing saved yet".into());
    }
    let Ok(stamp) = read_json::<Stamp>(&stamp_path) else {
        return Some(format!("{} is unreadable", stamp_path.display()));
    };
    let changed = fingerprint.changed(&stamp.inputs);
    if !changed.is_empty() {
        return Some(format!("changed: {}", changed.join(", ")));
    }
    match std::fs::read(path) {
        Ok(bytes) if hex(&bytes) == stamp.artefact => None,
        _ => Some(format!("{} was rewritten since", path.display())),
    }
}

/// Records that the artefact at `path`, whose bytes are `saved`, was computed from `fingerprint`.
fn stamp(path: &Path, fingerprint: &Fingerprint, saved: &[u8]) -> Result<()> {
    write_json(
        &fingerprint_path(path),
        &Stamp {
            inputs: fingerprint.clone(),
            artefact: hex(saved),
        },
    )
}

/// The JSON artefact at `path` if it was computed from the same `fingerprint`; else `compute`s
/// it, saves it there (atomically) with its fingerprint, and returns it. Says which on stdout.
pub fn reuse_or<T, F>(path: &Path, fingerprint: &Fingerprint, compute: F) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T>,
{
    reuse_json_in(&shared_dir(), path, fingerprint, compute)
}

/// [`reuse_or`] for an artefact with its own file format: `load` reads it back from `path`,
/// `save` writes a freshly computed one there.
pub fn reuse_or_save<T>(
    path: &Path,
    fingerprint: &Fingerprint,
    load: impl Fn(&Path) -> Result<T>,
    compute: impl FnOnce() -> Result<T>,
    save: impl FnOnce(&T) -> Result<()>,
) -> Result<T> {
    reuse_in(&shared_dir(), path, fingerprint, load, compute, save)
}

/// Where the machine's cache keeps results: `<cache>/results/`.
pub fn shared_dir() -> PathBuf {
    crate::paths::cache_dir().join("results")
}

/// Where `shared` keeps the result that would be saved at `path` with `fingerprint`:
/// `<shared>/<digest>-<file name>`.
fn shared_path(shared: &Path, path: &Path, fingerprint: &Fingerprint) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "result".into(), |n| n.to_string_lossy().into_owned());
    shared.join(format!("{}-{name}", fingerprint.digest()))
}

/// [`reuse_or`] with the machine-wide copies in `shared`.
pub(crate) fn reuse_json_in<T, F>(
    shared: &Path,
    path: &Path,
    fingerprint: &Fingerprint,
    compute: F,
) -> Result<T>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T>,
{
    reuse_in(shared, path, fingerprint, read_json, compute, |value| {
        write_json(path, value)
    })
}

/// [`reuse_or_save`] with the machine-wide copies in `shared`.
fn reuse_in<T>(
    shared: &Path,
    path: &Path,
    fingerprint: &Fingerprint,
    load: impl Fn(&Path) -> Result<T>,
    compute: impl FnOnce() -> Result<T>,
    save: impl FnOnce(&T) -> Result<()>,
) -> Result<T> {
    let existed = path.is_file();
    let reason = match stale_reason(path, fingerprint) {
        None => match load(path) {
            Ok(saved) => {
                println!("reused {} (same inputs)", path.display());
                return Ok(saved);
            }
            Err(e) => e.to_string(),
        },
        Some(reason) => reason,
    };
    let shared = shared_path(shared, path, fingerprint);
    if !recompute_all()
        && let Ok(bytes) = std::fs::read(&shared)
    {
        crate::io::write_atomic(path, &bytes)?;
        if let Ok(saved) = load(path) {
            stamp(path, fingerprint, &bytes)?;
            println!(
                "reused {} from an earlier run with the same inputs ({})",
                path.display(),
                shared.display()
            );
            return Ok(saved);
        }
    }
    if existed {
        println!("recomputing {}: {reason}", path.display());
    }
    let value = compute()?;
    save(&value)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    stamp(path, fingerprint, &bytes)?;
    // The machine-wide copy is a convenience: failing to write it loses nothing.
    if let Err(e) = crate::io::write_atomic(&shared, &bytes) {
        println!("note: not kept in the cache: {e}");
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// `reuse_or` with the machine-wide copies in `shared`.
    fn reuse(
        shared: &Path,
        path: &Path,
        fp: &Fingerprint,
        compute: impl FnOnce() -> Result<Vec<u32>>,
    ) -> Vec<u32> {
        reuse_in(shared, path, fp, read_json, compute, |v| {
            write_json(path, v)
        })
        .unwrap()
    }

    #[test]
    fn a_result_is_computed_once_and_again_when_an_input_changes() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let path = dir.path().join("run/score.json");
        let adapter = dir.path().join("adapter");
        std::fs::create_dir_all(adapter.join("nested")).unwrap();
        std::fs::write(adapter.join("adapter_config.json"), "{}").unwrap();
        std::fs::write(adapter.join("nested/w.bin"), [1u8, 2, 3]).unwrap();
        let calls = Cell::new(0);
        let fp = |n: u32| {
            Fingerprint::new()
                .value("config", &n)
                .unwrap()
                .model("m", Some(&adapter))
                .unwrap()
        };
        let run = |n: u32| {
            reuse(&shared, &path, &fp(n), || {
                calls.set(calls.get() + 1);
                Ok(vec![n, calls.get()])
            })
        };
        assert_eq!(run(1), vec![1, 1]);
        assert_eq!(run(1), vec![1, 1], "same inputs: read back");
        assert_eq!(calls.get(), 1);
        assert_eq!(run(2), vec![2, 2], "config changed");
        std::fs::write(adapter.join("nested/w.bin"), [1u8, 2, 4]).unwrap();
        assert_eq!(stale_reason(&path, &fp(2)).unwrap(), "changed: adapter");
        assert_eq!(run(2), vec![2, 3], "adapter weights changed");
        std::fs::write(adapter.join("nested/w.bin"), [1u8, 2, 3]).unwrap();
        assert_eq!(
            run(1),
            vec![1, 1],
            "back to the first inputs: the machine-wide copy"
        );
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn a_new_run_reuses_what_an_earlier_one_computed_and_a_rewritten_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        let (first, second) = (dir.path().join("a/q.json"), dir.path().join("b/q.json"));
        let fp = Fingerprint::new().value("config", &7).unwrap();
        assert_eq!(reuse(&shared, &first, &fp, || Ok(vec![7])), vec![7]);
        let never = || -> Result<Vec<u32>> { panic!("computed again") };
        assert_eq!(reuse(&shared, &second, &fp, never), vec![7]);
        assert!(stale_reason(&second, &fp).is_none(), "the copy is stamped");
        std::fs::write(&first, "[8]").unwrap();
        assert!(stale_reason(&first, &fp).unwrap().contains("rewritten"));
        assert_eq!(reuse(&shared, &first, &fp, never), vec![7]);
        let other = dir.path().join("a/other.json");
        assert_eq!(
            reuse(&shared, &other, &fp, || Ok(vec![9])),
            vec![9],
            "another file name is another result"
        );
    }

    #[test]
    fn changed_names_added_and_removed_parts() {
        let a = Fingerprint::new().value("x", &1).unwrap();
        let b = Fingerprint::new().value("y", &1).unwrap();
        assert_eq!(a.changed(&b), vec!["x".to_string(), "y".to_string()]);
        assert!(a.changed(&a.clone()).is_empty());
        assert_ne!(a.digest(), b.digest());
        let base = Fingerprint::new().model("m", None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let with = Fingerprint::new().model("m", Some(dir.path())).unwrap();
        assert_eq!(base.changed(&with), vec!["adapter".to_string()]);
    }

    #[test]
    fn a_missing_input_file_is_named() {
        let err = Fingerprint::new()
            .file("items", Path::new("/no/such/items.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/items.jsonl"), "{err}");
    }
}
