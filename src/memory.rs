//! The memory planner: the peak memory of each phase's largest step, counted from the model's
//! shape, the run's settings and the way this crate computes a step, in parts.
//!
//! The count follows the code. A training step keeps, until its loss is dropped, every tensor
//! an op of its graph reads (candle's autograd holds each op's inputs): per layer and token, the
//! norms, the projections and their adapters' intermediates, the attention output and its
//! log-sum-exp, the MLP. With activation checkpointing only each layer's input and output are
//! kept, and one layer's graph is rebuilt at a time in the backward pass. The output head keeps
//! the final hidden states and works in chunks of about 64 MB of logits; attention off the CPU
//! works in chunks of at most 256 MB of scores. Generation keeps the KV cache of every sequence
//! at its full context. On the CPU in f32 the fused kernels (RMSNorm, RoPE, attention, head)
//! keep one output each; elsewhere their compositions keep their intermediates, some in f32.
//!
//! `docs/memory.md` compares the counts with peaks measured on the CPU; on a GPU they are
//! estimates until measured there.

use std::fmt;
use std::str::FromStr;

use candle_core::DType;
use serde::Serialize;

use crate::config::Profile;
use crate::display::Show;
use crate::error::{Error, Result};
use crate::model::nf4::{BLOCK, SCALE_BLOCK};
use crate::model::{Architecture, LoraConfig, ModelConfig, Nf4Config, Target};
use crate::presets::Presets;
use crate::table::Table;

const MIB: u64 = 1 << 20;

/// The GPUs a plan can target, with the memory their driver reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Gpu {
    /// NVIDIA T4, 16 GB (15 360 MiB), no bf16: the model runs in f16.
    T4,
    /// NVIDIA L4, 24 GB (22 528 MiB).
    L4,
    /// NVIDIA A100 40 GB (40 960 MiB).
    A100_40,
    /// NVIDIA A100 80 GB (81 920 MiB).
    A100_80,
    /// NVIDIA H100 80 GB (81 559 MiB).
    H100,
}

impl Gpu {
    /// Every GPU, smallest first.
    pub const ALL: [Gpu; 5] = [Gpu::T4, Gpu::L4, Gpu::A100_40, Gpu::A100_80, Gpu::H100];

    /// The name `--gpu` takes.
    pub fn name(self) -> &'static str {
        match self {
            Gpu::T4 => "t4",
            Gpu::L4 => "l4",
            Gpu::A100_40 => "a100-40",
            Gpu::A100_80 => "a100-80",
            Gpu::H100 => "h100",
        }
    }

    /// Its memory in bytes, as `nvidia-smi` reports it.
    pub fn memory(self) -> u64 {
        MIB * match self {
            Gpu::T4 => 15_360,
            Gpu::L4 => 22_528,
            Gpu::A100_40 => 40_960,
            Gpu::A100_80 => 81_920,
            Gpu::H100 => 81_559,
        }
    }

    /// The compute dtype the toolkit picks there (`system::compute_dtype`).
    pub fn dtype(self) -> DType {
        match self {
            Gpu::T4 => DType::F16,
            _ => DType::BF16,
        }
    }

    /// The GPU a driver's device name (`Tesla T4`, `NVIDIA A100-SXM4-80GB`) is, if a known one.
    pub fn from_device_name(name: &str) -> Option<Gpu> {
        let name = name.to_ascii_uppercase();
        if name.contains("H100") {
            Some(Gpu::H100)
        } else if name.contains("A100") {
            Some(if name.contains("80G") {
                Gpu::A100_80
            } else {
                Gpu::A100_40
            })
        } else if name.contains("L4") {
            Some(Gpu::L4)
        } else if name.contains("T4") {
            Some(Gpu::T4)
        } else {
            None
        }
    }
}

impl FromStr for Gpu {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Gpu::ALL
            .into_iter()
            .find(|g| g.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| Error::InvalidConfig {
                source_name: "--gpu".into(),
                reason: format!(
                    "unknown GPU {s:?}; use one of {}",
                    Gpu::ALL.map(Gpu::name).join(", ")
                ),
            })
    }
}

impl fmt::Display for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a plan runs: the CPU in f32 (fused kernels), or a GPU in its half precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Place {
    /// The CPU: f32, no memory limit the planner knows of.
    Cpu,
    /// A GPU.
    Gpu(Gpu),
}

