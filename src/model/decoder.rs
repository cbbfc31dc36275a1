//! One decoder for Llama, Qwen2 and Qwen3: frozen base weights plus optional LoRA adapters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{CustomOp2, D, DType, Device, Tensor, Var};

use super::attention;
use super::batch::TokenBatch;
use super::cache::KvCache;
use super::checkpoint::Checkpoint;
use super::config::ModelConfig;
use super::gguf_weight::GgufWeight;
use super::host;
use super::lora::{LoraConfig, LoraPair, Target};
use super::mask::AttentionMask;
use super::nf4::{Nf4Config, Nf4Tables, Nf4Weight, Quantization};
use super::ops::{self, Adapter, BaseWeight};
use super::source::{ModelFiles, ModelSource};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// How a forward pass treats the adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Adapters on, LoRA dropout active: the policy being trained.
    Train,
    /// Adapters on, no dropout and no gradient graph: the policy as it is.
    Eval,
    /// Adapters off: the frozen base model, i.e. the DPO/GRPO reference policy.
    Reference,
}

impl Mode {
    fn adapters(self) -> bool {
        self != Mode::Reference
    }
}

/// How one forward pass runs inside the decoder.
#[derive(Debug, Clone, Copy)]
struct Pass {
    mode: Mode,
    /// Whether LoRA vars enter the graph (false for the first pass of a checkpointed layer).
    track: bool,
    /// Base of this pass's dropout seeds (one per layer and projection).
    seed: u64,
}

impl Pass {
    fn dropout_seed(self, layer: usize, target: Target) -> Option<u64> {
        (self.mode == Mode::Train).then(|| {
            let mut rng = Rng::new(self.seed ^ ((layer as u64) << 8) ^ target as u64);
            rng.next_u64()
        })
    }
}

/// A linear projection `x Wᵀ + b` with a frozen `W` and an optional adapter.
#[derive(Debug, Clone)]
pub struct Projection {
    weight: BaseWeight,
    bias: Option<Tensor>,
    lora: Option<LoraPair>,
    /// Adapters merged into the base, stacked: `A` `[r, in]` and `scale·B` `[out, r]`. A dense
    /// weight has them folded in; an NF4 weight keeps them beside it and adds `x Aᵀ (scale·B)ᵀ`
    /// in the forward pass (folding would requantise the weight).
    merged: Option<(Tensor, Tensor)>,
}

impl Projection {
    fn new(weight: BaseWeight, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            lora: None,
            merged: None,
        }
    }

    /// The frozen base weight.
    pub fn weight(&self) -> &BaseWeight {
        &self.weight
    }

    /// The base weight with the merged adapters, dense in `dtype`.
    fn merged_weight(&self, dtype: DType) -> Result<Tensor> {
        match (&self.weight, &self.merged) {
            (w, Some((a, b))) if w.is_quantized() => {
                let w = (w.to_dense(DType::F32)? + b.matmul(a)?)?;
                Ok(w.to_dtype(dtype)?)
            }
            (weight, _) => Ok(weight.to_dense(dtype)?),
        }
    }

    /// The adapter on this projection, if any.
    pub fn lora(&self) -> Option<&LoraPair> {
        self.lora.as_ref()
    }

    /// The adapters merged into the weight, stacked as `(A [r, in], scale·B [out, r])`.
    pub fn merged(&self) -> Option<(&Tensor, &Tensor)> {
        self.merged.as_ref().map(|(a, b)| (a, b))
    }

    /// Applies the projection to `x` `[.., in]`.
    fn forward(&self, x: &Tensor, pass: Pass, layer: usize, target: Target) -> Result<Tensor> {
        // A quantised weight keeps its merged adapters beside it; a dense one has them folded in.
        let merged = match (&self.weight, &self.merged) {
            (w, Some((a, b))) if w.is_quantized() => Some((a, b)),
            _ => None,
        };
        if let (Some(lora), true) = (&self.lora, pass.mode.adapters()) {
            let (a, b) = if pass.track {
                (lora.a.as_tensor().clone(), lora.b.as_tensor().clone())
            } else {
                (lora.a.as_tensor().detach(), lora.b.as_tensor().detach())
            };
            let adapter = Adapter {
                a: &a,
                b: &b,
                scale: lora.scale(),
                dropout: pass
                    .dropout_seed(layer, target)
                    .map(|seed| (seed, lora.dropout())),
            };
            let bias = self.bias.as_ref();
            return Ok(ops::adapted_linear(x, &self.weight, bias, merged, adapter)?);
        }
        Ok(ops::base_linear(
            x,
            &self.weight,
            self.bias.as_ref(),
            merged,
        )?)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Projection,
    k: Projection,
    v: Projection,
    o: Projection,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Projection,
    up: Projection,
    down: Projection,
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Tensor,
    attn: Attention,
    post_norm: Tensor,
    mlp: Mlp,
}

