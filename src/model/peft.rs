//! Adapters in PEFT's on-disk layout, and merged full-weight export in transformers' layout.
//!
//! A saved adapter directory holds `adapter_config.json` and `adapter_model.safetensors` with
//! tensors named `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`, which
//! `peft.PeftModel.from_pretrained` and vLLM's LoRA loader read as they are.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::{Architecture, ModelConfig, RopeScaling};
use super::decoder::Decoder;
use super::lora::{LoraConfig, LoraPair, Target};
use crate::error::{Error, Result};
use crate::io::write_atomic;

/// File name of the adapter weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// File name of the adapter configuration.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// The subset of PEFT's `LoraConfig` this crate reads and writes.
#[derive(Debug, Serialize, Deserialize)]
struct PeftConfig {
    peft_type: String,
    task_type: Option<String>,
    base_model_name_or_path: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    lora_dropout: f32,
    target_modules: Value,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    #[serde(default = "bias_none")]
    bias: String,
    #[serde(default)]
    fan_in_fan_out: bool,
    #[serde(default)]
    rank_pattern: HashMap<String, Value>,
    #[serde(default)]
    alpha_pattern: HashMap<String, Value>,
    #[serde(default)]
    layers_to_transform: Option<Value>,
    #[serde(default)]
    modules_to_save: Option<Value>,
    #[serde(default)]
    inference_mode: bool,
    #[serde(default, skip_serializing)]
    lora_bias: bool,
    #[serde(default, skip_serializing)]
    layer_replication: Option<Value>,
}

fn bias_none() -> String {
    "none".into()
}

/// PEFT's name for one adapter tensor.
pub fn peft_tensor_name(layer: usize, target: Target, b: bool) -> String {
    let ab = if b { "B" } else { "A" };
    format!(
        "base_model.model.model.layers.{layer}.{}.lora_{ab}.weight",
        target.module_path()
    )
}

fn adapter_error(dir: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Adapter(format!("{}: {reason}", dir.display()))
}

/// Serialises tensors to safetensors bytes with `{"format": "pt"}` metadata (as transformers writes).
/// Serialises named tensors (on the CPU) as a safetensors file's bytes.
pub(crate) fn safetensors_bytes(tensors: Vec<(String, Tensor)>) -> Result<Vec<u8>> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(tensors, Some(metadata)).map_err(|e| {
        Error::Candle(candle_core::Error::Msg(format!(
            "serialising safetensors: {e}"
        )))
    })
}

impl Decoder {
    /// Writes the adapters to `dir` in PEFT's layout; `base_model` is recorded as
    /// `base_model_name_or_path` (a hub id or path PEFT can load the base from). Adapters merged
    /// earlier ([`Decoder::merge_lora`]) are written too, stacked with the attached ones into
    /// one adapter of their summed rank (`B = [s₁B₁ | s₂B₂]`, `A = [A₁; A₂]`, α = r), so the
    /// file applies to the original base model.
    pub fn save_adapter(&self, dir: &Path, base_model: &str) -> Result<()> {
        let (config, tensors) = match self.merged_lora() {
            None => self.attached_adapter()?,
            Some((rank, targets)) => self.stacked_adapter(rank, targets)?,
        };
        let peft = PeftConfig {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: Some(base_model.to_string()),
            r: config.r,
            lora_alpha: config.alpha,
            lora_dropout: config.dropout,
            target_modules: Value::from(
                config
                    .targets
                    .iter()
                    .map(|t| t.module_name())
                    .collect::<Vec<_>>(),
            ),
            use_rslora: config.use_rslora,
            use_dora: false,
            bias: bias_none(),
            fan_in_fan_out: false,
            rank_pattern: HashMap::new(),
            alpha_pattern: HashMap::new(),
            layers_to_transform: None,
            modules_to_save: None,
            inference_mode: true,
            lora_bias: false,
            layer_replication: None,
        };
        let text = serde_json::to_string_pretty(&peft)
            .map_err(|e| Error::Adapter(format!("serialising adapter config: {e}")))?;
        write_atomic(&dir.join(ADAPTER_WEIGHTS), &safetensors_bytes(tensors)?)?;
        write_atomic(&dir.join(ADAPTER_CONFIG), text.as_bytes())
    }

    /// The attached adapters as saved: their configuration and PEFT-named tensors.
    fn attached_adapter(&self) -> Result<(LoraConfig, Vec<(String, Tensor)>)> {
        let Some(config) = self.lora_config() else {
            return Err(Error::Adapter("the model has no adapters to save".into()));
        };
        let mut tensors = Vec::new();
        for (layer, target, pair) in self.lora_pairs() {
            tensors.push((
                peft_tensor_name(layer, target, false),
                pair.a.as_tensor().to_device(&Device::Cpu)?,
            ));
            tensors.push((
                peft_tensor_name(layer, target, true),
                pair.b.as_tensor().to_device(&Device::Cpu)?,
            ));
        }
        Ok((config.clone(), tensors))
    }