impl Place {
    /// The device this process computes on (`system::device`); an unknown GPU is refused
    /// (name one with `--gpu`).
    pub fn current() -> Result<Place> {
        let device = crate::system::device()?;
        match crate::system::gpu_info(&device)? {
            None => Ok(Place::Cpu),
            Some(info) => Gpu::from_device_name(&info.name)
                .map(Place::Gpu)
                .ok_or_else(|| Error::InvalidConfig {
                    source_name: "the GPU".into(),
                    reason: format!(
                        "the planner does not know {}; name the closest with --gpu ({})",
                        info.name,
                        Gpu::ALL.map(Gpu::name).join(", ")
                    ),
                }),
        }
    }

    fn dtype(self) -> DType {
        match self {
            Place::Cpu => DType::F32,
            Place::Gpu(g) => g.dtype(),
        }
    }

    /// Memory available, if the planner knows it.
    pub fn budget(self) -> Option<u64> {
        match self {
            Place::Cpu => None,
            Place::Gpu(g) => Some(g.memory()),
        }
    }

    /// Memory the process holds before any tensor: on the CPU the binary, its libraries and
    /// allocator (measured, `docs/memory.md`); on a GPU the CUDA context and cuBLAS workspace
    /// (an estimate).
    fn runtime(self) -> u64 {
        match self {
            Place::Cpu => 40 * MIB,
            Place::Gpu(_) => 600 * MIB,
        }
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Cpu => f.write_str("cpu (f32)"),
            Place::Gpu(g) => write!(f, "{} ({:?})", g.name(), g.dtype()),
        }
    }
}

/// The parts of a step's peak memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// The base model (NF4 codes and scales for quantised projections), plus the transient
    /// dense copy of the largest quantised projection.
    pub weights: u64,
    /// LoRA A/B, their gradients and AdamW's two moments (f32), and merged adapters kept
    /// beside NF4 weights.
    pub adapters: u64,
    /// What the backward pass needs of the layers (checkpointed inputs, rebuilt layer graph)
    /// and the gradients being formed.
    pub activations: u64,
    /// Attention outputs and log-sum-exps the backward pass reads, and the score chunks of the
    /// composed kernel.
    pub attention: u64,
    /// The output head: final hidden states, log-sum-exps and one chunk of logits.
    pub head: u64,
    /// The KV cache of generation.
    pub cache: u64,
    /// The process before any tensor (runtime, CUDA context).
    pub runtime: u64,
}

impl Memory {
    /// The sum of the parts.
    pub fn total(&self) -> u64 {
        self.weights
            + self.adapters
            + self.activations
            + self.attention
            + self.head
            + self.cache
            + self.runtime
    }
}

/// A training step: `rows` sequences of `len` tokens with adapters of `lora`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainStep {
    /// Sequences per forward/backward pass.
    pub rows: usize,
    /// Tokens per sequence.
    pub len: usize,
    /// The adapters trained.
    pub lora: LoraConfig,
    /// Activation checkpointing.
    pub checkpointing: bool,
}

/// Generation: `batch` sequences with caches of `context` tokens, prefilling `prefill` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateStep {
    /// Sequences generated together.
    pub batch: usize,
    /// Tokens each cache holds (prompt and everything generated).
    pub context: usize,
    /// Tokens of the largest prefill.
    pub prefill: usize,
}

/// How the model is stored and computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    /// The model's shape.
    pub config: ModelConfig,
    /// Where it runs.
    pub place: Place,
    /// NF4 base projections (QLoRA).
    pub nf4: Option<Nf4Config>,
    /// Adapters merged into the base beforehand (the SFT adapter under DPO and GRPO): kept
    /// beside NF4 weights (`r`, targets), folded into dense ones.
    pub merged: Option<LoraConfig>,
}

impl Setup {
    fn w(&self) -> u64 {
        self.place.dtype().size_in_bytes() as u64
    }

    /// Whether the fused CPU kernels run (f32 on the CPU).
    fn fused(&self) -> bool {
        self.place == Place::Cpu
    }

    /// `(in, out)` of each projection.
    fn projection_dims(&self, target: Target) -> (u64, u64) {
        let c = &self.config;
        let (h, i) = (c.hidden_size as u64, c.intermediate_size as u64);
        let (qd, kvd) = (
            (c.num_heads * c.head_dim) as u64,
            (c.num_kv_heads * c.head_dim) as u64,
        );
        match target {
            Target::Q => (h, qd),
            Target::K | Target::V => (h, kvd),
            Target::O => (qd, h),
            Target::Gate | Target::Up => (h, i),
            Target::Down => (i, h),
        }
    }

