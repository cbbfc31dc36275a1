//! The one training loop. A [`Method`] (SFT, DPO, GRPO) says what a step computes: its batches,
//! its loss, its metrics and its evaluation. [`Trainer`] does the rest, once for all of them:
//! adapters and optimizer, gradient accumulation and clipping, the learning-rate schedule, the
//! step counter and data position, evaluation and checkpoints at intervals, `metrics.jsonl`,
//! and an exact resume that refuses a changed configuration.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::args::TrainArgs;
use super::optim::AdamW;
use super::run::{
    Checkpoints, GradAccumulator, LossScale, TrainState, append_metrics, read_metrics,
};
use super::schedule::CosineSchedule;
use crate::error::{Error, Result};
use crate::io::create_dir_all;
use crate::model::{Decoder, LoraConfig};

/// A training algorithm: what one step computes. Everything around the step is [`Trainer`]'s.
pub trait Method {
    /// The full configuration: saved with each checkpoint, compared on resume; it holds the
    /// shared settings.
    type Config: Clone + PartialEq + Serialize + DeserializeOwned + AsRef<TrainArgs>;
    /// One line of `metrics.jsonl`.
    type Metrics: Clone + Serialize + DeserializeOwned;

    /// The configuration.
    fn config(&self) -> &Self::Config;

    /// The shared settings within it.
    fn args(&self) -> &TrainArgs {
        self.config().as_ref()
    }

    /// Puts the data order at the position `state` records (after a resume).
    fn seek(&mut self, state: &TrainState) -> Result<()>;

    /// One step: the forward and backward passes of its batch and the optimizer update(s)
    /// through [`Core::update`]. `core`'s step counter still counts the steps before this one.
    fn step(&mut self, core: &mut Core) -> Result<Self::Metrics>;

    /// Whether the run has held-out data to evaluate on.
    fn has_eval(&self) -> bool;

    /// Evaluates on the held-out data after a step and records the result in its metrics.
    fn evaluate_into(&mut self, core: &Core, metrics: &mut Self::Metrics) -> Result<()>;

    /// Work before the first step of a run (GRPO: its starting evaluation).
    fn start(&mut self, _core: &Core) -> Result<()> {
        Ok(())
    }

    /// Logs beside `metrics.jsonl` (JSON lines with a `step` field), trimmed to the checkpoint
    /// on resume and removed on a fresh start.
    fn logs(&self) -> &'static [&'static str] {
        &[]
    }

    /// What the method learns across steps beyond the data position (GRPO: its pass-rate
    /// estimates), saved with each checkpoint.
    fn saved_state(&self) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }

    /// Restores what [`Method::saved_state`] saved (`None` from a checkpoint without it).
    fn restore_state(&mut self, _saved: Option<serde_json::Value>) -> Result<()> {
        Ok(())
    }
}

/// A checkpoint's `state.json`: the trainer's state and the method's own.
#[derive(Serialize)]
struct SavedState<'a> {
    #[serde(flatten)]
    train: &'a TrainState,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<serde_json::Value>,
}

/// [`SavedState`] read back (checkpoints written before the method's state was kept have none).
#[derive(serde::Deserialize)]
struct LoadedState {
    #[serde(flatten)]
    train: TrainState,
    #[serde(default)]
    method: Option<serde_json::Value>,
}

/// What every method's step works with: the model and its trainable values, the optimizer,
/// the schedule, and where the run stands.
pub struct Core {
    model: Decoder,
    vars: Vec<Var>,
    optimizer: AdamW,
    schedule: CosineSchedule,
    state: TrainState,
    steps: usize,
    updates_per_step: usize,
    max_grad_norm: f64,
    pad_id: u32,
    dir: PathBuf,
}