    /// Merged and attached adapters as one adapter of rank `merged_rank + r` with scale 1.
    fn stacked_adapter(
        &self,
        merged_rank: usize,
        merged_targets: &[Target],
    ) -> Result<(LoraConfig, Vec<(String, Tensor)>)> {
        let attached = self.lora_config();
        let r_attached = attached.map_or(0, |c| c.r);
        let rank = merged_rank + r_attached;
        let targets: Vec<Target> = Target::ALL
            .into_iter()
            .filter(|t| {
                merged_targets.contains(t) || attached.is_some_and(|c| c.targets.contains(t))
            })
            .collect();
        let mut tensors = Vec::new();
        for layer in 0..self.config().num_layers {
            for &target in &targets {
                let proj = self
                    .projection(layer, target)
                    .ok_or_else(|| Error::Adapter(format!("no layer {layer}")))?;
                let (out_dim, in_dim) = proj.weight().dims()?;
                let zeros = |rows: usize, cols: usize| {
                    Tensor::zeros((rows, cols), DType::F32, &Device::Cpu)
                };
                let (ma, mb) = match proj.merged() {
                    Some((a, b)) => (a.to_device(&Device::Cpu)?, b.to_device(&Device::Cpu)?),
                    None => (zeros(merged_rank, in_dim)?, zeros(out_dim, merged_rank)?),
                };
                let (la, lb) = match proj.lora() {
                    Some(pair) => (
                        pair.a
                            .as_tensor()
                            .to_dtype(DType::F32)?
                            .to_device(&Device::Cpu)?,
                        (pair
                            .b
                            .as_tensor()
                            .to_dtype(DType::F32)?
                            .to_device(&Device::Cpu)?
                            * pair.scale())?,
                    ),
                    None => (zeros(r_attached, in_dim)?, zeros(out_dim, r_attached)?),
                };
                tensors.push((
                    peft_tensor_name(layer, target, false),
                    Tensor::cat(&[ma, la], 0)?,
                ));
                tensors.push((
                    peft_tensor_name(layer, target, true),
                    Tensor::cat(&[mb, lb], 1)?,
                ));
            }
        }
        let config = LoraConfig {
            r: rank,
            alpha: rank as f64,
            dropout: attached.map_or(0.0, |c| c.dropout),
            targets,
            use_rslora: false,
            seed: 0,
        };
        Ok((config, tensors))
    }

    /// Loads adapters saved by PEFT (or by [`Decoder::save_adapter`]), replacing any attached.
    pub fn load_adapter(&mut self, dir: &Path) -> Result<LoraConfig> {
        let config_path = dir.join(ADAPTER_CONFIG);
        let weights_path = dir.join(ADAPTER_WEIGHTS);
        for path in [&config_path, &weights_path] {
            if !path.is_file() {
                return Err(Error::MissingFile {
                    path: path.clone(),
                    hint: format!(
                        "an adapter directory holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} (PEFT's save_pretrained)"
                    ),
                });
            }
        }
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| Error::io("reading", &config_path, e))?;
        let peft: PeftConfig = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: config_path.clone(),
            source,
        })?;
        let config = lora_config_from_peft(&peft, dir)?;
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)?;
        // PEFT strips the adapter name on save; accept files that kept it (`lora_A.default.weight`).
        let find = |name: &str| {
            tensors
                .get(name)
                .or_else(|| tensors.get(&name.replace(".weight", ".default.weight")))
                .cloned()
        };
        let expected_pairs = self.config().num_layers * config.targets.len();
        let lora_tensors = tensors.keys().filter(|k| k.contains("lora_")).count();
        if lora_tensors != 2 * expected_pairs {
            return Err(adapter_error(
                dir,
                format!(
                    "{lora_tensors} LoRA tensors for a {}-layer model with targets {:?} (expected {})",
                    self.config().num_layers,
                    config
                        .targets
                        .iter()
                        .map(|t| t.module_name())
                        .collect::<Vec<_>>(),
                    2 * expected_pairs
                ),
            ));
        }
        let device = self.device().clone();
        self.remove_lora();
        self.set_lora(&config, |layer, target, (out_dim, in_dim)| {
            let get = |b: bool| -> Result<Tensor> {
                let name = peft_tensor_name(layer, target, b);
                let t = find(&name).ok_or_else(|| Error::MissingTensor {
                    name: name.clone(),
                    source_name: weights_path.display().to_string(),
                })?;
                let expected = if b {
                    [out_dim, config.r]
                } else {
                    [config.r, in_dim]
                };
                if t.dims() != expected {
                    return Err(Error::ShapeMismatch {
                        tensor: name,
                        expected: expected.to_vec(),
                        found: t.dims().to_vec(),
                    });
                }
                Ok(t.to_device(&device)?)
            };
            LoraPair::from_tensors(get(false)?, get(true)?, &config)
        })?;
        Ok(config)
    }

    /// Loads an adapter and merges it into the weights ([`Decoder::merge_lora`]): the model a
    /// later phase trains new adapters on, and whose adapters-off mode is its reference.
    pub fn merge_adapter(&mut self, dir: &Path) -> Result<LoraConfig> {
        let config = self.load_adapter(dir)?;
        self.merge_lora()?;
        Ok(config)
    }

    /// Writes the base weights with every adapter merged in (`W + scale·B A`) as a transformers
    /// model directory (`config.json` + `model.safetensors`) in the model's dtype.
    pub fn save_merged(&self, dir: &Path) -> Result<()> {
        let config_json = hf_config_json(self.config(), self.dtype())?;
        let mut tensors = Vec::new();
        for (name, tensor) in self.named_base_tensors()? {
            tensors.push((name, tensor.to_device(&Device::Cpu)?));
        }
        let text = serde_json::to_string_pretty(&config_json)
            .map_err(|e| Error::Adapter(format!("serialising config: {e}")))?;
        write_atomic(&dir.join("model.safetensors"), &safetensors_bytes(tensors)?)?;
        write_atomic(&dir.join("config.json"), text.as_bytes())
    }
}

