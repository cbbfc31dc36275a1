//! What every trainer (SFT, DPO, GRPO) shares: gradients accumulated over micro-batches and
//! clipped by their global norm, checkpoints written atomically and resumed exactly, the
//! `metrics.jsonl` log, and the process's peak memory.

use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::optim::AdamW;
use crate::error::{Error, Result};
use crate::io::{create_dir_all, write_atomic, write_json};

/// Where a run stands; saved with each checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// Epoch (0-based).
    pub epoch: usize,
    /// Next micro-batch of the epoch.
    pub cursor: usize,
    /// The decoder's training-pass counter (dropout masks).
    pub passes: u64,
    /// The dynamic loss scale of an f16 model (`None` in f32 and bf16).
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
}

/// Dynamic loss scaling for f16 models, as PyTorch's `GradScaler` does it.
///
/// f16 keeps 5 exponent bits: gradients flowing back through f16 activations underflow to 0
/// below 6·10⁻⁸. The loss is multiplied by `scale` before the backward pass and the (f32)
/// adapter gradients divided by it after; an update whose gradients overflowed (a non-finite
/// norm) is skipped and the scale halved, and after [`LossScale::GROWTH_INTERVAL`] finite
/// updates in a row it doubles.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LossScale {
    /// The current multiplier.
    pub scale: f64,
    /// Finite updates since the scale last changed.
    pub good_updates: usize,
    /// Updates skipped because their gradients overflowed.
    pub skipped: usize,
}

impl LossScale {
    /// The first scale (PyTorch's default, 2¹⁶).
    pub const INITIAL: f64 = 65536.0;
    /// Finite updates in a row before the scale doubles (PyTorch's default).
    pub const GROWTH_INTERVAL: usize = 2000;

    /// The scaler a model computing in `dtype` needs: one for f16, none otherwise.
    pub fn for_dtype(dtype: DType) -> Option<Self> {
        (dtype == DType::F16).then_some(Self {
            scale: Self::INITIAL,
            good_updates: 0,
            skipped: 0,
        })
    }

    /// Records an update whose unscaled gradient norm was `norm`; returns whether to apply it.
    pub fn record(&mut self, norm: f64) -> bool {
        if !norm.is_finite() {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_updates = 0;
            self.skipped += 1;
            return false;
        }
        self.good_updates += 1;
        if self.good_updates >= Self::GROWTH_INTERVAL {
            self.scale *= 2.0;
            self.good_updates = 0;
        }
        true
    }
}

/// Gradients of the trainable vars summed over the micro-batches of one optimizer step.
#[derive(Debug)]
pub struct GradAccumulator {
    grads: Vec<Option<Tensor>>,
}

impl GradAccumulator {
    /// Empty, for `n` vars.
    pub fn new(n: usize) -> Self {
        Self {
            grads: vec![None; n],
        }
    }

    /// Adds the gradients `store` holds for `vars` (in f32).
    pub fn add(&mut self, store: &GradStore, vars: &[Var]) -> Result<()> {
        for (slot, var) in self.grads.iter_mut().zip(vars) {
            if let Some(g) = store.get(var.as_tensor()) {
                let g = g.to_dtype(DType::F32)?;
                *slot = Some(match slot.take() {
                    Some(acc) => (acc + g)?,
                    None => g,
                });
            }
        }
        Ok(())
    }

    /// The global L2 norm of the gradients.
    ///
    /// The squares are summed on the gradients' device, in f64 and in the vars' order, and read
    /// back once: one device-to-host copy per update rather than one per var (392 for a 7B
    /// model's adapters on all seven projections).
    pub fn norm(&self) -> Result<f64> {
        let mut norm_sq: Option<Tensor> = None;
        for g in self.grads.iter().flatten() {
            let sq = g.sqr()?.sum_all()?.to_dtype(DType::F64)?;
            norm_sq = Some(match norm_sq {
                Some(total) => (total + sq)?,
                None => sq,
            });
        }
        Ok(norm_sq.map_or(Ok(0.0), |t| t.to_scalar::<f64>())?.sqrt())
    }

