//! The model stack: one decoder for Llama, Qwen2 and Qwen3 with LoRA adapters.
//!
//! - [`config`]: the model's shape, from `config.json` or GGUF metadata.
//! - [`source`]: where a model comes from (directory, `.gguf`, hub repo id).
//! - [`decoder`]: the forward pass, adapters on/off, teacher-forced log-probs.
//! - [`lora`]: adapter configuration and the A/B pairs.
//! - [`dropout`]: seeded dropout masks drawn on the tensor's own device.
//! - [`host`]: tensors made from host data, counted.
//! - [`peft`]: adapters in PEFT's file layout, merged-weight export.
//! - [`batch`]: padded token batches with masks and positions.
//! - [`cache`]: the preallocated key/value cache for incremental decoding.
//! - [`mask`]: which keys each query sees, as spans; [`attention`]: the tiled attention kernel.
//! - [`nf4`]: 4-bit NormalFloat base weights for QLoRA (bitsandbytes' code book and layout).
//! - [`gguf_weight`]: base weights kept in a GGUF file's own block quantisation.
//! - [`ops`]: differentiable RMSNorm, RoPE, softmax, frozen projections and output
//!   log-probs (fused CPU kernels in `kernels`, with plain candle compositions as reference).
//! - [`tensor_ids`]: keeps candle's tensor ids unique across notebook cells.

pub mod attention;
pub mod batch;
pub mod cache;
pub(crate) mod checkpoint;
pub mod config;
pub mod decoder;
pub mod dropout;
pub mod gguf_weight;
pub mod host;
mod kernels;
pub mod lora;
pub mod mask;
pub mod nf4;
pub mod ops;
pub mod peft;
pub mod source;
pub mod tensor_ids;

pub use batch::{Padding, TokenBatch};
pub use cache::KvCache;
pub use config::{Architecture, ModelConfig, RopeScaling};
pub use decoder::{Decoder, Mode, Projection};
pub use lora::{LoraConfig, LoraPair, Target};
pub use mask::AttentionMask;
pub use nf4::{ModelSettings, Nf4Config, Quantization, Quantize};
pub use ops::BaseWeight;
pub use source::{ModelFiles, ModelSource};