impl Layer {
    fn lora_vars(&self) -> Vec<Var> {
        Target::ALL
            .iter()
            .filter_map(|&t| self.projection(t).lora())
            .flat_map(|p| [p.a.clone(), p.b.clone()])
            .collect()
    }

    fn projection(&self, target: Target) -> &Projection {
        match target {
            Target::Q => &self.attn.q,
            Target::K => &self.attn.k,
            Target::V => &self.attn.v,
            Target::O => &self.attn.o,
            Target::Gate => &self.mlp.gate,
            Target::Up => &self.mlp.up,
            Target::Down => &self.mlp.down,
        }
    }

    fn projection_mut(&mut self, target: Target) -> &mut Projection {
        match target {
            Target::Q => &mut self.attn.q,
            Target::K => &mut self.attn.k,
            Target::V => &mut self.attn.v,
            Target::O => &mut self.attn.o,
            Target::Gate => &mut self.mlp.gate,
            Target::Up => &mut self.mlp.up,
            Target::Down => &mut self.mlp.down,
        }
    }
}

/// Where [`Decoder::build`] reads the model's tensors, by transformers' names and shapes.
trait TensorSource {
    /// A tensor in the model's dtype.
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor>;

    /// A projection's weight in the source's own quantisation, when it keeps one.
    fn quantized(&mut self, _name: &str, _shape: &[usize]) -> Result<Option<GgufWeight>> {
        Ok(None)
    }
}

impl<F: FnMut(&str, &[usize]) -> Result<Tensor>> TensorSource for F {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self(name, shape)
    }
}

/// A checkpoint file read onto `device` in `dtype`.
struct CheckpointSource<'a> {
    checkpoint: Checkpoint,
    device: &'a Device,
    dtype: DType,
}

impl TensorSource for CheckpointSource<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.checkpoint.load(name, shape, self.device, self.dtype)
    }

    fn quantized(&mut self, name: &str, shape: &[usize]) -> Result<Option<GgufWeight>> {
        self.checkpoint.load_quantized(name, shape, self.device)
    }
}

/// Per-batch inputs shared by every layer.
#[derive(Debug, Clone)]
struct Context {
    cos: Tensor,
    sin: Tensor,
    mask: Arc<AttentionMask>,
}

/// A Llama/Qwen2/Qwen3 decoder.
#[derive(Debug, Clone)]
pub struct Decoder {
    config: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Option<Tensor>,
    inv_freq: Tensor,
    lora: Option<LoraConfig>,
    /// Adapters merged into the base weights: their stacked rank and targets.
    merged: Option<(usize, Vec<Target>)>,
    /// How the projections' base weights are quantised, if they are (QLoRA, GGUF).
    quantization: Option<Quantization>,
    device: Device,
    dtype: DType,
    checkpointing: bool,
    /// Counts training forward passes: each gets fresh dropout masks.
    passes: Arc<AtomicU64>,
    /// LoRA gradients computed while recomputing checkpointed layers, for [`Decoder::backward`].
    checkpoint_grads: Arc<Mutex<Vec<(Tensor, Tensor)>>>,
}

impl Decoder {
    /// Loads a model from a directory, a `.gguf` file or a hub repo id.
    pub fn load(source: &ModelSource, device: &Device, dtype: DType) -> Result<Self> {
        Self::load_with(source, device, dtype, None)
    }

    /// [`Decoder::load`], with the projections' base weights quantised as they are read when
    /// `quantization` is given (NF4 for QLoRA, or a GGUF file's own quantisation kept): no
    /// dense copy of the model is ever held.
    pub fn load_with(
        source: &ModelSource,
        device: &Device,
        dtype: DType,
        quantization: Option<Quantization>,
    ) -> Result<Self> {
        Self::from_files_with(&source.resolve()?, device, dtype, quantization)
    }

    /// Loads a model from resolved files (GGUF is dequantised to `dtype`).
    pub fn from_files(files: &ModelFiles, device: &Device, dtype: DType) -> Result<Self> {
        Self::from_files_with(files, device, dtype, None)
    }

