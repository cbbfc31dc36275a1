//! Stamps the library with a digest of its own sources (`ABT_SOURCE_DIGEST`), so that results
//! saved by other code are not reused as if this code had computed them (see `src/cache.rs`),
//! and sets `cfg(abt_cuda)` for the CUDA build, whether it was asked for with the `cuda` feature
//! or with `--cfg abt_cuda` in the rustflags (see Cargo.toml).

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(abt_cuda)");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo::rustc-cfg=abt_cuda");
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.lock");
    let mut all = vec![PathBuf::from("Cargo.lock")];
    files(Path::new("src"), &mut all);
    all.sort();
    // FNV-1a over every file's path and bytes: stable across toolchains and platforms.
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for path in all {
        let name = path.to_string_lossy().replace('\\', "/").into_bytes();
        let bytes = std::fs::read(&path).unwrap_or_default();
        for b in name
            .iter()
            .chain(&(bytes.len() as u64).to_le_bytes())
            .chain(&bytes)
        {
            digest ^= u64::from(*b);
            digest = digest.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=ABT_SOURCE_DIGEST={digest:016x}");
}