    /// Bytes of the base model on its device.
    pub fn weights(&self) -> u64 {
        let c = &self.config;
        let (w, h, l) = (self.w(), c.hidden_size as u64, c.num_layers as u64);
        let d = c.head_dim as u64;
        let projections: u64 = Target::ALL
            .iter()
            .map(|&t| {
                let (i, o) = self.projection_dims(t);
                let n = i * o;
                match self.nf4 {
                    None => n * w,
                    Some(q) => {
                        let blocks = n.div_ceil(BLOCK as u64);
                        let scales = if q.double_quant {
                            blocks + blocks.div_ceil(SCALE_BLOCK as u64) * 4
                        } else {
                            blocks * 4
                        };
                        n.div_ceil(2) + scales
                    }
                }
            })
            .sum();
        let (qd, kvd) = (
            self.projection_dims(Target::Q).1,
            self.projection_dims(Target::K).1,
        );
        let bias = if c.qkv_bias { qd + 2 * kvd } else { 0 };
        let norms = 2 * h + if c.qk_norm { 2 * d } else { 0 };
        let embed = c.vocab_size as u64 * h * if c.tie_word_embeddings { 1 } else { 2 };
        l * (projections + (bias + norms) * w) + (embed + h) * w
    }

    /// The dense copy a quantised projection is dequantised to while it is used: the code
    /// lookup and the scaled values in f32.
    fn dequantised(&self) -> u64 {
        match self.nf4 {
            None => 0,
            Some(_) => {
                let largest = Target::ALL
                    .iter()
                    .map(|&t| {
                        let (i, o) = self.projection_dims(t);
                        i * o
                    })
                    .max()
                    .unwrap_or(0);
                largest * 8
            }
        }
    }

    /// Trainable adapter parameters of `lora` over every layer.
    fn adapter_params(&self, lora: &LoraConfig) -> u64 {
        let per_layer: u64 = lora
            .targets
            .iter()
            .map(|&t| {
                let (i, o) = self.projection_dims(t);
                lora.r as u64 * (i + o)
            })
            .sum();
        per_layer * self.config.num_layers as u64
    }

    /// Adapters being trained (value, gradient, AdamW moments: 16 bytes each) and merged ones
    /// kept beside NF4 weights (f32).
    fn adapters(&self, lora: Option<&LoraConfig>) -> u64 {
        let trained = lora.map_or(0, |l| self.adapter_params(l) * 16);
        let merged = match (&self.merged, self.nf4) {
            (Some(m), Some(_)) => self.adapter_params(m) * 4,
            _ => 0,
        };
        trained + merged
    }

    /// Bytes per token one projection keeps in a training graph: its result, which the
    /// pass-through op that attaches its backward pass holds once (`ops::adapted_linear` with
    /// an adapter, `ops::frozen_linear` without; neither keeps an intermediate).
    fn projection_graph(&self, target: Target) -> u64 {
        self.projection_dims(target).1 * self.w()
    }

    /// Bytes per token an RMSNorm over `n` values keeps: the fused kernel its output; the
    /// composition its f32 input, square and normalised values, their cast and the product.
    fn norm_graph(&self, n: u64) -> u64 {
        let w = self.w();
        if self.fused() {
            n * w
        } else if w == 4 {
            3 * n * 4
        } else {
            3 * n * 4 + 2 * n * w
        }
    }

    /// Bytes per token RoPE keeps over `n` values: the fused kernel its output; the
    /// composition the negated half, the rotated copy, both products and their sum.
    fn rope_graph(&self, n: u64) -> u64 {
        let w = self.w();
        if self.fused() { n * w } else { n * w * 9 / 2 }
    }