    /// [`Decoder::from_files`] with optional quantised base weights (see
    /// [`Decoder::load_with`]).
    pub fn from_files_with(
        files: &ModelFiles,
        device: &Device,
        dtype: DType,
        quantization: Option<Quantization>,
    ) -> Result<Self> {
        if quantization == Some(Quantization::Gguf) && files.gguf.is_none() {
            return Err(Error::InvalidConfig {
                source_name: "[model] quantize = \"gguf\"".into(),
                reason: "it keeps a .gguf file's own quantisation, and this model has safetensors \
                         weights: use quantize = \"nf4\" (QLoRA) or a .gguf model"
                    .into(),
            });
        }
        let (checkpoint, config) = match (&files.gguf, &files.config) {
            (Some(gguf), _) => Checkpoint::gguf(gguf)?,
            (None, Some(config)) => (
                Checkpoint::safetensors(&files.weights)?,
                ModelConfig::from_json_file(config)?,
            ),
            (None, None) => {
                return Err(Error::InvalidConfig {
                    source_name: "model files".into(),
                    reason: "neither a GGUF file nor a config.json was given".into(),
                });
            }
        };
        let mut source = CheckpointSource {
            checkpoint,
            device,
            dtype,
        };
        Self::build(config, &mut source, device, dtype, quantization)
    }