impl Core {
    /// Adds `args.lora` to `model` and sets up AdamW and a schedule over `steps` steps of
    /// `updates_per_step` optimizer updates each, for a run in `dir`.
    pub fn new(
        mut model: Decoder,
        args: &TrainArgs,
        steps: usize,
        updates_per_step: usize,
        pad_id: u32,
        dir: &Path,
    ) -> Result<Self> {
        create_dir_all(dir)?;
        model.add_lora(&LoraConfig {
            seed: args.seed ^ args.lora.seed,
            ..args.lora.clone()
        })?;
        model.set_checkpointing(args.checkpointing);
        let vars = model.trainable_vars();
        let optimizer = AdamW::new(vars.clone(), args.adamw)?;
        let state = TrainState {
            loss_scale: LossScale::for_dtype(model.dtype()),
            ..TrainState::default()
        };
        let steps = steps.max(1);
        let updates_per_step = updates_per_step.max(1);
        let schedule = CosineSchedule::with_ratio(
            args.learning_rate,
            args.warmup_ratio,
            steps * updates_per_step,
        );
        Ok(Self {
            model,
            vars,
            optimizer,
            schedule,
            state,
            steps,
            updates_per_step,
            max_grad_norm: args.max_grad_norm,
            pad_id,
            dir: dir.to_path_buf(),
        })
    }