    /// Bytes per token of one layer's training graph outside attention, and of its attention.
    fn layer_graph(&self) -> (u64, u64) {
        let c = &self.config;
        let w = self.w();
        let (h, i) = (c.hidden_size as u64, c.intermediate_size as u64);
        let (qd, kvd) = (
            self.projection_dims(Target::Q).1,
            self.projection_dims(Target::K).1,
        );
        let projections: u64 = Target::ALL.iter().map(|&t| self.projection_graph(t)).sum();
        let qk_norm = if c.qk_norm {
            self.norm_graph(qd) + self.norm_graph(kvd)
        } else {
            0
        };
        let layer = 2 * self.norm_graph(h)        // input and post-attention norms
            + projections
            + qk_norm
            + (qd + 2 * kvd) * w                  // heads made contiguous
            + self.rope_graph(qd) + self.rope_graph(kvd)
            + qd * w                              // attention output back to [t, heads·d]
            + 2 * h * w                           // the two residual sums
            + 2 * i * w; // SwiGLU: silu and product
        // The output and log-sum-exp per head; the composition also stacks K and V.
        let stacked = if self.fused() { 0 } else { 2 * kvd * w };
        let attention = qd * w + c.num_heads as u64 * 4 + stacked;
        (layer, attention)
    }

    /// Bytes per token of the gradients alive while one layer's backward pass runs: the
    /// incoming and outgoing hidden-state gradients and those of the MLP's three wide tensors.
    fn layer_gradients(&self) -> u64 {
        let c = &self.config;
        let w = self.w().max(4);
        (3 * c.intermediate_size as u64 + 2 * c.hidden_size as u64) * w
    }

    /// The peak of a training step.
    pub fn train(&self, step: &TrainStep) -> Memory {
        let c = &self.config;
        let tokens = (step.rows * step.len) as u64;
        let (w, h, l) = (self.w(), c.hidden_size as u64, c.num_layers as u64);
        let (layer, attention) = self.layer_graph();
        // Each adapted projection's graph also holds its A and Bᵀ side by side (f32).
        let adapters_per_layer = self.adapter_params(&step.lora) / c.num_layers as u64 * 4;
        let (held_layers, kept_per_layer) = if step.checkpointing {
            // Each layer's output (the next one's input); one layer's graph rebuilt at a time.
            (1, h * w)
        } else {
            (l, 0)
        };
        let activations = tokens
            * (h * w                              // embeddings
                + l * kept_per_layer
                + held_layers * layer
                + self.layer_gradients())
            + held_layers * adapters_per_layer;
        let attention = tokens * held_layers * attention + self.score_chunks(step.rows, step.len);
        Memory {
            weights: self.weights() + self.dequantised(),
            adapters: self.adapters(Some(&step.lora)),
            activations,
            attention,
            head: self.head(tokens),
            cache: 0,
            runtime: self.place.runtime(),
        }
    }

    /// The composed attention's score chunks (f32 scores, probabilities and their cast):
    /// at most 256 MB of scores at a time; the fused CPU kernel's tiles are negligible.
    fn score_chunks(&self, rows: usize, len: usize) -> u64 {
        if self.fused() {
            return 0;
        }
        let scores = (rows * self.config.num_heads * len * len) as u64 * 4;
        scores.min(256 * MIB) * 5 / 2
    }

    /// The output head: final hidden states (and their norm's intermediates), one chunk of
    /// f32 logits with its softmax, the log-sum-exps.
    fn head(&self, tokens: u64) -> u64 {
        let c = &self.config;
        let logits = (tokens * c.vocab_size as u64 * 4).min(64 * MIB);
        tokens * (self.norm_graph(c.hidden_size as u64) + 4) + 2 * logits
    }

    /// The peak of generation: the caches at full context and the largest prefill's working
    /// set (one layer's projections and MLP, no graph).
    pub fn generate(&self, step: &GenerateStep) -> Memory {
        let c = &self.config;
        let w = self.w();
        let kvd = self.projection_dims(Target::K).1;
        let cache = (step.batch * step.context) as u64 * 2 * c.num_layers as u64 * kvd * w;
        let tokens = (step.batch * step.prefill) as u64;
        let (qd, i, h) = (
            self.projection_dims(Target::Q).1,
            c.intermediate_size as u64,
            c.hidden_size as u64,
        );
        let working = tokens * (3 * i + 2 * qd + 4 * h) * w;
        Memory {
            weights: self.weights() + self.dequantised(),
            adapters: self.adapters(None),
            activations: working,
            attention: self.score_chunks(step.batch, step.prefill),
            head: (step.batch * c.vocab_size) as u64 * 4,
            cache,
            runtime: self.place.runtime(),
        }
    }
}

