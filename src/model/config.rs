//! What a decoder looks like: read from a Hugging Face `config.json` or from GGUF metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The decoder families this crate implements with one code path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3, SmolLM2: no projection biases, no q/k norm.
    Llama,
    /// Qwen2 and Qwen2.5: biases on the q, k and v projections.
    Qwen2,
    /// Qwen3: per-head RMSNorm on queries and keys, no biases.
    Qwen3,
}

impl Architecture {
    /// Parses a `model_type` (config.json) or `general.architecture` (GGUF) value.
    pub fn parse(name: &str, source_name: &str) -> Result<Self> {
        match name {
            "llama" | "mistral" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "qwen3" => Ok(Self::Qwen3),
            other => Err(Error::UnsupportedArchitecture {
                found: other.to_string(),
                source_name: source_name.to_string(),
            }),
        }
    }

    /// The name used in config.json's `model_type` and GGUF's `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }
}

/// How rotary frequencies are rescaled for long contexts.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor` (all frequencies divided by it).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3's band-wise scaling: low frequencies scaled, high kept, a smooth band between.
    Llama3 {
        /// Scale for the low-frequency band.
        factor: f64,
        /// Wavelengths longer than `original / low_freq_factor` are scaled.
        low_freq_factor: f64,
        /// Wavelengths shorter than `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
    /// One divisor per frequency (GGUF's `rope_freqs.weight`, how llama.cpp stores Llama 3 scaling).
    PerFrequency(Vec<f64>),
}

/// Everything the decoder needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Which family (decides biases and q/k norm).
    pub architecture: Architecture,
    /// Rows of the embedding and of the output head.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head (Qwen3 sets it apart from `hidden_size / num_heads`).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency rescaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// Longest context the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the output head reuses the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// Per-head RMSNorm on queries and keys.
    pub qk_norm: bool,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence tokens (several for chat models).
    pub eos_token_ids: Vec<u32>,
}

/// `config.json` as written by transformers 4.x (rope_theta/rope_scaling) or 5.x (rope_parameters).
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

fn invalid(source_name: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        source_name: source_name.to_string(),
        reason: reason.into(),
    }
}

fn required<T>(value: Option<T>, field: &str, source_name: &str) -> Result<T> {
    value.ok_or_else(|| invalid(source_name, format!("missing field {field:?}")))
}

fn token_ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    }
}

fn float_field(map: &serde_json::Map<String, Value>, key: &str, source_name: &str) -> Result<f64> {
    map.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| invalid(source_name, format!("rope scaling needs a number {key:?}")))
}

