//! File-system helpers shared by every phase: atomic writes, directory creation and listing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes `contents` to `path` atomically: a temporary file beside it, flushed, then renamed.
///
/// A reader (or a crashed run) sees either the old file or the complete new one, never a
/// half-written artefact. Missing parent directories are created.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    create_dir_all(parent)?;
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            Error::io(
                "writing",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?
        .to_string_lossy();
    let tmp = parent.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("writing", path, e)
    })
}

/// Reads a JSONL file: one record per non-blank line; a bad line is reported with file and line.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file = fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut records = Vec::new();
    for_each_jsonl(path, std::io::BufReader::new(file), |record, _| {
        records.push(record);
        Ok(true)
    })?;
    Ok(records)
}

/// Calls `f` with each non-blank line of `reader` (the JSONL file `path`) parsed as `T` and its
/// line number, one line in memory at a time; stops, returning `false`, when `f` returns
/// `false`. A bad line is reported with file and line.
pub fn for_each_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    reader: impl std::io::BufRead,
    mut f: impl FnMut(T, usize) -> Result<bool>,
) -> Result<bool> {
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::io("reading", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|source| Error::JsonLine {
            path: path.to_path_buf(),
            line: i + 1,
            source,
        })?;
        if !f(record, i + 1)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes records as JSONL (one JSON object per line), atomically.
pub fn write_jsonl<T: serde::Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        out.push(b'\n');
    }
    write_atomic(path, &out)
}

/// Writes a value as pretty-printed JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut out = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    out.push(b'\n');
    write_atomic(path, &out)
}

/// Reads a JSON file written by [`write_json`], naming the file on failure.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` and all its parents, naming the directory on failure.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))
}

/// The files in `dir` whose extension is `ext`, sorted; none when `dir` does not exist.
pub fn files_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io("reading", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    Ok(files)
}

/// The files under `dir` (links followed), as sorted paths relative to it with `/` separators.
pub fn relative_files(dir: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        let entries = fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io("listing", dir, e))?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if path.is_file()
                && let Ok(rel) = path.strip_prefix(root)
            {
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_jsonl_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.jsonl");
        fs::write(&path, "{\"a\": 1}\n\n{\"a\": 2}\n{\"a\": \n").unwrap();
        let err = read_jsonl::<serde_json::Value>(&path)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("{}:4:", path.display())), "{err}");
        fs::write(&path, "{\"a\": 1}\n\n{\"a\": 2}\n").unwrap();
        assert_eq!(read_jsonl::<serde_json::Value>(&path).unwrap().len(), 2);
    }

    #[test]
    fn write_atomic_creates_parents_and_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.json");
        write_atomic(&path, b"first version, long").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "temporary file left behind: {leftovers:?}"
        );
    }

    #[test]
    fn write_atomic_names_the_path_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "x").unwrap();
        let err = write_atomic(&blocker.join("child.txt"), b"y").unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
    }
}