/// The shape of each profile's model, as its `config.json` gives it (no download needed).
pub fn profile_shape(profile: Profile) -> ModelConfig {
    let shape = |arch, h, layers, heads, kv, d, i, vocab, tied, bias, qk_norm| ModelConfig {
        architecture: arch,
        vocab_size: vocab,
        hidden_size: h,
        intermediate_size: i,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: d,
        rms_norm_eps: 1e-6,
        rope_theta: 1e6,
        rope_scaling: None,
        max_position_embeddings: 32_768,
        tie_word_embeddings: tied,
        qkv_bias: bias,
        qk_norm,
        bos_token_id: None,
        eos_token_ids: vec![],
    };
    use Architecture::{Llama, Qwen2, Qwen3};
    match profile {
        Profile::Tiny => shape(Llama, 576, 30, 9, 3, 64, 1536, 49_152, true, false, false),
        Profile::ColabQwen25_7b | Profile::ColabQwen25_7bQlora => shape(
            Qwen2, 3584, 28, 28, 4, 128, 18_944, 152_064, false, true, false,
        ),
        Profile::ColabQwen3_4b => shape(
            Qwen3, 2560, 36, 32, 8, 128, 9728, 151_936, true, false, true,
        ),
    }
}

/// One phase's peak.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhasePlan {
    /// `sft`, `dpo`, `grpo update`, `grpo rollouts`.
    pub phase: &'static str,
    /// Its step, in words (`2 × 4096 tokens, r 64`).
    pub step: String,
    /// Its peak, in parts.
    pub memory: Memory,
}

/// What `abt plan` overrides in the presets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Tokens per training sequence and generation context.
    pub seq: Option<usize>,
    /// Sequences (pairs for DPO) per training step.
    pub micro_batch: Option<usize>,
    /// Quantise the base to NF4 (QLoRA) whatever the presets say.
    pub qlora: bool,
}

/// The peak memory of every phase of a profile's run on one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The profile.
    pub profile: Profile,
    /// Where it runs.
    pub place: Place,
    /// NF4 base projections.
    pub nf4: Option<Nf4Config>,
    /// Each phase's peak.
    pub phases: Vec<PhasePlan>,
}

impl Plan {
    /// The plan of `profile`'s presets with `overrides` on `place`.
    pub fn new(profile: Profile, presets: &Presets, place: Place, overrides: Overrides) -> Plan {
        let nf4 = if overrides.qlora {
            Some(Nf4Config { double_quant: true })
        } else {
            presets.model.nf4()
        };
        let base = Setup {
            config: profile_shape(profile),
            place,
            nf4,
            merged: None,
        };
        let on_sft = Setup {
            merged: Some(presets.sft.train.lora.clone()),
            ..base.clone()
        };
        let seq = |len: usize| overrides.seq.unwrap_or(len);
        let rows = |mb: usize| overrides.micro_batch.unwrap_or(mb);
        let train = |rows: usize, len: usize, lora: &LoraConfig, checkpointing: bool| TrainStep {
            rows,
            len,
            lora: lora.clone(),
            checkpointing,
        };
        let describe = |s: &TrainStep| format!("{} × {} tokens, r {}", s.rows, s.len, s.lora.r);
        let mut phases = Vec::new();
        let sft = train(
            rows(presets.sft.train.micro_batch),
            seq(presets.sft.max_len),
            &presets.sft.train.lora,
            presets.sft.train.checkpointing,
        );
        phases.push(PhasePlan {
            phase: "sft",
            step: describe(&sft),
            memory: base.train(&sft),
        });
        let dpo = train(
            2 * rows(presets.dpo.train.micro_batch),
            seq(presets.dpo.max_len),
            &presets.dpo.train.lora,
            presets.dpo.train.checkpointing,
        );
        phases.push(PhasePlan {
            phase: "dpo",
            step: describe(&dpo),
            memory: on_sft.train(&dpo),
        });
        let g = &presets.grpo;
        let context = seq(g.max_context);
        let rollouts = GenerateStep {
            batch: g.rollout_batch,
            context,
            prefill: context.min(2048),
        };
        phases.push(PhasePlan {
            phase: "grpo rollouts",
            step: format!("{} episodes × {} tokens", rollouts.batch, rollouts.context),
            memory: on_sft.generate(&rollouts),
        });
        let update = train(
            rows(g.train.micro_batch),
            context,
            &g.train.lora,
            g.train.checkpointing,
        );
        phases.push(PhasePlan {
            phase: "grpo update",
            step: describe(&update),
            memory: on_sft.train(&update),
        });
        Plan {
            profile,
            place,
            nf4,
            phases,
        }
    }