/// Parses a `rope_scaling` / `rope_parameters` object; `None` for the default (unscaled) RoPE.
fn parse_rope_scaling(value: &Value, source_name: &str) -> Result<Option<RopeScaling>> {
    let Some(map) = value.as_object() else {
        return Ok(None);
    };
    let kind = map
        .get("rope_type")
        .or_else(|| map.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: float_field(map, "factor", source_name)?,
        })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: float_field(map, "factor", source_name)?,
            low_freq_factor: float_field(map, "low_freq_factor", source_name)?,
            high_freq_factor: float_field(map, "high_freq_factor", source_name)?,
            original_max_position_embeddings: float_field(
                map,
                "original_max_position_embeddings",
                source_name,
            )?,
        })),
        other => Err(invalid(
            source_name,
            format!("rope scaling {other:?} is not supported (supported: default, linear, llama3)"),
        )),
    }
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let raw: HfConfig = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hf(raw, &path.display().to_string())
    }

    /// Parses the text of a Hugging Face `config.json`; `source_name` names it in errors.
    pub fn from_json_str(text: &str, source_name: &str) -> Result<Self> {
        let raw: HfConfig =
            serde_json::from_str(text).map_err(|e| invalid(source_name, e.to_string()))?;
        Self::from_hf(raw, source_name)
    }

    fn from_hf(raw: HfConfig, src: &str) -> Result<Self> {
        let architecture = Architecture::parse(&required(raw.model_type, "model_type", src)?, src)?;
        if raw.mlp_bias == Some(true) {
            return Err(invalid(src, "mlp_bias = true is not supported"));
        }
        let hidden_size = required(raw.hidden_size, "hidden_size", src)?;
        let num_heads = required(raw.num_attention_heads, "num_attention_heads", src)?;
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(invalid(
                src,
                format!(
                    "{num_heads} attention heads cannot be grouped over {num_kv_heads} key/value heads"
                ),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(invalid(
                    src,
                    format!(
                        "hidden_size {hidden_size} is not a multiple of {num_heads} heads and head_dim is not set"
                    ),
                ));
            }
        };
        if head_dim % 2 != 0 {
            return Err(invalid(
                src,
                format!("head_dim {head_dim} must be even for RoPE"),
            ));
        }
        let rope_params = raw.rope_parameters.as_ref();
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                rope_params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10_000.0);
        let rope_scaling = match raw.rope_scaling.as_ref().or(rope_params) {
            Some(v) => parse_rope_scaling(v, src)?,
            None => None,
        };
        Ok(Self {
            architecture,
            vocab_size: required(raw.vocab_size, "vocab_size", src)?,
            hidden_size,
            intermediate_size: required(raw.intermediate_size, "intermediate_size", src)?,
            num_layers: required(raw.num_hidden_layers, "num_hidden_layers", src)?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: match architecture {
                Architecture::Qwen2 => true,
                _ => raw.attention_bias.unwrap_or(false),
            },
            qk_norm: architecture == Architecture::Qwen3,
            bos_token_id: token_ids(raw.bos_token_id.as_ref()).first().copied(),
            eos_token_ids: token_ids(raw.eos_token_id.as_ref()),
        })
    }

    /// Reads the model shape from GGUF metadata (`general.architecture` and `<arch>.*` keys).
    ///
    /// `tensors` are the names present in the file: they decide tied embeddings, biases and
    /// Llama 3 frequency factors, which GGUF expresses by the presence of tensors.
    pub fn from_gguf(
        metadata: &HashMap<String, gguf_file::Value>,
        tensor_names: &[&str],
        source_name: &str,
    ) -> Result<Self> {
        let src = source_name;
        let get = |key: &str| metadata.get(key);
        let arch_name = get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| invalid(src, "missing general.architecture"))?
            .clone();
        let architecture = Architecture::parse(&arch_name, src)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let uint = |k: &str| -> Result<usize> {
            let full = key(k);
            get(&full)
                .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
                .map(|v| v as usize)
                .ok_or_else(|| invalid(src, format!("missing or non-integer {full}")))
        };
        let float = |k: &str| -> Option<f64> {
            get(&key(k)).and_then(|v| v.to_f32().ok().map(f64::from).or_else(|| v.to_f64().ok()))
        };
        let hidden_size = uint("embedding_length")?;
        let num_heads = uint("attention.head_count")?;
        let num_kv_heads = uint("attention.head_count_kv").unwrap_or(num_heads);
        let head_dim = uint("attention.key_length").unwrap_or(hidden_size / num_heads.max(1));
        let vocab_size = match uint("vocab_size") {
            Ok(v) => v,
            Err(_) => get("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok())
                .map(Vec::len)
                .ok_or_else(|| invalid(src, "no vocab_size and no tokenizer.ggml.tokens"))?,
        };
        let has = |name: &str| tensor_names.contains(&name);
        let rope_scaling = match get(&key("rope.scaling.type")).and_then(|v| v.to_string().ok()) {
            Some(kind) if kind == "linear" => Some(RopeScaling::Linear {
                factor: float("rope.scaling.factor").unwrap_or(1.0),
            }),
            Some(kind) if kind != "none" => {
                return Err(invalid(
                    src,
                    format!("rope scaling {kind:?} is not supported"),
                ));
            }
            _ => None,
        };
        let scalar = |v: &gguf_file::Value| v.to_u32().ok();
        Ok(Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: uint("feed_forward_length")?,
            num_layers: uint("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: uint("context_length").unwrap_or(4096),
            tie_word_embeddings: !has("output.weight"),
            qkv_bias: has("blk.0.attn_q.bias"),
            qk_norm: has("blk.0.attn_q_norm.weight"),
            bos_token_id: get("tokenizer.ggml.bos_token_id").and_then(scalar),
            eos_token_ids: get("tokenizer.ggml.eos_token_id")
                .and_then(scalar)
                .into_iter()
                .collect(),
        })
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }

    /// Rotary inverse frequencies (`head_dim / 2` of them) after any scaling.
    pub fn inv_freq(&self) -> Vec<f64> {
        let half = self.head_dim / 2;
        let base: Vec<f64> = (0..half)
            .map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / self.head_dim as f64))
            .collect();
        match &self.rope_scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
            Some(RopeScaling::PerFrequency(divisors)) => {
                base.iter().zip(divisors).map(|(f, d)| f / d).collect()
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: original,
            }) => {
                let low_freq_wavelen = original / low_freq_factor;
                let high_freq_wavelen = original / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_freq_wavelen {
                            f
                        } else if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            let smooth = (original / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// Number of parameters of the base model (embedding counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let (h, i, d) = (self.hidden_size, self.intermediate_size, self.head_dim);
        let q = self.num_heads * d;
        let kv = self.num_kv_heads * d;
        let attn = h * q
            + 2 * h * kv
            + q * h
            + if self.qkv_bias { q + 2 * kv } else { 0 }
            + if self.qk_norm { 2 * d } else { 0 };
        let layer = attn + 3 * h * i + 2 * h;
        let embed = self.vocab_size * h;
        embed * if self.tie_word_embeddings { 1 } else { 2 } + self.num_layers * layer + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA3: &str = r#"{"model_type":"llama","vocab_size":128,"hidden_size":32,
        "intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,
        "num_key_value_heads":2,"rope_theta":100.0,"eos_token_id":[1,2],
        "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,
        "high_freq_factor":4.0,"original_max_position_embeddings":32}}"#;

    #[test]
    fn llama3_scaling_keeps_high_scales_low_and_smooths_the_middle() {
        let config = ModelConfig::from_json_str(LLAMA3, "test").unwrap();
        assert_eq!(config.head_dim, 8);
        assert_eq!(config.eos_token_ids, vec![1, 2]);
        // theta 100, head_dim 8: base frequencies 1, 100^-0.25, 0.1, 100^-0.75;
        // wavelengths 6.3 (< 8: kept), 19.9 (between 8 and 32: smoothed), 62.8 and 199 (scaled).
        let f = config.inv_freq();
        assert!((f[0] - 1.0).abs() < 1e-12);
        let base1 = 100f64.powf(-0.25);
        let smooth = (32.0 / (2.0 * std::f64::consts::PI / base1) - 1.0) / 3.0;
        let expected1 = (1.0 - smooth) * base1 / 8.0 + smooth * base1;
        assert!((f[1] - expected1).abs() < 1e-12);
        assert!((f[2] - 0.1 / 8.0).abs() < 1e-12);
        assert!((f[3] - 100f64.powf(-0.75) / 8.0).abs() < 1e-12);
    }

    #[test]
    fn transformers_5_rope_parameters_are_read() {
        let text = r#"{"model_type":"qwen3","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"head_dim":16,
            "rope_parameters":{"rope_type":"default","rope_theta":1000000.0}}"#;
        let config = ModelConfig::from_json_str(text, "test").unwrap();
        assert_eq!(config.rope_theta, 1e6);
        assert_eq!(config.rope_scaling, None);
        assert_eq!(config.head_dim, 16);
        assert_eq!(config.num_kv_heads, 2);
        assert!(config.qk_norm && !config.qkv_bias);
    }

    #[test]
    fn unknown_architectures_and_missing_fields_are_named() {
        let err = ModelConfig::from_json_str(r#"{"model_type":"gpt2"}"#, "x/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"gpt2\"") && err.contains("x/config.json"),
            "{err}"
        );
        let err = ModelConfig::from_json_str(r#"{"model_type":"qwen2"}"#, "y")
            .unwrap_err()
            .to_string();
        assert!(err.contains("hidden_size"), "{err}");
    }

    #[test]
    fn parameter_count_of_smollm2_135m() {
        let config = ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            rope_scaling: None,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            qkv_bias: false,
            qk_norm: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
        };
        assert_eq!(config.num_parameters(), 134_515_008);
    }
}
