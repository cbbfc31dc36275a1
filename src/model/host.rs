//! Tensors made from host data. Every one the model, the trainers and generation build goes
//! through [`tensor`] or [`tensor_from_slice`], which count them per thread: on a GPU each is a
//! host-to-device copy, and a test checks that a training step makes a fixed number of them,
//! however many layers the model has (nothing inside a layer comes from the host).

use std::cell::Cell;

use candle_core::{Device, Result, Shape, Tensor, WithDType};

thread_local! {
    static MADE: Cell<usize> = const { Cell::new(0) };
}

/// `values` as a tensor of `shape` on `device` (a copy to the device on an accelerator).
pub fn tensor<T: WithDType, S: Into<Shape>>(
    values: Vec<T>,
    shape: S,
    device: &Device,
) -> Result<Tensor> {
    MADE.with(|n| n.set(n.get() + 1));
    Tensor::from_vec(values, shape, device)
}

/// [`tensor`] from a slice.
pub fn tensor_from_slice<T: WithDType, S: Into<Shape>>(
    values: &[T],
    shape: S,
    device: &Device,
) -> Result<Tensor> {
    MADE.with(|n| n.set(n.get() + 1));
    Tensor::from_slice(values, shape, device)
}

/// How many tensors this thread has made from host data so far.
pub fn tensors_made() -> usize {
    MADE.with(Cell::get)
}

#[cfg(test)]
mod tests {
    /// Files whose non-test code may build tensors from host data directly: this module, and the
    /// fused kernels, which run on the CPU only.
    const ALLOWED: [&str; 4] = [
        "src/model/host.rs",
        "src/model/kernels.rs",
        "src/model/attention.rs",
        "src/model/nf4.rs",
    ];

    #[test]
    fn the_model_trainers_and_generation_make_host_tensors_only_through_this_module() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut offenders = Vec::new();
        for dir in ["src/model", "src/train", "src/generate"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if path.extension().is_none_or(|e| e != "rs") || ALLOWED.contains(&name.as_str()) {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                for (i, line) in code.lines().enumerate() {
                    let direct = ["Tensor::from_vec(", "Tensor::from_slice(", "Tensor::new("];
                    // `Tensor::new(`, not `QTensor::new(` (which wraps storage already made).
                    let called = |d: &str| {
                        line.match_indices(d).any(|(at, _)| {
                            !line[..at]
                                .chars()
                                .next_back()
                                .is_some_and(|c| c.is_alphanumeric() || c == '_')
                        })
                    };
                    if direct.iter().any(|d| called(d)) {
                        offenders.push(format!("{name}:{}: {}", i + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "host data made into tensors outside model::host (uncounted):\n{}",
            offenders.join("\n")
        );
    }
}
