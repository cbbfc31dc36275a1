//! AdamW with decoupled weight decay (Loshchilov & Hutter, 2019), as `torch.optim.AdamW`
//! computes it, with state that can be saved and restored for exact resumption.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::{Error, Result};
use crate::io::write_atomic;

/// AdamW's hyper-parameters (the learning rate comes with each step, from the schedule).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    /// β₁, β₂.
    pub betas: (f64, f64),
    /// ε added to √v̂.
    pub eps: f64,
    /// Decoupled weight decay (PyTorch's default is 0.01; LoRA recipes often use 0).
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over a fixed list of variables; moments are kept in f32.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
    params: AdamWParams,
}

impl AdamW {
    /// Zero moments for `vars`.
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<Self> {
        let zeros = |v: &Var| Tensor::zeros(v.shape(), DType::F32, v.device());
        let m = vars
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = vars
            .iter()
            .map(zeros)
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            vars,
            m,
            v,
            step: 0,
            params,
        })
    }

    /// Number of updates done.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update with gradients `grads[i]` for `vars[i]` (`None`: no gradient, skipped) at
    /// learning rate `lr`:
    /// `θ ← θ − lr·λ·θ`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
    /// `θ ← θ − lr · (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε)`.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(Error::Adapter(format!(
                "{} gradients for {} variables",
                grads.len(),
                self.vars.len()
            )));
        }
        self.step += 1;
        let (b1, b2) = self.params.betas;
        let t = self.step as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for (i, grad) in grads.iter().enumerate() {
            let Some(g) = grad else { continue };
            let var = &self.vars[i];
            let g = g.to_dtype(DType::F32)?;
            let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let theta = var.as_tensor().to_dtype(DType::F32)?;
            let decayed = (&theta * (1.0 - lr * self.params.weight_decay))?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.params.eps)?)?;
            let next = (decayed - (update * lr)?)?;
            var.set(&next.to_dtype(var.dtype())?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Writes the moments and step count (safetensors, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::with_capacity(2 * self.m.len() + 1);
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            tensors.push((format!("m.{i}"), m.to_device(&Device::Cpu)?));
            tensors.push((format!("v.{i}"), v.to_device(&Device::Cpu)?));
        }
        tensors.push((
            "step".into(),
            crate::model::host::tensor(vec![self.step as f64], 1, &Device::Cpu)?,
        ));
        write_atomic(path, &crate::model::peft::safetensors_bytes(tensors)?)
    }

    /// Restores moments and step count written by [`AdamW::save`] for the same variables.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, self.vars[0].device())?;
        let get = |name: &str| {
            tensors.get(name).cloned().ok_or_else(|| {
                Error::Adapter(format!("{}: optimizer state lacks {name}", path.display()))
            })
        };
        for i in 0..self.vars.len() {
            let (m, v) = (get(&format!("m.{i}"))?, get(&format!("v.{i}"))?);
            if m.shape() != self.vars[i].shape() {
                return Err(Error::Adapter(format!(
                    "{}: moment {i} has shape {:?}, the variable {:?}",
                    path.display(),
                    m.dims(),
                    self.vars[i].dims()
                )));
            }
            self.m[i] = m;
            self.v[i] = v;
        }
        self.step = get("step")?.to_vec1::<f64>()?[0] as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_steps_match_the_formula_by_hand() {
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let params = AdamWParams {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(vec![var.clone()], params).unwrap();
        let (lr, g) = (0.01f64, [0.5f64, -1.0]);
        let grad = Tensor::new(&[0.5f32, -1.0], &Device::Cpu).unwrap();
        opt.step(&[Some(grad.clone())], lr).unwrap();
        opt.step(&[Some(grad)], lr).unwrap();
        // By hand: the same gradient twice.
        let mut theta = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for t in 1..=2 {
            for k in 0..2 {
                theta[k] *= 1.0 - lr * 0.1;
                m[k] = 0.9 * m[k] + 0.1 * g[k];
                v[k] = 0.999 * v[k] + 0.001 * g[k] * g[k];
                let mh = m[k] / (1.0 - 0.9f64.powi(t));
                let vh = v[k] / (1.0 - 0.999f64.powi(t));
                theta[k] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        for k in 0..2 {
            assert!(
                (f64::from(got[k]) - theta[k]).abs() < 1e-6,
                "{got:?} vs {theta:?}"
            );
        }
    }

    #[test]
    fn saved_state_resumes_the_same_trajectory() {
        let dir = tempfile::tempdir().unwrap();
        let run = |resume_at: Option<usize>| {
            let var = Var::new(&[0.3f32, 0.7, -0.1], &Device::Cpu).unwrap();
            let mut opt = AdamW::new(vec![var.clone()], AdamWParams::default()).unwrap();
            for s in 0..6 {
                if resume_at == Some(s) {
                    opt.save(&dir.path().join("opt.safetensors")).unwrap();
                    let values = var.as_tensor().copy().unwrap();
                    let fresh = Var::from_tensor(&values).unwrap();
                    opt = AdamW::new(vec![fresh.clone()], AdamWParams::default()).unwrap();
                    opt.load(&dir.path().join("opt.safetensors")).unwrap();
                    var.set(fresh.as_tensor()).unwrap();
                    opt.vars[0] = var.clone();
                }
                let g = (var.as_tensor() * 2.0).unwrap();
                opt.step(&[Some(g)], 0.05).unwrap();
            }
            (var.as_tensor().to_vec1::<f32>().unwrap(), opt.steps())
        };
        assert_eq!(run(None), run(Some(3)));
    }
}
