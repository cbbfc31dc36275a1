//! Low-rank adapters: `W x + scale · B A dropout(x)` with A, B the only trainable tensors.

use candle_core::{DType, Device, Result as CandleResult, Tensor, Var};

use super::host;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// A projection of the decoder that can carry an adapter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Attention query projection.
    Q,
    /// Attention key projection.
    K,
    /// Attention value projection.
    V,
    /// Attention output projection.
    O,
    /// MLP gate projection.
    Gate,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
}

impl Target {
    /// All seven projections, in layer order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The module name PEFT and transformers use (`q_proj`, ..., `down_proj`).
    pub fn module_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The module path inside a layer (`self_attn.q_proj`, `mlp.down_proj`).
    pub fn module_path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// Parses a PEFT target-module name (`q_proj`, or a dotted path ending in it).
    pub fn parse(name: &str) -> Option<Self> {
        let last = name.rsplit('.').next().unwrap_or(name);
        Self::ALL.into_iter().find(|t| t.module_name() == last)
    }
}

/// How adapters are shaped and initialised.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// Scale numerator: the update is multiplied by `alpha / r` (or `alpha / √r` with rsLoRA).
    pub alpha: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f32,
    /// Which projections get an adapter.
    pub targets: Vec<Target>,
    /// Rank-stabilised scaling `alpha / √r` (Kalajdzievski, 2023).
    pub use_rslora: bool,
    /// Seed of the A initialisation.
    pub seed: u64,
}

impl Default for LoraConfig {
    /// r 16, alpha 32, dropout 0.05 on all seven projections.
    fn default() -> Self {
        Self {
            r: 16,
            alpha: 32.0,
            dropout: 0.05,
            targets: Target::ALL.to_vec(),
            use_rslora: false,
            seed: 0,
        }
    }
}

impl LoraConfig {
    /// The factor the low-rank update is multiplied by.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Rejects ranks, dropouts and target lists that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::Adapter("rank r must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Adapter(format!(
                "dropout {} must be in [0, 1)",
                self.dropout
            )));
        }
        if self.targets.is_empty() {
            return Err(Error::Adapter("no target modules".into()));
        }
        Ok(())
    }
}

/// One adapter: `A` `[r, in]` and `B` `[out, r]`, kept in f32 whatever the model dtype.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// Down-projection, Kaiming-uniform initialised as in PEFT (bound `1/√in`).
    pub a: Var,
    /// Up-projection, zero-initialised so a fresh adapter changes nothing.
    pub b: Var,
    scale: f64,
    dropout: f32,
}

impl LoraPair {
    /// A fresh adapter for a projection from `in_dim` to `out_dim`.
    pub fn new(
        in_dim: usize,
        out_dim: usize,
        config: &LoraConfig,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        // kaiming_uniform_(a=√5) on a [r, in] matrix: bound = gain·√(3/fan_in) = 1/√in.
        let bound = 1.0 / (in_dim as f32).sqrt();
        let a = host::tensor(
            rng.uniform_vec(config.r * in_dim, -bound, bound),
            (config.r, in_dim),
            device,
        )?;
        let b = Tensor::zeros((out_dim, config.r), DType::F32, device)?;
        Ok(Self {
            a: Var::from_tensor(&a)?,
            b: Var::from_tensor(&b)?,
            scale: config.scale(),
            dropout: config.dropout,
        })
    }

    /// An adapter from given A and B (checked against the projection's shape).
    pub fn from_tensors(a: Tensor, b: Tensor, config: &LoraConfig) -> Result<Self> {
        let (r, _) = a.dims2()?;
        let (_, rb) = b.dims2()?;
        if r != config.r || rb != config.r {
            return Err(Error::Adapter(format!(
                "A is {:?} and B is {:?} but the config says r = {}",
                a.dims(),
                b.dims(),
                config.r
            )));
        }
        Ok(Self {
            a: Var::from_tensor(&a.to_dtype(DType::F32)?)?,
            b: Var::from_tensor(&b.to_dtype(DType::F32)?)?,
            scale: config.scale(),
            dropout: config.dropout,
        })
    }

    /// The multiplier of `B A`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The dropout probability on the adapter's input in training.
    pub fn dropout(&self) -> f32 {
        self.dropout
    }

    /// The low-rank update for `x` `[.., in]`: `scale · dropout(x) Aᵀ Bᵀ`, `[.., out]`, composed
    /// of candle ops (every intermediate stays in the graph): the reference the decoder's
    /// `ops::adapted_linear` computes as one op.
    ///
    /// `dropout_seed` switches dropout on with a mask drawn on `x`'s device from that seed (see
    /// [`super::dropout`]; a recomputed forward pass sees the same mask); `track` false uses
    /// detached A and B (no graph).
    pub fn forward(
        &self,
        x: &Tensor,
        dropout_seed: Option<u64>,
        track: bool,
    ) -> CandleResult<Tensor> {
        let dtype = x.dtype();
        let x = match dropout_seed {
            Some(seed) if self.dropout > 0.0 => super::dropout::dropout(x, seed, self.dropout)?,
            _ => x.clone(),
        };
        let (a, b) = if track {
            (self.a.as_tensor().clone(), self.b.as_tensor().clone())
        } else {
            (self.a.as_tensor().detach(), self.b.as_tensor().detach())
        };
        // Like PEFT, the update is computed in f32 (f64 for f64 models) whatever the model dtype.
        let acc = super::ops::accumulation_dtype(dtype);
        let (x, a, b) = (x.to_dtype(acc)?, a.to_dtype(acc)?, b.to_dtype(acc)?);
        let mut dims = x.dims().to_vec();
        let in_dim = dims.pop().unwrap_or(0);
        dims.push(b.dim(0)?);
        let x = x.reshape(((), in_dim))?;
        (x.matmul(&a.t()?)?.matmul(&b.t()?)? * self.scale)?
            .to_dtype(dtype)?
            .reshape(dims)
    }

    /// The dense update `scale · B A` `[out, in]`, for merging into the base weight.
    pub fn delta(&self) -> CandleResult<Tensor> {
        self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_and_parsing() {
        let mut c = LoraConfig {
            r: 16,
            alpha: 32.0,
            ..LoraConfig::default()
        };
        assert_eq!(c.scale(), 2.0);
        c.use_rslora = true;
        assert_eq!(c.scale(), 8.0);
        assert_eq!(
            Target::parse("model.layers.0.mlp.down_proj"),
            Some(Target::Down)
        );
        assert_eq!(Target::parse("lm_head"), None);
        c.r = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn fresh_adapter_is_a_no_op_with_peft_init_bounds() {
        let config = LoraConfig::default();
        let mut rng = Rng::new(1);
        let pair = LoraPair::new(64, 8, &config, &mut rng, &Device::Cpu).unwrap();
        let a = pair
            .a
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(a.iter().all(|v| v.abs() <= 1.0 / 8.0));
        assert!(a.iter().any(|v| v.abs() > 0.1));
        let x = Tensor::ones((3, 64), DType::F32, &Device::Cpu).unwrap();
        let y = pair.forward(&x, None, true).unwrap();
        assert_eq!(y.dims(), &[3, 8]);
        assert_eq!(
            y.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
    }
}