    /// Multiplies every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        for g in self.grads.iter_mut().flatten() {
            *g = (&*g * factor)?;
        }
        Ok(())
    }

    /// Scales the gradients, whose global norm is `norm` ([`GradAccumulator::norm`]), down to
    /// global norm `max_norm` when above it (0: no clipping).
    pub fn clip(&mut self, norm: f64, max_norm: f64) -> Result<()> {
        if max_norm > 0.0 && norm > max_norm {
            self.scale(max_norm / (norm + 1e-6))?;
        }
        Ok(())
    }

    /// The gradients, in the order of the vars (`None` where a var got none).
    pub fn grads(&self) -> &[Option<Tensor>] {
        &self.grads
    }
}

/// Peak resident memory of this process in MB (0 where `/proc` is absent).
pub fn peak_memory_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Appends one line to a run's `metrics.jsonl` (or `eval.jsonl`); the run's first line
/// (`first`) starts a fresh file.
pub fn append_metrics<M: Serialize>(path: &Path, first: bool, metrics: &M) -> Result<()> {
    use std::io::Write;
    let line = serde_json::to_string(metrics).unwrap_or_default();
    if first {
        return write_atomic(path, format!("{line}\n").as_bytes());
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("appending to", path, e))?;
    writeln!(f, "{line}").map_err(|e| Error::io("appending to", path, e))
}

/// Reads a run's metrics (none when the file does not exist yet).
pub fn read_metrics<M: DeserializeOwned>(path: &Path) -> Result<Vec<M>> {
    if !path.exists() {
        return Ok(vec![]);
    }
    crate::io::read_jsonl(path)
}

/// The checkpoints of a run: `checkpoints/step-NNNNNN/` directories and a `latest` pointer.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    root: PathBuf,
    keep: usize,
}

impl Checkpoints {
    /// Checkpoints under `run_dir/checkpoints`, keeping the newest `keep` (at least 1).
    pub fn new(run_dir: &Path, keep: usize) -> Self {
        Self {
            root: run_dir.join("checkpoints"),
            keep: keep.max(1),
        }
    }