    /// A model with random weights (normal, std 0.02; norms 1), for benchmarks and tests.
    pub fn random(config: ModelConfig, seed: u64, device: &Device, dtype: DType) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let mut init = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.contains("norm") {
                vec![1.0; n]
            } else {
                (0..n).map(|_| 0.02 * rng.normal() as f32).collect()
            };
            Ok(host::tensor(values, shape, device)?.to_dtype(dtype)?)
        };
        Self::build(config, &mut init, device, dtype, None)
    }

    /// A model with random weights drawn by the device's own generator (candle's `randn`:
    /// cuRAND on a GPU; unseeded on the CPU), for speed benchmarks of full-size shapes: drawing
    /// a 7B model on the host, as [`Decoder::random`] does, takes minutes.
    pub fn random_on_device(config: ModelConfig, device: &Device, dtype: DType) -> Result<Self> {
        let mut init = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = if name.contains("norm") {
                Tensor::ones(shape, DType::F32, device)?
            } else {
                Tensor::randn(0f32, 0.02, shape, device)?
            };
            Ok(t.to_dtype(dtype)?)
        };
        Self::build(config, &mut init, device, dtype, None)
    }

    /// Assembles the decoder from a source of named tensors (transformers names and shapes),
    /// quantising each projection's weight as soon as it is read when `quantization` is given.
    fn build(
        config: ModelConfig,
        source: &mut dyn TensorSource,
        device: &Device,
        dtype: DType,
        quantization: Option<Quantization>,
    ) -> Result<Self> {
        crate::system::tune_allocator();
        let nf4 = match quantization {
            Some(Quantization::Nf4(q)) => Some((q, Nf4Tables::new(device)?)),
            _ => None,
        };
        let keep_gguf = quantization == Some(Quantization::Gguf);
        let c = &config;
        let (h, i, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let (qd, kvd) = (c.num_heads * d, c.num_kv_heads * d);
        let embed = source.tensor("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            let mut proj =
                |module: &str, out: usize, inp: usize, bias: bool| -> Result<Projection> {
                    let name = format!("{p}.{module}.weight");
                    let kept = if keep_gguf {
                        source.quantized(&name, &[out, inp])?
                    } else {
                        None
                    };
                    let weight = match (kept, &nf4) {
                        (Some(q), _) => BaseWeight::Gguf(q),
                        (None, Some((q, tables))) => BaseWeight::Nf4(Nf4Weight::quantize(
                            &source.tensor(&name, &[out, inp])?,
                            *q,
                            tables,
                        )?),
                        (None, None) => BaseWeight::Dense(source.tensor(&name, &[out, inp])?),
                    };
                    let bias = if bias {
                        Some(source.tensor(&format!("{p}.{module}.bias"), &[out])?)
                    } else {
                        None
                    };
                    Ok(Projection::new(weight, bias))
                };
            let attn = Attention {
                q: proj("self_attn.q_proj", qd, h, c.qkv_bias)?,
                k: proj("self_attn.k_proj", kvd, h, c.qkv_bias)?,
                v: proj("self_attn.v_proj", kvd, h, c.qkv_bias)?,
                o: proj("self_attn.o_proj", h, qd, false)?,
                q_norm: None,
                k_norm: None,
            };
            let mlp = Mlp {
                gate: proj("mlp.gate_proj", i, h, false)?,
                up: proj("mlp.up_proj", i, h, false)?,
                down: proj("mlp.down_proj", h, i, false)?,
            };
            let mut attn = attn;
            if c.qk_norm {
                attn.q_norm = Some(source.tensor(&format!("{p}.self_attn.q_norm.weight"), &[d])?);
                attn.k_norm = Some(source.tensor(&format!("{p}.self_attn.k_norm.weight"), &[d])?);
            }
            layers.push(Layer {
                input_norm: source.tensor(&format!("{p}.input_layernorm.weight"), &[h])?,
                attn,
                post_norm: source.tensor(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                mlp,
            });
        }
        let norm = source.tensor("model.norm.weight", &[h])?;
        // Some checkpoints of tied models still carry lm_head; it is the embedding either way.
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(source.tensor("lm_head.weight", &[c.vocab_size, h])?)
        };
        let inv_freq: Vec<f32> = c.inv_freq().into_iter().map(|f| f as f32).collect();
        let inv_freq = host::tensor(inv_freq, d / 2, device)?;
        Ok(Self {
            config,
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
            lora: None,
            merged: None,
            quantization,
            device: device.clone(),
            dtype,
            checkpointing: false,
            passes: Arc::new(AtomicU64::new(0)),
            checkpoint_grads: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of weights and activations.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How the projections' base weights are quantised, if they are (QLoRA, GGUF).
    pub fn quantization(&self) -> Option<Quantization> {
        self.quantization
    }

    /// Quantises every projection's base weight to NF4 (QLoRA); norms, embeddings and the output
    /// head stay in the model's dtype. Quantise before merging adapters: a merged adapter is
    /// folded into a dense weight and would be quantised with it.
    pub fn quantize(&mut self, config: Nf4Config) -> Result<()> {
        if self.quantization.is_some() {
            return Err(Error::Adapter("the model is already quantised".into()));
        }
        if self.merged.is_some() {
            return Err(Error::Adapter(
                "quantise the model before merging adapters into it".into(),
            ));
        }
        let tables = Nf4Tables::new(&self.device)?;
        for layer in &mut self.layers {
            for target in Target::ALL {
                let proj = layer.projection_mut(target);
                if let BaseWeight::Dense(w) = &proj.weight {
                    proj.weight = BaseWeight::Nf4(Nf4Weight::quantize(w, config, &tables)?);
                }
            }
        }
        self.quantization = Some(Quantization::Nf4(config));
        Ok(())
    }

    /// Bytes the base model holds on its device (embeddings, norms, projections, output head).
    pub fn base_size_in_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let mut total = bytes(&self.embed) + bytes(&self.norm);
        total += self.lm_head.as_ref().map_or(0, bytes);
        for layer in &self.layers {
            total += bytes(&layer.input_norm) + bytes(&layer.post_norm);
            total += [&layer.attn.q_norm, &layer.attn.k_norm]
                .into_iter()
                .flatten()
                .map(bytes)
                .sum::<usize>();
            for target in Target::ALL {
                let proj = layer.projection(target);
                total += proj.weight.size_in_bytes() + proj.bias.as_ref().map_or(0, bytes);
            }
        }
        total
    }

    /// The adapter configuration, when adapters are attached.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Attaches fresh adapters (A random, B zero) to the configured projections of every layer.
    pub fn add_lora(&mut self, config: &LoraConfig) -> Result<()> {
        config.validate()?;
        if self.lora.is_some() {
            return Err(Error::Adapter(
                "the model already has adapters; remove them first".into(),
            ));
        }
        let mut rng = Rng::new(config.seed);
        for layer in &mut self.layers {
            for &target in &config.targets {
                let proj = layer.projection_mut(target);
                let (out_dim, in_dim) = proj.weight.dims()?;
                proj.lora = Some(LoraPair::new(
                    in_dim,
                    out_dim,
                    config,
                    &mut rng,
                    &self.device,
                )?);
            }
        }
        self.lora = Some(config.clone());
        Ok(())
    }

    /// Attaches adapters with given A, B per (layer, target); used when loading saved adapters.
    pub(crate) fn set_lora(
        &mut self,
        config: &LoraConfig,
        mut pairs: impl FnMut(usize, Target, (usize, usize)) -> Result<LoraPair>,
    ) -> Result<()> {
        config.validate()?;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            for &target in &config.targets {
                let proj = layer.projection_mut(target);
                let shape = proj.weight.dims()?;
                proj.lora = Some(pairs(l, target, shape)?);
            }
        }
        self.lora = Some(config.clone());
        Ok(())
    }

    /// Detaches all adapters, leaving the base model.
    pub fn remove_lora(&mut self) {
        for layer in &mut self.layers {
            for target in Target::ALL {
                layer.projection_mut(target).lora = None;
            }
        }
        self.lora = None;
    }

    /// Folds the adapters into the base weights (`W += scale·B A`, in the weights' dtype) and
    /// detaches them: the merged model is the new base, so [`Mode::Reference`] now means it (the
    /// DPO/GRPO reference when training on top of an SFT adapter). The merged adapters are kept
    /// aside, stacked, so that [`Decoder::save_adapter`] still writes adapters for the original
    /// base.
    pub fn merge_lora(&mut self) -> Result<()> {
        let Some(config) = self.lora.take() else {
            return Err(Error::Adapter("the model has no adapters to merge".into()));
        };
        let (old_rank, old_targets) = self.merged.take().unwrap_or((0, Vec::new()));
        let targets: Vec<Target> = Target::ALL
            .into_iter()
            .filter(|t| old_targets.contains(t) || config.targets.contains(t))
            .collect();
        for layer in &mut self.layers {
            for &target in &targets {
                let proj = layer.projection_mut(target);
                let (out_dim, in_dim) = proj.weight.dims()?;
                let device = self.device.clone();
                let (old_a, old_b) = match proj.merged.take() {
                    Some(stack) => stack,
                    None => (
                        Tensor::zeros((old_rank, in_dim), DType::F32, &device)?,
                        Tensor::zeros((out_dim, old_rank), DType::F32, &device)?,
                    ),
                };
                let (a, b) = match proj.lora.take() {
                    Some(pair) => {
                        // Detached: the merged weight is a constant. Computed from the adapter's
                        // variables, it would otherwise carry their graph, and every forward
                        // pass through it would track (and keep) all its activations.
                        if let BaseWeight::Dense(w) = &proj.weight {
                            let delta = pair.delta()?.detach();
                            let folded = (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?;
                            proj.weight = BaseWeight::Dense(folded.detach());
                        }
                        let a = pair.a.as_tensor().detach().to_dtype(DType::F32)?;
                        let b = (pair.b.as_tensor().detach().to_dtype(DType::F32)? * pair.scale())?;
                        (a, b)
                    }
                    None => (
                        Tensor::zeros((config.r, in_dim), DType::F32, &device)?,
                        Tensor::zeros((out_dim, config.r), DType::F32, &device)?,
                    ),
                };
                proj.merged = Some((Tensor::cat(&[old_a, a], 0)?, Tensor::cat(&[old_b, b], 1)?));
            }
        }
        self.merged = Some((old_rank + config.r, targets));
        Ok(())
    }

    /// The stacked rank and targets of the adapters merged by [`Decoder::merge_lora`].
    pub fn merged_lora(&self) -> Option<(usize, &[Target])> {
        self.merged.as_ref().map(|(r, t)| (*r, t.as_slice()))
    }

    /// Every adapter as `(layer, target, pair)`, in layer then target order.
    pub fn lora_pairs(&self) -> Vec<(usize, Target, &LoraPair)> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for target in Target::ALL {
                if let Some(pair) = layer.projection(target).lora() {
                    out.push((l, target, pair));
                }
            }
        }
        out
    }

    /// The trainable tensors: every adapter's A and B.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(Layer::lora_vars).collect()
    }

    /// Number of trainable parameters.
    pub fn num_trainable(&self) -> usize {
        self.trainable_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// The base weight of one projection (HF layout `[out, in]`).
    pub fn projection(&self, layer: usize, target: Target) -> Option<&Projection> {
        self.layers.get(layer).map(|l| l.projection(target))
    }

    /// Every base tensor under its transformers name, with adapters merged into the projections
    /// (`W + scale·B A`); the tied output head is not repeated.
    pub fn named_base_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.clone())];
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            out.push((
                format!("{p}.input_layernorm.weight"),
                layer.input_norm.clone(),
            ));
            out.push((
                format!("{p}.post_attention_layernorm.weight"),
                layer.post_norm.clone(),
            ));
            for (name, norm) in [
                ("q_norm", &layer.attn.q_norm),
                ("k_norm", &layer.attn.k_norm),
            ] {
                if let Some(w) = norm {
                    out.push((format!("{p}.self_attn.{name}.weight"), w.clone()));
                }
            }
            for target in Target::ALL {
                let proj = layer.projection(target);
                let path = format!("{p}.{}", target.module_path());
                let weight = match proj.lora() {
                    Some(lora) => {
                        (proj.merged_weight(DType::F32)? + lora.delta()?)?.to_dtype(self.dtype)?
                    }
                    None => proj.merged_weight(self.dtype)?,
                };
                out.push((format!("{path}.weight"), weight));
                if let Some(b) = &proj.bias {
                    out.push((format!("{path}.bias"), b.clone()));
                }
            }
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        if let Some(head) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), head.clone()));
        }
        Ok(out)
    }

    fn attention(
        &self,
        l: usize,
        attn: &Attention,
        x: &Tensor,
        ctx: &Context,
        pass: Pass,
        cache: Option<&KvCache>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t, _) = x.dims3()?;
        let (h, kvh, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let heads = |y: Tensor, n: usize, norm: &Option<Tensor>| -> Result<Tensor> {
            let y = y.reshape((b, t, n, d))?;
            let y = match norm {
                Some(w) => ops::rms_norm(&y, w, c.rms_norm_eps)?,
                None => y,
            };
            Ok(y.transpose(1, 2)?.contiguous()?)
        };
        let q = heads(attn.q.forward(x, pass, l, Target::Q)?, h, &attn.q_norm)?;
        let k = heads(attn.k.forward(x, pass, l, Target::K)?, kvh, &attn.k_norm)?;
        let v = heads(attn.v.forward(x, pass, l, Target::V)?, kvh, &None)?;
        let q = ops::apply_rope(&q, &ctx.cos, &ctx.sin)?;
        let k = ops::apply_rope(&k, &ctx.cos, &ctx.sin)?.contiguous()?;
        // With a cache, attend to every filled position: the new keys are written in place
        // and the filled prefix is read as a view.
        let (k, v) = match cache {
            Some(cache) => cache.append(l, &k, &v)?,
            None => (k, v),
        };
        let out = attention::attention(&q, &k, &v, &ctx.mask, 1.0 / (d as f64).sqrt())?;
        let out = out.transpose(1, 2)?.reshape((b, t, h * d))?;
        attn.o.forward(&out, pass, l, Target::O)
    }

    fn layer(
        &self,
        l: usize,
        x: &Tensor,
        ctx: &Context,
        pass: Pass,
        cache: Option<&KvCache>,
    ) -> Result<Tensor> {
        let layer = &self.layers[l];
        let eps = self.config.rms_norm_eps;
        let normed = ops::rms_norm(x, &layer.input_norm, eps)?;
        let attn = self.attention(l, &layer.attn, &normed, ctx, pass, cache)?;
        let x = (x + attn)?;
        let hidden = ops::rms_norm(&x, &layer.post_norm, eps)?;
        let mlp = &layer.mlp;
        let act = ops::swiglu(
            &mlp.gate.forward(&hidden, pass, l, Target::Gate)?,
            &mlp.up.forward(&hidden, pass, l, Target::Up)?,
        )?;
        Ok((x + mlp.down.forward(&act, pass, l, Target::Down)?)?)
    }

    /// Layer `l` with activation checkpointing: run without a graph, keep only the input, and
    /// recompute the layer in the backward pass (see [`LayerCheckpoint`]).
    fn checkpointed_layer(
        &self,
        l: usize,
        x: &Tensor,
        ctx: &Context,
        pass: Pass,
    ) -> Result<Tensor> {
        let quiet = Pass {
            track: false,
            ..pass
        };
        let y = self.layer(l, &x.detach(), ctx, quiet, None)?;
        let anchor = self.layers[l]
            .lora_vars()
            .into_iter()
            .next()
            .ok_or_else(|| Error::Adapter("checkpointing needs adapters to train".into()))?;
        let op = LayerCheckpoint {
            y: ops::Precomputed::new(y),
            decoder: self.clone(),
            layer: l,
            ctx: ctx.clone(),
            pass,
            anchor: anchor.as_tensor().clone(),
        };
        Ok(x.apply_op2(anchor.as_tensor(), op)?)
    }

    /// Number of training forward passes so far (each draws fresh LoRA dropout masks).
    pub fn train_passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// Sets the training-pass counter, so a resumed run draws the dropout masks an
    /// uninterrupted one would.
    pub fn set_train_passes(&self, n: u64) {
        self.passes.store(n, Ordering::Relaxed);
    }

    /// Turns activation checkpointing on or off for training passes (`Mode::Train`).
    ///
    /// With it on, a layer's activations are dropped after the forward pass and recomputed in
    /// the backward pass: memory for activations falls to one tensor per layer, at the cost of
    /// about one more forward pass. Gradients must then be taken with [`Decoder::backward`].
    pub fn set_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    /// Back-propagates `loss` and returns the gradients of every tensor, LoRA vars included.
    ///
    /// Use this rather than `loss.backward()`: with activation checkpointing the LoRA gradients
    /// of recomputed layers are produced inside the backward pass and merged in here.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        self.checkpoint_grads.lock().map(|mut g| g.clear()).ok();
        let mut grads = loss.backward()?;
        let computed = std::mem::take(
            &mut *self
                .checkpoint_grads
                .lock()
                .map_err(|_| Error::Adapter("a checkpointed backward pass panicked".into()))?,
        );
        for (var, grad) in computed {
            let sum = match grads.remove(&var) {
                Some(existing) => (existing + grad)?,
                None => grad,
            };
            grads.insert(&var, sum);
        }
        Ok(grads)
    }

    /// Final hidden states `[batch, seq, hidden]` (after the last RMSNorm).
    pub fn forward_hidden(&self, batch: &TokenBatch, mode: Mode) -> Result<Tensor> {
        if mode == Mode::Train {
            // In a notebook kernel each cell counts tensor ids afresh (see `tensor_ids`).
            super::tensor_ids::ids_past(&self.trainable_vars());
        }
        let (b, t) = batch.dims();
        if let Some(bad) = batch
            .max_id()
            .filter(|&i| i as usize >= self.config.vocab_size)
        {
            return Err(Error::Batch(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        let ids = batch.input_ids()?;
        let (cos, sin) = ops::rope_tables(&batch.positions()?, &self.inv_freq, self.dtype)?;
        let ctx = Context {
            cos,
            sin,
            mask: Arc::new(batch.attention_mask()?),
        };
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            t,
            self.config.hidden_size,
        ))?;
        let pass = Pass {
            mode,
            // Only training passes build a graph: an eval pass that did would hold every
            // activation until its output is dropped (gigabytes for a 2 × 1024 batch).
            track: mode == Mode::Train,
            seed: match mode {
                Mode::Train => {
                    let n = self.passes.fetch_add(1, Ordering::Relaxed);
                    Rng::new(self.lora.as_ref().map_or(0, |c| c.seed) ^ n.rotate_left(32))
                        .next_u64()
                }
                _ => 0,
            },
        };
        let checkpoint = self.checkpointing && mode == Mode::Train && self.lora.is_some();
        for l in 0..self.layers.len() {
            x = if checkpoint {
                self.checkpointed_layer(l, &x, &ctx, pass)?
            } else {
                self.layer(l, &x, &ctx, pass, None)?
            };
        }
        Ok(ops::rms_norm(&x, &self.norm, self.config.rms_norm_eps)?)
    }

    /// Runs new tokens through the model with a KV cache and returns their final hidden states
    /// `[batch, t, hidden]`; the cache then holds their keys and values too.
    ///
    /// `ids` and `positions` are `[batch, t]` (u32); `mask` says which of the
    /// `cache.len() + t` filled positions each new token sees. No gradient graph is built
    /// (generation only).
    pub fn forward_cached(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        mask: &Arc<AttentionMask>,
        cache: &mut KvCache,
        mode: Mode,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        cache.check_room(b, t)?;
        let expected = (b, t, cache.len() + t);
        if mask.dims() != expected {
            return Err(Error::Generate(format!(
                "an attention mask for {:?} (batch, queries, keys) does not fit {expected:?}",
                mask.dims()
            )));
        }
        let (cos, sin) = ops::rope_tables(positions, &self.inv_freq, self.dtype)?;
        let ctx = Context {
            cos,
            sin,
            mask: mask.clone(),
        };
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            t,
            self.config.hidden_size,
        ))?;
        let pass = Pass {
            mode: if mode == Mode::Train {
                Mode::Eval
            } else {
                mode
            },
            track: false,
            seed: 0,
        };
        for l in 0..self.layers.len() {
            x = self.layer(l, &x, &ctx, pass, Some(cache))?;
        }
        cache.advance(t);
        Ok(ops::rms_norm(&x, &self.norm, self.config.rms_norm_eps)?)
    }

    /// Output-head logits for hidden states `[.., hidden]` → `[.., vocab]`.
    pub fn logits_from_hidden(&self, hidden: &Tensor) -> Result<Tensor> {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(ops::frozen_linear(hidden, head, None)?)
    }

    /// Logits `[batch, seq, vocab]`.
    pub fn forward(&self, batch: &TokenBatch, mode: Mode) -> Result<Tensor> {
        self.logits_from_hidden(&self.forward_hidden(batch, mode)?)
    }

    /// Log-probability of every next token under teacher forcing: `[batch, seq - 1]`, entry
    /// `(b, t)` is `log p(ids[b, t+1] | ids[b, ..=t])`, 0 where that target is padding.
    pub fn token_logprobs(&self, batch: &TokenBatch, mode: Mode) -> Result<Tensor> {
        let (_, t) = batch.dims();
        if t < 2 {
            return Err(Error::Batch(
                "log-probs need sequences of at least 2 tokens".into(),
            ));
        }
        let (b, _) = batch.dims();
        let hidden = self.forward_hidden(batch, mode)?.narrow(1, 0, t - 1)?;
        let hidden = hidden.reshape((b * (t - 1), self.config.hidden_size))?;
        let targets = batch.input_ids()?.narrow(1, 1, t - 1)?.flatten_all()?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let logprobs = ops::linear_logprobs(&hidden, head, &targets)?.reshape((b, t - 1))?;
        Ok((&logprobs * batch.target_mask()?.to_dtype(logprobs.dtype())?)?)
    }

    /// Log-probabilities of the next token at chosen positions only: `positions` index the
    /// flattened `[batch · (seq - 1)]` targets of [`Decoder::token_logprobs`], and the result is
    /// `[positions.len()]`. The output head and its softmax run on those rows alone, which is
    /// what a loss over assistant tokens needs (a fifth of SmolLM2's forward pass is its head).
    /// `temperature` divides the logits first (1: the model's own distribution; GRPO takes its
    /// log-probs at the temperature its rollouts were sampled at).
    pub fn token_logprobs_at(
        &self,
        batch: &TokenBatch,
        positions: &[u32],
        mode: Mode,
        temperature: f32,
    ) -> Result<Tensor> {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(Error::Batch(format!(
                "log-probs need a temperature above 0, not {temperature}"
            )));
        }
        let (b, t) = batch.dims();
        if t < 2 {
            return Err(Error::Batch(
                "log-probs need sequences of at least 2 tokens".into(),
            ));
        }
        let rows = b * (t - 1);
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= rows) {
            return Err(Error::Batch(format!(
                "position {p} is outside the {rows} targets of a [{b}, {t}] batch"
            )));
        }
        let index = host::tensor_from_slice(positions, positions.len(), self.device())?;
        let hidden = self.forward_hidden(batch, mode)?.narrow(1, 0, t - 1)?;
        let hidden = hidden
            .reshape((rows, self.config.hidden_size))?
            .index_select(&index, 0)?;
        let targets = batch
            .input_ids()?
            .narrow(1, 1, t - 1)?
            .flatten_all()?
            .index_select(&index, 0)?;
        // logits / T = (hidden / T) · headᵀ: the head has no bias.
        let hidden = if temperature == 1.0 {
            hidden
        } else {
            hidden.affine(1.0 / f64::from(temperature), 0.0)?
        };
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(ops::linear_logprobs(&hidden, head, &targets)?)
    }

    /// Sum of next-token log-probs per row over the positions where `mask` `[batch, seq - 1]`
    /// is 1 (e.g. completion tokens only): `[batch]`.
    pub fn sequence_logprobs(
        &self,
        batch: &TokenBatch,
        mask: &Tensor,
        mode: Mode,
    ) -> Result<Tensor> {
        let lp = self.token_logprobs(batch, mode)?;
        Ok((&lp * mask.to_dtype(lp.dtype())?)?.sum(D::Minus1)?)
    }
}