    /// The model being trained.
    pub fn model(&self) -> &Decoder {
        &self.model
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// The padding token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Where the run stands (steps done, epoch, data cursor).
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The data position, for a method that draws its next batch.
    pub fn state_mut(&mut self) -> &mut TrainState {
        &mut self.state
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Empty gradients for one optimizer update.
    pub fn grads(&self) -> GradAccumulator {
        GradAccumulator::new(self.vars.len())
    }

    /// Back-propagates `loss` (times the loss scale of an f16 model) and adds the trainable
    /// values' gradients to `grads`.
    pub fn backward(&self, loss: &Tensor, grads: &mut GradAccumulator) -> Result<()> {
        let store = match &self.state.loss_scale {
            Some(s) => self.model.backward(&(loss * s.scale)?)?,
            None => self.model.backward(loss)?,
        };
        grads.add(&store, &self.vars)
    }

    /// Clips `grads` and applies them with the learning rate of this step's update number
    /// `update` (0-based within the step). Returns the gradient norm before clipping and the
    /// learning rate. Under loss scaling the gradients are unscaled first, and an update whose
    /// gradients overflowed is skipped: it reports a norm of 0 (nothing was applied) and counts
    /// in [`LossScale::skipped`].
    pub fn update(&mut self, grads: &mut GradAccumulator, update: usize) -> Result<(f64, f64)> {
        let lr = self
            .schedule
            .lr(self.state.step * self.updates_per_step + update);
        if let Some(scale) = &self.state.loss_scale {
            grads.scale(1.0 / scale.scale)?;
        }
        let grad_norm = grads.norm()?;
        if let Some(scale) = &mut self.state.loss_scale
            && !scale.record(grad_norm)
        {
            return Ok((0.0, lr));
        }
        grads.clip(grad_norm, self.max_grad_norm)?;
        self.optimizer.step(grads.grads(), lr)?;
        Ok((grad_norm, lr))
    }
}

/// A training run of one [`Method`] in a run directory.
pub struct Trainer<M: Method> {
    core: Core,
    method: M,
}

impl<M: Method> Trainer<M> {
    /// A run of `method` on `core` (fresh; see [`Trainer::resume`]).
    pub fn from_parts(core: Core, method: M) -> Self {
        Self { core, method }
    }

    /// The method: its data and configuration.
    pub fn method(&self) -> &M {
        &self.method
    }

    /// The model being trained.
    pub fn model(&self) -> &Decoder {
        &self.core.model
    }

    /// Gives the trained model back, adapters attached.
    pub fn into_model(self) -> Decoder {
        self.core.model
    }

    /// The run's configuration.
    pub fn config(&self) -> &M::Config {
        self.method.config()
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> &CosineSchedule {
        &self.core.schedule
    }

    /// Steps done.
    pub fn step_count(&self) -> usize {
        self.core.state.step
    }

    /// Steps the run will take.
    pub fn total_steps(&self) -> usize {
        self.core.steps
    }

    /// Whether every step is done.
    pub fn finished(&self) -> bool {
        self.core.state.step >= self.core.steps
    }

    /// Where the run stands (steps, data position, loss scale).
    pub fn state(&self) -> &TrainState {
        self.core.state()
    }

    /// The run's state, to change (e.g. the loss scale) before the next step.
    pub fn state_mut(&mut self) -> &mut TrainState {
        self.core.state_mut()
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    /// `metrics.jsonl` of the run.
    pub fn metrics_path(&self) -> PathBuf {
        self.core.dir.join("metrics.jsonl")
    }

    /// Reads the metrics written so far.
    pub fn read_metrics(&self) -> Result<Vec<M::Metrics>> {
        read_metrics(&self.metrics_path())
    }

    /// One step, then its bookkeeping: evaluation when due, a line of `metrics.jsonl`, and a
    /// checkpoint when due.
    pub fn step(&mut self) -> Result<M::Metrics> {
        let metrics = self.method.step(&mut self.core)?;
        self.finish_step(metrics)
    }

    /// Counts a step the method has just taken (its `metrics`), evaluates when due (every
    /// `eval_every` steps and at the end), appends the metrics and checkpoints when due.
    pub fn finish_step(&mut self, mut metrics: M::Metrics) -> Result<M::Metrics> {
        self.core.state.step += 1;
        self.core.state.passes = self.core.model.train_passes();
        let step = self.core.state.step;
        let args = self.method.args();
        let due = |every: usize| (every > 0 && step.is_multiple_of(every)) || self.finished();
        let (evaluate, save) = (due(args.eval_every), due(args.save_every));
        if evaluate && self.method.has_eval() {
            self.method.evaluate_into(&self.core, &mut metrics)?;
        }
        append_metrics(&self.metrics_path(), step == 1, &metrics)?;
        if save {
            self.save_checkpoint()?;
        }
        Ok(metrics)
    }

    /// Runs steps until the end (or `limit` more steps), reporting each to `on_step`.
    pub fn train(
        &mut self,
        limit: Option<usize>,
        mut on_step: impl FnMut(&M::Metrics),
    ) -> Result<Vec<M::Metrics>> {
        if self.core.state.step == 0 && !self.finished() {
            self.method.start(&self.core)?;
        }
        let mut out = Vec::new();
        while !self.finished() && limit.is_none_or(|l| out.len() < l) {
            let m = self.step()?;
            on_step(&m);
            out.push(m);
        }
        Ok(out)
    }

    fn checkpoints(&self) -> Checkpoints {
        Checkpoints::new(&self.core.dir, self.method.args().keep_checkpoints)
    }

    /// Writes a checkpoint (trainable values, optimizer moments, state, configuration) into
    /// `checkpoints/step-NNNNNN/` (see [`Checkpoints::save`]).
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let state = SavedState {
            train: &self.core.state,
            method: self.method.saved_state()?,
        };
        self.checkpoints().save(
            self.core.state.step,
            &self.core.vars,
            &self.core.optimizer,
            &state,
            self.method.config(),
        )
    }

    /// Continues from the last checkpoint in the run directory, if there is one: trainable
    /// values, optimizer moments, step, data position and dropout stream are restored, and
    /// log lines past the checkpoint are dropped. A checkpoint written with other settings is
    /// an error that names them (start over, or restore them). Returns whether it resumed.
    pub fn resume(&mut self) -> Result<bool> {
        let checkpoints = self.checkpoints();
        let Some(latest) = checkpoints.latest() else {
            return Ok(false);
        };
        let saved: serde_json::Value = crate::io::read_json(&latest.join("config.json"))?;
        check_same_config(&saved, self.method.config(), &latest)?;
        let Some(LoadedState {
            train: mut state,
            method,
        }) = checkpoints.load::<LoadedState>(&self.core.vars, &mut self.core.optimizer)?
        else {
            return Ok(false);
        };
        self.method.restore_state(method)?;
        if state.loss_scale.is_none() {
            state.loss_scale = LossScale::for_dtype(self.core.model.dtype());
        }
        self.core.state = state;
        self.core.model.set_train_passes(self.core.state.passes);
        self.method.seek(&self.core.state)?;
        let step = self.core.state.step;
        let kept: Vec<M::Metrics> = self
            .read_metrics()?
            .into_iter()
            .filter(|m| step_of(m).is_none_or(|s| s <= step))
            .collect();
        crate::io::write_jsonl(&self.metrics_path(), &kept)?;
        for name in self.method.logs() {
            let path = self.core.dir.join(name);
            let kept: Vec<serde_json::Value> = read_metrics::<serde_json::Value>(&path)?
                .into_iter()
                .filter(|v| step_of(v).is_none_or(|s| s <= step))
                .collect();
            crate::io::write_jsonl(&path, &kept)?;
        }
        Ok(true)
    }

    /// Opens the run for training: `fresh` deletes its checkpoints first; then it resumes from
    /// the last checkpoint, or, where there is none, removes the logs of a run that never
    /// reached one.
    pub fn open(mut self, fresh: bool) -> Result<Self> {
        if fresh {
            Checkpoints::new(&self.core.dir, 1).clear()?;
        }
        if !self.resume()? {
            let logs = std::iter::once("metrics.jsonl").chain(self.method.logs().iter().copied());
            for name in logs {
                let path = self.core.dir.join(name);
                if path.exists() {
                    std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
                }
            }
        }
        Ok(self)
    }

    /// Saves the adapter in PEFT's layout (`adapter_config.json`, `adapter_model.safetensors`),
    /// stacked with any adapter merged into the weights before, so that it applies to the
    /// original base model.
    pub fn save_adapter(&self, dir: &Path, base_model: &str) -> Result<()> {
        self.core.model.save_adapter(dir, base_model)
    }

    /// The shared core and the method, for a method's own operations.
    pub(crate) fn parts(&self) -> (&Core, &M) {
        (&self.core, &self.method)
    }

    /// The same, mutably.
    pub(crate) fn parts_mut(&mut self) -> (&mut Core, &mut M) {
        (&mut self.core, &mut self.method)
    }
}

/// The `step` field of a log line, if it has one.
fn step_of<T: Serialize>(line: &T) -> Option<usize> {
    serde_json::to_value(line)
        .ok()?
        .get("step")?
        .as_u64()
        .map(|s| s as usize)
}

/// An error naming every top-level setting in which `now` differs from the checkpoint's
/// `saved` configuration (read into the same type, so settings added since take their
/// defaults).
fn check_same_config<C: Serialize + DeserializeOwned>(
    saved: &serde_json::Value,
    now: &C,
    checkpoint: &Path,
) -> Result<()> {
    let bad = |reason: String| Error::InvalidConfig {
        source_name: checkpoint.join("config.json").display().to_string(),
        reason,
    };
    let saved: C = serde_json::from_value(saved.clone()).map_err(|e| {
        bad(format!(
            "cannot be read as this trainer's configuration: {e}"
        ))
    })?;
    let (saved, now) = (
        serde_json::to_value(&saved).map_err(|e| bad(e.to_string()))?,
        serde_json::to_value(now).map_err(|e| bad(e.to_string()))?,
    );
    let (Some(saved), Some(now)) = (saved.as_object(), now.as_object()) else {
        return Ok(());
    };
    let changed: Vec<String> = now
        .iter()
        .filter(|(k, v)| !saved.get(*k).is_some_and(|s| same_setting(s, v)))
        .map(|(k, v)| {
            let was = saved.get(k).map_or("(absent)".into(), |s| s.to_string());
            format!("{k}: {was} → {v}")
        })
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    Err(bad(format!(
        "the run was checkpointed with other settings ({}); restore them to resume, or start \
         over (fresh: `--fresh` on the command line)",
        changed.join("; ")
    )))
}

/// Whether two settings are equal, numbers to 1e-12 relative (a number read back from JSON
/// may differ from the one written in its last bit).
fn same_setting(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_setting(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_setting(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
    struct Settings {
        learning_rate: f64,
        steps: usize,
        #[serde(default)]
        added_later: bool,
    }

    #[test]
    fn a_changed_setting_is_named_and_a_setting_added_since_is_not() {
        let dir = Path::new("run/checkpoints/step-000004");
        let saved = serde_json::json!({"learning_rate": 1e-4, "steps": 8});
        let same = Settings {
            learning_rate: 1e-4,
            steps: 8,
            added_later: false,
        };
        check_same_config(&saved, &same, dir).unwrap();
        let changed = Settings {
            learning_rate: 2e-4,
            ..same
        };
        let err = check_same_config(&saved, &changed, dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains("learning_rate: 0.0001 → 0.0002"), "{err}");
        assert!(!err.contains("steps"), "{err}");
        assert!(err.contains("step-000004/config.json"), "{err}");
        // A number that came back from JSON one bit off is the same setting.
        let nudged =
            serde_json::json!({"learning_rate": f64::from_bits(1e-4f64.to_bits() + 1), "steps": 8});
        check_same_config(&nudged, &same, dir).unwrap();
    }
}