    /// The largest peak.
    pub fn peak(&self) -> u64 {
        self.phases
            .iter()
            .map(|p| p.memory.total())
            .max()
            .unwrap_or(0)
    }

    /// Whether every phase fits the device (always on the CPU, whose limit is not known).
    pub fn fits(&self) -> bool {
        self.place.budget().is_none_or(|b| self.peak() <= b)
    }

    /// Settings that fit when these do not: micro-batch 1, then QLoRA, then shorter
    /// sequences, each tried on top of the last, on this plan's device.
    pub fn suggestion(profile: Profile, presets: &Presets, place: Place) -> Option<(String, Plan)> {
        let mut overrides = Overrides::default();
        let plan = Plan::new(profile, presets, place, overrides);
        if plan.fits() {
            return None;
        }
        let mut changes = Vec::new();
        overrides.micro_batch = Some(1);
        changes.push("micro_batch 1 (raise grad_accum to keep the batch)".to_string());
        let mut plan = Plan::new(profile, presets, place, overrides);
        if !plan.fits() && presets.model.nf4().is_none() {
            overrides.qlora = true;
            changes.push("[model] quantize = \"nf4\"".into());
            plan = Plan::new(profile, presets, place, overrides);
        }
        let mut len = presets.sft.max_len.max(presets.grpo.max_context);
        while !plan.fits() && len > 1024 {
            len /= 2;
            overrides.seq = Some(len);
            plan = Plan::new(profile, presets, place, overrides);
        }
        if let Some(len) = overrides.seq {
            changes.push(format!("sequences of {len} tokens"));
        }
        plan.fits().then(|| (changes.join(", "), plan))
    }

    /// The plan as a table: one row per phase, a column per part, in GB.
    pub fn table(&self) -> Result<Table> {
        let gb = |b: u64| format!("{:.1}", b as f64 / 1e9);
        let quant = match self.nf4 {
            Some(q) if q.double_quant => "NF4 + double quantisation",
            Some(_) => "NF4",
            None => "not quantised",
        };
        let budget = self
            .place
            .budget()
            .map_or(String::new(), |b| format!(" of {:.1} GB", b as f64 / 1e9));
        let mut table = Table::new([
            "phase",
            "step",
            "weights",
            "adapters + AdamW",
            "activations",
            "attention",
            "head",
            "KV cache",
            "runtime",
            "total",
            "fits",
        ])
        .with_title(format!(
            "estimated peak memory (GB): {} on {}{budget}, base {quant}",
            self.profile, self.place
        ));
        for p in &self.phases {
            let m = &p.memory;
            let fits = match self.place.budget() {
                Some(b) if m.total() > b => "no",
                Some(_) => "yes",
                None => "—",
            };
            table.push_row([
                p.phase.to_string(),
                p.step.clone(),
                gb(m.weights),
                gb(m.adapters),
                gb(m.activations),
                gb(m.attention),
                gb(m.head),
                gb(m.cache),
                gb(m.runtime),
                gb(m.total()),
                fits.to_string(),
            ])?;
        }
        Ok(table)
    }
}