fn lora_config_from_peft(peft: &PeftConfig, dir: &Path) -> Result<LoraConfig> {
    if peft.peft_type != "LORA" {
        return Err(adapter_error(
            dir,
            format!("peft_type {:?} is not LORA", peft.peft_type),
        ));
    }
    let unsupported = [
        (peft.use_dora, "use_dora"),
        (peft.bias != "none", "bias other than \"none\""),
        (peft.fan_in_fan_out, "fan_in_fan_out"),
        (!peft.rank_pattern.is_empty(), "rank_pattern"),
        (!peft.alpha_pattern.is_empty(), "alpha_pattern"),
        (
            peft.layers_to_transform
                .as_ref()
                .is_some_and(|v| !v.is_null()),
            "layers_to_transform",
        ),
        (
            peft.modules_to_save.as_ref().is_some_and(|v| !v.is_null()),
            "modules_to_save",
        ),
        (peft.lora_bias, "lora_bias"),
        (
            peft.layer_replication
                .as_ref()
                .is_some_and(|v| !v.is_null()),
            "layer_replication",
        ),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(bad, _)| *bad) {
        return Err(adapter_error(dir, format!("{what} is not supported")));
    }
    let names: Vec<String> = match &peft.target_modules {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Value::String(s) if s == "all-linear" => Target::ALL
            .iter()
            .map(|t| t.module_name().to_string())
            .collect(),
        Value::String(s) => vec![s.clone()],
        other => {
            return Err(adapter_error(
                dir,
                format!("target_modules {other} is not a list of module names"),
            ));
        }
    };
    let mut targets = Vec::new();
    for name in &names {
        let target = Target::parse(name).ok_or_else(|| {
            adapter_error(
                dir,
                format!("target module {name:?} is not one of q,k,v,o,gate,up,down _proj"),
            )
        })?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    targets.sort();
    Ok(LoraConfig {
        r: peft.r,
        alpha: peft.lora_alpha,
        dropout: peft.lora_dropout,
        targets,
        use_rslora: peft.use_rslora,
        seed: 0,
    })
}

/// transformers' `config.json` for a model configuration.
pub fn hf_config_json(config: &ModelConfig, dtype: DType) -> Result<Value> {
    let (model_type, class) = match config.architecture {
        Architecture::Llama => ("llama", "LlamaForCausalLM"),
        Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
        Architecture::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
    };
    let rope_scaling = match &config.rope_scaling {
        None => Value::Null,
        Some(RopeScaling::Linear { factor }) => json!({"rope_type": "linear", "factor": factor}),
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => json!({
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
        Some(RopeScaling::PerFrequency(_)) => {
            return Err(Error::InvalidConfig {
                source_name: "merged export".into(),
                reason: "per-frequency RoPE factors from a GGUF cannot be written as a transformers config; export from the safetensors checkpoint instead".into(),
            });
        }
    };
    let dtype_name = match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    };
    let mut value = json!({
        "architectures": [class],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": config.max_position_embeddings,
        "tie_word_embeddings": config.tie_word_embeddings,
        "torch_dtype": dtype_name,
    });
    if config.architecture != Architecture::Qwen2 {
        value["attention_bias"] = Value::from(config.qkv_bias);
    }
    if let Some(bos) = config.bos_token_id {
        value["bos_token_id"] = Value::from(bos);
    }
    match config.eos_token_ids.as_slice() {
        [] => {}
        [one] => value["eos_token_id"] = Value::from(*one),
        many => value["eos_token_id"] = Value::from(many.to_vec()),
    }
    Ok(value)
}
