//! Reading base weights by their Hugging Face names from safetensors or GGUF files.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::config::{Architecture, ModelConfig, RopeScaling};
use super::gguf_weight::{GgufWeight, unpermuted_rows};
use crate::error::{Error, Result};

/// An opened checkpoint: tensors are looked up by transformers' names
/// (`model.layers.3.self_attn.q_proj.weight`) whatever the file format.
pub(crate) enum Checkpoint {
    Safetensors {
        tensors: MmapedSafetensors,
        names: HashSet<String>,
        source_name: String,
    },
    Gguf {
        content: gguf_file::Content,
        reader: BufReader<File>,
        path: PathBuf,
        /// llama.cpp stores llama-architecture Q/K rows permuted for interleaved RoPE.
        unpermute: Option<(usize, usize)>,
    },
}

/// GGUF's name for a transformers tensor name.
fn gguf_name(hf_name: &str) -> String {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf_name) {
        return g.to_string();
    }
    let Some(rest) = hf_name.strip_prefix("model.layers.") else {
        return hf_name.to_string();
    };
    let (layer, module) = rest.split_once('.').unwrap_or((rest, ""));
    let module = [
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ]
    .iter()
    .find_map(|(h, g)| module.strip_prefix(h).map(|suffix| format!("{g}{suffix}")))
    .unwrap_or_else(|| module.to_string());
    format!("blk.{layer}.{module}")
}

/// Undoes llama.cpp's Q/K row permutation: GGUF rows `(head, d/2, 2)` back to `(head, 2, d/2)`.
fn unpermute_rows(w: &Tensor, heads: usize) -> Result<Tensor> {
    let order: Vec<u32> = unpermuted_rows(w.dim(0)?, heads)
        .into_iter()
        .map(|r| r as u32)
        .collect();
    let rows = order.len();
    let ids = super::host::tensor(order, rows, w.device())?;
    Ok(w.index_select(&ids, 0)?)
}

/// The heads whose rows llama.cpp permuted in tensor `hf_name` (a llama Q or K projection),
/// given the model's `(heads, kv_heads)` when it is a llama model.
fn permuted_heads(unpermute: Option<(usize, usize)>, hf_name: &str) -> Option<usize> {
    match unpermute {
        Some((q, _)) if hf_name.contains("self_attn.q_proj.") => Some(q),
        Some((_, kv)) if hf_name.contains("self_attn.k_proj.") => Some(kv),
        _ => None,
    }
}

impl Checkpoint {
    /// Memory-maps safetensors files (one, or the shards of an index).
    pub fn safetensors(files: &[PathBuf]) -> Result<Self> {
        for f in files {
            if !f.is_file() {
                return Err(Error::MissingFile {
                    path: f.clone(),
                    hint: "the checkpoint's weight file is missing; download the model again"
                        .into(),
                });
            }
        }
        // SAFETY: the files are memory-mapped read-only; like every safetensors loader we rely
        // on nobody truncating them while the model is loading.
        let tensors = unsafe { MmapedSafetensors::multi(files)? };
        let names = tensors.tensors().into_iter().map(|(n, _)| n).collect();
        let source_name = match files {
            [one] => one.display().to_string(),
            _ => format!(
                "{} ({} shards)",
                files[0].parent().unwrap_or(Path::new(".")).display(),
                files.len()
            ),
        };
        Ok(Checkpoint::Safetensors {
            tensors,
            names,
            source_name,
        })
    }