    /// Writes trainable values, optimizer moments, the trainer's state and configuration into
    /// `step-NNNNNN/` via a temporary directory renamed into place, then points `latest` at it
    /// and removes the oldest beyond `keep`. A crash at any moment leaves the previous
    /// checkpoint intact and `latest` naming a complete one.
    pub fn save<S: Serialize, C: Serialize>(
        &self,
        step: usize,
        vars: &[Var],
        optimizer: &AdamW,
        state: &S,
        config: &C,
    ) -> Result<PathBuf> {
        let name = format!("step-{step:06}");
        let tmp = self.root.join(format!(".{name}.tmp"));
        let done = self.root.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io("removing", &tmp, e))?;
        }
        create_dir_all(&tmp)?;
        let tensors = vars
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Ok((
                    format!("var.{i}"),
                    v.as_tensor().to_device(&candle_core::Device::Cpu)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        write_atomic(
            &tmp.join("trainable.safetensors"),
            &crate::model::peft::safetensors_bytes(tensors)?,
        )?;
        optimizer.save(&tmp.join("optimizer.safetensors"))?;
        write_json(&tmp.join("state.json"), state)?;
        write_json(&tmp.join("config.json"), config)?;
        if done.exists() {
            std::fs::remove_dir_all(&done).map_err(|e| Error::io("removing", &done, e))?;
        }
        std::fs::rename(&tmp, &done).map_err(|e| Error::io("renaming", &tmp, e))?;
        write_atomic(&self.root.join("latest"), name.as_bytes())?;
        let mut all: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .map_err(|e| Error::io("listing", &self.root, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
            })
            .collect();
        all.sort();
        for old in all.iter().take(all.len().saturating_sub(self.keep)) {
            std::fs::remove_dir_all(old).map_err(|e| Error::io("removing", old, e))?;
        }
        Ok(done)
    }

    /// Restores the latest checkpoint into `vars` and `optimizer` and returns the trainer's
    /// state, or `None` when there is none.
    pub fn load<S: DeserializeOwned>(
        &self,
        vars: &[Var],
        optimizer: &mut AdamW,
    ) -> Result<Option<S>> {
        let Some(dir) = self.latest() else {
            return Ok(None);
        };
        let device = vars
            .first()
            .map_or(candle_core::Device::Cpu, |v| v.device().clone());
        let tensors = candle_core::safetensors::load(dir.join("trainable.safetensors"), &device)?;
        for (i, var) in vars.iter().enumerate() {
            let t = tensors.get(&format!("var.{i}")).ok_or_else(|| {
                Error::Adapter(format!("{}: checkpoint lacks var.{i}", dir.display()))
            })?;
            if t.shape() != var.shape() {
                return Err(Error::Adapter(format!(
                    "{}: var.{i} has shape {:?}, the model {:?} (another configuration?)",
                    dir.display(),
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        optimizer.load(&dir.join("optimizer.safetensors"))?;
        Ok(Some(crate::io::read_json(&dir.join("state.json"))?))
    }

    /// The directory `latest` names, if any.
    pub fn latest(&self) -> Option<PathBuf> {
        let name = std::fs::read_to_string(self.root.join("latest")).ok()?;
        Some(self.root.join(name.trim()))
    }

    /// Deletes every checkpoint (a fresh start).
    pub fn clear(&self) -> Result<()> {
        if self.root.exists() {
            std::fs::remove_dir_all(&self.root)
                .map_err(|e| Error::io("removing", &self.root, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_scale_halves_on_overflow_and_doubles_after_a_run_of_finite_updates() {
        assert_eq!(LossScale::for_dtype(DType::BF16), None);
        assert_eq!(LossScale::for_dtype(DType::F32), None);
        let mut s = LossScale::for_dtype(DType::F16).unwrap();
        assert!(!s.record(f64::INFINITY));
        assert!(!s.record(f64::NAN));
        assert_eq!((s.scale, s.skipped), (LossScale::INITIAL / 4.0, 2));
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            assert!(s.record(1.0));
        }
        assert_eq!(s.scale, LossScale::INITIAL / 4.0);
        assert!(s.record(1.0));
        assert_eq!((s.scale, s.good_updates), (LossScale::INITIAL / 2.0, 0));
    }
    use candle_core::{Device, Tensor};

    fn var(value: f32) -> Var {
        Var::from_tensor(&Tensor::new(&[value, value + 1.0], &Device::Cpu).unwrap()).unwrap()
    }

    fn values(v: &Var) -> Vec<f32> {
        v.as_tensor().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn a_checkpoint_cut_off_mid_write_leaves_the_last_good_one_loadable() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Checkpoints::new(dir.path(), 2);
        let vars = vec![var(1.0)];
        let optimizer =
            AdamW::new(vars.clone(), super::super::optim::AdamWParams::default()).unwrap();
        let state = TrainState {
            step: 2,
            ..TrainState::default()
        };
        checkpoints
            .save(2, &vars, &optimizer, &state, &"config")
            .unwrap();
        // A process killed while writing step 4 leaves a partial temporary directory only.
        let partial = dir.path().join("checkpoints/.step-000004.tmp");
        create_dir_all(&partial).unwrap();
        std::fs::write(partial.join("trainable.safetensors"), b"half a file").unwrap();

        let restored = vec![var(9.0)];
        let mut fresh = AdamW::new(restored.clone(), Default::default()).unwrap();
        let loaded: TrainState = checkpoints.load(&restored, &mut fresh).unwrap().unwrap();
        assert_eq!(loaded.step, 2);
        assert_eq!(values(&restored[0]), vec![1.0, 2.0]);

        // The next save of that step replaces the partial directory.
        let state = TrainState { step: 4, ..state };
        checkpoints
            .save(4, &vars, &optimizer, &state, &"config")
            .unwrap();
        assert!(!partial.exists());
        let loaded: TrainState = checkpoints.load(&restored, &mut fresh).unwrap().unwrap();
        assert_eq!(loaded.step, 4);
    }
}