/// One checkpointed layer: the forward output is passed through (computed without a graph),
/// and the backward pass recomputes the layer from its input with a graph to get `∂x` and the
/// layer's LoRA gradients. The anchor (one of the layer's LoRA vars) keeps the op in the graph
/// even when `x` itself does not track (layer 0); the other vars' gradients go to the decoder's
/// `checkpoint_grads`, which [`Decoder::backward`] merges.
struct LayerCheckpoint {
    y: ops::Precomputed,
    decoder: Decoder,
    layer: usize,
    ctx: Context,
    pass: Pass,
    anchor: Tensor,
}

impl CustomOp2 for LayerCheckpoint {
    fn name(&self) -> &'static str {
        "layer-checkpoint"
    }

    super::ops::pass_through_forwards!(x, anchor);

    fn bwd(
        &self,
        x: &Tensor,
        _anchor: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let to_candle = |e: Error| candle_core::Error::Msg(e.to_string());
        let input = Var::from_tensor(&x.detach())?;
        let y = self
            .decoder
            .layer(self.layer, input.as_tensor(), &self.ctx, self.pass, None)
            .map_err(to_candle)?;
        let grads = (y * grad.detach())?.sum_all()?.backward()?;
        let mut anchor_grad = None;
        let mut sink =
            self.decoder.checkpoint_grads.lock().map_err(|_| {
                candle_core::Error::Msg("checkpoint gradient store poisoned".into())
            })?;
        for var in self.decoder.layers[self.layer].lora_vars() {
            if let Some(g) = grads.get(var.as_tensor()) {
                if var.as_tensor().id() == self.anchor.id() {
                    anchor_grad = Some(g.clone());
                } else {
                    sink.push((var.as_tensor().clone(), g.clone()));
                }
            }
        }
        Ok((grads.get(input.as_tensor()).cloned(), anchor_grad))
    }
}