    /// Opens a GGUF file and reads its model configuration from the metadata.
    pub fn gguf(path: &Path) -> Result<(Self, ModelConfig)> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingFile {
                    path: path.to_path_buf(),
                    hint: super::source::GGUF_HINT.into(),
                }
            } else {
                Error::io("opening", path, e)
            }
        })?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| Error::InvalidConfig {
            source_name: path.display().to_string(),
            reason: format!("not a readable GGUF file: {e}"),
        })?;
        let names: Vec<&str> = content.tensor_infos.keys().map(String::as_str).collect();
        let mut config =
            ModelConfig::from_gguf(&content.metadata, &names, &path.display().to_string())?;
        let unpermute = (config.architecture == Architecture::Llama)
            .then_some((config.num_heads, config.num_kv_heads));
        let mut checkpoint = Checkpoint::Gguf {
            content,
            reader,
            path: path.to_path_buf(),
            unpermute,
        };
        if checkpoint.contains_raw("rope_freqs.weight") {
            let factors = checkpoint.load_raw("rope_freqs.weight", &Device::Cpu)?;
            let factors = factors.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            config.rope_scaling = Some(RopeScaling::PerFrequency(factors));
        }
        Ok((checkpoint, config))
    }

    /// Where the weights come from, for error messages.
    pub fn source_name(&self) -> String {
        match self {
            Checkpoint::Safetensors { source_name, .. } => source_name.clone(),
            Checkpoint::Gguf { path, .. } => path.display().to_string(),
        }
    }

    fn contains_raw(&self, name: &str) -> bool {
        match self {
            Checkpoint::Safetensors { names, .. } => names.contains(name),
            Checkpoint::Gguf { content, .. } => content.tensor_infos.contains_key(name),
        }
    }

    fn load_raw(&mut self, name: &str, device: &Device) -> Result<Tensor> {
        let missing = || Error::MissingTensor {
            name: name.to_string(),
            source_name: self.source_name(),
        };
        if !self.contains_raw(name) {
            return Err(missing());
        }
        match self {
            Checkpoint::Safetensors { tensors, .. } => Ok(tensors.load(name, device)?),
            Checkpoint::Gguf {
                content, reader, ..
            } => {
                let q = content.tensor(reader, name, device)?;
                Ok(q.dequantize(device)?)
            }
        }
    }

    /// A projection's weight `[out, in]` by its transformers name, kept in the GGUF file's own
    /// block quantisation (Q/K rows of llama models un-permuted as stored); `None` for
    /// safetensors and for tensors the file stores unquantised (F32, F16, BF16).
    pub fn load_quantized(
        &mut self,
        hf_name: &str,
        shape: &[usize],
        device: &Device,
    ) -> Result<Option<GgufWeight>> {
        let Checkpoint::Gguf {
            content,
            reader,
            path,
            unpermute,
        } = self
        else {
            return Ok(None);
        };
        let name = gguf_name(hf_name);
        let Some(info) = content.tensor_infos.get(&name) else {
            return Err(Error::MissingTensor {
                name: format!("{hf_name} (GGUF {name})"),
                source_name: path.display().to_string(),
            });
        };
        if matches!(
            info.ggml_dtype,
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
        ) {
            return Ok(None);
        }
        let q = content.tensor(reader, &name, device)?;
        if q.shape().dims() != shape {
            return Err(Error::ShapeMismatch {
                tensor: hf_name.to_string(),
                expected: shape.to_vec(),
                found: q.shape().dims().to_vec(),
            });
        }
        Ok(Some(match permuted_heads(*unpermute, hf_name) {
            Some(h) => GgufWeight::unpermuted(q, h)?,
            None => GgufWeight::new(q)?,
        }))
    }

    /// Loads a tensor by its transformers name, checks its shape and converts it to `dtype`.
    pub fn load(
        &mut self,
        hf_name: &str,
        shape: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let tensor = match self {
            Checkpoint::Safetensors { .. } => self.load_raw(hf_name, device)?,
            Checkpoint::Gguf { unpermute, .. } => {
                let heads = permuted_heads(*unpermute, hf_name);
                let raw = self
                    .load_raw(&gguf_name(hf_name), device)
                    .map_err(|e| match e {
                        Error::MissingTensor { source_name, .. } => Error::MissingTensor {
                            name: format!("{hf_name} (GGUF {})", gguf_name(hf_name)),
                            source_name,
                        },
                        other => other,
                    })?;
                // GGUF stores norms and biases as 1-D; shapes are checked below either way.
                match heads {
                    Some(h) if raw.dims() == shape => unpermute_rows(&raw, h)?,
                    _ => raw,
                }
            }
        };
        if tensor.dims() != shape {
            return Err(Error::ShapeMismatch {
                tensor: hf_name.to_string(),
                expected: shape.to_vec(),
                found: tensor.dims().to_vec(),
            });
        }
        Ok(tensor.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_follow_llama_cpp() {
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(
            gguf_name("model.layers.12.self_attn.q_proj.bias"),
            "blk.12.attn_q.bias"
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.k_norm.weight"),
            "blk.0.attn_k_norm.weight"
        );
        assert_eq!(
            gguf_name("model.layers.3.mlp.down_proj.weight"),
            "blk.3.ffn_down.weight"
        );
        assert_eq!(
            gguf_name("model.layers.3.post_attention_layernorm.weight"),
            "blk.3.ffn_norm.weight"
        );
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(h, 2, d/2, in).swapaxes(1, 2); here h = 2 heads of d = 4, in = 1.
        let hf: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let hf = Tensor::from_vec(hf, (8, 1), &Device::Cpu).unwrap();
        let gguf = hf
            .reshape((2, 2, 2, 1))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        let gguf = gguf.reshape((8, 1)).unwrap();
        assert_eq!(
            gguf.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0., 2., 1., 3., 4., 6., 5., 7.]
        );
        let back = unpermute_rows(&gguf, 2).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0., 1., 2., 3., 4., 5., 6., 7.]
        );
    }
}