impl Show for Plan {
    fn mime_bundle(&self) -> Vec<(&'static str, String)> {
        match self.table() {
            Ok(table) => table.mime_bundle(),
            Err(e) => vec![("text/plain", e.to_string())],
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.table() {
            Ok(table) => write!(f, "{table}"),
            Err(e) => write!(f, "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scale;

    /// The shapes of `scripts/bench_memory.py`'s models.
    fn bench_shape(name: &str) -> ModelConfig {
        match name {
            "smollm2" => profile_shape(Profile::Tiny),
            "qwen2.5-0.5b" => ModelConfig {
                architecture: Architecture::Qwen2,
                hidden_size: 896,
                num_layers: 24,
                num_heads: 14,
                num_kv_heads: 2,
                head_dim: 64,
                intermediate_size: 4864,
                vocab_size: 151_936,
                qkv_bias: true,
                ..profile_shape(Profile::Tiny)
            },
            other => panic!("no shape for {other}"),
        }
    }

    #[test]
    fn the_planner_is_within_15_percent_of_every_peak_measured_on_the_cpu() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/results/memory.json");
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(path).expect("memory.json")).unwrap();
        assert!(rows.len() >= 8, "{} measurements", rows.len());
        for row in rows {
            let model = row["model"].as_str().unwrap();
            let nf4 = row["nf4"]
                .as_bool()
                .unwrap()
                .then_some(Nf4Config { double_quant: true });
            let setup = Setup {
                config: bench_shape(model),
                place: Place::Cpu,
                nf4,
                merged: None,
            };
            let step = TrainStep {
                rows: row["batch"].as_u64().unwrap() as usize,
                len: row["seq"].as_u64().unwrap() as usize,
                lora: LoraConfig {
                    r: 16,
                    alpha: 32.0,
                    dropout: 0.0,
                    ..LoraConfig::default()
                },
                checkpointing: row["checkpointing"].as_bool().unwrap(),
            };
            let predicted = setup.train(&step).total() as f64 / MIB as f64;
            let measured = row["candle_peak_mb"].as_f64().unwrap();
            let error = predicted / measured - 1.0;
            println!("{model} {step:?}: predicted {predicted:.0} MB, measured {measured:.0} MB");
            assert!(
                error.abs() <= 0.15,
                "{model} nf4 {} checkpointing {}: predicted {predicted:.0} MB vs measured {measured:.0} MB",
                nf4.is_some(),
                step.checkpointing
            );
        }
    }

    #[test]
    fn every_profile_fits_the_gpu_it_targets() {
        for profile in Profile::ALL {
            let presets = Presets::resolve(profile, Scale::Full).unwrap();
            let Some(gpu) = profile.target_gpu() else {
                continue;
            };
            let plan = Plan::new(profile, &presets, Place::Gpu(gpu), Overrides::default());
            assert!(plan.fits(), "{profile} on {gpu}:\n{plan}");
            assert!(Plan::suggestion(profile, &presets, Place::Gpu(gpu)).is_none());
        }
    }

    #[test]
    fn qlora_shrinks_the_weights_and_a_smaller_gpu_gets_settings_that_fit() {
        let profile = Profile::ColabQwen25_7b;
        let presets = Presets::resolve(profile, Scale::Full).unwrap();
        let t4 = Place::Gpu(Gpu::T4);
        let full = Plan::new(profile, &presets, t4, Overrides::default());
        let qlora = Overrides {
            qlora: true,
            ..Overrides::default()
        };
        let quantised = Plan::new(profile, &presets, t4, qlora);
        let weights = |p: &Plan| p.phases[0].memory.weights as f64 / 1e9;
        // 6.5 B projection weights at 4.127 bits, embeddings and head in f16, one dense
        // projection in f32 while it is used.
        assert!((weights(&full) - 15.2).abs() < 0.1, "{}", weights(&full));
        assert!(
            (weights(&quantised) - 6.1).abs() < 0.2,
            "{}",
            weights(&quantised)
        );
        assert!(!full.fits());
        let (changes, fitting) = Plan::suggestion(profile, &presets, t4).unwrap();
        assert!(fitting.fits() && changes.contains("nf4"), "{changes}");
        // The CPU has no budget: everything fits.
        assert!(Plan::new(Profile::Tiny, &presets, Place::Cpu, Overrides::default()).fits());
    }

    #[test]
    fn gpus_are_named_as_drivers_and_users_name_them() {
        assert_eq!(Gpu::from_device_name("Tesla T4"), Some(Gpu::T4));
        assert_eq!(Gpu::from_device_name("NVIDIA L4"), Some(Gpu::L4));
        assert_eq!(
            Gpu::from_device_name("NVIDIA A100-SXM4-80GB"),
            Some(Gpu::A100_80)
        );
        assert_eq!(
            Gpu::from_device_name("NVIDIA A100-SXM4-40GB"),
            Some(Gpu::A100_40)
        );
        assert_eq!(
            Gpu::from_device_name("NVIDIA H100 80GB HBM3"),
            Some(Gpu::H100)
        );
        assert_eq!(Gpu::from_device_name("Radeon"), None);
        assert_eq!("A100-40".parse::<Gpu>().unwrap(), Gpu::A100_40);
        let err = "v100".parse::<Gpu>().unwrap_err().to_string();
        assert!(err.contains("t4, l4, a100-40, a100-80, h100"), "{err}");
    }
}
